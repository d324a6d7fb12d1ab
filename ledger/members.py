"""Members: join in one step, apply and approve, transfer, leave, re-join, groups, erasure.

Every change is an event whose body holds pseudonyms and keyed hashes only: the member id is a
random pseudonym (``identity.new_member_id``), the person is represented by a keyed hash of
their ID number (``id_hash``: the same person cannot hold two memberships, and an official can
find a member by ID number without it being stored anywhere in the clear). Names, ID numbers,
phone numbers and employers live in the :class:`~ledger.vault.Vault`, written in the same
transaction as the events, and erased by destroying the member's data key.

Sensitive groups (:data:`SENSITIVE_GROUPS`: ``hardship``) never appear in clear on the ledger,
which is public. A member's sensitive spans are carried as one *sealed state*: the JSON list of
all of them (``[{"from":"2026-11-25","group":"hardship","to":null}]``, ``[]`` when none),
sealed under the member's ledger sealing key (:meth:`~ledger.vault.Vault.seal_for_ledger`,
padded to one fixed size) and written base64url in the ``sealed`` member of ``MemberEnrolled``
(always, so that enrolments look alike) and of ``MemberSealedGroupsChanged`` (on every change).
Non-sensitive groups stay in clear (``groups``, ``MemberGroupAdded``, ``MemberGroupEnded``) so
that auditors can recompute per-group statistics. Erasure destroys the sealing key: the sealed
states stay on the chain and open for nobody.

Tables: ``members``, ``member_history``, ``member_groups`` (non-sensitive groups only) and
``member_sealed`` (each member's latest sealed state, as on the chain) are projections, rebuilt
from the chain without any key; ``member_lookup`` (the keyed hash of the phone number, for
one-time-code login) lives beside the ledger like the vault, since a phone number is contact
data, not membership.

Visibility: an official sees members of unions in their subtree (anything else is reported as
missing); an auditor sees every membership fact except the sensitive groups and personal data;
a member sees themself. Sensitive spans are read through :class:`Members` (which holds the
vault) and opened only for those :func:`may_see_sensitive` allows. Commands check all of it
inside the batch transaction.
"""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Index,
    Integer,
    Select,
    String,
    Table,
    Text,
    and_,
    delete,
    insert,
    or_,
    select,
    update,
)

from ledger import unions
from ledger.db import driver_execute
from ledger.domain import Actor, Conflict, Forbidden, Invalid, NotFound, Role
from ledger.identity import id_number_hash, new_member_id, phone_hash
from ledger.schema import metadata, projection_metadata
from ledger.sequencer import Tx
from ledger.vault import LEDGER_PLAINTEXT_MAX, PersonalData, Vault, VaultCorrupt
from verifier.entry import Entry


class Group(enum.StrEnum):
    """Member groups that targeted benefits use (DESIGN.md section 1)."""

    DELIVERY_RIDER = "delivery_rider"
    COURIER = "courier"
    RIDE_HAILING_DRIVER = "ride_hailing_driver"
    TRUCK_DRIVER = "truck_driver"
    MIGRANT_WORKER = "migrant_worker"
    FEMALE_WORKER = "female_worker"
    HARDSHIP = "hardship"  # sensitive: officials of the member's own chain of unions only
    OVER_AGE_WORKER = "over_age_worker"
    MODEL_WORKER = "model_worker"


SENSITIVE_GROUPS = frozenset({Group.HARDSHIP})
SEALED_GROUPS_CHANGED = "MemberSealedGroupsChanged"
_SCAN_CHUNK = 500  # members whose sealed state one step of a sensitive-group listing opens


class Status(enum.StrEnum):
    PENDING = "pending"  # applied with a join code, waiting for an official
    ACTIVE = "active"
    REJECTED = "rejected"
    LEFT = "left"
    ERASED = "erased"


# -- errors ----------------------------------------------------------------------------------


class UnknownMember(NotFound):
    """No such member (or not visible to this actor)."""

    code = "unknown-member"


class DuplicatePerson(Conflict):
    """This person already holds a membership (same ID number)."""

    code = "duplicate-person"


class DuplicatePhone(Conflict):
    """Another member already uses this phone number."""

    code = "duplicate-phone"


class WrongMemberStatus(Conflict):
    """The member's status does not allow this (e.g. leaving twice)."""

    code = "wrong-member-status"


class SameUnion(Conflict):
    """A transfer to the union the member already belongs to."""

    code = "transfer-to-same-union"


class BadGroup(Invalid):
    """Unknown group, or impossible effective dates."""

    code = "invalid-group"


class UnknownJoinCode(NotFound):
    """No open union has this join code."""

    code = "unknown-join-code"


# -- tables ------------------------------------------------------------------------------------

members = Table(
    "members",
    projection_metadata,
    Column("member_id", String(32), primary_key=True),
    Column("id_hash", String(64), nullable=True, unique=True),
    Column("union_code", String(32), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("joined_at", String(32), nullable=False),
    Column("since", String(32), nullable=False),
    Column("left_at", String(32), nullable=True),
    Column("updated_at", String(32), nullable=False),
)
Index("ix_members_union_status", members.c.union_code, members.c.status)

member_history = Table(
    "member_history",
    projection_metadata,
    Column("member_id", String(32), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),  # the entry index
    Column("event", String(32), nullable=False),
    Column("union_code", String(32), nullable=False),
    Column("at", String(32), nullable=False),
)

member_groups = Table(
    "member_groups",
    projection_metadata,
    Column("member_id", String(32), primary_key=True),
    Column("grp", String(32), primary_key=True),
    Column("start", String(10), primary_key=True),
    Column("end", String(10), nullable=True),
)
Index("ix_member_groups_grp", member_groups.c.grp, member_groups.c.end)

member_sealed = Table(
    "member_sealed",
    projection_metadata,
    Column("member_id", String(32), primary_key=True),
    Column("sealed", Text, nullable=False),  # base64url, exactly as in the latest event
    Column("updated_at", String(32), nullable=False),
)

member_lookup = Table(
    "member_lookup",
    metadata,
    Column("member_id", String(32), primary_key=True),
    Column("phone_hash", String(64), nullable=False, unique=True),
)


# -- views -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupSpan:
    group: str
    start: str
    end: str | None

    def active_on(self, day: str) -> bool:
        return self.start <= day and (self.end is None or day < self.end)


@dataclass(frozen=True, slots=True)
class MemberRow:
    member_id: str
    id_hash: str | None
    union_code: str
    status: str
    joined_at: str
    since: str
    left_at: str | None
    updated_at: str


def _row(row: Any) -> MemberRow:
    return MemberRow(
        member_id=row.member_id,
        id_hash=row.id_hash,
        union_code=row.union_code,
        status=row.status,
        joined_at=row.joined_at,
        since=row.since,
        left_at=row.left_at,
        updated_at=row.updated_at,
    )


MEMBER_COLUMNS = ("member_id", "id_hash", "union_code", "status", "joined_at", "since", "left_at",
                  "updated_at")  # fmt: skip
"""The ``members`` columns of a :class:`MemberRow`, in its order."""
_MEMBER_SQL = f"SELECT {', '.join(MEMBER_COLUMNS)} FROM members WHERE member_id = ?"  # noqa: S608


def get_member(conn: Connection, member_id: str) -> MemberRow | None:
    # Every redemption and every member's request reads one: the driver's own statement.
    row = driver_execute(conn, _MEMBER_SQL, (member_id,)).fetchone()
    return None if row is None else MemberRow(*row)


def visible_member(conn: Connection, actor: Actor, member_id: str) -> MemberRow:
    """The member, if ``actor`` may see them.

    Raises:
        UnknownMember: missing, or outside the actor's view (reported alike).
    """
    member = get_member(conn, member_id) if isinstance(member_id, str) else None
    if member is None or not _can_see(conn, actor, member):
        raise UnknownMember(f"no member {member_id!r}")
    return member


def _can_see(conn: Connection, actor: Actor, member: MemberRow) -> bool:
    if actor.role in (Role.SYSTEM, Role.AUDITOR):
        return True
    if actor.role == Role.MEMBER:
        return actor.scope == member.member_id
    if actor.role == Role.OFFICIAL and actor.scope is not None:
        return unions.is_within(conn, actor.scope, member.union_code)
    return False


def may_see_sensitive(conn: Connection, actor: Actor, member: MemberRow) -> bool:
    """Sensitive groups (hardship): officials of the member's own chain of unions (their scope
    contains the member's union), the member themself and the system; never auditors."""
    if actor.role == Role.SYSTEM:
        return True
    if actor.role == Role.MEMBER:
        return actor.scope == member.member_id
    return actor.role == Role.OFFICIAL and _can_see(conn, actor, member)


def history_of(conn: Connection, actor: Actor, member_id: str) -> list[dict[str, Any]]:
    """Joins, transfers, leaves and re-joins, oldest first.

    Raises:
        UnknownMember: not visible to the actor.
    """
    visible_member(conn, actor, member_id)
    rows = conn.execute(
        select(member_history)
        .where(member_history.c.member_id == member_id)
        .order_by(member_history.c.seq)
    ).all()
    return [{"event": r.event, "union": r.union_code, "at": r.at, "entry": r.seq} for r in rows]


# -- the projection ---------------------------------------------------------------------------


class MembersProjection:
    """Keeps ``members``, ``member_history``, ``member_groups``, ``member_sealed`` and the
    unions' member counts in step with the Member* events. Writes in :meth:`apply`: commands
    read it in the batch. Needs no key: sealed states are stored as they are."""

    name = "members"
    tables: Sequence[Table] = (members, member_history, member_groups, member_sealed)

    def flush(self, conn: Connection) -> None:
        pass

    def reset(self) -> None:
        pass

    def apply(self, conn: Connection, entry: Entry) -> None:
        handler = _HANDLERS.get(entry.type)
        if handler is not None:
            handler(conn, entry, entry.body)


def _history(conn: Connection, entry: Entry, member: str, union_code: str) -> None:
    conn.execute(
        insert(member_history).values(
            member_id=member,
            seq=entry.index,
            event=entry.type,
            union_code=union_code,
            at=entry.time,
        )
    )


def _set(conn: Connection, member: str, **values: Any) -> None:
    conn.execute(update(members).where(members.c.member_id == member).values(**values))


def _on_joined(conn: Connection, entry: Entry, body: Any) -> None:
    status = Status.ACTIVE if entry.type == "MemberEnrolled" else Status.PENDING
    conn.execute(
        insert(members).values(
            member_id=body["member"],
            id_hash=body["id_hash"],
            union_code=body["union"],
            status=status.value,
            joined_at=entry.time,
            since=entry.time,
            left_at=None,
            updated_at=entry.time,
        )
    )
    if status == Status.ACTIVE:
        unions.adjust_member_counts(conn, body["union"], 1)
    _history(conn, entry, body["member"], body["union"])
    for group in body.get("groups", []):
        if group in SENSITIVE_GROUPS:  # never written in clear by a command: not projected
            continue
        conn.execute(
            insert(member_groups).values(
                member_id=body["member"], grp=group, start=entry.time[:10], end=None
            )
        )
    if "sealed" in body:
        _put_sealed(conn, entry, body)


def _on_approved(conn: Connection, entry: Entry, body: Any) -> None:
    member = get_member(conn, body["member"])
    assert member is not None
    _set(
        conn,
        member.member_id,
        status=Status.ACTIVE.value,
        since=entry.time,
        left_at=None,
        updated_at=entry.time,
    )
    unions.adjust_member_counts(conn, member.union_code, 1)
    _history(conn, entry, member.member_id, member.union_code)


def _on_rejected(conn: Connection, entry: Entry, body: Any) -> None:
    member = get_member(conn, body["member"])
    assert member is not None
    _set(conn, member.member_id, status=Status.REJECTED.value, updated_at=entry.time)
    _history(conn, entry, member.member_id, member.union_code)


def _on_reapplied(conn: Connection, entry: Entry, body: Any) -> None:
    _set(
        conn,
        body["member"],
        status=Status.PENDING.value,
        union_code=body["union"],
        updated_at=entry.time,
    )
    _history(conn, entry, body["member"], body["union"])


def _on_transferred(conn: Connection, entry: Entry, body: Any) -> None:
    unions.adjust_member_counts(conn, body["from"], -1)
    unions.adjust_member_counts(conn, body["to"], 1)
    _set(conn, body["member"], union_code=body["to"], since=entry.time, updated_at=entry.time)
    _history(conn, entry, body["member"], body["to"])


def _on_left(conn: Connection, entry: Entry, body: Any) -> None:
    member = get_member(conn, body["member"])
    assert member is not None
    unions.adjust_member_counts(conn, member.union_code, -1)
    _set(
        conn, member.member_id, status=Status.LEFT.value, left_at=entry.time, updated_at=entry.time
    )
    _history(conn, entry, member.member_id, member.union_code)


def _on_rejoined(conn: Connection, entry: Entry, body: Any) -> None:
    unions.adjust_member_counts(conn, body["union"], 1)
    _set(
        conn,
        body["member"],
        status=Status.ACTIVE.value,
        union_code=body["union"],
        since=entry.time,
        left_at=None,
        updated_at=entry.time,
    )
    _history(conn, entry, body["member"], body["union"])


def _on_group_added(conn: Connection, entry: Entry, body: Any) -> None:
    if body["group"] in SENSITIVE_GROUPS:
        return
    conn.execute(
        insert(member_groups).values(
            member_id=body["member"], grp=body["group"], start=body["from"], end=None
        )
    )


def _on_group_ended(conn: Connection, entry: Entry, body: Any) -> None:
    if body["group"] in SENSITIVE_GROUPS:
        return
    conn.execute(
        update(member_groups)
        .where(
            member_groups.c.member_id == body["member"],
            member_groups.c.grp == body["group"],
            member_groups.c.end.is_(None),
        )
        .values(end=body["until"])
    )


def _put_sealed(conn: Connection, entry: Entry, body: Any) -> None:
    """The member's sealed state becomes the event's (the whole state: it replaces the last)."""
    member, sealed = body["member"], body["sealed"]
    done = conn.execute(
        update(member_sealed)
        .where(member_sealed.c.member_id == member)
        .values(sealed=sealed, updated_at=entry.time)
    )
    if done.rowcount == 0:
        conn.execute(
            insert(member_sealed).values(member_id=member, sealed=sealed, updated_at=entry.time)
        )


def _on_sealed_changed(conn: Connection, entry: Entry, body: Any) -> None:
    _put_sealed(conn, entry, body)


def _on_erased(conn: Connection, entry: Entry, body: Any) -> None:
    member = get_member(conn, body["member"])
    assert member is not None
    if member.status == Status.ACTIVE:
        unions.adjust_member_counts(conn, member.union_code, -1)
    # The keyed hash goes too: nobody can find the erased member by ID number any more.
    _set(
        conn,
        member.member_id,
        status=Status.ERASED.value,
        id_hash=None,
        left_at=member.left_at or entry.time,
        updated_at=entry.time,
    )
    _history(conn, entry, member.member_id, member.union_code)


_HANDLERS: dict[str, Callable[[Connection, Entry, Any], None]] = {
    "MemberEnrolled": _on_joined,
    "MemberApplied": _on_joined,
    "MemberReapplied": _on_reapplied,
    "MemberApproved": _on_approved,
    "MemberRejected": _on_rejected,
    "MemberTransferred": _on_transferred,
    "MemberLeft": _on_left,
    "MemberRejoined": _on_rejoined,
    "MemberGroupAdded": _on_group_added,
    "MemberGroupEnded": _on_group_ended,
    SEALED_GROUPS_CHANGED: _on_sealed_changed,
    "MemberErased": _on_erased,
}


# -- commands -----------------------------------------------------------------------------------

TransferHook = Callable[[Tx, Actor, str, str, str], None]
"""Called inside a transfer command after ``MemberTransferred``: (tx, actor, member id, from
union, to union)."""


class Change(enum.StrEnum):
    """What changed about a member, for :data:`ChangeHook`."""

    TRANSFERRED = "transferred"
    GROUPS_CHANGED = "groups-changed"
    LEFT = "left"
    ERASED = "erased"


ChangeHook = Callable[[Tx, Actor, str, Change], None]
"""Called inside a command after its event: (tx, actor, member id, what changed). The
credentials capability (``ledger/credentials.py``) re-issues the member's credential on a
transfer or a group change, and revokes it when the member leaves or is erased; a hook's
events commit with the command's, or nothing does."""


def _official(actor: Actor) -> None:
    if actor.role not in (Role.OFFICIAL, Role.SYSTEM):
        raise Forbidden(f"a {actor.role.value} cannot change memberships")


def _groups(groups: Sequence[str]) -> list[str]:
    out = []
    for group in groups:
        try:
            out.append(Group(group).value)
        except ValueError:
            raise BadGroup(f"unknown group {group!r}") from None
    if len(set(out)) != len(out):
        raise BadGroup("a group is listed twice")
    return sorted(out)


def _day(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except (TypeError, ValueError):
        raise BadGroup("dates are YYYY-MM-DD") from None


# -- the sealed state of the sensitive groups -------------------------------------------------


def _by_group(spans: Iterable[GroupSpan]) -> list[GroupSpan]:
    return sorted(spans, key=lambda s: (s.group, s.start, s.end or ""))


def sensitive_state_json(spans: Iterable[GroupSpan]) -> bytes:
    """The plaintext of a sealed state: canonical JSON (sorted keys, no whitespace) of the
    spans, by group then start: ``[{"from":"2026-11-25","group":"hardship","to":null}]``."""
    doc = [{"from": s.start, "group": s.group, "to": s.end} for s in _by_group(spans)]
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _is_day(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return date.fromisoformat(value).isoformat() == value
    except ValueError:
        return False


def parse_sensitive_state(data: bytes) -> list[GroupSpan]:
    """The spans of an opened sealed state.

    Raises:
        ValueError: not a sealed-state document.
    """
    doc = json.loads(data)
    if not isinstance(doc, list):
        raise ValueError("a sealed state is a list")
    spans = []
    for item in doc:
        if not isinstance(item, dict) or set(item) != {"from", "group", "to"}:
            raise ValueError("a sealed span has exactly from, group and to")
        group = item["group"]
        if not isinstance(group, str) or group not in SENSITIVE_GROUPS or not _is_day(item["from"]):
            raise ValueError("a sealed span has a sensitive group and a start date")
        if item["to"] is not None and not _is_day(item["to"]):
            raise ValueError("a sealed span ends on a date or not at all")
        spans.append(GroupSpan(group, item["from"], item["to"]))
    return _by_group(spans)


def fit_sensitive_state(spans: Iterable[GroupSpan]) -> list[GroupSpan]:
    """The spans that go into one sealed state: all of them, unless their JSON is longer than
    a ledger box holds (``vault.LEDGER_PLAINTEXT_MAX``, 255 bytes: four ``hardship`` spans
    always fit); then the ended spans that ended first are left out until it fits. They stay
    in the earlier sealed states on the chain, but the member's current state forgets them.
    Padding every state to one size is what keeps the number of spans secret.

    Raises:
        BadGroup: open spans alone do not fit (impossible with one sensitive group).
    """
    kept = _by_group(spans)
    while len(sensitive_state_json(kept)) > LEDGER_PLAINTEXT_MAX:
        ended = [s for s in kept if s.end is not None]
        if not ended:
            raise BadGroup("too many open sensitive groups to seal")
        kept.remove(min(ended, key=lambda s: (s.end or "", s.start, s.group)))
    return kept


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Raises: ValueError (not base64url without padding)."""
    if not isinstance(text, str) or "=" in text:
        raise ValueError("not base64url without padding")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Members:
    """Member commands and the lookups that need the keys (vault, keyed hashes)."""

    def __init__(
        self,
        vault: Vault,
        hash_key: bytes,
        *,
        transfer_hooks: Sequence[TransferHook] = (),
        change_hooks: Sequence[ChangeHook] = (),
    ) -> None:
        self.vault = vault
        self._hash_key = hash_key
        self.transfer_hooks = list(transfer_hooks)
        self.change_hooks = list(change_hooks)

    def _changed(self, tx: Tx, actor: Actor, member_id: str, change: Change) -> None:
        for hook in self.change_hooks:
            hook(tx, actor, member_id, change)

    # -- groups -----------------------------------------------------------------------------------

    def _open_states(
        self, conn: Connection, states: Mapping[str, str]
    ) -> dict[str, list[GroupSpan]]:
        """Open sealed states (member id -> base64url text, as in ``member_sealed``): no actor
        check. An erased member's state opens to no spans.

        Raises:
            VaultCorrupt: a state does not open, or opens to something malformed.
        """
        blobs = {}
        for member_id, text in states.items():
            try:
                blobs[member_id] = _unb64(text)
            except ValueError:  # binascii.Error included
                raise VaultCorrupt("a sealed group state is not base64url") from None
        out: dict[str, list[GroupSpan]] = {}
        for member_id, plaintext in self.vault.open_many_from_ledger(conn, blobs).items():
            try:
                out[member_id] = [] if plaintext is None else parse_sensitive_state(plaintext)
            except ValueError:  # from None: a JSONDecodeError holds the plaintext
                raise VaultCorrupt("a sealed group state opened but is malformed") from None
        return out

    def _sensitive_spans(self, conn: Connection, member_id: str) -> list[GroupSpan]:
        """The member's sensitive spans from their latest sealed state (no actor check)."""
        state = conn.execute(
            select(member_sealed.c.sealed).where(member_sealed.c.member_id == member_id)
        ).scalar()
        if state is None:
            return []
        return self._open_states(conn, {member_id: state})[member_id]

    def _seal_state(self, tx: Tx, member_id: str, spans: Iterable[GroupSpan]) -> str:
        plaintext = sensitive_state_json(spans)
        return _b64(self.vault.seal_for_ledger(tx.execute, member_id, plaintext))

    def groups_of(
        self, conn: Connection, actor: Actor, member_id: str, *, on: str | None = None
    ) -> list[GroupSpan]:
        """The member's group spans by group and start (only those active on day ``on`` when
        given), the sensitive ones only when :func:`may_see_sensitive` allows.

        Raises:
            UnknownMember: not visible to the actor.
            vault.VaultCorrupt: the member's sealed state does not open.
        """
        member = visible_member(conn, actor, member_id)
        rows = conn.execute(
            select(member_groups).where(member_groups.c.member_id == member.member_id)
        ).all()
        spans = [GroupSpan(r.grp, r.start, r.end) for r in rows if r.grp not in SENSITIVE_GROUPS]
        if may_see_sensitive(conn, actor, member):
            spans += self._sensitive_spans(conn, member.member_id)
        spans = _by_group(spans)
        if on is not None:
            spans = [s for s in spans if s.active_on(on)]
        return spans

    def active_groups(self, conn: Connection, member_id: str, on_day: str | date) -> list[str]:
        """Every group the member belongs to on ``on_day``, sensitive ones INCLUDED, sorted.

        For the system only (issuing credentials, judging eligibility): there is no actor
        check, so never hand the result to a caller who may not see sensitive groups. An erased
        member has no sensitive group any more.

        Raises:
            UnknownMember: no such member. BadGroup: ``on_day`` is not a date.
            vault.VaultCorrupt: the member's sealed state does not open.
        """
        day = on_day.isoformat() if isinstance(on_day, date) else _day(on_day)
        member = get_member(conn, member_id) if isinstance(member_id, str) else None
        if member is None:
            raise UnknownMember(f"no member {member_id!r}")
        rows = conn.execute(
            select(member_groups).where(member_groups.c.member_id == member.member_id)
        ).all()
        spans = [GroupSpan(r.grp, r.start, r.end) for r in rows if r.grp not in SENSITIVE_GROUPS]
        spans += self._sensitive_spans(conn, member.member_id)
        return sorted({s.group for s in spans if s.active_on(day)})

    def list_members(
        self,
        conn: Connection,
        actor: Actor,
        *,
        union_code: str,
        status: str | None = None,
        group: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[MemberRow]:
        """Members of the subtree of ``union_code`` visible to ``actor``, by member id, keyset
        paginated (``after`` = the last member id seen), at most ``min(limit, 500)``. ``group``
        keeps those in the group today (the UTC date, like the commands' default dates).
        Filtering by a sensitive group is for officials (of a union they see, so every member
        listed is theirs to see) and the system.

        A sensitive group cannot be filtered in SQL: the projection holds only padded sealed
        states. The members of the subtree that have one (with the status filter, after
        ``after``) are taken in id order, :data:`_SCAN_CHUNK` at a time (one query, then one
        query for their keys per chunk), and their states opened until the page is full. The
        cost is proportional to the members scanned, about two AEAD opens each: a page of a
        rare group in a large subtree can scan the whole subtree.

        Raises:
            unions.UnknownUnion (NotFound): the union is not visible to the actor.
            Forbidden: filtering by a sensitive group without the right to see it.
            vault.VaultCorrupt: a sealed state does not open.
        """
        root = unions.visible(conn, actor, union_code)
        if root is None or actor.role == Role.MEMBER:
            raise unions.UnknownUnion(f"no union {union_code!r}")
        prefix = root.path
        limit = max(0, min(limit, 500))
        query = (
            select(members)
            .join(unions.unions, unions.unions.c.code == members.c.union_code)
            .where(unions.unions.c.path >= prefix, unions.unions.c.path < unions.path_upper(prefix))
        )
        if status is not None:
            query = query.where(members.c.status == status)
        today = datetime.now(UTC).date().isoformat()
        if group is not None and group in SENSITIVE_GROUPS:
            if actor.role not in (Role.OFFICIAL, Role.SYSTEM):
                raise Forbidden("this group is visible to the member's own officials only")
            return self._list_sensitive(conn, query, group, today=today, after=after, limit=limit)
        if group is not None:
            query = query.where(
                members.c.member_id.in_(
                    select(member_groups.c.member_id).where(
                        member_groups.c.grp == group,
                        member_groups.c.start <= today,
                        or_(member_groups.c.end.is_(None), member_groups.c.end > today),
                    )
                )
            )
        if after is not None:
            query = query.where(members.c.member_id > after)
        rows = conn.execute(query.order_by(members.c.member_id).limit(limit)).all()
        return [_row(r) for r in rows]

    def _list_sensitive(
        self,
        conn: Connection,
        query: Select[Any],
        group: str,
        *,
        today: str,
        after: str | None,
        limit: int,
    ) -> list[MemberRow]:
        query = query.add_columns(member_sealed.c.sealed.label("sealed_state")).join(
            member_sealed, member_sealed.c.member_id == members.c.member_id
        )
        found: list[MemberRow] = []
        cursor = after
        while len(found) < limit:
            step = query if cursor is None else query.where(members.c.member_id > cursor)
            rows = conn.execute(step.order_by(members.c.member_id).limit(_SCAN_CHUNK)).all()
            opened = self._open_states(conn, {r.member_id: r.sealed_state for r in rows})
            for r in rows:
                if any(s.group == group and s.active_on(today) for s in opened[r.member_id]):
                    found.append(_row(r))
                    if len(found) == limit:
                        break
            if len(rows) < _SCAN_CHUNK:
                break
            cursor = rows[-1].member_id
        return found

    # -- lookups --------------------------------------------------------------------------------

    def find_by_id_number(self, conn: Connection, actor: Actor, id_number: str) -> MemberRow:
        """The member holding this ID number, if visible to the actor.

        Raises:
            identity.InvalidIdNumber: not a valid number. UnknownMember: none visible.
        """
        if actor.role not in (Role.OFFICIAL, Role.SYSTEM):
            raise Forbidden("only officials search by ID number")
        hashed = id_number_hash(self._hash_key, id_number)
        row = conn.execute(select(members).where(members.c.id_hash == hashed)).first()
        if row is None or not _can_see(conn, actor, _row(row)):
            raise UnknownMember("no member with this ID number")
        return _row(row)

    def member_for_phone(self, conn: Connection, phone: str) -> str | None:
        """The active member using this phone number (for one-time-code login), if any."""
        try:
            hashed = phone_hash(self._hash_key, phone)
        except Invalid:
            return None
        row = conn.execute(
            select(members.c.member_id)
            .join(member_lookup, member_lookup.c.member_id == members.c.member_id)
            .where(member_lookup.c.phone_hash == hashed, members.c.status == Status.ACTIVE.value)
        ).first()
        return None if row is None else str(row.member_id)

    def personal_data(self, conn: Connection, actor: Actor, member_id: str) -> PersonalData:
        """The member's personal data: officials in scope and the member themself.

        Raises:
            UnknownMember: not visible. Forbidden: an auditor or a station.
            vault.Erased: erased.
        """
        member = visible_member(conn, actor, member_id)
        if actor.role not in (Role.OFFICIAL, Role.MEMBER, Role.SYSTEM):
            raise Forbidden("personal data is for the member's officials and the member")
        data = self.vault.get(conn, member.member_id)
        if data is None:
            raise UnknownMember(f"no personal data for {member_id!r}")
        return data

    # -- commands -------------------------------------------------------------------------------

    def _store_person(self, tx: Tx, member_id: str, person: PersonalData) -> None:
        """Write the vault and the phone lookup. Checks come first: nothing is written when
        the phone number belongs to another member."""
        self._check_phone_free(tx.conn, member_id, person)
        hashed_phone = phone_hash(self._hash_key, person.phone)
        stamp = tx.now.isoformat()
        self.vault.put(tx.execute, member_id, person, stamp)
        tx.execute(delete(member_lookup).where(member_lookup.c.member_id == member_id))
        tx.execute(insert(member_lookup).values(member_id=member_id, phone_hash=hashed_phone))

    def _existing_person(self, conn: Connection, person: PersonalData) -> MemberRow | None:
        hashed = id_number_hash(self._hash_key, person.id_number)
        row = conn.execute(select(members).where(members.c.id_hash == hashed)).first()
        return None if row is None else _row(row)

    def enrol(
        self,
        tx: Tx,
        actor: Actor,
        *,
        union_code: str,
        person: PersonalData,
        groups: Sequence[str] = (),
    ) -> MemberRow:
        """An official enrols a worker in one step (一键入会). A person who left before is
        re-joined under their old member id; one who holds a membership is refused.

        Raises:
            Forbidden, unions.UnknownUnion, unions.UnionClosed, DuplicatePerson, DuplicatePhone,
            BadGroup.
        """
        _official(actor)
        target = unions.require_active_union(tx.conn, actor, union_code)
        chosen = _groups(groups)
        existing = self._existing_person(tx.conn, person)
        if existing is not None and existing.status in (Status.ACTIVE, Status.PENDING):
            raise DuplicatePerson("this person already holds a membership")
        if existing is not None:
            self._store_person(tx, existing.member_id, person)
            tx.append(
                "MemberRejoined",
                actor.ledger_actor,
                {"member": existing.member_id, "union": target.code},
            )
            today = tx.now.date().isoformat()
            still_open = set(
                tx.conn.execute(
                    select(member_groups.c.grp).where(
                        member_groups.c.member_id == existing.member_id,
                        member_groups.c.end.is_(None),
                    )
                ).scalars()
            )
            sealed = self._sensitive_spans(tx.conn, existing.member_id)
            still_open |= {s.group for s in sealed if s.end is None}
            # Spans kept open across leaving stay as they are.
            for group in chosen:
                if group not in still_open and group not in SENSITIVE_GROUPS:
                    self._add_group(tx, actor, existing.member_id, group, today)
            opened = [
                GroupSpan(g, today, None)
                for g in chosen
                if g in SENSITIVE_GROUPS and g not in still_open
            ]
            if opened:
                self._change_sealed(tx, actor, existing.member_id, [*sealed, *opened])
            found = get_member(tx.conn, existing.member_id)
            assert found is not None
            return found
        member_id = new_member_id()
        self._store_person(tx, member_id, person)  # draws the member's ledger sealing key
        today = tx.now.date().isoformat()
        sensitive = [GroupSpan(g, today, None) for g in chosen if g in SENSITIVE_GROUPS]
        tx.append(
            "MemberEnrolled",
            actor.ledger_actor,
            {
                "member": member_id,
                "union": target.code,
                "id_hash": id_number_hash(self._hash_key, person.id_number),
                "groups": [g for g in chosen if g not in SENSITIVE_GROUPS],
                # Always present (an empty state when no sensitive group), so that enrolments
                # with and without one cannot be told apart.
                "sealed": self._seal_state(tx, member_id, sensitive),
            },
        )
        found = get_member(tx.conn, member_id)
        assert found is not None
        return found

    def _check_phone_free(self, conn: Connection, member_id: str, person: PersonalData) -> None:
        hashed_phone = phone_hash(self._hash_key, person.phone)
        clash = conn.execute(
            select(member_lookup.c.member_id).where(
                member_lookup.c.phone_hash == hashed_phone,
                member_lookup.c.member_id != member_id,
            )
        ).first()
        if clash is not None:
            raise DuplicatePhone("another member already uses this phone number")

    def apply(self, tx: Tx, *, join_code: str, person: PersonalData) -> MemberRow:
        """A worker applies with a union's join code (from its QR poster). The union approves
        at once when its policy says so; otherwise an official approves or rejects.

        Raises:
            UnknownJoinCode, DuplicatePerson, DuplicatePhone.
        """
        union = (
            unions.union_by_join_code(tx.conn, join_code) if isinstance(join_code, str) else None
        )
        if union is None or union.status != "active":
            raise UnknownJoinCode("no open union has this join code")
        applicant = "applicant"
        existing = self._existing_person(tx.conn, person)
        if existing is not None and existing.status in (Status.ACTIVE, Status.PENDING):
            raise DuplicatePerson("this person already holds a membership or an application")
        if existing is not None:  # left or rejected before: the same member applies again
            member_id = existing.member_id
            self._store_person(tx, member_id, person)
            tx.append("MemberReapplied", applicant, {"member": member_id, "union": union.code})
        else:
            member_id = new_member_id()
            self._store_person(tx, member_id, person)
            tx.append(
                "MemberApplied",
                applicant,
                {
                    "member": member_id,
                    "union": union.code,
                    "id_hash": id_number_hash(self._hash_key, person.id_number),
                },
            )
        if union.auto_approve:
            tx.append("MemberApproved", f"union:{union.code}", {"member": member_id})
        found = get_member(tx.conn, member_id)
        assert found is not None
        return found

    def _pending(self, tx: Tx, actor: Actor, member_id: str) -> MemberRow:
        _official(actor)
        member = visible_member(tx.conn, actor, member_id)
        if member.status != Status.PENDING:
            raise WrongMemberStatus(f"member is {member.status}, not pending")
        return member

    def approve(self, tx: Tx, actor: Actor, member_id: str) -> Entry:
        self._pending(tx, actor, member_id)
        return tx.append("MemberApproved", actor.ledger_actor, {"member": member_id})

    def reject(self, tx: Tx, actor: Actor, member_id: str) -> Entry:
        self._pending(tx, actor, member_id)
        return tx.append("MemberRejected", actor.ledger_actor, {"member": member_id})

    def transfer(self, tx: Tx, actor: Actor, member_id: str, to_union: str) -> Entry:
        """Move an active member to another union (转会). The official must see both unions.

        Raises:
            UnknownMember, unions.UnknownUnion, unions.UnionClosed, SameUnion, WrongMemberStatus.
        """
        _official(actor)
        member = visible_member(tx.conn, actor, member_id)
        if member.status != Status.ACTIVE:
            raise WrongMemberStatus(f"member is {member.status}, not active")
        target = unions.require_active_union(tx.conn, actor, to_union)
        if target.code == member.union_code:
            raise SameUnion("the member already belongs to this union")
        entry = tx.append(
            "MemberTransferred",
            actor.ledger_actor,
            {"member": member_id, "from": member.union_code, "to": target.code},
        )
        for hook in self.transfer_hooks:
            hook(tx, actor, member_id, member.union_code, target.code)
        self._changed(tx, actor, member_id, Change.TRANSFERRED)
        return entry

    def leave(self, tx: Tx, actor: Actor, member_id: str) -> Entry:
        """End an active membership. Members may leave themselves."""
        if actor.role != Role.MEMBER:
            _official(actor)
        member = visible_member(tx.conn, actor, member_id)
        if member.status != Status.ACTIVE:
            raise WrongMemberStatus(f"member is {member.status}, not active")
        entry = tx.append("MemberLeft", actor.ledger_actor, {"member": member_id})
        self._changed(tx, actor, member_id, Change.LEFT)
        return entry

    def rejoin(self, tx: Tx, actor: Actor, member_id: str, union_code: str) -> Entry:
        _official(actor)
        member = get_member(tx.conn, member_id)
        if member is None or not (member.status == Status.LEFT or _can_see(tx.conn, actor, member)):
            # A member who left may re-join anywhere the official reaches; a current member
            # outside the official's subtree stays invisible.
            raise UnknownMember(f"no member {member_id!r}")
        if member.status != Status.LEFT:
            raise WrongMemberStatus(f"member is {member.status}: only a member who left re-joins")
        target = unions.require_active_union(tx.conn, actor, union_code)
        return tx.append(
            "MemberRejoined", actor.ledger_actor, {"member": member_id, "union": target.code}
        )

    def _add_group(self, tx: Tx, actor: Actor, member_id: str, group: str, start: str) -> Entry:
        return tx.append(
            "MemberGroupAdded",
            actor.ledger_actor,
            {"member": member_id, "group": group, "from": start},
        )

    def _change_sealed(
        self, tx: Tx, actor: Actor, member_id: str, spans: Iterable[GroupSpan]
    ) -> Entry:
        """Append the member's whole new sealed state."""
        sealed = self._seal_state(tx, member_id, fit_sensitive_state(spans))
        return tx.append(
            SEALED_GROUPS_CHANGED, actor.ledger_actor, {"member": member_id, "sealed": sealed}
        )

    def add_group(
        self, tx: Tx, actor: Actor, member_id: str, group: str, start: str | None = None
    ) -> Entry:
        """Add the member to ``group`` (see :meth:`_add_group_command`), then run the change
        hooks (the credential is re-issued)."""
        entry = self._add_group_command(tx, actor, member_id, group, start)
        self._changed(tx, actor, member_id, Change.GROUPS_CHANGED)
        return entry

    def end_group(
        self, tx: Tx, actor: Actor, member_id: str, group: str, until: str | None = None
    ) -> Entry:
        """End the member's span in ``group`` (see :meth:`_end_group_command`), then run the
        change hooks (the credential is re-issued)."""
        entry = self._end_group_command(tx, actor, member_id, group, until)
        self._changed(tx, actor, member_id, Change.GROUPS_CHANGED)
        return entry

    def _add_group_command(
        self, tx: Tx, actor: Actor, member_id: str, group: str, start: str | None
    ) -> Entry:
        """Add the member to ``group`` from day ``start`` (default: today). A sensitive group
        appends the member's new sealed state (``MemberSealedGroupsChanged``), any other group
        ``MemberGroupAdded``.

        Raises:
            UnknownMember, BadGroup (unknown, or already in the group).
        """
        _official(actor)
        member = visible_member(tx.conn, actor, member_id)
        if member.status != Status.ACTIVE:
            raise WrongMemberStatus(f"member is {member.status}, not active")
        (chosen,) = _groups([group])
        day = _day(start) if start is not None else tx.now.date().isoformat()
        if chosen in SENSITIVE_GROUPS:
            state = self._sensitive_spans(tx.conn, member_id)
            for span in state:
                if span.group == chosen and span.end is None:
                    # No date in the message: problems may travel further than the official.
                    raise BadGroup(f"the member is already in {chosen}")
            return self._change_sealed(tx, actor, member_id, [*state, GroupSpan(chosen, day, None)])
        open_span = tx.conn.execute(
            select(member_groups.c.start).where(
                member_groups.c.member_id == member_id,
                member_groups.c.grp == chosen,
                member_groups.c.end.is_(None),
            )
        ).first()
        if open_span is not None:
            raise BadGroup(f"the member is already in {chosen} (since {open_span.start})")
        return self._add_group(tx, actor, member_id, chosen, day)

    def _end_group_command(
        self, tx: Tx, actor: Actor, member_id: str, group: str, until: str | None
    ) -> Entry:
        """End the member's open span in ``group`` on day ``until`` (default: today). A sensitive
        group appends the member's new sealed state (``MemberSealedGroupsChanged``), any other
        group ``MemberGroupEnded``. An erased member is in no sensitive group any more.

        Raises:
            UnknownMember, BadGroup (not in the group, or ends before it starts).
        """
        _official(actor)
        visible_member(tx.conn, actor, member_id)
        (chosen,) = _groups([group])
        day = _day(until) if until is not None else tx.now.date().isoformat()
        if chosen in SENSITIVE_GROUPS:
            state = self._sensitive_spans(tx.conn, member_id)
            current = next((s for s in state if s.group == chosen and s.end is None), None)
            if current is None:
                raise BadGroup(f"the member is not in {chosen}")
            if day <= current.start:
                raise BadGroup(f"the open {chosen} span does not start before {day}")
            ended = [GroupSpan(chosen, current.start, day) if s is current else s for s in state]
            return self._change_sealed(tx, actor, member_id, ended)
        span = tx.conn.execute(
            select(member_groups.c.start).where(
                and_(
                    member_groups.c.member_id == member_id,
                    member_groups.c.grp == chosen,
                    member_groups.c.end.is_(None),
                )
            )
        ).first()
        if span is None:
            raise BadGroup(f"the member is not in {chosen}")
        if day <= span.start:
            raise BadGroup(f"{chosen} started on {span.start}: it cannot end on {day}")
        return tx.append(
            "MemberGroupEnded",
            actor.ledger_actor,
            {"member": member_id, "group": chosen, "until": day},
        )

    def erase(self, tx: Tx, actor: Actor, member_id: str) -> Entry:
        """The right to be forgotten (PIPL): destroy the member's data key and contact hash.
        The ledger still verifies; the member's facts stay, anonymous.

        Raises:
            UnknownMember, WrongMemberStatus (already erased).
        """
        _official(actor)
        member = visible_member(tx.conn, actor, member_id)
        if member.status == Status.ERASED:
            raise WrongMemberStatus("member is already erased")
        self.vault.erase(tx.execute, member_id, tx.now.isoformat())
        tx.execute(delete(member_lookup).where(member_lookup.c.member_id == member_id))
        entry = tx.append("MemberErased", actor.ledger_actor, {"member": member_id})
        self._changed(tx, actor, member_id, Change.ERASED)
        return entry


__all__ = [
    "SEALED_GROUPS_CHANGED",
    "SENSITIVE_GROUPS",
    "BadGroup",
    "Change",
    "ChangeHook",
    "DuplicatePerson",
    "DuplicatePhone",
    "Group",
    "GroupSpan",
    "MemberRow",
    "Members",
    "MembersProjection",
    "SameUnion",
    "Status",
    "TransferHook",
    "UnknownJoinCode",
    "UnknownMember",
    "WrongMemberStatus",
    "fit_sensitive_state",
    "get_member",
    "history_of",
    "may_see_sensitive",
    "member_groups",
    "member_history",
    "member_lookup",
    "member_sealed",
    "members",
    "parse_sensitive_state",
    "sensitive_state_json",
    "visible_member",
]
