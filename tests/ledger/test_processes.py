"""Real OS processes: two writers never fork the chain; kill -9 loses nothing acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from keys import PrivateKey
from ledger.db import make_engine
from ledger.log import LogReader
from ledger.schema import init_schema
from tests.ledger.appender import ORIGIN
from verifier.audit import audit
from verifier.note import NoteSigner

REPO = Path(__file__).resolve().parents[2]


def spawn(url: str, key: PrivateKey, count: int, threads: int = 4) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.ledger.appender",
            url,
            key.seed().hex(),
            str(count),
            str(threads),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class ReaderSource:
    """The ledger database read directly, as an audit source."""

    def __init__(self, reader: LogReader) -> None:
        self.reader = reader

    def checkpoint(self) -> str:
        latest = self.reader.latest_checkpoint()
        assert latest is not None
        return latest.note

    def entries(self, start: int, end: int):  # type: ignore[no-untyped-def]
        yield from self.reader.entries(start, end)


def verify_ledger(url: str, key: PrivateKey) -> int:
    engine = make_engine(url)
    try:
        reader = LogReader(engine)
        result = audit(ReaderSource(reader), NoteSigner(ORIGIN, key).verifier())
        assert result.entries == reader.size(), "the last checkpoint covers the whole log"
        return result.entries
    finally:
        engine.dispose()


def test_two_processes_appending_at_once_make_one_linear_chain(database_url: str) -> None:
    engine = make_engine(database_url)
    init_schema(engine)
    engine.dispose()
    key = PrivateKey.generate()
    procs = [spawn(database_url, key, 400), spawn(database_url, key, 400)]
    acked: list[int] = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        acked += [int(line) for line in out.split()]
    assert len(acked) == 800
    assert sorted(acked) == list(range(800)), "every index exactly once: no fork, no gap"
    assert verify_ledger(database_url, key) == 800


def test_kill_9_mid_batch_loses_no_acknowledged_entry(database_url: str) -> None:
    engine = make_engine(database_url)
    init_schema(engine)
    engine.dispose()
    key = PrivateKey.generate()
    proc = spawn(database_url, key, 0, threads=16)
    assert proc.stdout is not None
    acked: list[int] = []
    deadline = time.monotonic() + 60
    while len(acked) < 1500 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(int(line))
    os.kill(proc.pid, signal.SIGKILL)
    rest, _ = proc.communicate(timeout=30)
    acked += [int(x) for x in rest.split()]
    assert len(acked) >= 1500, "the appender did not get going"
    # A fresh writer finishes the interrupted state: the head is intact, appending resumes.
    follow = spawn(database_url, key, 8, threads=2)
    _, err = follow.communicate(timeout=60)
    assert follow.returncode == 0, err
    engine = make_engine(database_url)
    try:
        reader = LogReader(engine)
        size = reader.size()
        present = set(range(size))
        assert set(acked) <= present, "an acknowledged entry was lost"
    finally:
        engine.dispose()
    assert verify_ledger(database_url, key) == size
