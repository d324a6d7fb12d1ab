"""Members: join in one step, apply and approve, transfer, leave, re-join, groups, erasure.

Every change is an event whose body holds pseudonyms and keyed hashes only: the member id is a
random pseudonym (``identity.new_member_id``), the person is represented by a keyed hash of
their ID number (``id_hash``: the same person cannot hold two memberships, and an official can
find a member by ID number without it being stored anywhere in the clear). Names, ID numbers,
phone numbers and employers live in the :class:`~ledger.vault.Vault`, written in the same
transaction as the events, and erased by destroying the member's data key.

Tables: ``members``, ``member_history`` and ``member_groups`` are projections (rebuilt from the
chain); ``member_lookup`` (the keyed hash of the phone number, for one-time-code login) lives
beside the ledger like the vault, since a phone number is contact data, not membership.

Visibility: an official sees members of unions in their subtree (anything else is reported as
missing); an auditor sees every membership fact except the sensitive ``hardship`` group and
personal data; a member sees themself. Commands check all of it inside the batch transaction.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Index,
    Integer,
    String,
    Table,
    and_,
    delete,
    insert,
    or_,
    select,
    update,
)

from ledger import unions
from ledger.domain import Actor, Conflict, Forbidden, Invalid, NotFound, Role
from ledger.identity import id_number_hash, new_member_id, phone_hash
from ledger.schema import metadata, projection_metadata
from ledger.sequencer import Tx
from ledger.vault import PersonalData, Vault
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


def get_member(conn: Connection, member_id: str) -> MemberRow | None:
    row = conn.execute(select(members).where(members.c.member_id == member_id)).first()
    return None if row is None else _row(row)


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


def groups_of(
    conn: Connection, actor: Actor, member_id: str, *, on: str | None = None
) -> list[GroupSpan]:
    """The member's group spans (only those active on day ``on`` when given), without the
    sensitive ones unless the actor may see them.

    Raises:
        UnknownMember: not visible to the actor.
    """
    member = visible_member(conn, actor, member_id)
    rows = conn.execute(
        select(member_groups)
        .where(member_groups.c.member_id == member_id)
        .order_by(member_groups.c.grp, member_groups.c.start)
    ).all()
    spans = [GroupSpan(r.grp, r.start, r.end) for r in rows]
    if not may_see_sensitive(conn, actor, member):
        spans = [s for s in spans if s.group not in SENSITIVE_GROUPS]
    if on is not None:
        spans = [s for s in spans if s.active_on(on)]
    return spans


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


def list_members(
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
    paginated (``after`` = the last member id seen). Filtering by the sensitive group is only
    allowed to those who may see it.

    Raises:
        unions.UnknownUnion (NotFound): the union is not visible to the actor.
        Forbidden: filtering by a sensitive group without the right to see it.
    """
    root = unions.visible(conn, actor, union_code)
    if root is None or actor.role == Role.MEMBER:
        raise unions.UnknownUnion(f"no union {union_code!r}")
    prefix = root.path
    query = (
        select(members)
        .join(unions.unions, unions.unions.c.code == members.c.union_code)
        .where(unions.unions.c.path >= prefix, unions.unions.c.path < unions.path_upper(prefix))
    )
    if status is not None:
        query = query.where(members.c.status == status)
    if group is not None:
        if group in SENSITIVE_GROUPS and actor.role not in (Role.OFFICIAL, Role.SYSTEM):
            raise Forbidden("this group is visible to the member's own officials only")
        today = date.today().isoformat()
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
    rows = conn.execute(query.order_by(members.c.member_id).limit(min(limit, 500))).all()
    return [_row(r) for r in rows]


# -- the projection ---------------------------------------------------------------------------


class MembersProjection:
    """Keeps ``members``, ``member_history``, ``member_groups`` and the unions' member counts
    in step with the Member* events. Writes in :meth:`apply`: commands read it in the batch."""

    name = "members"
    tables: Sequence[Table] = (members, member_history, member_groups)

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
        conn.execute(
            insert(member_groups).values(
                member_id=body["member"], grp=group, start=entry.time[:10], end=None
            )
        )


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
    conn.execute(
        insert(member_groups).values(
            member_id=body["member"], grp=body["group"], start=body["from"], end=None
        )
    )


def _on_group_ended(conn: Connection, entry: Entry, body: Any) -> None:
    conn.execute(
        update(member_groups)
        .where(
            member_groups.c.member_id == body["member"],
            member_groups.c.grp == body["group"],
            member_groups.c.end.is_(None),
        )
        .values(end=body["until"])
    )


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
    "MemberErased": _on_erased,
}


# -- commands -----------------------------------------------------------------------------------

TransferHook = Callable[[Tx, Actor, str, str, str], None]
"""Called inside a transfer command after ``MemberTransferred``: (tx, actor, member id, from
union, to union). The credentials capability revokes the old credential and issues a new one."""


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


class Members:
    """Member commands and the lookups that need the keys (vault, keyed hashes)."""

    def __init__(
        self,
        vault: Vault,
        hash_key: bytes,
        *,
        transfer_hooks: Sequence[TransferHook] = (),
    ) -> None:
        self.vault = vault
        self._hash_key = hash_key
        self.transfer_hooks = list(transfer_hooks)

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
            still_open = set(
                tx.conn.execute(
                    select(member_groups.c.grp).where(
                        member_groups.c.member_id == existing.member_id,
                        member_groups.c.end.is_(None),
                    )
                ).scalars()
            )
            for group in chosen:
                if group not in still_open:  # spans kept open across leaving stay as they are
                    self._add_group(tx, actor, existing.member_id, group, tx.now.date().isoformat())
            found = get_member(tx.conn, existing.member_id)
            assert found is not None
            return found
        member_id = new_member_id()
        self._store_person(tx, member_id, person)
        tx.append(
            "MemberEnrolled",
            actor.ledger_actor,
            {
                "member": member_id,
                "union": target.code,
                "id_hash": id_number_hash(self._hash_key, person.id_number),
                "groups": chosen,
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
        return entry

    def leave(self, tx: Tx, actor: Actor, member_id: str) -> Entry:
        """End an active membership. Members may leave themselves."""
        if actor.role != Role.MEMBER:
            _official(actor)
        member = visible_member(tx.conn, actor, member_id)
        if member.status != Status.ACTIVE:
            raise WrongMemberStatus(f"member is {member.status}, not active")
        return tx.append("MemberLeft", actor.ledger_actor, {"member": member_id})

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

    def add_group(
        self, tx: Tx, actor: Actor, member_id: str, group: str, start: str | None = None
    ) -> Entry:
        """Add the member to ``group`` from day ``start`` (default: today).

        Raises:
            UnknownMember, BadGroup (unknown, or already in the group).
        """
        _official(actor)
        member = visible_member(tx.conn, actor, member_id)
        if member.status != Status.ACTIVE:
            raise WrongMemberStatus(f"member is {member.status}, not active")
        (chosen,) = _groups([group])
        day = _day(start) if start is not None else tx.now.date().isoformat()
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

    def end_group(
        self, tx: Tx, actor: Actor, member_id: str, group: str, until: str | None = None
    ) -> Entry:
        """End the member's open span in ``group`` on day ``until`` (default: today).

        Raises:
            UnknownMember, BadGroup (not in the group, or ends before it starts).
        """
        _official(actor)
        visible_member(tx.conn, actor, member_id)
        (chosen,) = _groups([group])
        day = _day(until) if until is not None else tx.now.date().isoformat()
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
        return tx.append("MemberErased", actor.ledger_actor, {"member": member_id})


__all__ = [
    "SENSITIVE_GROUPS",
    "BadGroup",
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
    "get_member",
    "groups_of",
    "history_of",
    "list_members",
    "member_groups",
    "member_history",
    "member_lookup",
    "members",
    "visible_member",
]
