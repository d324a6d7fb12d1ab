"""Storage contract: the same checks on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from ledger.db import DatabaseUrlError, make_engine, normalise_url
from ledger.schema import SCHEMA_VERSION, SchemaVersionError, init_schema, meta, schema_version


def test_schema_initialises_idempotently(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        init_schema(engine)
        init_schema(engine)
        assert schema_version(engine) == SCHEMA_VERSION
    finally:
        engine.dispose()


def test_refuses_a_database_of_another_schema_version(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        init_schema(engine)
        with engine.begin() as conn:
            conn.execute(meta.update().where(meta.c.key == "schema_version").values(value="999"))
        with pytest.raises(SchemaVersionError, match="999"):
            init_schema(engine)
    finally:
        engine.dispose()


def test_committed_writes_are_visible_to_a_new_engine(database_url: str) -> None:
    first = make_engine(database_url)
    init_schema(first)
    with first.begin() as conn:
        conn.execute(meta.insert().values(key="probe", value="durable"))
    first.dispose()
    second = make_engine(database_url)
    try:
        with second.connect() as conn:
            value = conn.execute(text("SELECT value FROM meta WHERE key = 'probe'")).scalar()
        assert value == "durable"
    finally:
        second.dispose()


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


def test_postgres_urls_use_psycopg3() -> None:
    assert normalise_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgresql+psycopg2://u@h/db").drivername == "postgresql+psycopg"


def test_unsupported_backend_is_refused() -> None:
    with pytest.raises(DatabaseUrlError, match="mysql"):
        make_engine("mysql://u@h/db")
