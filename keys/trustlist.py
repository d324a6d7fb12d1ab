"""The trust list: the public keys stations and auditors may trust, signed by the root key.

Wire format (docs/keys.md): a compact JWS (a JWT) with header
``{"alg": "EdDSA", "typ": "unionledger-trust-list+jwt", "kid": <root key id>}`` and claims
``iss``, ``iat``, ``exp`` and ``keys``: a list of Ed25519 public JWKs, each with ``kid`` (its
RFC 7638 thumbprint), ``role``, ``nbf`` and, when set, ``exp``, ``scope`` and ``revoked``
(NumericDate seconds). It lists issuer, station, log and root keys, including keys published
ahead of use and revoked keys, so that a verifier can judge any signature by its signing time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt

from keys.ed25519 import KeyId, PublicKey
from keys.errors import (
    KeysError,
    MalformedKey,
    TrustListError,
    TrustListExpired,
    TrustListSignatureInvalid,
)
from keys.keyring import KeyRecord, Keyring, Role
from keys.timefmt import from_numeric_date, to_numeric_date, to_utc

TRUST_LIST_TYP = "unionledger-trust-list+jwt"
PUBLISHED_ROLES = (Role.ROOT, Role.LOG, Role.ISSUER, Role.STATION)
DEFAULT_TTL = timedelta(days=7)
DEFAULT_LEEWAY = timedelta(minutes=5)


def record_to_jwk(record: KeyRecord) -> dict[str, Any]:
    """One trust-list entry."""
    jwk: dict[str, Any] = {
        **record.public_key.to_jwk(),
        "kid": record.kid,
        "alg": "EdDSA",
        "use": "sig",
        "role": record.role.value,
        "nbf": to_numeric_date(record.not_before),
    }
    if record.not_after is not None:
        jwk["exp"] = to_numeric_date(record.not_after)
    if record.scope is not None:
        jwk["scope"] = record.scope
    if record.revoked_at is not None:
        jwk["revoked"] = to_numeric_date(record.revoked_at)
    return jwk


def record_from_jwk(jwk: Mapping[str, Any]) -> KeyRecord:
    """Inverse of :func:`record_to_jwk`.

    Raises:
        MalformedKey: a member is missing or wrong, or ``kid`` is not the key's thumbprint.
    """
    try:
        if not isinstance(jwk, Mapping):
            raise TypeError("a trust-list key must be an object")
        if jwk.get("alg", "EdDSA") != "EdDSA":
            raise MalformedKey("trust-list key alg must be EdDSA")
        exp, revoked = jwk.get("exp"), jwk.get("revoked")
        return KeyRecord(
            kid=KeyId(str(jwk["kid"])),
            role=Role(jwk["role"]),
            public_key=PublicKey.from_jwk(jwk),
            not_before=from_numeric_date(jwk["nbf"]),
            not_after=None if exp is None else from_numeric_date(exp),
            scope=jwk.get("scope"),
            revoked_at=None if revoked is None else from_numeric_date(revoked),
        )
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, MalformedKey):
            raise
        raise MalformedKey(f"malformed trust-list key: {type(e).__name__}") from e


@dataclass(frozen=True, slots=True)
class TrustList:
    """A verified trust list. Only :func:`verify_trust_list` should build one."""

    token: str
    issuer: str
    issued_at: datetime
    expires_at: datetime
    signed_by: KeyId
    keyring: Keyring

    def verification_key(
        self, kid: str, role: Role, signed_at: datetime, *, scope: str | None = None
    ) -> PublicKey:
        """See :meth:`keys.Keyring.verification_key`."""
        return self.keyring.verification_key(kid, role, signed_at, scope=scope)

    def to_jwks(self) -> dict[str, list[dict[str, Any]]]:
        return {"keys": [record_to_jwk(r) for r in self.keyring]}


def sign_trust_list(
    keyring: Keyring,
    now: datetime,
    *,
    ttl: timedelta = DEFAULT_TTL,
    issuer: str = "unionledger",
    roles: Iterable[Role] = PUBLISHED_ROLES,
) -> str:
    """A trust list of ``keyring``'s public keys of ``roles``, signed by its current root key.

    Raises:
        NoCurrentKey: no root key may sign at ``now``.
    """
    now = to_utc(now)
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    wanted = set(roles)
    root = keyring.current(Role.ROOT, now)
    records = sorted(
        (r for r in keyring if r.role in wanted),
        key=lambda r: (r.role.value, r.scope or "", r.not_before, r.kid),
    )
    claims = {
        "iss": issuer,
        "iat": to_numeric_date(now),
        "exp": to_numeric_date(now + ttl),
        "keys": [record_to_jwk(r) for r in records],
    }
    return jwt.encode(
        claims,
        keyring.private_key(root.kid).to_cryptography(),
        algorithm="EdDSA",
        headers={"typ": TRUST_LIST_TYP, "kid": root.kid},
    )


def verify_trust_list(
    token: str,
    roots: PublicKey | Sequence[PublicKey],
    now: datetime,
    *,
    leeway: timedelta = DEFAULT_LEEWAY,
) -> TrustList:
    """Verify ``token`` against the pinned root public key(s) and return its keys.

    Fails closed: no pinned root, a header ``kid`` naming no pinned root, a bad signature, a
    wrong ``typ`` or ``alg``, an ``iat`` in the future (beyond ``leeway``) or an ``exp`` in the
    past, and any malformed key entry are all errors.

    Raises:
        TrustListSignatureInvalid: not signed by a pinned root key.
        TrustListExpired: outside its ``iat``..``exp`` window at ``now``.
        TrustListError: malformed.
    """
    pinned = [roots] if isinstance(roots, PublicKey) else list(roots)
    if not pinned:
        raise TrustListSignatureInvalid("no pinned root key: nothing can be trusted")
    if not isinstance(token, str):
        raise TrustListError("a trust list is a compact JWS string")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise TrustListError("not a compact JWS") from e
    if header.get("typ") != TRUST_LIST_TYP or header.get("alg") != "EdDSA":
        raise TrustListError(f"not a trust list: typ must be {TRUST_LIST_TYP}, alg EdDSA")
    root = next((k for k in pinned if k.key_id == header.get("kid")), None)
    if root is None:
        raise TrustListSignatureInvalid("trust list is not signed by a pinned root key")
    try:
        claims = jwt.decode(
            token,
            root.to_cryptography(),
            algorithms=["EdDSA"],
            options={
                # Times are checked below against the ``now`` we were given, not the clock.
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": ["iss", "iat", "exp"],
            },
        )
    except jwt.InvalidSignatureError as e:
        raise TrustListSignatureInvalid("trust list signature does not verify") from e
    except jwt.PyJWTError as e:
        raise TrustListError(f"malformed trust list: {e}") from e
    try:
        issued_at = from_numeric_date(claims["iat"])
        expires_at = from_numeric_date(claims["exp"])
        issuer = claims["iss"]
        entries = claims["keys"]
        if not isinstance(issuer, str) or not isinstance(entries, list):
            raise TypeError("iss or keys")
        keyring = Keyring(record_from_jwk(e) for e in entries)
    except (KeyError, TypeError, ValueError, KeysError) as e:
        raise TrustListError(f"malformed trust list: {e}") from e
    now = to_utc(now)
    if issued_at - leeway > now:
        raise TrustListExpired("trust list is issued in the future (check the clock)")
    if now >= expires_at:
        raise TrustListExpired(f"trust list expired at {expires_at.isoformat()}")
    return TrustList(
        token=token,
        issuer=issuer,
        issued_at=issued_at,
        expires_at=expires_at,
        signed_by=root.key_id,
        keyring=keyring,
    )
