"""The ``unionledger`` CLI, run as a real subprocess: exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest

from ledger.db import make_engine
from ledger.log import LogReader
from verifier.entry import parse_entry

PASS = "cli test passphrase, long enough"


def run(*args: str, env: dict[str, str] | None = None, ok: bool = True):  # type: ignore[no-untyped-def]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("UNIONLEDGER_")}
    full_env.update(env if env is not None else {"UNIONLEDGER_KEY_PASSPHRASE": PASS})
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def assert_one_line_error(result, code: int) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = [x for x in result.stderr.splitlines() if x.startswith("unionledger: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli") / "data"
    run("keys", "init", "--data-dir", str(d))
    return d


def test_help_everywhere() -> None:
    assert "serve" in run("--help").stdout
    for command in ("serve", "init", "keys"):
        assert "--help" in run(command, "--help").stdout or "usage" in run(command, "--help").stdout
    for action in ("init", "list", "rotate", "revoke", "export-public", "trust-list"):
        assert "--data-dir" in run("keys", action, "--help").stdout


def test_init_creates_root_log_api_and_national_issuer(data_dir: Path) -> None:
    listing = json.loads(run("keys", "list", "--json", "--data-dir", str(data_dir)).stdout)
    roles = sorted(k["role"] for k in listing)
    assert roles == ["api", "issuer", "log", "root"]
    assert all(k["status"] == "active" for k in listing)
    assert oct((data_dir / "keys" / "keyring.json").stat().st_mode & 0o777) == "0o600"


def test_init_twice_is_refused(data_dir: Path) -> None:
    result = run("keys", "init", "--data-dir", str(data_dir), ok=False)
    assert_one_line_error(result, 1)
    assert "already exists" in result.stderr


def test_wrong_passphrase_exits_3_with_one_line(data_dir: Path) -> None:
    result = run(
        "keys",
        "trust-list",
        "--data-dir",
        str(data_dir),
        env={"UNIONLEDGER_KEY_PASSPHRASE": "wrong passphrase!"},
        ok=False,
    )
    assert_one_line_error(result, 3)
    assert "wrong passphrase" in result.stderr
    assert PASS not in result.stderr


def test_corrupt_and_missing_key_files_exit_4(tmp_path: Path, data_dir: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "keys").mkdir(parents=True)
    content = (data_dir / "keys" / "keyring.json").read_bytes()
    (broken / "keys" / "keyring.json").write_bytes(content[: len(content) // 2])
    assert_one_line_error(run("keys", "list", "--data-dir", str(broken), ok=False), 4)
    missing = run("keys", "trust-list", "--data-dir", str(tmp_path / "none"), ok=False)
    assert_one_line_error(missing, 4)


def test_production_default_passphrase_exits_5(tmp_path: Path) -> None:
    from api.settings import DEV_PASSPHRASE

    for env in ({}, {"UNIONLEDGER_KEY_PASSPHRASE": DEV_PASSPHRASE}):
        result = run("keys", "init", "--data-dir", str(tmp_path / "p"), env=env, ok=False)
        assert_one_line_error(result, 5)


def test_rotate_revoke_export_and_trust_list(tmp_path: Path, data_dir: Path) -> None:
    d = str(data_dir)
    out = run("keys", "rotate", "issuer", "--scope", "110000", "--data-dir", d).stdout
    new_kid = out.split()[0]
    nxt = run("keys", "rotate", "issuer", "--scope", "110000", "--data-dir", d).stdout.split()[0]
    again = run("keys", "rotate", "issuer", "--scope", "110000", "--data-dir", d, ok=False)
    assert_one_line_error(again, 1)
    assert "already published" in again.stderr
    listing = {
        k["kid"]: k for k in json.loads(run("keys", "list", "--json", "--data-dir", d).stdout)
    }
    assert listing[new_kid]["status"] == "active"  # first key of scope 110000: valid at once
    assert listing[nxt]["status"] == "pending"  # the next one is published 30 days ahead
    assert listing[new_kid]["not_after"] == listing[nxt]["not_before"]
    assert_one_line_error(run("keys", "revoke", "nope", "--data-dir", d, ok=False), 1)
    run("keys", "revoke", "--reason", "test", "--data-dir", d, "--", new_kid)
    listing = {
        k["kid"]: k for k in json.loads(run("keys", "list", "--json", "--data-dir", d).stdout)
    }
    assert listing[new_kid]["status"] == "revoked"

    jwks = json.loads(run("keys", "export-public", "--data-dir", d).stdout)
    assert all("d" not in k for k in jwks["keys"])
    root = next(k for k in jwks["keys"] if k["role"] == "root")
    (tmp_path / "root.jwk").write_text(json.dumps(root))
    token_file = tmp_path / "trust.jwt"
    run("keys", "trust-list", "--out", str(token_file), "--data-dir", d)
    verified = run(
        "keys", "verify-trust-list", str(token_file), "--root", str(tmp_path / "root.jwk")
    )
    assert verified.stdout.startswith("valid: signed by " + root["kid"])
    # The trust list is checked against the root, not whoever signed it.
    not_root = next(k for k in jwks["keys"] if k["role"] == "log")
    (tmp_path / "log.jwk").write_text(json.dumps({**not_root, "role": "root"}))
    refused = run(
        "keys", "verify-trust-list", str(token_file), "--root", str(tmp_path / "log.jwk"), ok=False
    )
    assert_one_line_error(refused, 1)


def test_concurrent_station_registrations_are_all_kept(tmp_path: Path, data_dir: Path) -> None:
    """Each `keys register` loads, changes and saves the keyring under its lock."""
    from keys import PrivateKey

    devices = [PrivateKey.generate() for _ in range(6)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIONLEDGER_")}
    env["UNIONLEDGER_KEY_PASSPHRASE"] = PASS
    procs = []
    for i, device in enumerate(devices):
        jwk_file = tmp_path / f"device{i}.jwk"
        jwk_file.write_text(json.dumps(device.public_key.to_jwk()))
        args = ["keys", "register", "station", "--scope", f"ST-{i}", "--jwk", str(jwk_file)]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "api.cli", *args, "--data-dir", str(data_dir)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    listing = json.loads(run("keys", "list", "--json", "--data-dir", str(data_dir)).stdout)
    stations = {k["kid"]: k["scope"] for k in listing if k["role"] == "station"}
    assert stations == {d.key_id: f"ST-{i}" for i, d in enumerate(devices)}
    # The device's private key never reached the server's keyring.
    text = (data_dir / "keys" / "keyring.json").read_text()
    station_entries = [k for k in json.loads(text)["keys"] if k["role"] == "station"]
    assert all("private" not in k for k in station_entries)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_demo_answers_over_real_http(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIONLEDGER_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "api.cli",
            "serve",
            "--demo",
            "--data-dir",
            str(tmp_path / "demo"),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert response.json()["status"] == "ok"
        assert httpx.get(f"http://127.0.0.1:{port}/docs").status_code == 200
        missing = httpx.get(f"http://127.0.0.1:{port}/nope")
        assert missing.headers["content-type"] == "application/problem+json"
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}" in output
    assert str(tmp_path / "demo") in output
    assert "WARNING" in output  # the development passphrase is announced loudly
    assert (tmp_path / "demo" / "keys" / "keyring.json").exists()


def test_init_creates_the_national_federation_and_provinces(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    csv_file = tmp_path / "provinces.csv"
    csv_file.write_text(
        "code,name_zh,name_en,federation_zh\n"
        "110000,北京市,Beijing,北京市总工会\n"
        "440000,广东省,Guangdong,广东省总工会\n",
        encoding="utf-8",
    )
    first = run("init", "--data-dir", d, "--provinces", str(csv_file))
    assert "created unions: 100000, 110000, 440000" in first.stdout
    again = run("init", "--data-dir", d, "--provinces", str(csv_file))
    assert "created unions" not in again.stdout  # idempotent: what exists is kept
    # The keyring's four keys (root, log, api, the national issuer: KeyPublished) and then
    # the three unions.
    assert "entries:    7\n" in run("ledger", "status", "--data-dir", d).stdout

    bad = tmp_path / "bad.csv"
    bad.write_text("code,name\n120000,天津\n", encoding="utf-8")
    assert_one_line_error(run("init", "--data-dir", d, "--provinces", str(bad), ok=False), 2)
    broken = tmp_path / "broken.csv"
    broken.write_text("code,name_zh,name_en,federation_zh\n12 0000,天津市,Tianjin,x\n")
    assert_one_line_error(run("init", "--data-dir", d, "--provinces", str(broken), ok=False), 2)
    # The keyring's four keys (root, log, api, the national issuer: KeyPublished) and then
    # the three unions.
    assert "entries:    7\n" in run("ledger", "status", "--data-dir", d).stdout


def test_init_with_the_shared_reference_provinces(tmp_path: Path) -> None:
    result = run("init", "--data-dir", str(tmp_path / "data"), "--provinces")
    created = result.stdout.split("created unions: ")[1].split(", ")
    assert len(created) == 32
    assert created[0] == "100000"


def test_a_hand_edit_of_the_records_is_refused_until_resealed(tmp_path: Path) -> None:
    """docs/keys.md section 4.5: un-revoking a key by editing the file stops every command
    that opens the keyring with the passphrase (exit 4, one line naming the way out);
    `keys list` still shows the records; `keys reseal` accepts them as they stand."""
    d = str(tmp_path / "data")
    run("keys", "init", "--data-dir", d)
    kid = run("keys", "rotate", "issuer", "--scope", "440000", "--data-dir", d).stdout.split()[0]
    run("keys", "revoke", "--data-dir", d, "--", kid)
    path = tmp_path / "data" / "keys" / "keyring.json"
    doc = json.loads(path.read_text())
    next(e for e in doc["keys"] if e["kid"] == kid).pop("revoked_at")
    path.write_text(json.dumps(doc))
    for command in (("trust-list",), ("rotate", "api")):
        refused = run("keys", *command, "--data-dir", d, ok=False)
        assert_one_line_error(refused, 4)
        assert "changed without the passphrase" in refused.stderr
        assert "keys reseal" in refused.stderr
    listing = json.loads(run("keys", "list", "--json", "--data-dir", d).stdout)
    assert next(k for k in listing if k["kid"] == kid)["status"] == "active"
    assert "sealed the 5 key records" in run("keys", "reseal", "--data-dir", d).stdout
    run("keys", "trust-list", "--data-dir", d)
    wrong = {"UNIONLEDGER_KEY_PASSPHRASE": "not the passphrase at all"}
    assert_one_line_error(run("keys", "reseal", "--data-dir", d, env=wrong, ok=False), 3)


def test_a_revocation_is_on_the_ledger_at_once_and_outlives_a_rollback(tmp_path: Path) -> None:
    """docs/keys.md section 4.6: `keys revoke` on a data directory with a ledger records the
    revocation on the chain in the same command; an older keyring file put back (it opens:
    its seal is right) then changes nothing: `keys trust-list` still lists the key revoked."""
    d = str(tmp_path / "data")
    run("init", "--data-dir", d)
    status = run("ledger", "status", "--data-dir", d).stdout
    path = tmp_path / "data" / "keys" / "keyring.json"
    backup = path.read_bytes()
    issuer = next(
        k
        for k in json.loads(run("keys", "list", "--json", "--data-dir", d).stdout)
        if k["role"] == "issuer"
    )["kid"]
    run("keys", "revoke", "--at", "2026-12-01T00:00:00Z", "--data-dir", d, "--", issuer)
    after = run("ledger", "status", "--data-dir", d).stdout
    before_size = int(status.split()[1])
    assert f"entries:    {before_size + 1}\n" in after  # one KeyRevoked
    path.write_bytes(backup)
    token = run("keys", "trust-list", "--data-dir", d).stdout.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    listed = {k["kid"]: k for k in claims["keys"]}
    assert listed[issuer]["revoked"] == 1796083200  # 2026-12-01T00:00:00Z


def _chain_types(data_dir: Path) -> list[str]:
    engine = make_engine(f"sqlite:///{data_dir / 'unionledger.db'}")
    try:
        reader = LogReader(engine)
        return [parse_entry(e).type for e in reader.entries(0, reader.size())]
    finally:
        engine.dispose()


def test_key_commands_change_the_keys_that_stand_after_a_rollback(tmp_path: Path) -> None:
    """docs/keys.md 4.6: `keys rotate|revoke|list` work on the file merged with the chain. An
    older keyring file put back can neither hide a pending key (a second rotation is refused)
    nor a key it lacks (it can be revoked), and `keys revoke` prints the time that stands."""
    d = str(tmp_path / "data")
    run("init", "--data-dir", d)
    path = tmp_path / "data" / "keys" / "keyring.json"
    backup = path.read_bytes()
    pending = run("keys", "rotate", "log", "--data-dir", d).stdout.split()[0]
    api = next(
        k["kid"]
        for k in json.loads(run("keys", "list", "--json", "--data-dir", d).stdout)
        if k["role"] == "api"
    )
    run("keys", "revoke", "--at", "2026-12-01T00:00:00Z", "--data-dir", d, "--", api)
    path.write_bytes(backup)  # the file of before the rotation and the revocation

    again = run("keys", "rotate", "log", "--data-dir", d, ok=False)
    assert_one_line_error(again, 1)
    assert "rotation-pending" in again.stderr
    listing = {
        k["kid"]: k for k in json.loads(run("keys", "list", "--json", "--data-dir", d).stdout)
    }
    assert listing[pending]["status"] == "pending"  # known from the chain
    assert listing[api]["status"] == "revoked"
    assert set(listing[api]) >= {"scope", "not_after", "revoked_at", "revocation_reason"}
    assert listing[api]["scope"] is None
    later = run("keys", "revoke", "--at", "2026-12-05T00:00:00Z", "--data-dir", d, "--", api)
    assert "revoked from 2026-12-01T00:00:00Z (an earlier revocation stands)" in later.stdout
    gone = run("keys", "revoke", "--data-dir", d, "--", pending)  # the file never held it
    assert f"{pending} revoked from" in gone.stdout
    assert _chain_types(tmp_path / "data").count("KeyRevoked") == 2


def test_revoking_the_only_log_key_then_rotating_it(tmp_path: Path) -> None:
    """The ledger cannot record the revocation of its only log key (it signs nothing any
    more): the command says so in one warning line, without a traceback, and the rotation
    that follows records both."""
    d = str(tmp_path / "data")
    run("init", "--data-dir", d)
    log_key = next(
        k["kid"]
        for k in json.loads(run("keys", "list", "--json", "--data-dir", d).stdout)
        if k["role"] == "log"
    )
    revoked = run("keys", "revoke", "--reason", "compromised", "--data-dir", d, "--", log_key)
    assert "Traceback" not in revoked.stderr
    warnings = [x for x in revoked.stderr.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1
    assert "keys rotate log" in warnings[0]
    assert "KeyRevoked" not in _chain_types(tmp_path / "data")
    run("keys", "rotate", "log", "--data-dir", d)
    assert _chain_types(tmp_path / "data")[-2:] == ["KeyPublished", "KeyRevoked"]
    assert "entries:" in run("ledger", "status", "--data-dir", d).stdout
    wrong = {"UNIONLEDGER_KEY_PASSPHRASE": "not the passphrase at all"}
    assert_one_line_error(run("accounts", "list", "--data-dir", d, env=wrong, ok=False), 3)
