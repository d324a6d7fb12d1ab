"""Fixtures shared by the API tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.redemption_world import World, build_world


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[tuple[World, TestClient]]:
    """The redemption world (tests/api/redemption_world.py) behind a test client, its member
    holding a credential."""
    built = build_world(tmp_path, database_url)
    with TestClient(built.app, raise_server_exceptions=False) as client:
        built.register_holder(client)
        yield built, client
