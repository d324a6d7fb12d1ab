"""The ledger: append throughput (group commit vs a commit per entry), proof latency at 1 M and
10 M entries, and audit rate vs raw SHA-256 over the same bytes.

    python -m bench ledger            # all, SQLite and (when installed) PostgreSQL
    BENCH_PROOF_SIZES=1000000 python -m bench ledger
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import update

from bench.timing import report
from keys import PrivateKey
from ledger.db import make_engine
from ledger.log import LogReader
from ledger.projections import default_projections
from ledger.schema import init_schema, log_head
from ledger.sequencer import Event, Sequencer, write_tiles
from verifier.audit import audit
from verifier.checkpoint import Checkpoint, sign_checkpoint
from verifier.entry import format_entry_time, make_entry
from verifier.merkle import CompactRange, leaf_hash, root_from_leaf_hashes
from verifier.note import NoteSigner

ORIGIN = "bench.unionledger.localhost/ledger"
SIGNER = NoteSigner(ORIGIN, PrivateKey.generate())


def _append_rate(url: str, count: int, *, max_batch: int) -> float:
    engine = make_engine(url, writer=True)
    init_schema(engine)
    with Sequencer(
        engine,
        origin=ORIGIN,
        signer=lambda: SIGNER,
        projections=default_projections(),
        max_batch=max_batch,
    ) as sequencer:
        body = {"member": "p" * 43, "program": "summer-2026", "station": "ST-000123", "qty": 1}
        start = time.perf_counter()
        if max_batch == 1:  # the baseline: each caller waits for its own commit
            for _ in range(count):
                sequencer.append([Event("BenchAppended", "station-key-id", body)])
        else:  # many concurrent callers: submit all, then wait for every acknowledgement
            futures = [
                sequencer.submit(lambda tx: tx.append("BenchAppended", "station-key-id", body))
                for _ in range(count)
            ]
            for f in futures:
                f.result()
        elapsed = time.perf_counter() - start
    engine.dispose()
    return count / elapsed


def bench_append() -> None:
    folder = Path(tempfile.mkdtemp(prefix="ul-bench-"))
    urls = [("SQLite", lambda name: f"sqlite:///{folder / name}.db")]
    cluster = None
    try:
        from tests.pg import PostgresCluster, find_pg_bin  # noqa: PLC0415  (optional)

        bindir = find_pg_bin()
        if bindir is not None:
            cluster = PostgresCluster(bindir)
            cluster.start()
            pg = cluster
            urls.append(("PostgreSQL", lambda name: pg.new_database()))
        else:
            print("PostgreSQL: not installed here, skipped")
        for label, make_url in urls:
            grouped = _append_rate(make_url("group"), 30_000, max_batch=2000)
            single = _append_rate(make_url("single"), 1_500, max_batch=1)
            report(f"append, group commit ({label})", grouped, single, "commit per entry")
    finally:
        if cluster is not None:
            cluster.stop()


def _synthetic_log(url: str, size: int) -> None:
    """Tiles and head of a ``size``-entry log (proofs need only those), written fast."""
    engine = make_engine(url, writer=True)
    init_schema(engine)
    rng = random.Random(size)
    frontier = CompactRange()
    chunk = 1 << 16
    with engine.begin() as conn:
        for start in range(0, size, chunk):
            leaves = [rng.randbytes(32) for _ in range(min(chunk, size - start))]
            write_tiles(conn, start, leaves)
            frontier.extend(leaves)
        conn.execute(
            update(log_head)
            .where(log_head.c.id == 1)
            .values(size=size, root=frontier.root(), frontier=frontier.to_bytes())
        )
    engine.dispose()


def bench_proofs() -> None:
    sizes = [int(s) for s in os.environ.get("BENCH_PROOF_SIZES", "1000000,10000000").split(",")]
    folder = Path(tempfile.mkdtemp(prefix="ul-bench-proofs-"))
    for size in sizes:
        url = f"sqlite:///{folder / f'proofs-{size}.db'}"
        started = time.perf_counter()
        _synthetic_log(url, size)
        built = time.perf_counter() - started
        engine = make_engine(url)
        reader = LogReader(engine, cache_tiles=0)  # no cache: every proof reads its tiles
        rng = random.Random(1)
        inclusion, consistency = [], []
        for _ in range(300):
            index = rng.randrange(size)
            t = time.perf_counter()
            reader.inclusion_proof(index, size)
            inclusion.append((time.perf_counter() - t) * 1000)
            first = rng.randrange(1, size)
            t = time.perf_counter()
            reader.consistency_proof(first, size)
            consistency.append((time.perf_counter() - t) * 1000)
        engine.dispose()
        # The baseline a log without stored nodes would pay: rehashing every leaf for a root.
        leaves = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(min(size, 10**6))]
        t = time.perf_counter()
        root_from_leaf_hashes(leaves)
        rehash_ms = (time.perf_counter() - t) * 1000 * (size / len(leaves))
        for label, samples in (("inclusion", inclusion), ("consistency", consistency)):
            samples.sort()
            p50 = statistics.median(samples)
            p99 = samples[int(len(samples) * 0.99) - 1]
            print(
                f"{label} proof at {size:>11,} entries   p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
                f"   baseline rehash the log: {rehash_ms:9.0f} ms  (log built in {built:.0f} s)"
            )


class _Entries:
    def __init__(self, entries: list[bytes], note: str) -> None:
        self.data, self.note = entries, note

    def checkpoint(self) -> str:
        return self.note

    def entries(self, start: int, end: int) -> Iterator[bytes]:
        return iter(self.data[start:end])


def bench_audit(count: int = 200_000) -> None:
    prev, entries = bytes(32), []
    rng = random.Random(7)
    stamp = format_entry_time(__import__("datetime").datetime.now(__import__("datetime").UTC))
    for i in range(count):
        # A member pseudonym as the ledger makes them: 16 random bytes, base64url.
        member = base64.urlsafe_b64encode(rng.randbytes(16)).rstrip(b"=").decode()
        body = {"member": member, "program": "summer-2026", "station": "ST-000123", "qty": 1}
        entry = make_entry(
            index=i,
            time=stamp,
            type="RedemptionRecorded",
            actor="station-key-id",
            body=body,
            prev=prev,
        )
        entries.append(entry.data)
        prev = entry.hash
    root = root_from_leaf_hashes([leaf_hash(e) for e in entries])
    note = sign_checkpoint(Checkpoint(ORIGIN, count, root), SIGNER)
    t = time.perf_counter()
    audit(_Entries(entries, note), SIGNER.verifier())
    rate = count / (time.perf_counter() - t)
    t = time.perf_counter()
    for e in entries:
        hashlib.sha256(e).digest()
    raw = count / (time.perf_counter() - t)
    size = sum(map(len, entries)) // count
    report(f"audit ({count:,} entries of {size} B)", rate, raw, "raw SHA-256")


def run() -> None:
    bench_audit()
    bench_append()
    bench_proofs()
