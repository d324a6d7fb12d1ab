"""Reading the log: entries, tiles, Merkle proofs, checkpoints and receipts.

Proofs are built from stored tiles (``verifier.tiles.tile_hash_at``), never by rehashing the log:
an inclusion or consistency proof reads a handful of tiles. Everything stored is prefix-stable
(entries never change, a partial tile only grows), so readers need no snapshot: a tile read after
the head only holds more hashes than the head needs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select

from ledger.errors import NotCheckpointed, OutOfRange
from ledger.schema import log_checkpoints, log_entries, log_head, log_tiles
from verifier.merkle import consistency_proof, inclusion_proof, subtree_root
from verifier.receipt import Receipt
from verifier.tiles import TILE_WIDTH, tile_hash_at

HASH_SIZE = 32
FULL_TILE = TILE_WIDTH * HASH_SIZE
MAX_ENTRIES_PER_READ = 1000


@dataclass(frozen=True, slots=True)
class Head:
    size: int
    root: bytes
    last_hash: bytes
    last_time: str


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str
    created_at: str


class LogReader:
    """Read access to one ledger database. Thread-safe; full tiles are cached (immutable)."""

    def __init__(self, engine: Engine, *, cache_tiles: int = 4096) -> None:
        self.engine = engine
        self._cache: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._cache_size = cache_tiles
        self._lock = threading.Lock()

    # -- head and entries ------------------------------------------------------------------

    def head(self) -> Head:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    log_head.c.size, log_head.c.root, log_head.c.last_hash, log_head.c.last_time
                ).where(log_head.c.id == 1)
            ).one()
        return Head(int(row.size), bytes(row.root), bytes(row.last_hash), row.last_time)

    def size(self) -> int:
        return self.head().size

    def entries(self, start: int, end: int) -> list[bytes]:
        """The exact bytes of entries ``start`` .. ``end - 1`` (at most 1,000 at a time).

        Raises:
            OutOfRange: an empty, inverted or too large range, or one past the log's end.
        """
        if start < 0 or end <= start or end - start > MAX_ENTRIES_PER_READ:
            raise OutOfRange(f"range [{start}, {end}) must hold 1..{MAX_ENTRIES_PER_READ} entries")
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(log_entries.c.data)
                .where(log_entries.c.idx >= start, log_entries.c.idx < end)
                .order_by(log_entries.c.idx)
            ).all()
        if len(rows) != end - start:
            raise OutOfRange(
                f"the log holds {start + len(rows) if rows else 'no'} entries "
                f"from {start}: [{start}, {end}) is past its end"
            )
        return [bytes(r.data) for r in rows]

    def entry(self, index: int) -> bytes:
        return self.entries(index, index + 1)[0]

    # -- tiles and proofs ----------------------------------------------------------------------

    def tile(self, level: int, index: int) -> bytes:
        """The stored hashes of tile (``level``, ``index``); partial tiles may be shorter than
        8,192 bytes. Empty if the tile does not exist (yet)."""
        with self.engine.connect() as conn:
            return self._tile(conn, level, index)

    def _tile(self, conn: Connection, level: int, index: int) -> bytes:
        key = (level, index)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        data = conn.execute(
            select(log_tiles.c.data).where(log_tiles.c.level == level, log_tiles.c.idx == index)
        ).scalar()
        tile = bytes(data) if data is not None else b""
        if len(tile) == FULL_TILE:  # full tiles never change: safe to keep
            with self._lock:
                self._cache[key] = tile
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return tile

    def _hashes(self, conn: Connection) -> Callable[[int, int], bytes]:
        """``hash_at`` for one proof: one connection (one read snapshot), and each partial tile
        read once however many subtree hashes the proof takes from it (full tiles come from the
        shared cache)."""
        seen: dict[tuple[int, int], bytes] = {}

        def read(level: int, index: int) -> bytes:
            found = seen.get((level, index))
            if found is None:
                found = seen[(level, index)] = self._tile(conn, level, index)
            return found

        return lambda level, index: tile_hash_at(level, index, read)

    def hash_at(self, level: int, index: int) -> bytes:
        """The hash of the perfect subtree at ``level`` covering leaves
        ``[index * 2**level, (index + 1) * 2**level)``."""
        return tile_hash_at(level, index, self.tile)

    def _size(self, conn: Connection) -> int:
        return int(conn.execute(select(log_head.c.size).where(log_head.c.id == 1)).scalar_one())

    def _check_size(self, tree_size: int, conn: Connection | None = None) -> None:
        size = self.size() if conn is None else self._size(conn)
        if tree_size < 0 or tree_size > size:
            raise OutOfRange(f"tree size {tree_size} is beyond the log")

    def root(self, tree_size: int) -> bytes:
        """The Merkle root of the first ``tree_size`` entries.

        Raises:
            OutOfRange: ``tree_size`` is beyond the log.
        """
        with self.engine.connect() as conn:
            self._check_size(tree_size, conn)
            return subtree_root(0, tree_size, self._hashes(conn))

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        """Raises OutOfRange unless ``0 <= index < tree_size <= size``."""
        with self.engine.connect() as conn:
            self._check_size(tree_size, conn)
            if not 0 <= index < tree_size:
                raise OutOfRange(f"index {index} is not in a tree of size {tree_size}")
            return inclusion_proof(index, tree_size, self._hashes(conn))

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """Raises OutOfRange unless ``1 <= first <= second <= size`` (RFC 9162 proves nothing
        about the empty tree: every tree is consistent with it)."""
        with self.engine.connect() as conn:
            self._check_size(second, conn)
            if not 1 <= first <= second:
                raise OutOfRange(f"no consistency proof from size {first} to {second}")
            return consistency_proof(first, second, self._hashes(conn))

    # -- checkpoints and receipts --------------------------------------------------------------

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(log_checkpoints).order_by(log_checkpoints.c.size.desc()).limit(1)
            ).first()
        return None if row is None else _checkpoint(row)

    def checkpoint(self, size: int) -> StoredCheckpoint | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(log_checkpoints).where(log_checkpoints.c.size == size)
            ).first()
        return None if row is None else _checkpoint(row)

    def receipt(self, index: int) -> Receipt:
        """The proof bundle of entry ``index`` against the latest checkpoint (one connection:
        the entry, checkpoint and proof come from one read snapshot).

        Raises:
            OutOfRange: no such entry.
            NotCheckpointed: the entry is newer than the latest checkpoint.
        """
        with self.engine.connect() as conn:
            if index < 0 or index >= self._size(conn):
                raise OutOfRange(f"no entry {index}")
            row = conn.execute(
                select(log_checkpoints).order_by(log_checkpoints.c.size.desc()).limit(1)
            ).first()
            latest = None if row is None else _checkpoint(row)
            if latest is None or latest.size <= index:
                raise NotCheckpointed(f"entry {index} is not covered by a checkpoint yet")
            entry = conn.execute(
                select(log_entries.c.data).where(log_entries.c.idx == index)
            ).scalar_one()
            proof = inclusion_proof(index, latest.size, self._hashes(conn))
        return Receipt(
            index=index,
            entry=bytes(entry),
            inclusion=tuple(proof),
            checkpoint_note=latest.note,
        )


def _checkpoint(row: object) -> StoredCheckpoint:
    return StoredCheckpoint(
        size=int(row.size),  # type: ignore[attr-defined]
        root=bytes(row.root),  # type: ignore[attr-defined]
        note=row.note,  # type: ignore[attr-defined]
        created_at=row.created_at,  # type: ignore[attr-defined]
    )
