"""IETF Token Status List (draft-ietf-oauth-status-list): revocation for station credentials.

The list: a byte array in which entry ``i`` occupies ``bits`` bits (1, 2, 4 or 8) at bit offset
``i * bits``, packed least-significant bit first within each byte; compressed with zlib (DEFLATE,
best level) and carried as ``{"bits": 1, "lst": "<base64url, no padding>"}``. The spec's
example: the bytes ``b9 a3`` encode as ``"eNrbuRgAAhcBXQ"``. Values: 0 valid, 1 invalid
(revoked), 2 suspended (3 and above: application specific). Station credentials use one bit.

The Status List Token: a compact JWS (JWT) with header ``{"alg": "EdDSA", "kid": <RFC 7638 kid
of the issuer key>, "typ": "statuslist+jwt"}`` and claims ``sub`` (the list's URI), ``iat``,
``exp``, ``ttl`` (seconds) and ``status_list``. Header and claims are serialised as canonical
JSON (``verifier.canonical``), so the same inputs always give the same token. It is signed by
an *issuer* key of the trust list: the union that issues credentials publishes their status. A
verifier judges the key at ``iat`` (role issuer, valid, not revoked); the list's union is the
key's scope. Any standard JWT library verifies the token (tests check pyjwt).

Sizes measured (``tests/verifier/test_statuslist.py``, 1 % of indices revoked at random):
100,000 entries -> about 1.4 kB compressed, 1,000,000 -> about 13.9 kB (a third more as
base64url). Decompression is bounded (``MAX_LIST_BYTES``), so a hostile token cannot exhaust
memory.

Contracts: :func:`verify_status_list` is pure (bytes and times in, a verified value out) and
raises only :class:`~verifier.errors.StatusListError` subclasses for a bad token.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import keys
from keys import b64url_decode, b64url_encode
from verifier.canonical import canonical_bytes
from verifier.errors import (
    StatusIndexError,
    StatusListError,
    StatusListExpired,
    StatusListSignatureInvalid,
)

STATUS_LIST_TYP = "statuslist+jwt"
VALID, INVALID, SUSPENDED = 0, 1, 2
ALLOWED_BITS = (1, 2, 4, 8)
MAX_LIST_BYTES = 16 * 1024 * 1024
"""The largest decompressed list accepted: 134 million one-bit entries."""
DEFAULT_LEEWAY = timedelta(seconds=30)

__all__ = [
    "INVALID",
    "STATUS_LIST_TYP",
    "SUSPENDED",
    "VALID",
    "StatusList",
    "VerifiedStatusList",
    "decode_status_list",
    "encode_status_list",
    "sign_status_list",
    "verify_status_list",
]


def _check_bits(bits: object) -> int:
    if type(bits) is not int or bits not in ALLOWED_BITS:
        raise ValueError(f"bits must be one of {ALLOWED_BITS}, not {bits!r}")
    return bits


def _read(data: bytes | bytearray, bits: int, index: int) -> int:
    if type(index) is not int or index < 0 or index >= len(data) * 8 // bits:
        raise StatusIndexError(
            f"status index {index!r} is outside a list of {len(data) * 8 // bits}"
        )
    offset = index * bits
    return (data[offset >> 3] >> (offset & 7)) & ((1 << bits) - 1)


class StatusList:
    """A mutable status list (the issuer's builder): ``size`` entries of ``bits`` bits, all 0."""

    __slots__ = ("_bits", "_data")

    def __init__(self, size: int, bits: int = 1) -> None:
        self._bits = _check_bits(bits)
        if type(size) is not int or size < 0:
            raise ValueError("size must be a non-negative integer")
        self._data = bytearray(-(-size * bits // 8))

    @classmethod
    def from_bytes(cls, data: bytes, bits: int = 1) -> StatusList:
        """A list over a copy of the packed ``data`` (``len(data) * 8 // bits`` entries)."""
        out = cls(0, bits)
        out._data = bytearray(data)
        return out

    @property
    def bits(self) -> int:
        return self._bits

    @property
    def size(self) -> int:
        """The number of entries (a whole number of bytes' worth)."""
        return len(self._data) * 8 // self._bits

    def get(self, index: int) -> int:
        """The status of entry ``index``.

        Raises:
            StatusIndexError: ``index`` is out of range.
        """
        return _read(self._data, self._bits, index)

    def set(self, index: int, value: int = INVALID) -> None:
        """Set entry ``index`` to ``value`` (default: invalid, i.e. revoked).

        Raises:
            StatusIndexError: ``index`` is out of range.
            ValueError: ``value`` does not fit in ``bits`` bits.
        """
        _read(self._data, self._bits, index)
        if type(value) is not int or not 0 <= value < 1 << self._bits:
            raise ValueError(f"status {value!r} does not fit in {self._bits} bits")
        offset = index * self._bits
        mask = ((1 << self._bits) - 1) << (offset & 7)
        byte = self._data[offset >> 3]
        self._data[offset >> 3] = (byte & ~mask) | (value << (offset & 7))

    def to_bytes(self) -> bytes:
        return bytes(self._data)


def encode_status_list(status_list: StatusList | bytes, bits: int = 1) -> dict[str, Any]:
    """The ``status_list`` claim: ``{"bits": b, "lst": base64url(zlib(best level))}``.

    ``status_list`` is a :class:`StatusList` (its own ``bits`` win) or the packed bytes.
    """
    if isinstance(status_list, StatusList):
        data, bits = status_list.to_bytes(), status_list.bits
    else:
        data = bytes(status_list)
    compressed = zlib.compress(data, level=9)
    return {"bits": _check_bits(bits), "lst": b64url_encode(compressed)}


def decode_status_list(claim: object) -> tuple[int, bytes]:
    """``(bits, packed bytes)`` from a ``status_list`` claim.

    Raises:
        StatusListError: malformed, not zlib, or larger than :data:`MAX_LIST_BYTES` unpacked.
    """
    if not isinstance(claim, dict) or set(claim) - {"bits", "lst", "aggregation_uri"}:
        raise StatusListError("status_list must be an object with bits and lst")
    bits, lst = claim.get("bits"), claim.get("lst")
    if type(bits) is not int or bits not in ALLOWED_BITS or not isinstance(lst, str):
        raise StatusListError("status_list bits must be 1, 2, 4 or 8 and lst a string")
    try:
        compressed = b64url_decode(lst)
        inflater = zlib.decompressobj()
        data = inflater.decompress(compressed, MAX_LIST_BYTES)
    except (ValueError, zlib.error) as e:
        raise StatusListError(f"status_list lst is not base64url zlib data: {e}") from e
    if inflater.unconsumed_tail:
        raise StatusListError(f"status list is larger than {MAX_LIST_BYTES} bytes")
    if not inflater.eof or inflater.unused_data:
        raise StatusListError("status_list lst is truncated or has trailing data")
    return bits, data


@dataclass(frozen=True, slots=True)
class VerifiedStatusList:
    """A status list whose token verified. Only :func:`verify_status_list` should build one.

    ``bits`` are the packed entries (``bits_per_status`` bits each); ``issuer`` is the union
    whose issuer key signed the list (the key's scope).
    """

    uri: str
    issuer: str
    issued_at: datetime
    expires_at: datetime
    ttl: timedelta
    bits: bytes
    bits_per_status: int = 1

    @property
    def size(self) -> int:
        return len(self.bits) * 8 // self.bits_per_status

    def status(self, index: int) -> int:
        """The status of entry ``index`` (0 valid, 1 invalid, 2 suspended, ...).

        Raises:
            StatusIndexError: ``index`` is out of range.
        """
        return _read(self.bits, self.bits_per_status, index)

    def stale_reason(
        self, now: datetime, *, max_age: timedelta | None = None, leeway: timedelta = timedelta(0)
    ) -> str | None:
        """Why the list may not be relied on at ``now``, or ``None`` if it may: past its
        ``exp``, older than its ``ttl`` or than ``max_age``, or issued in the future (each
        judged with ``leeway`` for the clocks)."""
        if now >= self.expires_at + leeway:
            return f"status list expired at {self.expires_at.isoformat()}"
        if now > self.issued_at + self.ttl + leeway:
            return f"status list is older than its ttl ({self.ttl}): fetch a fresh one"
        if max_age is not None and now > self.issued_at + max_age + leeway:
            return f"status list is older than the station's maximum age ({max_age})"
        if now + leeway < self.issued_at:
            return "status list is issued in the future (check the clock)"
        return None


def _seconds(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass an aware UTC time")
    return int(value.timestamp())


def sign_status_list(
    bits: StatusList | bytes,
    *,
    uri: str,
    issuer_key: keys.PrivateKey,
    kid: str,
    now: datetime,
    ttl: timedelta,
    lifetime: timedelta | None = None,
) -> str:
    """A Status List Token over ``bits``, signed by ``issuer_key`` (whose RFC 7638 id is ``kid``).

    ``exp`` is ``now + lifetime`` (default: ``ttl``, so the token is useless once a fresh one
    must be fetched anyway).

    Raises:
        ValueError: ``kid`` is not ``issuer_key``'s id, a non-positive ``ttl``, an empty ``uri``.
    """
    if kid != issuer_key.key_id:
        raise ValueError("kid is not the RFC 7638 key id of issuer_key")
    if ttl <= timedelta(0) or ttl.total_seconds() != int(ttl.total_seconds()):
        raise ValueError("ttl must be a positive whole number of seconds")
    if not isinstance(uri, str) or not uri:
        raise ValueError("uri must be a non-empty string")
    iat = _seconds(now)
    lifetime = ttl if lifetime is None else lifetime
    header = {"alg": "EdDSA", "kid": kid, "typ": STATUS_LIST_TYP}
    claims = {
        "sub": uri,
        "iat": iat,
        "exp": iat + int(lifetime.total_seconds()),
        "ttl": int(ttl.total_seconds()),
        "status_list": encode_status_list(bits),
    }
    signing_input = (
        b64url_encode(canonical_bytes(header)) + "." + b64url_encode(canonical_bytes(claims))
    )
    signature = issuer_key.sign(signing_input.encode("ascii"))
    return signing_input + "." + b64url_encode(signature)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate member")
    return out


def _json_object(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(part).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError too
        raise StatusListError(f"status list token {what} is not base64url JSON") from e
    if not isinstance(value, dict):
        raise StatusListError(f"status list token {what} is not a JSON object")
    return value


def _numeric_date(claims: dict[str, Any], name: str) -> datetime:
    value = claims.get(name)
    if type(value) is not int or not 0 <= value <= 253402300799:
        raise StatusListError(f"status list token {name} must be an integer NumericDate")
    return datetime.fromtimestamp(value, UTC)


def verify_status_list(
    token: str,
    trust_list: keys.TrustList,
    now: datetime,
    *,
    uri: str | None = None,
    issuer: str | None = None,
    leeway: timedelta = DEFAULT_LEEWAY,
) -> VerifiedStatusList:
    """Verify a Status List Token signed by an issuer key of ``trust_list``.

    Checks, in order: the compact-JWS form; ``typ`` ``statuslist+jwt`` and ``alg`` ``EdDSA``;
    the claims' types; the key (``kid``, role issuer, valid at ``iat``, of union ``issuer``
    when given); the signature; ``sub`` equal to ``uri`` when given; ``iat`` not in the future
    and ``exp`` not past at ``now`` (each with ``leeway``). Whether a verified list is still
    fresh enough to rely on later is :meth:`VerifiedStatusList.stale_reason`'s question.

    Raises:
        StatusListSignatureInvalid: unknown or unsuitable key, or a bad signature.
        StatusListExpired: outside ``iat``..``exp``.
        StatusListError: malformed.
    """
    if not isinstance(token, str):
        raise TypeError("a status list token is a compact JWS string")
    parts = token.split(".")
    if len(parts) != 3:
        raise StatusListError("a status list token has three dot-separated parts")
    header = _json_object(parts[0], "header")
    claims = _json_object(parts[1], "claims")
    if header.get("typ") != STATUS_LIST_TYP or header.get("alg") != "EdDSA":
        raise StatusListError(f"not a status list token: typ must be {STATUS_LIST_TYP}, alg EdDSA")
    if set(header) - {"alg", "kid", "typ"}:
        raise StatusListError("unexpected status list token header member (crit, jwk, ...)")
    kid, sub, ttl = header.get("kid"), claims.get("sub"), claims.get("ttl")
    if not isinstance(kid, str) or not isinstance(sub, str) or not sub:
        raise StatusListError("status list token needs a kid header and a sub claim")
    if type(ttl) is not int or ttl <= 0:
        raise StatusListError("status list token ttl must be a positive integer")
    issued_at, expires_at = _numeric_date(claims, "iat"), _numeric_date(claims, "exp")
    bits, data = decode_status_list(claims.get("status_list"))
    try:
        signature = b64url_decode(parts[2])
    except ValueError as e:
        raise StatusListError("status list token signature is not base64url") from e
    try:
        record = trust_list.keyring.record(kid)
        key = trust_list.verification_key(kid, keys.Role.ISSUER, issued_at, scope=issuer)
    except keys.KeysError as e:
        raise StatusListSignatureInvalid(f"status list key not trusted: {e.code}: {e}") from e
    try:
        key.verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
    except keys.InvalidSignature as e:
        raise StatusListSignatureInvalid("status list signature does not verify") from e
    if uri is not None and sub != uri:
        raise StatusListError(f"status list is {sub!r}, not the expected {uri!r}")
    if issued_at - leeway > now:
        raise StatusListExpired("status list is issued in the future (check the clock)")
    if now >= expires_at:
        raise StatusListExpired(f"status list expired at {expires_at.isoformat()}")
    assert record.scope is not None  # issuer keys always have one (keys.KeyRecord)
    return VerifiedStatusList(
        uri=sub,
        issuer=record.scope,
        issued_at=issued_at,
        expires_at=expires_at,
        ttl=timedelta(seconds=ttl),
        bits=data,
        bits_per_status=bits,
    )
