"""A throwaway PostgreSQL cluster for tests and benchmarks (see ENVIRONMENT-NOTES: as root,
PostgreSQL runs as the ``postgres`` user)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, or Debian's versioned folder."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class PostgresCluster:
    """A throwaway cluster on a private Unix socket, run as ``postgres`` when we are root
    (PostgreSQL refuses to run as root)."""

    def __init__(self, bindir: Path, *, durable: bool = True) -> None:
        self.bindir = bindir
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="ul-pg-"))
        self.as_root = os.geteuid() == 0
        self._databases = 0
        self._schemas: Any = None  # the engine that makes schemas in the "tests" database

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        if self.as_root:
            shutil.chown(self.root, user="postgres")
        data = self.root / "data"
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )
        options = f"-k {self.root} -c listen_addresses='' -c max_connections=200"
        if not self.durable:
            # For the test suite: a commit still commits, but nothing waits for the disk (a
            # throwaway cluster need not survive a power cut). Benchmarks keep the defaults.
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        if self._schemas is not None:
            self._schemas.dispose()
        try:
            self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                "-m",
                "fast",
                "-w",
                "stop",
            )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.root}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import sqlalchemy

        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}"
        engine = sqlalchemy.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def new_schema(self) -> str:
        """A fresh, empty schema of the cluster's ``tests`` database, as a URL whose connections
        look only there (``search_path``): to the application, a database of its own. Made in
        about 1 ms, where a database (a 7 MB copy of the template) took 120 ms and as long
        again to delete at the end: the suite makes hundreds."""
        import sqlalchemy

        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}"
        if self._schemas is None:
            admin = sqlalchemy.create_engine(self.url(), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sqlalchemy.text('CREATE DATABASE "tests"'))
            admin.dispose()
            self._schemas = sqlalchemy.create_engine(
                self.url("tests"), isolation_level="AUTOCOMMIT"
            )
        with self._schemas.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{name}"'))
        return f"{self.url('tests')}&options=-csearch_path%3D{name}"
