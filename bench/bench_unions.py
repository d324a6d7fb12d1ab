"""The union tree at national scale: subtree head counts and subtree listing on 2 M unions.

    python -m bench unions
    BENCH_UNIONS=200000 python -m bench unions      # a smaller tree, for a quick look

A tree shaped like China's (national → 31 provinces → 10 cities each → 10 counties each → 10
townships each → the rest grassroots, ≈63 per township) is written straight into the ``unions``
projection table on SQLite in bulk, with ``members_subtree`` filled consistently (grassroots
unions hold 0..260 members: ≈255 M in all). Then, against baselines measured in the same run:

- subtree member count (province, city, county): the maintained counter (one row read) versus a
  ``path`` range scan summing ``members_own`` over the subtree's grassroots rows, i.e. what
  counting costs without the counter; every pick checks that both give the same number;
- first page (100) of a province's subtree versus reading the whole subtree in one go;
- a deep page (``after`` = a township path in the middle of the province) versus the same page
  by ``LIMIT 100 OFFSET n`` (both return the same rows: checked);
- ``adjust_member_counts`` (one member joins: own count plus six subtree counts) versus an
  UPDATE of ``members_own`` alone (what a join costs without the rollup).
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, func, select, update

from bench.timing import rate, report
from ledger.db import make_engine
from ledger.schema import projection_metadata
from ledger.unions import (
    GRASSROOTS,
    JOIN_CODE_ALPHABET,
    adjust_member_counts,
    list_subtree,
    path_upper,
    subtree_member_count,
    unions,
)

SHARED = Path(os.environ.get("UNIONLEDGER_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TIME = "2026-11-25T08:00:00.000000Z"
PICKS = 200
FANOUT = 10  # cities per province, counties per city, townships per county
_COLUMNS = [c.name for c in unions.columns]
_INSERT = f"INSERT INTO unions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
_GRASSROOTS_KINDS = sorted(k.value for k in GRASSROOTS)
T = TypeVar("T")


def _join_code(i: int) -> str:
    # A bijection of 0 .. 2**50 - 1 (odd multiplier): unique, and scattered like random codes.
    n = (i * 0x2545F4914F6CD + 0x9E3779B97F4A) % (1 << 50)
    return "".join(JOIN_CODE_ALPHABET[(n >> (5 * k)) & 31] for k in range(10))


class _Tree:
    """Writes the tree in depth-first order (parents first) and remembers what the
    measurements pick from."""

    def __init__(self, raw: Any, total: int) -> None:
        self.cursor = raw.cursor()
        self.rng = random.Random(2026)
        self.pending: list[tuple[object, ...]] = []
        self.count = 0
        self.sums: dict[str, int] = {}  # members_subtree of every non-grassroots union
        self.levels: dict[str, list[tuple[str, str]]] = {
            k: [] for k in ("provincial", "city", "county")
        }
        self.townships: dict[str, list[str]] = {}  # province → township paths, in path order
        provinces = 31
        townships = provinces * FANOUT**3
        self.grassroots = total - 1 - provinces * (1 + FANOUT + FANOUT**2) - townships
        self.per_township, self.extra = divmod(self.grassroots, townships)
        self.township_index = 0

    def add(self, code: str, kind: str, parent: str | None, path: str, members: int) -> None:
        self.pending.append(
            (code, f"{code} 工会", kind, parent, path, path.count("/") - 2, "active",
             _join_code(self.count), False, members, members, TIME, TIME)
        )  # fmt: skip
        self.count += 1
        if len(self.pending) >= 50_000:
            self.flush()

    def flush(self) -> None:
        self.cursor.executemany(_INSERT, self.pending)
        self.pending.clear()

    def union(self, code: str, kind: str, parent: str | None, path: str) -> str:
        here = f"{path}{code}/"
        self.add(code, kind, parent, here, 0)
        self.sums[code] = 0
        if kind in self.levels:
            self.levels[kind].append((code, here))
        return here

    def township(self, province: str, code: str, parent: str, path: str, chain: list[str]) -> None:
        here = self.union(code, "township", parent, path)
        self.townships[province].append(here)
        n = self.per_township + (1 if self.township_index < self.extra else 0)
        self.township_index += 1
        total = 0
        for g in range(n):
            kind = _GRASSROOTS_KINDS[0 if g % 20 else 1 + g // 20 % 2]  # mostly enterprises
            members = self.rng.randint(0, 260)
            total += members
            child = f"{code}-{g:03d}"
            self.add(child, kind, code, f"{here}{child}/", members)
        for up in [*chain, code]:
            self.sums[up] += total


def generate(url: str, total: int) -> _Tree:
    engine = make_engine(url)
    projection_metadata.create_all(engine, tables=[unions])
    pooled = engine.raw_connection()
    raw: Any = pooled.driver_connection  # the sqlite3 connection: executemany without overhead
    try:
        raw.execute("PRAGMA synchronous=OFF")  # a bulk load of a scratch database
        raw.execute("PRAGMA cache_size=-1000000")
        tree = _Tree(raw, total)
        with (SHARED / "data" / "provinces.csv").open(encoding="utf-8") as f:
            provinces = [row["code"] for row in csv.DictReader(f)]
        root = tree.union("100000", "national", None, "/")
        for p in provinces:
            tree.townships[p] = []
            p_path = tree.union(p, "provincial", "100000", root)
            for c in range(1, FANOUT + 1):
                city = f"{p[:2]}{c:02d}00"
                c_path = tree.union(city, "city", p, p_path)
                for k in range(1, FANOUT + 1):
                    county = f"{city[:4]}{k:02d}"
                    k_path = tree.union(county, "county", city, c_path)
                    for t in range(1, FANOUT + 1):
                        chain = ["100000", p, city, county]
                        tree.township(p, f"{county}{t:03d}", county, k_path, chain)
        tree.flush()
        tree.cursor.executemany(
            "UPDATE unions SET members_subtree = ? WHERE code = ?",
            [(n, code) for code, n in tree.sums.items()],
        )
        raw.commit()
        raw.execute("ANALYZE")
    finally:
        pooled.close()
        engine.dispose()
    return tree


def _ms(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return (time.perf_counter() - t) * 1000, out


def _line(label: str, ours: list[float], base: list[float], base_label: str) -> None:
    def p(samples: list[float], q: float) -> float:
        samples = sorted(samples)
        return samples[max(0, int(len(samples) * q) - 1)]

    o50, b50 = statistics.median(ours), statistics.median(base)
    print(
        f"{label:<30} p50 {o50:7.3f} ms  p99 {p(ours, 0.99):7.3f} ms   baseline {base_label}:"
        f" p50 {b50:8.2f} ms  p99 {p(base, 0.99):8.2f} ms   ({b50 / o50:,.0f}× at p50)"
    )


def _scan_count(conn: Connection, code: str) -> int:
    path = conn.execute(select(unions.c.path).where(unions.c.code == code)).scalar_one()
    return int(
        conn.execute(
            select(func.coalesce(func.sum(unions.c.members_own), 0)).where(
                unions.c.path >= path,
                unions.c.path < path_upper(path),
                unions.c.kind.in_(_GRASSROOTS_KINDS),
            )
        ).scalar_one()
    )


def _counts(conn: Connection, tree: _Tree, rng: random.Random) -> None:
    for code, _ in tree.levels["county"][:50]:  # warm up caches and compiled statements
        subtree_member_count(conn, code)
        _scan_count(conn, code)
    for kind in ("provincial", "city", "county"):
        picks = [rng.choice(tree.levels[kind])[0] for _ in range(PICKS)]
        ours, base = [], []
        for code in picks:
            t1, counted = _ms(subtree_member_count, conn, code)
            t2, scanned = _ms(_scan_count, conn, code)
            assert counted == scanned, (code, counted, scanned)
            ours.append(t1)
            base.append(t2)
        _line(f"subtree member count, {kind}", ours, base, "range scan SUM")


def _pages(conn: Connection, tree: _Tree, rng: random.Random) -> None:
    provinces = [rng.choice(tree.levels["provincial"]) for _ in range(PICKS)]
    first = [_ms(list_subtree, conn, code)[0] for code, _ in provinces]
    whole = []
    for _, path in provinces[:20]:  # the baseline reads ≈65,000 rows a time: 20 picks
        query = select(unions).where(unions.c.path >= path, unions.c.path < path_upper(path))
        whole.append(_ms(lambda q: conn.execute(q).all(), query.order_by(unions.c.path))[0])
    _line("first page (100), province", first, whole, "whole subtree")
    deep, offset = [], []
    for code, path in provinces:
        townships = tree.townships[code]
        after = townships[len(townships) // 2]
        skip = conn.execute(
            select(func.count()).where(unions.c.path >= path, unions.c.path <= after)
        ).scalar_one()
        t1, page = _ms(list_subtree, conn, code, after=after)
        query = (
            select(unions)
            .where(unions.c.path >= path, unions.c.path < path_upper(path))
            .order_by(unions.c.path)
            .limit(100)
            .offset(skip)
        )
        t2, rows = _ms(lambda q: conn.execute(q).all(), query)
        assert [r.code for r in page] == [r.code for r in rows]
        deep.append(t1)
        offset.append(t2)
    _line("deep page (100), province", deep, offset, "LIMIT/OFFSET")


def _joins(engine: Engine, rng: random.Random) -> None:
    query = select(unions.c.code).where(unions.c.kind == "enterprise").limit(200_000)
    bump_own = update(unions).values(members_own=unions.c.members_own + 1)
    with engine.connect() as conn, conn.begin() as tx:
        codes = list(conn.execute(query).scalars())
        ours = rate(lambda: adjust_member_counts(conn, rng.choice(codes), 1), n=2000)
        base = rate(
            lambda: conn.execute(bump_own.where(unions.c.code == rng.choice(codes))), n=2000
        )
        tx.rollback()
    report("adjust_member_counts (a join)", ours, base, "members_own only")


def run() -> None:
    total = int(os.environ.get("BENCH_UNIONS", "2000000"))
    folder = Path(tempfile.mkdtemp(prefix="ul-bench-unions-"))
    try:
        url = f"sqlite:///{folder / 'unions.db'}"
        started = time.perf_counter()
        tree = generate(url, total)
        built = time.perf_counter() - started
        size = (folder / "unions.db").stat().st_size / 2**20
        national = tree.sums["100000"]
        print(
            f"generated {tree.count:,} unions ({tree.grassroots:,} grassroots, {national:,}"
            f" members) in {built:.1f} s; {size:,.0f} MiB on disk"
        )
        engine = make_engine(url)
        rng = random.Random(7)
        with engine.connect() as conn:
            assert subtree_member_count(conn, "100000") == national == _scan_count(conn, "100000")
            _counts(conn, tree, rng)
            _pages(conn, tree, rng)
        _joins(engine, rng)
        engine.dispose()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
