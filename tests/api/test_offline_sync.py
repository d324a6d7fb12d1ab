"""Offline sync, the server side: a station provisioned over HTTP judges real QR presentations
offline with verifier.station, signs records with a device key registered on the ledger, and
syncs them: accepted ones count against quota, conflicts are recorded and never dropped,
resends are duplicates, a cut batch resumes, broken chains and a revoked key are refused and
listed for review; records a genuine station would never make (forged with the device's real
key) are conflicts for the offline limits; the projections always equal a rebuild."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

import keys
from ledger import offline as o
from ledger import programs, stations
from ledger.accounts import PasswordCost, create_account
from ledger.domain import SYSTEM, Actor, Role
from ledger.identity import synthetic_id_number
from ledger.projections import compare, default_projections
from ledger.redemptions import budget_used, quota_used
from ledger.vault import PersonalData
from tests.api.redemption_world import World
from tests.api.redemption_world import rules as rules_of
from verifier.entry import parse_entry
from verifier.station import (
    GENESIS,
    Accept,
    LocalCounters,
    OfflineRedemption,
    Refusal,
    StationCache,
    StationInfo,
    judge,
    sign_record,
)

OFFLINE = {"allowed": True, "per_member_per_day": 100, "station_daily_value": 10**8}
STATION = "ST-BJ-1"


@dataclass
class Device:
    """A station device: its key (registered on the ledger) and its chain."""

    key: keys.PrivateKey
    cache: StationCache
    world: World
    seq: int = 0
    prev: str = GENESIS
    clock: int = 0

    def record(self, program: str) -> str:
        """Scan a fresh QR code offline, judge it, sign the record; one second later each."""
        self.clock = max(self.clock + 1, int(time.time()) + 1)  # after the key's registration
        at = datetime.fromtimestamp(self.clock, UTC)
        text, _ = self.world.qr(now=at)
        decision = judge(
            text,
            program=program,
            quantity=1,
            cache=self.cache,
            counters=lambda *_: LocalCounters(),
            now=at,
        )
        assert isinstance(decision, Accept), decision
        return self.sign(decision.redemption)

    def decision(self, program: str) -> OfflineRedemption:
        """The station's genuine offline decision for a fresh QR code, not signed yet."""
        self.clock = max(self.clock + 1, int(time.time()) + 1)
        at = datetime.fromtimestamp(self.clock, UTC)
        decision = judge(
            self.world.qr(now=at)[0],
            program=program,
            quantity=1,
            cache=self.cache,
            counters=lambda *_: LocalCounters(),
            now=at,
        )
        assert isinstance(decision, Accept), decision
        return decision.redemption

    def sign(self, redemption: OfflineRedemption) -> str:
        self.seq += 1
        signed = sign_record(redemption.claims(self.seq, self.prev), self.key)
        self.prev = signed.hash
        return signed.token

    def forge(self, program: str, *, quantity: int = 1, template: str = "OFF-WATER") -> str:
        """What a stolen key could sign: a genuine decision for ``template`` (a fresh QR code),
        rewritten for ``program`` and ``quantity``, signed with the device's real key without
        any of the station's own checks."""
        self.clock = max(self.clock + 1, int(time.time()) + 1)
        at = datetime.fromtimestamp(self.clock, UTC)
        text, _ = self.world.qr(now=at)
        decision = judge(
            text,
            program=template,
            quantity=1,
            cache=self.cache,
            counters=lambda *_: LocalCounters(),
            now=at,
        )
        assert isinstance(decision, Accept), decision
        return self.sign(
            dataclasses.replace(
                decision.redemption, program=program, quantity=quantity, value=5000 * quantity
            )
        )


def device(w: World, client: TestClient, station: str = STATION) -> Device:
    key = keys.PrivateKey.generate()
    w.run(lambda tx: stations.register_station_key(tx, SYSTEM, station=station, jwk=key.public_key))
    answer = client.get(
        f"/v1/stations/{station}/provision", headers=w.station_token(client, station)
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    now = keys.utc_now()
    root = w.services.keyring.current(keys.Role.ROOT, now).public_key
    cache = StationCache.provision(
        station=StationInfo(
            body["station"]["station_id"],
            body["station"]["kind"],
            body["station"]["daily_ceiling"],
        ),
        trust_list=body["trust_list"],
        roots=root,
        status_lists=body["status_lists"],
        programs=body["programs"],
        now=now,
    )
    return Device(key, cache, w)


def sync(w: World, client: TestClient, records: list[str], station: str = STATION) -> Any:
    answer = client.post(
        f"/v1/stations/{station}/sync",
        json={"records": records},
        headers=w.station_token(client, station),
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [i["index"] for i in body["items"]] == list(range(len(records)))  # all answered
    return body


def statuses(body: Any) -> list[tuple[str, str | None]]:
    return [(i["status"], i["reason"]) for i in body["items"]]


def events(w: World, type_: str) -> list[Mapping[str, Any]]:
    reader = w.services.reader
    return [e.body for e in map(parse_entry, reader.entries(0, reader.size())) if e.type == type_]


def auditor(w: World, client: TestClient) -> dict[str, str]:
    with w.services.engine.begin() as conn:
        create_account(
            conn,
            username="auditor-1",
            password="a good password 1",
            role="auditor",
            scope=None,
            now=0,
            cost=PasswordCost.fastest(),
        )
    r = client.post(
        "/v1/auth/login", json={"username": "auditor-1", "password": "a good password 1"}
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def used(w: World, program: str) -> int:
    with w.services.engine.connect() as conn:
        return quota_used(conn, w.member_id, program, "program")


def same_as_rebuild(w: World) -> None:
    assert compare(w.services.engine, default_projections()) == []


def test_provision_lists_offline_programs_and_heads(world: tuple[World, TestClient]) -> None:
    w, client = world
    w.program("OFF-WATER", quota={"count": 100, "per": "program"}, offline=OFFLINE)
    w.program("SH-ONLY", owner="310000")  # another province: not redeemable at ST-BJ-1
    d = device(w, client)
    assert set(d.cache.programs) == {"OFF-WATER"}
    assert d.cache.programs["OFF-WATER"].allowed
    assert d.cache.staleness(keys.utc_now()).ok


def test_sync_accepts_counts_and_is_idempotent(world: tuple[World, TestClient]) -> None:
    w, client = world
    w.program("OFF-WATER", quota={"count": 100, "per": "program"}, offline=OFFLINE)
    d = device(w, client)
    records = [d.record("OFF-WATER") for _ in range(3)]
    body = sync(w, client, records)
    assert statuses(body) == [("accepted", None)] * 3
    assert [i["seq"] for i in body["items"]] == [1, 2, 3]
    assert body["heads"] == [
        {
            "kid": d.key.key_id,
            "seq": 3,
            "hash": d.prev,
            "iat": d.clock,
            "entry": body["items"][2]["entry"],
        }
    ]
    recorded = events(w, "OfflineRedemptionRecorded")
    assert [(e["seq"], e["kid"], e["member"], e["period"]) for e in recorded] == [
        (s, d.key.key_id, w.member_id, "program") for s in (1, 2, 3)
    ]
    assert recorded[0]["offline_at"] == d.clock - 2 == recorded[2]["offline_at"] - 2
    assert used(w, "OFF-WATER") == 3
    size = w.services.reader.size()
    again = sync(w, client, records)  # the same batch again: nothing appended twice
    assert statuses(again) == [("duplicate", None)] * 3
    assert [i["entry"] for i in again["items"]] == [i["entry"] for i in body["items"]]
    assert w.services.reader.size() == size
    assert used(w, "OFF-WATER") == 3
    same_as_rebuild(w)


def test_a_cut_batch_resumes(world: tuple[World, TestClient]) -> None:
    w, client = world
    w.program("OFF-WATER", quota={"count": 100, "per": "program"}, offline=OFFLINE)
    d = device(w, client)
    records = [d.record("OFF-WATER") for _ in range(6)]
    sync(w, client, records[:4])  # the connection was cut after the server committed these
    body = sync(w, client, records)
    assert statuses(body) == [("duplicate", None)] * 4 + [("accepted", None)] * 2
    assert used(w, "OFF-WATER") == 6
    assert body["heads"][0]["seq"] == 6
    same_as_rebuild(w)


def test_quota_used_online_meanwhile_is_a_conflict_never_dropped(
    world: tuple[World, TestClient],
) -> None:
    w, client = world
    w.program("OFF-ONCE", offline=OFFLINE)  # once per member
    d = device(w, client)
    offline = d.record("OFF-ONCE")  # handed out offline at ST-BJ-1...
    online = client.post(  # ...and online at ST-BJ-2 before the sync
        "/v1/redemptions",
        json=w.redeem_body("OFF-ONCE", "k-1"),
        headers=w.station_token(client, "ST-BJ-2"),
    )
    assert online.status_code == 201, online.text
    body = sync(w, client, [offline])
    assert statuses(body) == [("conflict", "quota-used")]
    conflict = events(w, "OfflineRedemptionConflicted")
    assert len(conflict) == 1
    assert (conflict[0]["member"], conflict[0]["reason"], conflict[0]["seq"]) == (
        w.member_id,
        "quota-used",
        1,
    )
    assert used(w, "OFF-ONCE") == 1  # a conflict is not counted
    assert sync(w, client, [offline])["items"][0]["status"] == "duplicate"
    review = client.get("/v1/offline/conflicts", headers=auditor(w, client))
    assert review.status_code == 200, review.text
    items = review.json()["items"]
    assert [(i["status"], i["reason"], i["member_id"]) for i in items] == [
        ("conflict", "quota-used", w.member_id)
    ]
    assert body["heads"][0]["seq"] == 1  # the chain goes on past a conflict
    same_as_rebuild(w)


def test_tampered_gap_and_reordered_are_refused(world: tuple[World, TestClient]) -> None:
    w, client = world
    w.program("OFF-WATER", quota={"count": 100, "per": "program"}, offline=OFFLINE)
    d = device(w, client)
    r = [d.record("OFF-WATER") for _ in range(5)]
    header, claims, signature = r[0].split(".")
    flipped = claims[:10] + ("A" if claims[10] != "A" else "B") + claims[11:]
    tampered = f"{header}.{flipped}.{signature}"
    body = sync(w, client, [tampered])
    assert body["items"][0]["status"] == "refused"
    assert body["items"][0]["reason"] in ("record-bad-signature", "record-malformed")
    body = sync(w, client, [r[0], r[2]])  # seq 2 missing
    assert statuses(body) == [("accepted", None), ("refused", "record-gap")]
    body = sync(w, client, [r[2], r[1], r[3]])  # 3 before 2: the batch stops there
    assert statuses(body) == [("refused", "record-reordered")] + [("refused", "not-judged")] * 2
    assert body["items"][1]["entry"] is None  # not judged: nothing recorded, resend it
    size = w.services.reader.size()
    again = sync(w, client, [r[2], r[1]])  # the same refusal is not appended twice
    assert statuses(again) == [("refused", "record-reordered"), ("refused", "not-judged")]
    assert again["items"][0]["entry"] == body["items"][0]["entry"]
    assert w.services.reader.size() == size
    body = sync(w, client, r)  # the mended upload
    assert statuses(body) == [("duplicate", None)] + [("accepted", None)] * 4
    refused = events(w, "OfflineRecordRefused")
    assert [e["reason"] for e in refused][1:] == ["record-gap", "record-reordered"]
    assert "member" not in refused[0]
    assert used(w, "OFF-WATER") == 5
    same_as_rebuild(w)


def test_records_after_the_key_is_revoked_are_refused_and_listed(
    world: tuple[World, TestClient],
) -> None:
    w, client = world
    w.program("OFF-WATER", quota={"count": 100, "per": "program"}, offline=OFFLINE)
    d = device(w, client)
    before = [d.record("OFF-WATER") for _ in range(2)]
    while time.time() < d.clock + 1:  # revoked after those records' second (keys: whole s)
        time.sleep(0.05)
    w.run(
        lambda tx: stations.revoke_station_key(
            tx, SYSTEM, station=STATION, kid=d.key.key_id, reason="设备被盗"
        )
    )
    after = [d.record("OFF-WATER") for _ in range(2)]
    body = sync(w, client, before + after)
    assert statuses(body) == [("accepted", None)] * 2 + [("refused", "record-key-revoked")] * 2
    assert used(w, "OFF-WATER") == 2
    review = client.get("/v1/offline/conflicts", headers=auditor(w, client)).json()["items"]
    assert [(i["status"], i["reason"], i["seq"], i["station"]) for i in review] == [
        ("refused", "record-key-revoked", 3, STATION),
        ("refused", "record-key-revoked", 4, STATION),
    ]
    same_as_rebuild(w)


def test_only_the_station_itself_syncs(world: tuple[World, TestClient]) -> None:
    w, client = world
    answer = client.post(
        "/v1/stations/ST-BJ-2/sync",
        json={"records": []},
        headers=w.station_token(client, STATION),
    )
    assert answer.status_code == 404
    too_many = client.post(
        f"/v1/stations/{STATION}/sync",
        json={"records": ["x"] * 1001},
        headers=w.station_token(client, STATION),
    )
    assert too_many.status_code == 422


def test_garbage_is_refused_not_dropped(world: tuple[World, TestClient]) -> None:
    w, client = world
    body = sync(w, client, ["not a record", "é.é.é"])
    assert statuses(body) == [("refused", "record-malformed")] * 2
    assert len(events(w, "OfflineRecordRefused")) == 2
    same_as_rebuild(w)


def review_reasons(w: World, client: TestClient) -> list[tuple[str, str | None]]:
    items = client.get("/v1/offline/conflicts", headers=auditor(w, client)).json()["items"]
    return [(i["status"], i["reason"]) for i in items]


def test_forged_record_for_a_program_not_allowed_offline_is_a_conflict(
    world: tuple[World, TestClient],
) -> None:
    w, client = world
    w.program("OFF-WATER", quota={"count": 100, "per": "program"}, offline=OFFLINE)
    w.program("ONLINE-ONLY", quota={"count": 100, "per": "program"})  # no offline at all
    d = device(w, client)
    assert not d.cache.programs["ONLINE-ONLY"].allowed  # the app would never sign it
    body = sync(w, client, [d.forge("ONLINE-ONLY"), d.record("OFF-WATER")])
    assert statuses(body) == [("conflict", "offline-not-allowed"), ("accepted", None)]
    conflict = events(w, "OfflineRedemptionConflicted")
    assert [(e["program"], e["reason"], e["seq"]) for e in conflict] == [
        ("ONLINE-ONLY", "offline-not-allowed", 1)
    ]
    assert (used(w, "ONLINE-ONLY"), used(w, "OFF-WATER")) == (0, 1)  # not counted
    assert body["heads"][0]["seq"] == 2  # the chain goes on past it
    same_as_rebuild(w)


def test_the_version_in_force_at_the_record_decides_offline(
    world: tuple[World, TestClient],
) -> None:
    w, client = world
    w.program("OFF-WATER", quota={"count": 100, "per": "program"}, offline=OFFLINE)
    d = device(w, client)
    before = d.record("OFF-WATER")
    while time.time() < d.clock + 1:  # the revision takes effect after that record's second
        time.sleep(0.05)
    w.run(
        lambda tx: programs.revise_program(
            tx,
            SYSTEM,
            program="OFF-WATER",
            rules=rules_of(quota={"count": 100, "per": "program"}),  # offline withdrawn
        )
    )
    after = d.forge("OFF-WATER")  # the cache still allows it; version 2 does not
    body = sync(w, client, [before, after])
    assert statuses(body) == [("accepted", None), ("conflict", "offline-not-allowed")]
    assert used(w, "OFF-WATER") == 1
    same_as_rebuild(w)


def test_forged_records_beyond_the_member_limit_are_conflicts(
    world: tuple[World, TestClient],
) -> None:
    w, client = world
    w.program("OFF-WATER", quota={"count": 100, "per": "program"}, offline=OFFLINE)
    two = {"allowed": True, "per_member_per_day": 2, "station_daily_value": 10**8}
    w.program("OFF-TWO", quota={"count": 100, "per": "program"}, max_quantity=3, offline=two)
    d = device(w, client)
    first = [d.forge("OFF-TWO"), d.forge("OFF-TWO", quantity=2), d.forge("OFF-TWO")]
    body = sync(w, client, first)
    assert statuses(body) == [
        ("accepted", None),
        ("conflict", "offline-member-limit"),  # 1 + 2 > 2
        ("accepted", None),
    ]
    later = [d.forge("OFF-TWO"), d.record("OFF-WATER")]  # another sync: counted from the ledger
    body = sync(w, client, later)
    assert statuses(body) == [("conflict", "offline-member-limit"), ("accepted", None)]
    assert used(w, "OFF-TWO") == 2  # conflicts are not counted against the quota
    other = device(w, client)  # another device of the station has its own daily limit
    assert statuses(sync(w, client, [other.forge("OFF-TWO")])) == [("accepted", None)]
    assert used(w, "OFF-TWO") == 3
    assert review_reasons(w, client) == [("conflict", "offline-member-limit")] * 2
    assert sync(w, client, first + later)["counts"]["duplicate"] == 5  # resent: nothing new
    same_as_rebuild(w)


def test_forged_records_beyond_the_station_ceiling_are_conflicts(
    world: tuple[World, TestClient],
) -> None:
    w, client = world
    w.program("OFF-WATER", quota={"count": 100, "per": "program"}, offline=OFFLINE)
    ceiling = {"allowed": True, "per_member_per_day": 100, "station_daily_value": 12_000}
    w.program("OFF-CAP", quota={"count": 100, "per": "program"}, max_quantity=3, offline=ceiling)
    d = device(w, client)
    records = [d.forge("OFF-CAP"), d.forge("OFF-CAP", quantity=2), d.forge("OFF-CAP")]
    body = sync(w, client, records)  # 5,000 fen a unit: 5,000 + 10,000 > 12,000
    assert statuses(body) == [
        ("accepted", None),
        ("conflict", "offline-station-ceiling"),
        ("accepted", None),
    ]
    body = sync(w, client, [d.forge("OFF-CAP"), d.record("OFF-WATER")])  # 10,000 + 5,000
    assert statuses(body) == [("conflict", "offline-station-ceiling"), ("accepted", None)]
    conflict = events(w, "OfflineRedemptionConflicted")
    assert [(e["reason"], e["quantity"], e["value"]) for e in conflict] == [
        ("offline-station-ceiling", 2, 10_000),
        ("offline-station-ceiling", 1, 5_000),
    ]
    assert used(w, "OFF-CAP") == 2
    same_as_rebuild(w)


def test_records_beyond_the_station_daily_ceiling_across_programs_are_conflicts(
    world: tuple[World, TestClient],
) -> None:
    """The station's own daily_ceiling (all programs, per device key and China day) is
    re-checked at sync with the ceiling in force at each record's time; the device, provisioned
    with it, refuses beyond it offline."""
    w, client = world
    w.program("OFF-WATER", quota={"count": 100, "per": "program"}, offline=OFFLINE)
    for program in ("OFF-A", "OFF-B"):
        w.program(program, quota={"count": 100, "per": "program"}, max_quantity=3, offline=OFFLINE)
    w.run(lambda tx: stations.update_station(tx, SYSTEM, station=STATION, daily_ceiling=12_000))
    d = device(w, client)
    assert d.cache.station.daily_ceiling == 12_000  # provisioned
    at = datetime.fromtimestamp(int(time.time()) + 1, UTC)
    refusal = judge(
        w.qr(now=at)[0],
        program="OFF-B",
        quantity=1,
        cache=d.cache,
        counters=lambda *_: LocalCounters(station_value=10_000),  # 10,000 + 5,000 > 12,000
        now=at,
    )
    assert isinstance(refusal, Refusal), refusal
    assert (refusal.code, refusal.extra["scope"]) == ("offline-station-ceiling", "station")

    # each program's own limit (10**8) is far away: only the station-wide one bites
    first = [d.forge("OFF-A"), d.forge("OFF-B"), d.forge("OFF-A")]  # 5,000 + 5,000 + 5,000
    body = sync(w, client, first)
    assert statuses(body) == [
        ("accepted", None),
        ("accepted", None),
        ("conflict", "offline-station-ceiling"),
    ]
    assert "daily_ceiling" in body["items"][2]["message"]
    assert statuses(sync(w, client, [d.forge("OFF-B", quantity=2)])) == [  # from the ledger
        ("conflict", "offline-station-ceiling")
    ]
    other = device(w, client)  # another device of the station has its own daily ceiling
    assert statuses(sync(w, client, [other.forge("OFF-B", quantity=2)])) == [("accepted", None)]

    early = d.forge("OFF-A")  # made under 12,000: still judged by it when synced later
    _wait_past(d.clock)
    w.run(lambda tx: stations.update_station(tx, SYSTEM, station=STATION, daily_ceiling=20_000))
    _wait_past(int(time.time()))
    late = d.forge("OFF-A")  # made under 20,000: 10,000 + 5,000
    assert statuses(sync(w, client, [early, late])) == [
        ("conflict", "offline-station-ceiling"),
        ("accepted", None),
    ]
    w.run(lambda tx: stations.update_station(tx, SYSTEM, station=STATION, daily_ceiling=None))
    _wait_past(int(time.time()))
    assert statuses(sync(w, client, [d.forge("OFF-B", quantity=3)])) == [("accepted", None)]

    conflict = events(w, "OfflineRedemptionConflicted")
    assert [(e["reason"], e["program"], e["quantity"]) for e in conflict] == [
        ("offline-station-ceiling", "OFF-A", 1),
        ("offline-station-ceiling", "OFF-B", 2),
        ("offline-station-ceiling", "OFF-A", 1),
    ]
    assert (used(w, "OFF-A"), used(w, "OFF-B")) == (2, 1 + 2 + 3)
    assert review_reasons(w, client) == [("conflict", "offline-station-ceiling")] * 3
    same_as_rebuild(w)


def _wait_past(second: int) -> None:
    while time.time() < second + 1:  # entry times are exact; records whole seconds
        time.sleep(0.05)


def _newcomer(w: World, n: int) -> str:
    person = PersonalData(
        name="新会员", id_number=synthetic_id_number(random.Random(n)), phone=f"1391234{n:04d}"
    )
    return str(
        w.run(
            lambda tx: w.services.members.enrol(tx, SYSTEM, union_code="110105-0001", person=person)
        ).member_id
    )


def test_the_member_is_judged_as_at_the_record(world: tuple[World, TestClient]) -> None:
    """Issue 7: a member who left after the record was made was a member then (accepted); one
    who joined after it was not (not-a-member); one who had left before it neither."""
    w, client = world
    w.program("OFF-WATER", quota={"count": 100, "per": "program"}, offline=OFFLINE)
    d = device(w, client)
    kept = d.record("OFF-WATER")  # made while w.member_id is a member
    early = d.decision("OFF-WATER")  # another one, made before the newcomer joins
    _wait_past(d.clock)
    newcomer = _newcomer(w, 1)
    w.run(lambda tx: w.services.members.leave(tx, SYSTEM, w.member_id))
    made_early = d.sign(dataclasses.replace(early, member=newcomer))
    _wait_past(int(time.time()))
    late = dataclasses.replace(  # after the leave (the station could not know)
        early,
        iat=int(time.time()),
        clk=int(time.time()),
        presentation=keys.b64url_encode(bytes(range(32))),
    )
    after_leaving = d.sign(late)
    joined = d.sign(  # the newcomer, after joining
        dataclasses.replace(
            late, member=newcomer, presentation=keys.b64url_encode(bytes(range(1, 33)))
        )
    )
    body = sync(w, client, [kept, made_early, after_leaving, joined])
    assert statuses(body) == [
        ("accepted", None),  # left after the record: a member then
        ("conflict", "not-a-member"),  # joined after the record
        ("conflict", "not-a-member"),  # had left before the record
        ("accepted", None),
    ]
    recorded = events(w, "OfflineRedemptionRecorded")
    assert [(e["member"], e["home"]) for e in recorded] == [
        (w.member_id, "110105-0001"),
        (newcomer, "110105-0001"),
    ]
    assert used(w, "OFF-WATER") == 1
    same_as_rebuild(w)


def test_quota_and_budget_in_one_request_across_devices_and_online(
    world: tuple[World, TestClient],
) -> None:
    """The per-request tallies: two devices of the station in one request share the member's
    quota with an online redemption made meanwhile; the budget is never exceeded."""
    w, client = world
    w.program(
        "OFF-THREE",
        quota={"count": 3, "per": "program"},
        budget=20_000,  # four units of 5,000 fen
        offline=OFFLINE,
    )
    a, b = device(w, client), device(w, client)
    first = [a.record("OFF-THREE"), a.record("OFF-THREE")]
    second = [b.record("OFF-THREE"), b.record("OFF-THREE")]
    online = client.post(
        "/v1/redemptions",
        json=w.redeem_body("OFF-THREE", "k-1"),
        headers=w.station_token(client, "ST-BJ-2"),
    )
    assert online.status_code == 201, online.text
    body = sync(w, client, [first[0], second[0], first[1], second[1]])
    # judged device by device, in request order: a's two, then b's two
    assert statuses(body) == [
        ("accepted", None),
        ("conflict", "quota-used"),
        ("accepted", None),
        ("conflict", "quota-used"),
    ]
    assert used(w, "OFF-THREE") == 3
    newcomer = _newcomer(w, 2)  # another member: the budget has one unit left
    c = device(w, client)
    spend = [
        c.sign(dataclasses.replace(c.decision("OFF-THREE"), member=newcomer)) for _ in range(2)
    ]
    assert statuses(sync(w, client, spend)) == [
        ("accepted", None),
        ("conflict", "budget-exhausted"),
    ]
    with w.services.engine.connect() as conn:
        assert sum(budget_used(conn, "OFF-THREE").values()) == 20_000
    same_as_rebuild(w)


def in_one_batch(w: World, *commands: Any) -> list[Any]:
    """Run ``commands`` in one batch of the single writer (held until all are queued)."""
    sequencer = w.services.sequencer
    gate = threading.Event()
    blocker = sequencer.submit(lambda tx: gate.wait(10))  # holds the writer
    time.sleep(0.2)
    futures = [sequencer.submit(c) for c in commands]
    gate.set()
    blocker.result(10)
    return [f.result(10) for f in futures]


def test_two_syncs_in_one_writer_batch(world: tuple[World, TestClient]) -> None:
    """Two sync requests of the same station in one batch of the single writer: the second
    sees what the first appended (the offline rows are written at the batch's end)."""
    w, client = world
    w.program("OFF-WATER", quota={"count": 100, "per": "program"}, offline=OFFLINE)
    d = device(w, client)
    records = [d.record("OFF-WATER") for _ in range(5)]
    station = Actor(Role.STATION, d.key.key_id, STATION)
    members = w.services.members
    first, second = in_one_batch(
        w,
        lambda tx: o.sync(tx, station, records[:3], members=members),
        lambda tx: o.sync(tx, station, records, members=members),
    )
    assert [i.status for i in first.items] == ["accepted"] * 3
    assert [i.status for i in second.items] == ["duplicate"] * 3 + ["accepted"] * 2
    assert [h.seq for h in second.heads] == [5]
    assert used(w, "OFF-WATER") == 5
    same_as_rebuild(w)


def test_the_next_command_of_the_batch_sees_a_sync_redemptions(
    world: tuple[World, TestClient],
) -> None:
    """A sync's redemptions are written when its command ends (one executemany): a command
    after it in the same writer batch reads them (the member's quota), a
    reversal restores the quota, and replaying the chain (the sync and the reversal in one
    chunk) reproduces the tables."""
    w, client = world
    w.program("OFF-WATER", quota={"count": 100, "per": "program"}, offline=OFFLINE)
    d = device(w, client)
    records = [d.record("OFF-WATER") for _ in range(3)]
    station = Actor(Role.STATION, d.key.key_id, STATION)
    synced, seen = in_one_batch(
        w,
        lambda tx: o.sync(tx, station, records, members=w.services.members),
        lambda tx: quota_used(tx.conn, w.member_id, "OFF-WATER", "program"),
    )
    items = synced.items
    assert [i.status for i in items] == ["accepted"] * 3
    assert seen == 3
    w.run(lambda tx: w.services.redemptions.reverse(tx, SYSTEM, items[1].entry))
    assert used(w, "OFF-WATER") == 2
    same_as_rebuild(w)


def test_signatures_checked_ahead_still_meet_the_keys_of_the_writer(
    world: tuple[World, TestClient],
) -> None:
    """check_ahead runs before the writer; a key revoked in between still refuses the records
    dated after its revocation, and a tampered record is never in the ahead answer."""
    w, client = world
    w.program("OFF-WATER", quota={"count": 100, "per": "program"}, offline=OFFLINE)
    d = device(w, client)
    before = d.record("OFF-WATER")
    first = d.clock
    d.clock = int(time.time()) + 60  # dated a minute ahead (within the clock leeway)
    after = d.record("OFF-WATER")
    header, claims, signature = after.split(".")
    tampered = f"{header}.{claims}.{signature[:-2]}AA"
    with w.services.engine.connect() as conn:
        ahead = o.check_ahead(conn, STATION, [before, after, tampered, "junk"])
    assert set(ahead) == {before, after}
    _wait_past(first)
    w.run(  # revoked after the first record's second, before the second's
        lambda tx: stations.revoke_station_key(
            tx, SYSTEM, station=STATION, kid=d.key.key_id, reason="设备被盗"
        )
    )
    station = Actor(Role.STATION, d.key.key_id, STATION)
    result = w.run(
        lambda tx: o.sync(tx, station, [before, after], members=w.services.members, presigned=ahead)
    )
    assert [(i.status, i.reason) for i in result.items] == [
        ("accepted", None),
        ("refused", "record-key-revoked"),
    ]
    same_as_rebuild(w)


def test_stacking_is_judged_with_the_request_own_appends(
    world: tuple[World, TestClient],
) -> None:
    """A program that does not stack with another: its record after the other's, in the same
    request, is a conflict (the request's own redemption counts at once)."""
    w, client = world
    w.program("OFF-A", quota={"count": 100, "per": "program"}, offline=OFFLINE)
    w.program(
        "OFF-B",
        quota={"count": 100, "per": "program"},
        offline=OFFLINE,
        no_stack_with=["OFF-A"],
    )
    w.program("OFF-C", quota={"count": 100, "per": "program"}, offline=OFFLINE)
    d = device(w, client)
    records = [d.record("OFF-C"), d.record("OFF-B"), d.record("OFF-A"), d.record("OFF-B")]
    assert statuses(sync(w, client, records)) == [
        ("accepted", None),
        ("accepted", None),
        ("conflict", "not-stackable"),  # A after B: B's version declares it, either side counts
        ("accepted", None),  # B again: the conflicted A is not counted
    ]
    same_as_rebuild(w)


def test_quota_and_budget_tallies_per_member_in_one_request(
    world: tuple[World, TestClient],
) -> None:
    """Several members interleaved in one request: each member's quota and the program's
    budget are tallied as the request appends; a second request reads the same from the
    ledger."""
    w, client = world
    w.program(
        "OFF-Q2",
        quota={"count": 2, "per": "program"},
        budget=25_000,  # five units of 5,000 fen
        offline=OFFLINE,
    )
    people = sorted([w.member_id, _newcomer(w, 3), _newcomer(w, 4)])
    d = device(w, client)

    def records(order: list[int]) -> list[str]:
        return [d.sign(dataclasses.replace(d.decision("OFF-Q2"), member=people[i])) for i in order]

    assert statuses(sync(w, client, records([0, 0]))) == [("accepted", None)] * 2  # used up
    order = [0, 1, 0, 2, 1, 0, 2, 1]
    body = sync(w, client, records(order))
    assert statuses(body) == [
        ("conflict", "quota-used"),  # the first member used both before
        ("accepted", None),
        ("conflict", "quota-used"),
        ("accepted", None),
        ("accepted", None),
        ("conflict", "quota-used"),
        ("conflict", "budget-exhausted"),  # the third member's second: five units spent
        ("conflict", "quota-used"),  # the second member's third
    ]
    with w.services.engine.connect() as conn:
        assert [quota_used(conn, m, "OFF-Q2", "program") for m in people] == [2, 2, 1]
        assert sum(budget_used(conn, "OFF-Q2").values()) == 25_000
    again = sync(w, client, records(order))  # the same again, from the ledger's figures
    assert [s for s, _ in statuses(again)] == ["conflict"] * len(order)
    assert {r for _, r in statuses(again)} == {"quota-used", "budget-exhausted"}
    same_as_rebuild(w)
