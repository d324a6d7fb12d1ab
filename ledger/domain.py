"""What every domain module of the ledger shares: who acts, and the errors commands raise.

A command (``def cmd(tx: Tx, actor: Actor, ...)``) reads projections through ``tx.conn``,
checks everything it needs, raises a :class:`DomainError` *before* appending anything when the
request is wrong, and only then appends its events. The API maps each error's ``code`` to a
problem+json type and its ``status`` to the HTTP status, in one place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ledger.errors import LedgerError


class Role(enum.StrEnum):
    """Who can act, and over what (``Actor.scope``)."""

    OFFICIAL = "official"  # scope: a union code; acts on that union's subtree
    STATION = "station"  # scope: a station id
    AUDITOR = "auditor"  # scope: none; reads everything, writes nothing
    MEMBER = "member"  # scope: their own member id
    SYSTEM = "system"  # scope: none; the server itself (bootstrap, demo seeding, hooks)


@dataclass(frozen=True, slots=True)
class Actor:
    """The authenticated party behind a command. ``key_id`` is what the ledger records as the
    entry's actor: an account's or device's pseudonymous id, never a person's name."""

    role: Role
    key_id: str
    scope: str | None = None

    @property
    def ledger_actor(self) -> str:
        return f"{self.role.value}:{self.key_id}"


SYSTEM = Actor(Role.SYSTEM, "server")


class DomainError(LedgerError):
    """A request the domain refuses. Nothing was written."""

    code = "invalid-request"
    status = 400


class Invalid(DomainError):
    """Malformed or impossible input (bad checksum, unknown kind, a cycle in the tree)."""

    code = "invalid-request"
    status = 422


class NotFound(DomainError):
    """No such thing, or not visible to this actor (outside their subtree)."""

    code = "not-found"
    status = 404


class Conflict(DomainError):
    """The request conflicts with the current state (duplicate, already left, closed)."""

    code = "conflict"
    status = 409


class Forbidden(DomainError):
    """The actor's role may not do this."""

    code = "forbidden"
    status = 403
