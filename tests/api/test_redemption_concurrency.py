"""Exactly once under contention, against real servers: two `unionledger serve` processes on
one database (SQLite or PostgreSQL), two stations, 50 clients firing at the same moment for a
quota of 1. Exactly one succeeds; the 49 others are refused with quota-used; the chain holds
one redemption."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from ledger.log import LogReader
from tests.api.redemption_world import PASS, World, build_world
from verifier.entry import parse_entry

ATTEMPTS = 50


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(world: World, port: int) -> subprocess.Popen[bytes]:
    settings = world.services.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIONLEDGER_")}
    env.update(
        {
            "UNIONLEDGER_KEY_PASSPHRASE": PASS,
            "UNIONLEDGER_DATABASE_URL": settings.database_url,
        }
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "api.cli",
            "serve",
            "--data-dir",
            str(settings.data_dir),
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server started by :func:`_serve` (kill it if it does not stop in 30 s)."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stderr is not None:
        process.stderr.close()


def _wait_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"server exited: {process.stderr.read().decode() if process.stderr else ''}"
            )
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    pytest.fail("server did not start in 60 s")


@pytest.fixture
def servers(tmp_path: Path, database_url: str) -> Iterator[tuple[World, list[str]]]:
    world = build_world(tmp_path, database_url)
    world.program("LAST-UNIT")
    with TestClient(world.app) as client:
        world.register_holder(client)  # the member app's step, in-process (its OTP sink)
    world.services.sequencer.close()
    ports = [_free_port(), _free_port()]
    processes = [_serve(world, port) for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url, process in zip(urls, processes, strict=True):
            _wait_up(url, process)
        yield world, urls
    finally:
        for process in processes:
            process.terminate()  # all at once, then each waited for
        for process in processes:
            _stop(process)
        world.services.engine.dispose()


def test_fifty_concurrent_attempts_at_a_quota_of_one(servers: tuple[World, list[str]]) -> None:
    world, urls = servers
    plan = []  # (server url, station token, body): two stations, each on its own server
    for i, (url, station) in enumerate(zip(urls, ("ST-BJ-1", "ST-BJ-2"), strict=True)):
        with httpx.Client(base_url=url) as client:
            token = world.station_token(client, station)
        for n in range(ATTEMPTS // 2):
            plan.append((url, token, world.redeem_body("LAST-UNIT", f"{station}-{i}-{n}")))
    start = threading.Barrier(len(plan))
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def attempt(url: str, token: dict[str, str], body: dict[str, object]) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            start.wait()
            response = client.post("/v1/redemptions", json=body, headers=token)
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=attempt, args=item) for item in plan]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(answers) == ATTEMPTS
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [201] + [409] * (ATTEMPTS - 1), [r.text for r in answers][:3]
    refusals = {r.json()["type"] for r in answers if r.status_code == 409}
    assert refusals == {"/problems/quota-used"}
    reader = LogReader(world.services.engine)
    events = [
        e
        for e in map(parse_entry, reader.entries(0, reader.size()))
        if e.type == "RedemptionRecorded"
    ]
    assert len(events) == 1
