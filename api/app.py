"""The application factory. Nothing is built at import time: ``create_app(settings)`` opens
the database, unlocks the keyring and wires the routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

import keys
from api import problems
from api.settings import ConfigError, Settings
from ledger.db import make_engine
from ledger.schema import SchemaVersionError, init_schema

log = logging.getLogger("unionledger.api")


def package_version() -> str:
    try:
        return version("unionledger")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


@dataclass
class Services:
    """What the routes use, built once per app from the settings."""

    settings: Settings
    engine: Engine
    keyring: keys.Keyring


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def create_app(settings: Settings) -> FastAPI:
    """Build the API for ``settings``.

    Raises:
        ConfigError: unusable settings (production with a default passphrase, no keyring).
        keys.KeysError: the keyring cannot be opened (wrong passphrase, damaged file).
    """
    passphrase = settings.passphrase()
    store = keys.KeyStore(settings.data_dir)
    if not store.exists():
        raise ConfigError(
            f"{settings.data_dir} has no keyring: run `unionledger init --data-dir "
            f"{settings.data_dir}` first (or serve with --demo)"
        )
    keyring = store.load(passphrase)
    engine = make_engine(settings.database_url)
    try:
        init_schema(engine)
    except (SQLAlchemyError, SchemaVersionError) as e:
        engine.dispose()
        raise ConfigError(f"database unusable: {e}") from e

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="UnionLedger",
        version=package_version(),
        summary="Digital identity and benefit-redemption ledger for trade unions.",
        docs_url="/docs",
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.services = Services(settings=settings, engine=engine, keyring=keyring)
    problems.install(app)

    @app.get("/healthz", tags=["public"], summary="Liveness and database check")
    def healthz(services: ServicesDep) -> dict[str, Any]:
        try:
            with services.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as e:
            log.warning("health check: database unreachable: %s", type(e).__name__)
            raise problems.Problem("unavailable", "database unreachable") from e
        return {
            "status": "ok",
            "version": package_version(),
            "database": services.engine.dialect.name,
        }

    return app
