"""The sequencer: the one writer that orders the ledger, with group commit.

Commands (functions of a :class:`Tx`) are queued; one writer thread takes every queued command
(up to ``max_batch``) and runs them in ONE database transaction: each command reads state and
appends events through ``tx.append``; projections are updated as each event is appended (one
that keeps rows in memory writes them when the command ends, or at the latest when the batch
does, through ``end_command`` and ``flush``); then the entries, the tiles and the chain head
are written and the transaction commits with one fsync. Only then is each caller answered: an
acknowledged event is durable and on the chain.

No fork, no gap, across processes too: a batch transaction first locks the chain head
(``BEGIN IMMEDIATE`` on SQLite takes the database write lock; PostgreSQL locks the head row
with ``SELECT ... FOR UPDATE``), reads the size and last hash under that lock, writes entries at
exactly ``size .. size + n - 1`` (``log_entries.idx`` is the primary key: a second entry at an
index cannot be stored) and advances the head with a compare-and-swap ``UPDATE ... WHERE size =
<old size>`` that must touch exactly one row. A second process therefore waits for the lock and
then continues from the new head; it can neither reuse an index nor skip one. Once it holds
the lock, the writer adds to its batch whatever was queued while it waited (:meth:`_top_up`).

A command that raises before appending anything fails alone. One that raises after appending
(or whose projection fails) has written into the shared transaction: the batch is rolled back
and run again without it, and the caller gets the error.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, CursorResult, Engine, Executable, select
from sqlalchemy.exc import DBAPIError, OperationalError

from ledger.db import WriterQueue, driver_execute, driver_sql
from ledger.errors import CommandFailed, LedgerClosed, LedgerError
from ledger.log import HASH_SIZE
from ledger.projections import EventCounts, Projection
from ledger.schema import log_checkpoints
from verifier.checkpoint import Checkpoint, sign_checkpoint
from verifier.entry import Entry, format_entry_time, make_entry
from verifier.merkle import (
    CompactRange,
    HashAt,
    inclusion_prover,
    node_hash,
    root_from_leaf_hashes,
)
from verifier.note import NoteSigner
from verifier.receipt import Receipt
from verifier.tiles import TILE_WIDTH

log = logging.getLogger("unionledger.ledger")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Event:
    """What a command appends: the entry's type, actor and body (index, time and prev are the
    sequencer's to assign)."""

    type: str
    actor: str
    body: Mapping[str, Any]


# Events that change nothing a batch's memo may hold (programs and their versions, stations,
# the union tree): appending any other event empties the memo. These are the events appended
# by the thousand in the hot batches.
MEMO_KEEPING_EVENTS = frozenset(
    {
        "RedemptionRecorded",
        "RedemptionReversed",
        "OfflineRedemptionRecorded",
        "OfflineRedemptionConflicted",
        "OfflineRecordRefused",
        "CredentialIssued",
        "CredentialRevoked",
    }
)


MEMO_LIMIT = 100_000
"""Entries the memo may hold when a batch starts (else it starts empty): the statistics
projection keeps members' group spans in it, which, unlike programs and stations, grow with
the members served."""

# Event types are this module's constants: nothing here comes from outside.
_MEMO_EPOCH_SQL = (
    "SELECT coalesce(sum(count), 0) FROM proj_event_counts WHERE type NOT IN ("  # noqa: S608
    + ", ".join(f"'{t}'" for t in sorted(MEMO_KEEPING_EVENTS))
    + ")"
)


class _BatchState:
    def __init__(
        self,
        size: int,
        last_hash: bytes,
        last_time: str,
        frontier: CompactRange,
        memo: dict[Hashable, Any],
    ):
        self.start = size
        self.size = size
        self.last_hash = last_hash
        self.last_time = last_time
        self.frontier = frontier
        self.entries: list[Entry] = []
        self.memo = memo


class Tx:
    """What a command sees: the batch's connection and an ``append`` that assigns the next
    index. Read state through ``conn``; change it only by appending events."""

    def __init__(
        self,
        conn: Connection,
        state: _BatchState,
        projections: Sequence[Projection],
        now: datetime,
    ) -> None:
        self.conn = conn
        self.now = now
        self._state = state
        self._projections = projections
        self.wrote = False
        self.appended: list[Entry] = []
        self._now_text: str | None = None  # format_entry_time(now), once per command
        # Reads that commands of this batch may share (see :meth:`memoised`).
        self.memo = state.memo

    def memoised(self, key: Hashable, read: Callable[[], T]) -> T:
        """``read()``, remembered under ``key`` for the rest of the batch, and for the next
        batches while no writer appends an event outside :data:`MEMO_KEEPING_EVENTS` (the
        sequencer compares their count when a batch takes the write lock). Only for reads that
        no event in :data:`MEMO_KEEPING_EVENTS` changes (programs, versions, stations, unions):
        appending any other event forgets everything, as does a batch that rolls back."""
        memo = self._state.memo
        if key in memo:
            value: T = memo[key]
            return value
        value = memo[key] = read()
        return value

    def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        """Write outside the ledger in this batch's transaction (the personal-data vault, the
        accounts): committed with the events or not at all. Marks the command as having
        written, like :meth:`append`."""
        self.wrote = True
        return self.conn.execute(statement, parameters)

    def append(self, type_: str, actor: str, body: Mapping[str, Any]) -> Entry:
        """Append one event; projections see it at once (later reads in this command do too).

        Raises:
            verifier.errors.EntryError: a malformed event (nothing is written then).
        """
        state = self._state
        if self._now_text is None:
            self._now_text = format_entry_time(self.now)
        stamp = max(self._now_text, state.last_time)
        entry = make_entry(
            index=state.size,
            time=stamp,
            type=type_,
            actor=actor,
            body=body,
            prev=state.last_hash,
        )
        self.wrote = True
        if type_ not in MEMO_KEEPING_EVENTS:
            state.memo.clear()
        for projection in self._projections:
            projection.apply(self.conn, entry)
        state.entries.append(entry)
        state.size += 1
        state.last_hash = entry.hash
        state.last_time = stamp
        self.appended.append(entry)
        return entry


@dataclass(eq=False)
class _Request(Generic[T]):
    command: Callable[[Tx], T]
    future: Future[T] | None = field(default_factory=Future)
    receipts: bool = False  # the result comes with the receipts of the entries it appended
    # submit_async's caller awaits this instead of ``future``: resolved on its event loop.
    waiter: asyncio.Future[Any] | None = None

    def start(self) -> bool:
        """Claim the request for its batch: False if its caller cancelled it while it was
        queued (it is then dropped unrun). A concurrent future cannot be cancelled after
        this; an awaited one can (the HTTP client left): it is resolved only if still
        pending (:func:`_settle_waiters`), and the command runs all the same, as a
        concurrent future's does once running."""
        if self.waiter is not None:
            return not self.waiter.cancelled()  # read across threads: one attribute
        assert self.future is not None
        return self.future.set_running_or_notify_cancel()


def _settle_waiters(
    settled: list[tuple[asyncio.Future[Any], object, BaseException | None]],
) -> None:
    """On the waiters' event loop: the results of one batch's submit_async requests."""
    for waiter, value, error in settled:
        if waiter.done():  # cancelled meanwhile
            continue
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(value)


@dataclass
class _Outcome:
    value: object = None
    error: BaseException | None = None
    entries: list[Entry] = field(default_factory=list)


def batch_hash_at(before: CompactRange, leaves: Sequence[bytes]) -> HashAt:
    """``hash_at`` for the tree a batch ends with, from what the sequencer holds in memory: the
    frontier before the batch (the roots of the maximal perfect subtrees of the old tree) and
    the batch's leaf hashes. A perfect subtree left of the batch is one of those roots; one
    inside the batch is hashed from its leaves; one across the boundary from both. Memoised, so
    the proofs of a whole batch cost O(batch) hashes, with no tile read."""
    start = before.size
    known: dict[tuple[int, int], bytes] = {}
    position, roots = 0, iter(before.hashes)
    for level in range(start.bit_length() - 1, -1, -1):
        if start >> level & 1:
            known[(level, position >> level)] = next(roots)
            position += 1 << level

    def hash_at(level: int, index: int) -> bytes:
        found = known.get((level, index))
        if found is None:
            first = index << level
            if level == 0:
                found = leaves[first - start]
            else:
                found = node_hash(hash_at(level - 1, 2 * index), hash_at(level - 1, 2 * index + 1))
            known[(level, index)] = found
        return found

    return hash_at


class _Broke(Exception):
    def __init__(self, request: _Request[Any], error: BaseException) -> None:
        super().__init__(str(error))
        self.request = request
        self.error = error


CheckpointSigner = Callable[[], NoteSigner]
_STOP = object()


class Sequencer:
    """The single writer of one ledger database (per process; processes also exclude each
    other through the database). Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        engine: Engine,
        *,
        origin: str,
        signer: CheckpointSigner | None = None,
        projections: Sequence[Projection] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_batch: int = 2000,
        checkpoint_interval: float = 1.0,
    ) -> None:
        self.engine = engine
        self._writers = WriterQueue(engine)  # other processes' writers on a SQLite file
        # The chain head, read first in every batch: SQLite's writer holds the whole file from
        # BEGIN IMMEDIATE; PostgreSQL locks the head's row until the commit.
        self._head_sql = _HEAD_SQL + (" FOR UPDATE" if engine.dialect.name == "postgresql" else "")
        # Tx.memoised's reads, valid while the memo epoch is the one our last batch left.
        self._memo: dict[Hashable, Any] = {}
        self._memo_epoch: int | None = None
        self._counts = any(isinstance(p, EventCounts) for p in projections)
        self.origin = origin
        self._signer = signer
        self._projections = list(projections)
        for projection in self._projections:  # reads that may share the memo's lifetime
            use_memo = getattr(projection, "use_memo", None)
            if callable(use_memo):
                use_memo(self._memo)
        # Projections that keep a command's rows and write them when it ends (end_command).
        self._per_command: list[Any] = [
            p for p in self._projections if callable(getattr(p, "end_command", None))
        ]
        self._clock = clock
        self._max_batch = max_batch
        self._interval = checkpoint_interval
        self._queue: queue.Queue[object] = queue.Queue()
        self._last_checkpoint = 0.0
        self._uncheckpointed = True
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="ledger-sequencer", daemon=True)
        self._thread.start()

    # -- the public side ---------------------------------------------------------------------

    def submit(self, command: Callable[[Tx], T]) -> Future[T]:
        """Queue ``command``; its future resolves once its batch is durable."""
        if self._closed:
            raise LedgerClosed("the sequencer is closed")
        future: Future[T] = Future()
        self._queue.put(_Request(command, future))
        return future

    def execute(self, command: Callable[[Tx], T], timeout: float | None = 60) -> T:
        """Run ``command`` in the next batch and return its result once durable."""
        return self.submit(command).result(timeout)

    def execute_with_receipts(
        self, command: Callable[[Tx], T], timeout: float | None = 60
    ) -> tuple[T, list[Receipt]]:
        """:meth:`execute`, and the receipts (entry, inclusion proof, signed checkpoint) of the
        entries the command appended: the batch ends with a checkpoint, and the proofs are
        computed from the batch in memory (no tile reads, no extra batch)."""
        value, receipts = self.submit_with_receipts(command).result(timeout)
        return value, receipts

    def submit_with_receipts(self, command: Callable[[Tx], T]) -> Future[tuple[T, list[Receipt]]]:
        """Queue ``command``; its future resolves as :meth:`execute_with_receipts` returns."""
        if self._closed:
            raise LedgerClosed("the sequencer is closed")
        future: Future[tuple[T, list[Receipt]]] = Future()
        request: _Request[Any] = _Request(command, future, receipts=True)  # resolved with both
        self._queue.put(request)
        return future

    def submit_async(
        self, command: Callable[[Tx], T], *, receipts: bool = False
    ) -> asyncio.Future[Any]:
        """Queue ``command`` from a coroutine; await the result (with ``receipts``, as
        :meth:`execute_with_receipts` returns it). The results of one batch reach the event
        loop in one call (``call_soon_threadsafe``), not one wake-up per request: measured
        with uvloop, 17 -> 4 us of CPU per request for the hand-over alone.

        Raises:
            RuntimeError: not called from a running event loop.
        """
        if self._closed:
            raise LedgerClosed("the sequencer is closed")
        waiter = asyncio.get_running_loop().create_future()
        self._queue.put(_Request(command, None, receipts, waiter))
        return waiter

    def append(self, events: Sequence[Event]) -> list[Entry]:
        """Append ``events`` (in order, contiguous) and return their entries once durable."""
        return self.execute(lambda tx: [tx.append(e.type, e.actor, e.body) for e in events])

    def checkpoint(self) -> None:
        """Sign a checkpoint of the current head now (if it grew) and wait for it."""
        self._force_checkpoint = True
        self.execute(lambda tx: None)

    def close(self) -> None:
        """Finish what is queued, write a last checkpoint, stop the writer."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()
            self._writers.close()

    def __enter__(self) -> Sequencer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer thread ---------------------------------------------------------------------

    _force_checkpoint = False

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            wait = None
            if self._signer is not None and self._uncheckpointed:
                wait = max(0.0, self._last_checkpoint + self._interval - time.monotonic())
            try:
                first = self._queue.get(timeout=wait)
            except queue.Empty:
                self._run([])  # idle: just the checkpoint that is due
                continue
            batch: list[_Request[Any]] = []
            if first is _STOP:
                stopping = True
            else:
                batch.append(first)  # type: ignore[arg-type]
            while len(batch) < self._max_batch and not stopping:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)  # type: ignore[arg-type]
            # Running now: from here a concurrent future can no longer be cancelled
            # (Future.cancel is False), so each is resolved exactly once; an awaited one
            # (submit_async) still can be, and is then left alone. One cancelled before (an
            # HTTP client gone while it waited in the queue) is dropped unrun.
            batch = [r for r in batch if r.start()]
            self._run(batch, final=stopping)

    def _run(self, batch: list[_Request[Any]], *, final: bool = False) -> None:
        settled: list[tuple[_Request[Any], object, BaseException | None]] = []
        try:
            self._run_batch(batch, settled, final=final)
        finally:
            self._settle(settled)

    def _run_batch(
        self,
        batch: list[_Request[Any]],
        settled: list[tuple[_Request[Any], object, BaseException | None]],
        *,
        final: bool,
    ) -> None:
        """Run ``batch``, adding each request's result or error to ``settled``."""
        pending = list(batch)
        attempts = 0
        while True:
            try:
                outcomes = self._commit(pending, final=final)
            except _Broke as broke:
                failed = (
                    CommandFailed(f"command failed after appending: {broke.error!r}")
                    if not isinstance(broke.error, LedgerError | ValueError)
                    else broke.error
                )
                settled.append((broke.request, None, failed))
                pending.remove(broke.request)
                continue
            except (OperationalError, DBAPIError) as e:
                attempts += 1
                if attempts < 5 and _transient(e):
                    time.sleep(0.05 * attempts)
                    continue
                log.error("ledger batch failed: %s", type(e).__name__)
                error = LedgerError(f"database error: {e.orig!r}")
                settled.extend((request, None, error) for request in pending)
                return
            except BaseException as e:
                log.exception("ledger batch failed")
                settled.extend((request, None, e) for request in pending)
                return
            for request in pending:
                outcome = outcomes[id(request)]
                settled.append((request, outcome.value, outcome.error))
            return

    @staticmethod
    def _settle(settled: list[tuple[_Request[Any], object, BaseException | None]]) -> None:
        """Resolve each request once: a concurrent future here, the awaited ones of each event
        loop in one call on that loop."""
        waiting: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for request, value, error in settled:
            if request.waiter is not None:
                waiting.setdefault(request.waiter.get_loop(), []).append(
                    (request.waiter, value, error)
                )
            elif request.future is not None:
                if error is not None:
                    request.future.set_exception(error)
                else:
                    request.future.set_result(value)
        for loop, results in waiting.items():
            try:
                loop.call_soon_threadsafe(_settle_waiters, results)
            except RuntimeError:  # the loop is closed: nobody awaits these any more
                log.warning("%d results for a closed event loop dropped", len(results))

    def _commit(self, pending: list[_Request[Any]], *, final: bool) -> dict[int, _Outcome]:
        try:
            return self._commit_once(pending, final=final)
        except BaseException:
            for projection in self._projections:
                projection.reset()  # the batch rolled back: so does what projections held
            self._memo.clear()
            self._memo_epoch = None
            raise

    def _commit_once(self, pending: list[_Request[Any]], *, final: bool) -> dict[int, _Outcome]:
        with self._writers:
            self._top_up(pending)
            outcomes, receipts = self._write_batch(pending, final=final)
        # The receipts' proofs come from the committed batch in memory: made after the write
        # lock is released (another process's writer goes on meanwhile), before anyone is
        # answered.
        if receipts is not None:
            receipts()
        return outcomes

    def _top_up(self, pending: list[_Request[Any]]) -> None:
        """Add to the batch what was queued while this writer waited for another process's
        writer (up to ``max_batch``): with two servers on one SQLite file each waits about as
        long as the other writes, and the requests that came meanwhile would otherwise wait
        for the next batch, paying its commit and checkpoint again."""
        while len(pending) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is _STOP:
                self._queue.put(_STOP)  # the loop meets it after this batch
                return
            request: _Request[Any] = item  # type: ignore[assignment]
            if request.start():
                pending.append(request)

    def _write_batch(
        self, pending: list[_Request[Any]], *, final: bool
    ) -> tuple[dict[int, _Outcome], Callable[[], None] | None]:
        """Run ``pending`` in one transaction and commit it; the outcomes, and what makes the
        receipts of the requests that want them (None: none to make)."""
        outcomes: dict[int, _Outcome] = {}
        receipts = None
        with self.engine.begin() as conn:
            # size, last_hash, last_time, frontier (locked for update on PostgreSQL)
            size, last_hash, last_time, frontier = driver_execute(
                conn, self._head_sql, ()
            ).fetchone()
            old_size = int(size)
            epoch = self._epoch(conn, old_size)
            # Another writer changed what it holds, or it grew (per-member reads are in it too):
            if epoch != self._memo_epoch or len(self._memo) > MEMO_LIMIT:
                self._memo.clear()
            state = _BatchState(
                old_size,
                bytes(last_hash),
                last_time,
                CompactRange.from_bytes(old_size, bytes(frontier)),
                self._memo,
            )
            for request in pending:
                tx = Tx(conn, state, self._projections, self._clock())
                try:
                    outcomes[id(request)] = _Outcome(request.command(tx), None, tx.appended)
                    if tx.appended:
                        for projection in self._per_command:
                            projection.end_command(conn)
                except Exception as e:
                    if tx.wrote:
                        raise _Broke(request, e) from e
                    outcomes[id(request)] = _Outcome(error=e)
            for projection in self._projections:
                projection.flush(conn)
            if not self._counts:
                epoch = state.size
            elif any(e.type not in MEMO_KEEPING_EVENTS for e in state.entries):
                epoch = self._epoch(conn, state.size)
            # else: only events the epoch does not count were appended; it is what it was
            wanted = [r for r in pending if r.receipts and outcomes[id(r)].error is None]
            before = CompactRange.from_bytes(old_size, bytes(frontier)) if wanted else None
            if state.entries:
                self._write(conn, state, old_size)
            note = self._maybe_checkpoint(
                conn, state, final=final, force=any(outcomes[id(r)].entries for r in wanted)
            )
            if before is not None:
                receipts = functools.partial(self._receipts, outcomes, wanted, state, before, note)
        self._memo_epoch = epoch  # committed: what the memo holds is still true
        return outcomes, receipts

    def _epoch(self, conn: Connection, size: int) -> int:
        """What must not change for the memo to stay true: how many events outside
        :data:`MEMO_KEEPING_EVENTS` the ledger holds (from the event counts projection, so
        that other writers' redemptions keep it), else the chain's size."""
        if not self._counts:
            return size
        return int(driver_execute(conn, _MEMO_EPOCH_SQL, ()).fetchone()[0])

    @staticmethod
    def _receipts(
        outcomes: dict[int, _Outcome],
        wanted: list[_Request[Any]],
        state: _BatchState,
        before: CompactRange,
        note: str | None,
    ) -> None:
        prove = inclusion_prover(
            state.size, batch_hash_at(before, [e.leaf_hash for e in state.entries])
        )
        for request in wanted:
            outcome = outcomes[id(request)]
            receipts = []
            try:
                if note is not None:  # entries appended: the batch signed a checkpoint of its end
                    receipts = [
                        Receipt(
                            index=e.index,
                            entry=e.data,
                            inclusion=tuple(prove(e.index)),
                            checkpoint_note=note,
                        )
                        for e in outcome.entries
                    ]
            except Exception as e:  # the batch is committed: this caller alone hears of it
                log.exception("receipt failed")
                outcome.error = CommandFailed(f"recorded, but no receipt could be made: {e!r}")
                continue
            outcome.value = (outcome.value, receipts)

    def _write(self, conn: Connection, state: _BatchState, old_size: int) -> None:
        # The driver's own statements: SQLAlchemy's per-row parameter handling of the entries'
        # executemany cost more than the inserts.
        conn.exec_driver_sql(
            driver_sql(conn, _INSERT_ENTRY), [(e.index, e.data) for e in state.entries]
        )
        leaves = [e.leaf_hash for e in state.entries]
        write_tiles(conn, old_size, leaves)
        state.frontier.extend(leaves)
        moved = driver_execute(
            conn,
            _MOVE_HEAD,
            (
                state.size,
                state.frontier.root(),
                state.last_hash,
                state.last_time,
                state.frontier.to_bytes(),
                old_size,
            ),
        )
        if moved.rowcount != 1:  # cannot happen while the head lock works; never fork if it did
            raise LedgerError("chain head moved under the sequencer's lock")
        self._uncheckpointed = True

    def _maybe_checkpoint(
        self, conn: Connection, state: _BatchState, *, final: bool, force: bool = False
    ) -> str | None:
        """Sign a checkpoint of the batch's end when due (or forced); its note, or None."""
        if self._signer is None:
            return None
        due = time.monotonic() - self._last_checkpoint >= self._interval
        if not (due or final or force or self._force_checkpoint):
            return None
        self._force_checkpoint = False
        if not state.entries:  # a batch that appended is past every stored checkpoint
            latest = conn.execute(
                select(log_checkpoints.c.size).order_by(log_checkpoints.c.size.desc()).limit(1)
            ).scalar()
            if latest is not None and latest >= state.size:
                self._uncheckpointed = False
                return None
        root = state.frontier.root()
        note = sign_checkpoint(Checkpoint(self.origin, state.size, root), self._signer())
        driver_execute(
            conn, _INSERT_CHECKPOINT, (state.size, root, note, format_entry_time(self._clock()))
        )
        self._last_checkpoint = time.monotonic()
        self._uncheckpointed = False
        return note


def _transient(error: DBAPIError) -> bool:
    text = str(error.orig).lower()
    return any(
        word in text
        for word in ("locked", "busy", "deadlock", "serialize", "could not obtain lock")
    )


_HEAD_SQL = "SELECT size, last_hash, last_time, frontier FROM log_head WHERE id = 1"
_INSERT_ENTRY = "INSERT INTO log_entries (idx, data) VALUES (?, ?)"
_INSERT_CHECKPOINT = (
    "INSERT INTO log_checkpoints (size, root, note, created_at) VALUES (?, ?, ?, ?)"
)
_MOVE_HEAD = (
    "UPDATE log_head SET size = ?, root = ?, last_hash = ?, last_time = ?, frontier = ?"
    " WHERE id = 1 AND size = ?"
)
_TILE = "SELECT data FROM log_tiles WHERE level = ? AND idx = ?"
_UPDATE_TILE = "UPDATE log_tiles SET data = ? WHERE level = ? AND idx = ?"
_INSERT_TILE = "INSERT INTO log_tiles (level, idx, data) VALUES (?, ?, ?)"


def write_tiles(conn: Connection, old_size: int, leaf_hashes: Sequence[bytes]) -> None:
    """Add ``leaf_hashes`` (leaves ``old_size ..``) to the stored tiles, level by level.

    At tile level L the positions are the hashes of perfect subtrees of height 8L. A tile that
    fills up contributes its root as the next position of level L + 1. Partial tiles are stored
    as they are and grow in place (their bytes only ever get longer).
    """
    level, start, new = 0, old_size, list(leaf_hashes)
    while new:
        completed: list[bytes] = []
        position, i = start, 0
        while i < len(new):
            tile, offset = divmod(position, TILE_WIDTH)
            take = min(TILE_WIDTH - offset, len(new) - i)
            added = b"".join(new[i : i + take])
            if offset:
                found = driver_execute(conn, _TILE, (level, tile)).fetchone()
                if found is None:
                    raise LedgerError(f"tile {level}/{tile} is missing")
                data = bytes(found[0])[: offset * HASH_SIZE] + added
                driver_execute(conn, _UPDATE_TILE, (data, level, tile))
            else:
                data = added
                driver_execute(conn, _INSERT_TILE, (level, tile, data))
            if offset + take == TILE_WIDTH:
                hashes = [data[j : j + HASH_SIZE] for j in range(0, len(data), HASH_SIZE)]
                completed.append(root_from_leaf_hashes(hashes))
            position += take
            i += take
        level, start, new = level + 1, start // TILE_WIDTH, completed
