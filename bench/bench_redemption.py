"""Online redemption over HTTP against running servers, durable before each reply.

    python -m bench redemption      # SQLite; BENCH_SECONDS, BENCH_CONCURRENCY, BENCH_SERVERS,
                                    # BENCH_ACCESS_LOG=1 (servers log each request; default off),
                                    # BENCH_PREPARED (request bodies made before the clock),
                                    # BENCH_MEMBERS (200)

The setup writes a data directory (SQLite): a small tree, stations with device keys, members
with credentials (their holder keys stay in this process, as wallets) and a no-cost program with
a large daily quota. Then, for each mode, it starts ``unionledger serve`` processes on that
data and drives them from a separate load process (asyncio, raw HTTP/1.1 keep-alive
connections, the request bodies with their fresh QR presentations made before the clock
starts: the client must cost less than the server):

- group commit: the sequencer's default batches;
- baseline: ``UNIONLEDGER_MAX_BATCH=1``, a commit per redemption, in the same run.

Each request is a real redemption (the presentation verified, the rules judged, one
``RedemptionRecorded`` committed before the answer, which carries its receipt). It prints
redemptions per second and the latency p50/p99 of each mode, and their ratio, the servers'
CPU time per redemption, and a reference figure for the machine's speed at the time (raw
Ed25519 verifications per second on one core).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

import keys
from api.app import create_app
from api.bootstrap import init_data_dir
from api.settings import Settings
from ledger import programs, stations, unions
from ledger.domain import SYSTEM
from ledger.vault import PersonalData

PASS = "bench redemption passphrase"
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
# 128 connections (64 per server): the writers' batches then carry their fixed costs (the
# chain head, the tiles, the checkpoint, the commit) over ~60 redemptions instead of ~30, as at
# a real peak, with many more stations than that in flight (bench/README.md, session 9).
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "128"))
SERVERS = int(os.environ.get("BENCH_SERVERS", "2"))
PREPARED = int(os.environ.get("BENCH_PREPARED", "25000"))  # request bodies made ahead
MEMBERS = int(os.environ.get("BENCH_MEMBERS", "200"))
STATIONS = 8
PROGRAM = "BENCH-WATER"


def _setup(folder: Path) -> tuple[Settings, dict[str, str], list[dict[str, Any]]]:
    """The data directory; the stations' device seeds; the wallets (member id, token, seed)."""
    from ledger.identity import synthetic_id_number  # noqa: PLC0415

    settings = Settings.load(data_dir=folder / "data", environ={"UNIONLEDGER_KEY_PASSPHRASE": PASS})
    now = keys.utc_now()
    init_data_dir(settings, now, kdf=keys.KdfParams.fastest())
    devices = {f"ST-{i:03d}": keys.PrivateKey.generate() for i in range(STATIONS)}
    store = keys.KeyStore(settings.data_dir)
    with store.locked():
        ring = store.load(PASS)
        for station, device in devices.items():
            ring, _ = ring.register(
                keys.Role.STATION, device.public_key, now - timedelta(hours=1), scope=station
            )
        store.save(ring, PASS)
    app = create_app(settings)
    services = app.state.services
    run = services.sequencer.execute
    for code, kind, parent in (
        ("100000", "national", None),
        ("110000", "provincial", "100000"),
        ("G-BENCH", "enterprise", "110000"),
    ):
        run(
            lambda tx, c=code, k=kind, p=parent: unions.create_union(
                tx, SYSTEM, code=c, name=f"工会{c}", kind=k, parent=p
            )
        )
    for station in devices:
        run(
            lambda tx, s=station: stations.register_station(
                tx, SYSTEM, station=s, name=f"驿站{s}", kind="union_station", union="110000"
            )
        )
    today = datetime.now(programs.CHINA).date()
    rules = {
        "name": "bench water",
        "kind": "universal",
        "period": {"from": today.isoformat(), "until": (today + timedelta(days=2)).isoformat()},
        "quota": {"count": 1000, "per": "day"},
        "unit_value": 0,
    }
    run(
        lambda tx: programs.create_program(tx, SYSTEM, program=PROGRAM, owner="100000", rules=rules)
    )
    import random  # noqa: PLC0415

    rng = random.Random(7)  # synthetic data
    wallets = []
    for i in range(MEMBERS):
        person = PersonalData(name="测试", id_number=synthetic_id_number(rng), phone=f"139{i:08d}")
        member = run(
            lambda tx, p=person: services.members.enrol(tx, SYSTEM, union_code="G-BENCH", person=p)
        )
        holder = keys.PrivateKey.generate()
        issued = run(
            lambda tx, m=member.member_id, h=holder: services.credentials.issue(
                tx, SYSTEM, m, h.public_key
            )
        )
        wallets.append({"token": issued.token.hex(), "seed": holder.seed().hex()})
    services.sequencer.close()
    services.engine.dispose()
    return settings, {s: d.seed().hex() for s, d in devices.items()}, wallets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(settings: Settings, port: int, max_batch: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIONLEDGER_")}
    env |= {
        "UNIONLEDGER_KEY_PASSPHRASE": PASS,
        "UNIONLEDGER_MAX_BATCH": str(max_batch),
        "UNIONLEDGER_ACCESS_LOG": os.environ.get("BENCH_ACCESS_LOG", "0"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--data-dir", str(settings.data_dir),
         "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _wait(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def _station_token(url: str, station: str, seed: str) -> str:
    device = keys.PrivateKey.from_seed(bytes.fromhex(seed))
    challenge = httpx.post(f"{url}/v1/auth/station/challenge", json={"station_id": station})
    text = challenge.json()["challenge"]
    signature = device.sign(f"unionledger-station-login/1\n{station}\n{text}".encode())
    answer = httpx.post(
        f"{url}/v1/auth/station/verify",
        json={"station_id": station, "challenge": text, "signature": keys.b64url_encode(signature)},
    )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


# -- the load process ----------------------------------------------------------------------------


async def _connection(
    host: str,
    port: int,
    token: str,
    make_body: Any,
    until: float,
    latencies: list[float],
    failures: list[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST /v1/redemptions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
    )
    try:
        while time.perf_counter() < until:
            body = make_body()
            request = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
            start = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            status = int(status_line.split()[1])
            if status != 201:
                failures.append(status)
    finally:
        writer.close()


def _load(
    urls: list[str], tokens: list[str], wallets: list[dict[str, Any]], out: Any, tag: str = ""
) -> None:
    from verifier.credential import present  # noqa: PLC0415

    holders = [
        (bytes.fromhex(w["token"]), keys.PrivateKey.from_seed(bytes.fromhex(w["seed"])))
        for w in wallets
    ]
    counter = iter(range(10**9))

    def make_body() -> bytes:
        n = next(counter)
        token, holder = holders[n % len(holders)]
        challenge = n.to_bytes(4, "big")
        text = present(token, holder, disclosures=[], now=keys.utc_now(), challenge=challenge)
        return json.dumps(
            {
                "presentation": text,
                "challenge": keys.b64url_encode(challenge),
                "program": PROGRAM,
                "quantity": 1,
                "idempotency_key": f"{tag}-{n}",
            }
        ).encode()

    # The requests' bodies are made before the clock starts (each QR presentation is fresh
    # for 90 s: the run takes SECONDS), so that during the run the load process only writes
    # and reads: on two cores it shares with the servers, making a presentation per request
    # (an Ed25519 signature, CBOR, base45) took ~0.2 ms of CPU per request from them.
    prepared = [make_body() for _ in range(PREPARED)]
    made = iter(prepared)

    def next_body() -> bytes:
        return next(made, None) or make_body()  # past the prepared ones: made on the fly

    async def main() -> tuple[list[float], list[int], float]:
        latencies: list[float] = []
        failures: list[int] = []
        start = time.perf_counter()
        until = start + SECONDS
        tasks = []
        for i in range(CONCURRENCY):
            url = httpx.URL(urls[i % len(urls)])
            tasks.append(
                _connection(
                    url.host,
                    url.port or 80,
                    tokens[i % len(tokens)],
                    next_body,
                    until,
                    latencies,
                    failures,
                )
            )
        await asyncio.gather(*tasks)
        return latencies, failures, time.perf_counter() - start

    latencies, failures, elapsed = asyncio.run(main())
    out.put((latencies, failures, elapsed))


def _mode(
    settings: Settings, seeds: dict[str, str], wallets: list[dict[str, Any]], max_batch: int
) -> tuple[float, float, float, dict[int, int], float | None]:
    ports = [_free_port() for _ in range(SERVERS)]
    servers = [_serve(settings, port, max_batch) for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url in urls:
            _wait(url)
        tokens = [
            _station_token(urls[i % len(urls)], station, seed)
            for i, (station, seed) in enumerate(seeds.items())
        ]
        # Tokens are per server only in that each was issued by one: any server accepts them.
        cpu_before = _cpu_seconds(servers)
        queue: Any = multiprocessing.get_context("spawn").Queue()
        loader = multiprocessing.get_context("spawn").Process(
            target=_load, args=(urls, tokens, wallets, queue, f"batch{max_batch}")
        )
        loader.start()
        latencies, failures, elapsed = queue.get(timeout=SECONDS + 120)
        cpu_after = _cpu_seconds(servers)
        loader.join()
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)
    done = len(latencies) - len(failures)
    ordered = sorted(latencies)
    p99 = ordered[int(len(ordered) * 0.99)] if ordered else float("nan")
    counts = {code: failures.count(code) for code in sorted(set(failures))}
    cpu = None
    if cpu_before is not None and cpu_after is not None and done:
        cpu = (cpu_after - cpu_before) / done * 1000
    return done / elapsed, statistics.median(ordered) * 1000, p99 * 1000, counts, cpu


def _ed25519_rate(n: int = 3000) -> float:
    """Raw Ed25519 verifications per second of CPU in this process: a reference for how fast
    the machine is at the moment (a redemption verifies two signatures)."""
    key = keys.PrivateKey.generate()
    message = b"unionledger bench reference" * 4
    signature, public = key.sign(message), key.public_key
    start = time.thread_time()
    for _ in range(n):
        public.verify(signature, message)
    return n / (time.thread_time() - start)


def _cpu_seconds(servers: list[subprocess.Popen[bytes]]) -> float | None:
    """The servers' CPU time so far (user + system, from /proc; None where there is none):
    per redemption it varies less than the rate when the machine's speed does."""
    total = 0
    try:
        for server in servers:
            fields = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


def run() -> None:
    folder = Path(tempfile.mkdtemp(prefix="ul-bench-redeem-"))
    print(f"setup: {MEMBERS} members with credentials, {STATIONS} stations (SQLite) ...")
    settings, seeds, wallets = _setup(folder)
    print(
        f"load: {SERVERS} server process(es), {CONCURRENCY} connections, {SECONDS:.0f} s per "
        "mode, each request a fresh QR presentation; servers' access log "
        + ("on" if os.environ.get("BENCH_ACCESS_LOG", "0") == "1" else "off (BENCH_ACCESS_LOG=1)")
    )
    print(
        f"this machine now: raw Ed25519 verify {_ed25519_rate():,.0f}/s on one core"
        " (its speed moves by 20-30% between runs: compare figures of one run)"
    )
    results = {}
    for label, max_batch in (("group commit", 2000), ("commit per request", 1)):
        rate, p50, p99, failed, cpu = _mode(settings, seeds, wallets, max_batch)
        results[label] = rate
        per = f"{cpu:5.2f} ms" if cpu is not None else "   n/a  "
        print(
            f"{label:<20} {rate:>8,.0f} redemptions/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms"
            f"   server CPU {per}/redemption   not 201: {failed or 'none'}"
        )
    ratio = results["group commit"] / results["commit per request"]
    print(f"group commit / commit per request: {ratio:.2f}x   (goal: >= 2,000/s and >= 3x)")
