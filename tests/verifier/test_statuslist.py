"""Token Status List: the draft's examples, round trips, sizes, and the token's checks."""

from __future__ import annotations

import base64
import json
import random
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys import (
    KeyRecord,
    Keyring,
    Role,
    TrustList,
    b64url_encode,
    sign_trust_list,
    verify_trust_list,
)
from verifier import statuslist
from verifier.errors import (
    StatusIndexError,
    StatusListError,
    StatusListExpired,
    StatusListSignatureInvalid,
    VerifierError,
)
from verifier.statuslist import (
    STATUS_LIST_TYP,
    StatusList,
    decode_status_list,
    encode_status_list,
    sign_status_list,
    verify_status_list,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
URI = "https://ul.example/status/440000"


def _world() -> tuple[Keyring, TrustList, KeyRecord, KeyRecord]:
    r = Keyring()
    r, _ = r.rotate(Role.ROOT, T0)
    r, issuer = r.rotate(Role.ISSUER, T0, scope="440000")
    r, other = r.rotate(Role.ISSUER, T0, scope="110000")
    r, _ = r.rotate(Role.LOG, T0)
    token = sign_trust_list(r, T0, ttl=30 * DAY)
    return r, verify_trust_list(token, r.current(Role.ROOT, T0).public_key, T0), issuer, other


RING, TRUST, ISSUER, OTHER = _world()
LOG = RING.current(Role.LOG, T0)


def sign(bits: StatusList | bytes = b"\x00" * 16, **kw: Any) -> str:
    args: dict[str, Any] = {
        "uri": URI,
        "issuer_key": RING.private_key(ISSUER.kid),
        "kid": ISSUER.kid,
        "now": T0 + DAY,
        "ttl": DAY,
    }
    args.update(kw)
    return sign_status_list(bits, **args)


# -- the list ----------------------------------------------------------------------------------


def test_spec_example_one_bit() -> None:
    """draft-ietf-oauth-status-list: 16 one-bit statuses -> b9 a3 -> eNrbuRgAAhcBXQ."""
    statuses = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]
    lst = StatusList(16)
    for i, value in enumerate(statuses):
        lst.set(i, value)
    assert lst.to_bytes() == bytes.fromhex("b9a3")
    assert encode_status_list(lst) == {"bits": 1, "lst": "eNrbuRgAAhcBXQ"}
    bits, data = decode_status_list({"bits": 1, "lst": "eNrbuRgAAhcBXQ"})
    assert (bits, data) == (1, bytes.fromhex("b9a3"))
    assert [StatusList.from_bytes(data).get(i) for i in range(16)] == statuses


def test_spec_example_two_bits() -> None:
    """The draft's 2-bit example: c9 44 f9 -> eNo76fITAAPfAgc."""
    statuses = [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3]
    lst = StatusList(12, bits=2)
    for i, value in enumerate(statuses):
        lst.set(i, value)
    assert lst.to_bytes() == bytes.fromhex("c944f9")
    assert encode_status_list(lst) == {"bits": 2, "lst": "eNo76fITAAPfAgc"}


@settings(max_examples=200)
@given(
    st.sampled_from([1, 2, 4, 8]).flatmap(
        lambda bits: st.tuples(
            st.just(bits),
            st.lists(st.integers(0, (1 << bits) - 1), min_size=1, max_size=300),
        )
    )
)
def test_set_get_and_encode_round_trip(case: tuple[int, list[int]]) -> None:
    bits, values = case
    lst = StatusList(len(values), bits)
    for i, v in enumerate(values):
        lst.set(i, v)
    assert [lst.get(i) for i in range(len(values))] == values
    assert lst.size == len(lst.to_bytes()) * 8 // bits >= len(values)
    assert decode_status_list(encode_status_list(lst)) == (bits, lst.to_bytes())


def test_index_and_value_errors() -> None:
    lst = StatusList(16)
    for bad in (-1, 16, 2**64, True, 1.0):
        with pytest.raises(StatusIndexError):
            lst.get(bad)
    with pytest.raises(IndexError):  # it is also an IndexError
        lst.set(16)
    with pytest.raises(ValueError, match="fit"):
        lst.set(0, 2)
    with pytest.raises(ValueError, match="bits"):
        StatusList(8, bits=3)


@pytest.mark.parametrize(
    "claim",
    [
        None,
        [],
        {"bits": 1},
        {"bits": 3, "lst": "eNrbuRgAAhcBXQ"},
        {"bits": True, "lst": "eNrbuRgAAhcBXQ"},
        {"bits": 1, "lst": "eNrbuRgAAhcBXQ=="},  # padding
        {"bits": 1, "lst": "bm90IHpsaWI"},  # not zlib
        {"bits": 1, "lst": b64url_encode(zlib.compress(b"\x00" * 64)[:-3])},  # truncated
        {"bits": 1, "lst": b64url_encode(zlib.compress(b"\x00") + b"x")},  # trailing data
        {"bits": 1, "lst": "eNrbuRgAAhcBXQ", "extra": 1},
    ],
)
def test_malformed_lists(claim: object) -> None:
    with pytest.raises(StatusListError):
        decode_status_list(claim)


def test_decompression_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = {"bits": 1, "lst": b64url_encode(zlib.compress(b"\x00" * 100_000, 9))}
    assert len(bomb["lst"]) < 200
    monkeypatch.setattr(statuslist, "MAX_LIST_BYTES", 50_000)
    with pytest.raises(StatusListError, match="larger"):
        decode_status_list(bomb)


def test_sizes_at_one_percent_revoked() -> None:
    """FORMATS-REFERENCE.md: 100,000 members, 1 % revoked -> about 1.4 kB; 1,000,000 -> 13.9."""
    print()
    for size, expected in ((100_000, 1_400), (1_000_000, 13_900)):
        lst = StatusList(size)
        for i in random.Random(size).sample(range(size), size // 100):
            lst.set(i)
        compressed = len(zlib.compress(lst.to_bytes(), 9))
        claim = encode_status_list(lst)
        token = sign(lst)
        print(
            f"status list of {size:>9,} (1 % revoked): {compressed:>6,} B compressed,"
            f" {len(claim['lst']):>6,} B base64url, token {len(token):>6,} B"
        )
        assert abs(compressed - expected) < 0.05 * expected


# -- the token ---------------------------------------------------------------------------------


def test_sign_and_verify() -> None:
    lst = StatusList(1000)
    lst.set(7)
    token = sign(lst)
    verified = verify_status_list(token, TRUST, T0 + DAY + HOUR, uri=URI, issuer="440000")
    assert verified.uri == URI
    assert verified.issuer == "440000"
    assert verified.issued_at == T0 + DAY
    assert verified.expires_at == T0 + 2 * DAY
    assert verified.ttl == DAY
    assert verified.size == 1000
    assert verified.status(7) == 1
    assert verified.status(8) == 0
    with pytest.raises(StatusIndexError):
        verified.status(1000)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "kid": ISSUER.kid, "typ": STATUS_LIST_TYP}


def test_any_jwt_library_reads_it() -> None:
    token = sign(StatusList(64), lifetime=7 * DAY)
    key = ISSUER.public_key.to_cryptography()
    claims = jwt.decode(token, key, algorithms=["EdDSA"], options={"verify_exp": False})
    assert claims["sub"] == URI
    assert claims["ttl"] == 86_400
    assert claims["exp"] - claims["iat"] == 7 * 86_400
    assert claims["status_list"]["bits"] == 1


def test_the_same_inputs_give_the_same_token() -> None:
    assert sign(StatusList(64)) == sign(StatusList(64))


def _forge(token: str, header: dict[str, object] | None = None, **claims: object) -> str:
    """The token with header or claims changed and re-signed by the issuer key."""
    h, c, _ = token.split(".")
    head = json.loads(base64.urlsafe_b64decode(h + "=="))
    body = json.loads(base64.urlsafe_b64decode(c + "=="))
    head.update(header or {})
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    signing_input = (
        b64url_encode(json.dumps(head).encode()) + "." + b64url_encode(json.dumps(body).encode())
    )
    key = RING.private_key(ISSUER.kid)
    return signing_input + "." + b64url_encode(key.sign(signing_input.encode()))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda t: _forge(t, {"typ": "JWT"}), StatusListError),
        (lambda t: _forge(t, {"alg": "ES256"}), StatusListError),
        (lambda t: _forge(t, {"jwk": {}}), StatusListError),
        (lambda t: _forge(t, ttl=0), StatusListError),
        (lambda t: _forge(t, ttl=None), StatusListError),
        (lambda t: _forge(t, iat=1.5), StatusListError),
        (lambda t: _forge(t, sub=None), StatusListError),
        (lambda t: _forge(t, status_list={"bits": 1}), StatusListError),
        (lambda t: t[:-4] + ("AAAA" if t[-4:] != "AAAA" else "BBBB"), StatusListSignatureInvalid),
        (lambda t: t.rsplit(".", 1)[0] + ".", StatusListSignatureInvalid),
        (lambda t: t + ".x", StatusListError),
        (lambda t: "x" + t, StatusListError),
        (lambda t: _forge(t, {"kid": "nope"}), StatusListSignatureInvalid),
        (lambda t: _forge(t, {"kid": OTHER.kid}), StatusListSignatureInvalid),
    ],
)
def test_token_refusals(change: Callable[[str], str], error: type[Exception]) -> None:
    token = change(sign())
    with pytest.raises(error):
        verify_status_list(token, TRUST, T0 + DAY)


def test_key_role_and_union() -> None:
    by_log = sign(issuer_key=RING.private_key(LOG.kid), kid=LOG.kid)
    with pytest.raises(StatusListSignatureInvalid, match="key-role-mismatch"):
        verify_status_list(by_log, TRUST, T0 + DAY)
    with pytest.raises(StatusListSignatureInvalid, match="key-scope-mismatch"):
        verify_status_list(sign(), TRUST, T0 + DAY, issuer="110000")
    with pytest.raises(StatusListError, match="expected"):
        verify_status_list(sign(), TRUST, T0 + DAY, uri=URI + "x")


def test_expiry_and_clock() -> None:
    token = sign(now=T0 + DAY, ttl=DAY)
    verify_status_list(token, TRUST, T0 + 2 * DAY - timedelta(seconds=1))
    with pytest.raises(StatusListExpired):
        verify_status_list(token, TRUST, T0 + 2 * DAY)
    verify_status_list(token, TRUST, T0 + DAY - timedelta(seconds=30))  # leeway
    with pytest.raises(StatusListExpired, match="future"):
        verify_status_list(token, TRUST, T0 + DAY - timedelta(seconds=31))


def test_staleness() -> None:
    verified = verify_status_list(sign(ttl=HOUR, lifetime=DAY), TRUST, T0 + DAY)
    assert verified.stale_reason(T0 + DAY + HOUR) is None
    assert "ttl" in (verified.stale_reason(T0 + DAY + HOUR + timedelta(seconds=1)) or "")
    assert verified.stale_reason(T0 + DAY + 2 * HOUR, leeway=HOUR) is None
    assert "maximum age" in (verified.stale_reason(T0 + DAY + HOUR, max_age=HOUR / 2) or "")
    assert "expired" in (verified.stale_reason(T0 + 2 * DAY) or "")
    assert "future" in (verified.stale_reason(T0 + DAY - timedelta(seconds=1)) or "")


def test_sign_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="kid"):
        sign(kid=OTHER.kid)
    with pytest.raises(ValueError, match="ttl"):
        sign(ttl=timedelta(0))
    with pytest.raises(ValueError, match="uri"):
        sign(uri="")


@settings(max_examples=200)
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b64url_encode(b) + ".e30.x"))
def test_random_tokens_raise_only_status_list_errors(text: str) -> None:
    with pytest.raises(VerifierError):
        verify_status_list(text, TRUST, T0 + DAY)
