"""Database engines for the ledger: SQLite (embedded default) and PostgreSQL (server).

SQLite runs in WAL mode with ``synchronous=FULL``: an acknowledged commit survives power loss.
PostgreSQL goes through psycopg 3. Both are built from a URL; nothing is created at import time.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.engine import URL


class DatabaseUrlError(ValueError):
    """The database URL names a backend we do not support."""


def normalise_url(url: str | URL) -> URL:
    """``url`` with the driver we use for its backend (psycopg 3 for PostgreSQL).

    Raises:
        DatabaseUrlError: neither SQLite nor PostgreSQL.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite")
    raise DatabaseUrlError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # durable on power loss, not just on crash
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        # Erasure overwrites what it deletes instead of leaving it in free pages.
        cursor.execute("PRAGMA secure_delete=ON")
    finally:
        cursor.close()


def _sqlite_driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see below).
    dbapi_connection.isolation_level = None


def _sqlite_begin_immediate(conn: Any) -> None:
    # A writer takes SQLite's write lock when its transaction begins, not at its first write:
    # two writers then queue on busy_timeout instead of one failing to upgrade a read lock
    # ("database is locked"), and what the writer reads (the chain head) cannot change under it.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class WriterQueue:
    """Writers of one SQLite file take an exclusive ``flock`` of ``<file>-writer.lock`` before
    ``BEGIN IMMEDIATE`` and hold it to the commit. The kernel wakes a waiting writer the moment
    the lock is released, where SQLite's busy handler sleeps and polls (1 ms growing to 100 ms):
    without it, two server processes on one file starved each other's batches (seconds of p99).
    The lock dies with its process (``kill -9`` included). For PostgreSQL and in-memory SQLite
    it does nothing: a waiter on the chain head's row lock is woken by the server."""

    def __init__(self, engine: Engine) -> None:
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        self._path = None if database in (None, "", ":memory:") else Path(f"{database}-writer.lock")
        self._fd: int | None = None  # the lock file, opened once, kept open between batches
        self._held = False

    def __enter__(self) -> WriterQueue:
        if self._path is not None:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._held = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._held and self._fd is not None:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the lock file (the lock, if held, goes with it)."""
        if self._fd is not None:
            fd, self._fd, self._held = self._fd, None, False
            os.close(fd)


def make_engine(url: str | URL, *, writer: bool = False, **kwargs: Any) -> Engine:
    """An engine for ``url``; for a SQLite file, its folder is created.

    With ``writer=True`` on SQLite every transaction begins with ``BEGIN IMMEDIATE`` (for the
    ledger's sequencer); PostgreSQL writers lock the chain head row with ``FOR UPDATE`` instead.

    Raises:
        DatabaseUrlError: unsupported backend.
    """
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        if writer:
            event.listen(engine, "connect", _sqlite_driver_autocommit)
            event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    return create_engine(parsed, pool_pre_ping=True, **kwargs)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def driver_execute(conn: Connection, qmark: str, parameters: Sequence[Any]) -> Any:
    """Run one statement (written as for :func:`driver_sql`) on a DBAPI cursor of ``conn``'s
    own connection, inside its transaction, and return the cursor (``fetchone``/``fetchall``).
    For the statements run once per event in the writer: SQLAlchemy's execution context,
    events and result wrapping (even ``exec_driver_sql``'s) cost several times what SQLite
    spends on a one-row upsert."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(driver_sql(conn, qmark), parameters)
    return cursor


def driver_sql(conn: Connection, qmark: str) -> str:
    """SQL written with ``?`` parameters, in the driver's own style (psycopg's is ``%s``), for
    ``Connection.exec_driver_sql`` on the hottest paths, where SQLAlchemy's per-statement work
    costs more than the write. The SQL must hold no other ``?`` and no ``%``."""
    return qmark.replace("?", "%s") if conn.dialect.name == "postgresql" else qmark
