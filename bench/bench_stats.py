"""Statistics at national scale: subtree figures on 100,000 unions and 10 M redemptions.

    python -m bench stats
    BENCH_STATS_REDEMPTIONS=500000 python -m bench stats     # a quick look

1. **Generation.** A tree of 100,000 unions (national → 31 provinces → 10 cities each → 10
   counties each → 5 townships each → ≈5 grassroots unions per township, 1 to 10) is written
   straight into the ``unions`` projection table of a fresh SQLite database created with the
   project's schema (``init_schema``), with 10 national programs (5 of them allocated to the
   provinces) in ``programs``/``program_versions``. Then N redemptions (default 10,000,000)
   over the grassroots unions (each has 5 to 60 members who redeem; 0 to 2 non-sensitive groups
   per member, constant over the year), ≈10,000 stations (3 to 4 per county, the county
   operates them; members redeem at their county's stations), 10 programs (skewed), 365 days
   of 2025. Every redemption is a synthetic ``RedemptionRecorded`` entry turned into cells by
   the real cell model, ``verifier.stats.effect``, with a context answered from memory; cells
   and distinct members are aggregated in memory and bulk-inserted into ``stats_cells`` and
   ``stats_members``, then ``stats_months`` (the monthly roll-up) summed from the day cells.
   Work goes county by county in path order, so a cell is complete when it is written (those
   of open cities, provinces and the national union are held until their subtree is done):
   a plain INSERT, which also proves no key is written twice.
   ``stats_seen`` is not written (the reads never touch it; the distinct-member keys are
   de-duplicated in memory per county, which is exact since a member's home union and its
   stations lie in one county). The same redemptions also go to a plain table
   ``bench_redemptions`` (home, program, station, day, member, quantity, value; indexed on
   (home, day)) for the baseline.
2. **Reads.** ``ledger.stats.union_figures`` (an auditor) and ``ledger.stats.series`` for
   unions of each level, for a month and for the whole year: p50/p99 over picks of different
   unions of the level, against the 50 ms goal. Baseline, same run: the subtree totals per
   program and distinct members by a naive query over ``bench_redemptions`` joined to
   ``unions`` on the path prefix (fewer picks, bounded by ``BENCH_STATS_BASELINE_S``).
3. **Writes.** 20,000 ``RedemptionRecorded`` events appended through a real ``Sequencer`` (one
   command each, submitted at once so batches form) with ``default_projections()`` versus the
   same list without ``StatsProjection``, on a fresh database holding the same union tree,
   programs and member groups; and ``_new_members`` (the distinct-member check of each flush)
   against a large ``stats_seen``.

After the main reads (``BENCH_STATS_VARIANTS``, default ``months``; empty: skip): the same
sums from day cells alone versus the monthly roll-up, i.e. what ``stats_months`` buys. Other
knobs:
``BENCH_STATS_DIR`` (scratch folder), ``BENCH_STATS_BASELINE_S`` (time for the naive baseline),
``BENCH_STATS_WRITES``, ``BENCH_STATS_SEEN``. Figures: bench/README.md.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, select

from keys import PrivateKey
from ledger.db import make_engine
from ledger.domain import Actor, Role
from ledger.projections import default_projections
from ledger.schema import init_schema
from ledger.sequencer import Sequencer, Tx
from ledger.stats import (
    StatsProjection,
    _new_members,
    _sum_cells,
    series,
    stats_seen,
    union_figures,
)
from ledger.unions import JOIN_CODE_ALPHABET, path_upper, unions
from verifier import stats as vs
from verifier.entry import Entry
from verifier.note import NoteSigner

SHARED = Path(os.environ.get("UNIONLEDGER_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TIME = "2025-01-01T00:00:00.000000Z"
YEAR = 2025
DAYS = [(date(YEAR, 1, 1) + timedelta(days=i)).isoformat() for i in range(365)]
GROUPS = ("migrant", "retired", "women", "young")  # non-sensitive
# program id, funded by ("national" or the member's province), value in fen, weight
PROGRAMS = [
    (f"p{i:02d}-2025", "national" if i < 5 else "provincial", 500 * (i + 1), 10 - i)
    for i in range(10)
]
NATIONAL = "100000"
PREV = bytes(32)
PICKS = 40
GOAL_MS = 50.0
AUDITOR = Actor(Role.AUDITOR, "bench-auditor")
ORIGIN = "bench.unionledger.localhost/ledger"
_UNION_COLUMNS = [c.name for c in unions.columns]
_CELL_INSERT = (
    f"INSERT INTO stats_cells (scope, program, period, {', '.join(vs.FIELDS)})"
    f" VALUES ({', '.join('?' for _ in range(3 + vs.N))})"
)
_MEMBERS_INSERT = "INSERT INTO stats_members (scope, program, period, members) VALUES (?,?,?,?)"
_BASELINE_INSERT = "INSERT INTO bench_redemptions VALUES (?,?,?,?,?,?,?)"


def _join_code(i: int) -> str:
    n = (i * 0x2545F4914F6CD + 0x9E3779B97F4A) % (1 << 50)
    return "".join(JOIN_CODE_ALPHABET[(n >> (5 * k)) & 31] for k in range(10))


@dataclass
class County:
    code: str
    province: str
    city: str
    grassroots: list[str] = field(default_factory=list)
    stations: list[str] = field(default_factory=list)


@dataclass
class Tree:
    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)  # code -> root..code
    levels: dict[str, list[str]] = field(default_factory=dict)  # kind -> codes
    counties: list[County] = field(default_factory=list)
    members: dict[str, int] = field(default_factory=dict)  # grassroots -> members who redeem
    children: dict[str, list[str]] = field(default_factory=dict)
    rows: list[tuple[object, ...]] = field(default_factory=list)

    def add(self, code: str, kind: str, parent: str | None, members: int = 0) -> None:
        chain = (*self.chains[parent], code) if parent else (code,)
        self.chains[code] = chain
        self.levels.setdefault(kind, []).append(code)
        if parent is not None:
            self.children.setdefault(parent, []).append(code)
        path = "/" + "/".join(chain) + "/"
        self.rows.append(
            (code, f"{code} 工会", kind, parent, path, len(chain) - 1, "active",
             _join_code(len(self.rows)), False, members, members, TIME, TIME)
        )  # fmt: skip


def build_tree(seed: int = 2025) -> Tree:
    """National → 31 provinces → 10 cities → 10 counties → 5 townships → 1..10 grassroots."""
    rng = random.Random(seed)
    tree = Tree()
    with (SHARED / "data" / "provinces.csv").open(encoding="utf-8") as f:
        provinces = [row["code"] for row in csv.DictReader(f)]
    tree.add(NATIONAL, "national", None)
    for p in provinces:
        tree.add(p, "provincial", NATIONAL)
        for c in range(1, 11):
            city = f"{p[:2]}{c:02d}00"
            tree.add(city, "city", p)
            for k in range(1, 11):
                county = County(f"{city[:4]}{k:02d}", p, city)
                tree.add(county.code, "county", city)
                for t in range(1, 6):
                    township = f"{county.code}{t:03d}"
                    tree.add(township, "township", county.code)
                    for g in range(rng.randint(1, 10)):
                        code = f"{township}-{g:02d}"
                        members = rng.randint(5, 60)
                        tree.members[code] = members
                        tree.add(code, "enterprise", township, members)
                        county.grassroots.append(code)
                county.stations = [f"ST-{county.code}-{s}" for s in range(rng.choice((3, 3, 4)))]
                tree.counties.append(county)
    return tree


def _program_rows() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    programs, versions = [], []
    with (SHARED / "data" / "provinces.csv").open(encoding="utf-8") as f:
        provinces = [row["code"] for row in csv.DictReader(f)]
    for program, funded, value, _ in PROGRAMS:
        budget = 10**11
        allocations = dict.fromkeys(provinces, budget // 40) if funded == "provincial" else {}
        rules = {
            "name": f"Benefit {program}",
            "kind": "universal",
            "period": {"from": f"{YEAR}-01-01", "until": f"{YEAR}-12-31"},
            "quota": {"count": 4, "per": "month"},
            "unit_value": value,
            "budget": budget,
            "allocations": allocations,
        }
        programs.append((program, NATIONAL, rules["name"], "open", TIME, None))
        versions.append((program, 1, TIME, json.dumps(rules, sort_keys=True)))
    return programs, versions


def write_world(raw: Any, tree: Tree) -> None:
    """The union tree and the programs, straight into the projection tables."""
    cols = ", ".join(_UNION_COLUMNS)
    marks = ", ".join("?" for _ in _UNION_COLUMNS)
    raw.executemany(f"INSERT INTO unions ({cols}) VALUES ({marks})", tree.rows)
    programs, versions = _program_rows()
    raw.executemany("INSERT INTO programs VALUES (?,?,?,?,?,?)", programs)
    raw.executemany("INSERT INTO program_versions VALUES (?,?,?,?)", versions)
    raw.commit()


class _Context:
    """``verifier.stats.Context`` from memory: the tree's chains and the members' groups."""

    def __init__(self, chains: dict[str, tuple[str, ...]]) -> None:
        self.chains = chains
        self.member_groups: dict[str, tuple[str, ...]] = {}

    def ancestors(self, union: str) -> Sequence[str]:
        return self.chains.get(union, ())

    def groups(self, member: str, day: str) -> Sequence[str]:
        return self.member_groups.get(member, ())

    def reversed_by(self, redemption: int, reversal: int) -> vs.Posted | None:
        return None


def _group_pool(rng: random.Random, size: int = 1024) -> list[tuple[str, ...]]:
    """Members' group sets: none (50 %), one (40 %) or two (10 %) of GROUPS."""
    pool = []
    for i in range(size):
        n = 0 if i < size // 2 else 1 if i < size * 9 // 10 else 2
        pool.append(tuple(sorted(rng.sample(GROUPS, n))))
    return pool


_GROUP_POOL = _group_pool(random.Random(3))


def _member_groups(rng: random.Random) -> tuple[str, ...]:
    return _GROUP_POOL[rng.getrandbits(10)]


class Generator:
    """Redemptions county by county, folded by ``verifier.stats.effect`` into cells."""

    def __init__(self, raw: Any, tree: Tree, total: int, seed: int = 7) -> None:
        self.raw, self.tree, self.total = raw, tree, total
        self.rng = random.Random(seed)
        self.ctx = _Context(tree.chains)
        self.local: dict[vs.Key, list[int]] = {}
        self.held: dict[vs.Key, list[int]] = {}
        self.local_members: dict[vs.Key, int] = {}
        self.held_members: dict[vs.Key, int] = {}
        self.held_scopes: set[str] = set()
        self.cells = self.member_rows = self.redemptions = 0
        self.budget: dict[tuple[str, str], int] = {}
        weights = sum(tree.members.values())
        self.share = total / weights
        self.programs = [p[0] for p in PROGRAMS]
        self.program_weights = [p[3] for p in PROGRAMS]
        self.funded = {p[0]: p[1] for p in PROGRAMS}
        self.value = {p[0]: p[2] for p in PROGRAMS}
        self.member_index = 0
        self.entry_index = 0
        self.started = time.perf_counter()

    def _hold(self, codes: Sequence[str]) -> None:
        self.held_scopes = {f"U:{c}" for c in codes} | {f"G:{c}:{g}" for c in codes for g in GROUPS}

    def run(self) -> None:
        counties = self.tree.counties
        owed = self.total
        for i, county in enumerate(counties):
            self._hold((NATIONAL, county.province, county.city))
            self._county(county, owed if i == len(counties) - 1 else None)
            owed = self.total - self.redemptions
            self._write(self.local, self.local_members)
            self.local, self.local_members = {}, {}
            nxt = counties[i + 1] if i + 1 < len(counties) else None
            if nxt is None or nxt.province != county.province:
                self.raw.commit()
                elapsed = time.perf_counter() - self.started
                print(
                    f"  {i + 1:,}/{len(counties):,} counties, {self.redemptions:,} redemptions,"
                    f" {self.cells:,} cells, {elapsed:.0f} s",
                    flush=True,
                )
            if nxt is None or nxt.city != county.city:
                self._release(county.city)
            if nxt is None or nxt.province != county.province:
                self._release(county.province)
        self._release(NATIONAL)
        self.raw.executemany(
            "INSERT INTO budget_usage VALUES (?,?,?)",
            [(p, f, v) for (p, f), v in sorted(self.budget.items())],
        )
        # The monthly roll-up the projection keeps in its flush: the day cells' sums.
        sums = ", ".join(f"sum({f})" for f in vs.FIELDS)
        self.raw.execute(
            f"INSERT INTO stats_months (scope, period, program, {', '.join(vs.FIELDS)})"
            f" SELECT scope, substr(period, 1, 7), program, {sums} FROM stats_cells"
            " WHERE length(period) = 10 GROUP BY scope, substr(period, 1, 7), program"
        )
        self.raw.commit()

    def _release(self, code: str) -> None:
        """Write the held cells of ``code`` (its subtree is done)."""
        mine = {f"U:{code}"} | {f"G:{code}:{g}" for g in GROUPS}
        cells = {k: v for k, v in self.held.items() if k[0] in mine}
        members = {k: v for k, v in self.held_members.items() if k[0] in mine}
        for k in cells:
            del self.held[k]
        for k in members:
            del self.held_members[k]
        self._write(cells, members)

    def _write(self, cells: dict[vs.Key, list[int]], members: dict[vs.Key, int]) -> None:
        self.raw.executemany(_CELL_INSERT, [(*k, *v) for k, v in sorted(cells.items())])
        self.raw.executemany(_MEMBERS_INSERT, [(*k, n) for k, n in sorted(members.items())])
        self.cells += len(cells)
        self.member_rows += len(members)

    def _county(self, county: County, last: int | None) -> None:
        rng, ctx = self.rng, self.ctx
        local, held, held_scopes = self.local, self.held, self.held_scopes
        local_m, held_m = self.local_members, self.held_members
        seen: set[tuple[str, str, str, str]] = set()
        baseline: list[tuple[object, ...]] = []
        stations = county.stations
        for home in county.grassroots:
            chain = self.tree.chains[home]
            people = []
            for _ in range(self.tree.members[home]):
                member = f"m{self.member_index:08d}"
                self.member_index += 1
                ctx.member_groups[member] = _member_groups(rng)
                people.append(member)
            share = self.share * len(people)
            n = min(int(share) + (rng.random() < share - int(share)), self.total - self.redemptions)
            if last is not None and home == county.grassroots[-1]:
                n = self.total - self.redemptions
            programs = rng.choices(self.programs, self.program_weights, k=n)
            for program in programs:
                member = rng.choice(people)
                day = DAYS[rng.randrange(365)]
                station = rng.choice(stations)
                funding = NATIONAL if self.funded[program] == "national" else chain[1]
                quantity = 1 if rng.random() < 0.9 else 2
                value = self.value[program] * quantity
                body = {
                    "program": program,
                    "member": member,
                    "home": home,
                    "station": station,
                    "funding": funding,
                    "operating": county.code,
                    "quantity": quantity,
                    "value": value,
                }
                second = rng.randrange(16 * 3600)  # 08:00 .. 24:00 China time: same date
                t = f"{day}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}.000000Z"
                entry = Entry(
                    self.entry_index, t, "RedemptionRecorded", "station:x", body, PREV, b""
                )
                self.entry_index += 1
                found = vs.effect(entry, ctx)
                assert found is not None
                for keys, counts in found.cells:
                    for key in keys:
                        target = held if key[0] in held_scopes else local
                        cell = target.get(key)
                        if cell is None:
                            target[key] = list(counts)
                        else:
                            target[key] = [a + b for a, b in zip(cell, counts, strict=True)]
                for seen_keys, scopes in found.seen:
                    for seen_key in seen_keys:
                        if seen_key in seen:
                            continue
                        seen.add(seen_key)
                        _, prog, period, _ = seen_key
                        for scope in scopes:
                            k = (scope, prog, period)
                            if scope in held_scopes:
                                held_m[k] = held_m.get(k, 0) + 1
                            else:
                                local_m[k] = local_m.get(k, 0) + 1
                bk = (program, funding)
                self.budget[bk] = self.budget.get(bk, 0) + value
                baseline.append((home, program, station, day, member, quantity, value))
            self.redemptions += n
            for member in people:
                del ctx.member_groups[member]
        self.raw.executemany(_BASELINE_INSERT, baseline)


@dataclass
class Built:
    url: str
    path: Path
    tree: Tree
    seconds: float
    cells: int
    member_rows: int
    redemptions: int


def generate(folder: Path, total: int) -> Built:
    path = folder / "stats.db"
    url = f"sqlite:///{path}"
    engine = make_engine(url, writer=True)
    init_schema(engine)  # ledger.stats is imported above: its tables are in the schema
    engine.dispose()
    started = time.perf_counter()
    tree = build_tree()
    engine = make_engine(url)
    pooled = engine.raw_connection()
    raw: Any = pooled.driver_connection
    try:
        raw.execute("PRAGMA synchronous=OFF")  # a bulk load of a scratch database
        raw.execute("PRAGMA cache_size=-2000000")
        raw.execute(
            "CREATE TABLE bench_redemptions (home TEXT NOT NULL, program TEXT NOT NULL,"
            " station TEXT NOT NULL, day TEXT NOT NULL, member TEXT NOT NULL,"
            " quantity INTEGER NOT NULL, value INTEGER NOT NULL)"
        )
        raw.execute("CREATE INDEX bench_redemptions_home_day ON bench_redemptions (home, day)")
        write_world(raw, tree)
        gen = Generator(raw, tree, total)
        gen.run()
        raw.execute("ANALYZE")
        raw.commit()
    finally:
        pooled.close()
        engine.dispose()
    return Built(
        url,
        path,
        tree,
        time.perf_counter() - started,
        gen.cells,
        gen.member_rows,
        gen.redemptions,
    )


# -- reads ---------------------------------------------------------------------------------------


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, round(len(s) * q) - 1))]


def _ms(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


LEVELS = [
    ("national", "national"),
    ("province", "provincial"),
    ("city", "city"),
    ("county", "county"),
    ("township", "township"),
    ("grassroots", "enterprise"),
]
SPANS = [("month", f"{YEAR}-06-01", f"{YEAR}-06-30"), ("year", f"{YEAR}-01-01", f"{YEAR}-12-31")]


def _naive(conn: Any, code: str, start: str, end: str) -> list[tuple[Any, ...]]:
    """Subtree totals per program and distinct members without the projection."""
    path = "/" + "/".join(_chain_of(conn, code)) + "/"
    return list(
        conn.exec_driver_sql(
            "SELECT r.program, count(*), sum(r.quantity), sum(r.value),"
            " count(DISTINCT r.home || ' ' || r.member)"
            " FROM unions u JOIN bench_redemptions r ON r.home = u.code"
            " WHERE u.path >= ? AND u.path < ? AND r.day >= ? AND r.day <= ?"
            " GROUP BY r.program",
            (path, path_upper(path), start, end),
        )
    )


def _chain_of(conn: Any, code: str) -> list[str]:
    path = conn.exec_driver_sql("SELECT path FROM unions WHERE code = ?", (code,)).scalar_one()
    return str(path).strip("/").split("/")


def bench_reads(built: Built, label: str = "") -> list[str]:
    engine = make_engine(built.url)
    rng = random.Random(11)
    budget_s = float(os.environ.get("BENCH_STATS_BASELINE_S", "60"))
    lines = []
    with engine.connect() as conn:
        for code in built.tree.levels["county"][:30]:  # warm up statements and the cache
            union_figures(conn, AUDITOR, code, *SPANS[1][1:])
        for name, kind in LEVELS:
            codes = built.tree.levels[kind]
            picks = [rng.choice(codes) for _ in range(PICKS)]
            for span, start, end in SPANS:
                figs = [_ms(partial(union_figures, conn, AUDITOR, c, start, end)) for c in picks]
                ser = [_ms(partial(series, conn, AUDITOR, c, start, end)) for c in picks]
                base: list[float] = []
                spent = 0.0
                for c in picks[:5]:
                    if spent > budget_s / (len(LEVELS) * len(SPANS)):
                        break
                    ms = _ms(partial(_naive, conn, c, start, end))
                    base.append(ms)
                    spent += ms / 1000
                check = union_figures(conn, AUDITOR, picks[0], start, end)["subtree"]["total"]
                naive = _naive(conn, picks[0], start, end)
                assert check["redemptions"] == sum(r[1] for r in naive), picks[0]
                assert check["value"] == sum(r[3] for r in naive), picks[0]
                ok = "✔" if _pct(figs, 0.99) < GOAL_MS else "✘"  # the figures (series: charts)
                line = (
                    f"{label}{name:<10} {span:<5} union_figures p50 {statistics.median(figs):7.2f}"
                    f" p99 {_pct(figs, 0.99):7.2f} ms | series p50 {statistics.median(ser):7.2f}"
                    f" p99 {_pct(ser, 0.99):7.2f} ms | naive p50 {statistics.median(base):9.1f}"
                    f" ms (n={len(base)}) | figures p99 < {GOAL_MS:.0f} ms {ok}"
                )
                print(line, flush=True)
                lines.append(line)
    engine.dispose()
    return lines


def _sum_days(conn: Any, scope: str, start: str, end: str) -> dict[str, list[int]]:
    """The sums of ``ledger.stats._sum_cells`` from the day cells alone (before the roll-up)."""
    out: dict[str, list[int]] = {}
    sums = ", ".join(f"sum({f})" for f in vs.FIELDS)
    for r in conn.exec_driver_sql(
        f"SELECT program, {sums} FROM stats_cells WHERE scope = ? AND period >= ?"
        " AND period <= ? GROUP BY program",
        (scope, start, end),
    ):
        out[r[0]] = [int(x or 0) for x in r[1:]]
    return out


def bench_months(built: Built) -> None:
    """What the monthly roll-up (``stats_months``) buys: the subtree, own and children sums of
    ``union_figures`` from day cells alone versus ``ledger.stats._sum_cells`` (whole months from
    the roll-up, days only at the edges); the same figures, checked."""
    engine = make_engine(built.url)
    rng = random.Random(11)
    with engine.connect() as conn:
        for name, kind in LEVELS[:4]:
            picks = [rng.choice(built.tree.levels[kind]) for _ in range(PICKS)]
            for span, start, end in [*SPANS, ("Feb10-Nov20", f"{YEAR}-02-10", f"{YEAR}-11-20")]:
                days_ms, months_ms = [], []
                for code in picks:
                    kids = built.tree.children.get(code, [])
                    scopes = [f"U:{code}", f"O:{code}", *(f"U:{k}" for k in kids)]
                    t = time.perf_counter()
                    a = [_sum_days(conn, sc, start, end) for sc in scopes]
                    days_ms.append((time.perf_counter() - t) * 1000)
                    t = time.perf_counter()
                    b = [_sum_cells(conn, sc, start, end) for sc in scopes]
                    months_ms.append((time.perf_counter() - t) * 1000)
                    assert a == b, (code, start, end)
                print(
                    f"[months] {name:<10} {span:<11} subtree+own+children sums: days"
                    f" p50 {statistics.median(days_ms):6.2f} p99 {_pct(days_ms, 0.99):6.2f} ms,"
                    f" month roll-up p50 {statistics.median(months_ms):6.2f}"
                    f" p99 {_pct(months_ms, 0.99):6.2f} ms",
                    flush=True,
                )
    engine.dispose()


# -- writes --------------------------------------------------------------------------------------


def _write_events(
    tree: Tree, count: int
) -> tuple[list[dict[str, Any]], dict[str, tuple[str, ...]]]:
    rng = random.Random(5)
    counties = tree.counties
    bodies: list[dict[str, Any]] = []
    groups: dict[str, tuple[str, ...]] = {}
    for i in range(count):
        county = rng.choice(counties)
        home = rng.choice(county.grassroots)
        member = f"w{rng.randrange(count // 4):08d}"
        groups.setdefault(member, _member_groups(rng))
        program, funded, value, _ = rng.choice(PROGRAMS)
        bodies.append(
            {
                "program": program,
                "version": 1,
                "member": member,
                "home": home,
                "station": rng.choice(county.stations),
                "funding": NATIONAL if funded == "national" else county.province,
                "operating": county.code,
                "quantity": 1,
                "value": value,
                "period": f"{YEAR}-{rng.randint(1, 12):02d}",
                "presentation": base64.urlsafe_b64encode(rng.randbytes(32)).decode().rstrip("="),
                "idempotency": f"bench-{i}",
            }
        )
    return bodies, groups


def _append_one(tx: Tx, *, body: dict[str, Any]) -> Entry:
    return tx.append("RedemptionRecorded", "station:bench", body)


def _append_rate(folder: Path, name: str, tree: Tree, stats: bool, count: int) -> float:
    url = f"sqlite:///{folder / name}.db"
    engine = make_engine(url, writer=True)
    init_schema(engine)
    bodies, groups = _write_events(tree, count)
    pooled = engine.raw_connection()
    raw: Any = pooled.driver_connection
    try:
        write_world(raw, tree)
        raw.executemany(
            "INSERT INTO member_groups VALUES (?,?,?,NULL)",
            [(m, g, f"{YEAR - 1}-01-01") for m, gs in groups.items() for g in gs],
        )
        raw.commit()
    finally:
        pooled.close()
    projections = [p for p in default_projections() if stats or not isinstance(p, StatsProjection)]
    signer = NoteSigner(ORIGIN, PrivateKey.generate())
    with Sequencer(engine, origin=ORIGIN, signer=lambda: signer, projections=projections) as seq:
        start = time.perf_counter()
        futures = [seq.submit(partial(_append_one, body=b)) for b in bodies]
        for f in futures:
            f.result()
        elapsed = time.perf_counter() - start
    if stats:
        with engine.connect() as conn:
            n = conn.exec_driver_sql(
                "SELECT sum(redemptions) FROM stats_cells WHERE scope = ?", (f"U:{NATIONAL}",)
            ).scalar()
            assert n == count, n
    engine.dispose()
    return count / elapsed


def bench_writes(folder: Path, tree: Tree) -> None:
    count = int(os.environ.get("BENCH_STATS_WRITES", "20000"))
    rates: dict[bool, list[float]] = {True: [], False: []}
    for i in range(2):  # alternate, best of two: the machine is shared
        for stats in (False, True):
            rates[stats].append(_append_rate(folder, f"w{i}{int(stats)}", tree, stats, count))
    with_, without = max(rates[True]), max(rates[False])
    print(
        f"append {count:,} RedemptionRecorded, default_projections(): {with_:,.0f} events/s;"
        f" without StatsProjection: {without:,.0f} events/s ({with_ / without:.2f}×)"
    )


def bench_seen(folder: Path) -> None:
    """What ``_new_members`` (the distinct-member check of every flush) costs once
    ``stats_seen`` is large: a batch's 400-key chunks against a table of BENCH_STATS_SEEN rows
    (default 5 M; 10 M redemptions make several times that), versus one primary-key lookup per
    key."""
    rows = int(os.environ.get("BENCH_STATS_SEEN", "5000000"))
    url = f"sqlite:///{folder / 'seen.db'}"
    engine = make_engine(url)
    stats_seen.create(engine)
    rng = random.Random(9)

    def key() -> tuple[str, str, str, str]:
        month = f"{YEAR}-{rng.randint(1, 12):02d}"
        return (
            f"H:{rng.randrange(85000):06d}",
            f"p{rng.randrange(10)}",
            month,
            f"m{rng.randrange(3 * 10**6):08d}",
        )

    pooled = engine.raw_connection()
    raw: Any = pooled.driver_connection
    raw.execute("PRAGMA synchronous=OFF")
    raw.executemany(
        "INSERT OR IGNORE INTO stats_seen VALUES (?,?,?,?)", sorted(key() for _ in range(rows))
    )
    raw.commit()
    pooled.close()
    batch: dict[tuple[str, str, str, str], tuple[str, ...]] = {key(): ("O:x",) for _ in range(2000)}
    lookup = select(stats_seen.c.member).where(
        stats_seen.c.anchor == bindparam("a"),
        stats_seen.c.program == bindparam("p"),
        stats_seen.c.period == bindparam("d"),
        stats_seen.c.member == bindparam("m"),
    )
    with engine.connect() as conn:
        t = time.perf_counter()
        _new_members(conn, batch)
        ours = time.perf_counter() - t
        conn.rollback()
        t = time.perf_counter()
        for a, p, d, m in batch:
            conn.execute(lookup, {"a": a, "p": p, "d": d, "m": m}).first()
        points = time.perf_counter() - t
    engine.dispose()
    print(
        f"_new_members, 2,000 keys against {rows:,} stats_seen rows: {ours * 1000:,.0f} ms"
        f" (INSERT .. ON CONFLICT DO NOTHING RETURNING); one key lookup each:"
        f" {points * 1000:,.1f} ms"
    )


def run() -> None:
    total = int(os.environ.get("BENCH_STATS_REDEMPTIONS", "10000000"))
    base = os.environ.get("BENCH_STATS_DIR")
    folder = Path(tempfile.mkdtemp(prefix="ul-bench-stats-", dir=base))
    try:
        built = generate(folder, total)
        size = built.path.stat().st_size / 2**20
        engine = make_engine(built.url)
        with engine.connect() as conn:
            base_rows = conn.exec_driver_sql("SELECT count(*) FROM bench_redemptions").scalar()
            nat = conn.exec_driver_sql(
                "SELECT sum(redemptions) FROM stats_cells WHERE scope = ?", (f"U:{NATIONAL}",)
            ).scalar()
            cells_size = int(
                conn.exec_driver_sql(
                    "SELECT sum(pgsize) FROM dbstat WHERE name LIKE '%stats_cells%'"
                ).scalar()
                or 0
            )
        engine.dispose()
        assert nat == built.redemptions == base_rows == total, (nat, built.redemptions, base_rows)
        print(
            f"generated {len(built.tree.rows):,} unions, {built.redemptions:,} redemptions →"
            f" {built.cells:,} cells, {built.member_rows:,} member rows in {built.seconds:.1f} s"
            f" ({built.redemptions / built.seconds:,.0f} redemptions/s, one process);"
            f" {size:,.0f} MiB on disk, stats_cells and its key {cells_size / 2**20:,.0f} MiB",
            flush=True,
        )
        bench_reads(built)
        variants = os.environ.get("BENCH_STATS_VARIANTS", "months").split(",")
        if "months" in variants:
            bench_months(built)
        bench_writes(folder, built.tree)
        bench_seen(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
