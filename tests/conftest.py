"""Shared fixtures: hypothesis profile, shared reference paths, throwaway PostgreSQL cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.pg import PostgresCluster, find_pg_bin

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=100
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("UNIONLEDGER_SHARED", REPO.parent / "shared"))

# CI sets this: a missing PostgreSQL must fail the run there, not quietly skip.
REQUIRE_POSTGRES = os.environ.get("UNIONLEDGER_REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    bindir = find_pg_bin()
    if bindir is None:
        message = "PostgreSQL skipped: no initdb/pg_ctl on this machine (CI installs them)"
        if REQUIRE_POSTGRES:
            pytest.fail(message.replace("skipped", "required but missing"))
        pytest.skip(message)
    cluster = PostgresCluster(bindir, durable=False)  # the suite does not test power cuts
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each supported backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.new_schema()


def pytest_report_header(config: pytest.Config) -> list[str]:
    bindir = find_pg_bin()
    where = str(bindir) if bindir else "not found: PostgreSQL tests will be SKIPPED"
    return [f"postgresql: {where}", f"shared reference data: {SHARED}"]
