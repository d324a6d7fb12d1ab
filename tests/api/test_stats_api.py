"""Statistics over HTTP (docs/stats.md): figures, series, statements, settlement, anomalies and
the export, on SQLite and PostgreSQL, for an official (their subtree, small cells withheld) and
an auditor (everything); every answer pinned to the ledger it was read at; the export equals the
auditor's fold of the chain, and a tampered projection row no longer does."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from ledger import stats as ls
from ledger.accounts import PasswordCost, create_account
from ledger.programs import CHINA
from ledger.schema import log_head
from tests.api.redemption_world import World, build_world
from verifier import stats as vs
from verifier.entry import parse_entry

ACCOUNTS = {
    # account name -> its role and scope
    "stats-national": ("official", "100000"),
    "stats-shanghai": ("official", "310000"),
    "stats-auditor": ("auditor", None),
}


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[tuple[World, TestClient, dict[str, Any]]]:
    built = build_world(tmp_path, database_url)
    services = built.services
    with services.engine.begin() as conn:
        for username, (role, scope) in ACCOUNTS.items():
            create_account(
                conn,
                username=username,
                password=f"{username} password",
                role=role,
                scope=scope,
                now=0,
                cost=PasswordCost.fastest(),
            )
    with TestClient(built.app, raise_server_exceptions=False) as client:
        built.register_holder(client)
        headers = {}
        for username in ACCOUNTS:
            answer = client.post(
                "/v1/auth/login", json={"username": username, "password": f"{username} password"}
            )
            assert answer.status_code == 200, answer.text
            headers[username] = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        yield built, client, headers


def _redeem(world: World, client: TestClient, program: str, station: str, key: str) -> Any:
    answer = client.post(
        "/v1/redemptions",
        json=world.redeem_body(program, key),
        headers=world.station_token(client, station),
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def _chain(world: World) -> list[Any]:
    reader = world.services.reader
    return [parse_entry(d) for d in reader.entries(0, reader.size())]


def test_figures_statements_settlement_and_export(
    world: tuple[World, TestClient, dict[str, Any]],
) -> None:
    w, client, headers = world
    w.program("P-PACK", unit_value=5000)  # once, 50 yuan, national
    w.program(
        "P-WATER",
        owner="110000",
        quota={"count": 5, "per": "day"},
        unit_value=0,
        max_quantity=1,
    )
    first = _redeem(w, client, "P-PACK", "ST-BJ-2", "k1")
    for i in range(3):
        _redeem(w, client, "P-WATER", "ST-BJ-1", f"w{i}")
    # the pack is reversed by its station: value back, counted as a reversal
    reversal = client.post(
        f"/v1/redemptions/{first['redemption']}/reverse",
        json={"reason": "wrong program"},
        headers=w.station_token(client, "ST-BJ-2"),
    )
    assert reversal.status_code == 200, reversal.text
    today = datetime.now(CHINA).date().isoformat()
    month = today[:7]
    auditor, national, shanghai = (
        headers["stats-auditor"],
        headers["stats-national"],
        headers["stats-shanghai"],
    )

    # The auditor sees every figure; the subtree of 100000 holds everything
    doc = client.get(
        "/v1/stats/unions/100000", params={"from": today, "to": today}, headers=auditor
    ).json()
    total = doc["subtree"]["total"]
    assert (total["redemptions"], total["value"], total["reversals"]) == (4, 5000, 1)
    assert total["reversed_value"] == 5000
    assert doc["subtree"]["programs"]["P-WATER"]["redemptions"] == 3
    assert doc["own"]["total"]["redemptions"] == 0  # the member's home is 110105-0001
    children = {c["union"]: c for c in doc["children"]}
    assert children["110000"]["redemptions"] == 4
    assert children["310000"]["redemptions"] == 0
    with w.services.engine.connect() as conn:
        size = conn.execute(select(log_head.c.size)).scalar_one()
    assert doc["pinned"]["size"] == size

    # A whole month gives distinct members; the group of the member is a dimension
    doc = client.get(
        "/v1/stats/unions/110105-0001",
        params={"from": f"{month}-01", "to": vs_month_end(today)},
        headers=auditor,
    ).json()
    assert doc["members_period"] == month
    assert doc["own"]["total"]["members"] == 1
    assert doc["own"]["programs"]["P-WATER"]["members"] == 1
    assert doc["groups"]["figures"]["delivery_rider"]["redemptions"] == 4

    # An official sees counts below the threshold (5) withheld
    doc = client.get(
        "/v1/stats/unions/110000", params={"from": today, "to": today}, headers=national
    ).json()
    assert doc["subtree"]["total"] == {**dict.fromkeys([*vs.FIELDS, "members"]), "suppressed": True}
    # ... and nothing outside their subtree
    answer = client.get("/v1/stats/unions/110000", headers=shanghai)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"

    # CSV: the same figures
    answer = client.get(
        "/v1/stats/unions/100000",
        params={"from": today, "to": today, "format": "csv"},
        headers=auditor,
    )
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    water = next(r for r in rows if r["part"] == "subtree" and r["program"] == "P-WATER")
    assert water["redemptions"] == "3"
    assert water["value"] == "0"
    assert answer.headers["unionledger-pinned"].split()[0] == str(size)
    # ... and an official's CSV, whose withheld rows alone carry "suppressed" (once a 500)
    answer = client.get(
        "/v1/stats/unions/110000",
        params={"from": today, "to": today, "format": "csv"},
        headers=national,
    )
    assert answer.status_code == 200, answer.text
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    total = next(r for r in rows if r["part"] == "subtree" and r["program"] == "*")
    assert (total["suppressed"], total["redemptions"]) == ("True", "")

    # Statements: the station's day and the union's day
    doc = client.get(
        "/v1/stats/stations/ST-BJ-1/statement", params={"day": today}, headers=auditor
    ).json()
    assert doc["ledger"]["total"]["redemptions"] == 3
    assert doc["differences"] == []
    assert doc["station_reported"]["records"] == 0
    doc = client.get(
        "/v1/stats/unions/110000/statement", params={"day": today}, headers=auditor
    ).json()
    assert {s["station"]: s["redemptions"] for s in doc["stations"]} == {
        "ST-BJ-1": 3,
        "ST-TD-1": 0,
    }

    # Settlement: 100000 funded the pack at a station of 110105-0001, reversed: owes 0;
    # the balances always net to zero
    doc = client.get(
        "/v1/stats/settlement", params={"from": today, "to": today}, headers=auditor
    ).json()
    pairs = {(p["funding"], p["operating"]): p for p in doc["pairs"]}
    assert pairs[("100000", "110105-0001")]["owed"] == 0
    assert pairs[("100000", "110105-0001")]["reversals"] == 1
    assert doc["net_total"] == 0

    # A station's figures over a range
    doc = client.get(
        "/v1/stats/stations/ST-BJ-1", params={"from": today, "to": today}, headers=auditor
    ).json()
    assert doc["figures"]["programs"]["P-WATER"]["redemptions"] == 3
    assert doc["union"] == "110000"
    assert doc["program_names"]["P-WATER"] == "送清凉"
    assert doc["refused_records"] == 0

    # Anomalies: a JSON list (nothing unusual here)
    doc = client.get("/v1/stats/anomalies", headers=auditor).json()
    assert doc["items"] == []
    # ... until a station's redemptions are refused again and again (online refusals write
    # nothing to the chain; they are tallied beside it)
    station = w.station_token(client, "ST-BJ-2")
    for i in range(10):
        answer = client.post(
            "/v1/redemptions", json=w.redeem_body("P-NOPE", f"x{i}"), headers=station
        )
        assert answer.status_code == 409, answer.text
    items = client.get("/v1/stats/anomalies", headers=auditor).json()["items"]
    assert [(a["kind"], a["subject"], a["count"]) for a in items] == [
        ("repeated-refusals", "ST-BJ-2", 10)
    ]

    # The export is for auditors, and equals the fold of the chain
    assert client.get("/v1/stats/export", headers=national).status_code == 403
    exported = client.get("/v1/stats/export", headers=auditor).json()
    published = vs.Figures.from_json(exported)
    chain = _chain(w)
    assert published.size == len(chain)
    assert vs.compare(published, vs.Recompute().take_all(chain).figures()) == []
    assert published.budgets[("P-PACK", "100000")] == 0

    # A tampered projection row is caught
    with w.services.engine.begin() as conn:
        conn.execute(
            update(ls.stats_cells)
            .where(ls.stats_cells.c.scope == "S:ST-BJ-1")
            .values(value=ls.stats_cells.c.value + 100)
        )
    tampered = vs.Figures.from_json(client.get("/v1/stats/export", headers=auditor).json())
    differences = vs.compare(tampered, vs.Recompute().take_all(chain).figures())
    assert differences
    assert differences[0].startswith("cell S:ST-BJ-1/P-WATER/")
    assert "value published 100 recomputed 0" in differences[0]


def _without_pin(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "pinned"}


def test_statistics_survive_an_erasure(world: tuple[World, TestClient, dict[str, Any]]) -> None:
    w, client, headers = world
    auditor, national = headers["stats-auditor"], headers["stats-national"]
    w.program("P-PACK", unit_value=5000)
    w.program("P-WATER", owner="110000", quota={"count": 5, "per": "day"}, unit_value=200)
    _redeem(w, client, "P-PACK", "ST-BJ-2", "e-pack")
    for i in range(3):
        _redeem(w, client, "P-WATER", "ST-BJ-1", f"e-water-{i}")
    today = datetime.now(CHINA).date().isoformat()
    month = today[:7]
    views: list[tuple[str, dict[str, str]]] = [
        ("/v1/stats/unions/100000", {"from": today, "to": today}),
        ("/v1/stats/unions/110105-0001", {"from": f"{month}-01", "to": vs_month_end(today)}),
        ("/v1/stats/stations/ST-BJ-1", {"from": today, "to": today}),
        ("/v1/stats/settlement", {"from": today, "to": today}),
    ]

    def snapshot() -> list[dict[str, Any]]:
        docs = []
        for path, params in views:
            answer = client.get(path, params=params, headers=auditor)
            assert answer.status_code == 200, answer.text
            docs.append(answer.json())
        return docs

    before = snapshot()
    total = before[0]["subtree"]["total"]
    assert (total["redemptions"], total["value"], total["reversals"]) == (4, 5600, 0)
    home = before[1]
    assert home["own"]["total"]["members"] == 1
    assert home["own"]["total"]["redemptions"] == 4  # counted at the member's home union
    assert home["groups"]["figures"]["delivery_rider"]["redemptions"] == 4
    exported_before = vs.Figures.from_json(client.get("/v1/stats/export", headers=auditor).json())
    assert vs.compare(exported_before, vs.Recompute().take_all(_chain(w)).figures()) == []
    size_before = w.services.reader.size()

    erased = client.post(f"/v1/members/{w.member_id}/erase", headers=national)
    assert erased.status_code == 200, erased.text
    chain = _chain(w)
    assert [e.type for e in chain[size_before:]].count("MemberErased") == 1
    # The member is gone as a person...
    gone = client.get(f"/v1/members/{w.member_id}/personal", headers=national)
    assert (gone.status_code, gone.json()["type"]) == (409, "/problems/member-erased")

    # ...but every figure stays, the member now anonymous: the same answers, at a later pin.
    after = snapshot()
    for path_params, old, new in zip(views, before, after, strict=True):
        assert new["pinned"]["size"] == len(chain) > old["pinned"]["size"], path_params
        assert _without_pin(new) == _without_pin(old), path_params
    exported_after = vs.Figures.from_json(client.get("/v1/stats/export", headers=auditor).json())
    assert exported_after.size == len(chain)
    assert exported_after.cells == exported_before.cells
    assert exported_after.members == exported_before.members
    assert exported_after.budgets == exported_before.budgets
    # The auditor's recomputation from the chain (the erasure entry included) still agrees.
    recomputed = vs.Recompute().take_all(chain).figures()
    assert vs.compare(exported_after, recomputed) == []
    assert recomputed.cells == exported_before.cells


def vs_month_end(day: str) -> str:
    year, month = int(day[:4]), int(day[5:7])
    nxt = datetime(year + (month == 12), month % 12 + 1, 1)
    return (nxt.date().fromordinal(nxt.date().toordinal() - 1)).isoformat()


def test_a_csv_whose_later_rows_alone_are_withheld_is_written(
    world: tuple[World, TestClient, dict[str, Any]],
) -> None:
    """The CSV's columns are every row's: a withheld row after a shown one adds "suppressed"
    (the writer once took the first row's columns and raised: a 500 for officials)."""
    from api.routes_stats import _csv

    w, _, _ = world
    got = ls.pinned(w.services.engine, lambda conn: None)
    rows = [
        {"part": "own", "program": "*", "redemptions": 7},
        {"part": "own", "program": "P-RARE", "redemptions": None, "suppressed": True},
    ]
    answer = _csv(rows, "figures", got)
    parsed = list(csv.DictReader(io.StringIO(answer.body.decode())))
    assert parsed == [
        {"part": "own", "program": "*", "redemptions": "7", "suppressed": ""},
        {"part": "own", "program": "P-RARE", "redemptions": "", "suppressed": "True"},
    ]


@pytest.mark.parametrize(
    ("path", "params", "problem"),
    [
        ("/v1/stats/unions/100000", {"from": "2026-02-30"}, "invalid-period"),
        ("/v1/stats/unions/100000", {"from": "2026-03-02", "to": "2026-03-01"}, "invalid-period"),
        ("/v1/stats/unions/100000", {"from": "2020-01-01", "to": "2026-01-01"}, "invalid-period"),
        ("/v1/stats/unions/NOPE", {}, "unknown-union"),
        ("/v1/stats/stations/NOPE/statement", {}, "unknown-station"),
        ("/v1/stats/settlement", {"format": "xml"}, "validation-error"),
    ],
)
def test_bad_requests_are_problems(
    world: tuple[World, TestClient, dict[str, Any]], path: str, params: dict[str, str], problem: str
) -> None:
    _, client, headers = world
    answer = client.get(path, params=params, headers=headers["stats-auditor"])
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert json.loads(answer.text)["type"] == f"/problems/{problem}"


@pytest.mark.parametrize(
    ("start", "end", "covered"),
    [
        ("2026-07-01", "2026-07-31", "2026-07"),
        ("2026-07-01", "2026-07-30", None),  # a past month without its last day
        ("2026-11-01", "2026-11-25", "2026-11"),  # this month so far: nothing after today
        ("2026-11-01", "2026-11-24", None),
        ("2026-01-01", "2026-12-31", "2026"),
        ("2026-01-01", "2026-11-25", "2026"),
        ("2026-01-01", "2026-06-30", None),
        ("2026-02-01", "2026-02-28", "2026-02"),
        ("2026-02-02", "2026-02-28", None),
    ],
)
def test_distinct_members_are_kept_for_whole_months_and_years(
    start: str, end: str, covered: str | None
) -> None:
    assert ls.whole_period(start, end, today=date(2026, 11, 25)) == covered
