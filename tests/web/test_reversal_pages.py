"""Reversing a redemption from the pages (docs/programs.md section 8), in headless Chromium
against a real server with the demo data.

- The admin console's redemptions tab (``GET /admin``, ``#/union/<code>/redemptions``): an
  official lists the redemptions touching the union's subtree (``GET /v1/redemptions``, "more"
  pages with ``before``), reverses one with a reason and sees it reversed; the API agrees and
  the member's quota is back. Refusals (already reversed; past the window without a reason)
  are said in words, in the dialog, and the page learns that a reason is needed.
- The station app (``unionledger station serve``, a station directory of the demo station
  provisioned from the live server): its recent redemptions, from the local process's
  ``GET /api/redemptions`` (the server's ``GET /v1/redemptions`` under the station's login),
  with a reverse button (``POST /api/reverse``). Within the window the station reverses; past
  it the server refuses and the page says to ask an official.

The demo data of the web tests has no redemptions (no keyring at seeding): the module makes
its own, as a station does (``POST /v1/redemptions`` by the demo station, with QR presentations
of credentials issued to Beijing members). Past the window is the server's rule: the tests
shrink the running server's window to zero (``services.redemptions.reversal_window``) instead
of waiting for it.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import keys
from api import station_app
from api.bootstrap import DEMO_STATION, demo_station_key_file
from api.cli import main
from ledger import stations
from ledger.domain import SYSTEM
from tests.web.conftest import TIMEOUT_MS, LiveServer, PageProblems
from tests.web.test_admin_programs_stations import (
    BEIJING,
    expect_text,
    ledger_events,
    ledger_size,
    login,
    open_tab,
    tid,
)
from verifier.wallet import Wallet

WEB = Path(__file__).resolve().parents[2] / "api" / "web"
BEIJING_CODE = "110000"
PAGE = 20  # the console's and the station app's page of redemptions
PROGRAM = "NAT-SONGQINGLIANG"  # the demo's national pack: once per member, 50 yuan, any station
MADE = PAGE + 6  # more than a page, at the demo station
ELSEWHERE = "ST-BJ-ZGC-0001"  # another Beijing station: one redemption there, the newest
TABLET = {"width": 800, "height": 1100}


# -- helpers ------------------------------------------------------------------------------------


def official_client(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url)
    answer = client.post(
        "/v1/auth/login", json={"username": BEIJING[0], "password": BEIJING[1], "totp": None}
    )
    assert answer.status_code == 200, answer.text
    client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return client


def station_client(url: str, station: str, device: keys.PrivateKey) -> httpx.Client:
    """A station logged in with its device key (docs/auth.md 4.3)."""
    challenge = httpx.post(f"{url}/v1/auth/station/challenge", json={"station_id": station})
    assert challenge.status_code == 200, challenge.text
    nonce = challenge.json()["challenge"]
    signed = device.sign(f"unionledger-station-login/1\n{station}\n{nonce}".encode())
    answer = httpx.post(
        f"{url}/v1/auth/station/verify",
        json={"station_id": station, "challenge": nonce, "signature": keys.b64url_encode(signed)},
    )
    assert answer.status_code == 200, answer.text
    client = httpx.Client(base_url=url)
    client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return client


@pytest.fixture(scope="module")
def made(live_server: LiveServer) -> list[int]:
    """Redemptions of the demo's national pack by Beijing members, made as a station makes
    them: ``MADE`` at the demo station, then one at another station (its device key registered
    here); their ids, oldest first."""
    services = live_server.app.state.services
    with closing(official_client(live_server.url)) as official:
        answer = official.get(
            "/v1/members", params={"union": BEIJING_CODE, "status": "active", "limit": MADE + 1}
        )
        assert answer.status_code == 200, answer.text
        members = [m["member_id"] for m in answer.json()["items"]]
    assert len(members) == MADE + 1
    demo_device = keys.PrivateKey.from_seed(
        bytes.fromhex(demo_station_key_file(services.settings).read_text().strip())
    )
    other_device = keys.PrivateKey.generate()
    services.sequencer.execute(
        lambda tx: stations.register_station_key(
            tx, SYSTEM, station=ELSEWHERE, jwk=other_device.public_key
        )
    )
    holders = [keys.PrivateKey.generate() for _ in members]
    issued = [
        services.sequencer.execute(
            lambda tx, m=m, h=h: services.credentials.issue(
                tx, SYSTEM, member_id=m, holder=h.public_key
            )
        )
        for m, h in zip(members, holders, strict=True)
    ]
    ids = []
    places = [(DEMO_STATION, demo_device)] * MADE + [(ELSEWHERE, other_device)]
    clients = {s: station_client(live_server.url, s, d) for s, d in set(places)}
    try:
        for (station, _), holder, credential in zip(places, holders, issued, strict=True):
            wallet = Wallet(holder, credential.token, dict(credential.disclosures))
            answer = clients[station].post(
                "/v1/redemptions",
                json={
                    "presentation": wallet.presentation([], keys.utc_now()),
                    "program": PROGRAM,
                    "quantity": 1,
                    "idempotency_key": str(uuid.uuid4()),
                },
            )
            assert answer.status_code == 201, answer.text
            assert answer.json()["station"] == station
            ids.append(answer.json()["redemption"])
    finally:
        for client in clients.values():
            client.close()
    return ids


@pytest.fixture
def official(live_server: LiveServer) -> Iterator[httpx.Client]:
    """The Beijing official's API client (the page's user, behind its back)."""
    with closing(official_client(live_server.url)) as client:
        yield client


@pytest.fixture
def past_window(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Calling it puts every redemption past the server's reversal window (until the test ends)."""
    service = live_server.app.state.services.redemptions
    return lambda: monkeypatch.setattr(service, "reversal_window", timedelta(0))


def first_page(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    answer = client.get("/v1/redemptions", params={"limit": PAGE, **params})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def redemption(client: httpx.Client, rid: int) -> dict[str, Any]:
    answer = client.get(f"/v1/redemptions/{rid}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def remaining(client: httpx.Client, member: str, program: str) -> int | None:
    answer = client.get(f"/v1/members/{member}/entitlements")
    assert answer.status_code == 200, answer.text
    found = [e["remaining"] for e in answer.json() if e["program"] == program]
    return found[0] if found else None


def reversal_reasons(live_server: LiveServer, since: int) -> dict[int, str | None]:
    """The ``RedemptionReversed`` entries appended since ``since``: redemption -> reason."""
    return {
        e.body["redemption"]: e.body["reason"]
        for e in ledger_events(live_server, since)
        if e.type == "RedemptionReversed"
    }


def open_redemptions(page: Any) -> None:
    login(page, BEIJING)
    open_tab(page, "redemptions")
    assert page.evaluate("location.hash") == f"#/union/{BEIJING_CODE}/redemptions"
    page.wait_for_selector(f"{tid('redemptions-body')} tr")


def row_state(page: Any, rid: int) -> str:
    return str(page.get_attribute(tid(f"redemption-row-{rid}"), "data-reversed"))


def wait_reversed(page: Any, testid: str) -> None:
    page.wait_for_selector(f'{tid(testid)}[data-reversed="true"]')


# -- no browser needed --------------------------------------------------------------------------


def test_the_new_texts_exist_in_both_languages() -> None:
    for name, page, script in (
        ("i18n.json", "admin.html", "admin.js"),
        ("station-i18n.json", "station.html", "station.js"),
    ):
        messages = json.loads((WEB / name).read_text(encoding="utf-8"))
        zh, en = messages["zh-CN"], messages["en"]
        assert set(zh) == set(en), name
        html = (WEB / page).read_text(encoding="utf-8")
        js = (WEB / script).read_text(encoding="utf-8")
        used = {k for k in json.dumps(zh).split('"') if k.startswith(("recent.", "reverse."))}
        used |= {k for k in html.split('"') if k.startswith(("recent.", "redemptions."))}
        used |= {k for k in js.split('"') if k.startswith(("recent.", "reverse.", "redemptions."))}
        used |= {k for k in js.split('"') if k.startswith(("why.revers", "reason.revers"))}
        missing = sorted(k for k in used if k not in zh or not zh[k] or not en[k])
        assert not missing, (name, missing)
        for key in used:  # the same placeholders in both languages
            assert set(re.findall(r"\{\w+\}", en[key])) == set(re.findall(r"\{\w+\}", zh[key]))
    admin = json.loads((WEB / "i18n.json").read_text(encoding="utf-8"))
    for slug in ("unknown-redemption", "already-reversed", "reversal-window-closed"):
        assert f"problem.{slug}" in admin["en"]
    station = json.loads((WEB / "station-i18n.json").read_text(encoding="utf-8"))
    assert "reason.reversal-window-closed" in station["en"]


# -- the admin console --------------------------------------------------------------------------


def test_official_reverses_a_redemption_with_a_reason(
    new_page: Any, live_server: LiveServer, official: httpx.Client, made: list[int]
) -> None:
    listed = first_page(official, union=BEIJING_CODE)
    assert len(listed) == PAGE, "the demo has more than a page of Beijing's redemptions"
    target = next(
        r
        for r in listed
        if r["reversed_at"] is None
        and r["value"] > 0
        and remaining(official, r["member_id"], r["program"]) is not None
    )
    rid, member, program = target["redemption"], target["member_id"], target["program"]
    before = remaining(official, member, program)
    assert before is not None
    since = ledger_size(live_server)

    page = new_page()
    open_redemptions(page)
    # The page lists what the API lists, newest first, and the member by id only.
    shown = page.eval_on_selector_all(
        f"{tid('redemptions-body')} tr", "rows => rows.map(r => r.dataset.testid)"
    )
    assert shown == [f"redemption-row-{r['redemption']}" for r in listed]
    assert page.inner_text(tid(f"redemption-member-{rid}")) == member
    row_text = page.inner_text(tid(f"redemption-row-{rid}"))
    assert target["program_name"] in row_text
    assert target["station"] in row_text
    assert row_state(page, rid) == "false"
    assert "已核销" in page.inner_text(tid(f"redemption-state-{rid}"))

    # "More": the next page, older, from `before`.
    page.click(tid("redemptions-more"))
    page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel).length > n",
        arg=[f"{tid('redemptions-body')} tr", PAGE],
    )
    older = first_page(official, union=BEIJING_CODE, before=listed[-1]["redemption"])
    page.wait_for_selector(tid(f"redemption-row-{older[0]['redemption']}"))

    # Reverse, with a reason: the dialog says what and asks to confirm.
    page.click(tid(f"reverse-{rid}"))
    page.wait_for_selector(f"{tid('reverse-dialog')}[open]")
    text = page.inner_text(tid("reverse-text"))
    assert str(rid) in text
    assert member in text
    assert "可不填" in page.inner_text(tid("reverse-reason-label"))
    page.fill(tid("reverse-reason"), "选错了项目（测试）")
    page.click(tid("reverse-submit"))
    page.wait_for_selector(tid("reverse-dialog"), state="hidden")
    wait_reversed(page, f"redemption-row-{rid}")
    assert "已撤销" in page.inner_text(tid(f"redemption-state-{rid}"))
    assert page.locator(tid(f"reverse-{rid}")).count() == 0
    expect_text(page, "notice", f"已撤销核销单 {rid}")
    assert page.is_hidden(tid("error"))

    # The API and the ledger agree; the member's quota is back.
    assert redemption(official, rid)["reversed_at"] is not None
    assert reversal_reasons(live_server, since) == {rid: "选错了项目（测试）"}
    after = remaining(official, member, program)
    assert after is not None
    assert after == before + target["quantity"]


def test_refusals_are_said_in_words(
    new_page: Any,
    live_server: LiveServer,
    official: httpx.Client,
    past_window: Any,
    made: list[int],
) -> None:
    candidates = [r for r in first_page(official, union=BEIJING_CODE) if r["reversed_at"] is None]
    assert len(candidates) >= 2
    first, second = candidates[0]["redemption"], candidates[1]["redemption"]
    page = new_page()
    open_redemptions(page)
    page.wait_for_selector(tid(f"reverse-{first}"))

    # Reversed by someone else after the page listed it: the server's 409, in words.
    answer = official.post(f"/v1/redemptions/{first}/reverse", json={"reason": None})
    assert answer.status_code == 200, answer.text
    page.click(tid(f"reverse-{first}"))
    page.click(tid("reverse-submit"))
    expect_text(page, "reverse-error", "这笔核销已经撤销过了")
    error = page.inner_text(tid("reverse-error"))
    assert "此前已经撤销" in error
    assert "{" not in error
    assert "/problems/" not in error
    wait_reversed(page, f"redemption-row-{first}")  # the page read it again
    page.click(tid("reverse-cancel"))
    page.wait_for_selector(tid("reverse-dialog"), state="hidden")

    # Past the window an official needs a reason: the server says so, the page learns it (in
    # English this time: the console's other language).
    page.click(tid("lang-switch"))
    expect_text(page, "tab-redemptions", "Redemptions")
    past_window()
    since = ledger_size(live_server)
    page.click(tid(f"reverse-{second}"))
    expect_text(page, "reverse-reason-label", "optional")
    page.click(tid("reverse-submit"))
    expect_text(page, "reverse-error", "Past the reversal window.")
    assert "only with a reason" in page.inner_text(tid("reverse-error"))
    expect_text(page, "reverse-reason-label", "required")
    assert page.is_visible(tid(f"past-window-{second}"))
    assert redemption(official, second)["reversed_at"] is None
    # Empty again: the page itself asks for it (nothing is sent).
    page.click(tid("reverse-submit"))
    expect_text(page, "reverse-error", "Please fill in: reason")
    page.fill(tid("reverse-reason"), "物品未发放（测试）")
    page.click(tid("reverse-submit"))
    page.wait_for_selector(tid("reverse-dialog"), state="hidden")
    wait_reversed(page, f"redemption-row-{second}")
    assert redemption(official, second)["reversed_at"] is not None
    assert reversal_reasons(live_server, since) == {second: "物品未发放（测试）"}


# -- the station app ----------------------------------------------------------------------------


def _serve(app: station_app.StationApp) -> Any:
    server = station_app.make_server(app)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def station_dir(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo station's directory, provisioned from the live server with its device key."""
    services = live_server.app.state.services
    tmp = tmp_path_factory.mktemp("station")
    roots = [r.public_key.to_jwk() for r in services.keyring if r.role is keys.Role.ROOT]
    (tmp / "roots.json").write_text(json.dumps({"keys": roots}))
    directory = str(tmp / "dir")
    key_file = str(demo_station_key_file(services.settings))
    argv = ["station", "provision", "--server", live_server.url, "--station", DEMO_STATION]
    argv += ["--dir", directory, "--device-key", key_file, "--root", str(tmp / "roots.json")]
    assert main(argv) == 0
    return directory


@pytest.fixture
def station_page(browser: Any, station_dir: str) -> Iterator[Callable[[], Any]]:
    """A factory: the station app's page, from its local process (``api/station_app.py``) on
    the demo station's directory. No page may log a script error or a CSP violation."""
    servers: list[Any] = []
    contexts: list[Any] = []
    seen = PageProblems([])

    def make() -> Any:
        app = station_app.StationApp(station_dir, timeout=5.0)
        server = _serve(app)
        servers.append(server)
        host, port = server.server_address[:2]
        context = browser.new_context(viewport=TABLET, locale="zh-CN", service_workers="block")
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        seen.watch(page)
        page.goto(f"http://{host}:{port}/")
        page.wait_for_selector("body[data-ready=true]")
        return page

    try:
        yield make
        seen.check()
    finally:
        for context in contexts:
            context.close()
        for server in servers:
            server.shutdown()
            server.server_close()


def test_station_lists_its_own_and_reverses_within_the_window(
    station_page: Any,
    live_server: LiveServer,
    official: httpx.Client,
    past_window: Any,
    made: list[int],
) -> None:
    mine = [r for r in first_page(official, station=DEMO_STATION) if r["reversed_at"] is None]
    assert len(mine) >= 2, "the demo station has redemptions to reverse"
    page = station_page()
    page.wait_for_selector(f"{tid('recent-list')} li")
    shown = page.eval_on_selector_all(
        f"{tid('recent-list')} li", "items => items.map(i => i.dataset.testid)"
    )
    assert shown, "the station's redemptions are listed"
    listed = [int(s.removeprefix("recent-")) for s in shown]
    assert listed == sorted(listed, reverse=True)  # newest first
    assert made[-1] not in listed  # the newest redemption is another station's
    assert listed[0] == made[-2]  # this station's newest
    for rid in listed:  # its own only
        assert redemption(official, rid)["station"] == DEMO_STATION
    target, other = mine[0], mine[1]
    rid = target["redemption"]
    assert rid in listed
    assert target["member_id"] in page.inner_text(tid(f"recent-{rid}"))

    # Within the window: reverse, confirmed on the page.
    since = ledger_size(live_server)
    page.click(tid(f"recent-reverse-{rid}"))
    page.wait_for_selector(tid(f"recent-confirm-box-{rid}"))
    page.fill(tid("recent-reason"), "重复核销（测试）")
    page.click(tid("recent-confirm"))
    wait_reversed(page, f"recent-{rid}")
    expect_text(page, "recent-state", f"已撤销核销单 {rid}")
    expect_text(page, f"recent-state-{rid}", "已撤销")
    assert redemption(official, rid)["reversed_at"] is not None
    assert reversal_reasons(live_server, since) == {rid: "重复核销（测试）"}

    # Past the window the station may not: the server's answer, said plainly, no button.
    past_window()
    oid = other["redemption"]
    page.click(tid(f"recent-reverse-{oid}"))
    page.click(tid("recent-confirm"))
    expect_text(page, f"recent-state-{oid}", "请联系工会干部")
    expect_text(page, "recent-state", f"核销单 {oid} 未能撤销")
    assert page.locator(tid(f"recent-reverse-{oid}")).count() == 0
    assert redemption(official, oid)["reversed_at"] is None
