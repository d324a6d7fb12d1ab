"""The member app's benefits (``GET /app``): the entitlements with the quota left, the redemption
history, and each receipt verified in the page (``api/web/receipt.js``) against the log key the
page pinned on first use. Driven in real headless Chromium against a real server with the demo
data; the redemptions are made over HTTP as a station makes them: the page's QR code is read
from a screenshot (zxing-cpp) and sent by the demo station ``ST-DEMO-0001``, logged in with its
device key (the demo data directory's key file).

Tampering is injected by rewriting the API's answers in the browser (``page.route``): the page
must refuse a changed entry byte, a changed proof hash, a checkpoint signed by another key, and
list entries that do not match their receipt; a server that later serves another log key is
flagged and not trusted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import keys
from api.bootstrap import DEMO_STATION, NATIONAL_UNION_CODE, demo_station_key_file
from api.routes_web import STATIC_FILES
from ledger import programs, redemptions
from ledger.domain import SYSTEM
from tests.web.conftest import TIMEOUT_MS, LiveServer, PageProblems
from tests.web.test_member_app import (
    PHONE,
    WEB,
    Outbox,
    at,
    demo_member,
    expect_text,
    log_in,
    proof_time_of,
    read_qr,
    station_for,
    tid,
)
from verifier.checkpoint import Checkpoint, sign_checkpoint
from verifier.entry import make_entry
from verifier.errors import ReceiptError
from verifier.merkle import inclusion_proof, leaf_hash, root_from_leaf_hashes
from verifier.note import NoteSigner, NoteVerifier, Signature, split_note
from verifier.receipt import Receipt, verify_entry_receipt, verify_receipt

# Programs of this module, beside the demo's: a universal monthly one redeemable at union
# stations, and a targeted one (two groups, any one enough) redeemable at the demo station only.
WATER = "WEB-TEST-WATER"
RIDER = "WEB-TEST-RIDER"
RIDER_GROUPS = ["courier", "delivery_rider"]
SENSITIVE = {"hardship"}
FAILED = "未通过验证"


def _rules(**overrides: Any) -> dict[str, Any]:
    today = datetime.now(programs.CHINA).date()
    rules: dict[str, Any] = {
        "period": {
            "from": (today - timedelta(days=1)).isoformat(),
            "until": (today + timedelta(days=60)).isoformat(),
        },
        "budget": None,
        "max_quantity": 1,
    }
    rules.update(overrides)
    return rules


@pytest.fixture(scope="module")
def made_programs(live_server: LiveServer) -> dict[str, dict[str, Any]]:
    """The module's programs, created on the ledger as SYSTEM (through the app's sequencer)."""
    made = {
        WATER: _rules(
            name="驿站茶饮（测试）",
            kind="universal",
            quota={"count": 3, "per": "month"},
            unit_value=1500,
            where={"station_kinds": ["union_station"]},
        ),
        RIDER: _rules(
            name="骑手暖心包（测试）",
            kind="targeted",
            eligibility={"groups_any": RIDER_GROUPS},
            quota={"count": 1, "per": "program"},
            unit_value=8000,
            where={"stations": [DEMO_STATION]},
        ),
    }
    sequencer = live_server.app.state.services.sequencer
    for program, rules in made.items():
        sequencer.execute(
            lambda tx, p=program, r=rules: programs.create_program(
                tx, SYSTEM, program=p, owner=NATIONAL_UNION_CODE, rules=r
            )
        )
    return made


@pytest.fixture(scope="module")
def outbox(live_server: LiveServer) -> Outbox:
    box = Outbox()
    live_server.app.state.services.auth.sender = box
    return box


@pytest.fixture
def member_page(browser: Any, live_server: LiveServer) -> Iterator[Callable[..., Any]]:
    """Fresh phone-sized pages of the member app, each in its own context. ``block_sw``: no
    service worker (``page.route`` then sees every API request). After the test no page may
    have logged a script error or a CSP violation."""
    contexts = []
    seen = PageProblems([])

    def make(*, block_sw: bool = False) -> Any:
        context = browser.new_context(
            viewport=PHONE,
            locale="zh-CN",
            device_scale_factor=1,
            service_workers="block" if block_sw else "allow",
            accept_downloads=True,
        )
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        seen.watch(page)
        page.goto(live_server.url + "/app")
        page.wait_for_selector("body[data-ready=true]")
        return page

    try:
        yield make
        seen.check()
    finally:
        for context in contexts:
            context.close()


# -- the station --------------------------------------------------------------------------------


@dataclass
class DemoStation:
    """The demo station, logged in over HTTP with its device key, as its scanner app does."""

    url: str
    headers: dict[str, str]

    def redeem(self, presentation: str, program: str) -> dict[str, Any]:
        answer = httpx.post(
            f"{self.url}/v1/redemptions",
            json={
                "presentation": presentation,
                "program": program,
                "quantity": 1,
                "idempotency_key": str(uuid.uuid4()),
            },
            headers=self.headers,
        )
        assert answer.status_code == 201, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def reverse(self, redemption: int) -> None:
        answer = httpx.post(
            f"{self.url}/v1/redemptions/{redemption}/reverse", json={}, headers=self.headers
        )
        assert answer.status_code == 200, answer.text


def demo_station(live_server: LiveServer) -> DemoStation:
    settings = live_server.app.state.services.settings
    seed = bytes.fromhex(demo_station_key_file(settings).read_text().strip())
    device = keys.PrivateKey.from_seed(seed)
    url = live_server.url
    challenge = httpx.post(
        f"{url}/v1/auth/station/challenge", json={"station_id": DEMO_STATION}
    ).json()["challenge"]
    message = f"unionledger-station-login/1\n{DEMO_STATION}\n{challenge}".encode()
    answer = httpx.post(
        f"{url}/v1/auth/station/verify",
        json={
            "station_id": DEMO_STATION,
            "challenge": challenge,
            "signature": keys.b64url_encode(device.sign(message)),
        },
    )
    assert answer.status_code == 200, answer.text
    return DemoStation(url, {"Authorization": f"Bearer {answer.json()['access_token']}"})


def scan(page: Any, *, disclosed: str, after: int = 0) -> tuple[str, int]:
    """The QR text a station's camera reads once the page shows a code made after ``after``
    that discloses ``disclosed`` (a group, or "" for none)."""
    page.wait_for_function(
        """([g, t]) => {
            const qr = document.querySelector('[data-testid="qr"]');
            return qr.dataset.disclosed === g && Number(qr.dataset.proofTime) > t;
        }""",
        arg=[disclosed, after],
    )
    text, _, _ = read_qr(page.locator(tid("qr")).screenshot())
    return text, proof_time_of(text)


# -- page helpers -------------------------------------------------------------------------------


def refresh(page: Any) -> None:
    """Click "refresh" and wait until the page has read and stored the benefits again."""
    page.click(tid("refresh"))
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"refresh\"]').disabled", polling=50
    )


# Deletes the digests of the QR codes the member app showed ("shown:<day>" in its IndexedDB).
FORGET_SHOWN = """async () => {
    const db = await new Promise((ok, no) => {
        const r = indexedDB.open("unionledger-member", 1);
        r.onsuccess = () => ok(r.result);
        r.onerror = () => no(r.error);
    });
    const tx = db.transaction("state", "readwrite");
    const store = tx.objectStore("state");
    const keys = await new Promise((ok) => {
        const r = store.getAllKeys();
        r.onsuccess = () => ok(r.result);
    });
    const shown = keys.filter((k) => typeof k === "string" && k.startsWith("shown:"));
    shown.forEach((k) => store.delete(k));
    await new Promise((ok) => { tx.oncomplete = ok; });
    db.close();
    if (!shown.length) throw new Error("the app kept no shown codes");
}"""


def verify_in_page(page: Any, redemption: int) -> tuple[str, str]:
    """Click "verify" on a redemption: (status ok | warn | bad, the text the page shows)."""
    page.click(tid(f"verify-{redemption}"))
    done = page.wait_for_function(
        """(sel) => {
            const el = document.querySelector(sel);
            const status = el?.dataset.status;
            return ["ok", "warn", "bad"].includes(status) ? [status, el.textContent] : null;
        }""",
        arg=tid(f"verify-result-{redemption}"),
    )
    status, text = done.json_value()
    return str(status), str(text)


def fingerprint(key_string: str) -> str:
    digest = hashlib.sha256(key_string.encode()).hexdigest()[:32]
    return " ".join(textwrap.wrap(digest, 4))


def log_key(live_server: LiveServer) -> str:
    answer = httpx.get(live_server.url + "/v1/log/public-key")
    assert answer.status_code == 200
    return answer.text.removesuffix("\n")


def china_time(when: str) -> str:
    """HH:MM of an API time (RFC 3339 UTC) in China time, as the page shows it."""
    return (
        datetime.fromisoformat(when.replace("Z", "+00:00"))
        .astimezone(programs.CHINA)
        .strftime("%H:%M")
    )


def pick_group(held: set[str]) -> str:
    """The group the page discloses for RIDER: one it needs that the member has."""
    usable = sorted((g for g in RIDER_GROUPS if g in held), key=lambda g: (g in SENSITIVE, g))
    assert usable, held
    return usable[0]


def history_of(live_server: LiveServer, member_id: str) -> list[Any]:
    with live_server.app.state.services.engine.connect() as conn:
        return redemptions.history_of(conn, member_id)


def active_groups(live_server: LiveServer, member_id: str) -> set[str]:
    services = live_server.app.state.services
    today = datetime.now(programs.CHINA).date()
    with services.engine.connect() as conn:
        return set(services.members.active_groups(conn, member_id, today))


# -- served right: no browser needed ------------------------------------------------------------


def test_receipt_module_is_served_and_kept_offline(live_server: LiveServer) -> None:
    assert "receipt.js" in STATIC_FILES
    response = httpx.get(live_server.url + "/static/receipt.js")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    sw = (WEB / "sw.js").read_text(encoding="utf-8")
    assert '  "/static/receipt.js",\n' in sw
    assert 'const CACHE = "unionledger-member-v1"' not in sw  # bumped: the shell changed
    html = (WEB / "member.html").read_text(encoding="utf-8")
    assert '<link rel="modulepreload" href="/static/receipt.js">' in html
    js = (WEB / "receipt.js").read_text(encoding="utf-8")
    assert re.search(r"https?://", js) is None
    assert ".innerHTML" not in js
    assert "import " not in js  # WebCrypto only: nothing else to trust
    assert 'crypto.subtle.verify({ name: "Ed25519" }' in js


def test_every_verification_failure_is_translated() -> None:
    messages = json.loads((WEB / "member-i18n.json").read_text(encoding="utf-8"))
    code = (WEB / "receipt.js").read_text(encoding="utf-8")
    code += (WEB / "member.js").read_text(encoding="utf-8")
    failures = set(re.findall(r'ReceiptError\("([a-z-]+)"', code)) | {"unexpected"}
    assert {"root-mismatch", "other-key", "bad-signature", "entry-member"} <= failures
    for lang in ("zh-CN", "en"):
        missing = sorted(f for f in failures if f"receipt.{f}" not in messages[lang])
        assert not missing, (lang, missing)
    for kind in ("union_station", "truck_driver_home", "mother_infant_room", "cultural_palace"):
        assert f"skind.{kind}" in messages["zh-CN"]
    for per in programs.Per:
        assert f"ent.per.{per.value}" in messages["zh-CN"]
    assert "Verified against checkpoint of size {size}" in messages["en"]["receipt.ok"]


# -- the verifier in the page agrees with verifier/receipt.py -----------------------------------

VERIFY_ALL = """async ([keyText, docs]) => {
    const r = await import("/static/receipt.js");
    const key = await r.parseVerifierKey(keyText);
    const out = [];
    for (const doc of docs) {
        try {
            out.push("ok " + (await r.verifyReceipt(doc, key)).size);
        } catch (e) {
            out.push(e.code ?? String(e));
        }
    }
    return out;
}"""


def _python_verdict(doc: dict[str, Any], verifier: NoteVerifier) -> str:
    try:
        verified = verify_receipt(Receipt.from_json(json.dumps(doc)), verifier)
    except ReceiptError:
        return "refused"
    return f"ok {verified.checkpoint.size}"


def _tree(leaves: list[bytes]) -> tuple[bytes, Callable[[int, int], bytes]]:
    hashes = [leaf_hash(leaf) for leaf in leaves]

    def hash_at(level: int, index: int) -> bytes:
        return root_from_leaf_hashes(hashes[index << level : (index + 1) << level])

    return root_from_leaf_hashes(hashes), hash_at


def test_page_verifier_agrees_with_the_python_verifier(member_page: Any) -> None:
    """Every leaf of trees of 1 to 17 leaves verifies in the page as in Python; a wrong index,
    a proof one hash short or long, a flipped byte, each is refused by both."""
    signer = NoteSigner("web.test/log", keys.PrivateKey.from_seed(hashlib.sha256(b"l").digest()))
    verifier = signer.verifier()
    docs = []
    for size in range(1, 18):
        leaves = [f"entry {i} of {size}".encode() for i in range(size)]
        root, hash_at = _tree(leaves)
        note = sign_checkpoint(Checkpoint(signer.name, size, root), signer)
        for index in range(size):
            proof = inclusion_proof(index, size, hash_at)
            good = json.loads(Receipt(index, leaves[index], tuple(proof), note).to_json())
            docs.append(good)
            docs.append({**good, "index": (index + 1) % size} if size > 1 else {**good, "index": 1})
            if proof:
                docs.append({**good, "inclusion": good["inclusion"][:-1]})
                flipped = bytearray(proof[-1])
                flipped[0] ^= 0x80
                docs.append({**good, "inclusion": [*good["inclusion"][:-1], _b64(flipped)]})
            docs.append({**good, "inclusion": [*good["inclusion"], _b64(bytes(32))]})
            docs.append({**good, "entry": _b64(leaves[index] + b" ")})
    page = member_page(block_sw=True)
    seen = page.evaluate(VERIFY_ALL, [verifier.key_string() + "\n", docs])
    expected = [_python_verdict(doc, verifier) for doc in docs]
    assert sum(v.startswith("ok") for v in expected) == sum(range(1, 18))
    assert [s if s.startswith("ok") else "refused" for s in seen] == expected
    assert {s for s in seen if not s.startswith("ok")} <= {
        "index-outside",
        "proof-length",
        "root-mismatch",
    }


def _b64(data: bytes | bytearray) -> str:
    return base64.b64encode(bytes(data)).decode()


VERIFY_REDEMPTION = """async ([keyText, doc, expected]) => {
    const r = await import("/static/receipt.js");
    const key = await r.parseVerifierKey(keyText);
    try {
        const v = await r.verifyRedemptionReceipt(doc, key, expected);
        return ["ok", v.size, v.entry.body.member];
    } catch (e) {
        return [e.code ?? String(e), JSON.stringify(e.params ?? {})];
    }
}"""


def test_page_checks_the_entry_is_this_members_redemption(member_page: Any) -> None:
    signer = NoteSigner("web.test/log", keys.PrivateKey.from_seed(hashlib.sha256(b"m").digest()))
    body = {"member": "M-ONE", "program": "P-1", "station": "ST-1", "quantity": 1, "value": 500}
    prev = bytes(32)
    entries = []
    # Leaf 2 is a redemption entry that claims to be entry 7.
    for kind, claimed in [
        ("ProgramCreated", 0),
        ("RedemptionRecorded", 1),
        ("RedemptionRecorded", 7),
    ]:
        entry = make_entry(
            index=claimed,
            time="2026-11-25T08:46:12.500000Z",
            type=kind,
            actor="station:ST-1",
            body=body,
            prev=prev,
        )
        entries.append(entry.data)
        prev = hashlib.sha256(entry.data).digest()
    root, hash_at = _tree(entries)
    note = sign_checkpoint(Checkpoint(signer.name, 3, root), signer)

    def receipt(index: int) -> dict[str, Any]:
        proof = tuple(inclusion_proof(index, 3, hash_at))
        return dict(json.loads(Receipt(index, entries[index], proof, note).to_json()))

    def listed(index: int, **changes: Any) -> dict[str, Any]:
        return {"redemption": index, **{k: body[k] for k in body if k != "member"}, **changes}

    page = member_page(block_sw=True)
    key = signer.verifier().key_string()

    def check(doc: dict[str, Any], member: str, row: dict[str, Any]) -> list[Any]:
        expected = {"memberId": member, "redemption": row}
        return list(page.evaluate(VERIFY_REDEMPTION, [key, doc, expected]))

    assert check(receipt(1), "M-ONE", listed(1)) == ["ok", "3", "M-ONE"]
    assert check(receipt(1), "M-TWO", listed(1))[0] == "entry-member"
    assert check(receipt(0), "M-ONE", listed(0))[0] == "entry-type"
    assert check(receipt(1), "M-ONE", listed(0))[0] == "not-this"  # another entry's receipt
    assert check(receipt(1), "M-ONE", listed(1, value=501)) == [
        "entry-mismatch",
        '{"field":"value"}',
    ]
    assert check(receipt(1), "M-ONE", listed(1, station="ST-2"))[0] == "entry-mismatch"
    assert check(receipt(2), "M-ONE", listed(2))[0] == "entry-index"  # says 7, is leaf 2
    with pytest.raises(ReceiptError, match="says index 7"):  # as the Python verifier says
        verify_entry_receipt(Receipt.from_json(json.dumps(receipt(2))), signer.verifier())

    # The log key string: its key id is a checksum; the fingerprint is SHA-256 of the string.
    keyinfo = page.evaluate(
        """async (text) => {
            const r = await import("/static/receipt.js");
            const key = await r.parseVerifierKey(text);
            let bad = null;
            try {
                const other = (m, id) => (id === "00000000" ? "+11111111+" : "+00000000+");
                await r.parseVerifierKey(text.replace(/\\+([0-9a-f]{8})\\+/, other));
            } catch (e) {
                bad = e.code;
            }
            return [key.name, r.hex(key.keyId), key.fingerprint, bad];
        }""",
        key + "\n",
    )
    assert keyinfo == [signer.name, signer.key_id.hex(), fingerprint(key), "bad-key"]


# -- the member's benefits, end to end ----------------------------------------------------------


def test_entitlements_history_and_receipts_verified_in_the_page(
    member_page: Any,
    live_server: LiveServer,
    outbox: Outbox,
    made_programs: dict[str, Any],
    tmp_path: Path,
) -> None:
    phone, member_id = demo_member(live_server, wanted="delivery_rider")
    group = pick_group(active_groups(live_server, member_id))
    key_string = log_key(live_server)
    page = member_page()
    log_in(page, outbox, phone)

    # What the member may redeem: value in yuan, quota left, period, renewal, where, until.
    expect_text(page, f"entitlement-{RIDER}", "骑手暖心包（测试）")
    expect_text(page, f"entitlement-{RIDER}", "每份 ¥80.00")
    expect_text(page, f"entitlement-{RIDER}-remaining", "剩余 1/1 次 · 整个活动期间")
    expect_text(page, f"entitlement-{RIDER}", DEMO_STATION)
    until = made_programs[RIDER]["period"]["until"]
    expect_text(page, f"entitlement-{RIDER}", f"截止日期：{until}")
    expect_text(page, f"entitlement-{WATER}", "每份 ¥15.00")
    expect_text(page, f"entitlement-{WATER}-remaining", "剩余 3/3 次 · 每月")
    expect_text(page, f"entitlement-{WATER}", "恢复次数")  # the first of next month
    expect_text(page, f"entitlement-{WATER}", "领取地点：工会驿站")
    expect_text(page, "entitlements-updated", "数据截至")
    if not history_of(live_server, member_id):  # the demo's members have none so far
        expect_text(page, "history-list", "还没有领取记录")
    # The log key is pinned on first sight and shown as a fingerprint, with a help text.
    expect_text(page, "log-key-fingerprint", fingerprint(key_string))
    expect_text(page, "log-key-pinned", "第一次见到并记住")
    assert page.is_hidden(tid("log-key-changed"))
    page.click(f"{tid('log-key-help')} summary")
    expect_text(page, "log-key-help", "首次使用即信任")
    expect_text(page, "log-key-string", key_string)

    # "Show the QR code for this program": the selector discloses the group the rule needs.
    page.click(tid(f"show-qr-{RIDER}"))
    expect_text(page, "qr-program", "用于领取：骑手暖心包（测试）")
    assert page.input_value(tid("show-for")) == group
    text, rider_time = scan(page, disclosed=group)
    assert station_for(live_server).verify(text, at(rider_time)).groups == {group}
    station = demo_station(live_server)
    rider = station.redeem(text, RIDER)
    assert rider["remaining"] == 0
    assert rider["receipt"] is not None

    page.click(tid(f"show-qr-{WATER}"))  # universal: membership only
    assert page.input_value(tid("show-for")) == ""
    text, _ = scan(page, disclosed="", after=rider_time)
    water = station.redeem(text, WATER)

    # Back in the app: the quota left went down, the history lists both, newest first.
    refresh(page)
    expect_text(page, f"entitlement-{RIDER}-remaining", "剩余 0/1 次")
    assert page.is_disabled(tid(f"show-qr-{RIDER}"))
    expect_text(page, f"entitlement-{WATER}-remaining", "剩余 2/3 次")
    ids = page.eval_on_selector_all(
        f"{tid('history-list')} > li", "items => items.map((li) => li.dataset.testid)"
    )
    assert ids[:2] == [f"redemption-{water['redemption']}", f"redemption-{rider['redemption']}"]
    row = f"redemption-{rider['redemption']}"
    expect_text(page, row, "骑手暖心包（测试）")
    expect_text(page, row, "¥80.00")
    expect_text(page, row, f"服务点 {DEMO_STATION} · 数量 1")
    expect_text(page, row, f"{china_time(rider['at'])}（北京时间）")
    assert page.get_attribute(tid(row), "data-reversed") == "false"

    # "Verify": in the page, against the pinned key only.
    status, said = verify_in_page(page, rider["redemption"])
    assert status == "ok", said
    size = int(re.search(r"规模为 (\d+) 的检查点", said).group(1))  # type: ignore[union-attr]
    assert size > rider["redemption"]

    # "Download receipt": the JSON file that `unionledger verify-receipt FILE` checks.
    with page.expect_download() as download:
        page.click(tid(f"download-{rider['redemption']}"))
    assert download.value.suggested_filename == f"unionledger-receipt-{rider['redemption']}.json"
    saved = tmp_path / "receipt.json"
    download.value.save_as(saved)
    receipt_text = saved.read_text(encoding="utf-8")
    receipt = Receipt.from_json(receipt_text)
    assert receipt.to_json() == receipt_text  # keys sorted, no whitespace: as the server writes
    entry, checkpoint = verify_entry_receipt(receipt, NoteVerifier.from_key_string(key_string))
    assert checkpoint.size == size
    assert entry.index == rider["redemption"]
    assert entry.type == "RedemptionRecorded"
    assert entry.body["member"] == member_id
    assert entry.body["program"] == RIDER

    # In English too.
    page.click(tid("lang-switch"))
    expect_text(page, f"verify-result-{rider['redemption']}", f"checkpoint of size {size}")
    expect_text(page, f"entitlement-{WATER}-remaining", "2 of 3 left · per month")
    expect_text(page, row, "(China time)")
    page.click(tid("lang-switch"))
    expect_text(page, f"entitlement-{WATER}-remaining", "剩余 2/3 次")

    # A reversal: the history says so, the quota comes back, the receipt still verifies.
    station.reverse(water["redemption"])
    refresh(page)
    reversed_row = f"redemption-{water['redemption']}"
    page.wait_for_selector(f'{tid(reversed_row)}[data-reversed="true"]')
    expect_text(page, f"{reversed_row}-reversed", "已撤销")
    expect_text(page, f"entitlement-{WATER}-remaining", "剩余 3/3 次")
    status, said = verify_in_page(page, water["redemption"])
    assert status == "ok", said
    assert page.is_hidden(tid("error"))
    page.screenshot(path=str(tmp_path / "member-benefits.png"), full_page=True)
    for card in ("entitlements", "history"):
        page.locator(tid(card)).screenshot(path=str(tmp_path / f"member-{card}.png"))

    # Step 2 of programs.md section 12: "ok" above also said the code was one this device
    # showed. With the digests it kept forgotten, the same receipt is in the log, but made with
    # a code not shown here (another device, cleared data, or a copy of the card).
    page.evaluate(FORGET_SHOWN)
    status, said = verify_in_page(page, rider["redemption"])
    assert status == "warn", said
    assert "不是本机显示的" in said
    assert re.search(r"核对了规模为 \d+ 的检查点", said), said


def test_history_and_entitlements_display_and_verify_offline(
    member_page: Any, live_server: LiveServer, outbox: Outbox, made_programs: dict[str, Any]
) -> None:
    phone, member_id = demo_member(live_server, wanted="delivery_rider", skip=1)
    page = member_page()
    log_in(page, outbox, phone)
    expect_text(page, f"entitlement-{WATER}-remaining", "剩余 3/3 次")
    page.click(tid(f"show-qr-{WATER}"))
    text, _ = scan(page, disclosed="")
    water = demo_station(live_server).redeem(text, WATER)
    refresh(page)
    expect_text(page, f"entitlement-{WATER}-remaining", "剩余 2/3 次")
    page.wait_for_selector(tid(f"verify-{water['redemption']}"))
    page.wait_for_function("navigator.serviceWorker.controller !== null")

    page.context.set_offline(True)
    try:
        response = page.reload()
        assert response is not None
        assert response.from_service_worker
        page.wait_for_selector("body[data-ready=true]")
        page.wait_for_selector(f"{tid('offline')}:visible")
        expect_text(page, "member-id", member_id)
        # From IndexedDB, saying as of when.
        expect_text(page, "entitlements-updated", "离线：显示本机保存的数据，截至")
        expect_text(page, "history-updated", "截至")
        expect_text(page, f"entitlement-{WATER}-remaining", "剩余 2/3 次")
        expect_text(page, f"entitlement-{RIDER}-remaining", "剩余 1/1 次")
        expect_text(page, f"redemption-{water['redemption']}", "驿站茶饮（测试）")
        # The receipt verifies offline: the pinned key and the receipt are both on the device.
        status, said = verify_in_page(page, water["redemption"])
        assert status == "ok", said
        # The program's rule is kept too: its QR code discloses the right group offline.
        page.click(tid(f"show-qr-{RIDER}"))
        group = pick_group(active_groups(live_server, member_id))
        assert page.input_value(tid("show-for")) == group
        assert page.is_hidden(tid("error"))  # offline is expected, not an error
    finally:
        page.context.set_offline(False)


# -- tampering: the page refuses what does not verify ------------------------------------------


def _flip(data: bytes, at: int) -> bytes:
    changed = bytearray(data)
    changed[at] ^= 0x01
    return bytes(changed)


def test_tampered_receipts_and_a_changed_log_key_are_refused(
    member_page: Any, live_server: LiveServer, outbox: Outbox, made_programs: dict[str, Any]
) -> None:
    phone, _ = demo_member(live_server, wanted="delivery_rider", skip=2)
    key_string = log_key(live_server)
    genuine = NoteVerifier.from_key_string(key_string)
    attacker = NoteSigner(genuine.name, keys.PrivateKey.generate())
    other_entry = json.loads(live_server.app.state.services.reader.receipt(0).to_json())

    page = member_page(block_sw=True)  # every API request reaches page.route
    log_in(page, outbox, phone)
    page.click(tid(f"show-qr-{WATER}"))
    text, _ = scan(page, disclosed="")
    water = demo_station(live_server).redeem(text, WATER)
    target = water["redemption"]
    refresh(page)
    assert verify_in_page(page, target)[0] == "ok"

    def entry_byte(row: dict[str, Any]) -> None:
        data = base64.b64decode(row["receipt"]["entry"])
        row["receipt"]["entry"] = _b64(_flip(data, data.index(b'"value":') + 8))

    def proof_hash(row: dict[str, Any]) -> None:
        proof = row["receipt"]["inclusion"]
        proof[0] = _b64(_flip(base64.b64decode(proof[0]), 0))

    def other_key(row: dict[str, Any]) -> None:
        body, _ = split_note(row["receipt"]["checkpoint"])
        row["receipt"]["checkpoint"] = attacker.sign(body)

    def bad_signature(row: dict[str, Any]) -> None:
        body, (sig, *_) = split_note(row["receipt"]["checkpoint"])
        forged = Signature(sig.name, sig.key_id, _flip(sig.signature, 10))
        row["receipt"]["checkpoint"] = body + "\n" + forged.line()

    def another_entry(row: dict[str, Any]) -> None:
        row["receipt"] = other_entry  # a genuine receipt, of entry 0

    def listed_value(row: dict[str, Any]) -> None:
        row["value"] += 100  # the list lies; the receipt is genuine

    tamper: dict[str, Callable[[dict[str, Any]], None] | None] = {"with": None}

    def rewrite(route: Any) -> None:
        response = route.fetch()
        rows = response.json()
        for row in rows:
            if row["redemption"] == target and tamper["with"] is not None:
                tamper["with"](row)
        route.fulfill(response=response, json=rows)

    page.route("**/v1/members/me/redemptions*", rewrite)
    cases = [
        (entry_byte, "根哈希与检查点不符"),
        (proof_hash, "根哈希与检查点不符"),
        (other_key, "由另一把密钥签名"),
        (bad_signature, "签名无效"),
        (another_entry, "另一条记录（序号 0）"),
        (listed_value, "不一致（value）"),
    ]
    for change, reason in cases:
        tamper["with"] = change
        refresh(page)
        status, said = verify_in_page(page, target)
        assert status == "bad", (change.__name__, said)
        assert said.startswith(FAILED), said
        assert reason in said, (change.__name__, said)
        if change in (entry_byte, proof_hash, other_key, bad_signature):
            row = next(r for r in page.evaluate(STORED_HISTORY) if r["redemption"] == target)
            with pytest.raises(ReceiptError):  # the Python verifier refuses it too
                verify_entry_receipt(Receipt.from_json(json.dumps(row["receipt"])), genuine)

    # The server switches to another key and signs with it: flagged, and not trusted.
    def attacker_key(route: Any) -> None:
        route.fulfill(
            status=200,
            content_type="text/plain; charset=utf-8",
            body=attacker.verifier().key_string() + "\n",
        )

    page.route("**/v1/log/public-key", attacker_key)
    tamper["with"] = other_key
    refresh(page)
    page.wait_for_selector(f"{tid('log-key-changed')}:visible")
    expect_text(page, "log-key-changed", fingerprint(attacker.verifier().key_string()))
    expect_text(page, "log-key-fingerprint", fingerprint(key_string))  # still the pinned one
    status, said = verify_in_page(page, target)
    assert (status, "由另一把密钥签名" in said) == ("bad", True), said
    tamper["with"] = None  # genuine receipts still verify against the pinned key
    refresh(page)
    assert verify_in_page(page, target)[0] == "ok"

    # Trusting the new key is the member's explicit choice; genuine receipts then fail.
    page.click(tid("log-key-repin"))
    page.wait_for_selector(tid("log-key-changed"), state="hidden")
    expect_text(page, "log-key-fingerprint", fingerprint(attacker.verifier().key_string()))
    status, said = verify_in_page(page, target)
    assert (status, "由另一把密钥签名" in said) == ("bad", True), said

    # Signing out forgets the member's data on this device, but not the pinned log key.
    page.click(tid("logout"))
    page.wait_for_selector(f"{tid('login')}:visible")
    stored = page.evaluate(STORED_KEY)
    assert stored == attacker.verifier().key_string()
    assert page.evaluate(STORED_HISTORY) == []


STORED = """(name) => new Promise((resolve, reject) => {
    const open = indexedDB.open("unionledger-member", 1);
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
        const get = open.result.transaction("state").objectStore("state").get(name);
        get.onsuccess = () => resolve(get.result ?? null);
        get.onerror = () => reject(get.error);
    };
})"""
STORED_KEY = f"async () => ((await ({STORED})('log-key')) ?? {{}}).text ?? null"
STORED_HISTORY = f"async () => ((await ({STORED})('benefits')) ?? {{}}).history ?? []"
