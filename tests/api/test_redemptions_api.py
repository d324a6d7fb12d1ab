"""Redemption over HTTP: a station scans a member's QR code and redeems a program; every rule
refuses with its own problem type and writes nothing; retries are idempotent; receipts verify
offline; reversals give quota back."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import keys
from api.cli import main
from api.routes_programs import RedemptionOut
from api.settings import ConfigError, Settings
from ledger import members
from ledger.domain import SYSTEM
from ledger.projections import compare, default_projections
from ledger.redemptions import budget_used
from tests.api.accounts import add_accounts, login
from tests.api.redemption_world import World
from verifier.entry import parse_entry
from verifier.note import NoteSigner
from verifier.receipt import Receipt, verify_entry_receipt


def refused(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{slug}", body
    return body


def revoked(response: Any) -> None:
    """A revoked credential is refused by the status list (when the server's cached copy is
    newer than the revocation) or by the command's own check against the credentials table."""
    if response.status_code == 422:
        assert refused(response, 422, "presentation-refused")["reason"] == "credential-revoked"
    else:
        refused(response, 409, "credential-revoked")


def recorded(world: World) -> list[dict[str, Any]]:
    reader = world.services.reader
    return [
        e.body
        for e in map(parse_entry, reader.entries(0, reader.size()))
        if e.type == "RedemptionRecorded"
    ]


def test_redeem_with_a_receipt_that_verifies_offline(world: tuple[World, TestClient]) -> None:
    w, client = world
    w.program("NAT-SUMMER")
    station = w.station_token(client, "ST-BJ-2")
    request = w.redeem_body("NAT-SUMMER", "k-1")
    answer = client.post("/v1/redemptions", json=request, headers=station)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["member_id"], body["value"], body["remaining"]) == (w.member_id, 5000, 0)
    assert (body["funding_union"], body["operating_union"], body["home_union"]) == (
        "100000",
        "110105-0001",
        "110105-0001",
    )
    # Written without the model (orjson), the answer is byte for byte what the model writes.
    assert RedemptionOut.model_validate_json(answer.content).model_dump_json() == answer.text
    retried = client.post("/v1/redemptions", json=request, headers=station)
    assert retried.status_code == 200  # the earlier answer, from the model
    assert {**retried.json(), "repeated": False, "receipt": None, "remaining": 0} == {
        **body,
        "receipt": None,
    }
    receipt = Receipt.from_json(json.dumps(body["receipt"]))
    entry, checkpoint = verify_entry_receipt(receipt, w.services.log_verifier())
    assert entry.type == "RedemptionRecorded"
    assert entry.index == body["redemption"]
    assert checkpoint.size > entry.index
    # The member sees it, with the same receipt.
    mine = client.get("/v1/members/me/redemptions", headers=w.member_token(client)).json()
    assert [r["redemption"] for r in mine] == [body["redemption"]]
    # No personal data, no presentation text in the event: hashes and pseudonyms.
    (event,) = recorded(w)
    assert set(event) == {
        "program",
        "version",
        "member",
        "station",
        "quantity",
        "value",
        "funding",
        "operating",
        "home",
        "period",
        "presentation",
        "idempotency",
    }


def test_retries_are_idempotent_and_replays_refused(world: tuple[World, TestClient]) -> None:
    w, client = world
    w.program("DAILY-WATER", quota={"count": 3, "per": "day"}, unit_value=0)
    w.program("OTHER", quota={"count": 3, "per": "day"}, unit_value=0)
    station = w.station_token(client, "ST-BJ-1")
    first_body = w.redeem_body("DAILY-WATER", "key-A")
    first = client.post("/v1/redemptions", json=first_body, headers=station)
    assert first.status_code == 201, first.text
    again = client.post("/v1/redemptions", json=first_body, headers=station)
    assert again.status_code == 200
    assert again.json()["redemption"] == first.json()["redemption"]
    assert again.json()["repeated"] is True
    changed = client.post(
        "/v1/redemptions", json={**first_body, "program": "OTHER"}, headers=station
    )
    refused(changed, 409, "idempotency-conflict")
    replayed = client.post(
        "/v1/redemptions", json={**first_body, "idempotency_key": "key-B"}, headers=station
    )
    refused(replayed, 409, "presentation-replayed")
    assert len(recorded(w)) == 1
    # A retry whose QR code no longer verifies is still answered from the record: the retry is
    # recognised before the presentation is checked again.
    broken = {**first_body, "challenge": keys.b64url_encode(b"another challenge")}
    assert client.post("/v1/redemptions", json=broken, headers=station).status_code == 200


def test_each_rule_refuses_with_its_own_problem(world: tuple[World, TestClient]) -> None:
    w, client = world
    today_plus = (keys.utc_now() + timedelta(days=10)).date().isoformat()
    w.program("ONCE")
    w.program("DAILY", quota={"count": 2, "per": "day"}, unit_value=100, max_quantity=2)
    w.program("HARDSHIP", kind="targeted", eligibility={"groups_any": ["hardship"]})
    w.program("TRUCKERS", where={"station_kinds": ["truck_driver_home"]})
    w.program("LATER", period={"from": today_plus, "until": today_plus})
    w.program("BEIJING-ONLY", owner="110000", where={"subtree": "110105-0002"})
    w.program("TINY", budget=5000)
    w.program("NAT-PACK")
    w.program("PROV-PACK", owner="110000", no_stack_with=["NAT-PACK"])
    station = w.station_token(client, "ST-BJ-1")

    def go(program: str, key: str, **extra: Any) -> Any:
        return client.post(
            "/v1/redemptions", json=w.redeem_body(program, key, **extra), headers=station
        )

    assert go("ONCE", "1").status_code == 201
    refused(go("ONCE", "2"), 409, "quota-used")
    assert go("DAILY", "3", quantity=2).status_code == 201
    quota = refused(go("DAILY", "4"), 409, "quota-used")
    assert quota["quota"] == 2
    assert quota["renews_at"] > keys.utc_now().isoformat()[:10]
    refused(go("DAILY", "5", quantity=3), 422, "invalid-quantity")
    refused(go("HARDSHIP", "6"), 409, "not-eligible")
    refused(go("TRUCKERS", "7"), 409, "not-redeemable-here")
    refused(go("LATER", "8"), 409, "program-not-open")
    refused(go("BEIJING-ONLY", "9"), 409, "not-redeemable-here")
    refused(go("NOPE", "10"), 409, "program-not-open")
    assert go("TINY", "11").status_code == 201  # 5000 of 5000
    assert go("NAT-PACK", "12").status_code == 201
    refused(go("PROV-PACK", "13"), 409, "not-stackable")
    # The member's entitlements say so before a station refuses (programs.md section 10).
    listed = {
        e["program"]: e
        for e in client.get("/v1/members/me/entitlements", headers=w.member_token(client)).json()
    }
    assert listed["PROV-PACK"]["not_stackable_with"] == "NAT-PACK"
    assert listed["PROV-PACK"]["remaining"] == 1  # its own quota is untouched
    assert listed["NAT-PACK"]["not_stackable_with"] is None
    assert listed["ONCE"]["not_stackable_with"] is None
    stale_body = w.redeem_body("DAILY", "14")
    stale_body["presentation"] = w.qr(keys.utc_now() - timedelta(minutes=3))[0]
    stale_body["challenge"] = None
    stale = refused(
        client.post("/v1/redemptions", json=stale_body, headers=station),
        422,
        "presentation-refused",
    )
    assert stale["reason"] == "holder-proof-stale"
    # Hardship added: the credential is re-issued, the old QR refused, the new one eligible.
    w.run(lambda tx: w.services.members.add_group(tx, SYSTEM, w.member_id, "hardship"))
    revoked(go("HARDSHIP", "15"))
    w.register_holder(client)
    assert go("HARDSHIP", "16").status_code == 201
    assert len(recorded(w)) == 5
    # Every refusal wrote nothing; the tables equal a replay of the chain.
    assert compare(w.services.engine, default_projections()) == []


def test_budget_allocations_fund_the_members_province(world: tuple[World, TestClient]) -> None:
    w, client = world
    w.program("ALLOC", budget=20000, allocations={"110000": 5000})
    station = w.station_token(client, "ST-BJ-1")
    ok = client.post("/v1/redemptions", json=w.redeem_body("ALLOC", "a"), headers=station)
    assert ok.json()["funding_union"] == "110000"
    client.post(f"/v1/redemptions/{ok.json()['redemption']}/reverse", json={}, headers=station)
    second = client.post("/v1/redemptions", json=w.redeem_body("ALLOC", "b"), headers=station)
    assert second.status_code == 201  # the reversal gave the allocation back
    w.run(
        lambda tx: w.services.redemptions.reverse(
            tx, SYSTEM, second.json()["redemption"], reason="test"
        )
    )
    w.run(lambda tx: w.services.members.transfer(tx, SYSTEM, w.member_id, "110105-0002"))
    w.register_holder(client)
    third = client.post("/v1/redemptions", json=w.redeem_body("ALLOC", "c"), headers=station)
    assert third.json()["funding_union"] == "110000"
    with w.services.engine.connect() as conn:
        assert budget_used(conn, "ALLOC") == {"110000": 5000}


def test_reversal_rules(world: tuple[World, TestClient]) -> None:
    w, client = world
    w.program("ONCE")
    station = w.station_token(client, "ST-BJ-1")
    other = w.station_token(client, "ST-SH-1")
    done = client.post("/v1/redemptions", json=w.redeem_body("ONCE", "r1"), headers=station).json()
    path = f"/v1/redemptions/{done['redemption']}/reverse"
    refused(client.post(path, json={}, headers=other), 404, "unknown-redemption")
    assert client.post(path, json={"reason": "wrong person"}, headers=station).status_code == 200
    refused(client.post(path, json={}, headers=station), 409, "already-reversed")
    again = client.post("/v1/redemptions", json=w.redeem_body("ONCE", "r2"), headers=station)
    assert again.status_code == 201  # the quota came back
    shown = client.get(f"/v1/redemptions/{done['redemption']}", headers=station).json()
    assert shown["reversed_at"] is not None


def test_an_auditor_does_not_learn_hardship_from_entitlements(
    world: tuple[World, TestClient],
) -> None:
    """Auditors never see a member's sensitive groups (docs/auth.md section 5): a program for
    hardship listed among the member's entitlements would tell it, so an auditor's answer leaves
    such programs out. The member and an official of their subtree still see it."""
    w, client = world
    w.program("ONCE")
    w.program("HARDSHIP", kind="targeted", eligibility={"groups_any": ["hardship"]})
    w.run(lambda tx: w.services.members.add_group(tx, SYSTEM, w.member_id, "hardship"))
    add_accounts(
        w.services.engine, [("official-bj", "official", "110000"), ("auditor-1", "auditor", None)]
    )

    def programs(headers: dict[str, str], path: str) -> set[str]:
        answer = client.get(path, headers=headers)
        assert answer.status_code == 200, answer.text
        return {e["program"] for e in answer.json()}

    theirs = f"/v1/members/{w.member_id}/entitlements"
    as_official = {"Authorization": f"Bearer {login(client, 'official-bj')}"}
    as_auditor = {"Authorization": f"Bearer {login(client, 'auditor-1')}"}
    assert programs(w.member_token(client), "/v1/members/me/entitlements") == {"ONCE", "HARDSHIP"}
    assert programs(as_official, theirs) == {"ONCE", "HARDSHIP"}
    assert programs(as_auditor, theirs) == {"ONCE"}


def test_officials_and_stations_list_the_redemptions_they_may_reverse(
    world: tuple[World, TestClient],
) -> None:
    """GET /v1/redemptions: newest first, paged by `before`; a station sees its own, an
    official those touching their subtree, an auditor all; then the official reverses one."""
    w, client = world
    w.program("DAILY", quota={"count": 5, "per": "day"}, unit_value=100)
    add_accounts(
        w.services.engine,
        [
            ("official-bj", "official", "110000"),
            ("official-sh", "official", "310000"),
            ("auditor-1", "auditor", None),
        ],
    )
    made = []
    for i, station in enumerate(["ST-BJ-1", "ST-BJ-2", "ST-BJ-1"]):
        answer = client.post(
            "/v1/redemptions",
            json=w.redeem_body("DAILY", f"k{i}"),
            headers=w.station_token(client, station),
        )
        assert answer.status_code == 201, answer.text
        made.append(answer.json()["redemption"])

    def listed(headers: dict[str, str], **query: Any) -> dict[str, Any]:
        answer = client.get("/v1/redemptions", params=query, headers=headers)
        assert answer.status_code == 200, answer.text
        page: dict[str, Any] = answer.json()
        return page

    bj = {"Authorization": f"Bearer {login(client, 'official-bj')}"}
    sh = {"Authorization": f"Bearer {login(client, 'official-sh')}"}
    auditor = {"Authorization": f"Bearer {login(client, 'auditor-1')}"}
    newest_first = sorted(made, reverse=True)
    assert [x["redemption"] for x in listed(bj)["items"]] == newest_first
    assert [x["redemption"] for x in listed(auditor)["items"]] == newest_first
    assert listed(sh)["items"] == []  # nothing of theirs: not funding, operating or home
    own = listed(w.station_token(client, "ST-BJ-1"))["items"]
    assert [x["redemption"] for x in own] == [made[2], made[0]]
    assert listed(w.station_token(client, "ST-BJ-1"), station="ST-BJ-2")["items"] == []
    first = listed(bj, limit=2)
    assert [x["redemption"] for x in first["items"]] == newest_first[:2]
    assert first["next"] == newest_first[1]
    rest = listed(bj, limit=2, before=first["next"])
    assert ([x["redemption"] for x in rest["items"]], rest["next"]) == (newest_first[2:], None)
    assert listed(bj, station="ST-BJ-2")["items"][0]["redemption"] == made[1]
    outside = client.get("/v1/redemptions", params={"union": "310000"}, headers=bj)
    assert outside.status_code == 404
    assert client.get("/v1/redemptions", headers=w.member_token(client)).status_code == 403
    reversed_ = client.post(f"/v1/redemptions/{made[1]}/reverse", json={}, headers=bj)
    assert reversed_.status_code == 200, reversed_.text
    assert listed(bj, station="ST-BJ-2")["items"][0]["reversed_at"] is not None


def test_leaving_ends_entitlements_and_redemption(world: tuple[World, TestClient]) -> None:
    w, client = world
    w.program("ONCE")
    w.program("DAILY", quota={"count": 2, "per": "day"}, unit_value=0)
    member = w.member_token(client)
    listed = client.get("/v1/members/me/entitlements", headers=member).json()
    assert {(e["program"], e["remaining"]) for e in listed} == {("ONCE", 1), ("DAILY", 2)}
    station = w.station_token(client, "ST-BJ-1")
    body = w.redeem_body("ONCE", "L1")
    w.run(lambda tx: w.services.members.leave(tx, SYSTEM, w.member_id))
    revoked(client.post("/v1/redemptions", json=body, headers=station))
    assert client.get("/v1/members/me/entitlements", headers=member).json() == []
    assert members.Status.LEFT == "left"


def test_cli_verify_receipt(
    world: tuple[World, TestClient], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w, client = world
    w.program("ONCE")
    station = w.station_token(client, "ST-BJ-1")
    answer = client.post("/v1/redemptions", json=w.redeem_body("ONCE", "v1"), headers=station)
    saved = tmp_path / "answer.json"
    saved.write_text(answer.text, encoding="utf-8")
    key = client.get("/v1/log/public-key").text.strip()
    assert main(["verify-receipt", str(saved), "--public-key", key]) == 0
    out = capsys.readouterr().out
    assert f"verified: entry {answer.json()['redemption']} (RedemptionRecorded" in out
    # One byte of the entry changed: not verified, exit 1.
    doc = answer.json()
    entry = bytearray(base64.b64decode(doc["receipt"]["entry"]))
    entry[-3] ^= 1
    doc["receipt"]["entry"] = base64.b64encode(bytes(entry)).decode()
    saved.write_text(json.dumps(doc), encoding="utf-8")
    assert main(["verify-receipt", str(saved), "--public-key", key]) == 1
    assert "not verified" in capsys.readouterr().err
    other = keys.PrivateKey.generate()
    wrong = NoteSigner(w.services.settings.log_origin, other).verifier().key_string()
    saved.write_text(answer.text, encoding="utf-8")
    assert main(["verify-receipt", str(saved), "--public-key", wrong]) == 1
    assert main(["verify-receipt", str(tmp_path / "missing.json"), "--public-key", key]) == 2
    assert main(["verify-receipt", str(saved), "--public-key", "nonsense"]) == 2


def test_the_reversal_window_is_a_setting(tmp_path: Path) -> None:
    settings = Settings.load(
        data_dir=tmp_path / "d",
        environ={
            "UNIONLEDGER_KEY_PASSPHRASE": "a long test passphrase",
            "UNIONLEDGER_REVERSAL_WINDOW_MINUTES": "5",
        },
    )
    assert settings.reversal_window_minutes == 5
    with pytest.raises(ConfigError):
        Settings.load(
            data_dir=tmp_path / "d",
            environ={"UNIONLEDGER_REVERSAL_WINDOW_MINUTES": "0"},
        )


def test_a_listing_says_until_when_and_whether_its_reader_may_reverse(
    world: tuple[World, TestClient],
) -> None:
    """`window_ends` and `can_reverse` (docs/programs.md section 8) say what the reversal
    route would answer: the station within the window only, an official always (past the
    window with a reason), an auditor never, nobody once reversed."""
    w, client = world
    w.program("DAILY", quota={"count": 5, "per": "day"}, unit_value=100)
    add_accounts(
        w.services.engine, [("official-bj", "official", "110000"), ("auditor-1", "auditor", None)]
    )
    station = w.station_token(client, "ST-BJ-1")
    made = [
        client.post(
            "/v1/redemptions", json=w.redeem_body("DAILY", f"w{i}"), headers=station
        ).json()["redemption"]
        for i in range(3)
    ]
    bj = {"Authorization": f"Bearer {login(client, 'official-bj')}"}
    auditor = {"Authorization": f"Bearer {login(client, 'auditor-1')}"}

    def seen(headers: dict[str, str], rid: int) -> dict[str, Any]:
        one = client.get(f"/v1/redemptions/{rid}", headers=headers).json()
        listed = client.get("/v1/redemptions", headers=headers).json()["items"]
        assert next(x for x in listed if x["redemption"] == rid) == one
        return one

    item = seen(station, made[0])
    at = datetime.fromisoformat(item["at"].replace("Z", "+00:00"))
    window = w.services.redemptions.reversal_window
    ends = datetime.fromisoformat(item["window_ends"].replace("Z", "+00:00"))
    assert abs(ends - (at + window)) < timedelta(seconds=1)
    assert (seen(station, made[0])["can_reverse"], seen(bj, made[0])["can_reverse"]) == (True, True)
    assert seen(auditor, made[0])["can_reverse"] is False

    w.services.redemptions.reversal_window = timedelta(0)  # every redemption is past it now
    assert seen(station, made[0])["can_reverse"] is False
    refused = client.post(f"/v1/redemptions/{made[0]}/reverse", json={}, headers=station)
    assert refused.status_code == 403, refused.text
    assert refused.json()["type"] == "/problems/reversal-window-closed"
    assert seen(bj, made[0])["can_reverse"] is True
    done = client.post(f"/v1/redemptions/{made[0]}/reverse", json={"reason": "twice"}, headers=bj)
    assert done.status_code == 200, done.text
    assert [seen(h, made[0])["can_reverse"] for h in (station, bj, auditor)] == [False] * 3
    w.services.redemptions.reversal_window = window
    assert seen(station, made[1])["can_reverse"] is True
    assert client.post(f"/v1/redemptions/{made[1]}/reverse", json={}, headers=station).is_success
