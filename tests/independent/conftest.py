"""The harness of the independent tests: a real server with the demo data (one per test module,
on its own port and data directory), and what a verifier gets out of band (the pinned root key,
the log origin, the public URL). This file may use the repository's code; the verification in
the tests goes through ``ledger_verifier`` and ``qr_verifier`` only."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

import keys
from api import demo
from api.app import create_app, server_app
from api.bootstrap import DEMO_STATION, demo_station_key_file, init_data_dir
from api.settings import Settings

PASSPHRASE = "independent tests passphrase"


@dataclass(frozen=True)
class DemoServer:
    url: str
    app: FastAPI
    settings: Settings
    summary: demo.DemoSummary
    root_jwk: dict[str, Any]  # pinned out of band, as keys.md 5.2 requires
    origin: str  # the log origin, configuration known to the verifier

    @property
    def services(self) -> Any:
        return self.app.state.services

    @property
    def demo_station(self) -> str:
        return DEMO_STATION

    def demo_station_key(self) -> keys.PrivateKey:
        """The demo station device's private key (the device's own secret, for signing)."""
        seed = demo_station_key_file(self.settings).read_text().strip()
        return keys.PrivateKey.from_seed(bytes.fromhex(seed))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    """The API with the demo data (credentials and redemptions included), over real HTTP."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path_factory.mktemp("independent") / "data"
    env = {"UNIONLEDGER_KEY_PASSPHRASE": PASSPHRASE, "UNIONLEDGER_PUBLIC_URL": url}
    settings = Settings.load(data_dir=data_dir, demo=True, environ=env)
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    app = create_app(settings)
    services = app.state.services
    summary = demo.seed(services.engine, services.sequencer, services.members, services.keyring)
    assert summary is not None
    root = services.keyring.current(keys.Role.ROOT, keys.utc_now())
    server = uvicorn.Server(
        uvicorn.Config(server_app(app), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, "uvicorn did not start in 30 s"
            time.sleep(0.02)
        yield DemoServer(url, app, settings, summary, root.public_key.to_jwk(), settings.log_origin)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def http(demo_server: DemoServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo_server.url, timeout=30) as client:
        yield client
