"""Official and auditor accounts for API tests: created straight in the accounts table (as
`unionledger accounts add` does, with the fastest password cost) and logged in over HTTP."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from ledger.accounts import PasswordCost, create_account

PASSWORD = "a good password 1"


def add_accounts(engine: Engine, accounts: Iterable[tuple[str, str, str | None]]) -> None:
    """``(username, role, scope)`` each, with :data:`PASSWORD`."""
    with engine.begin() as conn:
        for username, role, scope in accounts:
            create_account(
                conn,
                username=username,
                password=PASSWORD,
                role=role,
                scope=scope,
                now=0,
                cost=PasswordCost.fastest(),
            )


def login(client: TestClient, username: str) -> str:
    """An access token for ``username`` (asserts the login succeeds)."""
    r = client.post("/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])
