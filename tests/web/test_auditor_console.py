"""The auditor console (``GET /auditor``): served right, and driven in headless Chromium against a
real server with the demo data, redemptions included. The numbers on the screen are the API's:
each one read back and compared with the same endpoint fetched here."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn

import keys
from api import demo
from api.app import create_app
from api.bootstrap import init_data_dir
from api.settings import Settings
from tests.web.conftest import DESKTOP, TIMEOUT_MS, LiveServer, _free_port, _is_problem

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

WEB = Path(__file__).resolve().parents[2] / "api" / "web"
AUDITOR = ("auditor", "demo-auditor-2026")
BEIJING = ("official-beijing", "demo-beijing-2026")


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """As tests/web/conftest.py, with the keyring given to the demo: it seeds redemptions."""
    data_dir = tmp_path_factory.mktemp("auditor") / "data"
    env = {"UNIONLEDGER_KEY_PASSPHRASE": "web tests passphrase"}
    settings = Settings.load(data_dir=data_dir, demo=True, environ=env)
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    app = create_app(settings)
    services = app.state.services
    summary = demo.seed(services.engine, services.sequencer, services.members, services.keyring)
    assert summary is not None
    assert summary.redemptions > 0
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
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


def _token(server: LiveServer, who: tuple[str, str]) -> dict[str, str]:
    r = httpx.post(server.url + "/v1/auth/login", json={"username": who[0], "password": who[1]})
    assert r.status_code == 200, r.text
    return {"Authorization": "Bearer " + r.json()["access_token"]}


def _api(server: LiveServer, who: tuple[str, str], path: str) -> Any:
    r = httpx.get(server.url + path, headers=_token(server, who))
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def console(browser: Browser, live_server: LiveServer) -> Iterator[Any]:
    """Log in at /auditor as ``who`` and wait for the first load; no script error or CSP
    violation may be logged meanwhile."""
    contexts = []
    errors: list[str] = []

    def make(who: tuple[str, str] = AUDITOR) -> Page:
        context = browser.new_context(viewport=DESKTOP, locale="zh-CN", accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if _is_problem(m.type, m.text) else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.goto(f"{live_server.url}/auditor")
        page.wait_for_selector("body[data-ready=true]")
        page.get_by_test_id("login-username").fill(who[0])
        page.get_by_test_id("login-password").fill(who[1])
        page.get_by_test_id("login-submit").click()
        page.wait_for_selector("body[data-loaded=true]")
        return page

    try:
        yield make
        assert not errors, errors
    finally:
        for context in contexts:
            context.close()


def _raw(page: Page, testid: str, within: str | None = None) -> int:
    scope = page.get_by_test_id(within) if within else page
    text = scope.get_by_test_id(testid).first.get_attribute("data-raw")
    assert text not in (None, ""), testid
    return int(text)


# -- served right: no browser needed ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/auditor", "text/html; charset=utf-8"),
        ("/static/auditor.js", "text/javascript; charset=utf-8"),
        ("/static/auditor.css", "text/css; charset=utf-8"),
        ("/static/auditor-i18n.json", "application/json"),
    ],
)
def test_the_console_is_served_with_a_strict_csp(
    live_server: LiveServer, path: str, content_type: str
) -> None:
    r = httpx.get(live_server.url + path)
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "unsafe" not in r.headers["content-security-policy"]


def test_the_page_has_no_inline_code_and_both_languages_have_every_key() -> None:
    html = (WEB / "auditor.html").read_text(encoding="utf-8")
    for script in re.findall(r"<script\b[^>]*>", html):
        assert 'src="/static/' in script
    assert re.search(r"<script\b[^>]*>\s*[^<\s]", html) is None, "inline script"
    assert re.search(r"\sstyle=", html) is None, "style attribute (blocked by the CSP)"
    messages = json.loads((WEB / "auditor-i18n.json").read_text(encoding="utf-8"))
    assert set(messages["zh-CN"]) == set(messages["en"])
    used = set(re.findall(r'data-i18n(?:-aria-label)?="([^"]+)"', html))
    script = (WEB / "auditor.js").read_text(encoding="utf-8")
    used |= set(re.findall(r'\bt\("([a-z][a-z0-9.-]*)"', script))
    assert used - set(messages["zh-CN"]) == set()


# -- in the browser -----------------------------------------------------------------------------


def test_the_auditor_sees_the_apis_figures_and_the_verified_checkpoint(
    console: Any, live_server: LiveServer
) -> None:
    page = console()
    figures = _api(live_server, AUDITOR, "/v1/stats/unions/100000")
    total = figures["subtree"]["total"]
    assert total["redemptions"] > 0
    # The totals on the screen are the API's, as numbers and as text.
    assert _raw(page, "total-redemptions") == total["redemptions"]
    assert _raw(page, "total-value") == total["value"]
    assert _raw(page, "total-reversals") == total["reversals"]
    assert page.get_by_test_id("total-redemptions").inner_text() == f"{total['redemptions']:,}"
    assert page.get_by_test_id("total-value").inner_text() == f"{total['value'] / 100:,.2f}"
    beijing = next(c for c in figures["children"] if c["union"] == "110000")
    row = page.get_by_test_id("child-110000")
    assert _raw(page, "child-redemptions", "child-110000") == beijing["redemptions"] > 0
    assert (
        int(row.get_by_test_id("child-value").get_attribute("data-raw") or "") == beijing["value"]
    )
    for program, p in figures["subtree"]["programs"].items():
        assert _raw(page, "program-redemptions", f"program-{program}") == p["redemptions"]
    # The checkpoint: verified in the page, the very one the server serves.
    status = page.get_by_test_id("checkpoint-status")
    assert status.get_attribute("data-state") == "verified"
    assert status.inner_text().endswith("签名已验证")
    note = httpx.get(live_server.url + "/v1/log/checkpoint").text
    size, root = note.split("\n")[1:3]
    assert page.get_by_test_id("checkpoint-size").get_attribute("data-raw") == size
    assert page.get_by_test_id("checkpoint-root").inner_text() == root
    assert figures["pinned"]["size"] <= int(size)
    # Charts are drawn from the same figures.
    bars = page.locator("[data-testid=programs-svg] g[data-key]")
    assert bars.count() == len(figures["subtree"]["programs"])
    assert page.locator("#chart-series rect[data-value]").count() > 0
    assert page.locator("#chart-budget path[data-program]").count() == len(figures["budgets"])
    # The settlement table: every pair, the balances net to zero.
    settlement = _api(live_server, AUDITOR, "/v1/stats/settlement")
    assert page.locator("#settlement-pairs tr").count() == len(settlement["pairs"])
    pair = settlement["pairs"][0]
    owed = page.get_by_test_id(f"pair-{pair['funding']}-{pair['operating']}")
    assert int(owed.get_by_test_id("pair-owed").get_attribute("data-raw") or "") == pair["owed"]
    assert page.get_by_test_id("settlement-summary").get_attribute("data-net") == "0"
    # Anomalies and the station statement are there too.
    anomalies = _api(live_server, AUDITOR, "/v1/stats/anomalies")
    assert page.locator("#anomaly-rows tr").count() == len(anomalies["items"])
    station = page.get_by_test_id("statement-station").input_value()
    statement = _api(live_server, AUDITOR, f"/v1/stats/stations/{station}/statement")
    assert _raw(page, "station-ledger-total") == statement["ledger"]["total"]["redemptions"]


def test_drilling_down_switching_language_and_exporting(
    console: Any, live_server: LiveServer
) -> None:
    page = console()
    page.get_by_test_id("drill-110000").click()
    page.get_by_test_id("union-title").filter(has_text="北京市总工会").wait_for()
    beijing = _api(live_server, AUDITOR, "/v1/stats/unions/110000")
    page.wait_for_function(
        "n => document.querySelector('[data-testid=total-redemptions]')?.dataset.raw === n",
        arg=str(beijing["subtree"]["total"]["redemptions"]),
    )
    assert _raw(page, "total-value") == beijing["subtree"]["total"]["value"]
    child = next(c for c in beijing["children"] if c["redemptions"])
    assert _raw(page, "child-redemptions", f"child-{child['union']}") == child["redemptions"]
    assert page.get_by_test_id("crumb-100000").is_visible()
    # English, and back.
    page.get_by_test_id("lang-switch").click()
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_test_id("app-name").inner_text() == "Auditor console"
    assert page.get_by_test_id("checkpoint-status").inner_text().endswith("Signature verified")
    assert "Beijing" not in page.get_by_test_id("union-title").inner_text()  # names stay Chinese
    assert page.get_by_role("columnheader", name="Funding union").is_visible()
    # An export: the CSV of the settlement, as the API gives it.
    with page.expect_download() as got:
        page.get_by_test_id("export-settlement-csv").click()
    download = got.value
    text = Path(download.path()).read_text(encoding="utf-8")
    assert text.splitlines()[0] == "funding,operating,redemptions,reversals,owed"
    api_csv = httpx.get(
        live_server.url + "/v1/stats/settlement?format=csv", headers=_token(live_server, AUDITOR)
    )
    assert api_csv.headers["content-type"].startswith("text/csv")
    assert text == api_csv.text
    assert page.get_by_test_id("export-full").is_visible()
    page.get_by_test_id("lang-switch").click()
    assert page.get_by_test_id("app-name").inner_text() == "审计控制台"


def test_an_official_sees_their_subtree_without_the_full_export(
    console: Any, live_server: LiveServer
) -> None:
    page = console(BEIJING)
    figures = _api(live_server, BEIJING, "/v1/stats/unions/110000")
    assert page.get_by_test_id("union-title").inner_text().startswith("北京市总工会")
    assert _raw(page, "total-redemptions") == figures["subtree"]["total"]["redemptions"]
    assert page.get_by_test_id("export-full").count() == 0
    assert page.get_by_test_id("checkpoint-status").get_attribute("data-state") == "verified"
