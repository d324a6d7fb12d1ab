"""Ed25519 keys with a small, sharp API (modelled on pyca/cryptography's).

``PrivateKey.generate()``, ``PrivateKey.from_seed(bytes)``, ``sign(data) -> bytes``;
``PublicKey.from_bytes(bytes)``, ``verify(signature, data) -> None`` (raises
:class:`~keys.errors.InvalidSignature`). Nothing here returns a boolean for "valid".

Wrong type -> ``TypeError``; wrong length or a bad encoding -> :class:`~keys.errors.MalformedKey`
(a ``ValueError``). Signing and verifying use libsodium through pynacl, the fastest binding on
this machine (DESIGN.md section 5).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NewType

import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives.asymmetric import ed25519 as crypto_ed25519

from keys.errors import InvalidSignature, MalformedKey
from keys.jwk import b64url_decode, b64url_encode, jwk_thumbprint

KeyId = NewType("KeyId", str)
"""An RFC 7638 JWK thumbprint (SHA-256, base64url). A hint for finding a key, never trust."""

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


def _require_bytes(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    data = bytes(value)
    if len(data) != size:
        raise MalformedKey(f"{what} must be {size} bytes, got {len(data)}")
    return data


class PublicKey:
    """An Ed25519 public key. Immutable; equal when the 32 bytes are equal."""

    __slots__ = ("_raw", "_verify_key")

    def __init__(self, raw: bytes) -> None:
        self._raw = _require_bytes(raw, PUBLIC_KEY_SIZE, "Ed25519 public key")
        try:
            self._verify_key = nacl.signing.VerifyKey(self._raw)
        except (nacl.exceptions.CryptoError, ValueError) as e:
            raise MalformedKey("not a valid Ed25519 public key") from e

    @classmethod
    def from_bytes(cls, raw: bytes) -> PublicKey:
        """The key from its 32-byte RFC 8032 encoding."""
        return cls(raw)

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> PublicKey:
        """The key from an OKP/Ed25519 JWK (RFC 8037). Private members are refused.

        Raises:
            MalformedKey: not an Ed25519 public JWK.
        """
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise MalformedKey("JWK is not kty=OKP, crv=Ed25519")
        if "d" in jwk:
            raise MalformedKey("JWK carries a private key where a public key was expected")
        x = jwk.get("x")
        if not isinstance(x, str):
            raise MalformedKey("JWK has no 'x' member")
        try:
            raw = b64url_decode(x)
        except ValueError as e:
            raise MalformedKey("JWK 'x' is not base64url") from e
        return cls(raw)

    def to_bytes(self) -> bytes:
        """The 32-byte RFC 8032 encoding."""
        return self._raw

    def to_jwk(self) -> dict[str, str]:
        """The RFC 8037 public JWK: ``{"kty": "OKP", "crv": "Ed25519", "x": ...}``."""
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(self._raw)}

    @property
    def key_id(self) -> KeyId:
        """The RFC 7638 thumbprint of :meth:`to_jwk`."""
        return KeyId(jwk_thumbprint(self.to_jwk()))

    def to_cryptography(self) -> crypto_ed25519.Ed25519PublicKey:
        """The same key as a ``cryptography`` object (what pyjwt takes)."""
        return crypto_ed25519.Ed25519PublicKey.from_public_bytes(self._raw)

    def verify(self, signature: bytes, data: bytes) -> None:
        """Return ``None`` if ``signature`` is this key's Ed25519 signature of ``data``.

        Raises:
            InvalidSignature: it is not (including a signature of the wrong length).
            TypeError: ``signature`` or ``data`` is not bytes.
        """
        if not isinstance(signature, bytes | bytearray | memoryview):
            raise TypeError("signature must be bytes")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("data must be bytes")
        if len(signature) != SIGNATURE_SIZE:
            raise InvalidSignature("signature must be 64 bytes")
        try:
            self._verify_key.verify(bytes(data), bytes(signature))
        except nacl.exceptions.BadSignatureError as e:
            raise InvalidSignature("signature does not verify") from e

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"PublicKey(kid={self.key_id})"


class PrivateKey:
    """An Ed25519 private key. Its repr and str never show key material."""

    __slots__ = ("_public", "_seed", "_signing_key")

    def __init__(self, seed: bytes) -> None:
        self._seed = _require_bytes(seed, SEED_SIZE, "Ed25519 private key seed")
        self._signing_key = nacl.signing.SigningKey(self._seed)
        self._public = PublicKey(bytes(self._signing_key.verify_key))

    @classmethod
    def generate(cls) -> PrivateKey:
        """A new key from the operating system's CSPRNG."""
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @classmethod
    def from_seed(cls, seed: bytes) -> PrivateKey:
        """The key from its 32-byte RFC 8032 private key (the seed)."""
        return cls(seed)

    def seed(self) -> bytes:
        """The 32-byte private key. Handle with care: this is the secret."""
        return self._seed

    @property
    def public_key(self) -> PublicKey:
        return self._public

    @property
    def key_id(self) -> KeyId:
        return self._public.key_id

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``.

        Raises:
            TypeError: ``data`` is not bytes.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("data must be bytes")
        return self._signing_key.sign(bytes(data)).signature

    def to_cryptography(self) -> crypto_ed25519.Ed25519PrivateKey:
        """The same key as a ``cryptography`` object (what pyjwt takes)."""
        return crypto_ed25519.Ed25519PrivateKey.from_private_bytes(self._seed)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivateKey) and other._seed == self._seed

    def __hash__(self) -> int:
        return hash(self._public)

    def __repr__(self) -> str:
        return f"PrivateKey(kid={self.key_id})"
