"""`unionledger station ...` against a real `unionledger serve` subprocess: provision with a
device key registered on the ledger, verify presentations offline, redeem online and offline
(the per-day offline limit), show the status, sync (and again after a cut answer: duplicates),
and a stale cache's exit code. The CLI runs in-process (api.cli.main), the server does not."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import keys
from api import station_app, station_cli
from api.cli import main
from ledger import stations
from ledger.domain import SYSTEM
from ledger.log import LogReader
from ledger.redemptions import quota_used
from tests.api.redemption_world import World, build_world
from tests.api.test_redemption_concurrency import _free_port, _serve, _stop, _wait_up
from verifier.entry import parse_entry

STATION = "ST-BJ-1"
PROGRAM = "OFF-CLI"
ONCE = "OFF-ONCE"  # once per member
OFFLINE = {"allowed": True, "per_member_per_day": 1, "station_daily_value": 10**6}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[World, str, Path]]:
    """The world, the server's URL, and a directory with the device key and the root key."""
    yield from _served(tmp_path)


def _served(tmp_path: Path, daily_ceiling: int | None = None) -> Iterator[tuple[World, str, Path]]:
    world = build_world(tmp_path, f"sqlite:///{tmp_path / 'ledger.db'}")
    world.program(PROGRAM, quota={"count": 10, "per": "program"}, offline=OFFLINE)
    world.program(ONCE, offline=OFFLINE)
    if daily_ceiling is not None:
        world.run(
            lambda tx: stations.update_station(
                tx, SYSTEM, station=STATION, daily_ceiling=daily_ceiling
            )
        )
    device = keys.PrivateKey.generate()
    world.run(
        lambda tx: stations.register_station_key(tx, SYSTEM, station=STATION, jwk=device.public_key)
    )
    files = tmp_path / "files"
    files.mkdir()
    (files / "device.key").write_text(device.seed().hex() + "\n")
    root = world.services.keyring.current(keys.Role.ROOT, keys.utc_now()).public_key
    (files / "root.jwk").write_text(json.dumps(root.to_jwk()))
    with TestClient(world.app) as client:
        world.register_holder(client)
    world.services.sequencer.close()
    port = _free_port()
    process = _serve(world, port)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, process)
        yield world, url, files
    finally:
        _stop(process)
        world.services.engine.dispose()


def events(w: World, type_: str) -> list[Mapping[str, Any]]:
    reader = LogReader(w.services.engine)
    return [e.body for e in map(parse_entry, reader.entries(0, reader.size())) if e.type == type_]


def used(w: World) -> int:
    with w.services.engine.connect() as conn:
        return quota_used(conn, w.member_id, PROGRAM, "program")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["station", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def expect(
    capsys: pytest.CaptureFixture[str], exit_code: int, argv: list[str], *phrases: str
) -> str:
    """Run ``unionledger station ARGV``: it exits ``exit_code`` and prints every phrase."""
    code, out = run(capsys, *argv)
    assert code == exit_code, out
    for phrase in phrases:
        assert phrase in out, out
    return out


def test_station_commands_end_to_end(
    served: tuple[World, str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w, url, files = served
    d = str(tmp_path / "station")
    provision = ["provision", "--server", url, "--station", STATION, "--dir", d]
    provision += ["--device-key", str(files / "device.key")]
    expect(capsys, station_cli.EXIT_USAGE, provision, "--root is required")
    expect(capsys, station_cli.EXIT_USAGE, ["verify", "--dir", d, "x"], "station provision")
    expect(
        capsys,
        0,
        [*provision, "--root", str(files / "root.jwk")],
        f"program {PROGRAM} v1: offline up to 1 per member per day",
        "programs: fresh",
    )

    text, _ = w.qr()
    expect(capsys, 0, ["verify", "--dir", d, text], f"valid: member {w.member_id}")
    tampered = text[:40] + ("A" if text[40] != "A" else "B") + text[41:]
    assert expect(capsys, 1, ["verify", "--dir", d, tampered]).startswith("refused: ")

    redeem = ["redeem", "--dir", d, "--program", PROGRAM]
    expect(capsys, 0, [*redeem, w.qr()[0]], "redeemed online", "quota left: 9")
    assert used(w) == 1
    out = expect(capsys, 1, ["redeem", "--dir", d, "--program", "NO-SUCH", w.qr()[0]])
    assert out.startswith("refused: ")

    left = "offline quota left today at this station"
    verify = ["verify", "--dir", d, "--program", PROGRAM]
    expect(capsys, 0, [*verify, w.qr()[0]], f"{PROGRAM}: {left}: 1 of 1, 10000.00 yuan")
    expect(
        capsys,
        0,
        [*redeem, "--offline", w.qr()[0]],
        "(pending sync): record 1",
        f"{left}: 0 of 1, 9950.00 yuan",  # the remaining quota, with the verdict
    )
    expect(capsys, 1, [*redeem, "--offline", w.qr()[0]], "refused: offline-member-limit")
    out = expect(capsys, 0, ["verify", "--dir", d, w.qr()[0]], f"{PROGRAM}: {left}: 0 of 1")
    assert f"{ONCE}: {left}: 1 of 1" in out  # every program redeemable offline here
    doc = station_cli.verify_text(d, w.qr()[0], program=PROGRAM)
    assert (doc["remaining"], doc["offline_remaining"][PROGRAM]["program_value"]) == (0, 995_000)

    status = json.loads(expect(capsys, 0, ["status", "--dir", d, "--json"]))
    assert (status["pending"], status["last_sync"], status["stale"]) == (1, None, False)
    assert (status["today"]["records"], status["today"]["programs"]) == (1, {PROGRAM: 5000})
    expect(capsys, 0, ["status", "--dir", d], "1 pending", "last sync: never")

    expect(
        capsys,
        0,
        ["sync", "--dir", d],
        "synced 1 record(s): 1 accepted, 0 duplicate, 0 conflict, 0 refused; 0 pending",
    )
    recorded = events(w, "OfflineRedemptionRecorded")
    assert [(e["seq"], e["member"]) for e in recorded] == [(1, w.member_id)]
    assert used(w) == 2
    size = LogReader(w.services.engine).size()

    # The answer was lost (a cut connection): the record is pending again, the resend is a
    # duplicate, nothing is appended twice.
    with closing(sqlite3.connect(Path(d) / station_cli.QUEUE_FILE)) as db, db:
        db.execute("UPDATE records SET status = 'pending', reason = NULL")
    expect(capsys, 0, ["sync", "--dir", d], "1 duplicate", "0 pending")
    assert LogReader(w.services.engine).size() == size
    expect(capsys, 0, ["sync", "--dir", d], "synced 0 record(s)")  # nothing to send
    status = json.loads(expect(capsys, 0, ["status", "--dir", d, "--json"]))
    assert status["pending"] == 0
    assert status["last_sync"] is not None

    # Used online, then again offline (the station cannot know): a conflict at sync, listed.
    once = ["redeem", "--dir", d, "--program", ONCE]
    expect(capsys, 0, [*once, w.qr()[0]], "redeemed online", "quota left: 0")
    expect(capsys, 0, [*once, "--offline", w.qr()[0]], "(pending sync): record 2")
    expect(capsys, 1, ["sync", "--dir", d], "1 conflict", "record 2: conflict: quota-used")
    status = json.loads(expect(capsys, 0, ["status", "--dir", d, "--json"]))
    assert status["records"] == {"pending": 0, "synced": 1, "conflict": 1, "refused": 0}
    assert [e["seq"] for e in events(w, "OfflineRedemptionConflicted")] == [2]

    # Three days later, still offline: the cache is stale.
    later = keys.utc_now() + timedelta(days=3)
    monkeypatch.setattr(station_cli, "_device_clock", lambda: later)
    stale = station_cli.EXIT_STALE
    expect(capsys, stale, ["verify", "--dir", d, w.qr(now=later)[0]], "stale-cache")
    expect(capsys, stale, [*redeem, "--offline", w.qr(now=later)[0]], "stale-cache")
    assert json.loads(expect(capsys, 0, ["status", "--dir", d, "--json"]))["stale"]


def test_unreachable_server_and_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "device.key"
    key.write_text("not hex\n")
    root = tmp_path / "root.jwk"
    root.write_text(json.dumps(keys.PrivateKey.generate().public_key.to_jwk()))
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    args = ["provision", "--server", url, "--station", STATION, "--root", str(root)]
    args += ["--device-key", str(key), "--dir", str(tmp_path / "s")]
    expect(capsys, station_cli.EXIT_KEYFILE, args, "not an Ed25519 seed")
    missing = [*args[:-4], "--device-key", str(tmp_path / "nowhere.key"), *args[-2:]]
    out = expect(capsys, station_cli.EXIT_KEYFILE, missing, "nowhere.key: no such file")
    assert "Error" not in out  # a plain line, no Python exception name
    key.write_text(keys.PrivateKey.generate().seed().hex())
    expect(capsys, station_cli.EXIT_UNREACHABLE, args, "unreachable")
    with pytest.raises(SystemExit) as exit_:
        main(["station", "redeem", "--dir", str(tmp_path), "--online", "--offline", "x"])
    assert exit_.value.code == station_cli.EXIT_USAGE


def test_the_station_daily_ceiling_is_provisioned_and_refuses_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A station whose daily_ceiling is one unit's value (50 yuan): one offline redemption of
    one program, then none of another (each program's own limits would allow it)."""
    served = _served(tmp_path, daily_ceiling=5000)
    w, url, files = next(served)
    try:
        d = str(tmp_path / "station")
        provision = ["provision", "--server", url, "--station", STATION, "--dir", d]
        provision += ["--device-key", str(files / "device.key"), "--root", str(files / "root.jwk")]
        expect(capsys, 0, provision, "worst case offline per day: 50.00 yuan")
        expect(capsys, 0, ["redeem", "--dir", d, "--program", PROGRAM, "--offline", w.qr()[0]])
        expect(
            capsys,
            1,
            ["redeem", "--dir", d, "--program", ONCE, "--offline", w.qr()[0]],
            "refused: offline-station-ceiling",
        )
        expect(capsys, 0, ["sync", "--dir", d], "1 accepted")
    finally:
        served.close()


def test_the_station_lists_and_reverses_its_own_redemptions(
    served: tuple[World, str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`station redemptions` and `station reverse` (docs/station.md section 11), and the same
    through the station app's local process (`/api/redemptions`, `/api/reverse`, section 12),
    which logs in once for all its requests: station logins are limited per client address
    (20 attempts a minute, two per login), and one login per redemption stopped a busy
    station at the tenth."""
    w, url, files = served
    d = str(tmp_path / "station")
    provision = ["provision", "--server", url, "--station", STATION, "--dir", d]
    provision += ["--device-key", str(files / "device.key"), "--root", str(files / "root.jwk")]
    expect(capsys, 0, provision)
    app = station_app.StationApp(d, timeout=10)
    server = station_app.make_server(app)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = "http://{}:{}".format(*server.server_address[:2])
    try:
        made = []
        for _ in range(10):  # the program's quota; the tenth login would have been refused
            body = {"text": w.qr()[0], "program": PROGRAM, "mode": "online"}
            answer = httpx.post(f"{base}/api/redeem", json=body, timeout=30).json()
            assert answer.get("redeemed"), answer
            made.append(answer["redemption"])
        assert used(w) == 10
        body = {"text": w.qr()[0], "program": PROGRAM, "mode": "online"}
        refused = httpx.post(f"{base}/api/redeem", json=body, timeout=30).json()
        assert (refused["redeemed"], refused["code"]) == (False, "quota-used"), refused
        page = httpx.get(f"{base}/api/redemptions", timeout=30).json()
        assert [i["redemption"] for i in page["items"]] == sorted(made, reverse=True)
        assert all(i["can_reverse"] and "receipt" not in i for i in page["items"])
        first = app.session.server.token if app.session.server else None
        assert first is not None
        for bad in (
            {},
            {"redemption": "1"},
            {"redemption": True},
            {"redemption": 1, "reason": 5},
            {"redemption": made[0], "reason": None, "extra": 1},
        ):
            assert httpx.post(f"{base}/api/reverse", json=bad).status_code == 400
        assert httpx.get(f"{base}/api/redemptions?before=x").status_code == 400
        assert app.session.server is not None
        app.session.server.token = "expired"  # as after ten minutes
        done = httpx.post(f"{base}/api/reverse", json={"redemption": made[9]}, timeout=30).json()
        assert done.get("type") == "RedemptionReversed", done
        assert app.session.server.token not in ("expired", first)  # logged in again, once
        again = httpx.post(f"{base}/api/reverse", json={"redemption": made[9]}, timeout=30)
        assert (again.json()["reversed"], again.json()["code"]) == (False, "already-reversed")
        assert used(w) == 9
    finally:
        server.shutdown()
        server.server_close()

    # The command line: one login per command.
    listing = expect(capsys, 0, ["redemptions", "--dir", d, "--limit", "2"], "older: --before")
    lines = listing.splitlines()
    assert [int(line.split()[0]) for line in lines[:2]] == [made[9], made[8]]
    assert "reversed 20" in lines[0]
    assert "reversible" in lines[1]
    assert f"member {w.member_id}" in lines[1]
    older = json.loads(
        expect(capsys, 0, ["redemptions", "--dir", d, "--json", "--before", str(made[1])])
    )
    assert ([i["redemption"] for i in older["items"]], older["next"]) == ([made[0]], None)
    assert older["items"][0]["can_reverse"] is True
    expect(capsys, 0, ["reverse", "--dir", d, str(made[0]), "--reason", "扫错了"], "reversed")
    assert used(w) == 8  # the quota is back
    assert events(w, "RedemptionReversed")[-1]["reason"] == "扫错了"
    expect(capsys, 1, ["reverse", "--dir", d, str(made[0])], "refused: already-reversed")
    expect(capsys, 1, ["reverse", "--dir", d, "999999"], "refused: unknown-redemption")
    expect(
        capsys,
        1,
        ["reverse", "--dir", d, str(made[1]), "--reason", "x" * 201],
        "refused: validation-error: reason: String should have at most 200 characters",
    )
