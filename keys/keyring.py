"""Keyrings: several keys per role, each with a validity window, rotation and revocation.

A key's validity window ``[not_before, not_after)`` is the time during which it may *sign*.
A signature is accepted when the key is of the expected role and the signing time lies in the
window and before any revocation: an old issuer key keeps verifying what it signed while it was
current, and a revoked key verifies nothing signed from its revocation time on.

Everything here is pure: times are passed in, nothing touches the disk (see ``store.py``).
A :class:`Keyring` is immutable; ``rotate``, ``revoke`` and ``register`` return a new one.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from keys.ed25519 import KeyId, PrivateKey, PublicKey
from keys.errors import (
    KeyExpired,
    KeyNotYetValid,
    KeyRevoked,
    KeyRoleMismatch,
    KeyScopeMismatch,
    KeysError,
    MalformedKey,
    NoCurrentKey,
    UnknownKeyId,
)
from keys.timefmt import format_rfc3339, parse_rfc3339, to_utc


class Role(enum.StrEnum):
    """What a key is for. The values are the names used on the CLI and in every file."""

    ROOT = "root"  # national root: signs trust lists
    LOG = "log"  # signs ledger checkpoints (C2SP signed notes)
    ISSUER = "issuer"  # one per issuing union (scope = union code): signs credentials
    STATION = "station"  # one per station device (scope = station id): signs offline records
    API = "api"  # signs short-lived access tokens


SCOPED_ROLES = frozenset({Role.ISSUER, Role.STATION})

DEFAULT_LEAD_TIMES: Mapping[Role, timedelta] = MappingProxyType(
    {
        # An offline station cannot fetch a key it has never seen: issuer and root keys are
        # published in the trust list well before they sign anything (DESIGN.md section 3).
        Role.ROOT: timedelta(days=30),
        Role.ISSUER: timedelta(days=30),
        Role.LOG: timedelta(days=7),
        Role.STATION: timedelta(0),
        Role.API: timedelta(0),
    }
)

_SCOPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")
_SECRET_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}\Z")
SECRET_SIZE = 32


class RotationPending(KeysError):
    """A next key for this role and scope is already published and not yet in use."""

    code = "rotation-pending"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """The public facts about one key. Checks its invariants when built."""

    kid: KeyId
    role: Role
    public_key: PublicKey
    not_before: datetime
    not_after: datetime | None = None
    scope: str | None = None
    revoked_at: datetime | None = None
    revocation_reason: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.role, Role):
            raise MalformedKey(f"unknown role {self.role!r}")
        if self.kid != self.public_key.key_id:
            raise MalformedKey("kid is not the RFC 7638 thumbprint of the public key")
        for name in ("not_before", "not_after", "revoked_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, to_utc(value))
        if self.not_after is not None and self.not_after <= self.not_before:
            raise MalformedKey("not_after must be later than not_before")
        if (self.role in SCOPED_ROLES) != (self.scope is not None):
            raise MalformedKey(
                f"role {self.role.value} {'needs' if self.role in SCOPED_ROLES else 'takes no'}"
                " scope"
            )
        if self.scope is not None and not _SCOPE_RE.match(self.scope):
            raise MalformedKey(f"bad scope {self.scope!r}: letters, digits and ._:- only")
        if self.revocation_reason is not None and self.revoked_at is None:
            raise MalformedKey("a revocation reason without a revocation time")

    def check_valid_at(self, at: datetime) -> None:
        """Return ``None`` if this key may have signed at ``at``.

        Raises:
            KeyNotYetValid, KeyExpired, KeyRevoked: it may not.
        """
        at = to_utc(at)
        if at < self.not_before:
            raise KeyNotYetValid(f"key {self.kid} is valid from {format_rfc3339(self.not_before)}")
        if self.not_after is not None and at >= self.not_after:
            raise KeyExpired(f"key {self.kid} expired at {format_rfc3339(self.not_after)}")
        if self.revoked_at is not None and at >= self.revoked_at:
            raise KeyRevoked(f"key {self.kid} was revoked at {format_rfc3339(self.revoked_at)}")

    def is_valid_at(self, at: datetime) -> bool:
        """Whether :meth:`check_valid_at` would pass (for listings, not for trust decisions)."""
        try:
            self.check_valid_at(at)
        except KeysError:
            return False
        return True

    def status_at(self, at: datetime) -> str:
        """``active``, ``pending``, ``expired`` or ``revoked`` at ``at`` (for humans)."""
        at = to_utc(at)
        if self.revoked_at is not None and at >= self.revoked_at:
            return "revoked"
        if at < self.not_before:
            return "pending"
        if self.not_after is not None and at >= self.not_after:
            return "expired"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        """The record as written in keyring files (RFC 3339 times, absent fields omitted)."""
        out: dict[str, Any] = {
            "kid": self.kid,
            "role": self.role.value,
            "jwk": self.public_key.to_jwk(),
            "not_before": format_rfc3339(self.not_before),
        }
        if self.scope is not None:
            out["scope"] = self.scope
        if self.not_after is not None:
            out["not_after"] = format_rfc3339(self.not_after)
        if self.revoked_at is not None:
            out["revoked_at"] = format_rfc3339(self.revoked_at)
        if self.revocation_reason is not None:
            out["revocation_reason"] = self.revocation_reason
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KeyRecord:
        """Inverse of :meth:`to_dict`.

        Raises:
            MalformedKey: a member is missing or of the wrong form.
        """
        try:
            if not isinstance(data, Mapping) or not isinstance(data.get("jwk"), Mapping):
                raise TypeError("record and its jwk must be objects")
            return cls(
                kid=KeyId(str(data["kid"])),
                role=Role(data["role"]),
                public_key=PublicKey.from_jwk(data["jwk"]),
                not_before=parse_rfc3339(data["not_before"]),
                not_after=_opt_time(data.get("not_after")),
                scope=data.get("scope"),
                revoked_at=_opt_time(data.get("revoked_at")),
                revocation_reason=data.get("revocation_reason"),
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, MalformedKey):
                raise
            raise MalformedKey(f"malformed key record: {type(e).__name__}") from e


def _opt_time(value: object) -> datetime | None:
    return None if value is None else parse_rfc3339(str(value))


class Keyring:
    """An immutable set of key records, some with their private keys.

    Verification looks a key up by id and then checks role and validity at the signing time:
    the id alone is never trusted. Signing takes the *current* key of a role: the active one
    with the latest ``not_before``.
    """

    __slots__ = ("_private", "_records", "_secrets")

    def __init__(
        self,
        records: Iterable[KeyRecord] = (),
        private_keys: Mapping[KeyId, PrivateKey] | None = None,
        secrets: Mapping[str, bytes] | None = None,
    ) -> None:
        by_kid: dict[KeyId, KeyRecord] = {}
        for record in records:
            if record.kid in by_kid:
                raise MalformedKey(f"duplicate key id {record.kid}")
            by_kid[record.kid] = record
        private = dict(private_keys or {})
        for kid, key in private.items():
            match = by_kid.get(kid)
            if match is None or match.public_key != key.public_key:
                raise MalformedKey(f"private key {kid} does not match a record")
        self._records = by_kid
        self._private = private
        self._secrets = dict(secrets or {})
        for name, value in self._secrets.items():
            if not _SECRET_NAME_RE.match(name) or len(value) != SECRET_SIZE:
                raise MalformedKey(f"secret {name!r} must be named [a-z0-9-] and be 32 bytes")

    # -- reading -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[KeyRecord]:
        return iter(self._records.values())

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, kid: object) -> bool:
        return kid in self._records

    def record(self, kid: str) -> KeyRecord:
        """The record for ``kid``.

        Raises:
            UnknownKeyId: no such key.
        """
        try:
            return self._records[KeyId(kid)]
        except KeyError:
            raise UnknownKeyId(f"unknown key id {kid}") from None

    def has_private(self, kid: str) -> bool:
        return KeyId(kid) in self._private

    def private_key(self, kid: str) -> PrivateKey:
        """The private key of ``kid``.

        Raises:
            UnknownKeyId: no such key here, or only its public half is held.
        """
        self.record(kid)
        try:
            return self._private[KeyId(kid)]
        except KeyError:
            raise UnknownKeyId(f"no private key held for {kid}") from None

    def private_keys(self) -> Mapping[KeyId, PrivateKey]:
        return MappingProxyType(self._private)

    def of_role(self, role: Role, scope: str | None = None) -> list[KeyRecord]:
        """The records of ``role`` (and ``scope``, when given), oldest first."""
        found = [r for r in self if r.role == role and (scope is None or r.scope == scope)]
        return sorted(found, key=lambda r: (r.not_before, r.kid))

    def current(self, role: Role, at: datetime, scope: str | None = None) -> KeyRecord:
        """The key of ``role`` (and ``scope``) that signs at ``at``: the newest active one
        whose private key is held.

        Raises:
            NoCurrentKey: none may sign at ``at``.
        """
        active = [
            r
            for r in self.of_role(role, scope)
            if r.kid in self._private and r.is_valid_at(at) and r.scope == scope
        ]
        if not active:
            where = f" for scope {scope}" if scope else ""
            raise NoCurrentKey(f"no {role.value} key{where} may sign at {format_rfc3339(at)}")
        return active[-1]

    def signer(self, role: Role, at: datetime, scope: str | None = None) -> PrivateKey:
        """The private key of :meth:`current`."""
        return self._private[self.current(role, at, scope).kid]

    def verification_key(
        self, kid: str, role: Role, signed_at: datetime, *, scope: str | None = None
    ) -> PublicKey:
        """The public key to check a signature that claims key ``kid`` and time ``signed_at``
        (and, when ``scope`` is given, that union or station).

        Raises:
            UnknownKeyId: no such key.
            KeyRoleMismatch: the key is not a ``role`` key.
            KeyScopeMismatch: ``scope`` is given and the key belongs to another scope.
            KeyNotYetValid, KeyExpired, KeyRevoked: it could not sign at ``signed_at``.
        """
        record = self.record(kid)
        if record.role != role:
            raise KeyRoleMismatch(f"key {kid} is a {record.role.value} key, not {role.value}")
        if scope is not None and record.scope != scope:
            raise KeyScopeMismatch(f"key {kid} belongs to {record.scope}, not {scope}")
        record.check_valid_at(signed_at)
        return record.public_key

    def verify(
        self,
        kid: str,
        role: Role,
        signed_at: datetime,
        signature: bytes,
        data: bytes,
        *,
        scope: str | None = None,
    ) -> None:
        """Verify ``signature`` over ``data`` by key ``kid`` of ``role`` at ``signed_at``.

        Raises:
            InvalidSignature and everything :meth:`verification_key` raises.
        """
        self.verification_key(kid, role, signed_at, scope=scope).verify(signature, data)

    # -- changing (each returns a new keyring) ----------------------------------------------

    # -- symmetric secrets ---------------------------------------------------------------------

    def secret(self, name: str) -> bytes:
        """The 32-byte symmetric secret ``name`` (e.g. the vault master key).

        Raises:
            UnknownKeyId: no such secret here (or only the public part was loaded).
        """
        try:
            return self._secrets[name]
        except KeyError:
            raise UnknownKeyId(f"no secret named {name!r}") from None

    def secret_names(self) -> list[str]:
        return sorted(self._secrets)

    def with_secret(self, name: str, value: bytes | None = None) -> Keyring:
        """A keyring that holds secret ``name`` (a fresh random one unless ``value`` is given).
        An existing secret is kept: secrets are never silently replaced."""
        if name in self._secrets:
            return self
        fresh = dict(self._secrets)
        fresh[name] = value if value is not None else os.urandom(SECRET_SIZE)
        return Keyring(self._records.values(), self._private, fresh)

    def _with(self, record: KeyRecord, private: PrivateKey | None = None) -> Keyring:
        records = dict(self._records)
        records[record.kid] = record
        keys = dict(self._private)
        if private is not None:
            keys[record.kid] = private
        return Keyring(records.values(), keys, self._secrets)

    def add(self, record: KeyRecord, private: PrivateKey | None = None) -> Keyring:
        """A keyring with one more key.

        Raises:
            MalformedKey: the key id is already present, or ``private`` does not match.
        """
        if record.kid in self._records:
            raise MalformedKey(f"duplicate key id {record.kid}")
        return self._with(record, private)

    def rotate(
        self,
        role: Role,
        now: datetime,
        *,
        scope: str | None = None,
        lead_time: timedelta | None = None,
        new_key: PrivateKey | None = None,
    ) -> tuple[Keyring, KeyRecord]:
        """Create the next key of ``role`` (and ``scope``).

        If a key of the role is active at ``now``, the new key is published now but valid only
        from ``now + lead_time`` (default: :data:`DEFAULT_LEAD_TIMES`), and the old key's window
        ends where the new one's begins. With no active key, the new key is valid at once.

        Raises:
            RotationPending: a next key is already published and not yet valid.
            MalformedKey: a scoped role without scope or the reverse.
        """
        now = to_utc(now)
        lead = DEFAULT_LEAD_TIMES[role] if lead_time is None else lead_time
        if lead < timedelta(0):
            raise ValueError("lead time must not be negative")
        siblings = [r for r in self.of_role(role, scope) if r.scope == scope]
        pending = [r for r in siblings if r.status_at(now) == "pending"]
        if pending:
            raise RotationPending(
                f"key {pending[-1].kid} is already published and becomes valid at "
                f"{format_rfc3339(pending[-1].not_before)}"
            )
        active = [r for r in siblings if r.status_at(now) == "active"]
        starts = now + lead if active else now
        if active:
            # Windows never overlap, and none is empty: a key made this very second hands over
            # one second later at the earliest.
            starts = max(starts, *(r.not_before + timedelta(seconds=1) for r in active))
        key = new_key or PrivateKey.generate()
        record = KeyRecord(
            kid=key.key_id, role=role, public_key=key.public_key, not_before=starts, scope=scope
        )
        ring = self
        for old in active:
            if old.not_after is None or old.not_after > starts:
                ring = ring._with(dataclasses.replace(old, not_after=starts))
        return ring.add(record, key), record

    def revoke(self, kid: str, at: datetime, reason: str | None = None) -> Keyring:
        """Revoke ``kid`` from ``at`` on (``at`` may lie in the past: compromise found later).

        Revoking again keeps the earlier time: a revocation can move earlier, never later.

        Raises:
            UnknownKeyId: no such key.
        """
        record = self.record(kid)
        at = to_utc(at)
        if record.revoked_at is not None and record.revoked_at <= at:
            return self
        return self._with(
            dataclasses.replace(
                record, revoked_at=at, revocation_reason=reason or record.revocation_reason
            )
        )

    def register(
        self,
        role: Role,
        public_key: PublicKey,
        not_before: datetime,
        *,
        scope: str | None = None,
        not_after: datetime | None = None,
    ) -> tuple[Keyring, KeyRecord]:
        """Add a key whose private half lives elsewhere (a station device's key).

        Raises:
            MalformedKey: the key is already present or the record is invalid.
        """
        record = KeyRecord(
            kid=public_key.key_id,
            role=role,
            public_key=public_key,
            not_before=not_before,
            not_after=not_after,
            scope=scope,
        )
        return self.add(record), record
