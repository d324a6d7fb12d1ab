"""Statistics and reconciliation (后台统计): figures kept as projections, and the reports.

:class:`StatsProjection` folds every redemption, reversal, offline conflict and refused record
into the cells of ``verifier.stats`` (docs/stats.md), in the transaction that appends the
event: counts are summed in memory during a batch and written once per cell in :meth:`flush`.
The reports read those cells (and, for statements and anomalies, the ``redemptions`` and
``offline_records`` rows):

- :func:`union_figures`: a union's own and subtree figures per program for a range of days,
  the distinct members when the range is a calendar month or year, per group (by month),
  the budgets the union funds;
- :func:`station_statement`, :func:`union_statement`: one day, line by line;
- :func:`settlement`: what each funding union owes each operating union over months;
- :func:`anomalies`: stations and members far above their peers, bursts, many conflicts,
  repeated online refusals (tallied beside the chain in ``refusal_counts``), redemptions
  outside opening hours;
- :func:`export`: every figure, pinned to the tree size and root it was read at, in the format
  an auditor's recomputation compares with (``verifier.stats.Figures``).

Scopes: an official sees their subtree; auditors and the system everything. Imports verifier/
and the ledger's own modules.
"""

from __future__ import annotations

import base64
import functools
import json
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    String,
    Table,
    and_,
    bindparam,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ledger import unions as u
from ledger.db import driver_execute, driver_sql
from ledger.domain import Actor, Conflict, Forbidden, Invalid, Role
from ledger.offline import offline_records
from ledger.redemptions import budget_usage, get_redemption, redemptions
from ledger.schema import log_head, metadata, projection_metadata
from ledger.sequencer import Tx
from ledger.stations import stations
from verifier import stats as vs
from verifier.entry import Entry

T = TypeVar("T")
SCOPE_MAX = 32 + 1 + 32 + 2  # "P:" + two union codes, or "G:" + code + group


# Scopes are matched by prefix ranges (``'P:' <= scope < 'P;'``): byte order on PostgreSQL too.
_SCOPE = String(SCOPE_MAX + 32).with_variant(String(SCOPE_MAX + 32, collation="C"), "postgresql")
_PERIOD = String(10).with_variant(String(10, collation="C"), "postgresql")


def _counts_columns() -> list[Column[Any]]:
    return [Column(f, BigInteger, nullable=False) for f in vs.FIELDS]


def _cells_table(name: str) -> Table:
    # Keyed (scope, period, program): a range of days of one scope is one index range.
    return Table(
        name,
        projection_metadata,
        Column("scope", _SCOPE, primary_key=True),
        Column("period", _PERIOD, primary_key=True),
        Column("program", String(64), primary_key=True),
        *_counts_columns(),
    )


stats_cells = _cells_table("stats_cells")
# The day cells of U:, O: and S: scopes summed per month (``YYYY-MM``), in the same flush:
# a year reads twelve rows per program instead of 365 (measured at 10 M redemptions: the
# national union's year 44 ms from days, 5 ms with months). Not exported: a sum of cells.
stats_months = _cells_table("stats_months")

stats_members = Table(
    "stats_members",
    projection_metadata,
    Column("scope", _SCOPE, primary_key=True),
    Column("program", String(64), primary_key=True),
    Column("period", _PERIOD, primary_key=True),
    Column("members", BigInteger, nullable=False),
)

stats_seen = Table(
    "stats_seen",
    projection_metadata,
    Column("anchor", _SCOPE, primary_key=True),
    Column("program", String(64), primary_key=True),
    Column("period", String(10), primary_key=True),
    Column("member", String(32), primary_key=True),
)

# Online refusals write nothing to the chain; the anomaly report counts them here (an operational
# tally, not a projection: a rebuild leaves it alone). No personal data: station, day, reason.
refusal_counts = Table(
    "refusal_counts",
    metadata,
    Column("station_id", String(64), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("reason", String(64), primary_key=True),
    Column("count", BigInteger, nullable=False),
)

_CHUNK = 400  # codes per IN (...) query: well under SQLite's variable limit


def _insert(conn: Connection) -> Any:
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


# Read once per union and per member a batch (the writer's): the driver's own statements.
_PATH_SQL = "SELECT path FROM unions WHERE code = ?"
_SPANS_SQL = 'SELECT grp, start, "end" FROM member_groups WHERE member_id = ?'
_GROUP_EVENTS = frozenset({"MemberEnrolled", "MemberGroupAdded", "MemberGroupEnded"})


class _SqlContext:
    """The ``verifier.stats.Context`` answered from the projections' tables, which hold the
    chain's state up to the entry before the one being applied (they apply in order). Union
    chains and members' group spans are remembered (statements built once): measured, a
    query per redemption built anew took a third of the writer's time at sync.

    Remembered for one batch; or, in the sequencer, in its memo (:meth:`use_memo`), which
    outlives batches while no writer of any process appends an event that could change them
    (union and group events are outside ``MEMO_KEEPING_EVENTS``: appending one empties it)."""

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self._paths: dict[Any, tuple[str, ...]] = {}
        self._spans: dict[Any, list[tuple[str, str, str | None]]] = {}
        self._shared = False

    def use_memo(self, memo: dict[Any, Any]) -> None:
        self._paths = self._spans = memo  # keys ("stats-path", code), ("stats-spans", member)
        self._shared = True

    def clear(self) -> None:
        if not self._shared:  # the sequencer's memo is the sequencer's to clear
            self._paths.clear()
            self._spans.clear()

    def saw(self, entry: Entry) -> None:
        """Forget what ``entry`` (applied by the other projections already) may change."""
        if self._shared:
            return  # appending it emptied the memo already
        if entry.type in ("UnionCreated", "UnionMoved"):
            self._paths.clear()
        elif entry.type in _GROUP_EVENTS and isinstance(member := entry.body.get("member"), str):
            self._spans.pop(("stats-spans", member), None)

    def ancestors(self, union: str) -> Sequence[str]:
        key = ("stats-path", union)
        chain = self._paths.get(key)
        if chain is None:
            assert self.conn is not None
            found = driver_execute(self.conn, _PATH_SQL, (union,)).fetchone()
            path = None if found is None else found[0]
            chain = tuple(path.strip("/").split("/")) if path else ()
            self._paths[key] = chain
        return chain

    def groups(self, member: str, day: str) -> Sequence[str]:
        key = ("stats-spans", member)
        spans = self._spans.get(key)
        if spans is None:
            assert self.conn is not None
            rows = driver_execute(self.conn, _SPANS_SQL, (member,)).fetchall()
            spans = [(r[0], r[1], r[2]) for r in rows]
            self._spans[key] = spans
        return [g for g, start, end in spans if start <= day and (end is None or end > day)]

    def reversed_by(self, redemption: int, reversal: int) -> vs.Posted | None:
        assert self.conn is not None
        row = get_redemption(self.conn, redemption)
        if row is None or row.reversal != reversal:  # applied before us: ours if it took
            return None
        return vs.Posted(
            row.program_id,
            row.member_id,
            row.station_id,
            row.home_union,
            row.funding_union,
            row.operating_union,
            row.quantity,
            row.value,
            vs.china_day(row.at),
        )


class StatsProjection:
    """Keeps ``stats_cells`` (and their monthly roll-up ``stats_months``), ``stats_members``
    and ``stats_seen`` (docs/stats.md section 2)."""

    name = "stats"
    tables: Sequence[Table] = (stats_cells, stats_months, stats_members, stats_seen)

    def __init__(self) -> None:
        self._ctx = _SqlContext()
        # How often the batch added each (keys, counts) group, spread over its keys in flush:
        # the events of one station's day share their keys, so an event costs one increment
        # here instead of one per cell (about 20).
        self._cells: dict[tuple[tuple[vs.Key, ...], vs.Counts], int] = {}
        # Each group of seen keys with the scopes it first came with (insertion order: the
        # first scopes of a key win, as when the keys were taken one by one).
        self._seen: dict[tuple[tuple[str, str, str, str], ...], tuple[str, ...]] = {}

    def apply(self, conn: Connection, entry: Entry) -> None:
        self._ctx.saw(entry)
        self._ctx.conn = conn
        found = vs.effect(entry, self._ctx)
        if found is None:
            return
        cells = self._cells
        for group in found.cells:
            cells[group] = cells.get(group, 0) + 1
        setdefault = self._seen.setdefault
        for seen_keys, scopes in found.seen:
            setdefault(seen_keys, scopes)

    def use_memo(self, memo: dict[Any, Any]) -> None:
        """Keep the union chains and group spans read in the sequencer's memo (the sequencer
        calls it): see :class:`_SqlContext`."""
        self._ctx.use_memo(memo)

    def reset(self) -> None:
        self._cells.clear()
        self._seen.clear()
        self._ctx.clear()

    def flush(self, conn: Connection) -> None:
        groups, seen_groups = self._cells, self._seen
        self._cells, self._seen = {}, {}
        tallies: dict[vs.Key, dict[vs.Counts, int]] = {}
        for (keys, added_counts), n in groups.items():
            for key in keys:
                tally = tallies.get(key)
                if tally is None:
                    tallies[key] = {added_counts: n}
                else:
                    tally[added_counts] = tally.get(added_counts, 0) + n
        seen: dict[tuple[str, str, str, str], tuple[str, ...]] = {}
        for seen_keys, scopes in seen_groups.items():
            for seen_key in seen_keys:
                seen.setdefault(seen_key, scopes)
        cells = {key: _summed(tally) for key, tally in tallies.items()}
        self._ctx.clear()  # another process may move a union before our next batch
        added = _new_members(conn, seen)
        if cells:
            conn.exec_driver_sql(
                _upsert_sql(conn, "stats_cells", vs.FIELDS),
                [(*key, *counts) for key, counts in sorted(cells.items())],
            )
            months: dict[vs.Key, list[int]] = {}
            for (scope, program, period), counts in cells.items():
                if len(period) == 10:  # U:, O: and S: day cells
                    acc = months.setdefault((scope, program, period[:7]), [0] * vs.N)
                    for i, x in enumerate(counts):
                        acc[i] += x
            if months:
                conn.exec_driver_sql(
                    _upsert_sql(conn, "stats_months", vs.FIELDS),
                    [(*key, *counts) for key, counts in sorted(months.items())],
                )
        if added:
            conn.exec_driver_sql(
                _upsert_sql(conn, "stats_members", ("members",)),
                [(*key, n) for key, n in sorted(added.items())],
            )


def _summed(tally: dict[vs.Counts, int]) -> list[int]:
    """The sum of the counts tuples of a cell, each ``n`` times."""
    out = [0] * vs.N
    for counts, n in tally.items():
        for i, c in enumerate(counts):
            if c:
                out[i] += c * n
    return out


@functools.cache
def _upsert_text(table: str, fields: tuple[str, ...]) -> str:
    names = ("scope", "program", "period", *fields)
    adds = ", ".join(f"{f} = {table}.{f} + excluded.{f}" for f in fields)
    columns, marks = ", ".join(names), ", ".join(["?"] * len(names))
    # Table and column names are this module's constants; the values are bound parameters.
    return f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT (scope, program, period) DO UPDATE SET {adds}"  # noqa: S608, E501


def _upsert_sql(conn: Connection, table: str, fields: tuple[str, ...]) -> str:
    """Adding counts to cells, as the driver's own executemany (SQLite and PostgreSQL both
    spell an upsert this way): measured, SQLAlchemy's per-row parameter handling cost more
    than the writes."""
    return driver_sql(conn, _upsert_text(table, fields))


_SEEN_CHUNK = 1000  # rows of 4 parameters per statement (SQLite allows 32,766 parameters)


@functools.cache
def _seen_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?)"] * rows)
    return (
        f"INSERT INTO stats_seen (anchor, program, period, member) VALUES {values}"  # noqa: S608
        " ON CONFLICT DO NOTHING RETURNING anchor, program, period, member"
    )


def _new_members(
    conn: Connection, seen: dict[tuple[str, str, str, str], tuple[str, ...]]
) -> dict[vs.Key, int]:
    """Record the batch's (anchor, program, period, member) keys; count the new ones into the
    scopes they name."""
    if not seen:
        return {}
    # One INSERT .. ON CONFLICT DO NOTHING RETURNING per chunk of keys: what comes back is new.
    # (Measured: looking the keys up first with a row-value IN made SQLite 3.40 scan the whole
    # table, 4.1 s per 2,000 keys against 5 million rows; this is a primary-key probe per key.)
    # The driver's own multi-row statement: SQLAlchemy's insertmanyvalues cost more than it.
    keys = sorted(seen)
    rows: list[Any] = []
    for start in range(0, len(keys), _SEEN_CHUNK):
        chunk = keys[start : start + _SEEN_CHUNK]
        rows.extend(
            driver_execute(
                conn, _seen_sql(len(chunk)), [v for key in chunk for v in key]
            ).fetchall()
        )
    fresh = sorted((r[0], r[1], r[2], r[3]) for r in rows)
    added: dict[vs.Key, int] = {}
    for key in fresh:
        _, program, period, _ = key
        for scope in seen[key]:
            k = (scope, program, period)
            added[k] = added.get(k, 0) + 1
    return added


def note_refusal(tx: Tx, station: str, reason: str) -> None:
    """Count one online refusal at ``station`` (China day of the batch's time), for the anomaly
    report: a write outside the ledger, in the batch's transaction (``Tx.execute``)."""
    stmt = _insert(tx.conn)(refusal_counts)
    tx.execute(
        stmt.on_conflict_do_update(
            index_elements=["station_id", "day", "reason"],
            set_={"count": refusal_counts.c.count + 1},
        ),
        {
            "station_id": station,
            "day": tx.now.astimezone(vs.CHINA).date().isoformat(),
            "reason": reason[:64],
            "count": 1,
        },
    )


# -- reading -----------------------------------------------------------------------------------


class UnknownStatsScope(u.UnknownUnion):
    """No such union (or not visible to this actor)."""  # the problem type's title: as its base


class BadPeriod(Invalid):
    code = "invalid-period"


MAX_DAYS = 3 * 366 + 1  # the longest range one request may span


def parse_range(
    start: str | None, end: str | None, *, today: date | None = None
) -> tuple[str, str]:
    """``from``/``to`` (China dates, both included); default: this calendar month so far."""
    today = today or datetime.now(vs.CHINA).date()
    try:
        d0 = date.fromisoformat(start) if start else today.replace(day=1)
        d1 = date.fromisoformat(end) if end else today
    except ValueError as e:
        raise BadPeriod(f"dates are YYYY-MM-DD: {e}") from e
    if d1 < d0:
        raise BadPeriod("'to' is before 'from'")
    if (d1 - d0).days >= MAX_DAYS:
        raise BadPeriod(f"a range spans at most {MAX_DAYS} days")
    return d0.isoformat(), d1.isoformat()


def whole_period(start: str, end: str, *, today: date | None = None) -> str | None:
    """The month (``YYYY-MM``) or year (``YYYY``) that ``start..end`` covers, else None:
    distinct members are kept for those alone. A range that starts on the period's first day
    and ends on its last, or on today or later (nothing is posted after today), covers it."""
    today = today or datetime.now(vs.CHINA).date()
    d0, d1 = date.fromisoformat(start), date.fromisoformat(end)
    to_date = d1 >= today
    month_end = to_date or (d1 + timedelta(days=1)).day == 1
    if d0.day == 1 and d0.replace(day=1) == d1.replace(day=1) and month_end:
        return start[:7]
    year_end = to_date or (d1.month, d1.day) == (12, 31)
    if (d0.month, d0.day) == (1, 1) and d0.year == d1.year and year_end:
        return start[:4]
    return None


def _visible_union(conn: Connection, actor: Actor, code: str) -> u.UnionRow:
    if actor.role not in (Role.SYSTEM, Role.AUDITOR, Role.OFFICIAL):
        raise Forbidden("statistics are for officials and auditors")
    row = u.visible(conn, actor, code)
    if row is None:
        raise UnknownStatsScope(f"no union {code!r} in your view")
    return row


def split_range(start: str, end: str) -> tuple[list[tuple[str, str]], tuple[str, str] | None]:
    """``start..end`` (China dates) as the day ranges at its edges and the whole months
    (``YYYY-MM``, first and last) between them, if any."""
    d0, d1 = date.fromisoformat(start), date.fromisoformat(end)
    first = d0 if d0.day == 1 else (d0.replace(day=28) + timedelta(days=4)).replace(day=1)
    following = d1 + timedelta(days=1)
    after = following if following.day == 1 else d1.replace(day=1)  # the day after the months
    if first >= after:
        return [(start, end)], None
    days = []
    if d0 < first:
        days.append((start, (first - timedelta(days=1)).isoformat()))
    if after <= d1:
        days.append((after.isoformat(), end))
    return days, (first.isoformat()[:7], (after - timedelta(days=1)).isoformat()[:7])


def _summing(table: Table) -> Any:
    c = table.c
    return (
        select(c.program, *(func.sum(c[f]) for f in vs.FIELDS))
        .where(
            c.scope == bindparam("scope"), c.period >= bindparam("a"), c.period <= bindparam("z")
        )
        .group_by(c.program)
    )


_SUM = {"days": _summing(stats_cells), "months": _summing(stats_months)}  # built once


def _sum_cells(conn: Connection, scope: str, start: str, end: str) -> dict[str, list[int]]:
    """Per program, the summed counts of a day-cell scope (``U:``, ``O:``, ``S:``) over the
    days ``start..end``: whole months from ``stats_months``, the edges from ``stats_cells``."""
    days, months = split_range(start, end)
    parts = [("days", a, z) for a, z in days]
    if months is not None:
        parts.append(("months", *months))
    out: dict[str, list[int]] = {}
    for which, a, z in parts:
        for r in conn.execute(_SUM[which], {"scope": scope, "a": a, "z": z}):
            acc = out.setdefault(r[0], [0] * vs.N)
            for i, x in enumerate(r[1:]):
                acc[i] += int(x or 0)
    return out


def _members(conn: Connection, scope: str, period: str | None) -> dict[str, int]:
    if period is None:
        return {}
    c = stats_members.c
    rows = conn.execute(
        select(c.program, c.members).where(c.scope == scope, c.period == period)
    ).all()
    return {r[0]: int(r[1]) for r in rows}


def _named(counts: Sequence[int]) -> dict[str, int]:
    return dict(zip(vs.FIELDS, counts, strict=True))


def _total(per_program: dict[str, list[int]]) -> list[int]:
    out = [0] * vs.N
    for counts in per_program.values():
        for i, x in enumerate(counts):
            out[i] += x
    return out


@dataclass(frozen=True, slots=True)
class Suppression:
    """Counts of redemptions or members below ``threshold`` (not zero) are withheld."""

    threshold: int

    def figures(self, counts: Sequence[int], members: int | None) -> dict[str, Any]:
        out: dict[str, Any] = _named(counts)
        out["members"] = members
        small = 0 < counts[vs.REDEMPTIONS] < self.threshold or (
            members is not None and 0 < members < self.threshold
        )
        if small and self.threshold > 1:
            out = dict.fromkeys(out)
            out["suppressed"] = True
        return out


NO_SUPPRESSION = Suppression(1)


def _block(
    conn: Connection, scope: str, span: tuple[str, str], whole: str | None, sup: Suppression
) -> dict[str, Any]:
    per = _sum_cells(conn, scope, *span)
    members = _members(conn, scope, whole)
    return {
        "total": sup.figures(_total(per), members.get(vs.ALL_PROGRAMS) if whole else None),
        "programs": {
            p: sup.figures(v, members.get(p) if whole else None) for p, v in sorted(per.items())
        },
    }


def union_figures(
    conn: Connection,
    actor: Actor,
    code: str,
    start: str,
    end: str,
    *,
    suppression: Suppression = NO_SUPPRESSION,
) -> dict[str, Any]:
    """A union's figures over ``start..end`` (docs/stats.md section 3.1)."""
    row = _visible_union(conn, actor, code)
    whole = whole_period(start, end)
    groups: dict[str, Any] = {}
    c = stats_cells.c
    prefix = f"G:{code}:"
    rows = conn.execute(
        select(c.scope, *(func.sum(c[f]) for f in vs.FIELDS))
        .where(
            c.scope >= prefix,
            c.scope < prefix + "\uffff",
            c.period >= start[:7],
            c.period <= end[:7],
        )
        .group_by(c.scope)
    ).all()
    for r in rows:
        groups[r[0][len(prefix) :]] = suppression.figures([int(x or 0) for x in r[1:]], None)
    children = conn.execute(
        select(u.unions.c.code, u.unions.c.name)
        .where(u.unions.c.parent == code)
        .order_by(u.unions.c.code)
    ).all()
    return {
        "union": code,
        "name": row.name,
        "kind": row.kind.value,
        "from": start,
        "to": end,
        "members_period": whole,
        "subtree": _block(conn, f"U:{code}", (start, end), whole, suppression),
        "own": _block(conn, f"O:{code}", (start, end), whole, suppression),
        "groups": {"months": [start[:7], end[:7]], "figures": groups},
        "children": [
            {
                "union": ch.code,
                "name": ch.name,
                **suppression.figures(_total(_sum_cells(conn, f"U:{ch.code}", start, end)), None),
            }
            for ch in children
        ],
        "budgets": budgets_funded(conn, code),
        "program_names": program_names(conn),
    }


def series(
    conn: Connection,
    actor: Actor,
    code: str,
    start: str,
    end: str,
    *,
    suppression: Suppression = NO_SUPPRESSION,
) -> dict[str, Any]:
    """A union's subtree figures per day and program over ``start..end`` (for charts: a
    program's budget burn-down is its cumulative net value in the national union's series)."""
    _visible_union(conn, actor, code)
    c = stats_cells.c
    rows = conn.execute(
        select(c.period, c.program, *(c[f] for f in vs.FIELDS))
        .where(c.scope == f"U:{code}", c.period >= start, c.period <= end)
        .order_by(c.period, c.program)
    ).all()
    days = [
        {"day": r[0], "program": r[1], **suppression.figures([int(x) for x in r[2:]], None)}
        for r in rows
    ]
    for d in days:
        d.pop("members", None)
    return {"union": code, "from": start, "to": end, "days": days}


def station_figures(
    conn: Connection,
    actor: Actor,
    station_id: str,
    start: str,
    end: str,
    *,
    suppression: Suppression = NO_SUPPRESSION,
) -> dict[str, Any]:
    """A station's figures per program over ``start..end`` (docs/stats.md section 3)."""
    from ledger.stations import visible_station  # noqa: PLC0415

    if actor.role not in (Role.SYSTEM, Role.AUDITOR, Role.OFFICIAL):
        raise Forbidden("statistics are for officials and auditors")
    station = visible_station(conn, actor, station_id)
    whole = whole_period(start, end)
    block = _block(conn, f"S:{station_id}", (start, end), whole, suppression)
    refused = block["programs"].pop("", None)
    return {
        "station": station_id,
        "name": station.name,
        "kind": station.kind,
        "union": station.union_code,
        "from": start,
        "to": end,
        "members_period": whole,
        "figures": block,
        "program_names": program_names(conn),
        "refused_records": 0 if refused is None else refused["refused"],
    }


def program_names(conn: Connection) -> dict[str, str]:
    """Every program's name (its first version's), for reports that list program ids."""
    from ledger import programs as p  # noqa: PLC0415

    return {r[0]: r[1] for r in conn.execute(select(p.programs.c.program_id, p.programs.c.name))}


def budgets_funded(conn: Connection, code: str) -> list[dict[str, Any]]:
    """The budgets the union funds, by the latest version of each program: the unallocated
    part of its own programs and what a program above allocated to it, with what was used
    (net of reversals). What counts as used is what the redemption check counts
    (docs/programs.md section 7): an allocation's own spending; for the owner, the spending of
    every funding union that holds no allocation in that version, its own and that of
    allocations a revision removed."""
    from ledger import programs as p  # noqa: PLC0415  (programs imports redemptions)

    spent_by: dict[str, dict[str, int]] = {}
    for program_id, funding, amount in conn.execute(
        select(budget_usage.c.program_id, budget_usage.c.funding_union, budget_usage.c.used)
    ):
        spent_by.setdefault(program_id, {})[funding] = int(amount)
    out = []
    for program_id, owner in conn.execute(
        select(p.programs.c.program_id, p.programs.c.owner).order_by(p.programs.c.program_id)
    ):
        history = p.versions(conn, program_id)
        rules = history[-1].rules if history else None
        if rules is None or rules.budget is None:
            continue
        used = spent_by.get(program_id, {})
        if owner == code:
            allocated = rules.budget - sum(rules.allocations.values())
            spent = sum(v for u, v in used.items() if u not in rules.allocations)
        elif code in rules.allocations:
            allocated = rules.allocations[code]
            spent = used.get(code, 0)
        else:
            continue
        out.append(
            {
                "program": program_id,
                "allocated": allocated,
                "used": spent,
                "left": allocated - spent,
            }
        )
    return out


# -- statements --------------------------------------------------------------------------------


def _day_bounds(day: str) -> tuple[int, int]:
    """A China date's first second and the next day's, as NumericDates."""
    d = date.fromisoformat(day)
    start = datetime(d.year, d.month, d.day, tzinfo=vs.CHINA)
    return int(start.timestamp()), int((start + timedelta(days=1)).timestamp())


def station_statement(conn: Connection, actor: Actor, station_id: str, day: str) -> dict[str, Any]:
    """One station's day: what the ledger posted per program, what the station reported in
    its offline records for that day, and every record not counted, with its reason."""
    from ledger.stations import visible_station  # noqa: PLC0415

    station = visible_station(conn, actor, station_id)
    if actor.role is Role.STATION:
        raise Forbidden("statements are for officials and auditors")
    per = _sum_cells(conn, f"S:{station_id}", day, day)
    refused_cells = per.pop("", None)
    lo, hi = _day_bounds(day)
    o = offline_records.c
    lines = conn.execute(
        select(o.entry, o.kid, o.seq, o.status, o.reason, o.program_id, o.quantity, o.value)
        .where(o.station_id == station_id, o.offline_at >= lo, o.offline_at < hi)
        .order_by(o.entry)
    ).all()
    refused_lines = conn.execute(
        select(o.entry, o.kid, o.seq, o.reason)
        .where(o.station_id == station_id, o.status == "refused", o.at >= day, o.at < _next(day))
        .order_by(o.entry)
    ).all()
    reported = [ln for ln in lines if ln.status != "refused"]
    accepted = [ln for ln in reported if ln.status == "accepted"]
    total = _total(per)
    return {
        "station": station_id,
        "name": station.name,
        "union": station.union_code,
        "day": day,
        "ledger": {
            "total": _named(total),
            "programs": {p: _named(v) for p, v in sorted(per.items())},
        },
        "station_reported": {
            "records": len(reported),
            "value": sum(int(ln.value or 0) for ln in reported),
        },
        "offline_counted": {
            "records": len(accepted),
            "value": sum(int(ln.value or 0) for ln in accepted),
        },
        "differences": [
            {
                "entry": ln.entry,
                "kid": ln.kid,
                "seq": ln.seq,
                "status": ln.status,
                "reason": ln.reason,
                "program": ln.program_id,
                "quantity": ln.quantity,
                "value": ln.value,
            }
            for ln in reported
            if ln.status != "accepted"
        ],
        "refused_records": {
            "count": (refused_cells or [0] * vs.N)[vs.REFUSED],
            "lines": [
                {"entry": r.entry, "kid": r.kid, "seq": r.seq, "reason": r.reason}
                for r in refused_lines
            ],
        },
    }


def _next(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def union_statement(conn: Connection, actor: Actor, code: str, day: str) -> dict[str, Any]:
    """One union's day: its subtree's and own figures per program, and each station it
    operates."""
    row = _visible_union(conn, actor, code)
    st = stations.c
    operated = conn.execute(
        select(st.station_id, st.name).where(st.union_code == code).order_by(st.station_id)
    ).all()
    return {
        "union": code,
        "name": row.name,
        "day": day,
        "subtree": {
            p: _named(v) for p, v in sorted(_sum_cells(conn, f"U:{code}", day, day).items())
        },
        "own": {p: _named(v) for p, v in sorted(_sum_cells(conn, f"O:{code}", day, day).items())},
        "stations": [
            {
                "station": s.station_id,
                "name": s.name,
                **_named(_total(_sum_cells(conn, f"S:{s.station_id}", day, day))),
            }
            for s in operated
        ],
    }


# -- settlement --------------------------------------------------------------------------------


def settlement(conn: Connection, actor: Actor, start: str, end: str) -> dict[str, Any]:
    """For each (funding union, operating union) pair, what the funder owes over the months
    ``start[:7] .. end[:7]`` (value net of reversals); each union's balance; the balances sum
    to zero. An official sees the pairs with either side in their subtree."""
    if actor.role not in (Role.SYSTEM, Role.AUDITOR, Role.OFFICIAL):
        raise Forbidden("settlement is for officials and auditors")
    c = stats_cells.c
    rows = conn.execute(
        select(
            c.scope,
            func.sum(c.value),
            func.sum(c.reversed_value),
            func.sum(c.redemptions),
            func.sum(c.reversals),
        )
        .where(c.scope >= "P:", c.scope < "P;", c.period >= start[:7], c.period <= end[:7])
        .group_by(c.scope)
        .order_by(c.scope)
    ).all()
    pairs: list[dict[str, Any]] = []
    balance: dict[str, int] = {}
    for scope, value, reversed_value, n, rev in rows:
        funding, operating = scope[2:].split(">", 1)
        owed = int(value or 0) - int(reversed_value or 0)
        pairs.append(
            {
                "funding": funding,
                "operating": operating,
                "redemptions": int(n or 0),
                "reversals": int(rev or 0),
                "owed": owed,
            }
        )
        balance[funding] = balance.get(funding, 0) - owed
        balance[operating] = balance.get(operating, 0) + owed
    if actor.role is Role.OFFICIAL:
        seen = _in_subtree(
            conn, actor.scope or "", {p["funding"] for p in pairs} | {p["operating"] for p in pairs}
        )
        pairs = [p for p in pairs if p["funding"] in seen or p["operating"] in seen]
        balance = {k: v for k, v in balance.items() if k in seen}
    return {
        "from": start[:7],
        "to": end[:7],
        "pairs": pairs,
        "balances": [{"union": k, "net": v} for k, v in sorted(balance.items())],
        "net_total": sum(v for v in balance.values()),
    }


def _in_subtree(conn: Connection, scope: str, codes: Iterable[str]) -> set[str]:
    want = sorted(set(codes))
    out: set[str] = set()
    for i in range(0, len(want), _CHUNK):
        rows = conn.execute(
            select(u.unions.c.code, u.unions.c.path).where(
                u.unions.c.code.in_(want[i : i + _CHUNK])
            )
        ).all()
        out.update(r.code for r in rows if f"/{scope}/" in r.path)
    return out


# -- anomalies ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnomalyRules:
    """When something is reported (docs/stats.md section 3.5)."""

    peer_factor: float = 3.0  # a station or member above this many times the peers' median
    min_count: int = 10  # ... and at least this many redemptions
    burst_per_minute: int = 20  # a station posting this many in one minute
    conflicts: int = 3  # a station with this many conflicts or refused records
    refusals: int = 10  # a station whose online redemptions were refused this many times


def anomalies(
    conn: Connection, actor: Actor, start: str, end: str, rules: AnomalyRules = AnomalyRules()
) -> list[dict[str, Any]]:
    """What looks wrong over ``start..end`` (China dates), in the actor's view: stations and
    members far above their peers, bursts, many conflicts, redemptions outside opening hours."""
    if actor.role not in (Role.SYSTEM, Role.AUDITOR, Role.OFFICIAL):
        raise Forbidden("anomaly reports are for officials and auditors")
    st = stations.c
    srows = conn.execute(
        select(st.station_id, st.kind, st.union_code, st.hours, u.unions.c.path).join(
            u.unions, u.unions.c.code == st.union_code
        )
    ).all()
    mine = {
        s.station_id
        for s in srows
        if actor.role is not Role.OFFICIAL or f"/{actor.scope}/" in s.path
    }
    r = redemptions.c
    in_range = and_(r.at >= _utc_bound(start), r.at < _utc_bound(_next(end)))
    return [
        *_station_anomalies(conn, srows, mine, (start, end), rules),
        *_member_anomalies(conn, actor, in_range, rules),
        *_time_anomalies(conn, srows, mine, in_range, rules),
        *_refusal_anomalies(conn, mine, (start, end), rules),
    ]


def _refusal_anomalies(
    conn: Connection, mine: set[str], span: tuple[str, str], rules: AnomalyRules
) -> list[dict[str, Any]]:
    c = refusal_counts.c
    per: dict[str, dict[str, int]] = {}
    for station, reason, n in conn.execute(
        select(c.station_id, c.reason, func.sum(c.count))
        .where(c.day >= span[0], c.day <= span[1])
        .group_by(c.station_id, c.reason)
    ):
        if station in mine:
            per.setdefault(station, {})[reason] = int(n)
    out = []
    for station, reasons in sorted(per.items()):
        total = sum(reasons.values())
        if total >= rules.refusals:
            why = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items(), key=lambda x: -x[1]))
            out.append(
                _anomaly("repeated-refusals", station, total, None, f"{total} refused: {why}")
            )
    return out


def _anomaly(
    kind: str, subject: str, count: int, median: float | None, detail: str
) -> dict[str, Any]:
    return {
        "kind": kind,
        "subject": subject,
        "count": count,
        "peer_median": median,
        "detail": detail,
    }


def _station_anomalies(
    conn: Connection,
    srows: Sequence[Any],
    mine: set[str],
    span: tuple[str, str],
    rules: AnomalyRules,
) -> list[dict[str, Any]]:
    c = stats_cells.c
    totals = {
        r[0][2:]: (int(r[1] or 0), int(r[2] or 0), int(r[3] or 0))
        for r in conn.execute(
            select(c.scope, func.sum(c.redemptions), func.sum(c.conflicts), func.sum(c.refused))
            .where(c.scope >= "S:", c.scope < "S;", c.period >= span[0], c.period <= span[1])
            .group_by(c.scope)
        )
    }
    by_kind: dict[str, list[int]] = {}
    for s in srows:
        by_kind.setdefault(s.kind, []).append(totals.get(s.station_id, (0, 0, 0))[0])
    out = []
    for s in srows:
        if s.station_id not in mine:
            continue
        n, conflicts, refused = totals.get(s.station_id, (0, 0, 0))
        median = statistics.median(by_kind[s.kind])
        if n >= rules.min_count and n > rules.peer_factor * max(median, 1):
            peers = len(by_kind[s.kind])
            out.append(
                _anomaly(
                    "station-above-peers",
                    s.station_id,
                    n,
                    median,
                    f"{n} redemptions; the median of {peers} {s.kind} stations is {median}",
                )
            )
        if conflicts + refused >= rules.conflicts:
            out.append(
                _anomaly(
                    "many-conflicts",
                    s.station_id,
                    conflicts + refused,
                    None,
                    f"{conflicts} offline conflicts, {refused} refused records",
                )
            )
    return out


def _member_anomalies(
    conn: Connection, actor: Actor, in_range: Any, rules: AnomalyRules
) -> list[dict[str, Any]]:
    r = redemptions.c
    counts = conn.execute(
        select(r.member_id, r.home_union, func.count())
        .where(in_range)
        .group_by(r.member_id, r.home_union)
    ).all()
    if not counts:
        return []
    median = statistics.median(int(x[2]) for x in counts)
    homes = None
    if actor.role is Role.OFFICIAL:
        homes = _in_subtree(conn, actor.scope or "", {x[1] for x in counts})
    return [
        _anomaly(
            "member-above-peers",
            member,
            int(n),
            median,
            f"{n} redemptions; the median member served had {median}",
        )
        for member, home, n in counts
        if n >= rules.min_count
        and n > rules.peer_factor * max(median, 1)
        and (homes is None or home in homes)
    ]


def _time_anomalies(
    conn: Connection, srows: Sequence[Any], mine: set[str], in_range: Any, rules: AnomalyRules
) -> list[dict[str, Any]]:
    r = redemptions.c
    minute = func.substr(r.at, 1, 16)
    out = [
        _anomaly("burst", station, int(n), None, f"{n} redemptions in the minute from {at} UTC")
        for station, at, n in conn.execute(
            select(r.station_id, minute, func.count())
            .where(in_range)
            .group_by(r.station_id, minute)
            .having(func.count() >= rules.burst_per_minute)
            .order_by(r.station_id, minute)
        )
        if station in mine
    ]
    hours = {s.station_id: json.loads(s.hours) for s in srows if s.hours and s.station_id in mine}
    if not hours:
        return out
    for station, at in conn.execute(
        select(r.station_id, r.at)
        .where(in_range, r.station_id.in_(sorted(hours)))
        .order_by(r.redemption)
    ):
        local = datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone(vs.CHINA)
        if not _open_at(hours[station], local):
            when = local.strftime("%Y-%m-%d %H:%M")
            out.append(
                _anomaly("outside-hours", station, 1, None, f"redeemed at {when} China time")
            )
    return out


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _open_at(hours: dict[str, list[list[str]]], local: datetime) -> bool:
    hm = local.strftime("%H:%M")
    return any(a <= hm < b for a, b in hours.get(_DAYS[local.weekday()], ()))


def _utc_bound(day: str) -> str:
    """A China date's first instant as an entry-time string prefix comparable with ``at``."""
    lo, _ = _day_bounds(day)
    return datetime.fromtimestamp(lo, UTC).strftime("%Y-%m-%dT%H:%M:%S")


# -- export ------------------------------------------------------------------------------------


def pinned(engine: Engine, read: Callable[[Connection], T], *, attempts: int = 8) -> Pinned[T]:
    """``read(conn)`` and the (size, root) of the ledger it saw: the head is read before and
    after, and the read repeated until no append came in between (projections change only
    with the head, in the same transaction)."""
    for _ in range(attempts):
        with engine.connect() as conn:
            before = conn.execute(select(log_head.c.size, log_head.c.root)).one()
            value = read(conn)
            after = conn.execute(select(log_head.c.size)).scalar()
        if after == before.size:
            return Pinned(value, int(before.size), bytes(before.root))
    raise LedgerBusy("the ledger kept growing while the figures were read; try again")


class LedgerBusy(Conflict):
    code = "ledger-busy"
    status = 503


@dataclass(frozen=True, slots=True)
class Pinned(Generic[T]):
    value: T
    size: int
    root: bytes

    def pin(self) -> dict[str, Any]:
        """How a published document names the chain it was computed at."""
        return {"size": self.size, "root": base64.b64encode(self.root).decode()}


def export(engine: Engine) -> Pinned[vs.Figures]:
    """Every figure, pinned (docs/stats.md section 4)."""
    return pinned(engine, lambda conn: _read_all(conn, -1))


def _read_all(conn: Connection, size: int) -> vs.Figures:
    if size < 0:
        size = int(conn.execute(select(log_head.c.size)).scalar_one())
    c = stats_cells.c
    cells = {
        (r[0], r[1], r[2]): tuple(int(x) for x in r[3:])
        for r in conn.execute(select(c.scope, c.program, c.period, *(c[f] for f in vs.FIELDS)))
    }
    mc = stats_members.c
    members = {
        (r[0], r[1], r[2]): int(r[3])
        for r in conn.execute(select(mc.scope, mc.program, mc.period, mc.members))
    }
    budgets = {
        (r[0], r[1]): int(r[2])
        for r in conn.execute(
            select(budget_usage.c.program_id, budget_usage.c.funding_union, budget_usage.c.used)
        )
    }
    return vs.Figures(size, cells, members, budgets)
