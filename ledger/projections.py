"""Projections: tables derived from the ledger, updated in the append transaction.

A projection is a pure function of the entries, applied in order; its tables live in
``ledger.schema.projection_metadata``. Because each is updated in the same transaction as the
append, state and chain never disagree; :func:`rebuild` replays the chain into fresh tables and
:func:`compare` checks that replaying reproduces the live tables exactly.

Later capabilities (unions, members, programs, redemptions, statistics) plug in here by
implementing :class:`Projection` and listing their tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    String,
    Table,
    select,
)

from ledger.db import driver_sql
from ledger.schema import log_entries, projection_metadata
from verifier.entry import Entry, parse_entry


class Projection(Protocol):
    """Something that keeps tables in step with the ledger."""

    name: str

    @property
    def tables(self) -> Sequence[Table]:
        """Its tables (in ``projection_metadata``), parents before children."""
        ...

    def apply(self, conn: Connection, entry: Entry) -> None:
        """Fold one entry into the tables (or into pending state that :meth:`flush` writes).
        Must not fail on any entry the ledger accepted."""
        ...

    def flush(self, conn: Connection) -> None:
        """Write what :meth:`apply` kept pending. Called once per batch, before it commits;
        a projection whose tables commands read must write in ``apply`` instead."""
        ...

    def reset(self) -> None:
        """Forget pending state (the batch was rolled back)."""
        ...


# A projection may also define ``end_command(conn)``: the sequencer calls it after each command
# that appended, so that rows it keeps during a command (the thousand records of a sync) are
# written in one go and yet visible to the next command of the batch. And ``use_memo(memo)``:
# the sequencer hands it its memo (``Tx.memoised``), for reads that only events outside
# ``MEMO_KEEPING_EVENTS`` change.


event_counts = Table(
    "proj_event_counts",
    projection_metadata,
    Column("type", String(64), primary_key=True),
    Column("count", BigInteger, nullable=False),
)


# One upsert per type a batch appended (SQLite and PostgreSQL spell it alike), on the driver's
# cursor: once per batch on the hot path, where SQLAlchemy's statement handling cost more.
_ADD_COUNT = (
    "INSERT INTO proj_event_counts (type, count) VALUES (?, ?)"
    " ON CONFLICT (type) DO UPDATE SET count = proj_event_counts.count + excluded.count"
)


class EventCounts:
    """How many events of each type the ledger holds (a small projection every ledger has).

    Counts are summed in memory during a batch and written once per type in :meth:`flush`:
    one statement per batch instead of one per entry (measured: the per-entry UPDATE cost
    more than everything else in an append).
    """

    name = "event_counts"
    tables: Sequence[Table] = (event_counts,)

    def __init__(self) -> None:
        self._pending: dict[str, int] = {}

    def apply(self, conn: Connection, entry: Entry) -> None:
        self._pending[entry.type] = self._pending.get(entry.type, 0) + 1

    def reset(self) -> None:
        self._pending.clear()

    def flush(self, conn: Connection) -> None:
        pending, self._pending = self._pending, {}
        if pending:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.executemany(driver_sql(conn, _ADD_COUNT), sorted(pending.items()))


def default_projections() -> list[Projection]:
    """Every projection of the ledger, in the order they apply each entry (unions before
    members: a member's count lands on an existing union)."""
    from ledger.credentials import CredentialsProjection  # noqa: PLC0415
    from ledger.keyevents import KeysProjection  # noqa: PLC0415
    from ledger.members import MembersProjection  # noqa: PLC0415  (domain modules import us)
    from ledger.offline import OfflineProjection  # noqa: PLC0415
    from ledger.programs import ProgramsProjection  # noqa: PLC0415
    from ledger.redemptions import RedemptionsProjection  # noqa: PLC0415
    from ledger.stations import StationsProjection  # noqa: PLC0415
    from ledger.stats import StatsProjection  # noqa: PLC0415
    from ledger.unions import UnionsProjection  # noqa: PLC0415

    return [
        EventCounts(),
        KeysProjection(),
        UnionsProjection(),
        MembersProjection(),
        CredentialsProjection(),
        StationsProjection(),
        ProgramsProjection(),
        RedemptionsProjection(),
        OfflineProjection(),
        StatsProjection(),  # last: it reads what the others wrote for the same entry
    ]


def _tables(projections: Iterable[Projection]) -> list[Table]:
    return [t for p in projections for t in p.tables]


def rebuild(
    engine: Engine,
    projections: Sequence[Projection],
    *,
    chunk: int = 5000,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Drop and recreate the projection tables, then replay every entry into them, in one
    transaction (readers see the old tables until it commits). Returns the entries replayed."""
    tables = _tables(projections)
    with engine.begin() as conn:
        projection_metadata.drop_all(conn, tables=list(reversed(tables)))
        projection_metadata.create_all(conn, tables=tables)
        return replay(conn, conn, projections, chunk=chunk, progress=progress)


def replay(
    source: Connection,
    target: Connection,
    projections: Sequence[Projection],
    *,
    chunk: int = 5000,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Apply every entry read from ``source`` to the projections through ``target``."""
    from ledger.schema import log_head  # noqa: PLC0415

    total = int(source.execute(select(log_head.c.size)).scalar_one())
    done = 0
    while done < total:
        rows = source.execute(
            select(log_entries.c.data)
            .where(log_entries.c.idx >= done, log_entries.c.idx < done + chunk)
            .order_by(log_entries.c.idx)
        ).all()
        for row in rows:
            entry = parse_entry(bytes(row.data))
            for projection in projections:
                projection.apply(target, entry)
        for projection in projections:
            projection.flush(target)
        done += len(rows)
        if not rows:
            break
        if progress:
            progress(done, total)
    return done


def snapshot(conn: Connection, tables: Sequence[Table]) -> dict[str, list[tuple[object, ...]]]:
    """Every row of ``tables``, sorted, for comparison."""
    out: dict[str, list[tuple[object, ...]]] = {}
    for table in tables:
        rows = conn.execute(select(table)).all()
        out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out


def compare(engine: Engine, projections: Sequence[Projection]) -> list[str]:
    """Replay the chain into a scratch in-memory database and list every difference from the
    live projection tables (empty: identical)."""
    from ledger.db import make_engine  # noqa: PLC0415

    tables = _tables(projections)
    scratch = make_engine("sqlite://")
    try:
        projection_metadata.create_all(scratch, tables=tables)
        with engine.connect() as live, scratch.begin() as fresh:
            replay(live, fresh, projections)
            expected = snapshot(fresh, tables)
            found = snapshot(live, tables)
    finally:
        scratch.dispose()
    differences = []
    for name in expected:
        missing = sorted(set(expected[name]) - set(found[name]), key=repr)
        extra = sorted(set(found[name]) - set(expected[name]), key=repr)
        differences += [f"{name}: missing {row!r}" for row in missing]
        differences += [f"{name}: unexpected {row!r}" for row in extra]
    return differences
