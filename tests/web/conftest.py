"""Fixtures for the web pages: a real uvicorn server on a fresh demo data directory, and
Debian's Chromium driven headless by playwright (one of each per module).

Without ``/usr/bin/chromium`` (or the ``playwright`` package) the browser tests are skipped with
a message, unless ``UNIONLEDGER_REQUIRE_BROWSER=1`` (CI), which turns that into a failure.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import uvicorn
from fastapi import FastAPI

import keys
from api import demo
from api.app import create_app, server_app
from api.bootstrap import init_data_dir
from api.settings import Settings

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path(os.environ.get("UNIONLEDGER_CHROMIUM", "/usr/bin/chromium"))
# From ENVIRONMENT-NOTES: without the background-networking flags Chromium keeps trying hosts
# it cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REQUIRE_BROWSER = os.environ.get("UNIONLEDGER_REQUIRE_BROWSER") == "1"
DESKTOP = {"width": 1280, "height": 800}
TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class LiveServer:
    url: str
    app: FastAPI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The API with the demo data, served over real HTTP on 127.0.0.1."""
    data_dir = tmp_path_factory.mktemp("web") / "data"
    env = {"UNIONLEDGER_KEY_PASSPHRASE": "web tests passphrase"}
    settings = Settings.load(data_dir=data_dir, demo=True, environ=env)
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    app = create_app(settings)
    services = app.state.services
    demo.seed(services.engine, services.sequencer, services.members)
    port = _free_port()
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
        yield LiveServer(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _unavailable(message: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(f"{message} (UNIONLEDGER_REQUIRE_BROWSER=1)")
    pytest.skip(f"{message}: browser tests skipped (CI installs it: apt-get install chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium (``playwright install`` cannot download browsers here)."""
    if not CHROMIUM.exists():
        _unavailable(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class PageProblems:
    """What the page said on its console that a clean page never says."""

    errors: list[str]

    def watch(self, page: Any) -> None:
        """Collect what ``page`` logs that a clean page never logs, and its script errors."""
        page.on(
            "console",
            lambda m: self.errors.append(m.text) if _is_problem(m.type, m.text) else None,
        )
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def check(self) -> None:
        assert not self.errors, self.errors


def _is_problem(kind: str, text: str) -> bool:
    # The browser logs every 4xx answer ("Failed to load resource"): the tests provoke some.
    if text.startswith("Failed to load resource"):
        return False
    return kind == "error" or "Content Security Policy" in text or "Refused to" in text


@pytest.fixture
def new_page(browser: Browser, live_server: LiveServer) -> Iterator[Any]:
    """A factory of fresh pages (each in its own context: nothing shared), at /admin and ready.
    After the test, no page may have logged a script error or a CSP violation."""
    contexts = []
    seen = PageProblems([])

    def make(
        *,
        viewport: dict[str, int] | None = None,
        before_load: Any = None,
    ) -> Page:
        context = browser.new_context(viewport=viewport or DESKTOP, locale="zh-CN")
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        seen.watch(page)
        if before_load is not None:
            before_load(page)
        page.goto(f"{live_server.url}/admin")
        page.wait_for_selector("body[data-ready=true]")
        return page

    try:
        yield make
        seen.check()
    finally:
        for context in contexts:
            context.close()
