"""The public log API and tlog tiles, and `unionledger audit` against a real HTTP server."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

import keys
from api.app import create_app
from api.bootstrap import init_data_dir
from api.settings import Settings
from ledger.sequencer import Event
from verifier.checkpoint import verify_checkpoint
from verifier.merkle import leaf_hash, verify_consistency, verify_inclusion
from verifier.note import NoteVerifier
from verifier.receipt import Receipt, verify_receipt
from verifier.tiles import decode_entry_bundle

PASS = "log routes test passphrase"
SIZE = 700


def build_app(tmp_path: Path, url: str | None = None) -> FastAPI:
    env = {"UNIONLEDGER_KEY_PASSPHRASE": PASS}
    if url:
        env["UNIONLEDGER_DATABASE_URL"] = url
    settings = Settings.load(data_dir=tmp_path / "data", environ=env)
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    return create_app(settings)


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    app = build_app(tmp_path, database_url)
    with TestClient(app, raise_server_exceptions=False) as c:
        sequencer = app.state.services.sequencer
        keys_recorded = app.state.services.reader.size()  # the keyring's KeyPublished
        assert 0 < keys_recorded < 350
        for start in range(keys_recorded, SIZE, 350):
            end = min(SIZE, start + 350)
            sequencer.append([Event("TestAppended", "test", {"i": i}) for i in range(start, end)])
        sequencer.checkpoint()
        yield c


def b64(items: list[str]) -> list[bytes]:
    return [base64.b64decode(x) for x in items]


def test_checkpoint_key_entries_and_proofs(client: TestClient) -> None:
    key = client.get("/v1/log/public-key")
    assert key.headers["content-type"].startswith("text/plain")
    verifier = NoteVerifier.from_key_string(key.text.strip())
    note = client.get("/v1/log/checkpoint").text
    assert client.get("/tlog/checkpoint").text == note
    cp = verify_checkpoint(note, verifier)
    assert cp.size == SIZE

    page = client.get("/v1/log/entries", params={"start": 100, "end": 103})
    assert page.headers["content-type"] == "application/x-ndjson"
    lines = page.content.split(b"\n")
    assert lines[-1] == b""
    assert len(lines) == 4
    proof = client.get("/v1/log/proof/inclusion", params={"index": 101, "tree_size": SIZE}).json()
    assert proof["index"] == 101
    assert proof["tree_size"] == SIZE
    verify_inclusion(leaf_hash(lines[1]), 101, SIZE, b64(proof["hashes"]), cp.root_hash)

    old = client.get("/v1/log/proof/inclusion", params={"index": 0, "tree_size": 300}).json()
    first_root_proof = client.get(
        "/v1/log/proof/consistency", params={"first": 300, "second": SIZE}
    ).json()
    assert first_root_proof["first"] == 300
    # Root at 300 from the inclusion proof of entry 0 is not enough: compute from entries.
    from verifier.merkle import root_from_leaf_hashes

    entries = []
    for start in range(0, 300, 100):
        entries += client.get(
            "/v1/log/entries", params={"start": start, "end": start + 100}
        ).content.split(b"\n")[:-1]
    root300 = root_from_leaf_hashes([leaf_hash(e) for e in entries])
    verify_inclusion(leaf_hash(entries[0]), 0, 300, b64(old["hashes"]), root300)
    verify_consistency(300, SIZE, root300, cp.root_hash, b64(first_root_proof["hashes"]))

    receipt = Receipt.from_json(client.get("/v1/log/receipt/42").text)
    assert verify_receipt(receipt, verifier).index == 42


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/log/entries?start=5&end=5", 404),
        ("/v1/log/entries?start=690&end=701", 404),
        ("/v1/log/entries?start=0&end=1001", 404),
        ("/v1/log/entries?start=-1&end=3", 422),
        ("/v1/log/entries?start=abc&end=3", 422),
        ("/v1/log/entries", 422),
        ("/v1/log/proof/inclusion?index=700&tree_size=700", 404),
        ("/v1/log/proof/inclusion?index=1&tree_size=701", 404),
        ("/v1/log/proof/inclusion?index=99999999999999999999&tree_size=1", 422),
        ("/v1/log/proof/consistency?first=10&second=5", 404),
        ("/v1/log/proof/consistency?first=0&second=5", 404),
        ("/v1/log/proof/consistency?first=1&second=9999", 404),
        ("/v1/log/receipt/700", 404),
        ("/v1/log/receipt/-3", 422),
        ("/tlog/tile/0/x", 404),
        ("/tlog/tile/0/003", 404),
        ("/tlog/tile/0/002.p/189", 404),
        ("/tlog/tile/0/002.p/0", 404),
        ("/tlog/tile/entries/003", 404),
    ],
)
def test_bad_parameters_are_problems_never_500(client: TestClient, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_tiles_follow_c2sp(client: TestClient) -> None:
    # 700 entries: full level-0 tiles 000 and 001, partial 002.p/188, level 1: 000.p/2.
    full = client.get("/tlog/tile/0/001")
    assert len(full.content) == 8192
    assert "immutable" in full.headers["cache-control"]
    partial = client.get("/tlog/tile/0/002.p/188")
    assert len(partial.content) == 188 * 32
    assert client.get("/tlog/tile/0/002.p/10").content == partial.content[: 10 * 32]
    level1 = client.get("/tlog/tile/1/000.p/2").content
    assert len(level1) == 64
    bundle = decode_entry_bundle(client.get("/tlog/tile/entries/001").content)
    assert len(bundle) == 256
    assert [leaf_hash(e) for e in bundle] == [full.content[i : i + 32] for i in range(0, 8192, 32)]
    partial_entries = decode_entry_bundle(client.get("/tlog/tile/entries/002.p/188").content)
    assert len(partial_entries) == 188


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serving(app: FastAPI) -> Iterator[str]:
    """``app`` served over real HTTP on 127.0.0.1 while the block runs: its base URL."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_cli_audit_over_real_http_with_state(tmp_path: Path) -> None:
    app = build_app(tmp_path)
    with _serving(app) as base:
        sequencer = app.state.services.sequencer
        total = 1200 - app.state.services.reader.size()  # after the keyring's KeyPublished
        sequencer.append([Event("TestAppended", "test", {"i": i}) for i in range(total)])
        sequencer.checkpoint()
        key = httpx.get(f"{base}/v1/log/public-key").text.strip()
        state = tmp_path / "audit.state"

        def audit() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "api.cli",
                    "audit",
                    base,
                    "--public-key",
                    key,
                    "--state",
                    str(state),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        first = audit()
        assert first.returncode == 0, first.stdout + first.stderr
        assert "verified: 1200 entries" in first.stdout
        assert json.loads(state.read_text())["size"] == 1200
        sequencer.append([Event("TestAppended", "test", {"i": 1})])
        sequencer.checkpoint()
        second = audit()
        assert second.returncode == 0, second.stdout + second.stderr
        assert "consistent with size 1200" in second.stdout

        wrong_key = keys.PrivateKey.generate()
        from verifier.note import NoteSigner

        other = NoteSigner(key.split("+")[0], wrong_key).verifier().key_string()
        bad = subprocess.run(
            [sys.executable, "-m", "api.cli", "audit", base, "--public-key", other],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert bad.returncode == 1
        assert "FAILED" in bad.stdout
        unreachable = subprocess.run(
            [
                sys.executable,
                "-m",
                "api.cli",
                "audit",
                f"http://127.0.0.1:{_free_port()}",
                "--public-key",
                key,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert unreachable.returncode == 2
        assert "Traceback" not in unreachable.stderr


def _audit(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "audit", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_audit_across_a_log_key_rotation(tmp_path: Path) -> None:
    """After the log key is rotated, an auditor holding only the old key cannot verify the new
    checkpoints; with both keys (`--public-key` twice), or with only the pinned root key
    (`--root`: the log key from the server's trust list verified against it), they can."""
    env = {"UNIONLEDGER_KEY_PASSPHRASE": PASS}
    settings = Settings.load(data_dir=tmp_path / "data", environ=env)
    init_data_dir(settings, keys.utc_now() - timedelta(hours=1), kdf=keys.KdfParams.fastest())
    app = create_app(settings)
    services = app.state.services
    store = keys.KeyStore(settings.data_dir)
    ring = store.load(PASS)
    root = ring.current(keys.Role.ROOT, keys.utc_now()).public_key.to_jwk()
    (tmp_path / "root.jwk").write_text(json.dumps(root))
    (tmp_path / "other.jwk").write_text(json.dumps(keys.PrivateKey.generate().public_key.to_jwk()))
    with _serving(app) as base:
        old = httpx.get(f"{base}/v1/log/public-key").text.strip()
        with store.locked():
            rotated, _ = store.load(PASS).rotate(
                keys.Role.LOG, keys.utc_now(), lead_time=timedelta(0)
            )
            store.save(rotated, PASS)
        assert services.watcher.check() is True
        services.sequencer.append([Event("TestAppended", "test", {"i": 1})])
        services.sequencer.checkpoint()
        new = httpx.get(f"{base}/v1/log/public-key").text.strip()
        assert new != old

        only_old = _audit(base, "--public-key", old)
        assert only_old.returncode == 1, only_old.stdout + only_old.stderr
        assert "no signature by a trusted key" in only_old.stdout
        both = _audit(base, "--public-key", old, "--public-key", new)
        assert both.returncode == 0, both.stdout + both.stderr
        assert both.stdout.startswith("verified: ")
        by_root = _audit(base, "--root", str(tmp_path / "root.jwk"))
        assert by_root.returncode == 0, by_root.stdout + by_root.stderr
        wrong_root = _audit(base, "--root", str(tmp_path / "other.jwk"))
        assert wrong_root.returncode == 1
        assert "FAILED" in wrong_root.stdout
        assert "trust list" in wrong_root.stdout
        for argv, message in (
            ((base,), "--public-key"),
            ((str(tmp_path / "x.export"), "--root", str(tmp_path / "root.jwk")), "export"),
            ((base, "--root", str(tmp_path / "missing.jwk")), "missing.jwk"),
        ):
            usage = _audit(*argv)
            assert usage.returncode == 2, usage.stderr
            assert message in usage.stderr
            assert "Traceback" not in usage.stderr
