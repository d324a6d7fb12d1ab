"""`unionledger ledger status|export|rebuild|check` and `unionledger audit FILE`."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import keys
from api.app import create_app
from api.bootstrap import init_data_dir
from api.deps import log_signer
from api.settings import Settings
from ledger.sequencer import Event

PASS = "cli ledger test passphrase"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("ledger-cli") / "data"
    settings = Settings.load(data_dir=folder, environ={"UNIONLEDGER_KEY_PASSPHRASE": PASS})
    ring = init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    app = create_app(settings)
    with TestClient(app):
        sequencer = app.state.services.sequencer
        keys_recorded = app.state.services.reader.size()  # the keyring's KeyPublished
        joined = [Event("TestJoined", "official", {"m": i}) for i in range(1500 - keys_recorded)]
        sequencer.append(joined)
        sequencer.append([Event("TestLeft", "official", {"m": i}) for i in range(20)])
        sequencer.checkpoint()
    return folder, log_signer(settings, ring).verifier().key_string()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "UNIONLEDGER_KEY_PASSPHRASE": PASS},
    )


def test_status(data_dir: tuple[Path, str]) -> None:
    result = run("ledger", "status", "--data-dir", str(data_dir[0]))
    assert result.returncode == 0, result.stderr
    assert "entries:    1520" in result.stdout
    assert "checkpoint: size 1520" in result.stdout


def test_export_then_audit_the_file(tmp_path: Path, data_dir: tuple[Path, str]) -> None:
    folder, key = data_dir
    export = tmp_path / "ledger.export"
    result = run("ledger", "export", "--data-dir", str(folder), "--out", str(export))
    assert result.returncode == 0, result.stderr
    assert "exported 1520 entries" in result.stdout
    audited = run("audit", str(export), "--public-key", key)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "verified: 1520 entries" in audited.stdout

    # One changed byte in entry 700: exit 1, naming the first bad entry.
    lines = export.read_bytes().split(b"\n")
    lines[701] = lines[701].replace(b'"m":', b'"n":', 1)
    export.write_bytes(b"\n".join(lines))
    tampered = run("audit", str(export), "--public-key", key)
    assert tampered.returncode == 1
    assert "first bad entry: 70" in tampered.stdout  # 700 itself, or 701 whose prev breaks

    assert run("audit", str(tmp_path / "missing"), "--public-key", key).returncode == 2
    bad_key = run("audit", str(export), "--public-key", "not-a-key")
    assert bad_key.returncode == 2
    assert "Traceback" not in bad_key.stderr


def test_check_catches_an_edited_projection_and_rebuild_repairs_it(
    data_dir: tuple[Path, str],
) -> None:
    folder, _ = data_dir
    assert run("ledger", "check", "--data-dir", str(folder)).returncode == 0
    with sqlite3.connect(folder / "unionledger.db") as db:
        db.execute("UPDATE proj_event_counts SET count = count + 1 WHERE type = 'TestLeft'")
    check = run("ledger", "check", "--data-dir", str(folder))
    assert check.returncode == 1
    assert "TestLeft" in check.stdout
    rebuilt = run("ledger", "rebuild", "--data-dir", str(folder))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "1520 entries" in rebuilt.stdout
    assert run("ledger", "check", "--data-dir", str(folder)).returncode == 0
