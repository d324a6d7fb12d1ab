"""JWK helpers: base64url without padding and RFC 7638 thumbprints."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping

# RFC 7638 section 3.2: the required members of each key type, in lexicographic order.
_REQUIRED_MEMBERS: dict[str, tuple[str, ...]] = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "oct": ("k", "kty"),
    "OKP": ("crv", "kty", "x"),  # RFC 8037 section 2
}


def b64url_encode(data: bytes) -> str:
    """base64url (RFC 4648 section 5) without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict inverse of :func:`b64url_encode`: no padding, no whitespace, URL alphabet only.

    Raises:
        ValueError: ``text`` is not canonical unpadded base64url.
    """
    if not isinstance(text, str) or "=" in text or "+" in text or "/" in text:
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise ValueError("not unpadded base64url") from e
    if b64url_encode(data) != text:  # refuses non-zero trailing bits: one encoding per value
        raise ValueError("not canonical base64url")
    return data


def jwk_thumbprint(jwk: Mapping[str, object]) -> str:
    """The RFC 7638 SHA-256 thumbprint of ``jwk``, base64url-encoded.

    Only the required members of the key type take part, serialised as JSON with sorted keys and
    no whitespace (their values are strings, so this is exactly RFC 7638's rule).

    Raises:
        ValueError: unknown ``kty`` or a required member is missing or not a string.
    """
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in _REQUIRED_MEMBERS:
        raise ValueError(f"unsupported JWK kty: {kty!r}")
    members: dict[str, str] = {}
    for name in _REQUIRED_MEMBERS[kty]:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise ValueError(f"JWK member {name!r} missing or not a string")
        members[name] = value
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())
