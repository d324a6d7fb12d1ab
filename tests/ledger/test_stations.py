"""Stations on SQLite and PostgreSQL: commands, refusals, access, listing, device keys over
time, sessions ending on revocation, rebuild, and the opening-hours rules against a model."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

import keys
from ledger import accounts, stations
from ledger.domain import SYSTEM, Actor, Forbidden, Role
from ledger.projections import compare, default_projections, rebuild, snapshot
from ledger.sequencer import Event
from ledger.stations import (
    BadCoordinates,
    BadDailyCeiling,
    BadHours,
    BadStationId,
    BadStationKey,
    BadStationText,
    DuplicateStation,
    DuplicateStationKey,
    NothingToUpdate,
    StationClosed,
    StationKeyAlreadyRevoked,
    TooManyStationKeys,
    UnknownStation,
    UnknownStationKey,
    UnknownStationKind,
    close_station,
    get_station,
    hours_open_at,
    is_open_at,
    list_stations,
    parse_hours,
    register_station,
    register_station_key,
    revoke_station_key,
    station_keys_of,
    station_public_keys,
    update_station,
    visible_station,
)
from ledger.unions import UnionClosed, UnknownUnion, close_union, create_union, move_union
from tests.ledger.conftest import Ledger
from verifier.entry import Entry, parse_entry, parse_entry_time

BEIJING_OFFICIAL = Actor(Role.OFFICIAL, "acct-00000000000000bj", scope="110000")
CHAOYANG_OFFICIAL = Actor(Role.OFFICIAL, "acct-00000000000000cy", scope="110105")
AUDITOR = Actor(Role.AUDITOR, "acct-00000000000000au")
WEEK = {day: [["08:00", "12:00"], ["13:00", "20:00"]] for day in stations.DAYS} | {"sun": []}
TABLES = [stations.stations, stations.station_keys, stations.station_ceilings]

Command = Callable[..., Entry]


def run(ledger: Ledger, command: Command, actor: Actor = SYSTEM, **kwargs: Any) -> Entry:
    return ledger.sequencer.execute(lambda tx: command(tx, actor, **kwargs))


def state(ledger: Ledger) -> tuple[int, dict[str, list[tuple[object, ...]]]]:
    with ledger.engine.connect() as conn:
        return ledger.reader.size(), snapshot(conn, TABLES)


def refused(
    ledger: Ledger, error: type[Exception], command: Command, actor: Actor = SYSTEM, **kwargs: Any
) -> Any:
    """Run a command that must fail with exactly ``error`` and leave chain and tables alone."""
    before = state(ledger)
    with pytest.raises(error) as info:
        run(ledger, command, actor, **kwargs)
    assert type(info.value) is error, info.value
    assert state(ledger) == before
    return info.value


def tree(ledger: Ledger) -> None:
    for code, kind, parent in [
        ("100000", "national", None),
        ("110000", "provincial", "100000"),
        ("110105", "county", "110000"),
        ("110108", "county", "110000"),
        ("G-CY", "enterprise", "110105"),
        ("G-HD", "enterprise", "110108"),
        ("310000", "provincial", "100000"),
        ("G-SH", "enterprise", "310000"),
    ]:
        run(ledger, create_union, code=code, name=f"工会{code}", kind=kind, parent=parent)


def station(
    ledger: Ledger, station_id: str, union: str, actor: Actor = SYSTEM, **extra: Any
) -> Entry:
    fields: dict[str, Any] = {
        "name": f"驿站{station_id}",
        "kind": "union_station",
        "location": "北京市朝阳区望京街道",
    }
    return run(ledger, register_station, actor, station=station_id, union=union, **fields | extra)


def row(ledger: Ledger, station_id: str) -> stations.StationRow:
    with ledger.engine.connect() as conn:
        found = get_station(conn, station_id)
    assert found is not None
    return found


def device() -> dict[str, str]:
    return keys.PrivateKey.generate().public_key.to_jwk()


# --- the registry ------------------------------------------------------------------------------


def test_register_update_close_with_exact_events(ledger: Ledger) -> None:
    tree(ledger)
    entry = station(
        ledger,
        "ST-CY-1",
        "G-CY",
        BEIJING_OFFICIAL,
        kind="truck_driver_home",
        lat="39.9968",
        lon="116.47",
        hours=WEEK,
    )
    assert entry.type == "StationRegistered"
    assert entry.actor == "official:acct-00000000000000bj"
    assert entry.body == {
        "station": "ST-CY-1",
        "name": "驿站ST-CY-1",
        "kind": "truck_driver_home",
        "union": "G-CY",
        "location": "北京市朝阳区望京街道",
        "lat": "39.9968",
        "lon": "116.47",
        "hours": WEEK,
        "daily_ceiling": None,
    }
    r = row(ledger, "ST-CY-1")
    assert (r.kind, r.union_code, r.status, r.hours) == (
        stations.Kind.TRUCK_DRIVER_HOME,
        "G-CY",
        stations.Status.ACTIVE,
        WEEK,
    )
    assert list(r.hours or {}) == list(stations.DAYS)  # days come back in week order
    assert r.created_at == r.updated_at == entry.time
    assert r.closed_at is None

    renamed = run(ledger, update_station, CHAOYANG_OFFICIAL, station="ST-CY-1", name="新名字")
    assert renamed.body == {"station": "ST-CY-1", "name": "新名字"}
    moved = run(
        ledger,
        update_station,
        station="ST-CY-1",
        location="",
        coordinates=(None, None),
        hours=None,
    )
    assert moved.body == {
        "station": "ST-CY-1",
        "location": "",
        "lat": None,
        "lon": None,
        "hours": None,
    }
    r = row(ledger, "ST-CY-1")
    assert (r.name, r.location, r.lat, r.lon, r.hours) == ("新名字", "", None, None, None)
    assert r.updated_at == moved.time

    key1, key2 = device(), device()
    registered = run(ledger, register_station_key, station="ST-CY-1", jwk=key1)
    kid1 = keys.jwk_thumbprint(key1)
    assert registered.body == {"station": "ST-CY-1", "kid": kid1, "x": key1["x"]}
    kid2 = run(ledger, register_station_key, station="ST-CY-1", jwk=key2).body["kid"]
    revoked = run(
        ledger, revoke_station_key, station="ST-CY-1", kid=kid2, reason="device reported stolen"
    )
    assert revoked.body == {"station": "ST-CY-1", "kid": kid2, "reason": "device reported stolen"}

    before = ledger.reader.size()
    closed = run(ledger, close_station, BEIJING_OFFICIAL, station="ST-CY-1")
    appended = [parse_entry(ledger.reader.entry(i)) for i in range(before, ledger.reader.size())]
    assert [(e.type, dict(e.body)) for e in appended] == [
        ("StationKeyRevoked", {"station": "ST-CY-1", "kid": kid1, "reason": "station closed"}),
        ("StationClosed", {"station": "ST-CY-1"}),
    ]
    r = row(ledger, "ST-CY-1")
    assert (r.status, r.closed_at, r.updated_at) == (
        stations.Status.CLOSED,
        closed.time,
        closed.time,
    )
    with ledger.engine.connect() as conn:
        listed = station_keys_of(conn, AUDITOR, "ST-CY-1")
    assert [(k.kid, k.revoke_reason) for k in listed] == [  # oldest first
        (kid1, "station closed"),
        (kid2, "device reported stolen"),
    ]
    assert [k.revoked_at for k in listed] == [closed.time, revoked.time]
    refused(ledger, StationClosed, update_station, station="ST-CY-1", name="x")
    refused(ledger, StationClosed, close_station, station="ST-CY-1")
    refused(ledger, StationClosed, register_station_key, station="ST-CY-1", jwk=device())
    refused(
        ledger,
        StationKeyAlreadyRevoked,
        revoke_station_key,
        station="ST-CY-1",
        kid=kid1,
        reason="x",
    )


def test_the_daily_ceiling_is_registered_changed_removed_and_kept_over_time(
    ledger: Ledger,
) -> None:
    tree(ledger)
    entry = station(ledger, "ST-1", "G-CY", BEIJING_OFFICIAL, daily_ceiling=50_000)
    assert entry.body["daily_ceiling"] == 50_000
    assert row(ledger, "ST-1").daily_ceiling == 50_000
    raised = run(ledger, update_station, CHAOYANG_OFFICIAL, station="ST-1", daily_ceiling=80_000)
    assert raised.body == {"station": "ST-1", "daily_ceiling": 80_000}
    assert row(ledger, "ST-1").daily_ceiling == 80_000
    assert row(ledger, "ST-1").updated_at == raised.time
    renamed = run(ledger, update_station, station="ST-1", name="改名")  # the ceiling stays
    assert "daily_ceiling" not in renamed.body
    assert row(ledger, "ST-1").daily_ceiling == 80_000
    removed = run(ledger, update_station, station="ST-1", daily_ceiling=None)
    assert removed.body == {"station": "ST-1", "daily_ceiling": None}
    assert row(ledger, "ST-1").daily_ceiling is None
    station(ledger, "ST-2", "G-CY")  # none, and no history row
    assert row(ledger, "ST-2").daily_ceiling is None
    with ledger.engine.connect() as conn:
        assert stations.ceiling_history(conn, "ST-1") == [
            (entry.time, 50_000),
            (raised.time, 80_000),
            (removed.time, None),
        ]
        assert stations.ceiling_history(conn, "ST-2") == []
    # an event from before the member existed registers a station without a ceiling
    old = {
        "station": "ST-OLD",
        "name": "x",
        "kind": "other",
        "union": "G-CY",
        "location": "",
        "lat": None,
        "lon": None,
        "hours": None,
    }
    ledger.sequencer.append([Event("StationRegistered", "test", old)])
    assert row(ledger, "ST-OLD").daily_ceiling is None
    for bad in (-1, 10**12 + 1, True, 1.5, "100"):
        refused(ledger, BadDailyCeiling, update_station, station="ST-1", daily_ceiling=bad)
        refused(
            ledger,
            BadDailyCeiling,
            register_station,
            station="ST-NEW",
            name="x",
            kind="other",
            union="G-CY",
            daily_ceiling=bad,
        )
    run(ledger, update_station, station="ST-1", daily_ceiling=10**12)
    run(ledger, update_station, station="ST-1", daily_ceiling=0)
    assert row(ledger, "ST-1").daily_ceiling == 0


def test_refusals_append_nothing(ledger: Ledger) -> None:
    tree(ledger)
    station(ledger, "ST-1", "G-CY")
    ok = {"name": "驿站", "kind": "union_station", "union": "G-CY"}

    def bad(error: type[Exception], **fields: Any) -> None:
        refused(ledger, error, register_station, **({"station": "ST-NEW"} | ok | fields))

    for station_id in ("", "-ST", "ST 1", "ST/1", "站", "S" * 65, 7):
        bad(BadStationId, station=station_id)
    for name in ("", " 驿站", "驿站 ", "a\nb", "a\u200bb", "x" * 201, None):
        bad(BadStationText, name=name)
    bad(BadStationText, location=" 空格")
    bad(BadStationText, location="x" * 201)
    bad(UnknownStationKind, kind="hotel")
    bad(UnknownStationKind, kind="UNION_STATION")
    for lat, lon in (
        ("39.9", None),
        (None, "116.4"),
        ("91", "116"),
        ("39", "180.0000001"),
        ("1e1", "2"),
        ("01.5", "2"),
        ("+1", "2"),
        ("1.", "2"),
        ("1.12345678", "2"),
        (39.9, 116.4),
    ):
        bad(BadCoordinates, lat=lat, lon=lon)
    bad(BadHours, hours={"mon": []})
    bad(BadHours, hours=WEEK | {"sun": [["20:00", "08:00"]]})
    bad(UnknownUnion, union="999999")
    bad(DuplicateStation, station="ST-1")
    run(ledger, create_union, code="G-GONE", name="将关闭", kind="enterprise", parent="110105")
    run(ledger, close_union, code="G-GONE")
    bad(UnionClosed, union="G-GONE")

    refused(ledger, NothingToUpdate, update_station, station="ST-1")
    refused(ledger, UnknownStation, update_station, station="ST-404", name="x")
    refused(ledger, BadStationText, update_station, station="ST-1", name="")
    refused(ledger, BadCoordinates, update_station, station="ST-1", coordinates=("1", None))
    refused(ledger, BadHours, update_station, station="ST-1", hours={"mon": [["8:00", "9:00"]]})
    refused(ledger, UnknownStation, close_station, station="ST-404")

    jwk = device()
    for broken in (
        {"kty": "OKP", "crv": "X25519", "x": jwk["x"]},
        {"kty": "EC", "crv": "Ed25519", "x": jwk["x"]},
        {"kty": "OKP", "crv": "Ed25519", "x": jwk["x"] + "A"},
        {"kty": "OKP", "crv": "Ed25519", "x": jwk["x"] + "="},
        {"kty": "OKP", "crv": "Ed25519"},
        {"kty": "OKP", "crv": "Ed25519", "x": jwk["x"], "d": jwk["x"]},
        [],
    ):
        refused(ledger, BadStationKey, register_station_key, station="ST-1", jwk=broken)
    refused(ledger, UnknownStation, register_station_key, station="ST-404", jwk=jwk)
    kid = run(ledger, register_station_key, station="ST-1", jwk=jwk).body["kid"]
    refused(ledger, DuplicateStationKey, register_station_key, station="ST-1", jwk=jwk)
    station(ledger, "ST-2", "G-CY")
    refused(ledger, DuplicateStationKey, register_station_key, station="ST-2", jwk=jwk)
    for _ in range(stations.MAX_ACTIVE_KEYS - 1):
        run(ledger, register_station_key, station="ST-1", jwk=device())
    refused(ledger, TooManyStationKeys, register_station_key, station="ST-1", jwk=device())
    run(ledger, revoke_station_key, station="ST-1", kid=kid, reason="retired")
    run(ledger, register_station_key, station="ST-1", jwk=device())  # room again
    refused(ledger, DuplicateStationKey, register_station_key, station="ST-2", jwk=jwk)  # revoked

    refused(ledger, UnknownStationKey, revoke_station_key, station="ST-2", kid=kid, reason="x")
    refused(ledger, UnknownStationKey, revoke_station_key, station="ST-1", kid="nope", reason="x")
    refused(
        ledger, StationKeyAlreadyRevoked, revoke_station_key, station="ST-1", kid=kid, reason="x"
    )
    refused(ledger, BadStationText, revoke_station_key, station="ST-1", kid=kid, reason="")
    refused(ledger, UnknownStation, revoke_station_key, station="ST-404", kid=kid, reason="x")


def test_officials_act_only_inside_their_subtree(ledger: Ledger) -> None:
    tree(ledger)
    station(ledger, "ST-CY", "G-CY")
    station(ledger, "ST-HD", "G-HD")
    station(ledger, "ST-SH", "G-SH")
    jwk = device()
    kid = run(ledger, register_station_key, station="ST-SH", jwk=jwk).body["kid"]

    # Outside the subtree looks exactly like missing.
    hidden = refused(
        ledger, UnknownStation, update_station, BEIJING_OFFICIAL, station="ST-SH", name="x"
    )
    missing = refused(
        ledger, UnknownStation, update_station, BEIJING_OFFICIAL, station="ST-404", name="x"
    )
    assert str(hidden).replace("ST-SH", "?") == str(missing).replace("ST-404", "?")
    refused(ledger, UnknownStation, update_station, CHAOYANG_OFFICIAL, station="ST-HD", name="x")
    refused(ledger, UnknownStation, close_station, BEIJING_OFFICIAL, station="ST-SH")
    refused(
        ledger,
        UnknownStation,
        register_station_key,
        BEIJING_OFFICIAL,
        station="ST-SH",
        jwk=device(),
    )
    refused(
        ledger,
        UnknownStation,
        revoke_station_key,
        BEIJING_OFFICIAL,
        station="ST-SH",
        kid=kid,
        reason="x",
    )
    refused(
        ledger,
        UnknownUnion,
        register_station,
        CHAOYANG_OFFICIAL,
        station="ST-NEW",
        name="x",
        kind="other",
        union="G-HD",
    )
    # An official may register in the union they administer itself.
    station(ledger, "ST-CY-OWN", "110105", CHAOYANG_OFFICIAL)

    for nobody in (
        AUDITOR,
        Actor(Role.MEMBER, "m-1", scope="m-1"),
        Actor(Role.STATION, "ST-CY", scope="ST-CY"),
        Actor(Role.OFFICIAL, "acct-x"),  # an official without a scope
        Actor(Role.OFFICIAL, "acct-y", scope="100000/110000"),  # not a union code
    ):
        for command, kwargs in (
            (register_station, {"station": "ST-X", "name": "x", "kind": "other", "union": "G-CY"}),
            (update_station, {"station": "ST-CY", "name": "x"}),
            (close_station, {"station": "ST-CY"}),
            (register_station_key, {"station": "ST-CY", "jwk": device()}),
            (revoke_station_key, {"station": "ST-SH", "kid": kid, "reason": "x"}),
        ):
            assert refused(ledger, Forbidden, command, nobody, **kwargs).code == "forbidden"

    with ledger.engine.connect() as conn:
        assert visible_station(conn, CHAOYANG_OFFICIAL, "ST-CY").union_code == "G-CY"
        assert visible_station(conn, BEIJING_OFFICIAL, "ST-HD").union_code == "G-HD"
        assert visible_station(conn, AUDITOR, "ST-SH").union_code == "G-SH"
        assert visible_station(conn, SYSTEM, "ST-SH").union_code == "G-SH"
        assert visible_station(conn, Actor(Role.STATION, "ST-CY", "ST-CY"), "ST-CY")
        for actor, station_id in (
            (CHAOYANG_OFFICIAL, "ST-HD"),
            (BEIJING_OFFICIAL, "ST-SH"),
            (Actor(Role.STATION, "ST-CY", "ST-CY"), "ST-HD"),
            (Actor(Role.MEMBER, "m-1", "m-1"), "ST-CY"),
            (AUDITOR, "ST-404"),
        ):
            with pytest.raises(UnknownStation):
                visible_station(conn, actor, station_id)
        with pytest.raises(UnknownStation):
            station_keys_of(conn, BEIJING_OFFICIAL, "ST-SH")
        assert [k.kid for k in station_keys_of(conn, AUDITOR, "ST-SH")] == [kid]


def test_list_stations_pages_filters_and_follows_moved_unions(ledger: Ledger) -> None:
    tree(ledger)
    for i in range(5):
        station(ledger, f"ST-CY-{i}", "G-CY")
    station(ledger, "ST-HD-0", "G-HD", kind="mother_infant_room")
    station(ledger, "ST-SH-0", "G-SH", kind="cultural_palace")
    run(ledger, close_station, station="ST-CY-4")

    def ids(actor: Actor, **kwargs: Any) -> list[str]:
        with ledger.engine.connect() as conn:
            return [r.station_id for r in list_stations(conn, actor, **kwargs)]

    beijing = [*(f"ST-CY-{i}" for i in range(5)), "ST-HD-0"]
    assert ids(BEIJING_OFFICIAL) == beijing
    assert ids(AUDITOR) == [*beijing, "ST-SH-0"]
    assert ids(AUDITOR, union="110000") == beijing
    assert ids(CHAOYANG_OFFICIAL) == beijing[:5]
    assert ids(BEIJING_OFFICIAL, union="110108") == ["ST-HD-0"]
    assert ids(BEIJING_OFFICIAL, kind="mother_infant_room") == ["ST-HD-0"]
    assert ids(BEIJING_OFFICIAL, status="closed") == ["ST-CY-4"]
    assert ids(BEIJING_OFFICIAL, status="active", kind="union_station") == beijing[:4]
    pages, after = [], None
    while True:
        page = ids(BEIJING_OFFICIAL, after=after, limit=2)
        pages.append(page)
        if len(page) < 2:
            break
        after = page[-1]
    assert [s for p in pages for s in p] == beijing
    with ledger.engine.connect() as conn:
        with pytest.raises(UnknownUnion):
            list_stations(conn, BEIJING_OFFICIAL, union="310000")
        with pytest.raises(UnknownUnion):
            list_stations(conn, CHAOYANG_OFFICIAL, union="110000")  # an ancestor
        with pytest.raises(UnknownUnion):
            list_stations(conn, AUDITOR, union="999999")
        with pytest.raises(UnknownStationKind):
            list_stations(conn, AUDITOR, kind="hotel")
        with pytest.raises(ValueError, match="limit"):
            list_stations(conn, AUDITOR, limit=0)
        for nobody in (Actor(Role.MEMBER, "m", "m"), Actor(Role.STATION, "ST-CY-0", "ST-CY-0")):
            with pytest.raises(Forbidden):
                list_stations(conn, nobody)
    # A union that moves takes its stations along: the subtree is read through union paths.
    run(ledger, move_union, code="G-CY", parent="110108")
    assert ids(BEIJING_OFFICIAL, union="110108") == [*beijing[:5], "ST-HD-0"]
    assert ids(CHAOYANG_OFFICIAL) == []


# --- device keys -------------------------------------------------------------------------------


def test_station_public_keys_over_time(ledger: Ledger) -> None:
    tree(ledger)
    station(ledger, "ST-1", "G-CY")
    k1, k2 = keys.PrivateKey.generate().public_key, keys.PrivateKey.generate().public_key
    first = run(ledger, register_station_key, station="ST-1", jwk=k1.to_jwk())
    time.sleep(0.002)
    second = run(ledger, register_station_key, station="ST-1", jwk=k2)  # a PublicKey works too
    time.sleep(0.002)
    gone = run(ledger, revoke_station_key, station="ST-1", kid=k1.key_id, reason="stolen")
    t1, t2, t3 = (parse_entry_time(e.time) for e in (first, second, gone))
    tick = timedelta(microseconds=1)

    def at(when: datetime | None) -> set[keys.PublicKey]:
        with ledger.engine.connect() as conn:
            return set(station_public_keys(conn, "ST-1", when))

    assert at(t1 - tick) == set()
    assert at(t1) == {k1}  # registered at or before
    assert at(t2 - tick) == {k1}
    assert at(t2) == {k1, k2}
    assert at(t3 - tick) == {k1, k2}
    assert at(t3) == {k2}  # the revocation takes effect at its entry's time
    assert at(None) == {k2}
    closing = run(ledger, close_station, station="ST-1")
    t4 = parse_entry_time(closing.time)
    assert at(t4 - tick) == {k2}  # records made before the closure still verify
    assert at(t4) == set()
    assert at(None) == set()
    with ledger.engine.connect() as conn:
        assert station_public_keys(conn, "ST-404") == []
        with pytest.raises(ValueError, match="naive"):
            station_public_keys(conn, "ST-1", datetime(2026, 1, 1))


def test_revoking_a_key_or_closing_ends_the_stations_sessions(ledger: Ledger) -> None:
    tree(ledger)
    station(ledger, "ST-1", "G-CY")
    kid = run(ledger, register_station_key, station="ST-1", jwk=device()).body["kid"]
    now = int(time.time())

    def sessions() -> list[str]:
        with ledger.engine.begin() as conn:
            opened = [
                accounts.create_session(
                    conn, subject="ST-1", role=role, scope="ST-1", now=now, ttl=3600
                )[0].session_id
                for role in (Role.STATION, Role.STATION, Role.MEMBER)  # a member of that id
            ]
            accounts.create_session(
                conn, subject="ST-2", role=Role.STATION, scope="ST-2", now=now, ttl=3600
            )
        return opened

    def revoked(ids: list[str]) -> list[bool]:
        with ledger.engine.connect() as conn:
            found = [accounts.get_session(conn, i) for i in ids]
            return [s is not None and s.revoked_at is not None for s in found]

    opened = sessions()
    run(ledger, revoke_station_key, station="ST-1", kid=kid, reason="stolen")
    assert revoked(opened) == [True, True, False]
    with ledger.engine.connect() as conn:
        others = conn.execute(
            select(accounts.auth_sessions.c.revoked_at).where(
                accounts.auth_sessions.c.subject == "ST-2"
            )
        ).all()
    assert [r.revoked_at for r in others] == [None]
    opened = sessions()
    run(ledger, close_station, station="ST-1")
    assert revoked(opened) == [True, True, False]
    # A refused command ends nothing.
    opened = sessions()[:1]
    refused(ledger, StationClosed, close_station, station="ST-1")
    assert revoked(opened) == [False]


# --- rebuild -----------------------------------------------------------------------------------


def test_rebuild_reproduces_the_tables(ledger: Ledger) -> None:
    tree(ledger)
    station(ledger, "ST-1", "G-CY", hours=WEEK, lat="39.9", lon="116.4")
    station(ledger, "ST-2", "G-HD", kind="other")
    station(ledger, "ST-3", "G-SH")
    kid = run(ledger, register_station_key, station="ST-1", jwk=device()).body["kid"]
    run(ledger, register_station_key, station="ST-2", jwk=device())
    run(ledger, register_station_key, station="ST-3", jwk=device())
    run(ledger, revoke_station_key, station="ST-1", kid=kid, reason="lost")
    run(ledger, update_station, station="ST-1", hours=None, name="改名")
    run(ledger, update_station, station="ST-1", daily_ceiling=30_000)
    run(ledger, update_station, station="ST-1", daily_ceiling=None)
    station(ledger, "ST-4", "G-SH", daily_ceiling=0)
    run(ledger, close_station, station="ST-3")
    before = state(ledger)[1]
    projections = default_projections()
    assert compare(ledger.engine, projections) == []

    with ledger.engine.begin() as conn:  # what a database administrator's edit looks like
        conn.execute(
            update(stations.station_keys)
            .where(stations.station_keys.c.kid == kid)
            .values(revoked_at=None, revoke_reason=None)
        )
    assert any(kid in d for d in compare(ledger.engine, projections))
    assert rebuild(ledger.writer, projections) == ledger.reader.size()
    assert compare(ledger.engine, projections) == []
    assert state(ledger)[1] == before


def test_events_the_commands_would_refuse_change_nothing(ledger: Ledger) -> None:
    """The projection must not fail on anything the ledger holds: an event that a direct
    append slipped past the commands is ignored, and replays ignore it too."""
    tree(ledger)
    station(ledger, "ST-1", "G-CY")
    station(ledger, "ST-C", "G-CY")
    jwk = device()
    kid = run(ledger, register_station_key, station="ST-1", jwk=jwk).body["kid"]
    run(ledger, close_station, station="ST-C")
    before = state(ledger)[1]
    base = {
        "name": "x",
        "kind": "other",
        "union": "G-CY",
        "location": "",
        "lat": None,
        "lon": None,
        "hours": None,
    }
    other = device()

    def registered(**fields: Any) -> Event:
        return Event("StationRegistered", "test", base | {"station": "ST-X"} | fields)

    ledger.sequencer.append(
        [
            registered(station="ST-1"),  # a duplicate
            registered(station="-bad"),
            registered(union="999999"),
            registered(kind="hotel"),
            registered(name=""),
            registered(location=7),
            registered(lat="1"),
            registered(lat="1", lon="200"),
            registered(hours={"mon": []}),
            registered(daily_ceiling=-1),
            registered(daily_ceiling=True),
            registered(daily_ceiling="100"),
            registered(daily_ceiling=10**12 + 1),
            Event(
                "StationRegistered",
                "test",
                {"station": "ST-Y", "name": "x", "kind": "other", "union": "G-CY", "location": ""},
            ),
            Event("StationUpdated", "test", {"station": "ST-1", "name": ""}),
            Event("StationUpdated", "test", {"station": "ST-1", "lat": "1"}),
            Event("StationUpdated", "test", {"station": "ST-1", "hours": "always"}),
            Event("StationUpdated", "test", {"station": "ST-1", "daily_ceiling": "1"}),
            Event("StationUpdated", "test", {"station": "ST-1", "name": "y", "daily_ceiling": -1}),
            Event("StationUpdated", "test", {"station": "ST-C", "daily_ceiling": 5}),
            Event("StationUpdated", "test", {"station": "ST-1", "name": "x", "location": 7}),
            Event("StationUpdated", "test", {"station": "ST-C", "name": "reopened?"}),
            Event("StationUpdated", "test", {"station": "ST-404", "name": "x"}),
            Event("StationUpdated", "test", {"station": "ST-1"}),
            Event("StationClosed", "test", {"station": "ST-404"}),
            Event("StationClosed", "test", {"station": 7}),
            Event("StationKeyRegistered", "test", {"station": "ST-1", "kid": kid, "x": jwk["x"]}),
            Event("StationKeyRegistered", "test", {"station": "ST-1", "kid": "k", "x": other["x"]}),
            Event("StationKeyRegistered", "test", {"station": "ST-1", "kid": "k", "x": "!!"}),
            Event(
                "StationKeyRegistered",
                "test",
                {"station": "ST-C", "kid": keys.jwk_thumbprint(other), "x": other["x"]},
            ),
            Event("StationKeyRevoked", "test", {"station": "ST-C", "kid": kid, "reason": "x"}),
            Event("StationKeyRevoked", "test", {"station": "ST-1", "kid": kid, "reason": ""}),
            Event("StationKeyRevoked", "test", {"station": "ST-1", "kid": 7, "reason": "x"}),
        ]
    )
    assert state(ledger)[1] == before
    assert compare(ledger.engine, default_projections()) == []


# --- opening hours -----------------------------------------------------------------------------

MINUTES = st.integers(0, 1440)


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, list[list[int]]]:
    """Valid schedules in minutes: per day, distinct sorted bounds paired up."""
    out = {}
    for day in stations.DAYS:
        bounds = sorted(draw(st.sets(MINUTES, max_size=2 * stations.MAX_INTERVALS)))
        bounds = bounds[: len(bounds) - len(bounds) % 2]
        out[day] = [[bounds[i], bounds[i + 1]] for i in range(0, len(bounds), 2)]
    return out


def as_text(schedule: dict[str, list[list[int]]]) -> dict[str, list[list[str]]]:
    return {day: [[hhmm(a), hhmm(b)] for a, b in spans] for day, spans in schedule.items()}


def model_open(schedule: dict[str, list[list[int]]], when: datetime) -> bool:
    # China has used UTC+8 without daylight saving since 1991: a fixed offset, no tz database.
    local = when.astimezone(UTC).replace(tzinfo=None) + timedelta(hours=8)
    minute = local.hour * 60 + local.minute
    return any(a <= minute < b for a, b in schedule[stations.DAYS[local.weekday()]])


WHEN = st.datetimes(
    min_value=datetime(1992, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=300)
@given(schedules(), st.lists(WHEN, min_size=1, max_size=20))
def test_is_open_at_agrees_with_a_fixed_offset_model(
    schedule: dict[str, list[list[int]]], moments: list[datetime]
) -> None:
    hours = parse_hours(as_text(schedule))
    assert hours == as_text(schedule)
    assert parse_hours(hours) == hours  # idempotent
    assert stations.hours_text(hours) == stations.hours_text(parse_hours(hours))
    for when in moments:
        assert hours_open_at(hours, when) == model_open(schedule, when)
        assert hours_open_at(None, when)
        # Any offset: the same instant.
        shifted = when.astimezone(stations.LOCAL_TIME)
        assert hours_open_at(hours, shifted) == model_open(schedule, when)


@settings(max_examples=300)
@given(st.lists(st.tuples(MINUTES, MINUTES), max_size=stations.MAX_INTERVALS + 2))
def test_the_hours_parser_accepts_exactly_ordered_apart_intervals(
    spans: list[tuple[int, int]],
) -> None:
    previous, valid = -1, len(spans) <= stations.MAX_INTERVALS
    for start, end in spans:
        valid = valid and start < end and start > previous
        previous = end
    day = [[hhmm(a), hhmm(b)] for a, b in spans]
    hours = {d: [] for d in stations.DAYS} | {"wed": day}
    if valid:
        assert parse_hours(hours) == hours
    else:
        with pytest.raises(BadHours):
            parse_hours(hours)


def test_hours_edges() -> None:
    empty: dict[str, list[list[str]]] = {d: [] for d in stations.DAYS}
    for bad in (
        [],
        {**empty, "holiday": []},
        {k: v for k, v in empty.items() if k != "sun"},
        {**empty, "mon": [["08:00"]]},
        {**empty, "mon": [["08:00", "09:00", "10:00"]]},
        {**empty, "mon": [["24:00", "24:00"]]},
        {**empty, "mon": [["08:00", "08:00"]]},
        {**empty, "mon": [["08:00", "24:01"]]},
        {**empty, "mon": [["8:00", "09:00"]]},
        {**empty, "mon": [["08:00", "09:60"]]},
        {**empty, "mon": [["08:00", "12:00"], ["12:00", "13:00"]]},  # touching: one interval
        {**empty, "mon": [[8, 9]]},
        {**empty, "mon": "08:00-20:00"},
        {**empty, "mon": None},
        "always",
    ):
        with pytest.raises(BadHours):
            parse_hours(bad)
    assert parse_hours(None) is None
    full = {**empty, "mon": [["00:00", "24:00"]], "tue": (("08:00", "09:00"),)}
    assert parse_hours(full) == {**empty, "mon": [["00:00", "24:00"]], "tue": [["08:00", "09:00"]]}
    hours = parse_hours({**empty, "mon": [["08:00", "20:00"]]})
    row = stations.StationRow(
        "ST-1", "x", stations.Kind.OTHER, "G", "", None, None, hours, stations.Status.CLOSED,
        "", "", None,
    )  # fmt: skip
    # 2026-11-23 is a Monday: 08:00 in Beijing is 00:00 UTC.
    assert is_open_at(row, datetime(2026, 11, 23, 0, 0, tzinfo=UTC))
    assert not is_open_at(row, datetime(2026, 11, 22, 23, 59, 59, 999999, tzinfo=UTC))
    assert is_open_at(row, datetime(2026, 11, 23, 11, 59, 59, tzinfo=UTC))
    assert not is_open_at(row, datetime(2026, 11, 23, 12, 0, tzinfo=UTC))  # 20:00 excluded
    with pytest.raises(ValueError, match="naive"):
        is_open_at(row, datetime(2026, 11, 23, 12, 0))
