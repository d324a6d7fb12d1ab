"""Paired comparison of two code trees on the online redemption path.

    python -m bench.paired OTHER_TREE [THIS_TREE]    # e.g. a `git worktree` of main

This machine's speed moves by 20-30% within minutes, so two runs of ``python -m bench
redemption`` one after the other cannot tell a 5% change from the noise. Here both trees run at
the same time: each sets up its own data directory with its own code (so their schemas may
differ), serves it with ``BENCH_SERVERS`` processes, and gets its own load process with
``BENCH_CONCURRENCY`` connections; both loads start together. Each round prints, per tree, the
redemptions per second and the servers' CPU per redemption (from ``/proc``); the rounds swap
which tree starts first. The CPU per redemption is the figure to compare: both trees share the
machine's speed of the moment. An A/A run (the same tree twice) differs by about 0.01-0.03 ms.

It measures work, not the serial limit: with both trees on the two cores, neither holds its
write lock all the time, so a change that only shortens the time under the lock shows little
here; ``python -m bench redemption`` (alternated runs) is the test for that.

Environment: BENCH_SECONDS (8), BENCH_CONCURRENCY (32), BENCH_SERVERS (1), BENCH_ROUNDS (3).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
SERVERS = int(os.environ.get("BENCH_SERVERS", "1"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))

# Run in each tree (its own code): the data directory, the stations' seeds, the wallets.
_SETUP = """
import json, sys
from pathlib import Path
from bench import bench_redemption as b
settings, seeds, wallets = b._setup(Path(sys.argv[1]))
print(json.dumps({"seeds": seeds, "wallets": wallets}))
"""


def _setup(tree: Path, folder: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _SETUP, str(folder)],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _serve(tree: Path, data: Path, port: int) -> subprocess.Popen[bytes]:
    from bench import bench_redemption as b  # noqa: PLC0415

    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIONLEDGER_")}
    env |= {"UNIONLEDGER_KEY_PASSPHRASE": b.PASS, "UNIONLEDGER_ACCESS_LOG": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--data-dir", str(data), "--port", str(port)],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _cpu(server: subprocess.Popen[bytes]) -> float:
    fields = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _round(sides: list[tuple[str, Path, Path, dict[str, Any]]], tag: str) -> list[str]:
    from bench import bench_redemption as b  # noqa: PLC0415

    started = []
    try:
        for _, tree, data, _ in sides:
            ports = [b._free_port() for _ in range(SERVERS)]
            started.append((ports, [_serve(tree, data, port) for port in ports]))
        urls = [[f"http://127.0.0.1:{port}" for port in ports] for ports, _ in started]
        tokens = []
        for side_urls, (_, _, _, made) in zip(urls, sides, strict=True):
            for url in side_urls:
                b._wait(url)
            tokens.append([b._station_token(side_urls[0], s, d) for s, d in made["seeds"].items()])
        spawn = multiprocessing.get_context("spawn")
        queues = [spawn.Queue() for _ in sides]
        before = [sum(_cpu(s) for s in servers) for _, servers in started]
        loads = [
            spawn.Process(target=b._load, args=(u, t, side[3]["wallets"], q, f"{tag}{i}"))
            for i, (u, t, side, q) in enumerate(zip(urls, tokens, sides, queues, strict=True))
        ]
        for load in loads:
            load.start()
        results = [q.get(timeout=SECONDS + 300) for q in queues]
        after = [sum(_cpu(s) for s in servers) for _, servers in started]
        for load in loads:
            load.join()
    finally:
        for _, servers in started:
            for server in servers:
                server.terminate()
            for server in servers:
                server.wait(timeout=30)
    lines = []
    for (name, *_), (latencies, failures, elapsed), cpu0, cpu1 in zip(
        sides, results, before, after, strict=True
    ):
        done = len(latencies) - len(failures)
        per = (cpu1 - cpu0) / done * 1000 if done else float("nan")
        lines.append(
            f"{name}: {done / elapsed:6,.0f} redemptions/s  server CPU {per:.3f} ms/redemption"
            f"  not 201: {len(failures)}"
        )
    return lines


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    trees = [Path(argv[0]).resolve(), Path(argv[1] if len(argv) > 1 else ".").resolve()]
    for tree in trees:
        if not (tree / "api" / "cli.py").is_file():
            print(f"not a UnionLedger tree: {tree}", file=sys.stderr)
            return 2
    folder = Path(tempfile.mkdtemp(prefix="ul-bench-paired-"))
    print(f"setting up a data directory per tree in {folder} ...", flush=True)
    sides = []
    for name, tree in zip(("A", "B"), trees, strict=True):
        made = _setup(tree, folder / name)
        sides.append((name, tree, folder / name / "data", made))
        print(f"{name} = {tree}", flush=True)
    print(
        f"{ROUNDS} rounds of {SECONDS:g} s; per tree {SERVERS} server(s), {CONCURRENCY}"
        " connections; both trees at once",
        flush=True,
    )
    for n in range(ROUNDS):
        order = sides if n % 2 == 0 else sides[::-1]  # which tree starts first
        lines = sorted(_round(order, f"r{n}-"))
        print(f"round {n + 1}: " + "   |   ".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    # The load processes read these when they import bench.bench_redemption.
    os.environ.setdefault("BENCH_CONCURRENCY", str(CONCURRENCY))
    os.environ.setdefault("BENCH_SECONDS", str(SECONDS))
    sys.exit(main(sys.argv[1:]))
