"""The ledger's tables. Created by :func:`init_schema`; the schema version is stored in ``meta``."""

from __future__ import annotations

from sqlalchemy import Column, Engine, MetaData, String, Table, select

SCHEMA_VERSION = "1"

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(1024), nullable=False),
)


class SchemaVersionError(RuntimeError):
    """The database was made by a different version of UnionLedger."""


def init_schema(engine: Engine) -> None:
    """Create missing tables and record the schema version. Safe to run again.

    Raises:
        SchemaVersionError: the database holds another schema version.
    """
    metadata.create_all(engine)
    with engine.begin() as conn:
        found = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
        if found is None:
            conn.execute(meta.insert().values(key="schema_version", value=SCHEMA_VERSION))
        elif found != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"database schema version {found}, this program expects {SCHEMA_VERSION}"
            )


def schema_version(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
