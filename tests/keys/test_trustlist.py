"""Trust lists: signed by the root, verified against a pinned root key, fail closed."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys import (
    TRUST_LIST_TYP,
    KeyNotYetValid,
    KeyRevoked,
    Keyring,
    PrivateKey,
    Role,
    TrustListError,
    TrustListExpired,
    TrustListSignatureInvalid,
    sign_trust_list,
    verify_trust_list,
)
from keys.trustlist import record_from_jwk, record_to_jwk

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def ring() -> Keyring:
    r = Keyring()
    for role in (Role.ROOT, Role.LOG, Role.API):
        r, _ = r.rotate(role, T0)
    r, issuer = r.rotate(Role.ISSUER, T0, scope="110000")
    r, _ = r.rotate(Role.ISSUER, T0 + DAY, scope="110000")  # next key, published ahead
    r, _ = r.register(Role.STATION, PrivateKey.generate().public_key, T0, scope="ST-1")
    return r.revoke(issuer.kid, T0 + 20 * DAY, "compromised")


def root_of(r: Keyring):  # type: ignore[no-untyped-def]
    return r.current(Role.ROOT, T0).public_key


def test_sign_and_verify() -> None:
    r = ring()
    token = sign_trust_list(r, T0 + DAY, ttl=7 * DAY)
    trusted = verify_trust_list(token, root_of(r), T0 + 2 * DAY)
    assert trusted.issued_at == T0 + DAY
    assert trusted.expires_at == T0 + 8 * DAY
    assert trusted.signed_by == r.current(Role.ROOT, T0).kid
    published = {x.kid for x in trusted.keyring}
    # Issuer (current, next and revoked), station, log and root are published; api is not.
    assert published == {x.kid for x in r if x.role != Role.API}
    # Every fact travels except the free-text revocation reason, which stays in the keyring.
    expected = {x.kid: replace(x, revocation_reason=None) for x in r if x.role != Role.API}
    assert {x.kid: x for x in trusted.keyring} == expected


def test_the_next_issuer_key_is_known_before_it_signs() -> None:
    r = ring()
    trusted = verify_trust_list(sign_trust_list(r, T0 + DAY), root_of(r), T0 + DAY)
    pending = [x for x in trusted.keyring if x.status_at(T0 + DAY) == "pending"]
    assert [x.role for x in pending] == [Role.ISSUER]
    with pytest.raises(KeyNotYetValid):
        trusted.verification_key(pending[0].kid, Role.ISSUER, T0 + 2 * DAY)
    trusted.verification_key(pending[0].kid, Role.ISSUER, pending[0].not_before)


def test_revocations_travel_in_the_list() -> None:
    r = ring()
    trusted = verify_trust_list(sign_trust_list(r, T0 + 25 * DAY), root_of(r), T0 + 25 * DAY)
    revoked = next(x for x in trusted.keyring if x.revoked_at is not None)
    with pytest.raises(KeyRevoked):
        trusted.verification_key(revoked.kid, Role.ISSUER, T0 + 21 * DAY)


def test_expired_and_future_lists_are_refused() -> None:
    r = ring()
    token = sign_trust_list(r, T0, ttl=DAY)
    with pytest.raises(TrustListExpired):
        verify_trust_list(token, root_of(r), T0 + DAY)
    with pytest.raises(TrustListExpired, match="future"):
        verify_trust_list(token, root_of(r), T0 - timedelta(minutes=10))
    verify_trust_list(token, root_of(r), T0 - timedelta(minutes=4))  # within clock leeway


def test_a_list_signed_by_a_non_root_key_is_refused() -> None:
    r = ring()
    log_key = r.private_key(r.current(Role.LOG, T0).kid)
    claims = jwt.decode(sign_trust_list(r, T0), options={"verify_signature": False})
    forged = jwt.encode(
        claims,
        log_key.to_cryptography(),
        algorithm="EdDSA",
        headers={"typ": TRUST_LIST_TYP, "kid": r.current(Role.ROOT, T0).kid},
    )
    with pytest.raises(TrustListSignatureInvalid):
        verify_trust_list(forged, root_of(r), T0)
    honest_kid = jwt.encode(
        claims,
        log_key.to_cryptography(),
        algorithm="EdDSA",
        headers={"typ": TRUST_LIST_TYP, "kid": log_key.key_id},
    )
    with pytest.raises(TrustListSignatureInvalid, match="pinned"):
        verify_trust_list(honest_kid, root_of(r), T0)


def test_nothing_pinned_trusts_nothing() -> None:
    r = ring()
    with pytest.raises(TrustListSignatureInvalid, match="no pinned"):
        verify_trust_list(sign_trust_list(r, T0), [], T0)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_tampered_payload_fails() -> None:
    r = ring()
    header, payload, signature = sign_trust_list(r, T0).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["exp"] += 365 * 86400
    tampered = ".".join([header, _b64(json.dumps(claims).encode()), signature])
    with pytest.raises(TrustListSignatureInvalid):
        verify_trust_list(tampered, root_of(r), T0)


@given(position=st.integers(0, 10_000), data=st.data())
def test_any_changed_character_is_refused(position: int, data: st.DataObject) -> None:
    r = RING
    token = TOKEN
    i = position % len(token)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    c = data.draw(st.sampled_from(alphabet.replace(token[i], "")))
    changed = token[:i] + c + token[i + 1 :]
    try:
        verified = verify_trust_list(changed, root_of(r), T0)
    except TrustListError:
        return
    # A change in the last signature character's unused low bits decodes to the same bytes.
    assert verified.keyring is not None
    assert jwt.api_jws.base64url_decode(changed.split(".")[2]) == jwt.api_jws.base64url_decode(
        token.split(".")[2]
    )


RING = ring()
TOKEN = sign_trust_list(RING, T0)


@pytest.mark.parametrize(
    ("header", "claims"),
    [
        ({"typ": "JWT"}, {}),
        ({"typ": TRUST_LIST_TYP, "alg": "HS256"}, {}),
        ({"typ": TRUST_LIST_TYP}, {"keys": "all"}),
        ({"typ": TRUST_LIST_TYP}, {"keys": [{"kty": "OKP"}]}),
        ({"typ": TRUST_LIST_TYP}, {"iat": "yesterday"}),
        ({"typ": TRUST_LIST_TYP}, {"exp": 10**20}),
        ({"typ": TRUST_LIST_TYP}, {"keys": [1, "two"]}),
    ],
)
def test_malformed_lists(header: dict, claims: dict) -> None:  # type: ignore[type-arg]
    r = RING
    root_key = r.private_key(r.current(Role.ROOT, T0).kid)
    base = jwt.decode(TOKEN, options={"verify_signature": False})
    base.update(claims)
    if header.get("alg") == "HS256":
        token = jwt.encode(
            base,
            "k" * 32,
            algorithm="HS256",
            headers={"typ": TRUST_LIST_TYP, "kid": root_key.key_id},
        )
    else:
        token = jwt.encode(
            base,
            root_key.to_cryptography(),
            algorithm="EdDSA",
            headers={"kid": root_key.key_id, **header},
        )
    with pytest.raises(TrustListError):
        verify_trust_list(token, root_key.public_key, T0)
    with pytest.raises(TrustListError):
        verify_trust_list("not.a.jws", root_key.public_key, T0)


def test_entry_with_a_wrong_kid_is_refused() -> None:
    record = next(iter(RING))
    jwk = record_to_jwk(record)
    assert record_from_jwk(jwk) == record
    with pytest.raises(ValueError, match="thumbprint"):
        record_from_jwk({**jwk, "kid": PrivateKey.generate().key_id})


def test_root_rotation_is_announced_and_a_new_root_can_be_pinned_too() -> None:
    r = ring()
    r, next_root = r.rotate(Role.ROOT, T0 + DAY)
    listed = verify_trust_list(sign_trust_list(r, T0 + DAY), root_of(r), T0 + DAY)
    assert next_root.kid in listed.keyring
    later = next_root.not_before
    token = sign_trust_list(r, later)
    verify_trust_list(token, [root_of(r), next_root.public_key], later)
    with pytest.raises(TrustListSignatureInvalid):
        verify_trust_list(token, root_of(r), later)
