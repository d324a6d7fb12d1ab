"""The application factory. Nothing is built at import time: ``create_app(settings)`` opens
the database, unlocks the keyring and wires the routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

import keys
from api import (
    auth,
    problems,
    routes_auth,
    routes_credentials,
    routes_log,
    routes_members,
    routes_offline,
    routes_programs,
    routes_stations,
    routes_stats,
    routes_unions,
    routes_web,
)
from api.bootstrap import ensure_secrets, keyring_conflict
from api.deps import Services, ServicesDep, log_signer
from api.fastpath import RedemptionFastPath
from api.keywatch import KeyringWatcher
from api.settings import ConfigError, Settings, package_version
from ledger.credentials import Credentials
from ledger.db import make_engine
from ledger.keyevents import KeyringConflict, keyring_on_chain
from ledger.log import LogReader
from ledger.members import Members
from ledger.projections import default_projections
from ledger.redemptions import Redemptions
from ledger.schema import SchemaVersionError, init_schema
from ledger.sequencer import Sequencer
from ledger.vault import Vault

log = logging.getLogger("unionledger.api")


def server_app(app: FastAPI) -> RedemptionFastPath:
    """The ASGI application a server runs for ``app``: the redemption fast path in front of it
    (api/fastpath.py); every request it does not answer goes on to ``app``."""
    return RedemptionFastPath(app)


def _lifespan(
    services: Services, writer_engine: Engine
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the keyring watcher runs while it serves (`keys rotate|revoke` take
    effect without a restart); at the end the writer and the engines close."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        assert services.watcher is not None
        services.watcher.start()
        yield
        services.watcher.stop()
        services.sequencer.close()
        writer_engine.dispose()
        services.engine.dispose()

    return lifespan


def _watcher(
    services: Services, store: keys.KeyStore, passphrase: str, live: list[keys.Keyring]
) -> KeyringWatcher:
    """The keyring watcher: a changed keyring file is recorded on the chain, and the keyring
    the chain and the file make together replaces ``live[0]`` (the checkpoint signer's) and
    every service's keyring."""

    def use_keyring(ring: keys.Keyring) -> None:
        ring = keyring_on_chain(services.sequencer, ring)  # KeyringConflict: keys kept
        live[0] = ring
        services.use_keyring(ring)

    return KeyringWatcher(store, passphrase, use_keyring)


def _open(settings: Settings, store: keys.KeyStore, passphrase: str) -> tuple[Engine, keys.Keyring]:
    """The readers' engine on a schema made or checked, and the keyring with its secrets
    (``ensure_secrets``: never a new one that the database's data needs).

    Raises:
        ConfigError: the database is unusable, or the keyring lacks a secret its data needs.
    """
    keyring = store.load(passphrase)
    # Readers: one connection per worker thread (anyio runs up to 40 sync routes at a time).
    engine = make_engine(settings.database_url, pool_size=20, max_overflow=20)
    try:
        init_schema(engine)
        keyring = ensure_secrets(store, keyring, passphrase, engine)
    except ConfigError:
        engine.dispose()
        raise
    except (SQLAlchemyError, SchemaVersionError) as e:
        engine.dispose()
        hint = ""
        if isinstance(e, SchemaVersionError) and settings.demo:
            # No migrations yet: a demo directory is disposable, real data is not.
            hint = f" (a demo: delete {settings.data_dir} and start again for a fresh one)"
        raise ConfigError(f"database unusable: {e}{hint}") from e
    return engine, keyring


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
    engine, keyring = _open(settings, store, passphrase)

    writer_engine = make_engine(settings.database_url, writer=True)
    log_signer(settings, keyring)  # no log key: fail now, not at the first checkpoint
    live = [keyring]  # what the checkpoint signer reads; the watcher replaces it (below)
    sequencer = Sequencer(
        writer_engine,
        origin=settings.log_origin,
        signer=lambda: log_signer(settings, live[0]),  # the keyring of the moment
        projections=default_projections(),
        max_batch=settings.max_batch,
    )
    try:  # the keyring's news on the chain; from now on the chain says which keys stand
        keyring = live[0] = keyring_on_chain(sequencer, keyring)
        log_signer(settings, keyring)
    except (KeyringConflict, keys.KeysError) as e:  # e.g. no log key may sign any more
        sequencer.close()
        writer_engine.dispose()
        engine.dispose()
        if isinstance(e, KeyringConflict):
            raise keyring_conflict(e) from e
        raise
    members = Members(Vault.from_keyring(keyring), keyring.secret("member-pseudonym"))
    credentials = Credentials(keyring, members)
    members.change_hooks.append(credentials.on_member_change)  # re-issue or revoke
    services = Services(
        settings=settings,
        engine=engine,
        keyring=keyring,
        reader=LogReader(engine),
        sequencer=sequencer,
        members=members,
        credentials=credentials,
        redemptions=Redemptions(
            members, reversal_window=timedelta(minutes=settings.reversal_window_minutes)
        ),
        auth=auth.AuthService.for_settings(settings, engine, keyring),
    )
    assert services.auth is not None
    services.auth.directory = auth.MembersDirectory(members)  # one-time codes to their phone
    services.watcher = _watcher(services, store, passphrase, live)
    lifespan = _lifespan(services, writer_engine)

    app = FastAPI(
        title="UnionLedger",
        version=package_version(),
        summary="Digital identity and benefit-redemption ledger for trade unions.",
        docs_url="/docs",
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.services = services
    problems.install(app)
    auth.install(app)  # auth: invalid-credentials / account-locked problems with their headers
    # The busiest route first: the router tries routes in order (8% of a redemption's time
    # went to matching it against those before it).
    app.include_router(routes_programs.redemption_router)
    app.include_router(routes_auth.router)
    app.include_router(routes_unions.router)
    app.include_router(routes_members.router)
    app.include_router(routes_credentials.router)
    app.include_router(routes_programs.router)
    app.include_router(routes_stations.router)
    app.include_router(routes_offline.router)
    app.include_router(routes_stats.router)
    app.include_router(routes_log.router)
    app.include_router(routes_web.router)

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
