"""The benchmarks must not break silently: ``python -m bench unions`` at a small size
(``BENCH_UNIONS``), through the same entry point ``make bench`` uses, prints every figure line.
Nothing here asserts a speed; only that each measurement ran and printed a sane figure."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UNIONS = 100_000  # the smallest round size whose townships each hold enterprises (≥ 2 each)
PROVINCES = 31
FANOUT = 10
NUMBER = r"[\d,]+"
MS = r"\s+(\d+\.\d{2,3}) ms"


def _run(*args: str, module: str = "bench", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def test_the_unions_benchmark_runs_small_and_prints_every_figure() -> None:
    done = _run("unions", BENCH_UNIONS=str(UNIONS))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "== unions"

    generated = re.fullmatch(
        rf"generated ({NUMBER}) unions \(({NUMBER}) grassroots, ({NUMBER}) members\)"
        rf" in \d+\.\d s; {NUMBER} MiB on disk",
        lines[1],
    )
    assert generated, lines[1]
    total, grassroots, members = map(_int, generated.groups())
    assert total == UNIONS  # the size knob is honoured exactly
    structure = 1 + PROVINCES * (1 + FANOUT + FANOUT**2 + FANOUT**3)
    assert grassroots == UNIONS - structure
    assert 0 < members <= 260 * grassroots

    percentiles = rf"p50{MS}\s+p99{MS}"
    figures = [
        ("subtree member count, provincial", "range scan SUM"),
        ("subtree member count, city", "range scan SUM"),
        ("subtree member count, county", "range scan SUM"),
        ("first page (100), province", "whole subtree"),
        ("deep page (100), province", "LIMIT/OFFSET"),
    ]
    for line, (label, baseline) in zip(lines[2:7], figures, strict=True):
        found = re.fullmatch(
            rf"{re.escape(label)}\s+{percentiles}\s+baseline {re.escape(baseline)}:"
            rf" {percentiles}\s+\(({NUMBER})× at p50\)",
            line,
        )
        assert found, line
        ours50, ours99, base50, base99 = (float(x) for x in found.groups()[:4])
        assert 0 < ours50 <= ours99
        assert 0 < base50 <= base99

    join = re.fullmatch(
        rf"adjust_member_counts \(a join\)\s+({NUMBER})/s\s+baseline members_own only:"
        rf"\s+({NUMBER})/s\s+ratio\s+(\d+\.\d\d)",
        lines[7],
    )
    assert join, lines[7]
    assert _int(join[1]) > 0
    assert _int(join[2]) > 0
    assert len(lines) == 8, lines[8:]


def test_an_unknown_benchmark_is_a_usage_error() -> None:
    done = _run("no-such-bench")
    assert done.returncode == 2
    assert "unknown benchmark 'no-such-bench'" in done.stderr
    assert "unions" in done.stderr
    assert done.stdout == ""


def test_the_paired_comparison_runs_one_tree_against_itself() -> None:
    """``python -m bench.paired`` (bench/README.md): each tree's line in each round, with a rate
    and a CPU per redemption, and every redemption answered 201."""
    done = _run(
        str(REPO),
        module="bench.paired",
        BENCH_MEMBERS="10",
        BENCH_PREPARED="300",
        BENCH_ROUNDS="1",
        BENCH_SECONDS="1",
        BENCH_CONCURRENCY="4",
    )
    assert done.returncode == 0, done.stderr
    lines = re.findall(
        rf"([AB]): +({NUMBER}) redemptions/s  server CPU (\d+\.\d{{3}}) ms/redemption"
        r"  not 201: (\d+)",
        done.stdout,
    )
    assert [side for side, *_ in lines] == ["A", "B"], done.stdout
    for _, rate, cpu, failed in lines:
        assert _int(rate) > 0
        assert float(cpu) > 0
        assert failed == "0"


def test_the_paired_comparison_wants_unionledger_trees() -> None:
    done = _run(str(REPO / "docs"), module="bench.paired")
    assert done.returncode == 2
    assert "not a UnionLedger tree" in done.stderr


def test_the_sync_benchmark_runs_small_and_prints_every_figure() -> None:
    """``python -m bench sync`` with 400 records and one server: the reference rates, the
    writer's floor, every record accepted over HTTP, the servers' CPU and the ratios."""
    done = _run("sync", BENCH_SYNC_RECORDS="400", BENCH_SERVERS="1")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    out = done.stdout
    for label in ("raw Ed25519 verify", "verify_record     ", "floor of a sync's writer"):
        found = re.search(rf"{re.escape(label)} \(.*\): +({NUMBER}) records/s", out)
        assert found, out
        assert _int(found.group(1)) > 0
    batched = re.search(rf"the same, one entry per 200 records: +({NUMBER}) records/s", out)
    assert batched, out
    assert _int(batched.group(1)) > 0
    synced = re.search(
        rf"sync over HTTP \(1 server\(s\), 8 devices, batches of 1000\): 400 records in"
        rf" \d+\.\d s = +({NUMBER}) accepted records/s .*answers: (\{{.*\}})",
        out,
    )
    assert synced, out
    assert _int(synced.group(1)) > 0
    assert synced.group(2) == "{'accepted': 400, 'conflict': 0, 'refused': 0, 'duplicate': 0}"
    assert re.search(rf"servers' CPU: {NUMBER} us per accepted record", out), out
    assert re.search(r"/ the writer's floor: \d+\.\d\d +\(target: >= 20,000/s\)", out), out
