"""The sequencer on SQLite and PostgreSQL: chain, tree, tiles, proofs, checkpoints, projections."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import sequencer as sequencer_module
from ledger.errors import CommandFailed, NotCheckpointed, OutOfRange
from ledger.projections import compare, event_counts, rebuild
from ledger.sequencer import Event, Tx, batch_hash_at
from tests.ledger.conftest import Ledger
from verifier.checkpoint import verify_checkpoint
from verifier.entry import GENESIS_PREV, parse_entry
from verifier.errors import EntryError
from verifier.merkle import (
    CompactRange,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from verifier.receipt import verify_receipt


def all_entries(ledger: Ledger) -> list[bytes]:
    size = ledger.reader.size()
    out: list[bytes] = []
    for start in range(0, size, 1000):
        out += ledger.reader.entries(start, min(size, start + 1000))
    return out


def test_appends_form_one_chain_bound_to_the_tree(ledger: Ledger) -> None:
    entries = ledger.sequencer.append(
        [Event("TestJoined", "kid-1", {"member": "m1"}), Event("TestLeft", "kid-1", {})]
    )
    assert [e.index for e in entries] == [0, 1]
    stored = all_entries(ledger)
    assert stored == [e.data for e in entries]
    first, second = (parse_entry(d) for d in stored)
    assert first.prev == GENESIS_PREV
    assert second.prev == hashlib.sha256(stored[0]).digest()
    head = ledger.reader.head()
    assert head.size == 2
    assert head.root == root_from_leaf_hashes([leaf_hash(d) for d in stored])


def test_concurrent_appends_are_gap_free_and_batched(ledger: Ledger) -> None:
    def worker(n: int) -> None:
        for i in range(40):
            ledger.sequencer.append([Event("TestAppended", f"w{n}", {"i": i})])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = all_entries(ledger)
    assert len(stored) == 320
    prev = GENESIS_PREV
    for i, data in enumerate(stored):
        entry = parse_entry(data)
        assert entry.index == i
        assert entry.prev == prev
        prev = entry.hash
    with ledger.engine.connect() as conn:
        from sqlalchemy import select

        from ledger.schema import log_checkpoints

        checkpoints = conn.execute(select(log_checkpoints.c.size)).scalars().all()
    assert max(checkpoints) == 320  # checkpoint_interval=0: every batch is checkpointed


@pytest.mark.parametrize("size", [1, 2, 255, 256, 257, 511, 513, 1000])
def test_proofs_from_tiles_verify(ledger: Ledger, size: int) -> None:
    ledger.append(size)
    stored = all_entries(ledger)
    leaves = [leaf_hash(d) for d in stored]
    for tree_size in sorted({1, size // 2 or 1, size - 1 or 1, size}):
        root = root_from_leaf_hashes(leaves[:tree_size])
        assert ledger.reader.root(tree_size) == root
        for index in sorted({0, tree_size // 3, tree_size - 1}):
            proof = ledger.reader.inclusion_proof(index, tree_size)
            verify_inclusion(leaves[index], index, tree_size, proof, root)
        for first in sorted({1, tree_size // 2 or 1, tree_size}):
            proof = ledger.reader.consistency_proof(first, tree_size)
            verify_consistency(first, tree_size, root_from_leaf_hashes(leaves[:first]), root, proof)


def test_checkpoints_are_signed_and_receipts_verify_offline(ledger: Ledger) -> None:
    ledger.append(300)
    ledger.sequencer.checkpoint()
    latest = ledger.reader.latest_checkpoint()
    assert latest is not None
    cp = verify_checkpoint(latest.note, ledger.verifier)
    assert cp.size == 300
    assert cp.root_hash == ledger.reader.root(300)
    for index in (0, 150, 299):
        receipt = ledger.reader.receipt(index)
        verified = verify_receipt(type(receipt).from_json(receipt.to_json()), ledger.verifier)
        assert verified.entry == ledger.reader.entry(index)


def test_out_of_range_reads_are_errors_not_crashes(ledger: Ledger) -> None:
    ledger.append(10)
    with pytest.raises(OutOfRange):
        ledger.reader.entries(5, 11)
    with pytest.raises(OutOfRange):
        ledger.reader.entries(5, 5)
    with pytest.raises(OutOfRange):
        ledger.reader.inclusion_proof(10, 10)
    with pytest.raises(OutOfRange):
        ledger.reader.inclusion_proof(0, 11)
    with pytest.raises(OutOfRange):
        ledger.reader.consistency_proof(5, 11)
    with pytest.raises(OutOfRange):
        ledger.reader.consistency_proof(6, 5)
    with pytest.raises(OutOfRange):
        ledger.reader.receipt(10)


def test_a_failing_command_fails_alone(ledger: Ledger) -> None:
    def refuse(tx: Tx) -> None:
        raise ValueError("quota used")

    def break_after_append(tx: Tx) -> None:
        tx.append("TestAppended", "test", {"half": 1})
        raise RuntimeError("bug after writing")

    good = ledger.sequencer.submit(lambda tx: tx.append("TestAppended", "t", {"ok": 1}))
    bad = ledger.sequencer.submit(refuse)
    broken = ledger.sequencer.submit(break_after_append)
    also_good = ledger.sequencer.submit(lambda tx: tx.append("TestAppended", "t", {"ok": 2}))
    assert good.result(10).index == 0
    with pytest.raises(ValueError, match="quota"):
        bad.result(10)
    with pytest.raises(CommandFailed):
        broken.result(10)
    assert also_good.result(10).index == 1
    assert ledger.reader.size() == 2
    with pytest.raises(EntryError):
        ledger.sequencer.append([Event("not a type", "t", {})])
    with pytest.raises(EntryError):
        ledger.sequencer.append([Event("TestAppended", "t", {"amount": 1.5})])
    assert ledger.reader.size() == 2


def test_projections_rebuild_and_check(ledger: Ledger) -> None:
    ledger.append(30, "TestJoined")
    ledger.append(7, "TestLeft")
    assert compare(ledger.engine, ledger.sequencer._projections) == []
    with ledger.engine.begin() as conn:
        from sqlalchemy import update

        conn.execute(update(event_counts).where(event_counts.c.type == "TestLeft").values(count=99))
    differences = compare(ledger.engine, ledger.sequencer._projections)
    assert any("TestLeft" in d for d in differences)
    assert rebuild(ledger.writer, ledger.sequencer._projections) == 37
    assert compare(ledger.engine, ledger.sequencer._projections) == []
    with ledger.engine.connect() as conn:
        from sqlalchemy import select

        counts = dict(conn.execute(select(event_counts.c.type, event_counts.c.count)).all())
    assert counts == {"TestJoined": 30, "TestLeft": 7}


def test_receipt_before_any_checkpoint(database_url: str) -> None:
    from keys import PrivateKey
    from tests.ledger.conftest import open_ledger

    lg = open_ledger(database_url, PrivateKey.generate(), checkpoint_interval=3600)
    try:
        lg.sequencer.checkpoint()  # the empty tree
        lg.append(3)
        with pytest.raises(NotCheckpointed):
            lg.reader.receipt(2)
        lg.sequencer.checkpoint()
        lg.reader.receipt(2)
    finally:
        lg.sequencer.close()
        lg.writer.dispose()
        lg.engine.dispose()


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=600),
    st.integers(min_value=1, max_value=300),
    st.data(),
)
def test_batch_proofs_equal_proofs_over_the_whole_tree(
    before: int, batch: int, data: st.DataObject
) -> None:
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(before + batch)]
    frontier = CompactRange()
    for leaf in leaves[:before]:
        frontier.append(leaf)
    size = before + batch
    hash_at = batch_hash_at(frontier, leaves[before:])

    def whole(level: int, index: int) -> bytes:
        return root_from_leaf_hashes(leaves[index << level : (index + 1) << level])

    index = data.draw(st.integers(min_value=before, max_value=size - 1))
    assert inclusion_proof(index, size, hash_at) == inclusion_proof(index, size, whole)


def test_execute_with_receipts_proves_each_entry_at_once(ledger: Ledger) -> None:
    ledger.append(37)
    results: list[object] = []

    def redeem(n: int) -> None:
        results.append(
            ledger.sequencer.execute_with_receipts(
                lambda tx: [tx.append("TestAppended", "test", {"n": n, "k": k}) for k in range(2)]
            )
        )

    threads = [threading.Thread(target=redeem, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 12
    for entries, receipts in results:  # type: ignore[misc]
        assert [r.index for r in receipts] == [e.index for e in entries]
        for receipt in receipts:
            proven = verify_receipt(receipt, ledger.verifier)
            assert proven.index == receipt.index
            assert receipt.entry == ledger.reader.entry(receipt.index)
    # A command that appends nothing gets no receipt (and forces no checkpoint).
    assert ledger.sequencer.execute_with_receipts(lambda tx: 7) == (7, [])


def test_sqlite_writers_queue_on_the_writer_lock_file(tmp_path: Path) -> None:
    """On a SQLite file a batch waits for the flock of '<file>-writer.lock' (what another
    process's writer holds for its batch) and runs as soon as it is released."""
    from keys import PrivateKey
    from tests.ledger.conftest import open_ledger

    db = tmp_path / "l.db"
    lg = open_ledger(f"sqlite:///{db}", PrivateKey.generate(), checkpoint_interval=0.0)
    try:
        lg.sequencer.append([Event("TestAppended", "test", {"i": 0})])
        lock = tmp_path / "l.db-writer.lock"
        assert lock.exists()
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another writer's batch in progress
            pending = lg.sequencer.submit(lambda tx: tx.append("TestAppended", "test", {"i": 1}))
            time.sleep(0.5)
            assert not pending.done()
        finally:
            os.close(fd)  # that batch committed
        assert pending.result(timeout=10).index == 1
    finally:
        lg.sequencer.close()
        lg.writer.dispose()
        lg.engine.dispose()


def test_what_queues_while_the_writer_waits_for_the_lock_joins_its_batch(
    tmp_path: Path,
) -> None:
    """A writer waiting for another process's batch takes, once it has the lock, every command
    queued meanwhile into its own batch (one transaction, one commit, one checkpoint), and a
    close() that came meanwhile still runs them all and ends with the last checkpoint."""
    from keys import PrivateKey
    from tests.ledger.conftest import open_ledger

    lg = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", PrivateKey.generate())
    try:
        lg.sequencer.append([Event("TestAppended", "test", {"i": 0})])
        batches: list[object] = []  # each command's transaction (kept alive: ids stay unique)

        def command(tx: Tx, i: int) -> int:
            batches.append(tx.conn)
            return tx.append("TestAppended", "test", {"i": i}).index

        fd = os.open(tmp_path / "l.db-writer.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another writer's batch in progress
            first = lg.sequencer.submit(lambda tx: command(tx, 1))
            time.sleep(0.3)  # the writer took it and waits for the lock
            later = [lg.sequencer.submit(lambda tx, i=i: command(tx, i)) for i in range(2, 7)]
            closing = threading.Thread(target=lg.sequencer.close)
            closing.start()  # its stop mark is queued behind them
            time.sleep(0.1)
        finally:
            os.close(fd)
        closing.join(timeout=10)
        assert not closing.is_alive()
        assert [f.result(timeout=0) for f in [first, *later]] == [1, 2, 3, 4, 5, 6]
        assert len(batches) == 6
        assert len({id(conn) for conn in batches}) == 1  # one batch
        assert lg.reader.size() == 7
        last = lg.reader.latest_checkpoint()
        assert last is not None
        assert last.size == 7  # close() signed the last one
    finally:
        lg.sequencer.close()
        lg.writer.dispose()
        lg.engine.dispose()


def test_receipts_are_made_after_the_writer_lock_is_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proofs of a batch's receipts are computed once the batch is committed and the
    writer lock released (another process's writer need not wait for them); a receipt that
    cannot be made fails its own caller only, and the entry stays on the chain."""
    from keys import PrivateKey
    from tests.ledger.conftest import open_ledger

    lg = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", PrivateKey.generate())
    held: list[bool] = []
    made = sequencer_module.Sequencer._receipts

    def spy(outcomes, wanted, state, before, note):  # type: ignore[no-untyped-def]
        fd = os.open(tmp_path / "l.db-writer.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(fd)
        made(outcomes, wanted, state, before, note)

    monkeypatch.setattr(sequencer_module.Sequencer, "_receipts", staticmethod(spy))
    try:
        _, receipts = lg.sequencer.execute_with_receipts(
            lambda tx: tx.append("TestAppended", "test", {"i": 0})
        )
        assert held == [False]
        assert verify_receipt(receipts[0], lg.verifier).index == 0

        def broken(*_: object) -> None:
            raise ValueError("no proof")

        monkeypatch.setattr(sequencer_module, "inclusion_prover", lambda *_: broken)
        with pytest.raises(CommandFailed, match="no receipt"):
            lg.sequencer.execute_with_receipts(
                lambda tx: tx.append("TestAppended", "test", {"i": 1})
            )
        assert lg.reader.size() == 2  # recorded all the same
        assert lg.sequencer.execute(lambda tx: tx.append("TestAppended", "t", {}).index) == 2
    finally:
        lg.sequencer.close()
        lg.writer.dispose()
        lg.engine.dispose()


def test_a_command_cancelled_while_queued_is_dropped_and_the_writer_lives_on(
    tmp_path: Path,
) -> None:
    """An HTTP client that goes away cancels the awaited future (asyncio.wrap_future does):
    cancelled while queued, the command is not run; once running, it cannot be cancelled, and
    the writer resolves every future it runs (it must never die of a cancelled one)."""
    from keys import PrivateKey
    from tests.ledger.conftest import open_ledger

    lg = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", PrivateKey.generate())
    try:
        lg.sequencer.append([Event("TestAppended", "test", {"i": 0})])
        fd = os.open(tmp_path / "l.db-writer.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # hold the writer back: the next batch waits
            running = lg.sequencer.submit(lambda tx: tx.append("TestAppended", "test", {"i": 1}))
            time.sleep(0.3)  # the writer took it and waits for the lock
            queued = lg.sequencer.submit(lambda tx: tx.append("TestAppended", "test", {"i": 2}))
            assert not running.cancel()  # running: too late to cancel
            assert queued.cancel()  # still queued
        finally:
            os.close(fd)
        assert running.result(timeout=10).index == 1
        later = lg.sequencer.execute(lambda tx: tx.append("TestAppended", "test", {"i": 3}))
        assert later.index == 2  # the cancelled command never ran; the writer is alive
    finally:
        lg.sequencer.close()
        lg.writer.dispose()
        lg.engine.dispose()


def test_awaited_commands_get_results_receipts_and_errors_one_call_per_batch(
    ledger: Ledger,
) -> None:
    """submit_async: each coroutine gets its command's result (with receipts if asked) or its
    error, and a batch's results reach the event loop in one call, not one per request."""

    release = threading.Event()

    def hold(tx: Tx) -> str:
        release.wait(10)  # the writer sits in this batch while the others queue
        return "held"

    def refuse(tx: Tx) -> None:
        raise ValueError("refused")

    async def main() -> tuple[list[object], int]:
        loop = asyncio.get_running_loop()
        calls = 0
        original = loop.call_soon_threadsafe

        def counted(*args: object, **kwargs: object) -> object:
            nonlocal calls
            calls += 1
            return original(*args, **kwargs)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        held = ledger.sequencer.submit_async(hold)
        await asyncio.sleep(0.2)  # the writer runs hold's batch
        appends = [
            ledger.sequencer.submit_async(
                lambda tx, i=i: tx.append("TestAppended", "t", {"i": i}).index, receipts=True
            )
            for i in range(20)
        ]
        refused = ledger.sequencer.submit_async(refuse)
        release.set()
        results = await asyncio.gather(held, *appends, refused, return_exceptions=True)
        return results, calls

    results, calls = asyncio.run(main())
    assert results[0] == "held"
    indexes = []
    for value in results[1:-1]:
        index, receipts = value  # type: ignore[misc]
        assert verify_receipt(receipts[0], ledger.verifier).index == index
        indexes.append(index)
    assert indexes == list(range(20))
    assert isinstance(results[-1], ValueError)
    assert calls <= 3  # hold's batch, then the 21 queued meanwhile (in one or two batches)


def test_an_awaited_command_cancelled_while_queued_is_not_run(ledger: Ledger) -> None:

    release = threading.Event()
    ran: list[int] = []

    async def main() -> object:
        held = ledger.sequencer.submit_async(lambda tx: release.wait(10))
        await asyncio.sleep(0.2)  # the writer runs the first batch
        queued = ledger.sequencer.submit_async(lambda tx: ran.append(1))
        queued.cancel()  # the HTTP client left
        release.set()
        await held
        return await ledger.sequencer.submit_async(lambda tx: tx.append("T", "t", {}).index)

    assert asyncio.run(main()) == 0  # the writer lives on
    assert ran == []


def test_the_memo_starts_empty_once_it_has_grown(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memo outlives batches (no other writer here), but not beyond MEMO_LIMIT entries:
    projections keep per-member reads in it."""
    monkeypatch.setattr(sequencer_module, "MEMO_LIMIT", 3)
    reads: list[int] = []

    def fill(tx: Tx, n: int) -> int:
        return tx.memoised(("k", n), lambda: reads.append(n) or n)  # type: ignore[func-returns-value]

    run = ledger.sequencer.execute
    run(lambda tx: [fill(tx, n) for n in range(3)])
    run(lambda tx: [fill(tx, n) for n in range(3)])  # kept: 3 entries are not over the limit
    assert reads == [0, 1, 2]
    run(lambda tx: fill(tx, 3))  # now 4 entries: the next batch starts empty
    run(lambda tx: fill(tx, 0))
    assert reads == [0, 1, 2, 3, 0]
