"""The admin console's programs and stations tabs (``GET /admin``), driven in headless Chromium
against a real server with the demo data: an official creates, revises and closes a benefit
program with an allocation, registers a station with opening hours, registers device keys
(pasted, and made on the page with WebCrypto), revokes one and closes the station. Whatever the
page did is then checked through the API and on the ledger itself (the public log's entries)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import keys
from api.bootstrap import DEMO_STATION, NATIONAL_UNION_CODE
from api.problems import TYPES
from ledger import programs, stations
from ledger.domain import SYSTEM
from tests.web.conftest import LiveServer
from verifier.entry import parse_entry

WEB = Path(__file__).resolve().parents[2] / "api" / "web"
BEIJING = ("official-beijing", "demo-beijing-2026")
WANGJING = ("official-wangjing", "demo-wangjing-2026")
ABOVE = "TEST-NAT-READONLY"  # a national program: it reaches Beijing, Beijing cannot change it

# The problem types the programs and stations tabs can meet (ledger/programs.py and
# ledger/stations.py): each has a message in both languages.
PAGE_PROBLEMS = {
    *("unknown-program", "duplicate-program", "invalid-program-rules", "program-closed"),
    *("unknown-station", "duplicate-station", "station-closed", "bad-station-id"),
    *("bad-station-text", "unknown-station-kind", "bad-coordinates", "bad-opening-hours"),
    *("empty-station-update", "bad-station-key", "duplicate-station-key"),
    *("too-many-station-keys", "unknown-station-key", "station-key-revoked"),
    "bad-daily-ceiling",
}


# -- helpers ------------------------------------------------------------------------------------


def tid(name: str) -> str:
    return f'[data-testid="{name}"]'


def login(page: Any, who: tuple[str, str]) -> None:
    page.fill(tid("login-username"), who[0])
    page.fill(tid("login-password"), who[1])
    page.click(tid("login-submit"))
    page.wait_for_selector(f"{tid('union')}:visible")


def expect_text(page: Any, testid: str, text: str) -> None:
    page.wait_for_function(
        "([sel, text]) => document.querySelector(sel)?.textContent.includes(text)",
        arg=[tid(testid), text],
    )


def open_tab(page: Any, view: str) -> None:
    page.click(tid(f"tab-{view}"))
    page.wait_for_selector(f"{tid(f'{view}-section')}:visible")
    page.wait_for_function(
        "sel => document.querySelector(sel)?.getAttribute('aria-current') === 'page'",
        arg=tid(f"tab-{view}"),
    )


@pytest.fixture
def official_api(live_server: LiveServer) -> Iterator[Callable[[tuple[str, str]], httpx.Client]]:
    """A factory of API clients logged in as an official (as the page is)."""
    clients: list[httpx.Client] = []

    def make(who: tuple[str, str]) -> httpx.Client:
        client = httpx.Client(base_url=live_server.url)
        clients.append(client)
        answer = client.post(
            "/v1/auth/login", json={"username": who[0], "password": who[1], "totp": None}
        )
        assert answer.status_code == 200, answer.text
        client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        return client

    yield make
    for client in clients:
        client.close()


def ledger_size(live_server: LiveServer) -> int:
    return int(live_server.app.state.services.reader.size())


def ledger_events(live_server: LiveServer, since: int) -> list[Any]:
    """The entries appended since ``since``, read back from the public log."""
    answer = httpx.get(
        f"{live_server.url}/v1/log/entries",
        params={"start": since, "end": ledger_size(live_server)},
    )
    assert answer.status_code == 200, answer.text
    return [parse_entry(line) for line in answer.content.splitlines() if line]


def station_login(live_server: LiveServer, station_id: str, device: keys.PrivateKey) -> int:
    """A station device's login (docs/auth.md 4.3); the HTTP status of the verification."""
    challenge = httpx.post(
        f"{live_server.url}/v1/auth/station/challenge", json={"station_id": station_id}
    )
    assert challenge.status_code == 200, challenge.text
    nonce = challenge.json()["challenge"]
    signature = device.sign(f"unionledger-station-login/1\n{station_id}\n{nonce}".encode())
    verified = httpx.post(
        f"{live_server.url}/v1/auth/station/verify",
        json={
            "station_id": station_id,
            "challenge": nonce,
            "signature": keys.b64url_encode(signature),
        },
    )
    return verified.status_code


@pytest.fixture(scope="module")
def program_above(live_server: LiveServer) -> str:
    """A program of the national federation (created as the system), open around today."""
    today = date.today()
    rules = {
        "name": "全总测试项目：饮水",
        "kind": "universal",
        "period": {"from": today.isoformat(), "until": (today + timedelta(days=30)).isoformat()},
        "quota": {"count": 1, "per": "program"},
        "unit_value": 0,
        "where": {"station_kinds": ["union_station"]},
    }
    services = live_server.app.state.services
    services.sequencer.execute(
        lambda tx: programs.create_program(
            tx, SYSTEM, program=ABOVE, owner=NATIONAL_UNION_CODE, rules=rules
        )
    )
    return ABOVE


# -- no browser needed --------------------------------------------------------------------------


def test_translations_of_the_new_tabs_are_complete(live_server: LiveServer) -> None:
    messages = json.loads((WEB / "i18n.json").read_text(encoding="utf-8"))
    zh, en = messages["zh-CN"], messages["en"]
    assert set(zh) == set(en)
    js = (WEB / "admin.js").read_text(encoding="utf-8")
    # Keys the page builds from values, or names outside a t("...") call.
    used = set(re.findall(r'"data-i18n": "([a-z0-9._-]+)"', js))
    used |= set(re.findall(r'FormProblem\("([a-z0-9._-]+)"', js))
    used |= set(re.findall(r'"((?:why|field|keys)\.[a-z0-9_-]+)"', js))
    used |= {f"skind.{k.value}" for k in stations.Kind}
    used |= {f"sstatus.{s.value}" for s in stations.Status}
    used |= {f"pkind.{k.value}" for k in programs.Kind}
    used |= {f"per.{p.value}" for p in programs.Per}
    used |= {f"rules.quota-{p.value}" for p in programs.Per}
    used |= {f"pstatus.{s}" for s in ("open", "closed")}
    used |= {f"vstatus.{s}" for s in ("current", "scheduled", "past")}
    used |= {f"day.{d}" for d in stations.DAYS}
    for kind in ("program-close", "station-close"):
        used |= {f"confirm.{kind}-{part}" for part in ("title", "text", "ok")}
    assert set(TYPES) >= PAGE_PROBLEMS, "a problem type was renamed or removed"
    used |= {f"problem.{slug}" for slug in PAGE_PROBLEMS}
    missing = sorted(k for k in used if k not in zh)
    assert not missing, missing


# -- programs -----------------------------------------------------------------------------------


def test_official_creates_revises_and_closes_a_program(
    new_page: Any, live_server: LiveServer, official_api: Any, program_above: str
) -> None:
    page = new_page()
    login(page, BEIJING)
    open_tab(page, "programs")
    assert page.evaluate("location.hash") == "#/union/110000/programs"
    expect_text(page, "programs-title", "福利项目")

    # A program of a higher union is listed, read-only.
    page.wait_for_selector(tid(f"program-row-{program_above}"))
    expect_text(page, f"program-row-{program_above}", "只读")
    page.click(tid(f"program-open-{program_above}"))
    page.wait_for_selector(f"{tid('program-detail')}:visible")
    expect_text(page, "program-detail-name", "全总测试项目：饮水")
    assert page.is_visible(tid("program-readonly"))
    assert page.is_hidden(tid("program-revise"))
    expect_text(page, "rule-quota-1", "整个项目期间每人 1 次")
    expect_text(page, "rule-unit-value-1", "不计金额的服务")
    expect_text(page, "rule-where-1", "工会驿站")
    page.click(tid("program-detail-close"))
    page.wait_for_selector(tid("program-detail"), state="hidden")

    # A new program: the form in plain words.
    since = ledger_size(live_server)
    today = date.today()
    page.click(tid("program-new"))
    page.wait_for_selector(f"{tid('program-dialog')}[open]")
    expect_text(page, "program-form-title", "新建福利项目")
    assert page.input_value(tid("program-owner")) == "110000"
    page.fill(tid("program-id"), "BJ-TEST-COOL")
    page.fill(tid("program-name"), "北京测试送清凉")
    page.check(tid("program-kind-targeted"))
    page.wait_for_selector(f"{tid('program-eligibility')}:visible")
    page.check(tid("program-group-courier"))
    page.check(tid("program-group-delivery_rider"))
    page.fill(tid("program-tenure"), "30")
    page.fill(tid("program-from"), (today + timedelta(days=10)).isoformat())
    page.fill(tid("program-until"), today.isoformat())  # before it starts: said at once
    page.fill(tid("program-quota-count"), "2")
    page.select_option(tid("program-quota-per"), "month")
    page.fill(tid("program-unit-value"), "25.5")
    page.fill(tid("program-max-quantity"), "1")
    page.fill(tid("program-budget"), "10000")
    page.click(tid("program-alloc-add"))
    page.fill(tid("alloc-union-0"), "310000")  # Shanghai: not below Beijing
    page.fill(tid("alloc-amount-0"), "2000")
    page.check(tid("program-skind-union_station"))
    page.check(tid("program-offline"))
    page.fill(tid("program-offline-per-day"), "1")
    page.fill(tid("program-offline-daily"), "500")
    page.click(tid("program-submit"))
    expect_text(page, "program-error", "结束日期早于开始日期。")
    assert page.is_hidden(tid("error"))  # in the dialog, not behind it

    until = today + timedelta(days=60)
    page.fill(tid("program-from"), today.isoformat())
    page.fill(tid("program-until"), until.isoformat())
    with page.expect_response(lambda r: r.url.endswith("/v1/programs")) as refused:
        page.click(tid("program-submit"))
    assert refused.value.status == 422
    expect_text(page, "program-error", "项目规则不正确。")  # invalid-program-rules, in words
    expect_text(page, "program-error", "310000 不在项目所属工会的范围内")
    assert "subtree" not in page.text_content(tid("program-error"))

    page.fill(tid("alloc-union-0"), "110105")
    page.click(tid("program-submit"))
    page.wait_for_selector(f"{tid('program-dialog')}:not([open])", state="attached")
    expect_text(page, "notice", "已创建项目 BJ-TEST-COOL")
    page.wait_for_selector(f"{tid('program-detail')}:visible")
    page.wait_for_selector(tid("program-row-BJ-TEST-COOL"))
    expect_text(page, "program-status-BJ-TEST-COOL", "进行中")
    expect_text(page, "rule-kind-1", "特殊")
    expect_text(page, "rule-eligibility-1", "快递员")
    expect_text(page, "rule-eligibility-1", "入会满 30 天")
    expect_text(page, "rule-quota-1", "每人每月 2 次")
    expect_text(page, "rule-unit-value-1", "25.50")
    expect_text(page, "rule-budget-1", "10,000.00")
    expect_text(page, "rule-allocations-1", "北京市朝阳区总工会（110105）")
    expect_text(page, "rule-allocations-1", "2,000.00")
    expect_text(page, "rule-allocations-1", "8,000.00")  # what the owner pays from
    expect_text(page, "rule-offline-1", "每人每天最多 1 次")
    expect_text(page, "version-status-1", "当前生效")

    # On the ledger, as the form said: yuan became fen.
    api = official_api(BEIJING)
    created = api.get("/v1/programs/BJ-TEST-COOL").json()
    assert created["owner"] == "110000"
    assert created["status"] == "open"
    assert created["versions"][0]["rules"] == {
        "name": "北京测试送清凉",
        "kind": "targeted",
        "eligibility": {
            "groups_any": ["courier", "delivery_rider"],
            "min_tenure_days": 30,
            "home_subtree": None,
        },
        "period": {"from": today.isoformat(), "until": until.isoformat()},
        "quota": {"count": 2, "per": "month"},
        "unit_value": 2550,
        "max_quantity": 1,
        "budget": 1_000_000,
        "allocations": {"110105": 200_000},
        "where": {"stations": [], "station_kinds": ["union_station"], "subtree": None},
        "offline": {"allowed": True, "per_member_per_day": 1, "station_daily_value": 50_000},
        "no_stack_with": [],
    }
    listed = api.get("/v1/programs", params={"union": "110000"}).json()
    assert "BJ-TEST-COOL" in {p["program"] for p in listed}

    # A new version, prefilled from the current rules, in force from tomorrow.
    page.click(tid("program-revise"))
    page.wait_for_selector(f"{tid('program-dialog')}[open]")
    expect_text(page, "program-form-title", "BJ-TEST-COOL")
    assert page.is_hidden(tid("program-id"))
    assert page.input_value(tid("program-name")) == "北京测试送清凉"
    assert page.input_value(tid("program-unit-value")) == "25.50"
    assert page.input_value(tid("program-budget")) == "10000"
    assert page.input_value(tid("alloc-union-0")) == "110105"
    assert page.input_value(tid("alloc-amount-0")) == "2000"
    assert page.is_checked(tid("program-group-courier"))
    assert page.is_checked(tid("program-offline"))
    page.fill(tid("program-unit-value"), "30")
    page.fill(tid("alloc-amount-0"), "3000.5")
    effective = (datetime.now() + timedelta(days=1)).replace(second=0, microsecond=0)
    page.fill(tid("program-effective"), effective.strftime("%Y-%m-%dT%H:%M"))
    page.click(tid("program-submit"))
    expect_text(page, "notice", "已为项目 BJ-TEST-COOL 新增第 2 版")
    page.wait_for_selector(tid("version-2"))
    expect_text(page, "version-status-2", "待生效")
    expect_text(page, "version-status-1", "当前生效")
    expect_text(page, "rule-unit-value-2", "30.00")
    expect_text(page, "rule-allocations-2", "3,000.50")

    revised = api.get("/v1/programs/BJ-TEST-COOL").json()
    assert [v["version"] for v in revised["versions"]] == [1, 2]
    second = revised["versions"][1]
    assert second["rules"]["unit_value"] == 3000
    assert second["rules"]["allocations"] == {"110105": 300_050}
    assert second["rules"]["eligibility"] == created["versions"][0]["rules"]["eligibility"]
    in_force = datetime.fromisoformat(second["effective"].replace("Z", "+00:00"))
    assert in_force == effective.astimezone()  # the official's local time, as typed

    # Closing asks first.
    page.click(tid("program-close"))
    page.wait_for_selector(f"{tid('confirm-dialog')}[open]")
    expect_text(page, "confirm-text", "BJ-TEST-COOL")
    page.click(tid("confirm-cancel"))
    page.wait_for_selector(f"{tid('confirm-dialog')}:not([open])", state="attached")
    assert api.get("/v1/programs/BJ-TEST-COOL").json()["status"] == "open"
    page.click(tid("program-close"))
    page.click(tid("confirm-ok"))
    expect_text(page, "notice", "项目 BJ-TEST-COOL 已结束")
    expect_text(page, "program-status-BJ-TEST-COOL", "已结束")
    page.wait_for_selector(tid("program-revise"), state="hidden")
    assert page.is_visible(tid("program-detail-closed"))

    closed = api.get("/v1/programs/BJ-TEST-COOL").json()
    assert closed["status"] == "closed"
    assert closed["closed_at"] is not None

    # The ledger holds the three events, in order, by this official.
    events = [
        e for e in ledger_events(live_server, since) if e.body.get("program") == "BJ-TEST-COOL"
    ]
    assert [e.type for e in events] == ["ProgramCreated", "ProgramRevised", "ProgramClosed"]
    assert events[0].body["rules"] == created["versions"][0]["rules"]
    assert events[0].body["owner"] == "110000"
    assert events[1].body["version"] == 2
    assert len({e.actor for e in events}) == 1


# -- stations -----------------------------------------------------------------------------------


def test_official_registers_a_station_with_hours_and_manages_its_device_keys(
    new_page: Any, live_server: LiveServer, official_api: Any, tmp_path: Path
) -> None:
    page = new_page()
    login(page, WANGJING)
    open_tab(page, "stations")
    assert page.evaluate("location.hash") == "#/union/110105-WJ/stations"
    page.wait_for_selector(tid(f"station-row-{DEMO_STATION}"))
    expect_text(page, f"station-hours-{DEMO_STATION}", "全天开放")
    assert page.locator(tid("station-row-ST-BJ-ZGC-0001")).count() == 0  # Haidian: not theirs

    since = ledger_size(live_server)
    page.click(tid("station-new"))
    page.wait_for_selector(f"{tid('station-dialog')}[open]")
    expect_text(page, "station-form-title", "登记服务驿站")
    assert page.input_value(tid("station-union")) == "110105-WJ"
    page.fill(tid("station-id"), DEMO_STATION)  # taken: the server says so, in words
    page.fill(tid("station-name"), "望京测试驿站")
    page.select_option(tid("station-kind"), "union_station")
    page.fill(tid("station-union"), "G-BJ-RIDERS")
    page.fill(tid("station-location"), "北京市朝阳区望京（测试）")
    page.fill(tid("station-lat"), "39.9970")
    page.fill(tid("station-lon"), "116.4710")
    # The offline daily ceiling, in yuan: a negative amount or three decimals is said at once.
    for wrong in ("-5", "500.123"):
        page.fill(tid("station-daily-ceiling"), wrong)
        page.click(tid("station-submit"))
        expect_text(page, "station-error", "离线每日限额：金额格式不正确")
    page.fill(tid("station-daily-ceiling"), "500")
    # Hours: every day starts as 08:00-20:00. Monday: 08:00-12:00 and 13:00-20:00, copied to
    # the weekdays; Saturday 09:00-17:00; Sunday closed.
    page.fill(tid("hours-mon-end-0"), "07:00")  # before it opens: said at once
    page.click(tid("station-submit"))
    expect_text(page, "station-error", "周一：08:00–07:00 的结束时间不晚于开始时间。")
    page.fill(tid("hours-mon-end-0"), "12:00")
    page.click(tid("hours-mon-add"))
    page.fill(tid("hours-mon-start-1"), "13:00")
    page.fill(tid("hours-mon-end-1"), "20:00")
    page.click(tid("hours-copy-weekdays"))
    assert page.input_value(tid("hours-fri-start-1")) == "13:00"
    page.fill(tid("hours-sat-start-0"), "9:00")  # written loosely: normalised
    page.fill(tid("hours-sat-end-0"), "17:00")
    page.click(tid("hours-sun-remove-0"))
    expect_text(page, "hours-sun", "休息")
    page.click(tid("station-submit"))
    expect_text(page, "station-error", "已存在相同编号的驿站")

    station_id = "ST-TEST-WJ-01"
    page.fill(tid("station-id"), station_id)
    page.click(tid("station-submit"))
    page.wait_for_selector(f"{tid('station-detail')}:visible")
    expect_text(page, "notice", "已登记驿站 望京测试驿站")
    expect_text(page, "station-detail-name", "望京测试驿站")
    expect_text(page, "station-day-mon", "08:00–12:00、13:00–20:00")
    expect_text(page, "station-day-sun", "休息")
    expect_text(page, "station-detail-daily-ceiling", "¥500.00")
    expect_text(
        page,
        f"station-hours-{station_id}",
        "周一至周五 08:00–12:00、13:00–20:00；周六 09:00–17:00；周日 休息",
    )

    api = official_api(WANGJING)
    split = [["08:00", "12:00"], ["13:00", "20:00"]]
    week = dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), split)
    week |= {"sat": [["09:00", "17:00"]], "sun": []}
    row = api.get(f"/v1/stations/{station_id}").json()
    assert {k: row[k] for k in ("name", "kind", "union", "location", "lat", "lon", "status")} == {
        "name": "望京测试驿站",
        "kind": "union_station",
        "union": "G-BJ-RIDERS",
        "location": "北京市朝阳区望京（测试）",
        "lat": "39.9970",
        "lon": "116.4710",
        "status": "active",
    }
    assert row["hours"] == week
    assert row["daily_ceiling"] == 50_000  # 500 yuan, in fen

    # Edit: a new name, and always open.
    page.click(tid("station-edit"))
    page.wait_for_selector(f"{tid('station-dialog')}[open]")
    assert page.is_disabled(tid("station-id"))
    assert page.input_value(tid("hours-mon-end-1")) == "20:00"
    assert page.input_value(tid("station-daily-ceiling")) == "500"
    page.click(tid("station-submit"))  # nothing changed
    expect_text(page, "station-error", "没有修改任何内容。")
    page.fill(tid("station-name"), "望京测试驿站（二号）")
    page.check(tid("station-always-open"))
    page.wait_for_selector(tid("hours-editor"), state="hidden")
    page.click(tid("station-submit"))
    expect_text(page, "notice", "已保存驿站 望京测试驿站（二号）")
    expect_text(page, f"station-hours-{station_id}", "全天开放")
    row = api.get(f"/v1/stations/{station_id}").json()
    assert row["name"] == "望京测试驿站（二号）"
    assert row["hours"] is None
    assert row["lat"] == "39.9970"  # unchanged
    assert row["daily_ceiling"] == 50_000  # unchanged, and not sent

    # Edit: the ceiling emptied is removed. The server's refusal shows in the form as any other
    # (a ceiling out of range, slipped into the request on its way).
    page.click(tid("station-edit"))
    page.wait_for_selector(f"{tid('station-dialog')}[open]")
    page.fill(tid("station-daily-ceiling"), "")

    def out_of_range(route: Any) -> None:
        if route.request.method != "PATCH":
            route.continue_()
            return
        body = json.loads(route.request.post_data or "{}")
        assert body == {"daily_ceiling": None}
        route.continue_(post_data=json.dumps({"daily_ceiling": 10**12 + 1}))

    page.route(f"**/v1/stations/{station_id}", out_of_range)
    with page.expect_response(lambda r: r.request.method == "PATCH") as refused:
        page.click(tid("station-submit"))
    assert refused.value.status == 422
    expect_text(page, "station-error", "离线每日限额不正确。")
    expect_text(page, "station-error", "离线每日限额须为 0 到 100 亿元之间的金额")
    assert page.is_hidden(tid("error"))  # in the dialog, not behind it
    page.unroute(f"**/v1/stations/{station_id}", out_of_range)
    assert api.get(f"/v1/stations/{station_id}").json()["daily_ceiling"] == 50_000
    page.click(tid("station-submit"))
    page.wait_for_selector(f"{tid('station-dialog')}:not([open])", state="attached")
    expect_text(page, "notice", "已保存驿站 望京测试驿站（二号）")
    expect_text(page, "station-detail-daily-ceiling", "不限")
    assert api.get(f"/v1/stations/{station_id}").json()["daily_ceiling"] is None

    # A pasted public key. A private key is refused before anything is sent.
    page.wait_for_selector(f"{tid('station-keys-empty')}:visible")
    device = keys.PrivateKey.generate()
    private = device.public_key.to_jwk() | {"d": keys.b64url_encode(device.seed())}
    page.fill(tid("key-jwk"), json.dumps(private))
    page.click(tid("key-submit"))
    expect_text(page, "error", "粘贴的是私钥")
    assert page.input_value(tid("key-jwk")) == ""
    pasted_kid = device.key_id
    page.fill(tid("key-jwk"), json.dumps(device.public_key.to_jwk() | {"use": "sig"}))
    page.click(tid("key-submit"))
    page.wait_for_selector(tid(f"key-row-{pasted_kid}"))
    expect_text(page, "notice", f"已登记设备密钥 {pasted_kid}")
    expect_text(page, f"key-status-{pasted_kid}", "有效")

    # A key pair made on the page: the private key is shown once, and downloadable.
    assert page.is_enabled(tid("key-generate"))
    page.click(tid("key-generate"))
    page.wait_for_selector(f"{tid('private-key-dialog')}[open]")
    private_text = page.input_value(tid("private-key-jwk"))
    made = json.loads(private_text)
    assert set(made) == {"kty", "crv", "kid", "x", "d"}
    generated = keys.PrivateKey.from_seed(keys.b64url_decode(made["d"]))
    generated_kid = generated.key_id
    assert made["kid"] == generated_kid
    assert made["x"] == generated.public_key.to_jwk()["x"]
    expect_text(page, "private-key-kid", generated_kid)
    with page.expect_download() as download:
        page.click(tid("private-key-download"))
    saved = tmp_path / "device.jwk.json"
    download.value.save_as(saved)
    assert json.loads(saved.read_text()) == made
    assert download.value.suggested_filename.endswith(".private.jwk.json")
    page.click(tid("private-key-done"))
    page.wait_for_selector(f"{tid('private-key-dialog')}:not([open])", state="attached")
    assert page.input_value(tid("private-key-jwk")) == ""  # forgotten by the page
    page.wait_for_selector(tid(f"key-row-{generated_kid}"))

    listed = {k["kid"]: k for k in api.get(f"/v1/stations/{station_id}/keys").json()}
    assert set(listed) == {pasted_kid, generated_kid}
    assert listed[generated_kid]["jwk"] == generated.public_key.to_jwk()
    assert all(k["revoked_at"] is None for k in listed.values())
    # The device logs in with the key the page made.
    assert station_login(live_server, station_id, generated) == 200

    # Revoke it, with a reason.
    page.click(tid(f"key-revoke-{generated_kid}"))
    page.wait_for_selector(f"{tid('revoke-dialog')}[open]")
    expect_text(page, "revoke-text", generated_kid)
    page.click(tid("revoke-submit"))
    expect_text(page, "revoke-error", "请填写：原因")
    page.fill(tid("revoke-reason"), "设备丢失")
    page.click(tid("revoke-submit"))
    expect_text(page, "notice", f"已吊销设备密钥 {generated_kid}")
    expect_text(page, f"key-status-{generated_kid}", "已吊销")
    expect_text(page, f"key-status-{generated_kid}", "设备丢失")
    assert page.locator(tid(f"key-revoke-{generated_kid}")).count() == 0
    revoked = {k["kid"]: k for k in api.get(f"/v1/stations/{station_id}/keys").json()}
    assert revoked[generated_kid]["revoked_at"] is not None
    assert revoked[generated_kid]["revoke_reason"] == "设备丢失"
    assert revoked[pasted_kid]["revoked_at"] is None
    assert station_login(live_server, station_id, generated) == 401

    # Close the station: asked first; its last key goes with it.
    page.click(tid("station-close"))
    page.wait_for_selector(f"{tid('confirm-dialog')}[open]")
    expect_text(page, "confirm-text", station_id)
    page.click(tid("confirm-ok"))
    expect_text(page, "notice", "已撤销")
    expect_text(page, f"station-status-{station_id}", "已撤销")
    page.wait_for_selector(tid("station-edit"), state="hidden")
    assert page.is_hidden(tid("key-register"))
    expect_text(page, f"key-status-{pasted_kid}", "station closed")
    row = api.get(f"/v1/stations/{station_id}").json()
    assert row["status"] == "closed"
    keys_after = api.get(f"/v1/stations/{station_id}/keys").json()
    assert all(k["revoked_at"] is not None for k in keys_after)
    assert station_login(live_server, station_id, device) == 401

    events = [e for e in ledger_events(live_server, since) if e.body.get("station") == station_id]
    assert [e.type for e in events] == [
        "StationRegistered",
        "StationUpdated",
        "StationUpdated",
        "StationKeyRegistered",
        "StationKeyRegistered",
        "StationKeyRevoked",
        "StationKeyRevoked",
        "StationClosed",
    ]
    assert events[0].body["hours"] == week
    assert events[0].body["daily_ceiling"] == 50_000
    assert events[1].body == {"station": station_id, "name": "望京测试驿站（二号）", "hours": None}
    assert events[2].body == {"station": station_id, "daily_ceiling": None}
    assert [e.body["kid"] for e in events[3:5]] == [pasted_kid, generated_kid]
    assert all(set(e.body) == {"station", "kid", "x"} for e in events[3:5])
    assert made["d"] not in json.dumps([e.body for e in events])  # the private key stayed out
    assert events[5].body["reason"] == "设备丢失"
    assert events[6].body == {"station": station_id, "kid": pasted_kid, "reason": "station closed"}


# -- both tabs in English, and on a phone -------------------------------------------------------


def test_english_labels_and_rules(new_page: Any, program_above: str) -> None:
    page = new_page()
    login(page, BEIJING)
    open_tab(page, "programs")
    page.click(tid("lang-switch"))
    expect_text(page, "tab-programs", "Benefit programs")
    assert page.text_content(tid("tab-members")) == "Members and unions"
    assert page.text_content(tid("tab-stations")) == "Stations"
    assert page.text_content(tid("program-new")) == "New program"
    headers = page.locator(f"{tid('programs-table')} th").all_text_contents()
    assert headers == ["Program ID", "Name", "Owner union", "Kind", "Runs", "Status"]
    expect_text(page, f"program-status-{program_above}", "Open")
    expect_text(page, f"program-row-{program_above}", "read-only")
    page.click(tid(f"program-open-{program_above}"))
    expect_text(page, "rule-quota-1", "1 per member for the whole program")
    expect_text(page, "rule-kind-1", "Universal")
    expect_text(page, "rule-where-1", "Union station")
    expect_text(page, "program-readonly", "A higher union runs this program")

    page.click(tid("program-new"))
    page.wait_for_selector(f"{tid('program-dialog')}[open]")
    expect_text(page, "program-form-title", "New benefit program")
    assert "Truck-driver home" in page.text_content(tid("program-station-kinds"))
    assert "Courier" in page.text_content(tid("program-groups"))
    assert "per month" in page.locator(tid("program-quota-per")).inner_text()
    page.fill(tid("program-id"), "BJ-EN-1")
    page.fill(tid("program-name"), "English test")
    page.fill(tid("program-until"), "2000-01-01")  # before today: said in English
    page.fill(tid("program-unit-value"), "1.234")
    page.click(tid("program-submit"))
    expect_text(page, "program-error", "The end date is before the start date.")
    page.fill(tid("program-until"), (date.today() + timedelta(days=5)).isoformat())
    page.click(tid("program-submit"))
    expect_text(page, "program-error", "value per unit: not an amount (yuan")
    page.click(tid("program-cancel"))
    page.wait_for_selector(tid("program-error"), state="hidden")

    open_tab(page, "stations")
    expect_text(page, "stations-title", "Stations (incl. affiliates)")
    expect_text(page, "station-hours-ST-BJ-ZGC-0001", "Mon–Sun 08:00–20:00")
    expect_text(page, "station-status-ST-BJ-ZGC-0001", "Open")
    expect_text(page, "station-hours-ST-BJ-HOSP-MOM", "Mon–Fri 08:30–17:30; Sat–Sun closed")
    page.click(tid("station-open-ST-BJ-ZGC-0001"))
    expect_text(page, "station-detail-kind", "Union station")
    expect_text(page, "station-day-wed", "08:00–20:00")
    expect_text(page, "station-detail-daily-ceiling", "none")
    expect_text(page, "key-register", "Register public key")
    page.click(tid("station-new"))
    page.wait_for_selector(f"{tid('station-dialog')}[open]")
    expect_text(page, "station-form-title", "Register a station")
    expect_text(page, "hours-editor", "Copy Monday to Tuesday–Friday")
    expect_text(page, "hours-tue", "Tue")
    expect_text(page, "station-dialog", "Offline daily ceiling (yuan)")
    page.fill(tid("station-id"), "ST-EN-1")
    page.fill(tid("station-name"), "English test")
    page.fill(tid("station-daily-ceiling"), "1.234")
    page.click(tid("station-submit"))
    expect_text(page, "station-error", "offline daily ceiling: not an amount (yuan")
    page.click(tid("station-cancel"))

    page.click(tid("lang-switch"))  # and back: the lists and the opened station follow
    expect_text(page, "stations-title", "服务驿站（含下级）")
    expect_text(page, "station-hours-ST-BJ-ZGC-0001", "周一至周日 08:00–20:00")
    expect_text(page, "station-detail-kind", "工会驿站")
    expect_text(page, "station-day-wed", "08:00–20:00")
    assert page.text_content(tid("tab-programs")) == "福利项目"


def test_the_tabs_fit_a_phone(new_page: Any, program_above: str) -> None:
    page = new_page(viewport={"width": 390, "height": 844})
    login(page, WANGJING)
    for view, row in (("programs", f"program-row-{program_above}"), ("stations", None)):
        open_tab(page, view)
        page.wait_for_selector(tid(row) if row else f"{tid('stations-body')} tr")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the {view} tab is {overflow}px wider than a phone"
    page.click(tid("station-new"))
    page.wait_for_selector(f"{tid('station-dialog')}[open]")
    width = page.evaluate(
        "document.querySelector('[data-testid=station-dialog]').scrollWidth - "
        "document.querySelector('[data-testid=station-dialog]').clientWidth"
    )
    assert width <= 0, "the hours editor is wider than the dialog"
