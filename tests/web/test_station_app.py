"""The station app (`unionledger station serve`, api/station_app.py, api/web/station.*) in
headless Chromium: a real `unionledger serve` subprocess, a station directory provisioned with
the command line, the local station process in a thread. A handheld scanner's input (the QR
text typed into the scanner field, then Enter) gives a green verdict; one tap redeems online;
with the server stopped the indicator says offline and a redemption is queued; with the server
back, sync empties the queue; a tampered presentation gives a red verdict in plain words."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

import keys
from api import station_app
from api.cli import main
from ledger import stations
from ledger.domain import SYSTEM
from tests.api.redemption_world import World, build_world
from tests.api.test_redemption_concurrency import _free_port, _serve, _stop, _wait_up
from tests.api.test_station_cli import OFFLINE, events
from tests.web.conftest import TIMEOUT_MS, _is_problem

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

STATION = "ST-BJ-2"  # a station of the world (tests/api/redemption_world.py)
ONLINE = "APP-ONLINE"  # online only, a quota of 10
OFFLINE_PROGRAM = "APP-OFFLINE"  # offline allowed, once per member per day
TABLET: ViewportSize = {"width": 800, "height": 1100}


class Ledger:
    """The world and its `unionledger serve` subprocess, stopped and started on one port."""

    def __init__(self, world: World, port: int) -> None:
        self.world = world
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = _serve(self.world, self.port)
        _wait_up(self.url, self.process)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


class LocalStation:
    """`unionledger station serve`'s server in a thread, stopped and started on one port."""

    def __init__(self, directory: str) -> None:
        self.app = station_app.StationApp(directory, timeout=5.0)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        self.server = station_app.make_server(self.app, self.port)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def station(tmp_path: Path) -> Iterator[tuple[Ledger, LocalStation]]:
    """The running ledger and the local station app's URL (its directory provisioned)."""
    world = build_world(tmp_path, f"sqlite:///{tmp_path / 'ledger.db'}")
    world.program(ONLINE, quota={"count": 10, "per": "program"})
    world.program(OFFLINE_PROGRAM, offline=OFFLINE)
    device = keys.PrivateKey.generate()
    world.run(
        lambda tx: stations.register_station_key(tx, SYSTEM, station=STATION, jwk=device.public_key)
    )
    (tmp_path / "device.key").write_text(device.seed().hex() + "\n")
    root = world.services.keyring.current(keys.Role.ROOT, keys.utc_now()).public_key
    (tmp_path / "root.jwk").write_text(json.dumps(root.to_jwk()))
    with TestClient(world.app) as client:
        world.register_holder(client)
    world.services.sequencer.close()
    ledger = Ledger(world, _free_port())
    directory = str(tmp_path / "station")
    local = LocalStation(directory)
    try:
        ledger.start()
        argv = ["station", "provision", "--server", ledger.url, "--station", STATION]
        argv += ["--dir", directory, "--device-key", str(tmp_path / "device.key")]
        assert main([*argv, "--root", str(tmp_path / "root.jwk")]) == 0
        local.start()
        yield ledger, local
    finally:
        local.stop()
        ledger.stop()
        world.services.engine.dispose()


def _open(browser: Browser, url: str, problems: list[str]) -> Page:
    context = browser.new_context(viewport=TABLET, locale="zh-CN")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("console", lambda m: problems.append(m.text) if _is_problem(m.type, m.text) else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    return page


def _scan(page: Page, text: str) -> None:
    """What a handheld scanner does: type the QR text into the focused field, then Enter."""
    field = page.get_by_test_id("scan-input")
    field.fill(text)
    field.press("Enter")


def _verdict(page: Page, state: str) -> Any:
    page.wait_for_selector(f"[data-testid=verdict][data-state={state}]")
    return page.get_by_test_id("verdict")


def test_station_app_scan_redeem_offline_sync(
    station: tuple[Ledger, LocalStation], browser: Browser
) -> None:
    ledger, local = station
    url = local.url
    w = ledger.world
    problems: list[str] = []
    page = _open(browser, url, problems)
    net = page.get_by_test_id("net")
    page.wait_for_selector("[data-testid=net][data-state=online]")
    assert net.inner_text() == "在线"
    assert page.get_by_test_id("pending").inner_text() == "0"
    options = page.locator("[data-testid=program] option")
    assert sorted(options.evaluate_all("os => os.map(o => o.value)")) == [
        OFFLINE_PROGRAM,
        ONLINE,
    ]

    # Scan (scanner input), green verdict, one tap: redeemed online, quota left shown.
    page.get_by_test_id("program").select_option(ONLINE)
    _scan(page, w.qr()[0])
    verdict = _verdict(page, "valid")
    assert page.get_by_test_id("verdict-word").inner_text() == "有效"
    assert w.member_id in verdict.inner_text()
    page.get_by_test_id("redeem").click()
    _verdict(page, "redeemed")
    assert "剩余额度：9" in page.get_by_test_id("verdict-detail").inner_text()
    recorded = events(w, "RedemptionRecorded")
    assert [e["program"] for e in recorded] == [ONLINE]

    # The server stops: the station is offline; an offline-allowed program is queued.
    ledger.stop()
    page.wait_for_selector("[data-testid=net][data-state=offline]")
    assert net.inner_text() == "离线"
    page.get_by_test_id("program").select_option(OFFLINE_PROGRAM)
    _scan(page, w.qr()[0])
    _verdict(page, "valid")
    assert "今日本机离线剩余：1" in page.get_by_test_id("verdict-detail").inner_text()
    page.get_by_test_id("redeem").click()
    _verdict(page, "queued")
    detail = page.get_by_test_id("verdict-detail").inner_text()
    assert "已存入离线队列" in detail
    assert "今日本机离线剩余：0" in detail  # the offline quota left, once redeemed
    page.wait_for_selector("[data-testid=pending]:text-is('1')")

    # A second offline redemption of the same member today: red, in plain words.
    _scan(page, w.qr()[0])
    _verdict(page, "valid")
    page.get_by_test_id("redeem").click()
    _verdict(page, "refused")
    assert "离线额度已用完" in page.get_by_test_id("verdict-reason").inner_text()

    # The local process restarts: the page reloads from the service worker's cache meanwhile,
    # says offline, and shows the queue again once the process is back.
    page.wait_for_function("navigator.serviceWorker.controller !== null")
    local.stop()
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector("[data-testid=net][data-state=offline]")
    assert page.get_by_test_id("pending").inner_text() == "—"
    local.start()
    page.wait_for_selector("[data-testid=pending]:text-is('1')")

    # The server is back on the same port and data: online again, sync empties the queue.
    ledger.start()
    page.wait_for_selector("[data-testid=net][data-state=online]")
    page.get_by_test_id("sync").click()
    page.wait_for_selector("[data-testid=pending]:text-is('0')")
    assert "接受 1" in page.get_by_test_id("sync-result").inner_text()
    offline = events(w, "OfflineRedemptionRecorded")
    assert [(e["seq"], e["member"]) for e in offline] == [(1, w.member_id)]

    # A tampered presentation: red, the reason in plain words; no redeem button.
    text = w.qr()[0]
    at = len(text) - 10  # in the holder's signature
    tampered = text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]
    _scan(page, tampered)
    _verdict(page, "refused")
    assert page.get_by_test_id("verdict-word").inner_text() == "拒绝"
    reason = page.get_by_test_id("verdict-reason").inner_text()
    assert "篡改" in reason, reason
    assert not page.get_by_test_id("redeem").is_visible()

    # English at the counter, too.
    page.get_by_test_id("lang-switch").click()
    assert page.get_by_test_id("verdict-word").inner_text() == "Refused"
    assert net.inner_text() == "Online"
    assert not problems, problems


def test_station_app_api_and_files(station: tuple[Ledger, LocalStation]) -> None:
    """The fixed table of files with the strict CSP; bad requests are 400; nothing else is
    served."""
    url = station[1].url
    with urllib.request.urlopen(f"{url}/") as response:
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert b"station.js" in response.read()
    for path in ("/station-sw.js", "/station.css", "/station-i18n.json"):
        with urllib.request.urlopen(f"{url}{path}") as response:
            assert response.status == 200
    for path in ("/../pyproject.toml", "/member.js", "/api/nothing"):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{url}{path}")
        error.value.close()
        assert error.value.code == 404
    request = urllib.request.Request(f"{url}/api/verify", data=b'{"text": ""}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request)
    error.value.close()
    assert error.value.code == 400
    request = urllib.request.Request(
        f"{url}/api/verify", data=b'{"text": "UL1:nonsense"}', method="POST"
    )
    with urllib.request.urlopen(request) as response:
        doc = json.load(response)
    assert (doc["valid"], doc["exit"]) == (False, 1)
    assert doc["code"]


def test_station_serve_command(station: tuple[Ledger, LocalStation]) -> None:
    """`unionledger station serve --dir DIR --port P` as its own process: it says where it
    listens and answers the status with the queue, the programs and the server's reachability."""
    local = station[1]
    port = _free_port()
    argv = [sys.executable, "-m", "api.cli", "station", "serve", "--dir", local.app.directory]
    process = subprocess.Popen(
        [*argv, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        assert f"http://127.0.0.1:{port}" in process.stdout.readline().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status") as response:
            doc = json.load(response)
        assert (doc["online"], doc["pending"], doc["station"]) == (True, 0, STATION)
        assert {p["program"]: p["offline"] for p in doc["programs"]} == {
            ONLINE: False,
            OFFLINE_PROGRAM: True,
        }
    finally:
        process.terminate()
        process.wait(timeout=30)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
