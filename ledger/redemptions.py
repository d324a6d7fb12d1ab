"""Redemption (福利核销): a station redeems a program for a member, exactly once, within quota,
budget and stacking rules; and reversals.

The station sends the member's QR presentation (verified before the command, with the
verifier's pure code), the program, a quantity and an idempotency key. The command, run by the
sequencer in the batch transaction, judges at that instant, in this order (the first failure
is the refusal, a specific problem type a station can show a person):

1. the same station and idempotency key: the earlier redemption is answered again (nothing is
   appended); with a different program, quantity or presentation: ``idempotency-conflict``;
2. the presentation was not used before (``presentation-replayed``), its credential is the
   member's current one, not revoked (``credential-revoked``: the authoritative online check);
3. the program exists and is open today (``program-not-open``), the station is active and may
   redeem it (``not-redeemable-here``), the quantity is 1..max (``invalid-quantity``);
4. the member is an active member (``not-a-member``) whose home union is in the owner's subtree
   and who meets a targeted program's rule on their groups, tenure and union at this instant
   (``not-eligible``);
5. the quota of the current period (``quota-used``, with when it renews);
6. stacking: no redemption of a program that does not stack with this one in its period
   (``not-stackable``);
7. the budget of the funding union (``budget-exhausted``).

What checks 1, 2, 4 and 5 read from the tables (the key's and the presentation's redemptions,
the credential, the member, the quota used) is read in one statement (``_JUDGE_SQL``); the
program, its versions, the station and the union tree come from the batch's memo.

Then one ``RedemptionRecorded`` is appended (event catalogue: docs/events.md): the program
and version, member, station, quantity, value (fen), the funding union, the station's
operating union, the member's home union, the quota period, the presentation's SHA-256 and the
idempotency key. Commands run one after another in the single writer (the sequencer, which
also excludes other processes through the database), so two stations racing for the last unit
get one success and one ``quota-used``.

``RedemptionReversed`` undoes one: within the reversal window (:data:`REVERSAL_WINDOW` by
default; ``UNIONLEDGER_REVERSAL_WINDOW_MINUTES`` for the server) the redeeming station or an
official may; after it only an official, with a reason. Quota and budget are restored.

Tables (projections): ``redemptions`` (one row per redemption, the entry index as its id),
``quota_usage`` (member, program, period → units) and ``budget_usage`` (program, funding
union → fen), kept in the same transaction as the events.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    String,
    Table,
    select,
    update,
)

from ledger import members as m
from ledger import programs as p
from ledger import unions
from ledger.db import driver_execute, driver_sql
from ledger.domain import SYSTEM, Actor, Conflict, DomainError, Forbidden, Invalid, NotFound, Role
from ledger.schema import projection_metadata
from ledger.sequencer import Tx
from verifier.credential import VerifiedPresentation
from verifier.entry import Entry, seconds_entry_time

REVERSAL_WINDOW = timedelta(minutes=30)
MAX_KEY = 128

redemptions = Table(
    "redemptions",
    projection_metadata,
    Column("redemption", Integer, primary_key=True, autoincrement=False),  # entry index
    Column("program_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("member_id", String(32), nullable=False),
    Column("station_id", String(64), nullable=False, index=True),
    Column("quantity", Integer, nullable=False),
    Column("value", BigInteger, nullable=False),
    Column("funding_union", String(32), nullable=False),
    Column("operating_union", String(32), nullable=False),
    Column("home_union", String(32), nullable=False),
    Column("period", String(16), nullable=False),
    Column("at", String(32), nullable=False),
    Column("presentation", String(64), nullable=False, unique=True),
    Column("idempotency", String(200), nullable=False, unique=True),
    Column("reversed_at", String(32), nullable=True),
    Column("reversal", Integer, nullable=True),
)
Index("ix_redemptions_member_program", redemptions.c.member_id, redemptions.c.program_id)

quota_usage = Table(
    "quota_usage",
    projection_metadata,
    Column("member_id", String(32), primary_key=True),
    Column("program_id", String(64), primary_key=True),
    Column("period", String(16), primary_key=True),
    Column("used", Integer, nullable=False),
)

budget_usage = Table(
    "budget_usage",
    projection_metadata,
    Column("program_id", String(64), primary_key=True),
    Column("funding_union", String(32), primary_key=True),
    Column("used", BigInteger, nullable=False),
)


# The reads of the hot path that no batch memo can hold, as the driver's own statements:
# SQLAlchemy's per-statement work cost more than executing them.
_USED_SQL = "SELECT used FROM quota_usage WHERE member_id = ? AND program_id = ? AND period = ?"
# What judging one online redemption reads, in ONE statement (each statement the writer runs
# hands the GIL to the process's HTTP thread and waits to get it back: with two servers four
# separate reads cost about 20 us of CPU each): the redemption holding the idempotency key,
# the one holding the presentation, whether the credential is current, the quota used in the
# period, and the member's row (NULLs when missing).
_JUDGE_SQL = (  # the column names are members.py's constants
    "SELECT (SELECT redemption FROM redemptions WHERE idempotency = ?),"  # noqa: S608
    " (SELECT redemption FROM redemptions WHERE presentation = ?),"
    " (SELECT 1 FROM credentials WHERE credential_hash = ? AND revoked_at IS NULL),"
    " (SELECT used FROM quota_usage WHERE member_id = ? AND program_id = ? AND period = ?), "
    + ", ".join(f"m.{c}" for c in m.MEMBER_COLUMNS)
    + " FROM (SELECT 1 AS one) AS o LEFT JOIN members AS m ON m.member_id = ?"
)
# Applied to every redemption: the driver's own statements, each built once (measured: the
# projection's SQLAlchemy statements took about 40% of an append of a RedemptionRecorded).
_INSERT_SQL = (
    "INSERT INTO redemptions (redemption, program_id, version, member_id, station_id, quantity,"
    " value, funding_union, operating_union, home_union, period, at, presentation, idempotency)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_QUOTA_SQL = (
    "INSERT INTO quota_usage (member_id, program_id, period, used) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (member_id, program_id, period) DO UPDATE SET used = quota_usage.used"
    " + excluded.used"
)
_BUDGET_SQL = (
    "INSERT INTO budget_usage (program_id, funding_union, used) VALUES (?, ?, ?)"
    " ON CONFLICT (program_id, funding_union) DO UPDATE SET used = budget_usage.used"
    " + excluded.used"
)


# -- refusals --------------------------------------------------------------------------------


class Refused(Conflict):
    """A redemption the rules refuse (nothing was written)."""

    code = "redemption-refused"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.extra = extra


class IdempotencyConflict(Refused):
    """The idempotency key was used for a different redemption."""

    code = "idempotency-conflict"


class PresentationReplayed(Refused):
    """This QR presentation was already used: ask the member to show a fresh code."""

    code = "presentation-replayed"


class PresentationRefused(Refused):
    """The QR presentation does not verify (expired, revoked, forged, stale proof...)."""

    code = "presentation-refused"
    status = 422


class CredentialRevoked(Refused):
    """The credential is not the member's current one: the app must fetch its new credential."""

    code = "credential-revoked"


class ProgramNotOpen(Refused):
    """The program is not open now (not started, ended or closed)."""

    code = "program-not-open"


class NotRedeemableHere(Refused):
    """This station may not redeem this program."""

    code = "not-redeemable-here"


class BadQuantity(Refused):
    """The quantity is not allowed by the program."""

    code = "invalid-quantity"
    status = 422


class NotAMember(Refused):
    """The person is not an active member (any more)."""

    code = "not-a-member"


class NotEligible(Refused):
    """The member does not meet the program's eligibility rule."""

    code = "not-eligible"


class QuotaUsed(Refused):
    """The member's quota for this period is used."""

    code = "quota-used"


class NotStackable(Refused):
    """The member already received a program that does not stack with this one."""

    code = "not-stackable"


class BudgetExhausted(Refused):
    """The program's budget, or the funding union's allocation, is spent."""

    code = "budget-exhausted"


class UnknownRedemption(NotFound):
    """No such redemption, or not visible to this actor."""

    code = "unknown-redemption"


class AlreadyReversed(Conflict):
    """The redemption was already reversed."""

    code = "already-reversed"


class ReversalWindowClosed(Forbidden):
    """Past the reversal window only an official may reverse, with a reason."""

    code = "reversal-window-closed"


# -- reading ---------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def budget_used(conn: Connection, program_id: str) -> dict[str, int]:
    rows = conn.execute(select(budget_usage).where(budget_usage.c.program_id == program_id))
    return {r.funding_union: int(r.used) for r in rows}


def quota_used(conn: Connection, member_id: str, program_id: str, period: str) -> int:
    row = driver_execute(conn, _USED_SQL, (member_id, program_id, period)).fetchone()
    return 0 if row is None else int(row[0])


@dataclass(frozen=True, slots=True)
class RedemptionRow:
    redemption: int
    program_id: str
    version: int
    member_id: str
    station_id: str
    quantity: int
    value: int
    funding_union: str
    operating_union: str
    home_union: str
    period: str
    at: str
    presentation: str
    idempotency: str
    reversed_at: str | None
    reversal: int | None


def _row(r: Any) -> RedemptionRow:
    return RedemptionRow(
        r.redemption,
        r.program_id,
        r.version,
        r.member_id,
        r.station_id,
        r.quantity,
        int(r.value),
        r.funding_union,
        r.operating_union,
        r.home_union,
        r.period,
        r.at,
        r.presentation,
        r.idempotency,
        r.reversed_at,
        r.reversal,
    )


def get_redemption(conn: Connection, redemption: int) -> RedemptionRow | None:
    row = conn.execute(select(redemptions).where(redemptions.c.redemption == redemption)).first()
    return None if row is None else _row(row)


def by_idempotency(conn: Connection, station_id: str, key: str) -> RedemptionRow | None:
    row = conn.execute(
        select(redemptions).where(redemptions.c.idempotency == _idempotency(station_id, key))
    ).first()
    return None if row is None else _row(row)


def history_of(conn: Connection, member_id: str, *, limit: int = 100) -> list[RedemptionRow]:
    rows = conn.execute(
        select(redemptions)
        .where(redemptions.c.member_id == member_id)
        .order_by(redemptions.c.redemption.desc())
        .limit(limit)
    )
    return [_row(r) for r in rows]


LIST_MAX = 100


def list_redemptions(
    conn: Connection,
    actor: Actor,
    *,
    union: str | None = None,
    station: str | None = None,
    before: int | None = None,
    limit: int = 20,
) -> list[RedemptionRow]:
    """Redemptions, newest first, before index ``before``, as :func:`visible_redemption` lets
    ``actor`` see them: a station its own; an official those whose funding, operating or home
    union lies in ``union``'s subtree (default: the official's scope); an auditor all (or
    ``union``'s subtree). ``station`` narrows to one station. For finding one to reverse.

    Raises:
        Forbidden: a member (their own history is ``history_of``).
        unions.UnknownUnion: ``union`` is unknown or outside the official's subtree.
        ValueError: ``limit`` outside 1..LIST_MAX.
    """
    if not 1 <= limit <= LIST_MAX:
        raise ValueError(f"limit must be 1..{LIST_MAX}")
    rd = redemptions.c
    query = select(redemptions)
    if actor.role is Role.STATION:
        station = actor.scope if station in (None, actor.scope) else ""  # another: nothing
        union = None
    elif actor.role is Role.OFFICIAL and actor.scope is not None:
        union = actor.scope if union is None else union
    elif actor.role not in (Role.AUDITOR, Role.SYSTEM):
        raise Forbidden(f"{actor.role.value} may not list redemptions")
    if union is not None:
        root = unions.visible(conn, actor, union)
        if root is None:
            raise unions.UnknownUnion(f"no union {union!r}")
        u = unions.unions.c
        codes = select(u.code).where(u.path >= root.path, u.path < unions.path_upper(root.path))
        query = query.where(
            rd.funding_union.in_(codes) | rd.operating_union.in_(codes) | rd.home_union.in_(codes)
        )
    if station is not None:
        query = query.where(rd.station_id == station)
    if before is not None:
        query = query.where(rd.redemption < before)
    rows = conn.execute(query.order_by(rd.redemption.desc()).limit(limit))
    return [_row(r) for r in rows]


def visible_redemption(conn: Connection, actor: Actor, redemption: int) -> RedemptionRow:
    """The redemption if the actor may see it: the member, the redeeming station, officials of
    the funding, operating or home union's chain, auditors.

    Raises:
        UnknownRedemption.
    """
    row = get_redemption(conn, redemption)
    if row is None:
        raise UnknownRedemption(f"no redemption {redemption}")
    role, scope = actor.role, actor.scope
    if role in (Role.AUDITOR, Role.SYSTEM):
        return row
    if role is Role.MEMBER and scope == row.member_id:
        return row
    if role is Role.STATION and scope == row.station_id:
        return row
    if role is Role.OFFICIAL and scope is not None:
        for code in (row.funding_union, row.operating_union, row.home_union):
            if unions.is_within(conn, scope, code):
                return row
    raise UnknownRedemption(f"no redemption {redemption}")


def _idempotency(station_id: str, key: str) -> str:
    return f"{station_id}\n{key}"


# -- projection --------------------------------------------------------------------------------


class RedemptionsProjection:
    """Keeps ``redemptions``, ``quota_usage`` and ``budget_usage``.

    An online ``RedemptionRecorded`` (one per command) is written as it is applied. The
    ``OfflineRedemptionRecorded`` of a sync (up to a thousand per command) are kept and
    written at the end of the command (:meth:`end_command`, called by the sequencer): the
    rows in one executemany, quota and budget once per key with the command's sum. Whatever
    is kept is written before this projection applies any other event, and before a reader
    inside the writer calls :func:`flush_pending`; so every command, and every event of a
    replay, sees the tables as if each row had been written at once."""

    name = "redemptions"
    tables = (redemptions, quota_usage, budget_usage)

    def __init__(self) -> None:
        self._rows: list[tuple[Any, ...]] = []
        self._quota: dict[tuple[str, str, str], int] = {}
        self._budget: dict[tuple[str, str], int] = {}

    def apply(self, conn: Connection, entry: Entry) -> None:
        body = entry.body
        type_ = entry.type
        if type_ == "OfflineRedemptionRecorded":  # synced (ledger/offline.py): kept
            # an offline redemption happened when the station handed it out
            self._rows.append(_insert_row(entry.index, body, offline_time(body["offline_at"])))
            key = (body["member"], body["program"], body["period"])
            self._quota[key] = self._quota.get(key, 0) + body["quantity"]
            spent = (body["program"], body["funding"])
            self._budget[spent] = self._budget.get(spent, 0) + body["value"]
            conn.info[_PENDING] = self
            return
        if self._rows:
            self.end_command(conn)  # in entry order: what follows may read them
        if type_ == "RedemptionRecorded":
            driver_execute(conn, _INSERT_SQL, _insert_row(entry.index, body, entry.time))
            self._usage(conn, body, +1)
        elif type_ == "RedemptionReversed":
            row = get_redemption(conn, body["redemption"])
            if row is None or row.reversed_at is not None:
                return  # the command refuses both; a foreign chain changes nothing here
            conn.execute(
                update(redemptions)
                .where(redemptions.c.redemption == row.redemption)
                .values(reversed_at=entry.time, reversal=entry.index)
            )
            self._usage(
                conn,
                {
                    "member": row.member_id,
                    "program": row.program_id,
                    "period": row.period,
                    "quantity": row.quantity,
                    "funding": row.funding_union,
                    "value": row.value,
                },
                -1,
            )

    @staticmethod
    def _usage(conn: Connection, body: Any, sign: int) -> None:
        driver_execute(
            conn,
            _QUOTA_SQL,
            (body["member"], body["program"], body["period"], sign * body["quantity"]),
        )
        driver_execute(conn, _BUDGET_SQL, (body["program"], body["funding"], sign * body["value"]))

    def end_command(self, conn: Connection) -> None:
        """Write the kept offline redemptions (the sequencer calls it after each command)."""
        rows, quota, budget = self._rows, self._quota, self._budget
        if not rows:
            return
        self._rows, self._quota, self._budget = [], {}, {}
        conn.info.pop(_PENDING, None)
        sql = functools.partial(driver_sql, conn)
        conn.exec_driver_sql(sql(_INSERT_SQL), rows)
        conn.exec_driver_sql(sql(_QUOTA_SQL), [(*k, n) for k, n in sorted(quota.items())])
        conn.exec_driver_sql(sql(_BUDGET_SQL), [(*k, n) for k, n in sorted(budget.items())])

    def flush(self, conn: Connection) -> None:
        self.end_command(conn)

    def reset(self) -> None:
        self._rows, self._quota, self._budget = [], {}, {}


def _insert_row(index: int, body: Any, at: str) -> tuple[Any, ...]:
    """A ``redemptions`` row (``_INSERT_SQL``'s order) of a recorded redemption's body."""
    return (
        index,
        body["program"],
        body["version"],
        body["member"],
        body["station"],
        body["quantity"],
        body["value"],
        body["funding"],
        body["operating"],
        body["home"],
        body["period"],
        at,
        base64.urlsafe_b64decode(body["presentation"] + "=").hex(),
        _idempotency(body["station"], body["idempotency"]),
    )


_PENDING = "unionledger.redemptions.pending"
"""``Connection.info`` key: the :class:`RedemptionsProjection` holding rows not yet written."""


def flush_pending(conn: Connection) -> None:
    """Write the offline redemptions kept for ``conn``'s command, so that reading
    ``redemptions``, ``quota_usage`` or ``budget_usage`` through ``conn`` inside the writer
    sees every event appended so far."""
    pending = conn.info.get(_PENDING)
    if isinstance(pending, RedemptionsProjection):
        pending.end_command(conn)


# -- the command -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Redeemed:
    """A redemption as the station gets it; ``repeated`` when an idempotency key was seen."""

    row: RedemptionRow
    repeated: bool
    program_name: str
    remaining: int
    renews_at: str | None


class _BatchReads:
    """The online command's reads that only program, station and union events change, shared
    by the redemptions of one writer batch (``Tx.memoised``): a batch of a hundred redemptions
    at a few stations reads the program, its versions and the stations once."""

    def __init__(self, tx: Tx) -> None:
        self.conn = tx.conn
        self.memoised = tx.memoised

    def program(self, program_id: str) -> p.ProgramRow | None:
        return self.memoised(("program", program_id), lambda: p.get_program(self.conn, program_id))

    def version_at(self, program_id: str, at: str) -> p.Version | None:
        """As :func:`ledger.programs.version_at`: the highest version effective at ``at``."""
        every = self.memoised(("versions", program_id), lambda: p.versions(self.conn, program_id))
        found = [v for v in every if v.effective <= at]
        return max(found, key=lambda v: v.version) if found else None

    def station(self, station_id: str) -> Any:
        from ledger.stations import get_station  # noqa: PLC0415  (stations import nothing of ours)

        return self.memoised(("station", station_id), lambda: get_station(self.conn, station_id))

    def within(self, ancestor: str, code: str) -> bool:
        return self.memoised(
            ("within", ancestor, code), lambda: unions.is_within(self.conn, ancestor, code)
        )

    def stacking_candidates(self, program_id: str) -> bool:
        """Whether any version ever declared a no-stacking pair with ``program_id`` (else
        :func:`_stacked` has nothing to look for)."""
        return self.memoised(
            ("no-stack", program_id),
            lambda: p.declares_stacking(self.conn, program_id),
        )


Within = Callable[[str, str], bool]


def _funding(conn: Connection, rules: p.Rules, owner: str, home: str, within: Within) -> str:
    for union in rules.allocations:
        if within(union, home):
            return union
    return owner


def _eligible(
    conn: Connection,
    members: m.Members,
    version: p.Version,
    owner: str,
    member: m.MemberRow,
    *,
    now: datetime,
    reads: _BatchReads | None = None,
) -> str | None:
    """Why ``member`` is not eligible at ``now``, or None."""
    rules = version.rules
    within = reads.within if reads is not None else functools.partial(unions.is_within, conn)
    if not within(owner, member.union_code):
        return "the member's union is outside the program's scope"
    if rules.home_subtree is not None and not within(rules.home_subtree, member.union_code):
        return "the program is for members of another union"
    if rules.min_tenure_days is not None:
        joined = datetime.fromisoformat(member.joined_at.replace("Z", "+00:00"))
        if now - joined < timedelta(days=rules.min_tenure_days):
            return f"the program needs {rules.min_tenure_days} days of membership"
    if rules.groups_any:
        today = now.astimezone(p.CHINA).date()
        if not set(members.active_groups(conn, member.member_id, today)) & set(rules.groups_any):
            return "the program is for members of other groups"
    return None


def _station_allows(rules: p.Rules, owner: str, station: Any, within: Within) -> bool:
    subtree = rules.where_subtree or owner
    if not within(subtree, station.union_code):
        return False
    if rules.stations and station.station_id not in rules.stations:
        return False
    return not (rules.station_kinds and station.kind not in rules.station_kinds)


def _stacked(
    conn: Connection, member_id: str, program_id: str, rules: p.Rules, now: datetime
) -> str | None:
    others = p.not_stacking(conn, program_id, p.format_time(now))
    if not others:
        return None
    start, end = _window(rules)
    return conn.execute(
        select(redemptions.c.program_id)
        .where(
            redemptions.c.member_id == member_id,
            redemptions.c.program_id.in_(others),
            redemptions.c.reversed_at.is_(None),
            redemptions.c.at >= start,
            redemptions.c.at < end,
        )
        .limit(1)
    ).scalar()


def _window(rules: p.Rules) -> tuple[str, str]:
    """The program's period as UTC entry-time bounds [start, end)."""
    first = datetime(rules.start.year, rules.start.month, rules.start.day, tzinfo=p.CHINA)
    after = rules.until + timedelta(days=1)
    last = datetime(after.year, after.month, after.day, tzinfo=p.CHINA)
    return p.format_time(first), p.format_time(last)


def _check_program_station(
    reads: _BatchReads, station_id: str, program: str, now: datetime
) -> tuple[p.ProgramRow, p.Version, Any]:
    row = reads.program(program)
    version = reads.version_at(program, p.format_time(now))
    if row is None or version is None:
        raise ProgramNotOpen(f"no program {program!r}")
    rules = version.rules
    if row.status != "open" or not rules.runs_on(now.astimezone(p.CHINA).date()):
        raise ProgramNotOpen(
            "the program is not open today",
            opens=rules.start.isoformat(),
            closes=rules.until.isoformat(),
            status=row.status,
        )
    place = reads.station(station_id)
    if place is None or place.status != "active":
        raise NotRedeemableHere("this station is not registered or is closed")
    if not _station_allows(rules, row.owner, place, reads.within):
        raise NotRedeemableHere("this program cannot be redeemed at this station")
    return row, version, place


def _check_quota(
    conn: Connection, rules: p.Rules, *, member_id: str, program: str, quantity: int, now: datetime
) -> str:
    period = rules.period_key(now)
    _check_quota_left(rules, quota_used(conn, member_id, program, period), quantity, now)
    return period


def _check_quota_left(rules: p.Rules, already: int, quantity: int, now: datetime) -> None:
    if already + quantity > rules.quota_count:
        raise QuotaUsed(
            f"the quota is used: {already} of {rules.quota_count} this period",
            used=already,
            quota=rules.quota_count,
            renews_at=None
            if rules.quota_per is p.Per.PROGRAM
            else p.format_time(rules.period_end(now)),
        )


def _check_budget(
    conn: Connection,
    rules: p.Rules,
    *,
    owner: str,
    home: str,
    program: str,
    value: int,
    reads: _BatchReads | None = None,
) -> str:
    within = reads.within if reads is not None else functools.partial(unions.is_within, conn)
    funding = _funding(conn, rules, owner, home, within)
    if rules.budget is None:
        return funding
    used = budget_used(conn, program)
    if funding in rules.allocations:
        spent, limit = used.get(funding, 0), rules.allocations[funding]
    else:  # the owner pays for everyone outside the allocations, whoever funded it before
        spent = sum(v for u, v in used.items() if u not in rules.allocations)
        limit = rules.budget - sum(rules.allocations.values())
    if spent + value > limit:
        raise BudgetExhausted("the budget is spent", funding_union=funding, left=limit - spent)
    return funding


# -- judging a redemption at an earlier instant (offline records at sync, ledger/offline.py) --


def offline_time(seconds: int) -> str:
    """An offline record's ``iat`` (NumericDate) as an entry time (``redemptions.at``)."""
    return seconds_entry_time(seconds)


def station_allows(conn: Connection, rules: p.Rules, owner: str, station: Any) -> bool:
    """Whether ``station`` (a stations row) may redeem a program of ``owner`` with ``rules``."""
    return _station_allows(rules, owner, station, functools.partial(unions.is_within, conn))


@dataclass(frozen=True, slots=True)
class Judged:
    """What :func:`judge_at` found for a redemption that passes every rule."""

    version: int
    period: str
    value: int
    funding: str
    operating: str
    home: str


def judge_at(
    conn: Connection,
    members: m.Members,
    *,
    station_id: str,
    program: str,
    member_id: str,
    quantity: int,
    at: datetime,
) -> Judged:
    """Judge a redemption as if it were made at ``at`` (an offline record's time), with the
    online command's checks 3 to 7: the version in force at ``at``, the program open then and
    its period running that China day, the station open then and allowed, the quantity, the
    member active (as the ledger stands now) and eligible at ``at``, the quota of the period
    of ``at``, stacking in the program's period, the budget (as spent now).

    Raises:
        ProgramNotOpen, NotRedeemableHere, BadQuantity, NotAMember, NotEligible, QuotaUsed,
        NotStackable, BudgetExhausted.
    """
    from ledger.stations import get_station  # noqa: PLC0415  (stations import nothing of ours)

    stamp = p.format_time(at)
    row = p.get_program(conn, program)
    version = None if row is None else p.version_at(conn, program, stamp)
    if row is None or version is None:
        raise ProgramNotOpen(f"no program {program!r} at {stamp}")
    rules = version.rules
    closed = row.status != "open" and (row.closed_at is None or row.closed_at <= stamp)
    if closed or not rules.runs_on(at.astimezone(p.CHINA).date()):
        raise ProgramNotOpen(
            "the program was not open then",
            opens=rules.start.isoformat(),
            closes=rules.until.isoformat(),
            status=row.status,
        )
    place = get_station(conn, station_id)
    if place is None or (place.closed_at is not None and place.closed_at <= stamp):
        raise NotRedeemableHere("this station is not registered or was closed")
    if not station_allows(conn, rules, row.owner, place):
        raise NotRedeemableHere("this program cannot be redeemed at this station")
    if type(quantity) is not int or not 1 <= quantity <= rules.max_quantity:
        raise BadQuantity(f"the quantity is 1 to {rules.max_quantity}")
    member = m.get_member(conn, member_id)
    if member is None or member.status != m.Status.ACTIVE:
        raise NotAMember("not an active member")
    why = _eligible(conn, members, version, row.owner, member, now=at)
    if why is not None:
        raise NotEligible(why)
    period = _check_quota(
        conn, rules, member_id=member_id, program=program, quantity=quantity, now=at
    )
    other = _stacked(conn, member_id, program, rules, at)
    if other is not None:
        raise NotStackable(f"the member already received {other}, which does not stack")
    value = rules.unit_value * quantity
    funding = _check_budget(
        conn, rules, owner=row.owner, home=member.union_code, program=program, value=value
    )
    return Judged(version.version, period, value, funding, place.union_code, member.union_code)


def _first_reads(  # noqa: PLR0917  (the request's facts, as redeem holds them)
    conn: Connection,
    reads: _BatchReads,
    station_id: str,
    verified: VerifiedPresentation,
    program: str,
    key: str,
    now: datetime,
) -> RedemptionRow | tuple[tuple[p.ProgramRow, p.Version, Any], m.MemberRow | None, int]:
    """What the online command reads, in one statement (``_JUDGE_SQL``), and its checks 1 to
    3 in their order: the earlier redemption of a retried key (returned); then
    presentation-replayed, credential-revoked, and the program and station (from the batch's
    memo). Otherwise the program, version and station, the member (None: none), and the
    quota used in the period of ``now``.

    Raises:
        PresentationReplayed, CredentialRevoked, ProgramNotOpen, NotRedeemableHere.
    """
    try:  # 3., from the memo: refused below in its turn
        checked: tuple[p.ProgramRow, p.Version, Any] | Refused = _check_program_station(
            reads, station_id, program, now
        )
    except Refused as e:
        checked = e
    period = "" if isinstance(checked, Refused) else checked[1].rules.period_key(now)
    seen_key, seen_presentation, current, used, *member_row = driver_execute(
        conn,
        _JUDGE_SQL,
        (
            _idempotency(station_id, key),
            verified.presentation_hash.hex(),
            verified.credential_hash.hex(),
            verified.member_id,
            program,
            period,
            verified.member_id,
        ),
    ).fetchone()
    if seen_key is not None:  # 1.
        earlier = get_redemption(conn, seen_key)
        assert earlier is not None
        return earlier
    if seen_presentation is not None:  # 2.
        raise PresentationReplayed("this QR code was already used: show a fresh one")
    if current is None:
        raise CredentialRevoked("this credential was replaced or revoked: refresh the app")
    if isinstance(checked, Refused):
        raise checked
    member = None if member_row[0] is None else m.MemberRow(*member_row)
    return checked, member, 0 if used is None else int(used)


class Redemptions:
    """Redemption commands; ``members`` answers group questions."""

    def __init__(self, members: m.Members, *, reversal_window: timedelta = REVERSAL_WINDOW) -> None:
        self.members = members
        self.reversal_window = reversal_window

    def redeem(
        self,
        tx: Tx,
        station: Actor,
        verified: VerifiedPresentation,
        *,
        program: str,
        quantity: int,
        key: str,
    ) -> Redeemed:
        """Judge and record one redemption (module docstring: the checks in order).

        Raises:
            Refused (each subclass), Forbidden (not a station), Invalid (the key).
        """
        if station.role is not Role.STATION or station.scope is None:
            raise Forbidden("only a station redeems")
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY:
            raise Invalid(f"an idempotency key is 1 to {MAX_KEY} characters")
        conn, now = tx.conn, tx.now
        reads = _BatchReads(tx)
        found = _first_reads(conn, reads, station.scope, verified, program, key, now)
        if isinstance(found, RedemptionRow):  # 1. a retry
            same = (program, quantity, verified.presentation_hash.hex())
            if (found.program_id, found.quantity, found.presentation) != same:
                raise IdempotencyConflict("this idempotency key was used for another redemption")
            return self._answer(conn, found, repeated=True, now=now)
        (row, version, place), member, already = found
        rules = version.rules
        if type(quantity) is not int or not 1 <= quantity <= rules.max_quantity:
            raise BadQuantity(f"the quantity is 1 to {rules.max_quantity}")
        if member is None or member.status != m.Status.ACTIVE:  # 4.
            raise NotAMember("not an active member")
        why = _eligible(conn, self.members, version, row.owner, member, now=now, reads=reads)
        if why is not None:
            raise NotEligible(why)
        period = rules.period_key(now)  # 5.
        _check_quota_left(rules, already, quantity, now)
        if reads.stacking_candidates(program):  # 6.
            other = _stacked(conn, member.member_id, program, rules, now)
            if other is not None:
                raise NotStackable(f"the member already received {other}, which does not stack")
        value = rules.unit_value * quantity  # 7.
        funding = _check_budget(
            conn,
            rules,
            owner=row.owner,
            home=member.union_code,
            program=program,
            value=value,
            reads=reads,
        )
        entry = tx.append(
            "RedemptionRecorded",
            station.ledger_actor,
            {
                "program": program,
                "version": version.version,
                "member": member.member_id,
                "station": place.station_id,
                "quantity": quantity,
                "value": value,
                "funding": funding,
                "operating": place.union_code,
                "home": member.union_code,
                "period": period,
                "presentation": _b64(verified.presentation_hash),
                "idempotency": key,
            },
        )
        body = entry.body
        recorded = RedemptionRow(
            redemption=entry.index,
            program_id=program,
            version=version.version,
            member_id=member.member_id,
            station_id=place.station_id,
            quantity=quantity,
            value=value,
            funding_union=funding,
            operating_union=place.union_code,
            home_union=member.union_code,
            period=period,
            at=entry.time,
            presentation=verified.presentation_hash.hex(),
            idempotency=_idempotency(station.scope, key),
            reversed_at=None,
            reversal=None,
        )
        assert body["period"] == period
        renews = None if rules.quota_per is p.Per.PROGRAM else p.format_time(rules.period_end(now))
        left = rules.quota_count - already - quantity  # what the projection now holds
        return Redeemed(recorded, False, rules.name, max(left, 0), renews)

    def answer_again(
        self,
        conn: Connection,
        earlier: RedemptionRow,
        *,
        program: str,
        quantity: int,
        presentation: bytes | None,
        now: datetime,
    ) -> Redeemed:
        """The answer to a retried request (same station and idempotency key), judged before
        the presentation is verified again (it may have gone stale meanwhile).

        Raises:
            IdempotencyConflict: the key was used for another program, quantity or QR code.
        """
        same = presentation is not None and presentation.hex() == earlier.presentation
        if (earlier.program_id, earlier.quantity) != (program, quantity) or not same:
            raise IdempotencyConflict("this idempotency key was used for another redemption")
        return self._answer(conn, earlier, repeated=True, now=now)

    def _answer(
        self, conn: Connection, row: RedemptionRow, *, repeated: bool, now: datetime
    ) -> Redeemed:
        program = p.get_program(conn, row.program_id)
        version = p.version_at(conn, row.program_id, p.format_time(now))
        name = row.program_id if program is None else p.name_at(conn, program, p.format_time(now))
        if version is None:
            return Redeemed(row, repeated, name, 0, None)
        rules = version.rules
        period = rules.period_key(now)
        remaining = rules.quota_count - quota_used(conn, row.member_id, row.program_id, period)
        renews = None if rules.quota_per is p.Per.PROGRAM else p.format_time(rules.period_end(now))
        return Redeemed(row, repeated, name, max(remaining, 0), renews)

    def window_ends(self, row: RedemptionRow) -> datetime:
        """Until when the station that redeemed, or an official without a reason, may reverse
        ``row``; after it, only an official, with a reason."""
        return datetime.fromisoformat(row.at.replace("Z", "+00:00")) + self.reversal_window

    def reversal_refusal(
        self,
        conn: Connection,
        actor: Actor,
        row: RedemptionRow,
        now: datetime,
        *,
        reason: str | None,
    ) -> DomainError | None:
        """Why ``actor`` may not reverse ``row`` (visible to them) at ``now`` with ``reason``
        (blank already made ``None``), or ``None`` when they may: what :meth:`reverse` checks,
        and what a listing says of each row (``can_reverse``)."""
        if actor.role not in (Role.OFFICIAL, Role.STATION, Role.SYSTEM):
            return Forbidden("only the station or an official reverses a redemption")
        if (
            actor.role is Role.OFFICIAL
            and actor.scope is not None
            and not unions.is_within(conn, actor.scope, row.funding_union)
            and not unions.is_within(conn, actor.scope, row.operating_union)
        ):
            return UnknownRedemption(f"no redemption {row.redemption}")
        if row.reversed_at is not None:
            return AlreadyReversed("this redemption was already reversed")
        if now > self.window_ends(row):
            if actor.role is Role.STATION:
                return ReversalWindowClosed("past the reversal window: ask an official")
            if not reason:
                return ReversalWindowClosed("past the reversal window a reason is required")
        return None

    def reverse(self, tx: Tx, actor: Actor, redemption: int, *, reason: str | None = None) -> Entry:
        """Append ``RedemptionReversed`` (quota and budget come back).

        Raises:
            UnknownRedemption, AlreadyReversed, ReversalWindowClosed, Forbidden, Invalid.
        """
        conn = tx.conn
        if actor.role not in (Role.OFFICIAL, Role.STATION, Role.SYSTEM):
            raise Forbidden("only the station or an official reverses a redemption")
        row = visible_redemption(conn, actor, redemption)
        if reason is not None and (not isinstance(reason, str) or len(reason) > 200):
            raise Invalid("a reason is at most 200 characters")
        reason = reason.strip() or None if reason is not None else None  # blank is no reason
        refusal = self.reversal_refusal(conn, actor, row, tx.now, reason=reason)
        if refusal is not None:
            raise refusal
        return tx.append(
            "RedemptionReversed",
            actor.ledger_actor,
            {
                "redemption": redemption,
                "program": row.program_id,
                "member": row.member_id,
                "reason": reason,
            },
        )


def remaining_quota(
    conn: Connection, member_id: str, program_id: str, rules: p.Rules, now: datetime
) -> int:
    return max(
        rules.quota_count - quota_used(conn, member_id, program_id, rules.period_key(now)), 0
    )


def presentation_digest(text: str) -> str:
    """Hex SHA-256 of a QR text (for logs: never the text)."""
    return hashlib.sha256(text.encode()).hexdigest()


# -- entitlements --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entitlement:
    """A program the member may redeem now, and how much of it is left."""

    program_id: str
    version: int
    name: str
    kind: str
    owner: str
    unit_value: int
    quota: int
    per: str
    remaining: int
    renews_at: str | None
    until: str
    where: dict[str, Any]
    offline: bool
    # A program the member received in this program's period that does not stack with it
    # (check 6): a station would refuse with not-stackable until that one is reversed.
    not_stackable_with: str | None = None


def entitlements(
    conn: Connection,
    members: m.Members,
    member_id: str,
    now: datetime,
    *,
    sensitive: bool = True,
) -> list[Entitlement]:
    """The open programs that reach the member (owned up their union's chain), that they are
    eligible for at ``now``, with the quota left in the current period (0 included: the app
    shows when it renews). Budgets are not judged here: they are the station's answer.
    ``sensitive=False`` (for a reader who may not know the member's sensitive groups: an
    auditor) leaves out every program whose rule names a sensitive group, since listing it
    would tell that the member is in one.

    Raises:
        members.UnknownMember: no such member.
    """
    member = m.get_member(conn, member_id)
    if member is None:
        raise m.UnknownMember(f"no member {member_id!r}")
    if member.status != m.Status.ACTIVE:
        return []
    chain = unions.chain(conn, member.union_code)
    today = now.astimezone(p.CHINA).date()
    hidden = set() if sensitive else {str(g.value) for g in m.SENSITIVE_GROUPS}
    out = []
    for row in p.list_programs(conn, SYSTEM, status="open"):
        if row.owner not in chain:
            continue
        version = p.version_at(conn, row.program_id, p.format_time(now))
        if version is None or not version.rules.runs_on(today):
            continue
        if hidden.intersection(version.rules.groups_any):
            continue
        if _eligible(conn, members, version, row.owner, member, now=now) is not None:
            continue
        rules = version.rules
        out.append(
            Entitlement(
                program_id=row.program_id,
                version=version.version,
                name=rules.name,
                kind=rules.kind.value,
                owner=row.owner,
                unit_value=rules.unit_value,
                quota=rules.quota_count,
                per=rules.quota_per.value,
                remaining=remaining_quota(conn, member_id, row.program_id, rules, now),
                renews_at=None
                if rules.quota_per is p.Per.PROGRAM
                else p.format_time(rules.period_end(now)),
                until=rules.until.isoformat(),
                where=rules.to_json()["where"],
                offline=rules.offline_allowed,
                not_stackable_with=_stacked(conn, member_id, row.program_id, rules, now),
            )
        )
    return out
