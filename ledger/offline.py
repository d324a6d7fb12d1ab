"""Offline sync, the server side: a station uploads the records it signed offline
(``verifier/station.py``: compact JWS, one hash chain per device key); the server verifies each
record's signature and place in its device's chain, re-judges it against the ledger at the
record's time, and accounts for every record it was sent (docs/station.md, section 10).

Three events (docs/events.md):

- ``OfflineRedemptionRecorded``: the body of ``RedemptionRecorded`` (idempotency key
  ``offline:<kid>:<seq>``) plus ``seq``, ``kid``, ``record`` (base64url SHA-256 of the JWS) and
  ``offline_at`` (the record's ``iat``). Counted against quota and budget like an online
  redemption (``ledger/redemptions.py``'s projection applies it to the same tables).
- ``OfflineRedemptionConflicted``: the record's facts and a ``reason`` (``quota-used``,
  ``budget-exhausted``, ``not-a-member``, ``not-eligible``, ``not-stackable``,
  ``program-not-open``, ``not-redeemable-here``, ``invalid-quantity``, ``replayed``,
  ``offline-not-allowed``, ``offline-member-limit``, ``offline-station-ceiling``): the
  benefit was handed out but the rules say no; recorded for review, never dropped, NOT
  counted against quota or budget.

The offline limits a genuine station enforces (docs/station.md, sections 4 and 5) are enforced
again here, from the records already accepted (``offline_records``), since a stolen key not yet
revoked could sign records the app would never make: the version in force at the record's
``iat`` must allow offline redemption; per device key, member, program and China day of
``iat``, the accepted units must stay within ``OfflinePolicy.member_daily_limit``; per device
key, program and China day, the accepted value within ``offline.station_daily_value``; per
device key and China day, the accepted value of all programs within the station's
``daily_ceiling`` in force at ``iat`` (``ledger.stations.station_ceilings``; none: unbounded).
- ``OfflineRecordRefused`` {station, kid, seq, record, reason, message}: a record that does
  not verify (bad signature, unknown or revoked key, gap, reordered, forked or broken chain,
  a clock from the future, a presentation twice in one batch). No member facts: its claims
  are not to be trusted.

Tables (projections): ``offline_heads`` (device key → the last synced seq, record hash and
time: the next batch continues from it) and ``offline_records`` (one row per event above, by
entry index: duplicates are detected by record hash, and conflicts and refusals listed for
review).

Each record is judged at its ``iat`` like an online redemption, the member's status and union
included: a member who left after the record was made was a member then; one who joined after
it was not (``not-a-member``). The signatures are checked before the single writer
(:func:`check_ahead`); in it, a request reads what judging needs once and keeps tallies in
memory (:class:`_Sync`), and the projection writes its rows once per writer batch.

Sync is idempotent and resumable: a record already synced (same record hash) is answered
``duplicate`` with its entry and appended nothing; a refusal already recorded for the same
record and reason is answered again without a new event; a batch cut anywhere can be resent
whole or from the first record not acknowledged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    String,
    Table,
    bindparam,
    func,
    insert,
    select,
    update,
)

import keys
from ledger import members as m
from ledger import programs as p
from ledger import redemptions as r
from ledger import unions
from ledger.db import driver_execute, driver_sql
from ledger.domain import Actor, Forbidden, Invalid, Role
from ledger.schema import projection_metadata
from ledger.sequencer import Tx
from ledger.stations import UnknownStation, ceiling_history, get_station, station_keys
from verifier.entry import Entry, parse_entry_time, seconds_entry_time
from verifier.errors import StationCacheError, StationRecordError
from verifier.station import (
    GENESIS,
    OFFLINE_MEMBER_LIMIT,
    OFFLINE_NOT_ALLOWED,
    OFFLINE_STATION_CEILING,
    BatchResult,
    OfflinePolicy,
    Presigned,
    VerifiedRecord,
    check_signatures,
    record_hash,
    verify_batch,
    verify_record,
)
from verifier.stats import china_day_of

MAX_BATCH = 1000
"""Records per sync request."""
ACCEPTED, CONFLICT, REFUSED, DUPLICATE = "accepted", "conflict", "refused", "duplicate"
NOT_JUDGED = "not-judged"
"""The reason of a record that verifies on its own but follows a refused record of its device
in the batch: nothing is recorded for it; the station resends it once the chain is mended."""
REPLAYED = "replayed"
RECORDED_TYPE = "OfflineRedemptionRecorded"
CONFLICTED_TYPE = "OfflineRedemptionConflicted"
REFUSED_TYPE = "OfflineRecordRefused"
PAGE_MAX = 1000

offline_heads = Table(
    "offline_heads",
    projection_metadata,
    Column("kid", String(43), primary_key=True),
    Column("station_id", String(64), nullable=False, index=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(43), nullable=False),
    Column("iat", BigInteger, nullable=False),
    Column("entry", Integer, nullable=False),
)

offline_records = Table(
    "offline_records",
    projection_metadata,
    Column("entry", Integer, primary_key=True, autoincrement=False),
    Column("station_id", String(64), nullable=False),
    Column("kid", String(43), nullable=True),
    Column("seq", BigInteger, nullable=True),
    Column("record", String(43), nullable=False),
    Column("status", String(8), nullable=False),
    Column("reason", String(64), nullable=True),
    Column("member_id", String(32), nullable=True),
    Column("program_id", String(64), nullable=True),
    Column("quantity", Integer, nullable=True),
    Column("value", BigInteger, nullable=True),
    Column("offline_at", BigInteger, nullable=True),
    Column("at", String(32), nullable=False),
)
Index("ix_offline_records_record", offline_records.c.record)
Index("ix_offline_records_review", offline_records.c.status, offline_records.c.station_id)

_INSERT_RECORD_SQL = (
    "INSERT INTO offline_records (entry, station_id, kid, seq, record, status, reason,"
    " member_id, program_id, quantity, value, offline_at, at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_HEAD = select(offline_heads).where(offline_heads.c.kid == bindparam("kid"))
_ADVANCE = (
    update(offline_heads)
    .where(offline_heads.c.kid == bindparam("h_kid"), offline_heads.c.seq < bindparam("h_seq"))
    .values(
        seq=bindparam("h_seq"),
        hash=bindparam("h_hash"),
        iat=bindparam("h_iat"),
        entry=bindparam("h_entry"),
    )
)


class OfflineNotAllowed(r.Refused):
    """The program's version in force at the record's time does not allow offline redemption."""

    code = OFFLINE_NOT_ALLOWED


class OfflineMemberLimit(r.Refused):
    """Beyond ``offline.per_member_per_day`` (or the quota count) for the member that day."""

    code = OFFLINE_MEMBER_LIMIT


class OfflineStationCeiling(r.Refused):
    """Beyond the program's ``offline.station_daily_value``, or the station's
    ``daily_ceiling``, for the device that day."""

    code = OFFLINE_STATION_CEILING


def _china_day_bounds(iat: int) -> tuple[str, int, int]:
    """The China date of ``iat`` and its first and past-the-last second (NumericDate): by
    arithmetic, China time being a fixed UTC+8."""
    start = (iat + _CHINA_OFFSET) // 86400 * 86400 - _CHINA_OFFSET
    return china_day_of(iat), start, start + 86400


_CHINA_OFFSET = 8 * 3600


# -- the projection ------------------------------------------------------------------------------


class OfflineProjection:
    """Keeps ``offline_heads`` and ``offline_records`` from the three Offline* events (the
    redemption itself, for a recorded one, is ``RedemptionsProjection``'s).

    Rows are kept in memory by :meth:`apply` and written by :meth:`flush`: one multi-row
    insert of the records and one head update per device key, instead of two statements per
    entry. The only reader of these tables inside the writer's transaction is the sync
    command, which first writes what is pending on its connection (:func:`flush_pending`):
    a sync in the same batch as another of the same station sees its rows."""

    name = "offline"
    tables = (offline_heads, offline_records)

    def __init__(self) -> None:
        self._rows: list[tuple[Any, ...]] = []
        self._heads: dict[str, dict[str, Any]] = {}

    def apply(self, conn: Connection, entry: Entry) -> None:
        if entry.type not in (RECORDED_TYPE, CONFLICTED_TYPE, REFUSED_TYPE):
            return
        b = entry.body
        try:
            station, kid, seq, record = b["station"], b["kid"], b["seq"], b["record"]
        except KeyError:
            return  # only a direct append can lack them: deterministic, a rebuild agrees
        refused = entry.type == REFUSED_TYPE
        self._rows.append(  # in _INSERT_RECORD_SQL's order
            (
                entry.index,
                station,
                kid,
                seq,
                record,
                REFUSED if refused else (ACCEPTED if entry.type == RECORDED_TYPE else CONFLICT),
                b.get("reason"),
                None if refused else b.get("member"),
                None if refused else b.get("program"),
                None if refused else b.get("quantity"),
                None if refused else b.get("value"),
                None if refused else b.get("offline_at"),
                entry.time,
            )
        )
        conn.info[_PENDING] = self
        if refused or not isinstance(seq, int) or not isinstance(kid, str):
            return
        best = self._heads.get(kid)
        if best is None or best["h_seq"] < seq:  # the first of the highest seq, as in order
            self._heads[kid] = {
                "h_kid": kid,
                "h_station": station,
                "h_seq": seq,
                "h_hash": record,
                "h_iat": b.get("offline_at", 0),
                "h_entry": entry.index,
            }

    def flush(self, conn: Connection) -> None:
        rows, heads = self._rows, self._heads
        self._rows, self._heads = [], {}
        if rows:  # the driver's own executemany: SQLAlchemy's per-row work cost more
            conn.exec_driver_sql(driver_sql(conn, _INSERT_RECORD_SQL), rows)
        for kid, params in sorted(heads.items()):
            if conn.execute(_ADVANCE, params).rowcount == 0 and (
                conn.execute(_HEAD, {"kid": kid}).first() is None
            ):
                conn.execute(
                    insert(offline_heads).values(
                        kid=kid,
                        station_id=params["h_station"],
                        seq=params["h_seq"],
                        hash=params["h_hash"],
                        iat=params["h_iat"],
                        entry=params["h_entry"],
                    )
                )

    def reset(self) -> None:
        self._rows, self._heads = [], {}


_PENDING = "unionledger.offline.pending"
"""``Connection.info`` key: the :class:`OfflineProjection` holding rows not yet written."""


def flush_pending(conn: Connection) -> None:
    """Write the offline rows an :class:`OfflineProjection` keeps for ``conn``'s batch, so that
    reading ``offline_records`` and ``offline_heads`` through ``conn`` sees every event
    appended so far (call it before reading them inside the writer)."""
    pending = conn.info.get(_PENDING)
    if isinstance(pending, OfflineProjection):
        pending.flush(conn)


# -- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Head:
    """The last synced record of one device key's chain."""

    kid: str
    seq: int
    hash: str
    iat: int
    entry: int


def heads_of(conn: Connection, station_id: str) -> list[Head]:
    rows = conn.execute(
        select(offline_heads)
        .where(offline_heads.c.station_id == station_id)
        .order_by(offline_heads.c.kid)
    )
    return [Head(x.kid, int(x.seq), x.hash, int(x.iat), x.entry) for x in rows]


def device_keys(conn: Connection, station_id: str) -> dict[str, keys.KeyRecord]:
    """kid → key record of every device key ever registered to the station (revoked ones too,
    with their revocation time): what :func:`verifier.station.verify_record` takes."""
    out: dict[str, keys.KeyRecord] = {}
    rows = conn.execute(select(station_keys).where(station_keys.c.station_id == station_id))
    for k in rows:
        public = keys.PublicKey.from_bytes(keys.b64url_decode(k.x))
        out[k.kid] = keys.KeyRecord(
            kid=public.key_id,
            role=keys.Role.STATION,
            public_key=public,
            not_before=parse_entry_time(k.registered_at),
            scope=station_id,
            revoked_at=None if k.revoked_at is None else parse_entry_time(k.revoked_at),
            revocation_reason=k.revoke_reason if k.revoked_at is not None else None,
        )
    return out


@dataclass(frozen=True, slots=True)
class ReviewRow:
    """A conflict or a refused record, for review."""

    entry: int
    station_id: str
    union: str
    kid: str | None
    seq: int | None
    record: str
    status: str
    reason: str | None
    member_id: str | None
    program_id: str | None
    quantity: int | None
    value: int | None
    offline_at: int | None
    at: str


def for_review(
    conn: Connection,
    actor: Actor,
    *,
    union: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[ReviewRow]:
    """Conflicts and refused records of the stations run by ``union``'s subtree (default: the
    official's scope; auditors: every station), oldest first, after entry ``after``.

    Raises:
        Forbidden: not an official or an auditor.
        unions.UnknownUnion: ``union`` is missing or outside the official's subtree.
        ValueError: ``limit`` outside 1..1000.
    """
    from ledger.stations import stations  # noqa: PLC0415

    if not 1 <= limit <= PAGE_MAX:
        raise ValueError(f"limit must be 1..{PAGE_MAX}")
    if actor.role is Role.OFFICIAL and actor.scope is not None:
        union = actor.scope if union is None else union
    elif actor.role not in (Role.SYSTEM, Role.AUDITOR):
        raise Forbidden(f"{actor.role.value} may not review offline records")
    o = offline_records
    query = (
        select(o, stations.c.union_code)
        .join(stations, stations.c.station_id == o.c.station_id)
        .where(o.c.status.in_((CONFLICT, REFUSED)))
    )
    if union is not None:
        root = unions.visible(conn, actor, union)
        if root is None:
            raise unions.UnknownUnion(f"no union {union!r}")
        u = unions.unions
        query = query.join(u, u.c.code == stations.c.union_code).where(
            u.c.path >= root.path, u.c.path < unions.path_upper(root.path)
        )
    if after is not None:
        query = query.where(o.c.entry > after)
    rows = conn.execute(query.order_by(o.c.entry).limit(limit)).all()
    return [
        ReviewRow(
            x.entry,
            x.station_id,
            x.union_code,
            x.kid,
            x.seq,
            x.record,
            x.status,
            x.reason,
            x.member_id,
            x.program_id,
            x.quantity,
            None if x.value is None else int(x.value),
            x.offline_at,
            x.at,
        )
        for x in rows
    ]


# -- the command -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncItem:
    """The answer for one record of a sync request (``index``: its place in the request)."""

    index: int
    seq: int | None
    kid: str | None
    record: str | None
    status: str
    reason: str | None
    entry: int | None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class SyncResult:
    items: tuple[SyncItem, ...]
    heads: tuple[Head, ...]
    server_time: datetime

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys((ACCEPTED, CONFLICT, REFUSED, DUPLICATE), 0)
        for item in self.items:
            out[item.status] += 1
        return out


def _peek(token: object) -> tuple[str | None, int | None]:
    """A record's kid and seq, read WITHOUT verifying anything (to group and to label)."""
    if not isinstance(token, str) or len(token) > 4096:
        return None, None
    parts = token.split(".")
    if len(parts) != 3:
        return None, None
    out: list[Any] = [None, None]
    for i, (part, name) in enumerate(((parts[0], "kid"), (parts[1], "seq"))):
        try:
            value = json.loads(keys.b64url_decode(part)).get(name)
        except (ValueError, AttributeError):
            continue
        if (i == 0 and isinstance(value, str) and len(value) == 43) or (
            i == 1 and type(value) is int
        ):
            out[i] = value
    return out[0], out[1]


def _hash(token: object) -> str | None:
    return record_hash(token) if isinstance(token, str) and token.isascii() else None


def _digest(token: object) -> str:
    """The record hash, or for a token that is not ASCII text the SHA-256 of its UTF-8."""
    digest = _hash(token)
    if digest is not None:
        return digest
    text = token if isinstance(token, str) else repr(token)
    return keys.b64url_encode(hashlib.sha256(text.encode("utf-8", "replace")).digest())


# The request's bulk reads, as the driver's own statements (``?`` marks filled in per chunk;
# the table and column names are constants): SQLAlchemy's expanding IN cost more than them.
_MEMBERS_SQL = (
    "SELECT member_id, id_hash, union_code, status, joined_at, since, left_at, updated_at"
    " FROM members WHERE member_id IN ({})"
)
_HISTORY_SQL = (
    "SELECT member_id, at, event, union_code FROM member_history WHERE member_id IN ({})"
    " ORDER BY member_id, seq"
)
_USED_SQL = "SELECT presentation FROM redemptions WHERE presentation IN ({})"


class _Sync:
    """One sync request inside the writer's transaction.

    Everything a record's judgement reads is read once per request and then kept in memory,
    with this request's own appends folded in as they are made (nothing else appends during
    a command): the station and its device keys, the chain heads, each program's row and
    versions, the members of the request with their history (their status and union at any
    instant), the presentations already redeemed, the quota used per (member, program,
    period), the budget used per program, and the offline limits' counters per device key
    and China day. So judging a record is dict lookups; what is left per record is its
    append (the event and the projections' rows)."""

    def __init__(
        self, tx: Tx, station: Actor, members: m.Members, presigned: Presigned | None
    ) -> None:
        self.tx, self.conn, self.members = tx, tx.conn, members
        assert station.scope is not None
        self.station_id = station.scope
        self.actor = station.ledger_actor
        place = get_station(self.conn, self.station_id)
        if place is None:
            raise UnknownStation(f"no station {self.station_id!r}")
        self.place = place
        self.union = place.union_code
        self.keys = device_keys(self.conn, self.station_id)
        self.presigned = presigned
        self.heads = {h.kid: h for h in heads_of(self.conn, self.station_id)}
        self.policies: dict[tuple[str, int], OfflinePolicy | StationCacheError] = {}
        self.units: dict[tuple[str, str, str, str], int] = {}
        """(kid, member, program, China day) → offline units accepted (this run included)."""
        self.values: dict[tuple[str, str, str], int] = {}
        """(kid, program, China day) → offline value accepted (this run included)."""
        self.device_values: dict[tuple[str, str], int] = {}
        """(kid, China day) → offline value accepted, all programs (this run included)."""
        self.days: set[tuple[str, str]] = set()
        """(kid, China day) whose accepted offline records are loaded into the three above."""
        self.ceilings = ceiling_history(self.conn, self.station_id)
        """(entry time, daily_ceiling) of the station, oldest first."""
        self.programs: dict[str, tuple[p.ProgramRow | None, list[p.Version]]] = {}
        self.allows: dict[tuple[str, int], bool] = {}
        self.within: dict[tuple[str, str], bool] = {}
        self.people: dict[str, tuple[m.MemberRow | None, list[tuple[str, str, str]]]] = {}
        """member → (row, history: (entry time, event, union), oldest first)."""
        self.groups: dict[tuple[str, str], frozenset[str]] = {}
        self.used_presentations: set[str] = set()
        """hex SHA-256 of every presentation redeemed (the request's, as loaded + appended)."""
        self.quota: dict[tuple[str, str, str], int] = {}
        """(member, program, period) → units used, loaded per (program, period)."""
        self.quota_loaded: set[tuple[str, str]] = set()
        self.budget: dict[str, dict[str, int]] = {}
        self.no_stack: dict[str, bool] = {}
        self.batch_members: list[str] = []
        self.refusals: dict[tuple[str, str], int] = {}
        """(record hash, reason) → the entry of a refusal this request appended."""

    # -- loading, once per request ---------------------------------------------------------------

    def prefetch(self, records: Sequence[VerifiedRecord]) -> None:
        """Read what judging ``records`` needs that can be read in bulk: the members and their
        history, and which presentations were redeemed already."""
        ids = sorted({rec.claims.member for rec in records})
        self.batch_members = ids
        conn = self.conn
        for chunk in _chunks(ids):
            marks = ", ".join(["?"] * len(chunk))
            for row in driver_execute(conn, _MEMBERS_SQL.format(marks), chunk).fetchall():
                self.people[row[0]] = (m.MemberRow(*row), [])
            history = driver_execute(conn, _HISTORY_SQL.format(marks), chunk).fetchall()
            for member_id, at, event, union_code in history:
                if member_id in self.people:
                    self.people[member_id][1].append((at, event, union_code))
        for member in ids:
            self.people.setdefault(member, (None, []))
        wanted = sorted({keys.b64url_decode(rec.claims.presentation).hex() for rec in records})
        for chunk in _chunks(wanted):
            marks = ", ".join(["?"] * len(chunk))
            found = driver_execute(conn, _USED_SQL.format(marks), chunk).fetchall()
            self.used_presentations.update(x[0] for x in found)

    def program(self, program: str) -> tuple[p.ProgramRow | None, list[p.Version]]:
        if program not in self.programs:
            row = p.get_program(self.conn, program)
            self.programs[program] = (row, [] if row is None else p.versions(self.conn, program))
        return self.programs[program]

    def version_at(self, program: str, stamp: str) -> p.Version | None:
        """As :func:`ledger.programs.version_at`: the highest version in force at ``stamp``."""
        found = None
        for version in self.program(program)[1]:  # by version, ascending
            if version.effective <= stamp:
                found = version
        return found

    def is_within(self, ancestor: str, code: str) -> bool:
        key = (ancestor, code)
        if key not in self.within:
            self.within[key] = unions.is_within(self.conn, ancestor, code)
        return self.within[key]

    def member_at(self, member_id: str, stamp: str) -> tuple[m.MemberRow, str] | None:
        """The member and their union at ``stamp`` when they were an active member then (their
        last membership event at or before it is a join, an approval, a transfer or a
        re-join), else None: one who left after ``stamp`` was a member then; one who joined
        after it was not."""
        row, history = self.people.get(member_id) or (None, [])
        if row is None:
            return None
        last = None
        for at, event, union in history:  # entry order: times never go back
            if at > stamp:
                break
            last = (event, union)
        if last is None or last[0] not in _ACTIVE_EVENTS:
            return None
        return row, last[1]

    def groups_on(self, member_id: str, day: str) -> frozenset[str]:
        key = (member_id, day)
        if key not in self.groups:
            self.groups[key] = frozenset(self.members.active_groups(self.conn, member_id, day))
        return self.groups[key]

    def quota_used(self, member: str, program: str, period: str) -> int:
        if (program, period) not in self.quota_loaded:
            self.quota_loaded.add((program, period))
            r.flush_pending(self.conn)
            q = r.quota_usage
            for chunk in _chunks(self.batch_members):
                for x in self.conn.execute(
                    select(q.c.member_id, q.c.used).where(
                        q.c.program_id == program, q.c.period == period, q.c.member_id.in_(chunk)
                    )
                ):
                    self.quota[(x.member_id, program, period)] = int(x.used)
            for other in self.batch_members:  # no row: nothing used yet
                self.quota.setdefault((other, program, period), 0)
        key = (member, program, period)
        if key not in self.quota:  # a member outside the request's (cannot happen): read it
            self.quota[key] = r.quota_used(self.conn, member, program, period)
        return self.quota[key]

    def budget_used(self, program: str) -> dict[str, int]:
        if program not in self.budget:
            r.flush_pending(self.conn)  # a program's first budgeted version may come late
            self.budget[program] = r.budget_used(self.conn, program)
        return self.budget[program]

    def stacks_freely(self, program: str) -> bool:
        """Whether no version of any program ever declared not stacking with ``program``
        (then :func:`ledger.programs.not_stacking` is empty at any time: nothing to read)."""
        if program not in self.no_stack:
            pairs = p.program_no_stack
            self.no_stack[program] = (
                self.conn.execute(
                    select(pairs.c.other).where(pairs.c.program_id == program).limit(1)
                ).first()
                is None
            )
        return self.no_stack[program]

    # -- judging ---------------------------------------------------------------------------------

    def policy_of(self, program: str, version: p.Version) -> OfflinePolicy:
        """The offline policy of ``version``.

        Raises:
            OfflineNotAllowed: that version does not allow offline redemption.
        """
        key = (program, version.version)
        if key not in self.policies:
            try:
                self.policies[key] = OfflinePolicy.from_rules(
                    program, version.version, version.rules.to_json()
                )
            except StationCacheError as e:  # no station could have been provisioned with it
                self.policies[key] = e
        policy = self.policies[key]
        if isinstance(policy, StationCacheError):
            raise OfflineNotAllowed(f"program {program!r} cannot be redeemed offline: {policy}")
        if not policy.allowed:
            raise OfflineNotAllowed(
                f"{policy.name} (version {policy.version}) is not redeemable offline"
            )
        return policy

    def judge_at(
        self, member_id: str, program: str, quantity: int, at: datetime, stamp: str
    ) -> r.Judged:
        """:func:`ledger.redemptions.judge_at`, from what this request holds in memory, except
        that the member's status and union are those at ``at`` (the record's time, ``stamp``
        as an entry time), not now.

        Raises:
            ProgramNotOpen, NotRedeemableHere, BadQuantity, NotAMember, NotEligible,
            QuotaUsed, NotStackable, BudgetExhausted.
        """
        row = self.program(program)[0]
        version = None if row is None else self.version_at(program, stamp)
        if row is None or version is None:
            raise r.ProgramNotOpen(f"no program {program!r} at {stamp}")
        rules = version.rules
        closed = row.status != "open" and (row.closed_at is None or row.closed_at <= stamp)
        day = at.astimezone(p.CHINA).date()
        if closed or not rules.runs_on(day):
            raise r.ProgramNotOpen(
                "the program was not open then",
                opens=rules.start.isoformat(),
                closes=rules.until.isoformat(),
                status=row.status,
            )
        place = self.place
        if place.closed_at is not None and place.closed_at <= stamp:
            raise r.NotRedeemableHere("this station is not registered or was closed")
        allowed = self.allows.get((program, version.version))
        if allowed is None:
            allowed = r.station_allows(self.conn, rules, row.owner, place)
            self.allows[(program, version.version)] = allowed
        if not allowed:
            raise r.NotRedeemableHere("this program cannot be redeemed at this station")
        if type(quantity) is not int or not 1 <= quantity <= rules.max_quantity:
            raise r.BadQuantity(f"the quantity is 1 to {rules.max_quantity}")
        found = self.member_at(member_id, stamp)
        if found is None:
            raise r.NotAMember("not an active member at the record's time")
        member, home = found
        self.check_eligible(rules, row.owner, member, home, at, day)
        period = rules.period_key(at)
        already = self.quota_used(member_id, program, period)
        if already + quantity > rules.quota_count:
            raise r.QuotaUsed(
                f"the quota is used: {already} of {rules.quota_count} this period",
                used=already,
                quota=rules.quota_count,
                renews_at=None
                if rules.quota_per is p.Per.PROGRAM
                else p.format_time(rules.period_end(at)),
            )
        if not self.stacks_freely(program):
            r.flush_pending(self.conn)  # _stacked reads redemptions: this command's too
            other = r._stacked(self.conn, member_id, program, rules, at)
            if other is not None:
                raise r.NotStackable(f"the member already received {other}, which does not stack")
        value = rules.unit_value * quantity
        funding = self.check_budget(rules, row.owner, home, program, value)
        return r.Judged(version.version, period, value, funding, place.union_code, home)

    def check_eligible(  # noqa: PLR0917  (the record's facts, as judge_at holds them)
        self, rules: p.Rules, owner: str, member: m.MemberRow, home: str, at: datetime, day: date
    ) -> None:
        """``ledger.redemptions``' eligibility at ``at`` (China date ``day``), with the
        member's union then.

        Raises:
            NotEligible.
        """
        if not self.is_within(owner, home):
            raise r.NotEligible("the member's union is outside the program's scope")
        if rules.home_subtree is not None and not self.is_within(rules.home_subtree, home):
            raise r.NotEligible("the program is for members of another union")
        if rules.min_tenure_days is not None:
            joined = datetime.fromisoformat(member.joined_at.replace("Z", "+00:00"))
            if at - joined < timedelta(days=rules.min_tenure_days):
                raise r.NotEligible(f"the program needs {rules.min_tenure_days} days of membership")
        if rules.groups_any and not self.groups_on(member.member_id, day.isoformat()) & set(
            rules.groups_any
        ):
            raise r.NotEligible("the program is for members of other groups")

    def check_budget(self, rules: p.Rules, owner: str, home: str, program: str, value: int) -> str:
        """The funding union (the first allocation whose subtree holds ``home``, else the
        owner) and ``ledger.redemptions``' budget check, on this request's tally.

        Raises:
            BudgetExhausted.
        """
        funding = next((u for u in rules.allocations if self.is_within(u, home)), owner)
        if rules.budget is None:
            return funding
        used = self.budget_used(program)
        if funding in rules.allocations:
            spent, limit = used.get(funding, 0), rules.allocations[funding]
        else:  # the owner pays for everyone outside the allocations
            spent = sum(v for u, v in used.items() if u not in rules.allocations)
            limit = rules.budget - sum(rules.allocations.values())
        if spent + value > limit:
            raise r.BudgetExhausted(
                "the budget is spent", funding_union=funding, left=limit - spent
            )
        return funding

    def limit_keys(
        self, kid: str, member: str, program: str, iat: int
    ) -> tuple[tuple[str, str, str, str], tuple[str, str, str]]:
        """The counters' keys of a record; the device's accepted offline records of that
        China day are loaded (one query) on first use."""
        day, start, end = _china_day_bounds(iat)
        if (kid, day) not in self.days:
            self.days.add((kid, day))
            o = offline_records
            rows = self.conn.execute(
                select(
                    o.c.member_id,
                    o.c.program_id,
                    func.coalesce(func.sum(o.c.quantity), 0),
                    func.coalesce(func.sum(o.c.value), 0),
                )
                .where(
                    o.c.status == ACCEPTED,
                    o.c.station_id == self.station_id,
                    o.c.kid == kid,
                    o.c.offline_at >= start,
                    o.c.offline_at < end,
                )
                .group_by(o.c.member_id, o.c.program_id)
            )
            total = 0
            for x in rows:
                self.units[(kid, x[0], x[1], day)] = int(x[2])
                value_key = (kid, x[1], day)
                self.values[value_key] = self.values.get(value_key, 0) + int(x[3])
                total += int(x[3])
            self.device_values[(kid, day)] = total
        return (kid, member, program, day), (kid, program, day)

    def ceiling_at(self, stamp: str) -> int | None:
        """The station's ``daily_ceiling`` in force at ``stamp`` (None: none)."""
        found = None
        for at, ceiling in self.ceilings:  # entry order: times never go back
            if at > stamp:
                break
            found = ceiling
        return found

    def check_limits(
        self, record: VerifiedRecord, policy: OfflinePolicy, value: int, stamp: str
    ) -> tuple[tuple[str, str, str, str], tuple[str, str, str]]:
        """Section 5's limits for one record judged acceptable (docs/station.md): the member's
        units, the program's value and the station's ``daily_ceiling`` in force at ``stamp``
        (the record's time), per device key and China day.

        Raises:
            OfflineMemberLimit, OfflineStationCeiling.
        """
        c = record.claims
        units_key, value_key = self.limit_keys(record.kid, c.member, c.program, c.iat)
        units, limit = self.units.get(units_key, 0), policy.member_daily_limit
        if units + c.quantity > limit:
            raise OfflineMemberLimit(
                f"offline, a member may get {limit} of {policy.name} a day at one device:"
                f" {units} accepted already on {units_key[3]}"
            )
        spent, ceiling = self.values.get(value_key, 0), policy.station_daily_value
        if spent + value > ceiling:
            raise OfflineStationCeiling(
                f"the device's offline limit for {policy.name} on {value_key[2]} is {ceiling}"
                f" fen: {spent} accepted already, this record {value}"
            )
        if self.ceilings:
            station_ceiling = self.ceiling_at(stamp)
            total = self.device_values.get((record.kid, value_key[2]), 0)
            if station_ceiling is not None and total + value > station_ceiling:
                raise OfflineStationCeiling(
                    f"the station's daily_ceiling of offline value (all programs) on"
                    f" {value_key[2]} is {station_ceiling} fen per device: {total} accepted"
                    f" already, this record {value}"
                )
        return units_key, value_key

    def refuse(
        self, index: int, token: object, kid: str | None, seq: int | None, e: StationRecordError
    ) -> SyncItem:
        digest = _digest(token)
        code, message = e.code, str(e)[:200]
        earlier = self.refusals.get((digest, code))
        if earlier is None:
            earlier = self.conn.execute(
                select(offline_records.c.entry).where(
                    offline_records.c.record == digest,
                    offline_records.c.status == REFUSED,
                    offline_records.c.reason == code,
                )
            ).scalar()
        if earlier is None:
            earlier = self.tx.append(
                REFUSED_TYPE,
                self.actor,
                {
                    "station": self.station_id,
                    "kid": kid,
                    "seq": seq,
                    "record": digest,
                    "reason": code,
                    "message": message,
                },
            ).index
            self.refusals[(digest, code)] = earlier  # its row is written at the batch's end
        return SyncItem(index, seq, kid, digest, REFUSED, code, earlier, message)

    def judge(self, index: int, record: VerifiedRecord) -> SyncItem:
        c = record.claims
        facts: dict[str, Any] = {
            "program": c.program,
            "member": c.member,
            "station": self.station_id,
            "quantity": c.quantity,
            "presentation": c.presentation,
            "seq": c.seq,
            "kid": record.kid,
            "record": record.hash,
            "offline_at": c.iat,
        }
        at = datetime.fromtimestamp(c.iat, UTC)
        presentation = keys.b64url_decode(c.presentation).hex()
        try:
            if presentation in self.used_presentations:
                raise r.PresentationReplayed("this QR presentation was redeemed already")
            stamp = seconds_entry_time(c.iat)
            version = self.version_at(c.program, stamp)
            policy = None if version is None else self.policy_of(c.program, version)
            judged = self.judge_at(c.member, c.program, c.quantity, at, stamp)
            counted = (
                None if policy is None else self.check_limits(record, policy, judged.value, stamp)
            )
        except r.Refused as e:
            reason = REPLAYED if isinstance(e, r.PresentationReplayed) else e.code
            message = str(e)[:200]
            body = {
                **facts,
                "version": c.version,
                "value": c.value,
                "operating": self.union,
                "home": c.home,
                "reason": reason,
                "message": message,
            }
            entry = self.tx.append(CONFLICTED_TYPE, self.actor, body)
            return SyncItem(
                index, c.seq, record.kid, record.hash, CONFLICT, reason, entry.index, message
            )
        body = {
            **facts,
            "version": judged.version,
            "value": judged.value,
            "funding": judged.funding,
            "operating": judged.operating,
            "home": judged.home,
            "period": judged.period,
            "idempotency": f"offline:{record.kid}:{c.seq}",
        }
        entry = self.tx.append(RECORDED_TYPE, self.actor, body)
        # what the projections just wrote, folded into this request's view
        self.used_presentations.add(presentation)
        quota_key = (c.member, c.program, judged.period)
        self.quota[quota_key] = self.quota_used(*quota_key) + c.quantity
        if judged.value and c.program in self.budget:
            spent = self.budget[c.program]
            spent[judged.funding] = spent.get(judged.funding, 0) + judged.value
        if counted is not None:
            self.units[counted[0]] = self.units.get(counted[0], 0) + c.quantity
            self.values[counted[1]] = self.values.get(counted[1], 0) + judged.value
            day_key = (record.kid, counted[1][2])
            self.device_values[day_key] = self.device_values.get(day_key, 0) + judged.value
        return SyncItem(index, c.seq, record.kid, record.hash, ACCEPTED, None, entry.index)

    def verify(self, kid: str | None, group: list[tuple[int, str]]) -> BatchResult:
        """Verify one device key's records (in request order) after its head."""
        head = None if kid is None else self.heads.get(kid)
        return verify_batch(
            [t for _, t in group],
            0 if head is None else head.seq,
            GENESIS if head is None else head.hash,
            station_keys=self.keys,
            expected_station=self.station_id,
            now=self.tx.now,
            previous_time=None if head is None else head.iat,
            kid=kid,
            presigned=self.presigned,
        )

    def chain(
        self, kid: str | None, group: list[tuple[int, str]], result: BatchResult
    ) -> list[SyncItem]:
        """Judge one device key's verified records, then answer the rest of its group."""
        out = [self.judge(group[i][0], rec) for i, rec in enumerate(result.accepted)]
        failure = result.failure
        if failure is None:
            return out
        index, token = group[failure.index]
        out.append(self.refuse(index, token, kid, failure.seq, failure.error))
        for index, token in group[failure.index + 1 :]:
            _, seq = _peek(token)
            try:
                verify_record(
                    token,
                    self.keys,
                    expected_station=self.station_id,
                    now=self.tx.now,
                    presigned=self.presigned,
                )
            except StationRecordError as e:  # wrong on its own: recorded (a stolen device)
                out.append(self.refuse(index, token, kid, seq, e))
                continue
            out.append(
                SyncItem(
                    index,
                    seq,
                    kid,
                    _hash(token),
                    REFUSED,
                    NOT_JUDGED,
                    None,
                    f"follows refused seq {failure.seq} of this device: resend it after mending",
                )
            )
        return out


_ACTIVE_EVENTS = frozenset(
    ("MemberEnrolled", "MemberApproved", "MemberTransferred", "MemberRejoined")
)
"""The membership events after which a member is active (members.py's projection)."""


def _chunks(items: Sequence[str], size: int = 500) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def check_ahead(conn: Connection, station_id: str, records: Sequence[object]) -> Presigned:
    """The records' form and signatures checked BEFORE the single writer runs
    (:func:`verifier.station.check_signatures`, with the device keys as ``conn`` reads them):
    pass the answer to :func:`sync` as ``presigned``. In the writer, each record is still
    checked against the keys as they stand then (a key revoked meanwhile refuses it); a record
    whose key was not readable here is verified in full there."""
    return check_signatures(records, device_keys(conn, station_id))


def sync(
    tx: Tx,
    station: Actor,
    records: Sequence[str],
    *,
    members: m.Members,
    presigned: Presigned | None = None,
) -> SyncResult:
    """Verify, judge and record a station's offline records (module docstring). Every record
    sent gets exactly one answer, in request order. ``presigned``: :func:`check_ahead`'s
    answer (signatures checked outside the writer), or None to check them all here.

    Raises:
        Forbidden: not a station. Invalid: more than :data:`MAX_BATCH` records.
        UnknownStation: the station is not registered.
    """
    if station.role is not Role.STATION or station.scope is None:
        raise Forbidden("only a station syncs its offline records")
    if len(records) > MAX_BATCH:
        raise Invalid(f"at most {MAX_BATCH} records per sync request")
    conn = tx.conn
    flush_pending(conn)  # an earlier command of this batch may have appended offline events
    run = _Sync(tx, station, members, presigned)
    hashes = [
        presigned[t].hash if presigned is not None and t in presigned else _hash(t) for t in records
    ]
    wanted = {h for h in hashes if h is not None}
    synced: dict[str, tuple[int, int | None, str | None]] = {}
    for chunk in _chunks(sorted(wanted)):
        rows = conn.execute(
            select(
                offline_records.c.record,
                offline_records.c.entry,
                offline_records.c.seq,
                offline_records.c.kid,
            ).where(
                offline_records.c.record.in_(chunk),
                offline_records.c.status.in_((ACCEPTED, CONFLICT)),
                offline_records.c.station_id == run.station_id,
            )
        )
        synced.update({x.record: (x.entry, x.seq, x.kid) for x in rows})
    answers: dict[int, SyncItem] = {}
    first_of: dict[str, int] = {}
    repeats: list[tuple[int, int]] = []
    groups: dict[str | None, list[tuple[int, str]]] = {}
    for index, (token, digest) in enumerate(zip(records, hashes, strict=True)):
        if digest is not None and digest in synced:
            entry, seq, kid = synced[digest]
            answers[index] = SyncItem(index, seq, kid, digest, DUPLICATE, None, entry)
            continue
        if digest is not None and digest in first_of:
            repeats.append((index, first_of[digest]))
            continue
        if digest is not None:
            first_of[digest] = index
        checked = None if presigned is None else presigned.get(token)
        kid = checked.kid if checked is not None else _peek(token)[0]
        groups.setdefault(kid, []).append((index, token))
    verified = {kid: run.verify(kid, group) for kid, group in groups.items()}
    run.prefetch([rec for result in verified.values() for rec in result.accepted])
    for kid, group in groups.items():
        for item in run.chain(kid, group, verified[kid]):
            answers[item.index] = item
    for index, first in repeats:  # the same record twice in one request
        earlier = answers[first]
        status = DUPLICATE if earlier.status in (ACCEPTED, CONFLICT) else earlier.status
        answers[index] = SyncItem(
            index, earlier.seq, earlier.kid, earlier.record, status, earlier.reason, earlier.entry
        )
    items = tuple(answers[i] for i in range(len(records)))
    flush_pending(conn)
    return SyncResult(items, tuple(heads_of(conn, run.station_id)), tx.now)


# -- provisioning ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Provisioned:
    """A program redeemable at a station now, as ``StationCache.with_programs`` takes it."""

    program: str
    version: int
    rules: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"program": self.program, "version": self.version, "rules": self.rules}


def redeemable_at(conn: Connection, station_id: str, now: datetime) -> list[Provisioned]:
    """The open programs whose version in force at ``now`` runs today (China time) and may be
    redeemed at the station (its ``where``, within the owner's or ``where.subtree``), by id."""
    from ledger.domain import SYSTEM  # noqa: PLC0415

    place = get_station(conn, station_id)
    if place is None or not place.active:
        return []
    stamp = p.format_time(now)
    today = now.astimezone(p.CHINA).date()
    out = []
    for row in p.list_programs(conn, SYSTEM, status="open"):
        version = p.version_at(conn, row.program_id, stamp)
        if version is None or not version.rules.runs_on(today):
            continue
        if not r.station_allows(conn, version.rules, row.owner, place):
            continue
        out.append(Provisioned(row.program_id, version.version, version.rules.to_json()))
    return out
