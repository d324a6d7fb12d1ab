"""`unionledger stats ...`: show, statement, settlement and anomalies from a data directory and
from a server; `recompute` against a real `unionledger serve` subprocess and against an export
file: identical figures exit 0, a tampered projection row exits 1 naming the cell, a tampered
chain exits 1, bad input exits 2. The CLI runs in-process (api.cli.main), the server does not."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.cli import main
from api.deps import log_signer
from ledger import stats as ls
from ledger.accounts import PasswordCost, create_account
from tests.api.redemption_world import PASS, World, build_world
from tests.api.test_redemption_concurrency import _free_port, _serve, _stop, _wait_up

AUDITOR = ("cli-auditor", "cli auditor password")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[World, str, str, str]]:
    """The world, the server's URL, an auditor's token and the log's public key string."""
    world = build_world(tmp_path, f"sqlite:///{tmp_path / 'ledger.db'}")
    world.program("P-PACK", unit_value=5000)
    world.program("P-WATER", owner="110000", quota={"count": 9, "per": "day"}, unit_value=0)
    with world.services.engine.begin() as conn:
        create_account(
            conn,
            username=AUDITOR[0],
            password=AUDITOR[1],
            role="auditor",
            now=0,
            cost=PasswordCost.fastest(),
        )
    with TestClient(world.app) as client:
        world.register_holder(client)
        for program, station, key in [
            ("P-PACK", "ST-BJ-2", "a"),
            ("P-WATER", "ST-BJ-1", "b"),
            ("P-WATER", "ST-BJ-1", "c"),
        ]:
            answer = client.post(
                "/v1/redemptions",
                json=world.redeem_body(program, key),
                headers=world.station_token(client, station),
            )
            assert answer.status_code == 201, answer.text
    settings = world.services.settings
    key = log_signer(settings, world.services.keyring).verifier().key_string()
    world.services.sequencer.close()
    port = _free_port()
    process = _serve(world, port)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, process)
        token = httpx.post(
            f"{url}/v1/auth/login", json={"username": AUDITOR[0], "password": AUDITOR[1]}
        ).json()["access_token"]
        yield world, url, token, key
    finally:
        _stop(process)
        world.services.engine.dispose()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["stats", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def local(world: World) -> list[str]:
    os.environ["UNIONLEDGER_KEY_PASSPHRASE"] = PASS
    return ["--data-dir", str(world.services.settings.data_dir)]


def test_reports_from_a_data_directory_and_a_server(
    served: tuple[World, str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    world, url, token, _ = served
    data = local(world)
    os.environ["UNIONLEDGER_DATABASE_URL"] = world.services.settings.database_url
    try:
        code, out = run(capsys, "show", "100000", *data, "--all")
        assert code == 0, out
        lines = out.splitlines()
        assert lines[0].split()[:3] == ["part", "program", "redemptions"]
        total = next(ln for ln in lines if ln.startswith("subtree  *"))
        assert total.split()[2] == "3"
        assert "50.00" in total
        # without --all, the operator's output withholds counts below 5 too
        code, out = run(capsys, "show", "100000", *data, "--format", "json")
        assert json.loads(out)["subtree"]["total"]["suppressed"] is True
        code, out = run(capsys, "show", "100000", *data, "--all", "--format", "csv")
        rows = list(csv.DictReader(io.StringIO(out)))
        water = next(r for r in rows if r["part"] == "subtree" and r["program"] == "P-WATER")
        assert water["redemptions"] == "2"
        code, out = run(capsys, "statement", "--station", "ST-BJ-1", *data, "--format", "json")
        assert code == 0
        assert json.loads(out)["ledger"]["total"]["redemptions"] == 2
        code, out = run(capsys, "settlement", *data)
        assert code == 0
        assert "balances net to 0.00" in out
        code, out = run(capsys, "anomalies", *data, "--format", "json")
        assert code == 0
        assert json.loads(out)["items"] == []
        # the same figures from the server, with the auditor's token
        code, out = run(
            capsys, "show", "100000", "--server", url, "--token", token, "--format", "json"
        )
        assert code == 0, out
        assert json.loads(out)["subtree"]["total"]["redemptions"] == 3
        # refused and bad input: one line, exit 2
        code, out = run(capsys, "show", "NOPE", "--server", url, "--token", token)
        assert code == 2
        assert "HTTP 404" in out
        assert "Traceback" not in out
        code, out = run(capsys, "show", "100000", "--server", url)
        assert code == 2
        assert "token" in out
        code, out = run(capsys, "show", "100000", *data, "--from", "2026-13-01")
        assert code == 2
        assert "YYYY-MM-DD" in out
    finally:
        os.environ.pop("UNIONLEDGER_DATABASE_URL", None)


def test_recompute_from_a_server_and_an_export(
    served: tuple[World, str, str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    world, url, token, key = served
    code, out = run(capsys, "recompute", url, "--public-key", key, "--token", token)
    assert code == 0, out
    assert "identical" in out

    # An export file and the figures saved from the server
    figures = tmp_path / "figures.json"
    figures.write_text(
        httpx.get(f"{url}/v1/stats/export", headers={"Authorization": f"Bearer {token}"}).text
    )
    export = tmp_path / "ledger.export"
    os.environ["UNIONLEDGER_KEY_PASSPHRASE"] = PASS
    os.environ["UNIONLEDGER_DATABASE_URL"] = world.services.settings.database_url
    try:
        assert (
            main(
                [
                    "ledger",
                    "export",
                    "--data-dir",
                    str(world.services.settings.data_dir),
                    "--out",
                    str(export),
                ]
            )
            == 0
        )
    finally:
        os.environ.pop("UNIONLEDGER_DATABASE_URL", None)
    code, out = run(
        capsys, "recompute", str(export), "--public-key", key, "--figures", str(figures)
    )
    assert code == 0, out

    # A tampered projection row: the server now publishes a figure the chain does not give
    with world.services.engine.begin() as conn:
        conn.execute(
            update(ls.stats_cells)
            .where(ls.stats_cells.c.scope == "S:ST-BJ-1")
            .values(redemptions=ls.stats_cells.c.redemptions + 1)
        )
    code, out = run(capsys, "recompute", url, "--public-key", key, "--token", token)
    assert code == 1, out
    assert "DIFFERENT" in out
    assert "cell S:ST-BJ-1/P-WATER/" in out
    assert "redemptions published 3 recomputed 2" in out

    # A tampered chain (one byte of an entry in the export) does not verify
    lines = export.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b'"v":1', b'"v":2')
    bad = tmp_path / "bad.export"
    bad.write_bytes(b"\n".join(lines))
    code, out = run(capsys, "recompute", str(bad), "--public-key", key, "--figures", str(figures))
    assert code == 1
    assert "FAILED" in out

    # Usage errors
    code, out = run(capsys, "recompute", str(export), "--public-key", key)
    assert code == 2
    assert "--figures" in out
    code, out = run(capsys, "recompute", url, "--public-key", "not-a-key", "--token", token)
    assert code == 2
    figures.write_text("{}")
    code, out = run(
        capsys, "recompute", str(export), "--public-key", key, "--figures", str(figures)
    )
    assert code == 2
    assert "published figures" in out
