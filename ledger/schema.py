"""The ledger's own tables. Created by :func:`init_schema`; the version is kept in ``meta``.

- ``log_head``: one row: tree size, root, hash and time of the last entry, and the compact range
  (right frontier) of the Merkle tree. Every append transaction locks and advances it.
- ``log_entries``: the exact entry bytes by index (the primary key forbids two entries at one
  index: a fork cannot be stored).
- ``log_tiles``: C2SP tlog-tiles: 256 hashes per tile, partial tiles grow in place.
- ``log_checkpoints``: every signed checkpoint, by tree size.

Domain projections (later capabilities) add their own tables to :data:`projection_metadata`.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    select,
)

SCHEMA_VERSION = (
    "10"  # 3: vault.ledger_key, member_sealed; 4: credentials; 5: stations, programs; 6: offline;
    # 7: statistics; 8: stats_months, stats_cells keyed (scope, period, program);
    # 9: stations.daily_ceiling, station_ceilings; 10: chain_keys, login_failures
)

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(1024), nullable=False),
)

log_head = Table(
    "log_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("last_hash", LargeBinary(32), nullable=False),
    Column("last_time", String(32), nullable=False),
    Column("frontier", LargeBinary, nullable=False),
)

log_entries = Table(
    "log_entries",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
)

log_tiles = Table(
    "log_tiles",
    metadata,
    Column("level", Integer, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
)

log_checkpoints = Table(
    "log_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
)

# Tables that are projections of the ledger (rebuilt by `unionledger ledger rebuild`).
projection_metadata = MetaData()


class SchemaVersionError(RuntimeError):
    """The database was made by a different version of UnionLedger."""


def init_schema(engine: Engine) -> None:
    """Create missing tables, the chain head and the schema version. Safe to run again.

    Raises:
        SchemaVersionError: the database holds another schema version.
    """
    from ledger import (  # noqa: F401, PLC0415  (register their tables)
        credentials,
        members,
        offline,
        programs,
        redemptions,
        stations,
        unions,
        vault,
    )
    from verifier.merkle import EMPTY_ROOT  # noqa: PLC0415  (keeps this module light)

    metadata.create_all(engine)
    projection_metadata.create_all(engine)
    with engine.begin() as conn:
        found = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
        if found is None:
            conn.execute(meta.insert().values(key="schema_version", value=SCHEMA_VERSION))
        elif found != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"database schema version {found}, this program expects {SCHEMA_VERSION}"
            )
        if conn.execute(select(log_head.c.id)).first() is None:
            conn.execute(
                log_head.insert().values(
                    id=1,
                    size=0,
                    root=EMPTY_ROOT,
                    last_hash=bytes(32),
                    last_time="",
                    frontier=b"",
                )
            )


def schema_version(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
