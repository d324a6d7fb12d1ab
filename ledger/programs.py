"""Benefit programs: who may get what, how often, from which budget, and where.

A program belongs to an owner union (its scope is the owner's subtree) and is a sequence of
*versions*: ``ProgramCreated`` is version 1, each ``ProgramRevised`` the next one, effective
from a time that is never in the past (rules never change retroactively), and
``ProgramClosed`` ends it. A version's rules (:class:`Rules`, stored canonically in the event):

- ``kind``: ``universal`` (普惠: every active member of the owner's subtree) or ``targeted``
  (特殊: an eligibility rule over member groups, membership tenure and home-union subtree);
- ``period``: the dates it runs, ``from`` .. ``until`` inclusive, China time (UTC+8);
- ``quota``: ``count`` units per member per ``per`` (``program``: the whole period; or the
  calendar ``month``, ISO ``week`` or ``day``, China time);
- ``unit_value`` in fen (0 for services: water, a rest, charging) and ``max_quantity`` per
  redemption;
- ``budget`` in fen (``null``: none, for value-0 services), optionally ``allocations`` to
  unions of the owner's subtree (disjoint subtrees): a member whose home union lies under an
  allocation is funded by that union, anyone else by the owner from what is not allocated;
- ``where``: the stations that may redeem it (station ids, station kinds, a union subtree;
  every criterion given must hold; the subtree defaults to the owner's);
- ``offline``: whether an offline station may redeem it, and its limits (the station issue);
- ``no_stack_with``: programs (typically of other union levels) whose redemption by the same
  member in this program's period excludes this one, and the other way round.

Tables (projections): ``programs`` (id, owner, name, status), ``program_versions`` (every
version's rules as canonical JSON), ``program_no_stack`` (the declared pairs, both ways).
"""

from __future__ import annotations

import enum
import functools
import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    insert,
    select,
    update,
)

from ledger import unions
from ledger.domain import Actor, Conflict, Forbidden, Invalid, NotFound, Role
from ledger.members import Group
from ledger.schema import log_head, projection_metadata
from ledger.sequencer import Tx
from ledger.stations import Kind as StationKind
from verifier.canonical import canonical_bytes
from verifier.entry import Entry
from verifier.entry import format_entry_time as format_time

CHINA = timezone(timedelta(hours=8), "CST")  # no daylight saving since 1991
MAX_COUNT = 1000
MAX_FEN = 10**12  # ten billion yuan: any budget is below
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}\Z")


class Kind(enum.StrEnum):
    UNIVERSAL = "universal"  # 普惠
    TARGETED = "targeted"  # 特殊


class Per(enum.StrEnum):
    PROGRAM = "program"
    MONTH = "month"
    WEEK = "week"
    DAY = "day"


class UnknownProgram(NotFound):
    """No such program, or not visible to this actor."""

    code = "unknown-program"


class DuplicateProgram(Conflict):
    """A program with this id exists."""

    code = "duplicate-program"


class BadRules(Invalid):
    """The program's rules are malformed or impossible."""

    code = "invalid-program-rules"


class ProgramClosed(Conflict):
    """The program is closed."""

    code = "program-closed"


# -- the rules -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rules:
    """One version's rules, validated. ``to_json`` is the canonical form stored in events."""

    name: str
    kind: Kind
    groups_any: tuple[str, ...]
    min_tenure_days: int | None
    home_subtree: str | None
    start: date
    until: date
    quota_count: int
    quota_per: Per
    unit_value: int
    max_quantity: int
    budget: int | None
    allocations: dict[str, int]
    stations: tuple[str, ...]
    station_kinds: tuple[str, ...]
    where_subtree: str | None
    offline_allowed: bool
    offline_per_member_per_day: int
    offline_station_daily_value: int
    no_stack_with: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "eligibility": {
                "groups_any": list(self.groups_any),
                "min_tenure_days": self.min_tenure_days,
                "home_subtree": self.home_subtree,
            },
            "period": {"from": self.start.isoformat(), "until": self.until.isoformat()},
            "quota": {"count": self.quota_count, "per": self.quota_per.value},
            "unit_value": self.unit_value,
            "max_quantity": self.max_quantity,
            "budget": self.budget,
            "allocations": dict(sorted(self.allocations.items())),
            "where": {
                "stations": list(self.stations),
                "station_kinds": list(self.station_kinds),
                "subtree": self.where_subtree,
            },
            "offline": {
                "allowed": self.offline_allowed,
                "per_member_per_day": self.offline_per_member_per_day,
                "station_daily_value": self.offline_station_daily_value,
            },
            "no_stack_with": list(self.no_stack_with),
        }

    def runs_on(self, day: date) -> bool:
        return self.start <= day <= self.until

    def period_key(self, at: datetime) -> str:
        """The quota period that ``at`` falls in (China time)."""
        day = at.astimezone(CHINA).date()
        if self.quota_per is Per.DAY:
            return day.isoformat()
        if self.quota_per is Per.WEEK:
            year, week, _ = day.isocalendar()
            return f"{year}-W{week:02d}"
        if self.quota_per is Per.MONTH:
            return day.isoformat()[:7]
        return "program"

    def period_end(self, at: datetime) -> datetime:
        """When the quota period of ``at`` ends (the next one starts), China time; for a
        per-program quota, the day after the program's last day."""
        day = at.astimezone(CHINA).date()
        if self.quota_per is Per.DAY:
            nxt = day + timedelta(days=1)
        elif self.quota_per is Per.WEEK:
            nxt = day + timedelta(days=7 - day.weekday())
        elif self.quota_per is Per.MONTH:
            nxt = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
        else:
            nxt = self.until + timedelta(days=1)
        return datetime(nxt.year, nxt.month, nxt.day, tzinfo=CHINA)


def _obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRules(f"{what} must be an object")
    return value


def _int(value: object, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise BadRules(f"{what} must be an integer from {low} to {high}")
    return value


def _day(value: object, what: str) -> date:
    if not isinstance(value, str) or not _DAY.match(value):
        raise BadRules(f"{what} must be a date YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadRules(f"{what} is not a real date") from None


def _ids(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and _ID.match(v) for v in value):
        raise BadRules(f"{what} must be a list of ids")
    if len(set(value)) != len(value):
        raise BadRules(f"{what} lists an id twice")
    return tuple(sorted(value))


def _code(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _ID.match(value):
        raise BadRules(f"{what} must be a union code")
    return value


_KNOWN = {
    "name",
    "kind",
    "eligibility",
    "period",
    "quota",
    "unit_value",
    "max_quantity",
    "budget",
    "allocations",
    "where",
    "offline",
    "no_stack_with",
}


def _member(d: dict[str, Any], name: str, known: frozenset[str] | None) -> dict[str, Any]:
    """The sub-object ``name`` of the rules (absent or null: empty); with ``known``, a member
    it does not know is refused (a misspelt ``where.station_kind`` must not make a program
    redeemable anywhere)."""
    value = d.get(name)
    if value is None:
        return {}
    found = _obj(value, name)
    if known is not None and set(found) - known:
        raise BadRules(f"unknown {name} fields: {', '.join(sorted(set(found) - known))}")
    return found


def _eligibility(d: dict[str, Any], kind: Kind) -> tuple[tuple[str, ...], int | None, str | None]:
    elig = _member(d, "eligibility", frozenset({"groups_any", "min_tenure_days", "home_subtree"}))
    groups = _ids(elig.get("groups_any"), "eligibility.groups_any")
    for g in groups:
        if g not in Group.__members__.values():
            raise BadRules(f"unknown group {g!r}")
    tenure = elig.get("min_tenure_days")
    if tenure is not None:
        tenure = _int(tenure, "eligibility.min_tenure_days", 0, 36500)
    home = _code(elig.get("home_subtree"), "eligibility.home_subtree")
    if kind is Kind.TARGETED and not (groups or tenure or home):
        raise BadRules("a targeted program needs an eligibility rule (groups, tenure or subtree)")
    if kind is Kind.UNIVERSAL and (groups or tenure or home):
        raise BadRules("a universal program has no eligibility rule: make it targeted")
    return groups, tenure, home


def _budget(d: dict[str, Any]) -> tuple[int | None, dict[str, int]]:
    budget = d.get("budget")
    if budget is not None:
        budget = _int(budget, "budget", 0, MAX_FEN)
    raw = _member(d, "allocations", None)
    allocations = {}
    for union, amount in raw.items():
        _code(union, "an allocation's union")
        allocations[union] = _int(amount, f"allocations.{union}", 0, MAX_FEN)
    if allocations and budget is None:
        raise BadRules("allocations need a budget")
    if budget is not None and sum(allocations.values()) > budget:
        raise BadRules("the allocations exceed the budget")
    return budget, allocations


def _offline(d: dict[str, Any]) -> tuple[bool, int, int]:
    offline = _member(
        d, "offline", frozenset({"allowed", "per_member_per_day", "station_daily_value"})
    )
    allowed = offline.get("allowed", False)
    if not isinstance(allowed, bool):
        raise BadRules("offline.allowed must be true or false")
    per_day = _int(offline.get("per_member_per_day", 0), "offline.per_member_per_day", 0, 1000)
    daily = _int(offline.get("station_daily_value", 0), "offline.station_daily_value", 0, MAX_FEN)
    if allowed and per_day == 0:
        raise BadRules("offline redemption needs offline.per_member_per_day of at least 1")
    return allowed, per_day, daily


def _enum(cls: type[Kind] | type[Per], value: object, message: str) -> Any:
    try:
        return cls(str(value))
    except ValueError:
        raise BadRules(message) from None


def parse_rules(doc: object) -> Rules:
    """Validate a rules document (the API's body, or an event's ``rules``).

    Raises:
        BadRules: with what is wrong.
    """
    d = _obj(doc, "rules")
    unknown = set(d) - _KNOWN
    if unknown:
        raise BadRules(f"unknown rule fields: {', '.join(sorted(unknown))}")
    name = d.get("name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200:
        raise BadRules("name must be 1 to 200 characters")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise BadRules("name must not hold control, format or unpaired surrogate characters")
    kind = _enum(Kind, d.get("kind"), "kind must be universal or targeted")
    groups, tenure, home = _eligibility(d, kind)
    period = _member(d, "period", frozenset({"from", "until"}))
    start, until = (
        _day(period.get("from"), "period.from"),
        _day(period.get("until"), "period.until"),
    )
    if until < start:
        raise BadRules("the period ends before it starts")
    quota = _member(d, "quota", frozenset({"count", "per"}))
    budget, allocations = _budget(d)
    where = _member(d, "where", frozenset({"stations", "station_kinds", "subtree"}))
    kinds = _ids(where.get("station_kinds"), "where.station_kinds")
    unknown_kinds = set(kinds) - {k.value for k in StationKind}
    if unknown_kinds:
        raise BadRules(f"unknown station kinds: {', '.join(sorted(unknown_kinds))}")
    allowed, per_day, daily = _offline(d)
    return Rules(
        name=name.strip(),
        kind=kind,
        groups_any=groups,
        min_tenure_days=tenure,
        home_subtree=home,
        start=start,
        until=until,
        quota_count=_int(quota.get("count"), "quota.count", 1, MAX_COUNT),
        quota_per=_enum(Per, quota.get("per"), "quota.per must be program, month, week or day"),
        unit_value=_int(d.get("unit_value"), "unit_value", 0, MAX_FEN),
        max_quantity=_int(d.get("max_quantity", 1), "max_quantity", 1, MAX_COUNT),
        budget=budget,
        allocations=allocations,
        stations=_ids(where.get("stations"), "where.stations"),
        station_kinds=kinds,
        where_subtree=_code(where.get("subtree"), "where.subtree"),
        offline_allowed=allowed,
        offline_per_member_per_day=per_day,
        offline_station_daily_value=daily,
        no_stack_with=_ids(d.get("no_stack_with"), "no_stack_with"),
    )


# -- tables --------------------------------------------------------------------------------------

programs = Table(
    "programs",
    projection_metadata,
    Column("program_id", String(64), primary_key=True),
    Column("owner", String(32), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("status", String(8), nullable=False),  # open | closed
    Column("created_at", String(32), nullable=False),
    Column("closed_at", String(32), nullable=True),
)

program_versions = Table(
    "program_versions",
    projection_metadata,
    Column("program_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("effective", String(32), nullable=False),
    Column("rules", Text, nullable=False),  # canonical JSON
)

program_no_stack = Table(
    "program_no_stack",
    projection_metadata,
    Column("program_id", String(64), primary_key=True),
    Column("other", String(64), primary_key=True),
)


# Read on every redemption: built once.
_PROGRAM = select(programs).where(programs.c.program_id == bindparam("program"))
_VERSION_AT = (
    select(program_versions)
    .where(
        program_versions.c.program_id == bindparam("program"),
        program_versions.c.effective <= bindparam("at"),
    )
    .order_by(program_versions.c.version.desc())
    .limit(1)
)
_PAIRS = select(program_no_stack.c.other).where(
    program_no_stack.c.program_id == bindparam("program")
)


@dataclass(frozen=True, slots=True)
class ProgramRow:
    program_id: str
    owner: str
    name: str
    status: str
    created_at: str
    closed_at: str | None


@dataclass(frozen=True, slots=True)
class Version:
    program_id: str
    version: int
    effective: str
    rules: Rules


def _program(r: Any) -> ProgramRow:
    return ProgramRow(r.program_id, r.owner, r.name, r.status, r.created_at, r.closed_at)


def get_program(conn: Connection, program_id: str) -> ProgramRow | None:
    row = conn.execute(_PROGRAM, {"program": program_id}).first()
    return None if row is None else _program(row)


def visible_program(conn: Connection, actor: Actor, program_id: str) -> ProgramRow:
    """The program if the actor may see it: officials whose scope contains the owner or whom
    the program reaches (its owner is above them), auditors, stations and members (programs are
    public facts).

    Raises:
        UnknownProgram.
    """
    row = get_program(conn, program_id)
    if row is None:
        raise UnknownProgram(f"no program {program_id!r}")
    if (
        actor.role is Role.OFFICIAL
        and actor.scope is not None
        and not (
            unions.is_within(conn, actor.scope, row.owner)
            or unions.is_within(conn, row.owner, actor.scope)
        )
    ):
        raise UnknownProgram(f"no program {program_id!r}")
    return row


@functools.lru_cache(maxsize=1024)
def stored_rules(text: str) -> Rules:
    """The rules of a stored version (canonical JSON text). A version never changes, so its
    parse is cached: a redemption reads the version in force on every request."""
    return parse_rules(json.loads(text))


def versions(conn: Connection, program_id: str) -> list[Version]:
    rows = conn.execute(
        select(program_versions)
        .where(program_versions.c.program_id == program_id)
        .order_by(program_versions.c.version)
    )
    return [Version(r.program_id, r.version, r.effective, stored_rules(r.rules)) for r in rows]


def version_at(conn: Connection, program_id: str, at: str) -> Version | None:
    """The version in force at time ``at`` (RFC 3339 UTC), or None before the first."""
    row = conn.execute(_VERSION_AT, {"program": program_id, "at": at}).first()
    if row is None:
        return None
    return Version(row.program_id, row.version, row.effective, stored_rules(row.rules))


def name_at(conn: Connection, row: ProgramRow, at: str) -> str:
    """The program's name in the version in force at ``at`` (``programs.name`` is version
    1's: a later version renames it only from its effective time)."""
    version = version_at(conn, row.program_id, at)
    return row.name if version is None else version.rules.name


def list_programs(
    conn: Connection, actor: Actor, *, union: str | None = None, status: str | None = None
) -> list[ProgramRow]:
    """Programs owned in ``union``'s subtree or above it (those that reach its members), as the
    actor may see them; all for auditors without ``union``."""
    query = select(programs).order_by(programs.c.program_id)
    if status is not None:
        query = query.where(programs.c.status == status)
    rows = [_program(r) for r in conn.execute(query)]
    root = union or (actor.scope if actor.role is Role.OFFICIAL else None)
    if root is None:
        return rows
    return [
        r
        for r in rows
        if unions.is_within(conn, root, r.owner) or unions.is_within(conn, r.owner, root)
    ]


def declares_stacking(conn: Connection, program_id: str) -> bool:
    """Whether any version of any program ever declared that it does not stack with
    ``program_id`` or the reverse (else :func:`not_stacking` is empty at every time)."""
    return conn.execute(_PAIRS, {"program": program_id}).first() is not None


def not_stacking(conn: Connection, program_id: str, at: str | None = None) -> list[str]:
    """The programs that do not stack with ``program_id`` at time ``at`` (RFC 3339 UTC;
    default: the time of the ledger's latest entry): declared by the version in force of either
    side. ``program_no_stack`` holds every pair any version ever declared (the candidates);
    the versions in force decide."""
    if at is None:
        at = conn.execute(select(log_head.c.last_time).where(log_head.c.id == 1)).scalar() or ""
    candidates = list(conn.execute(_PAIRS, {"program": program_id}).scalars())
    if not candidates:  # the common case: nothing declared either way
        return []
    mine = version_at(conn, program_id, at)
    out = set()
    for other in candidates:
        theirs = version_at(conn, other, at)
        if (mine is not None and other in mine.rules.no_stack_with) or (
            theirs is not None and program_id in theirs.rules.no_stack_with
        ):
            out.add(other)
    return sorted(out)


# -- projection ----------------------------------------------------------------------------------


class ProgramsProjection:
    name = "programs"
    tables = (programs, program_versions, program_no_stack)

    def apply(self, conn: Connection, entry: Entry) -> None:
        body = entry.body
        if entry.type == "ProgramCreated":
            conn.execute(
                insert(programs).values(
                    program_id=body["program"],
                    owner=body["owner"],
                    name=body["rules"]["name"],
                    status="open",
                    created_at=entry.time,
                )
            )
            self._version(conn, body)
        elif entry.type == "ProgramRevised":
            self._version(conn, body)  # ``programs.name`` stays version 1's: see name_at
        elif entry.type == "ProgramClosed":
            conn.execute(
                update(programs)
                .where(programs.c.program_id == body["program"])
                .values(status="closed", closed_at=entry.time)
            )

    @staticmethod
    def _version(conn: Connection, body: Any) -> None:
        program = body["program"]
        conn.execute(
            insert(program_versions).values(
                program_id=program,
                version=body["version"],
                effective=body["effective"],
                rules=canonical_bytes(body["rules"]).decode(),
            )
        )
        for other in body["rules"].get("no_stack_with", []):
            for a, b in ((program, other), (other, program)):
                exists = conn.execute(
                    select(program_no_stack.c.other).where(
                        program_no_stack.c.program_id == a, program_no_stack.c.other == b
                    )
                ).first()
                if exists is None:
                    conn.execute(insert(program_no_stack).values(program_id=a, other=b))

    def flush(self, conn: Connection) -> None:
        pass

    def reset(self) -> None:
        pass


# -- commands ------------------------------------------------------------------------------------


def _check_scope(conn: Connection, actor: Actor, owner: str, rules: Rules) -> None:
    """The owner in the official's subtree; every union the rules name in the owner's."""
    if actor.role not in (Role.OFFICIAL, Role.SYSTEM):
        raise Forbidden("only officials manage programs")
    unions.require_active_union(conn, actor, owner)
    named = [rules.home_subtree, rules.where_subtree, *rules.allocations]
    for code in (c for c in named if c is not None):
        if unions.get_union(conn, code) is None or not unions.is_within(conn, owner, code):
            raise BadRules(f"union {code!r} is not in the owner's subtree")
    allocated = sorted(rules.allocations)
    for a in allocated:
        if a == owner:
            raise BadRules("allocations go to unions below the owner")
        for b in allocated:
            if a != b and unions.is_within(conn, a, b):
                raise BadRules(f"allocations to {a} and {b} overlap")
    for other in rules.no_stack_with:
        if get_program(conn, other) is None:
            raise BadRules(f"no_stack_with names an unknown program {other!r}")


def create_program(tx: Tx, actor: Actor, *, program: str, owner: str, rules: object) -> Entry:
    """``ProgramCreated``: version 1, effective now.

    Raises:
        Forbidden, BadRules, UnknownUnion (owner outside the official's subtree),
        DuplicateProgram.
    """
    if not isinstance(program, str) or not _ID.match(program):
        raise BadRules("a program id is 1-64 letters, digits and ._:-")
    parsed = parse_rules(rules)
    _check_scope(tx.conn, actor, owner, parsed)
    if get_program(tx.conn, program) is not None:
        raise DuplicateProgram(f"program {program!r} exists")
    if program in parsed.no_stack_with:
        raise BadRules("a program always stacks with itself: its quota decides")
    return tx.append(
        "ProgramCreated",
        actor.ledger_actor,
        {
            "program": program,
            "owner": owner,
            "version": 1,
            "effective": format_time(tx.now),
            "rules": parsed.to_json(),
        },
    )


def revise_program(
    tx: Tx, actor: Actor, *, program: str, rules: object, effective: datetime | None = None
) -> Entry:
    """``ProgramRevised``: the next version, in force from ``effective`` (now by default; never
    in the past). Its budget and allocations may not fall below what is already used.

    Raises:
        UnknownProgram, ProgramClosed, BadRules.
    """
    row = visible_program(tx.conn, actor, program)
    if row.status != "open":
        raise ProgramClosed("a closed program does not change")
    parsed = parse_rules(rules)
    _check_scope(tx.conn, actor, row.owner, parsed)
    if program in parsed.no_stack_with:
        raise BadRules("a program always stacks with itself: its quota decides")
    when = tx.now if effective is None else effective
    if when.tzinfo is None or when < tx.now - timedelta(seconds=1):
        raise BadRules("a new version takes effect now or later, never in the past")
    from ledger.redemptions import budget_used  # noqa: PLC0415  (redemptions imports us)

    used = budget_used(tx.conn, program)
    if parsed.budget is not None and sum(used.values()) > parsed.budget:
        raise BadRules("the budget would fall below what is already spent")
    for union, amount in parsed.allocations.items():
        if used.get(union, 0) > amount:
            raise BadRules(f"the allocation to {union} would fall below what it spent")
    if parsed.budget is not None:
        owner_spent = sum(v for u, v in used.items() if u not in parsed.allocations)
        if owner_spent > parsed.budget - sum(parsed.allocations.values()):
            raise BadRules("the owner's unallocated share would fall below what it spent")
    latest = versions(tx.conn, program)[-1]
    return tx.append(
        "ProgramRevised",
        actor.ledger_actor,
        {
            "program": program,
            "version": latest.version + 1,
            "effective": format_time(max(when, tx.now)),
            "rules": parsed.to_json(),
        },
    )


def close_program(tx: Tx, actor: Actor, *, program: str) -> Entry:
    """``ProgramClosed``: no redemption from now on (reversals stay possible).

    Raises:
        UnknownProgram, Forbidden, ProgramClosed.
    """
    row = visible_program(tx.conn, actor, program)
    if actor.role not in (Role.OFFICIAL, Role.SYSTEM):
        raise Forbidden("only officials manage programs")
    unions.require_active_union(tx.conn, actor, row.owner)
    if row.status != "open":
        raise ProgramClosed("the program is already closed")
    return tx.append("ProgramClosed", actor.ledger_actor, {"program": program})


__all__ = [
    "CHINA",
    "BadRules",
    "DuplicateProgram",
    "Kind",
    "Per",
    "ProgramClosed",
    "ProgramRow",
    "ProgramsProjection",
    "Rules",
    "UnknownProgram",
    "Version",
    "close_program",
    "create_program",
    "format_time",
    "get_program",
    "list_programs",
    "name_at",
    "not_stacking",
    "parse_rules",
    "revise_program",
    "version_at",
    "versions",
    "visible_program",
]
