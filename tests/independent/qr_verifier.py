"""An independent verifier of UnionLedger's station credential, written from docs/credentials.md,
docs/station.md and docs/keys.md only (the rule of this package: see
``tests/independent/__init__.py``).

It imports nothing of the repository: only the standard library, pynacl (a dependency in
pyproject.toml; Ed25519 verified as libsodium's ``crypto_sign_verify_detached`` does, as
credentials.md's conventions require) and the sibling independent module ``ledger_verifier``
(canonical JSON, strict base64url, the trust list of keys.md 5.2). "cred N" is
docs/credentials.md section N, "station N" docs/station.md section N, "keys N" docs/keys.md.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from tests.independent.ledger_verifier import (
    Fail,
    b64ud,
    b64ue,
    is_int,
    jwk_thumbprint,
    loads_strict,
    parse_canonical,
    verify_trust_list,
)

__all__ = [
    "GENESIS",
    "CredentialError",
    "RecordError",
    "StatusList",
    "StatusListError",
    "TrustList",
    "Verified",
    "b45_decode",
    "b45_encode",
    "disclosure_digest",
    "holder_message",
    "load_trust_list",
    "parse_presentation",
    "record_hash",
    "verify_batch",
    "verify_presentation",
    "verify_record",
    "verify_status_list",
]

MAX_DATE = 253402300799  # cred conventions: 9999-12-31T23:59:59Z


def is_numeric_date(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_DATE


def ed25519_ok(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """cred conventions: pure Ed25519 as libsodium verifies it (small-order keys fail)."""
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


# ---------------------------------------------------------------- cred 5: errors
class CredentialError(Exception):
    """A refusal of cred 5, with its stable code and step number."""

    def __init__(self, step: int, code: str, message: str) -> None:
        super().__init__(f"step {step} {code}: {message}")
        self.step = step
        self.code = code


MALFORMED = "credential-malformed"


# ---------------------------------------------------------------- cred 2: base45
B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_B45_VALUE = {c: i for i, c in enumerate(B45)}
MAX_QR_TEXT = 4296


def b45_decode(text: str) -> bytes:
    """cred 2: strict base45 (RFC 9285)."""
    if len(text) % 3 == 1:
        raise CredentialError(2, MALFORMED, "dangling base45 character")
    out = bytearray()
    for i in range(0, len(text), 3):
        group = text[i : i + 3]
        if any(c not in _B45_VALUE for c in group):
            raise CredentialError(2, MALFORMED, "character outside the base45 alphabet")
        values = [_B45_VALUE[c] for c in group]
        if len(values) == 3:
            n = values[0] + 45 * values[1] + 2025 * values[2]
            if n > 65535:
                raise CredentialError(2, MALFORMED, "base45 group above 65535")
            out += bytes([n >> 8, n & 0xFF])
        else:
            n = values[0] + 45 * values[1]
            if n > 255:
                raise CredentialError(2, MALFORMED, "final base45 group above 255")
            out.append(n)
    return bytes(out)


def b45_encode(data: bytes) -> str:
    """cred 2: base45 encoding (used by the tests to re-wrap altered bytes)."""
    out = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        out += [B45[n % 45], B45[(n // 45) % 45], B45[n // 2025]]
    if len(data) % 2:
        n = data[-1]
        out += [B45[n % 45], B45[n // 45]]
    return "".join(out)


# ---------------------------------------------------------------- cred 3.1: CBOR
class CborError(ValueError):
    pass


class Bstr(bytes):
    """A CBOR byte string that remembers where its item (head included) sat in the input."""

    item_start: int
    item_end: int


@dataclass
class CborMap:
    pairs: list[tuple[Any, Any]]


_MIN_ARG = {24: 24, 25: 256, 26: 65536, 27: 1 << 32}


def cbor_decode(buf: bytes, pos: int = 0, *, lenient: bool = False) -> tuple[Any, int]:
    """One CBOR item (cred 3.1): definite lengths only, no tags, no floats or simple values;
    heads in their shortest form unless `lenient`; map keys in deterministic order. Returns the
    value and the position after it."""
    if pos >= len(buf):
        raise CborError("truncated")
    start = pos
    major, info = buf[pos] >> 5, buf[pos] & 31
    pos += 1
    if major == 7:
        raise CborError("float or simple value")
    if major == 6:
        raise CborError("tag")
    if info < 24:
        arg = info
    elif info in _MIN_ARG:
        size = 1 << (info - 24)
        if pos + size > len(buf):
            raise CborError("truncated head")
        arg = int.from_bytes(buf[pos : pos + size], "big")
        pos += size
        if arg < _MIN_ARG[info] and not lenient:
            raise CborError("head not in its shortest form")
    else:
        raise CborError("indefinite length or reserved value")
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        if pos + arg > len(buf):
            raise CborError("truncated string")
        raw = buf[pos : pos + arg]
        if major == 3:
            return raw.decode("utf-8"), pos + arg
        item = Bstr(raw)
        item.item_start, item.item_end = start, pos + arg
        return item, pos + arg
    if major == 4:
        items = []
        for _ in range(arg):
            value, pos = cbor_decode(buf, pos, lenient=lenient)
            items.append(value)
        return items, pos
    pairs = []  # major 5, a map
    previous: bytes | None = None
    for _ in range(arg):
        key_start = pos
        key, pos = cbor_decode(buf, pos, lenient=lenient)
        if isinstance(key, (list, CborMap)):
            raise CborError("structured map key")
        if previous is not None and buf[key_start:pos] <= previous:
            raise CborError("map keys out of order or repeated")
        previous = buf[key_start:pos]
        value, pos = cbor_decode(buf, pos, lenient=lenient)
        pairs.append((key, value))
    return CborMap(pairs), pos


def cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([(major << 5) | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([(major << 5) | info]) + n.to_bytes(size, "big")
    raise ValueError("too large")


def cbor_bstr(data: bytes) -> bytes:
    return cbor_head(2, len(data)) + data


# ---------------------------------------------------------------- keys 5.2 / cred 7: trust list
@dataclass
class TrustList:
    iat: int
    exp: int
    entries: list[dict[str, Any]]
    by_kid: dict[str, dict[str, Any]] = field(default_factory=dict)
    issuers_by_short_kid: dict[bytes, list[dict[str, Any]]] = field(default_factory=dict)


def index_trust_list(iat: int, exp: int, entries: Sequence[dict[str, Any]]) -> TrustList:
    """cred 7 point 1: index the issuer keys (only them) by the first 4 bytes of their kid."""
    trust = TrustList(iat, exp, list(entries))
    for entry in entries:
        trust.by_kid[entry["kid"]] = entry
        if entry["role"] == "issuer":
            short = b64ud(entry["kid"])[:4]
            trust.issuers_by_short_kid.setdefault(short, []).append(entry)
    return trust


def load_trust_list(token: str, pinned_roots: Sequence[dict[str, Any]], now: int) -> TrustList:
    """keys 5.2 (verification), then cred 7 point 1 (the index)."""
    claims = verify_trust_list(token, pinned_roots, now)
    return index_trust_list(claims["iat"], claims["exp"], claims["keys"])


def key_refusal(entry: Mapping[str, Any], t: int) -> str | None:
    """keys 5.3 step 3 / cred 7 point 4: may the key have signed at `t`?"""
    if not entry["nbf"] <= t:
        return "key-not-yet-valid"
    if "exp" in entry and not t < entry["exp"]:
        return "key-expired"
    if "revoked" in entry and not t < entry["revoked"]:
        return "key-revoked"
    return None


# ---------------------------------------------------------------- cred 6: status lists
class StatusListError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class StatusList:
    issuer: str
    iat: int
    exp: int
    ttl: int
    bits: int
    data: bytes
    sub: str

    @property
    def size(self) -> int:
        return 8 * len(self.data) // self.bits

    def get(self, i: int) -> int:
        """Entry `i`, least-significant bit first within each byte."""
        offset = i * self.bits
        return (self.data[offset // 8] >> (offset % 8)) & ((1 << self.bits) - 1)


MAX_INFLATED = 16 * 1024 * 1024


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_INFLATED + 1)
    if len(out) > MAX_INFLATED or inflater.unconsumed_tail:
        raise StatusListError("invalid-status-list")
    if not inflater.eof or inflater.unused_data:
        raise StatusListError("invalid-status-list")
    return out


def verify_status_list(
    token: str, trust: TrustList, now: int, *, leeway: int = 30, expected_sub: str | None = None
) -> StatusList:
    """cred 6, "Verifying the token", steps 1-6."""
    parts = token.split(".")
    if len(parts) != 3:
        raise StatusListError("invalid-status-list")
    try:
        header = loads_strict(b64ud(parts[0]))
        claims = loads_strict(b64ud(parts[1]))
        signature = b64ud(parts[2])
    except Fail as e:
        raise StatusListError("invalid-status-list") from e
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise StatusListError("invalid-status-list")
    if header.get("typ") != "statuslist+jwt" or header.get("alg") != "EdDSA":
        raise StatusListError("invalid-status-list")
    if set(header) - {"alg", "kid", "typ"}:
        raise StatusListError("invalid-status-list")
    body = claims.get("status_list")
    if not (
        isinstance(header.get("kid"), str)
        and isinstance(claims.get("sub"), str)
        and claims["sub"]
        and is_int(claims.get("ttl"))
        and claims["ttl"] > 0
        and is_numeric_date(claims.get("iat"))
        and is_numeric_date(claims.get("exp"))
        and isinstance(body, dict)
        and body.get("bits") in (1, 2, 4, 8)
        and isinstance(body.get("lst"), str)
    ):
        raise StatusListError("invalid-status-list")
    try:
        data = _inflate(b64ud(body["lst"]))
    except (Fail, zlib.error) as e:
        raise StatusListError("invalid-status-list") from e
    key = trust.by_kid.get(header["kid"])
    if key is None or key["role"] != "issuer" or key_refusal(key, claims["iat"]):
        raise StatusListError("status-list-bad-signature")
    if not ed25519_ok(b64ud(key["x"]), f"{parts[0]}.{parts[1]}".encode(), signature):
        raise StatusListError("status-list-bad-signature")
    if expected_sub is not None and claims["sub"] != expected_sub:
        raise StatusListError("invalid-status-list")
    if not claims["iat"] - leeway <= now < claims["exp"]:
        raise StatusListError("status-list-expired")
    return StatusList(
        key["scope"], claims["iat"], claims["exp"], claims["ttl"], body["bits"], data, claims["sub"]
    )


# ---------------------------------------------------------------- cred 3: the presentation
GROUP_CODES = {
    1: "delivery_rider",
    2: "courier",
    3: "ride_hailing_driver",
    4: "truck_driver",
    5: "migrant_worker",
    6: "female_worker",
    7: "hardship",
    8: "over_age_worker",
    9: "model_worker",
}  # cred 3.7
GROUP_NAMES = set(GROUP_CODES.values())
_GROUP_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
HOLDER_CONTEXT = b"unionledger/station-qr/v1 holder proof"  # cred 3.5: 38 bytes
DISCLOSURE_CONTEXT = b"unionledger/station-qr/v1 disclosure\n"  # cred 3.6: 37 bytes
CLAIM_ORDER = [4, 6, -1, -2, -3, -4, -5]  # cred 3.3
PROTECTED_PREFIX = b"\xa2\x01\x27\x04\x44"  # cred 3.2: {1: -8, 4: h'<4 bytes>'}


def disclosure_digest(disclosure: bytes) -> bytes:
    """cred 3.6."""
    return hashlib.sha256(DISCLOSURE_CONTEXT + disclosure).digest()[:12]


def holder_message(
    credential_hash: bytes, proof_time: int, challenge: bytes | None, disclosures: Sequence[bytes]
) -> bytes:
    """cred 3.5: the CBOR array the holder signs."""
    message = b"\x85" + cbor_head(3, len(HOLDER_CONTEXT)) + HOLDER_CONTEXT
    message += cbor_bstr(credential_hash) + cbor_head(0, proof_time)
    message += cbor_bstr(challenge) if challenge is not None else b"\xf6"
    message += cbor_head(4, len(disclosures)) + b"".join(cbor_bstr(d) for d in disclosures)
    return message


@dataclass
class Parsed:
    raw: bytes
    protected: Bstr
    payload: Bstr
    issuer_signature: bytes
    credential_bytes: bytes
    proof_time: int
    challenge: bytes | None
    holder_signature: bytes
    disclosures: list[bytes]
    claims: dict[int, Any]


def _malformed(message: str) -> CredentialError:
    return CredentialError(2, MALFORMED, message)


def _parse_claims(payload: bytes) -> dict[int, Any]:
    """cred 3.1 and 3.3: labels, order and types, not the encoding; bytes after the map are
    ignored."""
    try:
        decoded, _ = cbor_decode(payload, 0, lenient=True)
    except (CborError, UnicodeDecodeError) as e:
        raise _malformed(f"claims: {e}") from e
    if not isinstance(decoded, CborMap):
        raise _malformed("claims are not a map")
    labels = [k for k, _ in decoded.pairs]
    if any(k not in CLAIM_ORDER for k in labels) or labels != [
        k for k in CLAIM_ORDER if k in labels
    ]:
        raise _malformed("claim labels or their order")
    claims: dict[int, Any] = dict(decoded.pairs)
    if any(k not in claims for k in (4, 6, -1, -2, -4)):
        raise _malformed("a claim is missing")
    if not (is_numeric_date(claims[4]) and is_numeric_date(claims[6]) and claims[6] < claims[4]):
        raise _malformed("iat/exp")
    if not (isinstance(claims[-1], Bstr) and len(claims[-1]) == 16):
        raise _malformed("member id")
    if not (isinstance(claims[-2], Bstr) and len(claims[-2]) == 32):
        raise _malformed("holder key length")  # its validity is judged at step 7
    if -3 in claims and not isinstance(claims[-3], str):
        raise _malformed("home union is not text")
    if not (is_int(claims[-4]) and claims[-4] >= 0):
        raise _malformed("status index")
    if -5 in claims:
        digests = claims[-5]
        if not (isinstance(digests, Bstr) and digests and len(digests) % 12 == 0):
            raise _malformed("group digests")
    return claims


def parse_presentation(text: str) -> Parsed:
    """cred 5 steps 1 and 2 (cred 2, 3.1, 3.2, 3.3)."""
    if not text.startswith("UL1:"):
        message = "unsupported layout" if re.match(r"UL.:", text, re.S) else "no UL1: prefix"
        raise CredentialError(1, MALFORMED, message)
    if len(text) > MAX_QR_TEXT:
        raise _malformed("text too long")
    raw = b45_decode(text[4:])
    try:
        top, end = cbor_decode(raw, 0)
    except (CborError, UnicodeDecodeError) as e:
        raise _malformed(f"CBOR: {e}") from e
    if end != len(raw):
        raise _malformed("bytes after the presentation")
    if not isinstance(top, list) or not 3 <= len(top) <= 23:
        raise _malformed("presentation is not an array of 3 to 23 items")
    credential, proof_time, holder_signature, *disclosures = top
    if not (isinstance(credential, list) and len(credential) == 4):
        raise _malformed("credential is not an array of 4")
    protected, unprotected, payload, issuer_signature = credential
    if not (
        isinstance(protected, Bstr) and len(protected) == 9 and protected[:5] == PROTECTED_PREFIX
    ):
        raise _malformed("protected header")
    if not (isinstance(unprotected, CborMap) and not unprotected.pairs):
        raise _malformed("unprotected header is not empty")
    if not isinstance(payload, Bstr):
        raise _malformed("payload is not a byte string")
    if not (isinstance(issuer_signature, Bstr) and len(issuer_signature) == 64):
        raise _malformed("issuer signature is not 64 bytes")
    if raw[1] != 0x84:  # after the one-byte head of an array of 3..23 items
        raise _malformed("credential head")
    credential_bytes = raw[1 : issuer_signature.item_end]  # cred 3.2, the credential bytes
    challenge = None
    if is_int(proof_time):
        when = proof_time
    elif (
        isinstance(proof_time, list)
        and len(proof_time) == 2
        and is_int(proof_time[0])
        and isinstance(proof_time[1], Bstr)
    ):
        when, challenge = proof_time[0], bytes(proof_time[1])
    else:
        raise _malformed("proof time")
    if not is_numeric_date(when):
        raise _malformed("proof time is not a NumericDate")
    if not (isinstance(holder_signature, Bstr) and len(holder_signature) == 64):
        raise _malformed("holder signature is not 64 bytes")
    if not all(isinstance(d, Bstr) for d in disclosures):
        raise _malformed("a disclosure is not a byte string")
    return Parsed(
        raw=raw,
        protected=protected,
        payload=payload,
        issuer_signature=bytes(issuer_signature),
        credential_bytes=credential_bytes,
        proof_time=when,
        challenge=challenge,
        holder_signature=bytes(holder_signature),
        disclosures=[bytes(d) for d in disclosures],
        claims=_parse_claims(bytes(payload)),
    )


@dataclass
class Verified:
    """cred 5: what a presentation that passes yields."""

    member_id: str
    home_union: str
    issuer_union: str
    groups: list[str]
    exp: int
    holder_key: bytes
    credential_hash: bytes
    presentation_hash: bytes
    status_index: int
    proof_time: int


def _disclosed_group(disclosure: bytes, digests: set[bytes]) -> str:
    """cred 5 step 10 for one disclosure (decoded leniently: cred 3.6 and step 10)."""
    if disclosure_digest(disclosure) not in digests:
        raise CredentialError(10, "bad-disclosure", "digest not in the credential")
    try:
        value, _ = cbor_decode(disclosure, 0, lenient=True)
    except (CborError, UnicodeDecodeError) as e:
        raise CredentialError(10, "bad-disclosure", f"CBOR: {e}") from e
    if not (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], Bstr)
        and len(value[0]) == 12
    ):
        raise CredentialError(10, "bad-disclosure", "not [salt, group]")
    group = value[1]
    if is_int(group) and group in GROUP_CODES:
        return GROUP_CODES[group]
    if isinstance(group, str) and group not in GROUP_NAMES and _GROUP_NAME.fullmatch(group):
        return group
    raise CredentialError(10, "bad-disclosure", f"unknown group {group!r}")


def verify_presentation(
    text: str,
    *,
    trust: TrustList,
    status_lists: Mapping[str, StatusList],
    now: int,
    leeway: int = 30,
    max_proof_age: int = 90,
    challenge: bytes | None = None,
    status_max_age: int | None = None,
) -> Verified:
    """cred 5: the ten checks, in order."""
    p = parse_presentation(text)  # steps 1 and 2
    claims = p.claims
    iat, exp = claims[6], claims[4]
    # step 3 (cred 7)
    if not now < trust.exp + leeway:
        raise CredentialError(3, "credential-unknown-issuer", "trust list expired")
    candidates = trust.issuers_by_short_kid.get(bytes(p.protected[5:9]), [])
    if len(candidates) != 1:
        why = f"the short kid names {len(candidates)} issuer keys"
        raise CredentialError(3, "credential-unknown-issuer", why)
    key = candidates[0]
    refusal = key_refusal(key, iat)
    if refusal:
        raise CredentialError(3, "credential-unknown-issuer", refusal)
    issuer_union: str = key["scope"]
    if claims.get(-3) == issuer_union:
        raise CredentialError(3, MALFORMED, "the home claim is the issuer union")
    # step 4 (cred 3.4)
    protected_item = p.raw[p.protected.item_start : p.protected.item_end]
    payload_item = p.raw[p.payload.item_start : p.payload.item_end]
    sig_structure = b"\x84\x6aSignature1" + protected_item + b"\x40" + payload_item
    if not ed25519_ok(b64ud(key["x"]), sig_structure, p.issuer_signature):
        raise CredentialError(4, "credential-bad-signature", "issuer signature")
    # step 5
    if not now < exp + leeway:
        raise CredentialError(5, "credential-expired", "expired")
    if not iat <= now + leeway:
        raise CredentialError(5, "credential-not-yet-valid", "not yet valid")
    # step 6 (cred 6, "At each scan")
    status = status_lists.get(issuer_union)
    if status is None or status.issuer != issuer_union:
        raise CredentialError(6, "status-list-missing", f"no status list of {issuer_union}")
    if (
        now >= status.exp + leeway
        or now > status.iat + status.ttl + leeway
        or (status_max_age is not None and now > status.iat + status_max_age + leeway)
        or now + leeway < status.iat
    ):
        raise CredentialError(6, "status-list-stale", "status list stale")
    index = claims[-4]
    if not index < status.size:
        raise CredentialError(6, "status-index-out-of-range", f"index {index}")
    if status.get(index) != 0:
        raise CredentialError(6, "credential-revoked", f"status {status.get(index)}")
    # step 7 (cred 3.5)
    credential_hash = hashlib.sha256(p.credential_bytes).digest()
    message = holder_message(credential_hash, p.proof_time, p.challenge, p.disclosures)
    if not ed25519_ok(bytes(claims[-2]), message, p.holder_signature):
        raise CredentialError(7, "holder-proof-invalid", "holder signature")
    # step 8
    if not abs(now - p.proof_time) <= max_proof_age + leeway:
        raise CredentialError(8, "holder-proof-stale", "proof time out of its window")
    # step 9
    if challenge is not None and (
        p.challenge is None or not hmac.compare_digest(p.challenge, challenge)
    ):
        raise CredentialError(9, "challenge-mismatch", "challenge")
    # step 10 (cred 3.6)
    digests = bytes(claims.get(-5, b""))
    digest_set = {digests[i : i + 12] for i in range(0, len(digests), 12)}
    groups: list[str] = []
    for disclosure in p.disclosures:
        group = _disclosed_group(disclosure, digest_set)
        if group in groups:
            raise CredentialError(10, "bad-disclosure", "a group disclosed twice")
        groups.append(group)
    return Verified(
        member_id=b64ue(bytes(claims[-1])),
        home_union=claims.get(-3, issuer_union),
        issuer_union=issuer_union,
        groups=groups,
        exp=exp,
        holder_key=bytes(claims[-2]),
        credential_hash=credential_hash,
        presentation_hash=hashlib.sha256(p.raw).digest(),
        status_index=index,
        proof_time=p.proof_time,
    )


# ---------------------------------------------------------------- station 2 and 3: records
class RecordError(Exception):
    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


GENESIS = "A" * 43  # station 3: base64url of 32 zero bytes
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
RECORD_CLAIMS = {
    "clk",
    "home",
    "iat",
    "member",
    "prev",
    "presentation",
    "program",
    "quantity",
    "seq",
    "station",
    "value",
    "version",
}
CHAIN_ERRORS = {"record-chain-broken", "record-gap", "record-duplicate", "record-reordered"}


def record_hash(token: str) -> str:
    """station 2.2: base64url(SHA-256(token))."""
    return b64ue(hashlib.sha256(token.encode("ascii")).digest())


def _b64_len(value: object, n: int) -> bool:
    try:
        return len(b64ud(value)) == n
    except Fail:
        return False


def decode_record(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, list[str]]:
    """station 2.4 check 1 (the layout of station 2.2)."""
    malformed = "record-malformed"
    if not isinstance(token, str) or not token.isascii() or len(token) > 4096:
        raise RecordError(malformed, "not ASCII, or too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise RecordError(malformed, "not three parts")
    try:
        header = parse_canonical(b64ud(parts[0]))
        claims = parse_canonical(b64ud(parts[1]))
        signature = b64ud(parts[2])
    except Fail as e:
        raise RecordError(malformed, str(e)) from e
    if not isinstance(header, dict) or set(header) != {"alg", "kid", "typ"}:
        raise RecordError(malformed, "header members")
    if header["alg"] != "EdDSA" or header["typ"] != "ul-offline+jwt":
        raise RecordError(malformed, "alg or typ")
    if not (isinstance(header["kid"], str) and len(header["kid"]) == 43):
        raise RecordError(malformed, "kid")
    if not isinstance(claims, dict) or set(claims) != RECORD_CLAIMS:
        raise RecordError(malformed, "claim members")
    ok = (
        is_numeric_date(claims["clk"])
        and is_numeric_date(claims["iat"])
        and all(
            isinstance(claims[k], str) and _ID.fullmatch(claims[k])
            for k in ("home", "program", "station")
        )
        and isinstance(claims["member"], str)
        and len(claims["member"]) == 22
        and _b64_len(claims["member"], 16)
        and _b64_len(claims["prev"], 32)
        and _b64_len(claims["presentation"], 32)
        and is_int(claims["quantity"])
        and 1 <= claims["quantity"] <= 1000
        and is_int(claims["seq"])
        and 1 <= claims["seq"] <= 2**53 - 1
        and is_int(claims["value"])
        and 0 <= claims["value"] <= 10**15
        and is_int(claims["version"])
        and 1 <= claims["version"] <= 2**53 - 1
    )
    if not ok or len(signature) != 64:
        raise RecordError(malformed, "claim types or ranges, or signature length")
    return header, claims, signature, parts


def verify_record(
    token: str,
    station_keys: Mapping[str, Mapping[str, Any]],
    *,
    expected_station: str,
    now: int,
    max_skew: int = 300,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """station 2.4, checks 1-6. `station_keys` maps kid to a trust-list style entry (`x`,
    `role`, `scope`, `nbf`, optional `exp` and `revoked`)."""
    header, claims, signature, parts = decode_record(token)
    key = station_keys.get(header["kid"])
    if key is None or key["role"] != "station" or key.get("scope") != expected_station:
        raise RecordError("record-unknown-key", header["kid"])
    if jwk_thumbprint(key["x"]) != header["kid"]:
        raise RecordError("record-unknown-key", "kid is not the key's thumbprint")
    if not ed25519_ok(b64ud(key["x"]), f"{parts[0]}.{parts[1]}".encode("ascii"), signature):
        raise RecordError("record-bad-signature")
    if claims["station"] != expected_station:
        raise RecordError("record-wrong-station")
    refusal = key_refusal(key, claims["iat"])
    if refusal:
        raise RecordError("record-key-revoked", refusal)
    if not claims["iat"] <= now + max_skew:
        raise RecordError("record-clock-skew", "from the future")
    return header, claims


def verify_batch(
    records: Sequence[str],
    previous_seq: int,
    previous_hash: str,
    *,
    station_keys: Mapping[str, Mapping[str, Any]],
    expected_station: str,
    now: int,
    max_skew: int = 300,
    previous_time: int | None = None,
    kid: str | None = None,
    known_presentations: Iterable[str] = (),
) -> tuple[list[dict[str, Any]], tuple[int, RecordError] | None]:
    """station 3: the accepted prefix and the first failure (its index and error)."""
    accepted: list[dict[str, Any]] = []
    presentations = set(known_presentations)
    seqs: list[int | None] = []
    for token in records:
        try:
            seqs.append(decode_record(token)[1]["seq"])
        except RecordError:
            seqs.append(None)
    seq, head, time = previous_seq, previous_hash, previous_time
    for i, token in enumerate(records):
        try:
            header, claims = verify_record(
                token, station_keys, expected_station=expected_station, now=now, max_skew=max_skew
            )
            kid = kid or header["kid"]
            if header["kid"] != kid:
                raise RecordError("record-chain-broken", "another device key")
            if claims["seq"] <= seq:
                raise RecordError("record-duplicate")
            if claims["seq"] > seq + 1:
                code = "record-reordered" if seq + 1 in seqs[i + 1 :] else "record-gap"
                raise RecordError(code)
            if claims["prev"] != head:
                raise RecordError("record-chain-broken", "prev")
            if time is not None and claims["iat"] < time - max_skew:
                raise RecordError("record-clock-skew", "time went back")
            if claims["presentation"] in presentations:
                raise RecordError("record-presentation-replayed")
        except RecordError as e:
            return accepted, (i, e)
        presentations.add(claims["presentation"])
        accepted.append(claims)
        seq, head, time = claims["seq"], record_hash(token), claims["iat"]
    return accepted, None
