"""The SD-JWT VC credential: round trip, selective disclosure, pyjwt interop and RFC 9901
vectors, each numbered check's own error, tampering and fuzzing, and docs/sd-jwt.md's worked
example (generated from this code: ``python -m tests.verifier.test_sdjwt`` rewrites it)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keys
from keys import (
    Keyring,
    PrivateKey,
    Role,
    b64url_decode,
    b64url_encode,
    sign_trust_list,
    verify_trust_list,
)
from verifier import sdjwt
from verifier.canonical import canonical_bytes
from verifier.errors import (
    BadDisclosure,
    ChallengeMismatch,
    CredentialError,
    CredentialExpired,
    CredentialMalformed,
    CredentialNotYetValid,
    CredentialRevoked,
    CredentialSignatureInvalid,
    HolderProofInvalid,
    HolderProofStale,
    StatusIndexOutOfRange,
    StatusListMissing,
    StatusListStale,
    UnknownIssuer,
)
from verifier.sdjwt import (
    GROUP_BLOCK,
    KB_JWT_TYP,
    SD_JWT_TYP,
    VerifiedSdJwt,
    disclosure_digest,
    issue_sd_jwt,
    issuer_union_of,
    key_binding_jwt,
    present_sd_jwt,
    verify_sd_jwt,
)
from verifier.statuslist import (
    StatusList,
    VerifiedStatusList,
    sign_status_list,
    verify_status_list,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
ISSUED = T0 + 100 * DAY
NOW = T0 + 120 * DAY
PROVINCE, HOME = "440000", "440106-0012"
MEMBER = "AAECAwQFBgcICQoLDA0ODw"  # the base64url of bytes 0..15
ISS = f"https://ul.example/unions/{PROVINCE}"
VCT = "https://ul.example/vct/membership/v1"
STATUS_URI = f"https://ul.example/status/{PROVINCE}"
AUD, NONCE = "https://verifier.example/benefits", "n-0S6_WzA2Mj"


def seeded(label: str) -> PrivateKey:
    return PrivateKey.from_seed(hashlib.sha256(label.encode()).digest())


def counter_salt() -> Callable[[], bytes]:
    state = [0]

    def salt() -> bytes:
        state[0] += 1
        return hashlib.sha256(b"salt %d" % state[0]).digest()[:16]

    return salt


class World:
    """A keyring with issuer keys of several unions (current, next, revoked), a station key,
    its verified trust list, a status list, and a holder."""

    def __init__(self) -> None:
        r = Keyring()
        r, _ = r.rotate(Role.ROOT, T0, new_key=seeded("root"))
        r, self.issuer_rec = r.rotate(Role.ISSUER, T0, scope=PROVINCE, new_key=seeded("issuer"))
        r, self.next_rec = r.rotate(Role.ISSUER, T0 + 100 * DAY, scope=PROVINCE)
        r, self.other_rec = r.rotate(Role.ISSUER, T0, scope="110000")
        r, self.revoked_rec = r.rotate(Role.ISSUER, T0, scope="120000")
        r = r.revoke(self.revoked_rec.kid, T0 + 50 * DAY, "compromised")
        r, self.station_rec = r.rotate(Role.STATION, T0, scope="ST-1")
        self.ring = r
        token = sign_trust_list(r, T0 + 119 * DAY, ttl=1000 * DAY)
        self.trust = verify_trust_list(token, r.current(Role.ROOT, T0).public_key, NOW)
        self.holder = seeded("holder")

    def key(self, record: keys.KeyRecord) -> PrivateKey:
        return self.ring.private_key(record.kid)

    def issue(self, record: keys.KeyRecord | None = None, **overrides: Any) -> str:
        record = record or self.issuer_rec
        args: dict[str, Any] = {
            "issuer_key": self.key(record),
            "kid": record.kid,
            "issuer": ISS,
            "vct": VCT,
            "member_id": MEMBER,
            "home_union": HOME,
            "holder_jwk": self.holder.public_key.to_jwk(),
            "groups": ["delivery_rider", "hardship"],
            "iat": ISSUED,
            "exp": ISSUED + 365 * DAY,
            "status_index": 1234,
            "status_uri": STATUS_URI,
            "salt": counter_salt(),
        }
        args.update(overrides)
        return issue_sd_jwt(**args)

    def status_lists(
        self,
        *,
        signed_at: datetime = NOW - timedelta(hours=1),
        ttl: timedelta = DAY,
        bits: StatusList | None = None,
        uri: str = STATUS_URI,
        key_by: str = "uri",
    ) -> dict[str, VerifiedStatusList]:
        """Union 440000's list, signed by its issuer key and verified, held by URI (or union)."""
        token = sign_status_list(
            bits or StatusList(100_000),
            uri=uri,
            issuer_key=self.key(self.issuer_rec),
            kid=self.issuer_rec.kid,
            now=signed_at,
            ttl=ttl,
        )
        verified = verify_status_list(token, self.trust, signed_at)
        return {uri if key_by == "uri" else PROVINCE: verified}


W = World()
ISSUED_SD_JWT = W.issue()
STATUS = W.status_lists()


def present(sd_jwt: str = ISSUED_SD_JWT, **overrides: Any) -> str:
    args: dict[str, Any] = {
        "holder_key": W.holder,
        "disclose": ["delivery_rider"],
        "audience": AUD,
        "nonce": NONCE,
        "now": NOW,
    }
    args.update(overrides)
    return present_sd_jwt(sd_jwt, **args)


GOOD = present()


def verify(text: str, **overrides: Any) -> VerifiedSdJwt:
    args: dict[str, Any] = {
        "trust_list": W.trust,
        "now": NOW,
        "status_lists": STATUS,
        "expected_audience": AUD,
        "expected_nonce": NONCE,
    }
    args.update(overrides)
    return verify_sd_jwt(text, **args)


# -- helpers that take an SD-JWT apart and put it together again -------------------------------


def parts(text: str) -> tuple[str, list[str], str]:
    """(issuer-signed JWT, disclosures, KB-JWT or "")."""
    issuer_jwt, *disclosures, kb = text.split("~")
    return issuer_jwt, disclosures, kb


def decode(part: str) -> Any:
    return json.loads(b64url_decode(part))


def sign(header: dict[str, Any], claims: Any, key: PrivateKey) -> str:
    head = b64url_encode(canonical_bytes(header)) + "." + b64url_encode(canonical_bytes(claims))
    return head + "." + b64url_encode(key.sign(head.encode()))


def reissue(
    text: str = ISSUED_SD_JWT,
    *,
    header: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    disclosures: list[str] | None = None,
    key: PrivateKey | None = None,
    **claims: Any,
) -> str:
    """``text``'s credential with changed header members or claims, signed again by the issuer
    (so that only the change is wrong), without a KB-JWT."""
    issuer_jwt, old, _ = parts(text)
    head, payload = issuer_jwt.split(".")[:2]
    new_header = {**decode(head), **(header or {})}
    new_claims = {k: v for k, v in {**decode(payload), **claims}.items() if k not in drop}
    token = sign(new_header, new_claims, key or W.key(W.issuer_rec))
    return "~".join([token, *(old if disclosures is None else disclosures), ""])


def bind(sd_jwt: str, *, now: datetime = NOW, audience: str = AUD, nonce: str = NONCE) -> str:
    """``sd_jwt`` (ending with ``~``) with a fresh KB-JWT over exactly it."""
    return sd_jwt + key_binding_jwt(sd_jwt, W.holder, audience=audience, nonce=nonce, now=now)


def disclosure_of(group: str, text: str = ISSUED_SD_JWT) -> str:
    for d in parts(text)[1]:
        if decode(d)[1] == group:
            return d
    raise AssertionError(group)


def without_kb(text: str) -> str:
    return text[: text.rindex("~") + 1]


# -- round trip and selective disclosure -------------------------------------------------------


def test_round_trip() -> None:
    v = verify(GOOD)
    assert v.member_id == MEMBER
    assert (v.home_union, v.issuer, v.issuer_union) == (HOME, ISS, PROVINCE)
    assert v.vct == VCT
    assert v.groups == frozenset({"delivery_rider"})
    assert v.holder_key == W.holder.public_key
    assert v.holder_jwk == W.holder.public_key.to_jwk()
    assert (v.issued_at, v.expires_at) == (ISSUED, ISSUED + 365 * DAY)
    assert (v.status_index, v.status_uri) == (1234, STATUS_URI)
    assert v.kid == W.issuer_rec.kid
    assert v.key_bound_at == NOW
    assert v.presentation_hash == hashlib.sha256(GOOD.encode()).digest()


def test_the_issued_credential_verifies_without_key_binding() -> None:
    """What a wallet checks on receipt: every group, no KB-JWT."""
    v = verify(ISSUED_SD_JWT, require_key_binding=False, expected_audience=None)
    assert v.groups == {"delivery_rider", "hardship"}
    assert v.key_bound_at is None
    assert ISSUED_SD_JWT.endswith("~")
    assert len(parts(ISSUED_SD_JWT)[1]) == 2


def test_the_issuing_server_verifies_with_its_keyring_and_without_status_lists() -> None:
    assert verify(GOOD, trust_list=W.ring, status_lists=None).groups == {"delivery_rider"}


def test_an_undisclosed_group_is_not_visible() -> None:
    issuer_jwt, disclosures, kb = parts(GOOD)
    assert len(disclosures) == 1
    visible = [json.dumps(decode(p)) for p in (*issuer_jwt.split(".")[:2], *disclosures)]
    visible += [json.dumps(decode(p)) for p in kb.split(".")[:2]]
    assert not any("hardship" in text for text in visible)
    assert "hardship" not in verify(GOOD).groups


@pytest.mark.parametrize(
    "disclose", [[], ["hardship"], ["delivery_rider", "hardship"], ("hardship", "hardship")]
)
def test_any_subset_of_groups(disclose: list[str]) -> None:
    assert verify(present(disclose=disclose)).groups == set(disclose)


@pytest.mark.parametrize("n", [0, 1, 4, 5, 9])
def test_groups_are_padded_with_decoys_to_a_block_and_sorted(n: int) -> None:
    groups = [f"group{i}" for i in range(n)]
    issued = W.issue(groups=groups)
    claims = decode(parts(issued)[0].split(".")[1])
    digests = [item["..."] for item in claims["groups"]]
    assert len(digests) == GROUP_BLOCK * max(1, -(-n // GROUP_BLOCK))
    assert digests == sorted(digests)
    assert {disclosure_digest(d) for d in parts(issued)[1]} <= set(digests)
    assert verify(present(issued, disclose=groups)).groups == set(groups)


def test_the_payload_holds_exactly_the_profile_claims_and_no_personal_data() -> None:
    header = decode(parts(ISSUED_SD_JWT)[0].split(".")[0])
    claims = decode(parts(ISSUED_SD_JWT)[0].split(".")[1])
    assert header == {"alg": "EdDSA", "kid": W.issuer_rec.kid, "typ": "dc+sd-jwt"}
    assert set(claims) == sdjwt.CLAIMS
    assert claims["cnf"] == {"jwk": W.holder.public_key.to_jwk()}
    assert claims["status"] == {"status_list": {"idx": 1234, "uri": STATUS_URI}}
    assert (claims["_sd_alg"], claims["sub"], claims["home_union"]) == ("sha-256", MEMBER, HOME)
    for d in parts(ISSUED_SD_JWT)[1]:
        salt, group = decode(d)
        assert len(b64url_decode(salt)) == 16
        assert group in {"delivery_rider", "hardship"}


def test_extra_holder_jwk_members_are_not_copied() -> None:
    jwk = {**W.holder.public_key.to_jwk(), "kid": "phone-1", "use": "sig"}
    claims = decode(parts(W.issue(holder_jwk=jwk))[0].split(".")[1])
    assert claims["cnf"]["jwk"] == W.holder.public_key.to_jwk()


def test_issuing_is_deterministic_given_the_salts_and_random_without() -> None:
    assert W.issue() == W.issue()
    assert W.issue(salt=None) != W.issue(salt=None)
    assert verify(present(W.issue(salt=None))).groups == {"delivery_rider"}


def test_issuer_union_of() -> None:
    assert issuer_union_of("440000") == "440000"
    assert issuer_union_of("https://ul.example/unions/440106-0012") == "440106-0012"
    assert issuer_union_of("https://ul.example:8443/u/440000") == "440000"
    for bad in ("https://ul.example", "http://ul.example/440000", "https://ul.example/a?b", ""):
        assert issuer_union_of(bad) is None


# -- interop: plain pyjwt and the RFC 9901 vectors -------------------------------------------


def test_rfc9901_digest_vectors() -> None:
    """RFC 9901, "Hashing Disclosures": the digest is over the base64url string itself."""
    assert (
        disclosure_digest("WyI2cU1RdlJMNWhhaiIsICJmYW1pbHlfbmFtZSIsICJNw7ZiaXVzIl0")
        == "uutlBuYeMDyjLLTpf6Jxi7yNkEF35jdyWMn9U7b_RYY"
    )
    assert (
        disclosure_digest("WyJsa2x4RjVqTVlsR1RQVW92TU5JdkNBIiwgIkZSIl0")
        == "w0I8EKcdCtUPkGCNUrfwVp2xEgNjtoIDlOxc9-PlOhs"
    )
    assert decode("WyJsa2x4RjVqTVlsR1RQVW92TU5JdkNBIiwgIkZSIl0") == ["lklxF5jMYlGTPUovMNIvCA", "FR"]


def test_pyjwt_decodes_both_jwts_and_the_digests_recompute_per_the_spec() -> None:
    issuer_jwt, disclosures, kb = parts(GOOD)
    assert jwt.get_unverified_header(issuer_jwt)["typ"] == SD_JWT_TYP
    claims = jwt.decode(
        issuer_jwt,
        W.key(W.issuer_rec).public_key.to_cryptography(),
        algorithms=["EdDSA"],
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    placeholders = {item["..."] for item in claims["groups"]}
    for d in disclosures:
        digest = b64url_encode(hashlib.sha256(d.encode("ascii")).digest())
        assert digest in placeholders
    holder = keys.PublicKey.from_jwk(claims["cnf"]["jwk"]).to_cryptography()
    assert jwt.get_unverified_header(kb) == {"alg": "EdDSA", "typ": KB_JWT_TYP}
    kb_claims = jwt.decode(
        kb, holder, algorithms=["EdDSA"], audience=AUD, options={"verify_iat": False}
    )
    presented = GOOD[: len(GOOD) - len(kb)]
    assert presented.endswith("~")
    assert kb_claims["sd_hash"] == b64url_encode(hashlib.sha256(presented.encode()).digest())
    assert (kb_claims["nonce"], kb_claims["iat"]) == (NONCE, int(NOW.timestamp()))


def test_pyjwt_signs_the_same_bytes() -> None:
    """Canonical JSON is what pyjwt writes for these values too (sorted header members)."""
    issuer_jwt = parts(ISSUED_SD_JWT)[0]
    payload = issuer_jwt.split(".")[1]
    again = jwt.api_jws.encode(
        b64url_decode(payload),
        W.key(W.issuer_rec).to_cryptography(),
        algorithm="EdDSA",
        headers={"kid": W.issuer_rec.kid, "typ": SD_JWT_TYP},
    )
    assert again == issuer_jwt


def test_a_generic_processing_of_the_payload_gives_the_disclosed_groups() -> None:
    """RFC 9901's processing (replace each {"...": digest} with a matching disclosure's value,
    drop the rest, remove _sd_alg), written out plainly, yields the profile's claims."""
    issuer_jwt, disclosures, _ = parts(GOOD)
    payload = decode(issuer_jwt.split(".")[1])
    by_digest = {disclosure_digest(d): decode(d) for d in disclosures}
    payload["groups"] = [by_digest[i["..."]][1] for i in payload["groups"] if i["..."] in by_digest]
    del payload["_sd_alg"]
    assert payload["groups"] == ["delivery_rider"]
    assert payload["sub"] == MEMBER


# -- every check's own error -------------------------------------------------------------------


def test_not_a_string() -> None:
    with pytest.raises(TypeError):
        verify(GOOD.encode())  # type: ignore[arg-type]


def test_naive_now_and_missing_challenge_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="aware"):
        verify(GOOD, now=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="audience and nonce"):
        verify(GOOD, expected_nonce=None)


def _b64json(value: Any) -> str:
    return b64url_encode(json.dumps(value).encode())


MALFORMED = {
    "empty": "",
    "no tilde": parts(GOOD)[0],
    "not ascii": GOOD.replace("~", "~é", 1),
    "too long": GOOD + "A" * sdjwt.MAX_TEXT,
    "empty disclosure": GOOD.replace("~", "~~", 1),
    "two parts": parts(GOOD)[0].rsplit(".", 1)[0] + "~",
    "bad base64 header": "e$J." + parts(GOOD)[0].split(".", 1)[1] + "~",
    "padded header": parts(GOOD)[0].split(".")[0] + "=." + GOOD.split(".", 1)[1],
    "header not json": _b64json("x")[:-2] + "." + GOOD.split(".", 1)[1],
    "header not an object": _b64json([1]) + "." + GOOD.split(".", 1)[1],
    "short signature": parts(GOOD)[0][:-4] + "~",
    "alg none": _b64json({"alg": "none", "typ": SD_JWT_TYP})
    + "."
    + parts(GOOD)[0].split(".")[1]
    + ".~",
    "kb not a jws": without_kb(GOOD) + "abc",
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_text(text: str) -> None:
    with pytest.raises(CredentialMalformed):
        verify(text)


def _duplicate_member_payload() -> str:
    issuer_jwt = parts(ISSUED_SD_JWT)[0]
    head, payload, _ = issuer_jwt.split(".")
    raw = b64url_decode(payload)
    dup = b'{"sub":"x",' + raw[1:]
    body = head + "." + b64url_encode(dup)
    return body + "." + b64url_encode(W.key(W.issuer_rec).sign(body.encode())) + "~"


RESIGNED_MALFORMED: dict[str, Callable[[], str]] = {
    "alg none (header only)": lambda: reissue(header={"alg": "none"}),
    "typ vc+sd-jwt": lambda: reissue(header={"typ": "vc+sd-jwt"}),
    "typ JWT": lambda: reissue(header={"typ": "JWT"}),
    "extra header member": lambda: reissue(header={"jku": "https://evil.example"}),
    "kid not a thumbprint": lambda: reissue(header={"kid": "short"}),
    "_sd_alg sha-512": lambda: reissue(_sd_alg="sha-512"),
    "no _sd_alg": lambda: reissue(drop=("_sd_alg",)),
    "no cnf": lambda: reissue(drop=("cnf",)),
    "cnf without jwk": lambda: reissue(cnf={"kid": "x"}),
    "cnf jwk of another type": lambda: reissue(
        cnf={"jwk": {"kty": "EC", "crv": "P-256", "x": "a"}}
    ),
    "cnf jwk with a private key": lambda: reissue(
        cnf={"jwk": {**W.holder.public_key.to_jwk(), "d": b64url_encode(W.holder.seed())}}
    ),
    "cnf jwk not a point": lambda: reissue(
        cnf={"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}}
    ),
    "an extra claim (a name)": lambda: reissue(name="Zhang San"),
    "a top-level _sd": lambda: reissue(_sd=[]),
    "no vct": lambda: reissue(drop=("vct",)),
    "iss of no union": lambda: reissue(iss="https://ul.example/"),
    "iss not a string": lambda: reissue(iss=440000),
    "sub not a pseudonym": lambda: reissue(sub="Zhang San"),
    "home_union not a code": lambda: reissue(home_union="广州"),
    "iat a string": lambda: reissue(iat="2026-04-11"),
    "iat a bool": lambda: reissue(iat=True),
    "exp before iat": lambda: reissue(exp=int(ISSUED.timestamp()) - 1),
    "exp beyond 9999": lambda: reissue(exp=2**40),
    "status without status_list": lambda: reissue(status={"idx": 1}),
    "status idx negative": lambda: reissue(status={"status_list": {"idx": -1, "uri": "u"}}),
    "status idx a float": lambda: reissue(status={"status_list": {"idx": "1", "uri": "u"}}),
    "status uri missing": lambda: reissue(status={"status_list": {"idx": 1}}),
    "groups empty": lambda: reissue(groups=[]),
    "groups a plain value": lambda: reissue(groups=["hardship"]),
    "groups placeholder with a second key": lambda: reissue(
        groups=[{"...": disclosure_digest("x"), "x": 1}]
    ),
    "groups digest not sha-256": lambda: reissue(groups=[{"...": "abc"}]),
    "a digest appearing twice": lambda: reissue(
        groups=[{"...": disclosure_digest("x")}, {"...": disclosure_digest("x")}]
    ),
    "a duplicate JSON member": _duplicate_member_payload,
    "payload not an object": lambda: (
        sign(decode(parts(ISSUED_SD_JWT)[0].split(".")[0]), [1], W.key(W.issuer_rec)) + "~"
    ),
}


@pytest.mark.parametrize("make", RESIGNED_MALFORMED.values(), ids=RESIGNED_MALFORMED.keys())
def test_malformed_claims_signed_by_the_issuer(make: Callable[[], str]) -> None:
    """Refused as malformed although the issuer's signature is good: structure before trust."""
    with pytest.raises(CredentialMalformed):
        verify(bind(make()))


KB_MALFORMED: dict[str, Callable[[str], str]] = {
    "typ JWT": lambda p: sign({"alg": "EdDSA", "typ": "JWT"}, _kb_claims(p), W.holder),
    "alg none": lambda p: (
        _b64json({"alg": "none", "typ": "kb+jwt"}) + "." + _b64json(_kb_claims(p)) + "."
    ),
    "a kid header": lambda p: sign(
        {"alg": "EdDSA", "kid": W.holder.key_id, "typ": "kb+jwt"}, _kb_claims(p), W.holder
    ),
    "no sd_hash": lambda p: sign(
        {"alg": "EdDSA", "typ": "kb+jwt"},
        {k: v for k, v in _kb_claims(p).items() if k != "sd_hash"},
        W.holder,
    ),
    "an exp claim": lambda p: sign(
        {"alg": "EdDSA", "typ": "kb+jwt"}, {**_kb_claims(p), "exp": 1}, W.holder
    ),
    "aud a list": lambda p: sign(
        {"alg": "EdDSA", "typ": "kb+jwt"}, {**_kb_claims(p), "aud": [AUD]}, W.holder
    ),
    "iat a string": lambda p: sign(
        {"alg": "EdDSA", "typ": "kb+jwt"}, {**_kb_claims(p), "iat": "now"}, W.holder
    ),
}


def _kb_claims(presented: str) -> dict[str, Any]:
    return {
        "iat": int(NOW.timestamp()),
        "aud": AUD,
        "nonce": NONCE,
        "sd_hash": disclosure_digest(presented),
    }


@pytest.mark.parametrize("make", KB_MALFORMED.values(), ids=KB_MALFORMED.keys())
def test_malformed_key_binding_jwt(make: Callable[[str], str]) -> None:
    presented = without_kb(GOOD)
    with pytest.raises(CredentialMalformed):
        verify(presented + make(presented))


def test_a_well_formed_hand_made_key_binding_jwt_is_accepted() -> None:
    """The KB_MALFORMED cases differ from a good KB-JWT only in what they name."""
    presented = without_kb(GOOD)
    kb = sign({"alg": "EdDSA", "typ": "kb+jwt"}, _kb_claims(presented), W.holder)
    assert verify(presented + kb).groups == {"delivery_rider"}


def test_unknown_issuer_key() -> None:
    stranger = PrivateKey.generate()
    with pytest.raises(UnknownIssuer, match="unknown-key-id"):
        verify(bind(reissue(header={"kid": stranger.key_id}, key=stranger)))


@pytest.mark.parametrize(
    ("record", "iss", "code"),
    [
        ("other_rec", ISS, "key-scope-mismatch"),  # union 110000's key, iss of 440000
        ("revoked_rec", "120000", "key-revoked"),  # revoked before iat
        ("next_rec", ISS, "key-not-yet-valid"),  # published, not yet valid at iat
        ("station_rec", "ST-1", "key-role-mismatch"),
    ],
)
def test_issuer_key_refused(record: str, iss: str, code: str) -> None:
    rec = getattr(W, record)
    text = W.issue(record=rec, issuer=iss)
    with pytest.raises(UnknownIssuer, match=code):
        verify(present(text), status_lists=None)


def test_expired_trust_list() -> None:
    root = W.ring.current(Role.ROOT, T0).public_key
    signed = sign_trust_list(W.ring, NOW - 2 * DAY, ttl=DAY)
    trust = verify_trust_list(signed, root, NOW - 2 * DAY + timedelta(hours=1))
    with pytest.raises(UnknownIssuer, match="trust list expired"):
        verify(GOOD, trust_list=trust)


def test_bad_issuer_signature() -> None:
    issuer_jwt, disclosures, _ = parts(ISSUED_SD_JWT)
    head, payload, signature = issuer_jwt.split(".")
    claims = decode(payload)
    claims["home_union"] = "110000"
    forged = f"{head}.{b64url_encode(canonical_bytes(claims))}.{signature}"
    with pytest.raises(CredentialSignatureInvalid):
        verify(bind("~".join([forged, *disclosures, ""])))


def test_signed_by_the_holder_instead() -> None:
    with pytest.raises(CredentialSignatureInvalid):
        verify(bind(reissue(key=W.holder)))


@pytest.mark.parametrize(
    ("offset", "error"),
    [
        (365 * DAY + timedelta(seconds=30), CredentialExpired),
        (365 * DAY + timedelta(seconds=29), None),  # within the leeway
        (timedelta(seconds=-31), CredentialNotYetValid),
        (timedelta(seconds=-30), None),
    ],
)
def test_validity_period(offset: timedelta, error: type[CredentialError] | None) -> None:
    now = ISSUED + offset
    text = present(now=now)
    if error is None:
        assert verify(text, now=now, status_lists=None).groups == {"delivery_rider"}
    else:
        with pytest.raises(error):
            verify(text, now=now, status_lists=None)


@pytest.mark.parametrize(("value", "what"), [(1, "revoked"), (2, "suspended")])
def test_revoked_index_with_a_signed_status_list(value: int, what: str) -> None:
    bits = StatusList(100_000, bits=2)
    bits.set(1234, value)
    with pytest.raises(CredentialRevoked, match=what):
        verify(GOOD, status_lists=W.status_lists(bits=bits))
    bits.set(1234, 0)
    assert verify(GOOD, status_lists=W.status_lists(bits=bits)).status_index == 1234


def test_status_list_held_by_union_code() -> None:
    assert verify(GOOD, status_lists=W.status_lists(key_by="union")).issuer_union == PROVINCE


def test_status_list_missing() -> None:
    with pytest.raises(StatusListMissing):
        verify(GOOD, status_lists={})
    other = W.status_lists(uri="https://ul.example/status/440000-b")
    with pytest.raises(StatusListMissing):
        verify(GOOD, status_lists={STATUS_URI: next(iter(other.values()))})


def test_status_list_stale() -> None:
    with pytest.raises(StatusListStale):
        verify(GOOD, status_lists=W.status_lists(signed_at=NOW - 2 * DAY, ttl=3 * DAY // 2))
    with pytest.raises(StatusListStale):
        verify(GOOD, status_max_age=timedelta(minutes=30))


def test_status_index_out_of_range() -> None:
    with pytest.raises(StatusIndexOutOfRange):
        verify(GOOD, status_lists=W.status_lists(bits=StatusList(1000)))


def test_key_binding_required_but_missing() -> None:
    with pytest.raises(HolderProofInvalid, match="no KB-JWT"):
        verify(without_kb(GOOD))


def test_key_binding_by_another_key() -> None:
    presented = without_kb(GOOD)
    kb = key_binding_jwt(presented, seeded("thief"), audience=AUD, nonce=NONCE, now=NOW)
    with pytest.raises(HolderProofInvalid, match="holder key"):
        verify(presented + kb)


def test_a_disclosure_stripped_or_added_after_key_binding() -> None:
    both = present(disclose=["delivery_rider", "hardship"])
    issuer_jwt, disclosures, kb = parts(both)
    stripped = "~".join([issuer_jwt, disclosures[0], kb])
    with pytest.raises(HolderProofInvalid, match="sd_hash"):
        verify(stripped)
    issuer_jwt, disclosures, kb = parts(GOOD)
    added = "~".join([issuer_jwt, *disclosures, disclosure_of("hardship"), kb])
    with pytest.raises(HolderProofInvalid, match="sd_hash"):
        verify(added)


@pytest.mark.parametrize(
    ("age", "error"),
    [
        (timedelta(minutes=5, seconds=30), None),  # the window plus the leeway
        (timedelta(minutes=5, seconds=31), HolderProofStale),
        (timedelta(days=3), HolderProofStale),  # an old presentation replayed
        (timedelta(seconds=-30), None),
        (timedelta(seconds=-31), HolderProofStale),  # made in the future
    ],
)
def test_key_binding_window(age: timedelta, error: type[CredentialError] | None) -> None:
    text = present(now=NOW - age)
    if error is None:
        assert verify(text).key_bound_at == NOW - age
    else:
        with pytest.raises(error):
            verify(text)


def test_key_binding_window_is_configurable() -> None:
    text = present(now=NOW - timedelta(minutes=20))
    assert verify(text, max_proof_age=timedelta(minutes=30)).groups == {"delivery_rider"}


@pytest.mark.parametrize(
    "overrides",
    [
        {"expected_nonce": "another nonce"},
        {"expected_audience": "https://other-verifier.example"},
    ],
)
def test_challenge_mismatch(overrides: dict[str, str]) -> None:
    with pytest.raises(ChallengeMismatch):
        verify(GOOD, **overrides)


def test_a_key_binding_jwt_is_verified_even_when_not_required() -> None:
    thief = key_binding_jwt(without_kb(GOOD), seeded("thief"), audience=AUD, nonce=NONCE, now=NOW)
    with pytest.raises(HolderProofInvalid):
        verify(without_kb(GOOD) + thief, require_key_binding=False)
    assert verify(GOOD, require_key_binding=False, expected_nonce=None).groups == {"delivery_rider"}


def test_a_disclosure_presented_twice() -> None:
    d = disclosure_of("delivery_rider")
    with pytest.raises(BadDisclosure, match="twice"):
        verify(bind(f"{parts(GOOD)[0]}~{d}~{d}~"))


def test_a_disclosure_not_in_the_credential() -> None:
    forged = b64url_encode(canonical_bytes([b64url_encode(bytes(16)), "model_worker"]))
    with pytest.raises(BadDisclosure, match="no digest"):
        verify(bind(f"{parts(GOOD)[0]}~{forged}~"))
    other = disclosure_of("hardship", W.issue(salt=None))  # another credential's disclosure
    with pytest.raises(BadDisclosure, match="no digest"):
        verify(bind(f"{parts(GOOD)[0]}~{other}~"))


def _issued_with_disclosures(*disclosures: str) -> str:
    """A credential whose groups are exactly the digests of ``disclosures``, signed by the
    issuer (a broken issuer: ours never makes such disclosures)."""
    groups = [{"...": disclosure_digest(d)} for d in disclosures]
    return reissue(groups=groups, disclosures=list(disclosures))


BAD_DISCLOSURES = {
    "not base64url": "not*base64",
    "not json": b64url_encode(b"[1,"),
    "an object property disclosure": _b64json(["c2FsdA", "groups", "hardship"]),
    "not an array": _b64json({"salt": "c2FsdA", "value": "hardship"}),
    "a number": _b64json(["c2FsdA", 7]),
    "salt not a string": _b64json([1, "hardship"]),
    "not a group name": _b64json(["c2FsdA", "Hardship!"]),
}


@pytest.mark.parametrize("disclosure", BAD_DISCLOSURES.values(), ids=BAD_DISCLOSURES.keys())
def test_bad_disclosure_content(disclosure: str) -> None:
    with pytest.raises(BadDisclosure):
        verify(bind(_issued_with_disclosures(disclosure)))


def test_one_group_disclosed_twice_under_two_salts() -> None:
    a, b = _b64json(["c2FsdA", "hardship"]), _b64json(["c2FsdB", "hardship"])
    with pytest.raises(BadDisclosure, match="disclosed twice"):
        verify(bind(_issued_with_disclosures(a, b)))
    assert verify(bind(_issued_with_disclosures(a))).groups == {"hardship"}


# -- issuing and presenting refuse bad input ----------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"kid": W.other_rec.kid},
        {"issuer": "https://ul.example/"},
        {"issuer": "http://ul.example/unions/440000"},
        {"vct": ""},
        {"member_id": "Zhang San"},
        {"member_id": b64url_encode(bytes(15))},
        {"home_union": "广州"},
        {"holder_jwk": {**W.holder.public_key.to_jwk(), "d": "AAAA"}},
        {"holder_jwk": {"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}},
        {"holder_jwk": "not a jwk"},
        {"groups": "hardship"},
        {"groups": ["hardship", "hardship"]},
        {"groups": ["Hardship"]},
        {"groups": [f"g{i}" for i in range(sdjwt.MAX_GROUPS + 1)]},
        {"status_index": -1},
        {"status_index": 2**32},
        {"status_uri": ""},
        {"iat": ISSUED.replace(tzinfo=None)},
        {"exp": ISSUED},
        {"salt": lambda: bytes(15)},
        {"salt": lambda: bytes(16)},  # the same bytes twice
    ],
)
def test_issue_refuses(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        W.issue(**overrides)


def test_present_refuses() -> None:
    with pytest.raises(ValueError, match="holder key"):
        present(holder_key=seeded("thief"))
    with pytest.raises(ValueError, match="no group"):
        present(disclose=["model_worker"])
    with pytest.raises(ValueError, match="collection"):
        present(disclose="hardship")
    with pytest.raises(ValueError, match="already a presentation"):
        present(GOOD)
    with pytest.raises(ValueError, match="audience and nonce"):
        present(nonce="")
    with pytest.raises(CredentialMalformed):
        present("not an sd-jwt~")
    with pytest.raises(TypeError):
        present(ISSUED_SD_JWT.encode())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ending with"):
        key_binding_jwt(GOOD, W.holder, audience=AUD, nonce=NONCE, now=NOW)


# -- tampering and fuzzing: only CredentialError, ever ----------------------------------------

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
BASELINE = verify(GOOD)


def test_every_single_character_change_is_refused() -> None:
    """Exhaustive over positions: each character replaced by the next one of its alphabet."""
    for i, char in enumerate(GOOD):
        replacement = (
            "."
            if char == "~"
            else "~"
            if char == "."
            else ALPHABET[(ALPHABET.index(char) + 1) % len(ALPHABET)]
        )
        with pytest.raises(CredentialError):
            verify(GOOD[:i] + replacement + GOOD[i + 1 :])


@settings(max_examples=400)
@given(st.data())
def test_random_edits_raise_only_credential_errors(data: st.DataObject) -> None:
    """Replace, insert, delete or swap characters: refused with a CredentialError, or, were an
    edit ever semantically neutral, accepted with identical claims. Never another exception."""
    text = GOOD
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text) - 1))
        char = data.draw(st.sampled_from(ALPHABET + "~.=") | st.characters())
        edit = data.draw(st.sampled_from(["replace", "insert", "delete", "swap"]))
        if edit == "replace":
            text = text[:i] + char + text[i + 1 :]
        elif edit == "insert":
            text = text[:i] + char + text[i:]
        elif edit == "delete":
            text = text[:i] + text[i + 1 :]
        else:
            j = data.draw(st.integers(0, len(text) - 1))
            chars = list(text)
            chars[i], chars[j] = chars[j], chars[i]
            text = "".join(chars)
    try:
        result = verify(text)
    except CredentialError:
        return
    assert result == BASELINE


@settings(max_examples=200)
@given(st.text() | st.text(alphabet=ALPHABET + "~.").map(lambda s: s + "~"))
def test_random_text_raises_only_credential_errors(text: str) -> None:
    with pytest.raises(CredentialError):
        verify(text)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["...", "jwk", "idx", "uri", "x", "kty"]), inner)
    ),
    max_leaves=10,
)


@settings(max_examples=300)
@given(st.sampled_from(sorted(sdjwt.CLAIMS)), JSON_VALUES)
def test_structured_fuzz_of_signed_claims(name: str, value: Any) -> None:
    """Any claim replaced by any JSON value, signed by the issuer and key-bound: refused with a
    CredentialError or accepted; never another exception."""
    text = bind(without_kb(reissue(without_kb(GOOD), **{name: value})))
    with contextlib.suppress(CredentialError):
        verify(text)


# -- the worked example of docs/sd-jwt.md --------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "sd-jwt.md"

# Every input fixed (Ed25519 signatures are deterministic), so these characters are the same
# on every run and in every correct implementation.
EX_ISSUER = PrivateKey.from_seed(bytes(range(32)))
EX_HOLDER = PrivateKey.from_seed(bytes(range(32, 64)))
EX_ROOT = PrivateKey.from_seed(bytes(range(64, 96)))
EX_SALTS = [bytes(range(start, start + 16)) for start in (0xA0, 0xB0, 0xC0, 0xD0)]
EX_ISS = "https://ul.example/unions/440000"
EX_VCT = "https://ul.example/vct/membership/v1"
EX_STATUS_URI = "https://ul.example/status/440000"
EX_INDEX = 123_456
EX_IAT = datetime(2026, 4, 11, tzinfo=UTC)
EX_EXP = datetime(2027, 4, 11, tzinfo=UTC)
EX_NOW = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)
EX_AUD = "https://verifier.example/benefits"
EX_NONCE = "n-0S6_WzA2Mj"


def example() -> tuple[str, str]:
    """(the issued SD-JWT, the presentation disclosing delivery_rider)."""
    salts: Iterator[bytes] = iter(EX_SALTS)  # groups in sorted order, then the decoys
    issued = issue_sd_jwt(
        issuer_key=EX_ISSUER,
        kid=EX_ISSUER.key_id,
        issuer=EX_ISS,
        vct=EX_VCT,
        member_id=MEMBER,
        home_union=HOME,
        holder_jwk=EX_HOLDER.public_key.to_jwk(),
        groups=["hardship", "delivery_rider"],
        iat=EX_IAT,
        exp=EX_EXP,
        status_index=EX_INDEX,
        status_uri=EX_STATUS_URI,
        salt=lambda: next(salts),
    )
    presentation = present_sd_jwt(
        issued,
        holder_key=EX_HOLDER,
        disclose=["delivery_rider"],
        audience=EX_AUD,
        nonce=EX_NONCE,
        now=EX_NOW,
    )
    return issued, presentation


def _iso(value: datetime | int) -> str:
    if isinstance(value, int):
        value = datetime.fromtimestamp(value, UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _block(text: str, lang: str = "") -> str:
    return f"```{lang}\n{text}\n```"


def worked_example_section() -> str:
    issued, presentation = example()
    issuer_jwt, disclosures, _ = parts(issued)
    _, _, kb = parts(presentation)
    presented = presentation[: len(presentation) - len(kb)]
    head, payload, _ = issuer_jwt.split(".")
    claims = decode(payload)
    kb_head, kb_payload, _ = kb.split(".")
    assert b64url_decode(head) == canonical_bytes(decode(head))
    assert b64url_decode(payload) == canonical_bytes(claims)
    real = {disclosure_digest(d) for d in disclosures}
    decoys = [i["..."] for i in claims["groups"] if i["..."] not in real]
    assert decoys == sorted(b64url_encode(hashlib.sha256(s).digest()) for s in EX_SALTS[2:])
    rows = [
        ("issuer key seed (RFC 8032)", EX_ISSUER.seed().hex()),
        ("issuer kid (RFC 7638)", f"`{EX_ISSUER.key_id}`"),
        ("issuer key record", f"role `issuer`, scope `{PROVINCE}`, nbf 2026-01-01T00:00:00Z"),
        ("holder key seed", EX_HOLDER.seed().hex()),
        ("holder JWK", f"`{json.dumps(EX_HOLDER.public_key.to_jwk())}`"),
        ("iss, vct", f"`{EX_ISS}`, `{EX_VCT}`"),
        ("member id (sub), home union", f"`{MEMBER}`, `{HOME}`"),
        ("groups", "`delivery_rider`, `hardship`"),
        ("salt bytes, in order", ", ".join(f"{s[0]:02x}..{s[-1]:02x}" for s in EX_SALTS)),
        ("status", f"index {EX_INDEX:,} of `{EX_STATUS_URI}`"),
        ("iat, exp", f"{_iso(EX_IAT)}, {_iso(EX_EXP)}"),
        ("presented at", f"{_iso(EX_NOW)}, to aud `{EX_AUD}` with nonce `{EX_NONCE}`"),
        ("disclosed", "`delivery_rider`"),
    ]
    out = ["| input | value |", "|---|---|"]
    out += [f"| {name} | {value} |" for name, value in rows]
    out += [
        "",
        "The issuer-signed JWT's header, as signed (canonical JSON):",
        "",
        _block(b64url_decode(head).decode(), "json"),
        "",
        "Its claims (indented here for reading; the signed bytes are their canonical JSON, "
        f"{len(b64url_decode(payload))} bytes):",
        "",
        _block(json.dumps(claims, indent=2, ensure_ascii=False), "json"),
        "",
        "The disclosures, in the order issued (groups sorted by name), and their digests:",
        "",
    ]
    for d in disclosures:
        salt, group = decode(d)
        out += [
            f"- `{group}`: salt `{salt}`, JSON `{b64url_decode(d).decode()}`",
            f"  - disclosure `{d}`",
            f"  - digest `{disclosure_digest(d)}`",
        ]
    out += [
        "",
        "The two other digests of `groups` are decoys: SHA-256 of the third and fourth salt "
        "bytes (" + ", ".join(f"`{d}`" for d in decoys) + ").",
        "",
        f"The issued SD-JWT ({len(issued):,} characters), as the wallet receives it:",
        "",
        _block(issued),
        "",
        "The presentation discloses `delivery_rider` only. What the KB-JWT's `sd_hash` covers "
        "(the issuer-signed JWT, `~`, the disclosure, `~`) hashes to "
        f"`{disclosure_digest(presented)}`. The KB-JWT's header and claims, as signed:",
        "",
        _block(b64url_decode(kb_head).decode() + "\n" + b64url_decode(kb_payload).decode(), "json"),
        "",
        f"The presentation ({len(presentation):,} characters):",
        "",
        _block(presentation),
        "",
        "What a generic SD-JWT library's processing (RFC 9901, section 7.1) makes of it: "
        "undisclosed `groups` elements removed, `_sd_alg` dropped:",
        "",
        _block(json.dumps(_processed(presentation), indent=2, ensure_ascii=False), "json"),
    ]
    return "\n".join(out)


def _processed(presentation: str) -> dict[str, Any]:
    issuer_jwt, disclosures, _ = parts(presentation)
    payload = decode(issuer_jwt.split(".")[1])
    values = {disclosure_digest(d): decode(d)[1] for d in disclosures}
    payload["groups"] = [values[i["..."]] for i in payload["groups"] if i["..."] in values]
    del payload["_sd_alg"]
    return payload  # type: ignore[no-any-return]


def checks_section() -> str:
    """The numbered checks and their errors, from verify_sd_jwt's docstring order."""
    rows = [
        (1, "the compact form: ASCII, `~`-separated, no empty disclosure", CredentialMalformed),
        (
            2,
            "both JWTs: base64url JSON without duplicate members, `typ` and `alg`, exactly the "
            "profile's header members and claims with their types, `_sd_alg` `sha-256`, every "
            '`groups` element a `{"...": digest}` with a SHA-256 digest, no digest twice',
            CredentialMalformed,
        ),
        (
            3,
            "the issuer key: the trust list not expired; `kid` an issuer key of the union that "
            "`iss` names, valid at `iat` (not before, not expired, not revoked)",
            UnknownIssuer,
        ),
        (4, "the issuer's Ed25519 signature", CredentialSignatureInvalid),
        (5, "`now < exp + leeway`", CredentialExpired),
        (5, "`iat <= now + leeway`", CredentialNotYetValid),
        (6, "the referenced status list is held (by URI or union)", StatusListMissing),
        (6, "and fresh (`exp`, `ttl`, the verifier's maximum age)", StatusListStale),
        (6, "the index is within the list", StatusIndexOutOfRange),
        (6, "the status is 0 (1 revoked, 2 suspended)", CredentialRevoked),
        (
            7,
            "a KB-JWT is present when required, signed by `cnf.jwk`, its `sd_hash` over exactly "
            "the presented issuer JWT and disclosures",
            HolderProofInvalid,
        ),
        (
            8,
            "the KB-JWT's `iat` is within `max_proof_age` (+ leeway) before now, not after "
            "now + leeway",
            HolderProofStale,
        ),
        (9, "`aud` and `nonce` are the verifier's", ChallengeMismatch),
        (
            10,
            "each disclosure presented once, its digest among `groups`, a `[salt, group]` "
            "array naming a group not yet disclosed",
            BadDisclosure,
        ),
    ]
    out = ["| step | check | error | code |", "|---|---|---|---|"]
    for step, check, error in rows:
        assert error.step == step or (step, error) == (1, CredentialMalformed), error
        out.append(f"| {step} | {check} | `{error.__name__}` | `{error.code}` |")
    return "\n".join(out)


def generated_sections() -> dict[str, str]:
    return {"worked-example": worked_example_section(), "checks": checks_section()}


def _marked(name: str) -> tuple[str, str]:
    return f"<!-- generated: {name} -->\n", f"\n<!-- end: {name} -->"


def doc_section(doc: str, name: str) -> str:
    begin, end = _marked(name)
    assert doc.count(begin) == 1, name
    assert doc.count(end) == 1, name
    return doc[doc.index(begin) + len(begin) : doc.index(end)]


def test_the_documentation_is_generated_from_the_code() -> None:
    """docs/sd-jwt.md's worked example and check table are this code's output, exactly. After
    a deliberate change, regenerate them: ``python -m tests.verifier.test_sdjwt``."""
    doc = DOC.read_text(encoding="utf-8")
    for name, text in generated_sections().items():
        assert doc_section(doc, name) == text, f"docs/sd-jwt.md section {name} is stale"
    issued, presentation = example()
    for string in (issued, presentation, *parts(presentation)[1], parts(presentation)[2]):
        assert string in doc


def test_the_worked_example_verifies() -> None:
    record = keys.KeyRecord(
        kid=EX_ISSUER.key_id,
        role=Role.ISSUER,
        public_key=EX_ISSUER.public_key,
        not_before=T0,
        scope=PROVINCE,
    )
    ring = Keyring([record], {record.kid: EX_ISSUER})
    ring, _ = ring.rotate(Role.ROOT, T0, new_key=EX_ROOT)
    trust = verify_trust_list(sign_trust_list(ring, EX_NOW), EX_ROOT.public_key, EX_NOW)
    token = sign_status_list(
        StatusList(200_000),
        uri=EX_STATUS_URI,
        issuer_key=EX_ISSUER,
        kid=EX_ISSUER.key_id,
        now=EX_NOW,
        ttl=DAY,
    )
    lists = {EX_STATUS_URI: verify_status_list(token, trust, EX_NOW)}
    _, presentation = example()
    v = verify_sd_jwt(
        presentation,
        trust_list=trust,
        now=EX_NOW,
        status_lists=lists,
        expected_audience=EX_AUD,
        expected_nonce=EX_NONCE,
    )
    assert (v.issuer_union, v.home_union) == (PROVINCE, HOME)
    assert v.groups == {"delivery_rider"}


def write_doc_sections() -> None:
    """Rewrite the generated sections of docs/sd-jwt.md in place."""
    doc = DOC.read_text(encoding="utf-8")
    for name, text in generated_sections().items():
        begin, end = _marked(name)
        doc = doc.replace(begin + doc_section(doc, name) + end, begin + text + end)
    DOC.write_text(doc, encoding="utf-8")


if __name__ == "__main__":
    write_doc_sections()
