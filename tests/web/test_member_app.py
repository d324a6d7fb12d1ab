"""The member app (``GET /app``, ``GET /join/<code>``): served right, and driven in real headless
Chromium against a real server with the demo data.

The QR codes are read the way a station reads them: a screenshot of the page's QR element,
decoded by zxing-cpp, then checked by the Python verifier (``verify_presentation``) with the
server's own trust list and status lists, fetched over HTTP and verified like a station does.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest

import keys
from api.problems import TYPES
from api.routes_web import STATIC_FILES, VENDOR_FILES
from keys import Keyring, Role, sign_trust_list, verify_trust_list
from ledger import unions
from ledger.identity import synthetic_id_number
from ledger.members import Group
from ledger.members import Status as MemberStatus
from tests.web.conftest import TIMEOUT_MS, LiveServer, PageProblems
from verifier import credential as cred
from verifier.credential import (
    HOLDER_PROOF_CONTEXT,
    PREFIX,
    VerifiedPresentation,
    b45decode,
    issue_credential,
    verify_presentation,
)
from verifier.errors import HolderProofStale
from verifier.statuslist import StatusList, VerifiedStatusList, sign_status_list, verify_status_list

WEB = Path(__file__).resolve().parents[2] / "api" / "web"
PHONE = {"width": 390, "height": 844}
MEMBER_FILES = ("member.html", "member.js", "member.css", "sw.js")

# The problem types the member app's requests can meet (a type not listed still shows, with
# the server's English title).
APP_PROBLEMS = {
    *("bad-request", "unauthorized", "forbidden", "not-found", "conflict", "validation-error"),
    *("too-many-requests", "internal-error", "unavailable", "ledger-error", "ledger-closed"),
    *("invalid-request", "invalid-credentials", "account-locked"),
    *("unknown-join-code", "union-closed", "duplicate-person", "duplicate-phone"),
    *("invalid-id-number", "invalid-phone", "invalid-name", "invalid-employer"),
    *("wrong-member-status", "member-erased"),
    *("no-credential", "credential-not-issuable", "no-issuer-key", "invalid-holder-key"),
}


def tid(name: str) -> str:
    return f'[data-testid="{name}"]'


# -- served right: no browser needed ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/app", "text/html; charset=utf-8"),
        ("/join/ABCDEFGHJK", "text/html; charset=utf-8"),
        ("/sw.js", "text/javascript; charset=utf-8"),
        ("/static/member.js", "text/javascript; charset=utf-8"),
        ("/static/member.css", "text/css; charset=utf-8"),
        ("/static/member-i18n.json", "application/json"),
        ("/static/member.webmanifest", "application/manifest+json"),
        ("/static/member-icon.svg", "image/svg+xml"),
        ("/static/member-icon-maskable.svg", "image/svg+xml"),
        ("/static/vendor/cbor.js", "text/javascript; charset=utf-8"),
        ("/static/vendor/base45.js", "text/javascript; charset=utf-8"),
        ("/static/vendor/qrcode.js", "text/javascript; charset=utf-8"),
    ],
)
def test_member_app_is_served_with_types_and_a_strict_csp(
    live_server: LiveServer, path: str, content_type: str
) -> None:
    response = httpx.get(live_server.url + path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
    assert "worker-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe" not in csp
    assert "data:" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"


def test_service_worker_scope_covers_the_app(live_server: LiveServer) -> None:
    response = httpx.get(live_server.url + "/sw.js")
    assert response.headers["service-worker-allowed"] == "/"
    assert response.headers["cache-control"] == "no-cache"  # updates reach installed apps


@pytest.mark.parametrize(
    "path",
    [
        "/static/vendor/README.md",
        "/static/vendor/cborg.LICENSE.txt",
        "/static/vendor/nope.js",
        "/static/vendor/..%2Fmember.js",
        "/static/vendor/%2e%2e/routes_web.py",
        "/join/a/b",
        "/join/" + "X" * 33,
        "/sw.js/x",
    ],
)
def test_only_the_vendored_modules_are_served(live_server: LiveServer, path: str) -> None:
    response = httpx.get(live_server.url + path)
    assert response.status_code in (404, 422)
    assert response.headers["content-type"] == "application/problem+json"


def test_vendored_modules_are_documented_with_their_licences() -> None:
    vendor = WEB / "vendor"
    readme = (vendor / "README.md").read_text(encoding="utf-8")
    lock = json.loads((WEB.parents[1] / "web-src" / "package-lock.json").read_text())
    for name, package in (
        ("cbor.js", "cborg"),
        ("base45.js", "base45-js"),
        ("qrcode.js", "qrcode-generator"),
    ):
        assert name in VENDOR_FILES
        version = lock["packages"][f"node_modules/{package}"]["version"]
        banner = (vendor / name).read_text(encoding="utf-8").splitlines()[0]
        assert banner.startswith(f"/*! {package} {version} (npm), ")
        assert f"`{package}`" in readme
        assert f"| {version} |" in readme
        assert (vendor / f"{package}.LICENSE.txt").stat().st_size > 300
    assert set(VENDOR_FILES) == {"cbor.js", "base45.js", "qrcode.js"}


def test_pages_have_no_inline_code_and_no_outside_resources() -> None:
    html = (WEB / "member.html").read_text(encoding="utf-8")
    for script in re.findall(r"<script\b[^>]*>", html):
        assert 'src="/static/' in script
    assert re.search(r"<script\b[^>]*>\s*[^<\s]", html) is None, "inline script"
    assert re.search(r"\sstyle=", html) is None, "style attribute (blocked by the CSP)"
    assert "<style" not in html
    assert re.search(r"\son[a-z]+=", html) is None, "inline event handler"
    for name in MEMBER_FILES:
        text = (WEB / name).read_text(encoding="utf-8")
        assert re.search(r"https?://", text) is None, f"{name} reaches outside the server"
    js = (WEB / "member.js").read_text(encoding="utf-8")
    imports = re.findall(r'^import .* from "([^"]+)";$', js, flags=re.MULTILINE)
    assert imports == [
        "/static/vendor/cbor.js",
        "/static/vendor/base45.js",
        "/static/vendor/qrcode.js",
        "/static/receipt.js",  # the in-page receipt verifier (tests/web/test_member_redemptions.py)
    ]
    assert ".innerHTML" not in js
    assert "document.cookie" not in js
    assert "sessionStorage." not in js
    assert "localStorage.setItem(LANG_KEY" in js  # the language: the one thing in localStorage
    # The holder key: WebCrypto Ed25519, never extractable.
    assert 'generateKey({ name: "Ed25519" }, false, ["sign", "verify"])' in js
    assert 'exportKey("raw", pair.publicKey)' in js
    assert "exportKey(" not in js.replace('exportKey("raw", pair.publicKey)', "")
    # The service worker caches the whole shell, which exists.
    sw = (WEB / "sw.js").read_text(encoding="utf-8")
    shell = re.findall(r'^\s+"(/[^"]*)",$', sw, flags=re.MULTILINE)
    assert 'const APP = "/app";' in sw
    assert "const SHELL = [\n  APP,\n" in sw
    for path in shell:
        if path.startswith("/static/vendor/"):
            assert path.removeprefix("/static/vendor/") in VENDOR_FILES
        elif path.startswith("/static/"):
            assert path.removeprefix("/static/") in STATIC_FILES
    for path in re.findall(r'"(/static/[^"]+)"', html):
        assert path in shell, f"{path} is not kept for offline use"


def test_manifest_makes_an_installable_app() -> None:
    manifest = json.loads((WEB / "member.webmanifest").read_text(encoding="utf-8"))
    assert manifest["start_url"] == "/app"
    assert manifest["scope"] == "/"
    assert manifest["display"] == "standalone"
    assert manifest["lang"] == "zh-CN"
    assert manifest["name"]
    assert manifest["short_name"]
    for icon in manifest["icons"]:
        assert icon["src"].removeprefix("/static/") in STATIC_FILES
    assert {i["purpose"] for i in manifest["icons"]} == {"any", "maskable"}


def test_translations_are_complete() -> None:
    messages = json.loads((WEB / "member-i18n.json").read_text(encoding="utf-8"))
    zh, en = messages["zh-CN"], messages["en"]
    assert set(zh) == set(en)
    assert all(zh.values())
    assert all(en.values())
    for lang in (zh, en):
        for key, text in lang.items():
            assert set(re.findall(r"\{\w+\}", text)) == set(re.findall(r"\{\w+\}", zh[key])), key
    html = (WEB / "member.html").read_text(encoding="utf-8")
    js = (WEB / "member.js").read_text(encoding="utf-8")
    used = set(re.findall(r'data-i18n(?:-[a-z-]+)?="([^"]+)"', html))
    used |= set(re.findall(r'\bt\("([a-z0-9._-]+)"', js))
    used |= set(re.findall(r'(?:showError|showNotice)\("([a-z0-9._-]+)"', js))
    used |= set(re.findall(r'"((?:qr|join|auth|login|card)\.[a-z0-9-]+)"', js))
    used |= {f"group.{g.value}" for g in Group}
    used |= {f"mstatus.{s.value}" for s in MemberStatus}
    used |= {f"field.{f}" for f in ("name", "id_number", "phone", "employer")}
    used |= {f"problem.{slug}" for slug in APP_PROBLEMS}
    missing = sorted(k for k in used if k not in zh)
    assert not missing, missing


def test_problem_types_the_app_translates_exist(live_server: LiveServer) -> None:
    assert set(TYPES) >= APP_PROBLEMS, sorted(APP_PROBLEMS - set(TYPES))


# -- reading the QR the way a station does -----------------------------------------------------


def png_grey(data: bytes) -> tuple[int, int, bytes]:
    """Decode an 8-bit RGB or RGBA PNG (what Chromium's screenshots are) to grey pixels.
    (No Pillow here: zxing-cpp reads a memoryview of the grey bytes.)"""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    at, idat, header = 8, b"", b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        if kind == b"IHDR":
            header = data[at + 8 : at + 8 + length]
        elif kind == b"IDAT":
            idat += data[at + 8 : at + 8 + length]
        at += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8, depth
    assert colour in (2, 6), colour  # RGB or RGBA
    assert interlace == 0
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    grey = bytearray()
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        else:
            assert kind == 0, f"PNG filter {kind}"
        channels = zip(line[0::bpp], line[1::bpp], line[2::bpp], strict=True)
        grey += bytes(
            (299 * red + 587 * green + 114 * blue) // 1000 for red, green, blue in channels
        )
        prev = line
    return width, height, bytes(grey)


@dataclass
class Shot:
    """One screenshot of the page's QR element and what a station reads from it."""

    text: str
    proof_time: int
    width: int
    grey: bytes = field(repr=False)


def read_qr(png: bytes) -> tuple[str, int, bytes]:
    import zxingcpp  # a dev dependency: real QR decoding, never skipped

    width, height, grey = png_grey(png)
    # QR codes only, as a station's scanner is set: over all formats, zxing once also read a
    # Codabar symbol ("D$30A") out of the QR code's modules in a screenshot. One symbol: the
    # same code found twice is still one code, two different ones fail here.
    found = zxingcpp.read_barcodes(
        memoryview(grey).cast("B", (height, width)), formats=zxingcpp.BarcodeFormat.QRCode
    )
    assert len({(b.text, b.format) for b in found}) == 1, f"{len(found)} QR codes found"
    assert found[0].format == zxingcpp.BarcodeFormat.QRCode
    assert found[0].ec_level == "Q"
    return found[0].text, width, grey


def shoot(page: Any) -> Shot:
    """Screenshot the QR element (as a station's camera would see it) and decode it."""
    qr = page.locator(tid("qr"))
    qr.wait_for(state="visible")
    text, width, grey = read_qr(qr.screenshot())
    assert text.startswith(PREFIX), text
    return Shot(text, proof_time_of(text), width, grey)


def proof_time_of(text: str) -> int:
    items = cbor2.loads(b45decode(text.removeprefix(PREFIX)))
    return int(items[1])


@dataclass
class Station:
    """What an offline station holds: the trust list and every issuer's status list, fetched
    from the server and verified against the pinned root key."""

    trust_list: keys.TrustList
    status_lists: dict[str, VerifiedStatusList]

    def verify(self, text: str, now: datetime) -> VerifiedPresentation:
        return verify_presentation(
            text, trust_list=self.trust_list, status_lists=self.status_lists, now=now
        )


def station_for(live_server: LiveServer) -> Station:
    now = keys.utc_now()
    keyring = live_server.app.state.services.keyring
    roots = [r.public_key for r in keyring if r.role is Role.ROOT]
    response = httpx.get(live_server.url + "/v1/trust-list")
    assert response.status_code == 200, "GET /v1/trust-list: the credential endpoints are missing"
    trust_list = verify_trust_list(response.text, roots, now)
    status_lists = {}
    for scope in {r.scope for r in trust_list.keyring if r.role is Role.ISSUER}:
        assert scope is not None
        answer = httpx.get(f"{live_server.url}/v1/status-lists/{scope}")
        if answer.status_code == 404:  # this union has issued no credential yet
            continue
        assert answer.status_code == 200, answer.text
        status_lists[scope] = verify_status_list(answer.text, trust_list, now, issuer=scope)
    return Station(trust_list, status_lists)


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# -- browser fixtures ---------------------------------------------------------------------------


@dataclass
class Outbox:
    """Stands in for the SMS sender: the one-time codes, by phone."""

    codes: dict[str, list[str]] = field(default_factory=dict)

    def send(self, member_id: str, phone: str, code: str) -> None:
        self.codes.setdefault(phone, []).append(code)

    def wait_for(self, phone: str, already: int) -> str:
        deadline = time.monotonic() + 10
        while len(self.codes.get(phone, [])) <= already:
            assert time.monotonic() < deadline, f"no one-time code was sent to {phone}"
            time.sleep(0.02)
        return self.codes[phone][-1]


@pytest.fixture(scope="module")
def outbox(live_server: LiveServer) -> Outbox:
    box = Outbox()
    live_server.app.state.services.auth.sender = box
    return box


@pytest.fixture
def member_page(browser: Any, live_server: LiveServer) -> Iterator[Callable[..., Any]]:
    """A factory of fresh phone-sized pages of the member app, each in its own context (its own
    IndexedDB, service worker and cache). After the test no page may have logged a script
    error or a CSP violation."""
    contexts = []
    seen = PageProblems([])

    def make(path: str = "/app", *, before_load: Callable[[Any], None] | None = None) -> Any:
        context = browser.new_context(viewport=PHONE, locale="zh-CN", device_scale_factor=1)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        seen.watch(page)
        if before_load is not None:
            before_load(page)
        page.goto(live_server.url + path)
        page.wait_for_selector("body[data-ready=true]")
        return page

    try:
        yield make
        seen.check()
    finally:
        for context in contexts:
            context.close()


def expect_text(page: Any, testid: str, text: str) -> None:
    page.wait_for_function(
        "([sel, text]) => document.querySelector(sel)?.textContent.includes(text)",
        arg=[tid(testid), text],
    )


def join_code(live_server: LiveServer, union: str) -> str:
    with live_server.app.state.services.engine.connect() as conn:
        row = unions.get_union(conn, union)
    assert row is not None
    assert row.join_code
    return str(row.join_code)


def demo_member(live_server: LiveServer, *, wanted: str | None, skip: int = 0) -> tuple[str, str]:
    """(phone, member id) of an active demo member (phones 1380013xxxx) in group ``wanted``."""
    services = live_server.app.state.services
    today = datetime.now(UTC).date()
    with services.engine.connect() as conn:
        for serial in range(1, 400):
            phone = f"1380013{serial:04d}"
            member_id = services.members.member_for_phone(conn, phone)
            if member_id is None:
                continue
            groups = services.members.active_groups(conn, member_id, today)
            if (wanted is None and not groups) or (wanted in groups):
                if skip == 0:
                    return phone, member_id
                skip -= 1
    raise AssertionError(f"no demo member in {wanted}")


def log_in(page: Any, outbox: Outbox, phone: str) -> None:
    page.wait_for_selector(f"{tid('login')}:visible")
    already = len(outbox.codes.get(phone, []))
    page.fill(tid("login-phone"), phone)
    page.click(tid("phone-submit"))
    page.wait_for_selector(f"{tid('code-form')}:visible")
    page.fill(tid("login-code"), outbox.wait_for(phone, already))
    page.click(tid("code-submit"))
    page.wait_for_selector(f"{tid('member')}:visible")
    # The QR code needs the credential endpoints (POST/GET /v1/members/me/credential).
    page.wait_for_function(
        """() => document.querySelector('[data-testid="qr"]').dataset.proofTime
               || !document.querySelector('[data-testid="error"]').hidden""",
    )
    error = page.locator(tid("error"))
    assert error.is_hidden(), f"the app could not get a credential: {error.text_content()}"


def next_qr(page: Any, after: int) -> None:
    """Wait until the page shows a presentation made after ``after`` (NumericDate)."""
    page.wait_for_function(
        "t => Number(document.querySelector('[data-testid=\"qr\"]').dataset.proofTime) > t",
        arg=after,
    )


# -- joining ------------------------------------------------------------------------------------


def test_join_page_shows_the_union_and_explains_problems_in_plain_words(
    member_page: Any, live_server: LiveServer
) -> None:
    code = join_code(live_server, "G-BJ-RIDERS")  # an official approves applications
    qr = httpx.get(f"{live_server.url}/v1/join/{code}/qr.svg")
    assert qr.headers["x-join-target"] == f"{live_server.url}/join/{code}"  # what the QR holds
    page = member_page(f"/join/{code}")
    assert page.get_attribute("html", "lang") == "zh-CN"
    expect_text(page, "join-union-name", "某外卖平台北京站点骑手工会")
    expect_text(page, "join-union-code", "G-BJ-RIDERS")
    expect_text(page, "join-policy", "审核")
    assert page.is_hidden(tid("login"))

    page.click(tid("join-submit"))
    expect_text(page, "join-error", "请填写：姓名、身份证号、手机号")

    id_number = synthetic_id_number(random.Random(41), region="110105")
    page.fill(tid("join-name"), "测试骑手")
    page.fill(tid("join-id-number"), id_number[:-1] + ("0" if id_number[-1] != "0" else "1"))
    page.fill(tid("join-phone"), "13900139101")
    page.click(tid("join-submit"))
    expect_text(page, "join-error", "身份证号不正确")
    assert "ISO 7064" not in page.text_content(tid("join-error"))  # plain words only

    # In English: a bad phone number.
    page.click(tid("lang-switch"))
    expect_text(page, "join-title", "Apply to join")
    assert page.get_attribute("html", "lang") == "en"
    page.fill(tid("join-id-number"), id_number.lower())  # a lower-case x is fine
    page.fill(tid("join-phone"), "1390013")
    page.click(tid("join-submit"))
    expect_text(page, "join-error", "Not a valid mobile number")
    page.click(tid("lang-switch"))
    expect_text(page, "join-title", "申请入会")

    page.fill(tid("join-phone"), "13900139101")
    page.fill(tid("join-employer"), "某外卖平台（北京）")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click(tid("join-submit"))
    assert answer.value.status == 201
    body = answer.value.json()
    assert body["union"] == "G-BJ-RIDERS"
    assert body["status"] == "pending"
    expect_text(page, "join-result-title", "申请已提交")
    expect_text(page, "join-result-text", "13900139101")
    assert page.is_hidden(tid("join-form"))

    # The same person again: refused, in plain words.
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.fill(tid("join-name"), "测试骑手")
    page.fill(tid("join-id-number"), id_number)
    page.fill(tid("join-phone"), "13900139102")
    page.click(tid("join-submit"))
    expect_text(page, "join-error", "已是会员或已提交过入会申请")


def test_join_with_automatic_approval_then_sign_in(
    member_page: Any, live_server: LiveServer, outbox: Outbox
) -> None:
    page = member_page("/join/NOSUCHCODE")
    page.wait_for_selector(f"{tid('join-bad-code')}:visible")
    assert page.is_hidden(tid("join-form"))

    code = join_code(live_server, "G-GZ-RIDERS")  # approves automatically
    page.goto(f"{live_server.url}/join/{code}")
    page.wait_for_selector("body[data-ready=true]")
    expect_text(page, "join-policy", "立即入会")
    page.fill(tid("join-name"), "自动入会")
    page.fill(tid("join-id-number"), synthetic_id_number(random.Random(42), region="440106"))
    page.fill(tid("join-phone"), "13900139201")
    page.click(tid("join-submit"))
    expect_text(page, "join-result-title", "您已成功入会")
    assert page.get_attribute(tid("join-result"), "data-status") == "active"

    page.click(tid("join-to-app"))
    page.wait_for_selector("body[data-ready=true]")
    log_in(page, outbox, "13900139201")
    expect_text(page, "member-union", "G-GZ-RIDERS")
    expect_text(page, "member-status", "在会")
    expect_text(page, "member-groups", "无")
    page.wait_for_selector(f"{tid('qr')}:visible")
    assert page.locator(f"{tid('show-for')}:visible").count() == 0  # no group to disclose

    # The member signs in on a second phone: that one takes the card over (a new holder key,
    # the first credential revoked); the first phone says so, and takes it back on request.
    other = member_page()
    log_in(other, outbox, "13900139201")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    expect_text(page, "qr-missing", "另一台设备")
    page.click(tid("take-over"))
    page.wait_for_selector(f"{tid('qr')}:visible")
    page.wait_for_selector(tid("take-over"), state="hidden")

    # Signing out forgets the card on this device: session, credential and holder key.
    page.click(tid("logout"))
    page.wait_for_selector(f"{tid('login')}:visible")
    expect_text(page, "notice", "已退出登录")
    assert (
        page.evaluate(
            """async () => (await import("/static/member.js")).holderKey({ create: false })"""
        )
        is None
    )
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector(f"{tid('login')}:visible")


# -- the QR code --------------------------------------------------------------------------------


def test_member_signs_in_and_shows_a_qr_code_that_a_station_accepts(
    member_page: Any, live_server: LiveServer, outbox: Outbox, tmp_path: Path
) -> None:
    phone, member_id = demo_member(live_server, wanted="hardship")
    page = member_page()
    log_in(page, outbox, phone)
    expect_text(page, "member-id", member_id)
    groups = live_server.app.state.services.members.active_groups(
        live_server.app.state.services.engine.connect(), member_id, datetime.now(UTC).date()
    )
    # The member sees their own groups, the sensitive one marked as theirs only.
    for group in groups:
        page.wait_for_selector(tid(f"group-{group}"))
    page.wait_for_selector(tid("group-hardship-private"))
    assert page.text_content(tid("credential-validity")).count("2") >= 2  # iat to exp

    station = station_for(live_server)
    shot = shoot(page)
    assert shot.text.startswith(PREFIX)
    assert re.fullmatch(r"UL1:[0-9A-Z $%*+\-./:]+", shot.text)  # QR alphanumeric mode
    seen = station.verify(shot.text, at(shot.proof_time))
    assert seen.member_id == member_id
    assert seen.groups == frozenset()  # nothing disclosed by default, hardship least of all
    assert abs(shot.proof_time - time.time()) < 30

    # Big enough to scan: at least 4 pixels a module, and a white quiet zone of 4 modules.
    module = int(page.get_attribute(tid("qr"), "data-module-px"))
    version = int(page.get_attribute(tid("qr"), "data-version"))
    assert module >= 4
    assert shot.width == (version * 4 + 17 + 8) * module
    border = 4 * module - 1  # the element may sit at a fractional pixel: one pixel of slack
    rows = [shot.grey[y * shot.width : (y + 1) * shot.width] for y in range(shot.width)]
    assert all(min(row[:border] + row[-border:]) > 200 for row in rows)
    assert all(min(row) > 200 for row in rows[:border] + rows[-border:])
    expect_text(page, "qr-countdown", "秒后更新")

    # Presenting for a program: that one group is disclosed, and only it.
    plain = next(g for g in groups if g != "hardship")
    page.select_option(tid("show-for"), plain)
    page.wait_for_function(
        "g => document.querySelector('[data-testid=\"qr\"]').dataset.disclosed === g", arg=plain
    )
    shot = shoot(page)
    assert station.verify(shot.text, at(shot.proof_time)).groups == {plain}

    page.select_option(tid("show-for"), "hardship")
    expect_text(page, "qr-shows", "敏感信息")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"qr\"]').dataset.disclosed === 'hardship'"
    )
    shot = shoot(page)
    assert station.verify(shot.text, at(shot.proof_time)).groups == {"hardship"}

    # The code changes every 5 seconds; each one verifies.
    previous = shot.proof_time
    next_qr(page, previous)
    shot = shoot(page)
    assert 1 <= shot.proof_time - previous <= 7
    station.verify(shot.text, at(shot.proof_time))
    page.screenshot(path=str(tmp_path / "member-app.png"), full_page=True)


def test_a_screenshot_is_refused_once_the_clock_moves_on(
    member_page: Any, live_server: LiveServer, outbox: Outbox
) -> None:
    phone, _ = demo_member(live_server, wanted="delivery_rider", skip=1)
    page = member_page(before_load=lambda p: p.clock.install())
    log_in(page, outbox, phone)
    station = station_for(live_server)
    old = shoot(page)
    station.verify(old.text, at(old.proof_time))  # fine when fresh

    page.clock.fast_forward("02:00")
    # The page's next code is made two minutes on; the verifier's window is 90 s plus 30 s of
    # clock leeway, so take one made after those 120 s (at most 5 s later).
    next_qr(page, old.proof_time + 120)
    new = shoot(page)
    assert new.proof_time - old.proof_time > 120, (old.proof_time, new.proof_time)
    now = at(new.proof_time)
    assert station.verify(new.text, now).proof_time == new.proof_time
    with pytest.raises(HolderProofStale, match="refresh the QR code"):
        station.verify(old.text, now)


def test_the_app_keeps_making_valid_qr_codes_offline(
    member_page: Any, live_server: LiveServer, outbox: Outbox
) -> None:
    phone, member_id = demo_member(live_server, wanted="delivery_rider", skip=2)
    page = member_page()
    log_in(page, outbox, phone)
    station = station_for(live_server)
    page.wait_for_function("navigator.serviceWorker.controller !== null")
    online = shoot(page)
    assert page.is_hidden(tid("offline"))

    page.context.set_offline(True)
    try:
        response = page.reload()
        assert response is not None
        assert response.from_service_worker
        page.wait_for_selector("body[data-ready=true]")
        page.wait_for_selector(f"{tid('offline')}:visible")
        expect_text(page, "member-id", member_id)
        expect_text(page, "member-status", "在会")
        next_qr(page, online.proof_time)
        first = shoot(page)
        assert station.verify(first.text, at(first.proof_time)).member_id == member_id
        next_qr(page, first.proof_time)
        second = shoot(page)
        assert second.text != first.text
        station.verify(second.text, at(second.proof_time))
        assert page.is_hidden(tid("error"))  # offline is expected, not an error
    finally:
        page.context.set_offline(False)


# -- the presentation, byte for byte ------------------------------------------------------------


def seeded(label: str) -> keys.PrivateKey:
    return keys.PrivateKey.from_seed(hashlib.sha256(label.encode()).digest())


def test_page_presentation_matches_the_python_verifier_byte_for_byte(member_page: Any) -> None:
    """A credential issued in Python for the page's own holder key: the page's presentation,
    with zero, one and several disclosures, verifies, and is exactly the bytes
    ``verifier.credential`` builds (shortest-form CBOR, base45)."""
    page = member_page()
    public_raw = bytes(
        page.evaluate(
            """async () => {
                const app = await import("/static/member.js");
                return Array.from((await app.holderKey()).publicRaw);
            }"""
        )
    )
    holder = keys.PublicKey.from_bytes(public_raw)
    t0 = datetime.now(UTC).replace(microsecond=0)
    ring = Keyring()
    ring, _ = ring.rotate(Role.ROOT, t0 - timedelta(days=1), new_key=seeded("root"))
    ring, issuer = ring.rotate(
        Role.ISSUER, t0 - timedelta(days=1), scope="440000", new_key=seeded("issuer")
    )
    trust_list = verify_trust_list(
        sign_trust_list(ring, t0), ring.current(Role.ROOT, t0).public_key, t0
    )
    status = verify_status_list(
        sign_status_list(
            StatusList(100_000),
            uri="https://ul.example/status/440000",
            issuer_key=ring.private_key(issuer.kid),
            kid=issuer.kid,
            now=t0,
            ttl=timedelta(days=1),
        ),
        trust_list,
        t0,
    )
    issued = issue_credential(
        issuer_key=ring.private_key(issuer.kid),
        issuer=issuer,
        member_id="AAECAwQFBgcICQoLDA0ODw",
        home_union="440106-0012",
        holder_public_key=holder,
        groups=["delivery_rider", "hardship", "model_worker", "a-local-group"],
        status_index=70_000,
        issued_at=t0 - timedelta(hours=1),
        expires_at=t0 + timedelta(days=30),
    )
    names = sorted(issued.disclosures)
    for chosen, proof_time in [
        ([], int(t0.timestamp())),
        (["hardship"], int(t0.timestamp()) + 3),
        (names, int(t0.timestamp()) - 10),
        ([], 2**32 + 5),  # a time past 2106: the 8-byte integer form
        ([], 23),  # and the 1-byte one
    ]:
        disclosures = [issued.disclosures[g] for g in chosen]
        text = page.evaluate(
            """async ([token, disclosures, time]) => {
                const app = await import("/static/member.js");
                const key = await app.holderKey();
                const chosen = disclosures.map((d) => Uint8Array.from(d));
                return app.presentationText(Uint8Array.from(token), key.privateKey, chosen, time);
            }""",
            [list(issued.token), [list(d) for d in disclosures], proof_time],
        )
        data = b45decode(text.removeprefix(PREFIX))
        assert text == PREFIX + cred.b45encode(data)
        items = cbor2.loads(data)
        signature = items[2]
        # The exact bytes the Python side builds around the same signature.
        expected = (
            bytes([0x83 + len(chosen)])
            + issued.token
            + cbor2.dumps(proof_time)
            + cbor2.dumps(signature)
            + b"".join(cbor2.dumps(d) for d in disclosures)
        )
        assert data == expected
        message = cbor2.dumps(
            [HOLDER_PROOF_CONTEXT, issued.credential_hash, proof_time, None, disclosures]
        )
        holder.verify(signature, message)  # raises if not the holder's signature of this
        if 10**9 < proof_time < 2**32:
            seen = verify_presentation(
                text,
                trust_list=trust_list,
                status_lists={"440000": status},
                now=at(proof_time),
            )
            assert seen.groups == frozenset(chosen)
            assert seen.holder_key == holder
    # The page's holder message is the verifier's, byte for byte.
    message = page.evaluate(
        """async (hash) => {
            const app = await import("/static/member.js");
            return Array.from(app.holderMessage(Uint8Array.from(hash), 1767225600, []));
        }""",
        list(issued.credential_hash),
    )
    assert bytes(message) == cred._holder_message(issued.credential_hash, 1767225600, None, [])


def test_holder_key_is_not_extractable_and_survives_a_reload(member_page: Any) -> None:
    page = member_page()
    first = page.evaluate(
        """async () => {
            const app = await import("/static/member.js");
            const key = await app.holderKey();
            let exported = "refused";
            try {
                await crypto.subtle.exportKey("pkcs8", key.privateKey);
                exported = "exported";
            } catch (e) {
                exported = e.name;
            }
            return {
                raw: Array.from(key.publicRaw),
                extractable: key.privateKey.extractable,
                algorithm: key.privateKey.algorithm.name,
                exported,
            };
        }"""
    )
    assert first["extractable"] is False
    assert first["algorithm"] == "Ed25519"
    assert first["exported"] == "InvalidAccessError"
    assert len(first["raw"]) == 32
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    again = page.evaluate(
        """async () => {
            const app = await import("/static/member.js");
            return Array.from((await app.holderKey()).publicRaw);
        }"""
    )
    assert again == first["raw"]


def test_a_wrong_code_keeps_the_field_and_a_new_code_can_be_sent(
    member_page: Any, live_server: LiveServer, outbox: Outbox
) -> None:
    """The sign-in a rider meets (a walkthrough's findings): after a wrong code the field keeps
    the focus with the code selected, and says a dead code needs a new one; "send a new code"
    asks for one for the same number (the earlier one stops working). Once in, each program's
    "show the QR code" button has its own accessible name."""
    phone, _ = demo_member(live_server, wanted=None, skip=3)
    page = member_page()
    page.wait_for_selector(f"{tid('login')}:visible")
    first = len(outbox.codes.get(phone, []))
    page.fill(tid("login-phone"), phone)
    page.click(tid("phone-submit"))
    page.wait_for_selector(f"{tid('code-form')}:visible")
    old_code = outbox.wait_for(phone, first)
    wrong = "000000" if old_code != "000000" else "111111"
    page.fill(tid("login-code"), wrong)
    page.click(tid("code-submit"))
    expect_text(page, "error", "重新获取验证码")
    assert page.evaluate("document.activeElement.dataset.testid") == "login-code"
    selected = "document.activeElement.selectionEnd - document.activeElement.selectionStart"
    assert page.evaluate(selected) == 6
    sent = len(outbox.codes[phone])
    page.click(tid("resend-code"))
    new_code = outbox.wait_for(phone, sent)
    expect_text(page, "notice", "新的验证码已发送")
    assert page.input_value(tid("login-code")) == ""
    if old_code != new_code:  # the earlier code stopped working
        page.fill(tid("login-code"), old_code)
        page.click(tid("code-submit"))
        expect_text(page, "error", "验证码不正确")
    page.fill(tid("login-code"), new_code)
    page.click(tid("code-submit"))
    page.wait_for_selector(f"{tid('member')}:visible")
    page.wait_for_selector(f"{tid('entitlement-list')} [data-testid^='show-qr-']")
    names = page.eval_on_selector_all(
        f"{tid('entitlement-list')} [data-testid^='show-qr-']",
        "buttons => buttons.map((b) => b.getAttribute('aria-label'))",
    )
    assert len(names) >= 2
    assert len(set(names)) == len(names)
    assert all(n and n.startswith("出示“") for n in names)
