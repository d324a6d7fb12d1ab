"""The admin console (``GET /admin``): served right, and driven in a real browser against a real
server with the demo data (officials of Beijing and of Wangjing street)."""

from __future__ import annotations

import json
import random
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.problems import TYPES
from ledger.identity import synthetic_id_number
from ledger.members import Group
from ledger.members import Status as MemberStatus
from ledger.programs import CHINA
from ledger.unions import Kind
from tests.web.conftest import LiveServer

WEB = Path(__file__).resolve().parents[2] / "api" / "web"
BEIJING = ("official-beijing", "demo-beijing-2026")
WANGJING = ("official-wangjing", "demo-wangjing-2026")

CONSOLE_PROBLEMS = {
    # Generic ones (api/problems.py), then logins (api/auth.py).
    *("bad-request", "unauthorized", "forbidden", "not-found", "conflict", "validation-error"),
    *("too-many-requests", "internal-error", "unavailable", "ledger-error", "ledger-closed"),
    *("invalid-request", "invalid-credentials", "account-locked"),
    # unions, members, identity numbers and the vault
    *("unknown-union", "union-closed", "unknown-member", "duplicate-person", "duplicate-phone"),
    *("wrong-member-status", "transfer-to-same-union", "invalid-group", "unknown-join-code"),
    *("invalid-id-number", "invalid-phone", "invalid-name", "invalid-employer"),
    *("member-erased", "vault-corrupt"),
}

# -- served right: no browser needed ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/admin", "text/html; charset=utf-8"),
        ("/static/admin.html", "text/html; charset=utf-8"),
        ("/static/admin.js", "text/javascript; charset=utf-8"),
        ("/static/admin.css", "text/css; charset=utf-8"),
        ("/static/i18n.json", "application/json"),
        ("/static/favicon.svg", "image/svg+xml"),
    ],
)
def test_pages_are_served_with_types_and_a_strict_csp(
    live_server: LiveServer, path: str, content_type: str
) -> None:
    response = httpx.get(live_server.url + path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    ["/static/nope.js", "/static/..%2Fapp.py", "/static/../routes_web.py", "/static/.hidden.js"],
)
def test_only_the_web_files_are_served(live_server: LiveServer, path: str) -> None:
    response = httpx.get(live_server.url + path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_page_has_no_inline_code_and_no_outside_resources() -> None:
    html = (WEB / "admin.html").read_text(encoding="utf-8")
    for script in re.findall(r"<script\b[^>]*>", html):
        assert 'src="/static/' in script
    assert re.search(r"<script\b[^>]*>\s*[^<\s]", html) is None, "inline script"
    assert re.search(r"\sstyle=", html) is None, "style attribute (blocked by the CSP)"
    assert "<style" not in html
    assert re.search(r"\son[a-z]+=", html) is None, "inline event handler"
    for name in ("admin.html", "admin.js", "admin.css"):
        text = (WEB / name).read_text(encoding="utf-8")
        assert re.search(r"https?://", text) is None, f"{name} reaches outside the server"
    js = (WEB / "admin.js").read_text(encoding="utf-8")
    assert "localStorage.setItem(LANG_KEY" in js  # the language: the one thing stored
    assert "sessionStorage." not in js
    assert ".innerHTML" not in js
    assert "document.cookie" not in js


def test_translations_are_complete(live_server: LiveServer) -> None:
    messages = json.loads((WEB / "i18n.json").read_text(encoding="utf-8"))
    zh, en = messages["zh-CN"], messages["en"]
    assert set(zh) == set(en)
    assert all(zh.values())
    assert all(en.values())
    for lang in (zh, en):  # placeholders match between the languages
        for key, text in lang.items():
            assert set(re.findall(r"\{\w+\}", text)) == set(re.findall(r"\{\w+\}", zh[key])), key
    html = (WEB / "admin.html").read_text(encoding="utf-8")
    js = (WEB / "admin.js").read_text(encoding="utf-8")
    used = set(re.findall(r'data-i18n(?:-[a-z-]+)?="([^"]+)"', html))
    used |= set(re.findall(r'\bt\("([a-z0-9._-]+)"', js))
    used |= set(re.findall(r'(?:showError|showNotice)\("([a-z0-9._-]+)"', js))
    used |= {f"group.{g.value}" for g in Group}
    used |= {f"mstatus.{s.value}" for s in MemberStatus}
    used |= {f"kind.{k.value}" for k in Kind}
    # The problem types the console's requests can meet (a type not listed here still shows,
    # with the server's English title).
    assert set(TYPES) >= CONSOLE_PROBLEMS, "a problem type was renamed or removed"
    used |= {f"problem.{slug}" for slug in CONSOLE_PROBLEMS}
    missing = sorted(k for k in used if k not in zh)
    assert not missing, missing


# -- in the browser ---------------------------------------------------------------------------


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


def test_official_browses_enrols_and_manages_a_member(
    new_page: Any, tmp_path: Path, live_server: LiveServer
) -> None:
    page = new_page()
    assert page.get_attribute("html", "lang") == "zh-CN"
    login(page, BEIJING)
    expect_text(page, "whoami", "official-beijing")
    expect_text(page, "whoami", "北京市总工会")
    assert page.text_content(tid("union-name")) == "北京市总工会"
    assert page.text_content(tid("union-subtree")) == "140"  # 70 + 40 + 30 seeded
    assert page.text_content(tid("union-kind")) == "省级总工会"

    # Down the tree to a grassroots union, and the breadcrumbs on the way.
    page.click(tid("child-110108"))
    expect_text(page, "union-name", "北京市海淀区总工会")
    page.click(tid("child-110108-ZGC"))
    expect_text(page, "union-name", "中关村科技园区海淀园工会联合会")
    page.click(tid("child-G-BJ-HOSPITAL"))
    expect_text(page, "union-name", "某三甲医院工会")
    crumbs = page.locator(f"{tid('breadcrumbs')} li")
    assert crumbs.all_text_contents() == [
        "北京市总工会",
        "北京市海淀区总工会",
        "中关村科技园区海淀园工会联合会",
        "某三甲医院工会",
    ]
    assert page.text_content(tid("union-own")) == "30"
    assert page.locator(f"{tid('members-body')} tr").count() == 30

    # Enrol a worker: a mistyped ID number first, refused in Chinese inside the dialog.
    id_number = synthetic_id_number(random.Random(7), region="110108")
    page.click(tid("enrol-open"))
    assert page.input_value(tid("enrol-union")) == "G-BJ-HOSPITAL"
    page.click(tid("enrol-submit"))
    expect_text(page, "enrol-error", "请填写：姓名、身份证号、手机号")
    page.fill(tid("enrol-name"), "测试员")
    page.fill(tid("enrol-id-number"), id_number[:-1] + ("0" if id_number[-1] != "0" else "1"))
    page.fill(tid("enrol-phone"), "13900139001")
    page.click(tid("enrol-submit"))
    expect_text(page, "enrol-error", "身份证号不正确。")
    assert page.is_hidden(tid("error"))  # the message is in the dialog, not behind it
    page.fill(tid("enrol-id-number"), id_number)
    page.fill(tid("enrol-employer"), "某三甲医院")
    page.check(tid("enrol-group-female_worker"))
    page.click(tid("enrol-submit"))
    page.wait_for_selector(f"{tid('member-detail')}:visible")
    expect_text(page, "notice", "已办理入会")
    member_id = page.text_content(tid("member-id"))
    assert member_id
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", member_id)
    page.wait_for_selector(f"{tid(f'member-row-{member_id}')}:visible")
    expect_text(page, "union-own", "31")
    assert page.text_content(tid("member-name")) == "测试员"
    assert page.is_visible(tid("group-row-female_worker"))

    # Find them again by ID number, from another union.
    page.click(tid("crumb-110000"))
    expect_text(page, "union-name", "北京市总工会")
    page.wait_for_selector(tid("member-detail"), state="hidden")  # a breadcrumb leaves the member
    page.fill(tid("search-id"), id_number)
    page.click(tid("search-submit"))
    page.wait_for_selector(f"{tid('member-detail')}:visible")
    expect_text(page, "member-id", member_id)
    assert page.text_content(tid("member-id-number")) == id_number
    expect_text(page, "union-name", "某三甲医院工会")  # the member's own union

    # A group from a month ago, then ended today.
    since = (datetime.now(CHINA).date() - timedelta(days=30)).isoformat()
    page.select_option(tid("add-group-select"), "model_worker")
    page.fill(tid("add-group-start"), since)
    page.click(tid("add-group-submit"))
    page.wait_for_selector(tid("group-row-model_worker"))
    expect_text(page, "notice", "劳动模范")
    cells = page.locator(f"{tid('group-row-model_worker')} td")
    assert cells.all_text_contents()[:3] == ["劳动模范", since, "—"]
    assert "model_worker" not in page.locator(f"{tid('add-group-select')} option").evaluate_all(
        "options => options.map(o => o.value)"
    )
    page.click(tid("group-end-model_worker"))
    expect_text(page, "notice", "已结束群体：劳动模范。")
    page.wait_for_selector(tid("group-end-model_worker"), state="detached")
    ended = cells.nth(2).text_content()
    assert ended is not None
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", ended)
    assert since < ended <= (datetime.now(CHINA).date() + timedelta(days=1)).isoformat()
    assert cells.all_text_contents()[:2] == ["劳动模范", since]
    # An ended group may be joined again: it is back in the list to add.
    page.wait_for_selector(
        f"{tid('add-group-select')} option[value=model_worker]", state="attached"
    )
    # A group that started today cannot end today: refused, and still open.
    page.click(tid("group-end-female_worker"))
    expect_text(page, "error", "群体或日期不正确。")
    assert page.is_visible(tid("group-end-female_worker"))
    assert page.locator(f"{tid('group-row-female_worker')} td").nth(2).text_content() == "—"

    # The API says the same.
    token = httpx.post(
        f"{live_server.url}/v1/auth/login", json={"username": BEIJING[0], "password": BEIJING[1]}
    ).json()["access_token"]
    official = {"Authorization": f"Bearer {token}"}

    def api_groups() -> dict[str, tuple[str, str | None]]:
        answer = httpx.get(f"{live_server.url}/v1/members/{member_id}/groups", headers=official)
        assert answer.status_code == 200, answer.text
        return {g["group"]: (g["start"], g["end"]) for g in answer.json()}

    groups = api_groups()
    assert groups.keys() == {"female_worker", "model_worker"}
    assert groups["model_worker"] == (since, ended)
    assert groups["female_worker"][1] is None
    assert groups["female_worker"][0] > since

    # Then a transfer to another Beijing union.
    page.fill(tid("transfer-union"), "G-BJ-EXPRESS")
    page.click(tid("transfer-submit"))
    expect_text(page, "member-union", "G-BJ-EXPRESS")
    expect_text(page, "member-union", "某快递公司望京分部工会")
    expect_text(page, "member-history", "转会")
    expect_text(page, "union-own", "30")  # the hospital again
    page.wait_for_selector(tid(f"member-row-{member_id}"), state="detached")
    # The groups and their dates go along with the member.
    assert api_groups() == groups
    assert cells.all_text_contents()[:3] == ["劳动模范", since, ended]
    assert page.is_visible(tid("group-end-female_worker"))

    # The same transfer again is refused, in Chinese.
    page.fill(tid("transfer-union"), "G-BJ-EXPRESS")
    page.click(tid("transfer-submit"))
    expect_text(page, "error", "会员已属于该工会。")

    page.evaluate("window.scrollTo(0, 0)")
    page.locator(tid("member-detail")).evaluate("pane => { pane.scrollTop = 0; }")
    shot = tmp_path / "admin-console.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000

    page.click(tid("member-close"))
    page.wait_for_selector(tid("member-detail"), state="hidden")
    assert page.evaluate("location.hash") == "#/union/G-BJ-HOSPITAL"


def test_pending_application_is_approved_then_erased(
    new_page: Any, live_server: LiveServer
) -> None:
    page = new_page()
    login(page, BEIJING)

    # 140 seeded members in Beijing (and whoever other tests enrolled): pages of 50, 50, 40+.
    rows = page.locator(f"{tid('members-body')} tr")
    assert rows.count() == 50
    assert page.is_disabled(tid("members-prev"))
    first_page = rows.first.text_content()
    page.click(tid("members-next"))
    expect_text(page, "members-page", "第 2 页")
    assert rows.first.text_content() != first_page
    page.click(tid("members-next"))
    expect_text(page, "members-page", "第 3 页")
    assert 40 <= rows.count() <= 50
    assert page.is_disabled(tid("members-next"))
    page.click(tid("members-prev"))
    expect_text(page, "members-page", "第 2 页")
    with page.expect_response(lambda r: "group=courier" in r.url) as filtered:
        page.select_option(tid("filter-group"), "courier")
    assert filtered.value.status == 200
    expect_text(page, "members-page", "第 1 页")  # a new filter starts from the first page
    page.select_option(tid("filter-group"), "")

    page.evaluate("location.hash = '#/union/G-BJ-EXPRESS'")
    expect_text(page, "union-name", "某快递公司望京分部工会")
    join_code = page.text_content(tid("union-join-code"))
    assert join_code
    person = {
        "name": "申请人",
        "id_number": synthetic_id_number(random.Random(8), region="110105"),
        "phone": "13900139002",
    }
    applied = httpx.post(f"{live_server.url}/v1/join/{join_code}", json={"person": person})
    assert applied.status_code == 201, applied.text
    member_id = applied.json()["member_id"]

    page.select_option(tid("filter-status"), "pending")
    row = tid(f"member-row-{member_id}")
    page.wait_for_selector(row)
    assert page.locator(f"{tid('members-body')} tr").count() == 1
    expect_text(page, f"status-{member_id}", "待审批")
    page.click(tid(f"approve-{member_id}"))
    expect_text(page, "notice", "已批准")
    page.wait_for_selector(row, state="detached")  # no longer pending
    expect_text(page, "members-empty", "没有符合条件的会员")

    page.select_option(tid("filter-status"), "active")
    page.click(tid(f"open-{member_id}"))
    expect_text(page, "member-status", "在会")
    expect_text(page, "member-history", "批准入会")

    # Erasing asks first; cancelling keeps everything.
    page.click(tid("member-erase"))
    page.wait_for_selector(f"{tid('confirm-dialog')}[open]")
    expect_text(page, "confirm-text", member_id)
    page.click(tid("confirm-cancel"))
    page.wait_for_selector(f"{tid('confirm-dialog')}:not([open])", state="attached")
    assert page.text_content(tid("member-name")) == "申请人"
    page.click(tid("member-erase"))
    page.click(tid("confirm-ok"))
    expect_text(page, "member-status", "已删除个人信息")
    page.wait_for_selector(f"{tid('member-personal-gone')}:visible")
    assert page.is_hidden(tid("member-personal"))
    assert page.is_hidden(tid("member-erase"))


def test_english_switch(new_page: Any) -> None:
    page = new_page()
    login(page, BEIJING)
    page.click(tid("lang-switch"))
    expect_text(page, "children-title", "Affiliated unions")
    assert page.get_attribute("html", "lang") == "en"
    assert page.text_content(tid("union-kind")) == "Provincial federation"
    assert page.text_content(tid("members-title")) == "Members (incl. affiliates)"
    assert page.text_content(tid("enrol-open")) == "Enrol a member"
    assert page.text_content(tid("logout")) == "Sign out"
    expect_text(page, "whoami", "union official")
    assert "Active" in page.locator(tid("filter-status")).inner_text()
    assert page.text_content(tid("lang-switch")) == "中文"
    page.click(tid("lang-switch"))
    expect_text(page, "children-title", "下级工会")


def test_wrong_password_shows_a_translated_error(new_page: Any) -> None:
    page = new_page()
    page.fill(tid("login-username"), "official-beijing")
    page.fill(tid("login-password"), "not-the-password")
    page.click(tid("login-submit"))
    expect_text(page, "error", "用户名、密码或验证码不正确。")
    assert page.is_visible(tid("login-form"))
    assert page.input_value(tid("login-password")) == ""
    page.click(tid("lang-switch"))  # the message follows the language
    expect_text(page, "error", "Wrong username, password or code.")
    assert page.text_content(tid("login-submit")) == "Sign in"

    page.fill(tid("login-username"), "auditor")  # auditors have a console of their own
    page.fill(tid("login-password"), "demo-auditor-2026")
    page.click(tid("login-submit"))
    expect_text(page, "error", "This console is for union officials only.")
    assert page.is_visible(tid("login-form"))
    assert page.is_hidden(tid("console"))


def test_an_official_sees_only_their_subtree(new_page: Any) -> None:
    page = new_page()
    login(page, WANGJING)
    expect_text(page, "union-name", "朝阳区望京街道总工会")
    assert page.locator(f"{tid('breadcrumbs')} li").count() == 1  # nothing above the scope
    assert page.locator(f"{tid('children')} li").count() == 2
    for elsewhere in ("310000", "110000"):  # Shanghai, and their own province above them
        page.evaluate(f"location.hash = '#/union/{elsewhere}'")
        page.wait_for_selector(f"{tid('union-not-found')}:visible")
        expect_text(page, "error", "未找到该工会，或不在您的管辖范围内。")
        assert page.is_hidden(tid("union"))
        assert "上海" not in page.inner_text("body")
        page.click(tid("union-home"))
        expect_text(page, "union-name", "朝阳区望京街道总工会")
        page.wait_for_selector(tid("error"), state="hidden")


def test_logout_returns_to_the_login_form_and_ends_the_session(
    new_page: Any, live_server: LiveServer
) -> None:
    page = new_page()
    login(page, BEIJING)
    assert (
        page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage)").count("eyJ")
        == 0
    ), "a token was stored"
    assert page.context.cookies() == []
    with page.expect_request("**/v1/auth/logout") as logout_request:
        page.click(tid("logout"))
    page.wait_for_selector(f"{tid('login-form')}:visible")
    assert page.is_hidden(tid("console"))
    assert page.is_hidden(tid("whoami"))
    expect_text(page, "notice", "已退出登录")
    bearer = logout_request.value.headers["authorization"]
    after = httpx.get(f"{live_server.url}/v1/auth/me", headers={"Authorization": bearer})
    assert after.status_code == 401  # the server ended the session too


def test_access_token_is_refreshed_before_it_expires(new_page: Any) -> None:
    page = new_page(before_load=lambda p: p.clock.install())
    login(page, BEIJING)
    with page.expect_response("**/v1/auth/refresh") as refreshed:
        page.clock.fast_forward("09:30")  # the access token lives 10 minutes
    assert refreshed.value.status == 200
    page.click(tid("child-110105"))  # the new access token works
    expect_text(page, "union-name", "北京市朝阳区总工会")
    assert page.is_hidden(tid("error"))


def test_phone_width(new_page: Any) -> None:
    page = new_page(viewport={"width": 390, "height": 844})
    login(page, WANGJING)
    page.wait_for_selector(f"{tid('members-body')} tr")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone"
    row_display = page.evaluate(
        "getComputedStyle(document.querySelector('[data-testid=members-body] tr')).display"
    )
    assert row_display == "block"  # rows become cards
    font_px = page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
    assert font_px >= 16
