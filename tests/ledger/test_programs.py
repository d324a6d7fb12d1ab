"""Benefit programs: the rules document (round trip, every malformed field refused), the quota
periods in China time (days, ISO weeks, months, across year boundaries), and the program
commands on SQLite and PostgreSQL (create, revise, close; scope; revisions never retroactive;
budgets never below what is spent; rebuild)."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from keys import PrivateKey
from ledger import programs, unions
from ledger.domain import SYSTEM, Actor, Forbidden, Role
from ledger.members import Group
from ledger.programs import (
    CHINA,
    MAX_COUNT,
    MAX_FEN,
    BadRules,
    DuplicateProgram,
    Per,
    ProgramClosed,
    Rules,
    UnknownProgram,
    close_program,
    create_program,
    list_programs,
    not_stacking,
    parse_rules,
    revise_program,
    version_at,
    versions,
    visible_program,
)
from ledger.projections import compare, default_projections, rebuild
from ledger.redemptions import BudgetExhausted, _check_budget, budget_used
from ledger.sequencer import Event, Tx
from ledger.stations import Kind as StationKind
from tests.ledger.conftest import Ledger, open_ledger
from verifier.canonical import canonical_bytes
from verifier.entry import format_entry_time, parse_entry

# -- the rules document --------------------------------------------------------------------------

IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", fullmatch=True)
CODES = st.from_regex(r"[0-9A-Za-z][0-9A-Za-z-]{0,31}", fullmatch=True)
GROUPS = sorted(g.value for g in Group)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def valid_rules(draw: st.DrawFn) -> dict[str, Any]:
    """A valid rules document, with optional members left out at random."""
    kind = draw(st.sampled_from(["universal", "targeted"]))
    start = draw(st.dates(date(2000, 1, 1), date(2099, 1, 1)))
    doc: dict[str, Any] = {
        "name": draw(
            st.text(st.characters(exclude_categories=("C",)), min_size=1, max_size=200).filter(
                str.strip
            )
        ),
        "kind": kind,
        "period": {
            "from": start.isoformat(),
            "until": (start + timedelta(days=draw(st.integers(0, 1000)))).isoformat(),
        },
        "quota": {
            "count": draw(st.integers(1, MAX_COUNT)),
            "per": draw(st.sampled_from([p.value for p in Per])),
        },
        "unit_value": draw(st.integers(0, MAX_FEN)),
    }
    if kind == "targeted":
        groups = draw(st.lists(st.sampled_from(GROUPS), unique=True, max_size=3))
        tenure = draw(st.none() | st.integers(0, 36500))
        home = draw(st.none() | CODES)
        if not (groups or tenure or home):
            groups = [draw(st.sampled_from(GROUPS))]
        eligibility = {"groups_any": groups, "min_tenure_days": tenure, "home_subtree": home}
        doc["eligibility"] = {
            k: v for k, v in eligibility.items() if v is not None or draw(st.booleans())
        }
    elif draw(st.booleans()):
        doc["eligibility"] = draw(
            st.sampled_from(
                [
                    {},
                    None,
                    {"groups_any": [], "min_tenure_days": None, "home_subtree": None},
                    {"groups_any": None},
                ]
            )
        )
    if draw(st.booleans()):
        doc["max_quantity"] = draw(st.integers(1, MAX_COUNT))
    budget = draw(st.none() | st.integers(0, MAX_FEN))
    if budget is not None or draw(st.booleans()):
        doc["budget"] = budget
    if budget is not None and draw(st.booleans()):
        unions_ = draw(st.lists(CODES, unique=True, max_size=4))
        share = budget // max(len(unions_), 1)
        doc["allocations"] = {u: draw(st.integers(0, share)) for u in unions_}
    if draw(st.booleans()):
        where = {
            "stations": draw(st.lists(IDS, unique=True, max_size=3)),
            "station_kinds": draw(
                st.lists(st.sampled_from([k.value for k in StationKind]), unique=True, max_size=3)
            ),
            "subtree": draw(st.none() | CODES),
        }
        doc["where"] = {k: v for k, v in where.items() if draw(st.booleans())}
    if draw(st.booleans()):
        allowed = draw(st.booleans())
        offline = {
            "allowed": allowed,
            "per_member_per_day": draw(st.integers(1 if allowed else 0, 1000)),
            "station_daily_value": draw(st.integers(0, MAX_FEN)),
        }
        doc["offline"] = {
            k: v
            for k, v in offline.items()
            if (k == "per_member_per_day" and allowed) or draw(st.booleans())
        }
    if draw(st.booleans()):
        doc["no_stack_with"] = draw(st.lists(IDS, unique=True, max_size=3))
    return doc


@given(valid_rules())
def test_valid_rules_parse_and_round_trip_through_canonical_json(doc: dict[str, Any]) -> None:
    rules = parse_rules(doc)
    stored = rules.to_json()
    assert parse_rules(stored) == rules
    assert parse_rules(json.loads(canonical_bytes(stored))) == rules  # as read from an event
    assert parse_rules(stored).to_json() == stored
    # Every member is there, with its default when the document left it out.
    assert set(stored) == programs._KNOWN
    assert rules.name == doc["name"].strip()
    assert rules.quota_count == doc["quota"]["count"]
    assert rules.max_quantity == doc.get("max_quantity", 1)
    assert rules.budget == doc.get("budget")
    assert stored["allocations"] == (doc.get("allocations") or {})
    assert stored["no_stack_with"] == sorted(doc.get("no_stack_with") or [])
    where = doc.get("where") or {}
    assert stored["where"]["stations"] == sorted(where.get("stations") or [])
    assert stored["where"]["subtree"] == where.get("subtree")
    offline = doc.get("offline") or {}
    assert stored["offline"] == {
        "allowed": offline.get("allowed", False),
        "per_member_per_day": offline.get("per_member_per_day", 0),
        "station_daily_value": offline.get("station_daily_value", 0),
    }


# Each malformed field: where it is, and values that must be refused there.
NOT_INT = st.none() | st.booleans() | st.floats() | st.text(max_size=5) | st.lists(st.integers())
BAD_IDS = st.one_of(
    st.just("with space"),
    st.just(""),
    st.just("-leading"),
    st.just("x" * 65),
    st.just("中文"),
    st.integers(),
    st.none(),
)
NON_EMPTY_NON_OBJECT = st.one_of(
    st.lists(st.integers(), min_size=1),
    st.integers().filter(bool),
    st.text(min_size=1),
    st.just(True),
    st.floats().filter(bool),
)
MALFORMED: list[tuple[tuple[str, ...], st.SearchStrategy[Any]]] = [
    (
        ("name",),
        st.none()
        | st.integers()
        | st.just("")
        | st.just(" \t\n")
        | st.just("x" * 201)
        | st.just("a\x1b")
        | st.just("a\ud800"),
    ),
    (
        ("kind",),
        st.none() | st.integers() | st.text().filter(lambda s: s not in ("universal", "targeted")),
    ),
    (("eligibility",), NON_EMPTY_NON_OBJECT),
    (("period",), st.none() | NON_EMPTY_NON_OBJECT | st.just({})),
    (
        ("period", "from"),
        st.none()
        | st.integers()
        | st.sampled_from(["2027-02-30", "2027-6-1", "2027-06-01T00:00", "٢٠٢٧-06-01", "20270601"]),
    ),
    (
        ("period", "until"),
        st.none() | st.integers() | st.sampled_from(["2027-13-01", "1999-12-31", " 2027-06-30"]),
    ),
    (("quota",), st.none() | NON_EMPTY_NON_OBJECT),
    (("quota", "count"), NOT_INT | st.sampled_from([0, -1, MAX_COUNT + 1])),
    (("quota", "per"), st.none() | st.integers() | st.sampled_from(["Day", "year", "days", ""])),
    (("unit_value",), NOT_INT | st.sampled_from([-1, MAX_FEN + 1])),
    (("max_quantity",), NOT_INT | st.sampled_from([0, MAX_COUNT + 1])),
    (
        ("budget",),
        st.booleans() | st.floats() | st.text(max_size=3) | st.sampled_from([-1, MAX_FEN + 1]),
    ),
    (("allocations",), NON_EMPTY_NON_OBJECT),
    (("where",), NON_EMPTY_NON_OBJECT),
    (
        ("where", "stations"),
        NON_EMPTY_NON_OBJECT | st.lists(BAD_IDS, min_size=1) | st.just(["a", "a"]),
    ),
    (
        ("where", "station_kinds"),
        NON_EMPTY_NON_OBJECT | st.lists(BAD_IDS, min_size=1) | st.just(["truck_stop"]),
    ),
    (("where", "subtree"), BAD_IDS.filter(lambda v: v is not None)),
    (("offline",), NON_EMPTY_NON_OBJECT),
    (("offline", "allowed"), st.none() | st.integers() | st.just("true")),
    (("offline", "per_member_per_day"), NOT_INT | st.sampled_from([-1, 1001])),
    (("offline", "station_daily_value"), NOT_INT | st.sampled_from([-1, MAX_FEN + 1])),
    (
        ("no_stack_with",),
        NON_EMPTY_NON_OBJECT
        | st.just(False)
        | st.just(0)
        | st.just("")
        | st.just(["P", "P"])
        | st.lists(BAD_IDS, min_size=1),
    ),
    (
        ("eligibility", "groups_any"),
        st.just(["pilot"]) | st.just(["courier", "courier"]) | st.lists(BAD_IDS, min_size=1),
    ),
    (
        ("eligibility", "min_tenure_days"),
        st.booleans() | st.floats() | st.text(max_size=3) | st.sampled_from([-1, 36501]),
    ),
    (("eligibility", "home_subtree"), BAD_IDS.filter(lambda v: v is not None)),
]


def _put(doc: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    here = doc
    for step in path[:-1]:
        if not isinstance(here.get(step), dict):
            here[step] = {}
        here = here[step]
    here[path[-1]] = value
    return doc


@given(st.data(), valid_rules(), st.sampled_from(range(len(MALFORMED))))
def test_every_malformed_field_is_refused_with_bad_rules(
    data: st.DataObject, doc: dict[str, Any], which: int
) -> None:
    path, values = MALFORMED[which]
    if path[0] == "eligibility" and len(path) > 1:
        doc["kind"] = "targeted"  # where the rule may be given at all
    mutated = _put(doc, path, data.draw(values, label="value"))
    with pytest.raises(BadRules):
        parse_rules(mutated)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"kind": "targeted", "eligibility": {}}, "targeted without a rule"),
        ({"kind": "targeted", "eligibility": {"min_tenure_days": 0}}, "0 days is no rule"),
        (
            {"kind": "universal", "eligibility": {"groups_any": ["courier"]}},
            "universal with a rule",
        ),
        ({"kind": "universal", "eligibility": {"home_subtree": "110000"}}, "universal with a rule"),
        ({"allocations": {"110000": 1}}, "allocations without a budget"),
        ({"budget": 10, "allocations": {"110000": 6, "310000": 5}}, "allocations above the budget"),
        ({"period": {"from": "2027-06-02", "until": "2027-06-01"}}, "ends before it starts"),
        ({"offline": {"allowed": True}}, "offline without a per-member limit"),
        ({"surprise": 1}, "an unknown member"),
    ],
)
def test_impossible_combinations_are_refused(change: dict[str, Any], why: str) -> None:
    doc = {
        "name": "x",
        "kind": "universal",
        "period": {"from": "2027-06-01", "until": "2027-06-30"},
        "quota": {"count": 1, "per": "day"},
        "unit_value": 0,
        **change,
    }
    with pytest.raises(BadRules):
        parse_rules(doc)


def _paths(value: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    return out


@given(st.data(), valid_rules(), JSON)
@settings(max_examples=300)
def test_any_json_anywhere_gives_rules_or_bad_rules_and_nothing_else(
    data: st.DataObject, doc: dict[str, Any], value: object
) -> None:
    paths = _paths(doc)
    path = data.draw(
        st.sampled_from(paths)
        | st.builds(lambda p, k: (*p, k), st.sampled_from(paths), st.text(max_size=8)),
        label="path",
    )
    mutated = _put(doc, path, value)
    try:
        rules = parse_rules(mutated)
    except BadRules:
        return
    assert parse_rules(rules.to_json()) == rules


@given(JSON)
def test_a_document_that_is_not_an_object_is_refused(value: object) -> None:
    if isinstance(value, dict):
        value = [value]
    with pytest.raises(BadRules):
        parse_rules(value)


@pytest.mark.parametrize(
    "change",
    [
        {"where": []},
        {"where": False},
        {"eligibility": 0},
        {"allocations": ""},
        {"offline": []},
        {"where": {"station_kind": ["truck_driver_home"]}},  # misspelt: redeemable anywhere
        {"offline": {"allowed": False, "per_member_per_da": 1}},
        {"period": {"from": "2027-06-01", "until": "2027-06-30", "to": "2027-07-31"}},
    ],
)
def test_wrong_types_and_unknown_members_inside_objects_are_refused(
    change: dict[str, Any],
) -> None:
    doc = {
        "name": "x",
        "kind": "universal",
        "period": {"from": "2027-06-01", "until": "2027-06-30"},
        "quota": {"count": 1, "per": "day"},
        "unit_value": 0,
        **change,
    }
    with pytest.raises(BadRules):
        parse_rules(doc)


# -- quota periods in China time --------------------------------------------------------------

ZONES = st.sampled_from(
    [UTC, CHINA, timezone(timedelta(hours=-5)), timezone(timedelta(hours=13, minutes=45))]
)
MOMENTS = st.datetimes(datetime(2000, 1, 2), datetime(2098, 12, 30), timezones=ZONES)
ONE_US = timedelta(microseconds=1)


def _rules(per: str, start: str = "2000-01-01", until: str = "2099-12-31") -> Rules:
    return parse_rules(
        {
            "name": "p",
            "kind": "universal",
            "period": {"from": start, "until": until},
            "quota": {"count": 1, "per": per},
            "unit_value": 0,
        }
    )


def _period_start(per: str, at: datetime) -> datetime:
    """The China midnight that starts ``at``'s period, computed independently."""
    day = (at.astimezone(UTC) + timedelta(hours=8)).date()
    if per == "week":
        day -= timedelta(days=day.weekday())
    elif per == "month":
        day = day.replace(day=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=8)


@given(st.sampled_from(["day", "week", "month"]), MOMENTS)
@example("day", datetime(2026, 12, 31, 15, 59, 59, 999999, tzinfo=UTC))
@example("day", datetime(2026, 12, 31, 16, 0, tzinfo=UTC))
@example("week", datetime(2024, 12, 29, 16, 0, tzinfo=UTC))  # Monday 2024-12-30 in China
@example("week", datetime(2021, 1, 3, 15, 59, 59, 999999, tzinfo=UTC))
@example("month", datetime(2024, 2, 29, 16, 0, tzinfo=UTC))  # 1 March in China
def test_a_quota_period_is_a_china_day_iso_week_or_month(per: str, at: datetime) -> None:
    rules = _rules(per)
    key, end = rules.period_key(at), rules.period_end(at)
    start = _period_start(per, at)
    assert start <= at < end
    # Constant on [start, end), different just outside.
    assert rules.period_key(start) == key == rules.period_key(end - ONE_US)
    assert rules.period_key(start - ONE_US) != key
    assert rules.period_key(end) != key
    assert rules.period_end(start - ONE_US) == start
    assert rules.period_end(end - ONE_US) == end
    # The same instant in any zone is the same period.
    assert rules.period_key(at.astimezone(UTC)) == key
    assert rules.period_end(at.astimezone(UTC)) == end
    # What the key says, and how long the period is.
    china = start.astimezone(CHINA)
    assert (china.hour, china.minute, china.second, china.microsecond) == (0, 0, 0, 0)
    first = china.date()
    if per == "day":
        assert key == first.isoformat()
        assert end - start == timedelta(days=1)
    elif per == "week":
        year, week, weekday = first.isocalendar()
        assert weekday == 1
        assert key == f"{year}-W{week:02d}"
        assert end - start == timedelta(days=7)
    else:
        assert key == first.isoformat()[:7]
        assert first.day == 1
        assert (end.astimezone(CHINA).date() - first).days in (28, 29, 30, 31)


@pytest.mark.parametrize(
    ("at", "day", "week", "month"),
    [
        # 2027-01-01 00:00 in China is still 2026-12-31 in UTC: China time decides.
        ("2026-12-31T16:00:00Z", "2027-01-01", "2026-W53", "2027-01"),
        ("2026-12-31T15:59:59.999999Z", "2026-12-31", "2026-W53", "2026-12"),
        ("2027-01-03T16:00:00Z", "2027-01-04", "2027-W01", "2027-01"),
        ("2024-12-29T16:00:00Z", "2024-12-30", "2025-W01", "2024-12"),  # ISO year ahead
        ("2021-01-03T12:00:00Z", "2021-01-03", "2020-W53", "2021-01"),  # ISO year behind
        ("2020-12-31T23:00:00Z", "2021-01-01", "2020-W53", "2021-01"),
    ],
)
def test_period_keys_at_year_boundaries(at: str, day: str, week: str, month: str) -> None:
    when = datetime.fromisoformat(at.replace("Z", "+00:00"))
    assert _rules("day").period_key(when) == day
    assert _rules("week").period_key(when) == week
    assert _rules("month").period_key(when) == month
    assert _rules("program").period_key(when) == "program"


def test_period_ends_in_utc() -> None:
    at = datetime(2026, 12, 31, 17, 0, tzinfo=UTC)  # Friday 2027-01-01 01:00 China time
    assert format_entry_time(_rules("day").period_end(at)) == "2027-01-01T16:00:00.000000Z"
    assert format_entry_time(_rules("week").period_end(at)) == "2027-01-03T16:00:00.000000Z"
    assert format_entry_time(_rules("month").period_end(at)) == "2027-01-31T16:00:00.000000Z"
    once = _rules("program", "2027-01-01", "2027-01-05")
    assert format_entry_time(once.period_end(at)) == "2027-01-05T16:00:00.000000Z"


@given(st.dates(date(2000, 1, 1), date(2098, 1, 1)), st.integers(0, 400), st.data())
def test_a_per_program_quota_lasts_the_whole_period(
    start: date, days: int, data: st.DataObject
) -> None:
    until = start + timedelta(days=days)
    rules = _rules("program", start.isoformat(), until.isoformat())
    end = datetime(until.year, until.month, until.day, tzinfo=CHINA) + timedelta(days=1)
    first = datetime(start.year, start.month, start.day, tzinfo=CHINA)
    at = data.draw(st.datetimes(first.replace(tzinfo=None), (end - ONE_US).replace(tzinfo=None)))
    at = at.replace(tzinfo=CHINA)
    assert rules.runs_on(at.date())
    assert rules.period_key(at) == "program"
    assert rules.period_end(at) == end > at
    assert not rules.runs_on(until + timedelta(days=1))
    assert not rules.runs_on(start - timedelta(days=1))


# -- the commands --------------------------------------------------------------------------------

OFFICIAL_BJ = Actor(Role.OFFICIAL, "acct-00000000000000bj", "110000")
OFFICIAL_CY = Actor(Role.OFFICIAL, "acct-00000000000000cy", "110105")
OFFICIAL_SH = Actor(Role.OFFICIAL, "acct-00000000000000sh", "310000")
AUDITOR = Actor(Role.AUDITOR, "acct-00000000000000au")
STATION = Actor(Role.STATION, "dev-1", "ST-1")
MEMBER = Actor(Role.MEMBER, "m-1", "m-1")
TREE = [
    ("100000", "national", None),
    ("110000", "provincial", "100000"),
    ("310000", "provincial", "100000"),
    ("110105", "county", "110000"),
    ("110105-0001", "enterprise", "110105"),
    ("110108", "county", "110000"),
    ("110000-closed", "enterprise", "110000"),
]
T0 = datetime(2027, 5, 31, 16, 0, tzinfo=UTC)  # 2027-06-01 00:00 China time


def doc(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "送清凉",
        "kind": "universal",
        "period": {"from": "2027-06-01", "until": "2027-08-31"},
        "quota": {"count": 1, "per": "program"},
        "unit_value": 5000,
        "budget": 100000,
    }
    base.update(overrides)
    return base


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    ledger: Ledger
    clock: Clock

    def run(self, command: Any) -> Any:
        return self.ledger.sequencer.execute(command)

    def create(self, program: str, owner: str = "100000", actor: Actor = SYSTEM, **kw: Any) -> Any:
        rules = doc(**kw)
        return self.run(
            lambda tx: create_program(tx, actor, program=program, owner=owner, rules=rules)
        )

    def revise(
        self, program: str, actor: Actor = SYSTEM, effective: datetime | None = None, **kw: Any
    ) -> Any:
        rules = doc(**kw)
        return self.run(
            lambda tx: revise_program(tx, actor, program=program, rules=rules, effective=effective)
        )

    def spend(self, program: str, funding: str, value: int) -> None:
        """Record a redemption directly (as the redemption command would append it)."""
        n = self.ledger.reader.size()
        self.ledger.sequencer.append(
            [
                Event(
                    "RedemptionRecorded",
                    "station:dev-1",
                    {
                        "program": program,
                        "version": 1,
                        "member": f"member-{n}",
                        "station": "ST-1",
                        "quantity": 1,
                        "value": value,
                        "funding": funding,
                        "operating": "110105-0001",
                        "home": "110105-0001",
                        "period": "program",
                        "presentation": base64.urlsafe_b64encode(n.to_bytes(32, "big"))
                        .rstrip(b"=")
                        .decode(),
                        "idempotency": f"k-{n}",
                    },
                )
            ]
        )

    def read(self, fn: Any) -> Any:
        with self.ledger.engine.connect() as conn:
            return fn(conn)


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    clock = Clock(T0)
    lg = open_ledger(database_url, PrivateKey.generate(), checkpoint_interval=0.0, clock=clock)
    w = World(lg, clock)
    for code, kind, parent in TREE:
        w.run(
            lambda tx, c=code, k=kind, p=parent: unions.create_union(
                tx, SYSTEM, code=c, name=f"工会{c}", kind=k, parent=p
            )
        )
    w.run(lambda tx: unions.close_union(tx, SYSTEM, code="110000-closed"))
    try:
        yield w
    finally:
        lg.sequencer.close()
        lg.writer.dispose()
        lg.engine.dispose()


def test_create_records_version_one_effective_now(world: World) -> None:
    entry = world.create("NAT-SUMMER", allocations={"110000": 40000}, where={"subtree": "110000"})
    assert entry.type == "ProgramCreated"
    assert entry.actor == "system:server"
    assert entry.body == {
        "program": "NAT-SUMMER",
        "owner": "100000",
        "version": 1,
        "effective": "2027-05-31T16:00:00.000000Z",
        "rules": parse_rules(
            doc(allocations={"110000": 40000}, where={"subtree": "110000"})
        ).to_json(),
    }
    row = world.read(lambda c: programs.get_program(c, "NAT-SUMMER"))
    assert (row.owner, row.name, row.status, row.created_at, row.closed_at) == (
        "100000",
        "送清凉",
        "open",
        entry.time,
        None,
    )
    (v1,) = world.read(lambda c: versions(c, "NAT-SUMMER"))
    assert (v1.version, v1.effective, v1.rules.budget) == (1, entry.time, 100000)
    assert world.read(lambda c: version_at(c, "NAT-SUMMER", "2027-05-31T15:59:59.999999Z")) is None
    assert world.read(lambda c: version_at(c, "NAT-SUMMER", entry.time)).version == 1
    # The stored rules are the canonical JSON of the event's rules.
    stored = world.read(lambda c: c.execute(select(programs.program_versions.c.rules)).scalar_one())
    assert stored.encode() == canonical_bytes(entry.body["rules"])


@pytest.mark.parametrize(
    ("actor", "owner", "program", "rules", "error"),
    [
        (STATION, "100000", "P", {}, Forbidden),
        (AUDITOR, "100000", "P", {}, Forbidden),
        (MEMBER, "100000", "P", {}, Forbidden),
        (OFFICIAL_BJ, "310000", "P", {}, unions.UnknownUnion),  # outside the official's tree
        (OFFICIAL_BJ, "100000", "P", {}, unions.UnknownUnion),  # above it
        (SYSTEM, "999999", "P", {}, unions.UnknownUnion),
        (SYSTEM, "110000-closed", "P", {}, unions.UnionClosed),
        (SYSTEM, "100000", "bad id", {}, BadRules),
        (SYSTEM, "100000", "x" * 65, {}, BadRules),
        (SYSTEM, "100000", "P", {"unit_value": -1}, BadRules),
        (OFFICIAL_BJ, "110000", "P", {"allocations": {"310000": 1}}, BadRules),
        (OFFICIAL_BJ, "110000", "P", {"allocations": {"110000": 1}}, BadRules),  # the owner
        (OFFICIAL_BJ, "110000", "P", {"allocations": {"999999": 1}}, BadRules),
        (OFFICIAL_BJ, "110000", "P", {"allocations": {"110105": 1, "110105-0001": 1}}, BadRules),
        (OFFICIAL_BJ, "110000", "P", {"where": {"subtree": "310000"}}, BadRules),
        (OFFICIAL_BJ, "110105", "P", {"where": {"subtree": "110000"}}, BadRules),
        (
            OFFICIAL_BJ,
            "110000",
            "P",
            {"kind": "targeted", "eligibility": {"home_subtree": "310000"}},
            BadRules,
        ),
        (SYSTEM, "100000", "P", {"no_stack_with": ["NOPE"]}, BadRules),
        (SYSTEM, "100000", "P", {"no_stack_with": ["P"]}, BadRules),
        (SYSTEM, "100000", "EXISTS", {}, DuplicateProgram),
    ],
)
def test_create_refusals_append_nothing(
    world: World, actor: Actor, owner: str, program: str, rules: dict[str, Any], error: type
) -> None:
    world.create("EXISTS")
    before = world.ledger.reader.size()
    with pytest.raises(error):
        world.create(program, owner=owner, actor=actor, **rules)
    assert world.ledger.reader.size() == before


def test_officials_create_inside_their_subtree_with_allocations_below(world: World) -> None:
    world.create(
        "BJ-PACK",
        owner="110000",
        actor=OFFICIAL_BJ,
        allocations={"110105": 30000, "110108": 20000},
        where={"subtree": "110105", "station_kinds": ["union_station"]},
        kind="targeted",
        eligibility={"home_subtree": "110105", "groups_any": ["courier"]},
    )
    world.create("CY-PACK", owner="110105-0001", actor=OFFICIAL_CY)
    assert world.read(lambda c: visible_program(c, OFFICIAL_BJ, "CY-PACK")).owner == "110105-0001"


def test_revisions_take_effect_from_their_time_never_before(world: World) -> None:
    created = world.create("P", quota={"count": 1, "per": "program"})
    world.clock.now = T0 + timedelta(days=1)
    later = T0 + timedelta(days=10)
    v2 = world.revise("P", effective=later, quota={"count": 2, "per": "week"}, name="新名字")
    assert v2.type == "ProgramRevised"
    assert v2.body == {
        "program": "P",
        "version": 2,
        "effective": format_entry_time(later),
        "rules": parse_rules(doc(quota={"count": 2, "per": "week"}, name="新名字")).to_json(),
    }
    world.clock.now = T0 + timedelta(days=2)
    v3 = world.revise("P", unit_value=100)  # now: the default
    assert v3.body["effective"] == format_entry_time(world.clock.now)

    def in_force(at: datetime) -> int | None:
        found = world.read(lambda c: version_at(c, "P", format_entry_time(at)))
        return None if found is None else found.version

    assert in_force(T0 - ONE_US) is None
    assert in_force(T0) == 1
    assert in_force(world.clock.now - ONE_US) == 1
    assert in_force(world.clock.now) == 3
    # The latest version whose time has come is in force: v3 (effective earlier) still wins
    # after v2's time, since it was decided later.
    assert in_force(later + timedelta(days=1)) == 3
    assert [v.version for v in world.read(lambda c: versions(c, "P"))] == [1, 2, 3]
    assert created.body["version"] == 1


@pytest.mark.parametrize(
    ("effective", "ok"),
    [
        (timedelta(seconds=-2), False),
        (timedelta(days=-1), False),
        (timedelta(seconds=-0.5), True),  # within a second of now: taken as now
        (timedelta(0), True),
        (timedelta(days=365), True),
    ],
)
def test_a_revision_is_never_in_the_past(world: World, effective: timedelta, ok: bool) -> None:
    world.create("P")
    when = T0 + effective
    if not ok:
        with pytest.raises(BadRules):
            world.revise("P", effective=when)
        return
    entry = world.revise("P", effective=when)
    assert entry.body["effective"] == format_entry_time(max(when, T0))


def test_a_naive_effective_time_is_refused(world: World) -> None:
    world.create("P")
    with pytest.raises(BadRules):
        world.revise("P", effective=datetime(2028, 1, 1))


def test_revisions_respect_scope_and_status(world: World) -> None:
    world.create("BJ", owner="110000", actor=OFFICIAL_BJ)
    with pytest.raises(UnknownProgram):
        world.revise("BJ", actor=OFFICIAL_SH)
    with pytest.raises(UnknownProgram):
        world.revise("NOPE")
    with pytest.raises(BadRules):
        world.revise("BJ", actor=OFFICIAL_BJ, no_stack_with=["BJ"])
    with pytest.raises(BadRules):
        world.revise("BJ", actor=OFFICIAL_BJ, allocations={"310000": 1})
    # An official below the owner sees the program (it reaches them) but may not change it.
    with pytest.raises(unions.UnknownUnion):
        world.revise("BJ", actor=OFFICIAL_CY)
    world.run(lambda tx: close_program(tx, OFFICIAL_BJ, program="BJ"))
    with pytest.raises(ProgramClosed):
        world.revise("BJ", actor=OFFICIAL_BJ)


def test_a_revised_budget_never_falls_below_what_was_spent(world: World) -> None:
    world.create("P", budget=10000, allocations={"110000": 4000})
    world.spend("P", "110000", 3000)
    world.spend("P", "100000", 5000)
    assert world.read(lambda c: budget_used(c, "P")) == {"110000": 3000, "100000": 5000}
    with pytest.raises(BadRules):  # 8000 spent in all
        world.revise("P", budget=7999, allocations={"110000": 3000})
    with pytest.raises(BadRules):  # 110000 spent 3000 of its allocation
        world.revise("P", budget=10000, allocations={"110000": 2999})
    world.revise("P", budget=9000, allocations={"110000": 3000})  # exactly what is spent: fine
    world.revise("P", budget=None, unit_value=0)  # no budget any more: nothing to protect


@pytest.mark.parametrize(
    "allocations",
    [
        {"110000": 5000},  # takes 1000 from the owner's share, which is all spent
        {"110000": 4500},
        {},  # 110000's 4000 is then counted nowhere: the owner may spend 4000 more
    ],
)
def test_a_revision_leaves_nothing_to_spend_once_the_budget_is_spent(
    world: World, allocations: dict[str, int]
) -> None:
    world.create("P", budget=10000, allocations={"110000": 4000})
    world.spend("P", "110000", 4000)
    world.spend("P", "100000", 6000)  # 10000 of 10000: everything is spent
    try:
        world.revise("P", budget=10000, allocations=allocations)
    except BadRules:
        return  # refusing the revision is one right answer
    rules = world.read(lambda c: version_at(c, "P", format_entry_time(T0))).rules
    for home in ("110105-0001", "310000"):  # a member funded by 110000, one by the owner
        with pytest.raises(BudgetExhausted):
            world.read(
                lambda c, h=home: _check_budget(
                    c, rules, owner="100000", home=h, program="P", value=1
                )
            )


def test_close(world: World) -> None:
    world.create("BJ", owner="110000", actor=OFFICIAL_BJ)
    for actor, error in [
        (STATION, Forbidden),
        (AUDITOR, Forbidden),
        (MEMBER, Forbidden),
        (OFFICIAL_SH, UnknownProgram),
        (OFFICIAL_CY, unions.UnknownUnion),
    ]:
        with pytest.raises(error):
            world.run(lambda tx, a=actor: close_program(tx, a, program="BJ"))
    world.clock.now = T0 + timedelta(hours=1)
    entry = world.run(lambda tx: close_program(tx, OFFICIAL_BJ, program="BJ"))
    assert (entry.type, entry.body, entry.actor) == (
        "ProgramClosed",
        {"program": "BJ"},
        "official:acct-00000000000000bj",
    )
    row = world.read(lambda c: programs.get_program(c, "BJ"))
    assert (row.status, row.closed_at) == ("closed", entry.time)
    with pytest.raises(ProgramClosed):
        world.run(lambda tx: close_program(tx, SYSTEM, program="BJ"))
    with pytest.raises(UnknownProgram):
        world.run(lambda tx: close_program(tx, SYSTEM, program="NOPE"))


def test_who_sees_which_program(world: World) -> None:
    world.create("NAT")
    world.create("BJ", owner="110000")
    world.create("CY", owner="110105")
    world.create("SH", owner="310000")
    world.run(lambda tx: close_program(tx, SYSTEM, program="SH"))

    def listed(actor: Actor, **kw: Any) -> list[str]:
        return [p.program_id for p in world.read(lambda c: list_programs(c, actor, **kw))]

    assert listed(AUDITOR) == ["BJ", "CY", "NAT", "SH"]
    assert listed(AUDITOR, status="open") == ["BJ", "CY", "NAT"]
    assert listed(OFFICIAL_BJ) == ["BJ", "CY", "NAT"]  # its subtree and the chain above
    assert listed(OFFICIAL_CY) == ["BJ", "CY", "NAT"]
    assert listed(OFFICIAL_SH) == ["NAT", "SH"]
    assert listed(AUDITOR, union="110108") == ["BJ", "NAT"]
    for actor in (STATION, MEMBER, AUDITOR, OFFICIAL_SH):
        assert world.read(lambda c, a=actor: visible_program(c, a, "NAT")).owner == "100000"
    with pytest.raises(UnknownProgram):
        world.read(lambda c: visible_program(c, OFFICIAL_SH, "BJ"))


def test_no_stack_pairs_hold_both_ways(world: World) -> None:
    world.create("NAT")
    world.create("OTHER")
    world.create("BJ", owner="110000", no_stack_with=["NAT", "OTHER"])
    world.create("CY", owner="110105", no_stack_with=["NAT"])
    assert world.read(lambda c: not_stacking(c, "NAT")) == ["BJ", "CY"]
    assert world.read(lambda c: not_stacking(c, "BJ")) == ["NAT", "OTHER"]
    assert world.read(lambda c: not_stacking(c, "CY")) == ["NAT"]
    world.revise("CY", no_stack_with=["NAT", "BJ"])  # declared again: still one pair each way
    assert world.read(lambda c: not_stacking(c, "CY")) == ["BJ", "NAT"]
    assert world.read(lambda c: not_stacking(c, "BJ")) == ["CY", "NAT", "OTHER"]


def test_stacking_follows_the_version_in_force(world: World) -> None:
    world.create("NAT")
    world.create("BJ", owner="110000", no_stack_with=["NAT"])
    world.revise("BJ", no_stack_with=[])  # in force now: they stack again
    assert world.read(lambda c: not_stacking(c, "BJ")) == []
    world.create("CY", owner="110105")
    world.revise("CY", effective=T0 + timedelta(days=30), no_stack_with=["NAT"])
    assert world.read(lambda c: not_stacking(c, "CY")) == []  # not before its time


def test_the_tables_rebuild_from_the_chain(world: World) -> None:
    world.create("NAT", budget=50000, allocations={"110000": 20000})
    world.create("BJ", owner="110000", no_stack_with=["NAT"])
    world.revise("BJ", name="北京慰问", effective=T0 + timedelta(days=3))
    world.spend("NAT", "110000", 5000)
    world.run(lambda tx: close_program(tx, SYSTEM, program="NAT"))
    projections = default_projections()
    assert compare(world.ledger.engine, projections) == []
    rebuild(world.ledger.writer, projections)
    assert compare(world.ledger.engine, projections) == []
    types = [
        parse_entry(e).type for e in world.ledger.reader.entries(0, world.ledger.reader.size())
    ]
    assert types[-5:] == [
        "ProgramCreated",
        "ProgramCreated",
        "ProgramRevised",
        "RedemptionRecorded",
        "ProgramClosed",
    ]


def test_commands_in_one_batch_see_each_other(world: World) -> None:
    def both(tx: Tx) -> None:
        create_program(tx, SYSTEM, program="A", owner="100000", rules=doc())
        create_program(tx, SYSTEM, program="B", owner="110000", rules=doc(no_stack_with=["A"]))

    world.run(both)
    assert world.read(lambda c: not_stacking(c, "A")) == ["B"]
