"""Offline sync over HTTP against a running server: records accepted per second.

    python -m bench sync      # SQLite; BENCH_SYNC_RECORDS (default 20000), BENCH_SYNC_DEVICES (8),
                              # BENCH_SERVERS (2)

The setup writes a data directory (SQLite): a small tree, stations each with a login key (in the
keyring) and an offline device key (on the ledger), members, and a no-cost program with a
large daily quota. This process then signs every device's chain of offline records (compact
JWS, verifier.station.sign_record) and measures, in the same run:

- the raw Ed25519 verification rate of those records' signatures (one core, this process);
- ``verify_record`` on each (parse, canonical JSON, claims, signature: one core);
- a floor: the least a sync's writer could do per record in Python on SQLite (``_floor``:
  decode the record, check its chain link and replay, count its quota, make its entry's
  canonical bytes and hashes, write the entry, ``redemptions``, ``offline_records`` and
  ``quota_usage`` rows, commit per 1,000; no signatures, no statistics, no real judging; one
  core). The sync's writer is the serial part; this says how far it is from its floor. The
  same loop again with one entry per 200 records instead of one per record (what a batch event
  such as DESIGN's ``OfflineBatchSynced`` would cost; the ``redemptions`` and
  ``offline_records`` rows stay one per record): how much of the floor the entries are;
- sync: ``unionledger serve`` in BENCH_SERVERS subprocesses on the same SQLite file (their
  writers take turns: ``ledger.db.WriterQueue``), one client thread per device uploading its
  chain to one of them in batches of 1,000 (``POST /v1/stations/{id}/sync``), every record
  verified, judged and recorded (one ``OfflineRedemptionRecorded`` each) before the answer;
  with the servers' CPU time per accepted record (from ``/proc``) and the cores they used.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import create_engine

import keys
from api.app import create_app
from api.bootstrap import init_data_dir
from api.settings import Settings
from bench.bench_redemption import _cpu_seconds, _free_port, _serve, _station_token, _wait
from ledger import programs, stations, unions
from ledger.domain import SYSTEM
from ledger.offline import offline_records
from ledger.redemptions import quota_usage, redemptions
from ledger.schema import log_entries
from ledger.vault import PersonalData
from verifier.station import (
    GENESIS,
    RecordClaims,
    sign_record,
    station_key_records,
    verify_record,
)

PASS = "bench redemption passphrase"  # bench_redemption's _serve passes this one
RECORDS = int(os.environ.get("BENCH_SYNC_RECORDS", "20000"))
DEVICES = int(os.environ.get("BENCH_SYNC_DEVICES", "8"))
SERVERS = int(os.environ.get("BENCH_SERVERS", "2"))
BATCH = 1000
MEMBERS = 200
PROGRAM = "BENCH-OFFLINE-WATER"


def _setup(folder: Path) -> tuple[Settings, dict[str, str], dict[str, keys.PrivateKey], list[str]]:
    """The data directory; login seeds; offline device keys (on the ledger); member ids."""
    from ledger.identity import synthetic_id_number  # noqa: PLC0415

    settings = Settings.load(data_dir=folder / "data", environ={"UNIONLEDGER_KEY_PASSPHRASE": PASS})
    now = keys.utc_now()
    init_data_dir(settings, now, kdf=keys.KdfParams.fastest())
    logins = {f"ST-{i:03d}": keys.PrivateKey.generate() for i in range(DEVICES)}
    store = keys.KeyStore(settings.data_dir)
    with store.locked():
        ring = store.load(PASS)
        for station, login in logins.items():
            ring, _ = ring.register(
                keys.Role.STATION, login.public_key, now - timedelta(hours=1), scope=station
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
    devices = {}
    for station in logins:
        run(
            lambda tx, s=station: stations.register_station(
                tx, SYSTEM, station=s, name=f"驿站{s}", kind="union_station", union="110000"
            )
        )
        devices[station] = keys.PrivateKey.generate()
        run(
            lambda tx, s=station: stations.register_station_key(
                tx, SYSTEM, station=s, jwk=devices[s].public_key
            )
        )
    today = datetime.now(programs.CHINA).date()
    rules = {
        "name": "bench offline water",
        "kind": "universal",
        "period": {"from": today.isoformat(), "until": (today + timedelta(days=2)).isoformat()},
        "quota": {"count": 1000, "per": "day"},
        "unit_value": 0,
        "offline": {"allowed": True, "per_member_per_day": 1000, "station_daily_value": 0},
    }
    run(
        lambda tx: programs.create_program(tx, SYSTEM, program=PROGRAM, owner="100000", rules=rules)
    )
    import random  # noqa: PLC0415

    rng = random.Random(7)  # synthetic data
    members = []
    for i in range(MEMBERS):
        person = PersonalData(name="测试", id_number=synthetic_id_number(rng), phone=f"139{i:08d}")
        members.append(
            run(
                lambda tx, p=person: services.members.enrol(
                    tx, SYSTEM, union_code="G-BENCH", person=p
                )
            ).member_id
        )
    services.sequencer.close()
    services.engine.dispose()
    return settings, {s: k.seed().hex() for s, k in logins.items()}, devices, members


def _chains(
    devices: dict[str, keys.PrivateKey], members: list[str], start: int
) -> dict[str, list[str]]:
    """Each device's chain of offline records, twenty a second from ``start`` on."""
    per = RECORDS // len(devices)
    out: dict[str, list[str]] = {}
    n = 0
    for station, key in devices.items():
        prev, tokens = GENESIS, []
        for seq in range(1, per + 1):
            n += 1
            claims = RecordClaims(
                station=station,
                seq=seq,
                prev=prev,
                program=PROGRAM,
                version=1,
                quantity=1,
                value=0,
                presentation=keys.b64url_encode(n.to_bytes(32, "big")),
                member=members[n % len(members)],
                home="G-BENCH",
                iat=start + seq // 20,
                clk=start + seq // 20,
            )
            record = sign_record(claims, key)
            prev = record.hash
            tokens.append(record.token)
        out[station] = tokens
    return out


def _raw_rates(
    devices: dict[str, keys.PrivateKey], chains: dict[str, list[str]]
) -> tuple[float, float]:
    """(bare Ed25519 verifications/s, verify_record/s) over the same records, one core."""
    now = keys.utc_now()
    items = []
    for station, tokens in chains.items():
        public = devices[station].public_key
        record = keys.KeyRecord(
            kid=public.key_id,
            role=keys.Role.STATION,
            public_key=public,
            not_before=now - timedelta(days=1),
            scope=station,
        )
        ring = station_key_records([record], station)
        for token in tokens:
            head, claims, sig = token.split(".")
            items.append(
                (
                    station,
                    ring,
                    public,
                    token,
                    f"{head}.{claims}".encode(),
                    keys.b64url_decode(sig),
                )
            )
    start = time.perf_counter()
    for _, _, public, _, message, raw in items:
        public.verify(raw, message)
    bare = len(items) / (time.perf_counter() - start)
    start = time.perf_counter()
    for station, ring, _, token, _, _ in items:
        verify_record(token, ring, expected_station=station, now=now)
    full = len(items) / (time.perf_counter() - start)
    return bare, full


def _floor(chains: dict[str, list[str]], path: Path, per_entry: int = 1) -> float:
    """Records per second, on one core, of the least per-record work a sync's writer could do
    in Python on a SQLite file (WAL, synchronous FULL) with the real tables and indexes: see
    the module docstring. Every record is taken as accepted. ``per_entry`` records share one
    entry (its body lists them)."""
    engine = create_engine(f"sqlite:///{path}")
    for table in (log_entries, redemptions, offline_records, quota_usage):
        table.create(engine)
    engine.dispose()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    index, redemption, prev_entry = 0, 0, bytes(32)
    used: set[str] = set()
    quota: dict[tuple[str, str], int] = {}
    busy = 0.0
    for station, tokens in chains.items():
        prev, seq = GENESIS, 0
        for i in range(0, len(tokens), BATCH):
            start = time.thread_time()
            db.execute("BEGIN IMMEDIATE")
            entries, rows, offline, touched, items = [], [], [], set(), []
            for token in tokens[i : i + BATCH]:
                payload = token.split(".")[1]
                claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                digest = hashlib.sha256(token.encode("ascii")).digest()
                if claims["prev"] != prev or claims["seq"] != seq + 1:
                    raise AssertionError("a chain made by _chains is broken: the floor cannot run")
                prev, seq = base64.urlsafe_b64encode(digest).rstrip(b"=").decode(), seq + 1
                if claims["presentation"] in used:
                    continue
                used.add(claims["presentation"])
                key = (claims["member"], claims["program"])
                quota[key] = quota.get(key, 0) + claims["quantity"]
                touched.add(key)
                items.append(
                    {**claims, "kid": "k", "record": prev, "operating": "X", "funding": "Y"}
                )
                if len(items) == per_entry:
                    prev_entry = _floor_entry(entries, index, station, items, prev_entry)
                    index += 1
                rows.append(
                    (
                        redemption,
                        claims["program"],
                        1,
                        claims["member"],
                        station,
                        claims["quantity"],
                        0,
                        "Y",
                        "X",
                        claims["home"],
                        "day",
                        "time",
                        digest.hex(),
                        f"offline:{station}:{seq}",
                    )
                )
                offline.append(
                    (
                        redemption,
                        station,
                        "k",
                        seq,
                        prev,
                        "accepted",
                        None,
                        claims["member"],
                        claims["program"],
                        claims["quantity"],
                        0,
                        claims["iat"],
                        "time",
                    )
                )
                redemption += 1
            if items:
                prev_entry = _floor_entry(entries, index, station, items, prev_entry)
                index += 1
            db.executemany("INSERT INTO log_entries (idx, data) VALUES (?, ?)", entries)
            db.executemany(_FLOOR_REDEMPTION, rows)
            db.executemany(_FLOOR_OFFLINE, offline)
            db.executemany(_FLOOR_QUOTA, [(*k, "day", quota[k]) for k in sorted(touched)])
            db.execute("COMMIT")
            busy += time.thread_time() - start
    db.close()
    return sum(len(t) for t in chains.values()) / busy


def _floor_entry(
    entries: list[tuple[int, bytes]],
    index: int,
    station: str,
    items: list[dict[str, Any]],
    prev: bytes,
) -> bytes:
    """Make the floor's entry ``index`` (canonical bytes, its hash, its Merkle leaf) of
    ``items``, then empty them; the entry's hash."""
    body = items[0] if len(items) == 1 else {"records": list(items)}
    data = orjson.dumps(
        {
            "actor": f"station:{station}",
            "body": body,
            "index": index,
            "prev": prev.hex(),
            "time": "2026-12-06T10:00:00.000000Z",
            "type": "OfflineRedemptionRecorded" if len(items) == 1 else "OfflineBatchSynced",
            "v": 1,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    hashlib.sha256(b"\0" + data).digest()  # the Merkle leaf
    entries.append((index, data))
    items.clear()
    return hashlib.sha256(data).digest()


_FLOOR_REDEMPTION = (
    "INSERT INTO redemptions (redemption, program_id, version, member_id, station_id, quantity,"
    " value, funding_union, operating_union, home_union, period, at, presentation, idempotency)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_FLOOR_OFFLINE = (
    "INSERT INTO offline_records (entry, station_id, kid, seq, record, status, reason,"
    " member_id, program_id, quantity, value, offline_at, at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_FLOOR_QUOTA = (
    "INSERT INTO quota_usage (member_id, program_id, period, used) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (member_id, program_id, period) DO UPDATE SET used = excluded.used"
)


def _upload(url: str, station: str, token: str, tokens: list[str], out: dict[str, Any]) -> None:
    counts: dict[str, int] = {}
    latencies = []
    with httpx.Client(base_url=url, timeout=300) as client:
        headers = {"Authorization": f"Bearer {token}"}
        for i in range(0, len(tokens), BATCH):
            t = time.perf_counter()
            answer = client.post(
                f"/v1/stations/{station}/sync",
                json={"records": tokens[i : i + BATCH]},
                headers=headers,
            )
            latencies.append(time.perf_counter() - t)
            answer.raise_for_status()
            for status, n in answer.json()["counts"].items():
                counts[status] = counts.get(status, 0) + n
    out[station] = (counts, latencies)


def run() -> None:
    folder = Path(tempfile.mkdtemp(prefix="ul-bench-sync-"))
    print(f"setup: {MEMBERS} members, {DEVICES} stations with an offline device key (SQLite) ...")
    settings, seeds, devices, members = _setup(folder)
    start = int(datetime.now(UTC).timestamp()) + 1  # after the keys' registration; at most
    # RECORDS / DEVICES / 20 s ahead: within the 5 minutes a record may be in the future
    chains = _chains(devices, members, start)
    total = sum(len(c) for c in chains.values())
    bare, full = _raw_rates(devices, chains)
    print(f"raw Ed25519 verify (this process, 1 core): {bare:>10,.0f} records/s")
    print(f"verify_record      (this process, 1 core): {full:>10,.0f} records/s")
    floor = _floor(chains, folder / "floor.db")
    print(f"floor of a sync's writer (one core):        {floor:>10,.0f} records/s")
    batched = _floor(chains, folder / "floor-batched.db", per_entry=200)
    print(f"  the same, one entry per 200 records:      {batched:>10,.0f} records/s")
    ports = [_free_port() for _ in range(SERVERS)]
    servers = [_serve(settings, port, 2000) for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url in urls:
            _wait(url)
        tokens = {s: _station_token(urls[0], s, seed) for s, seed in seeds.items()}
        out: dict[str, Any] = {}
        threads = [  # device i uploads to server i mod SERVERS (any server takes any token)
            threading.Thread(
                target=_upload, args=(urls[i % len(urls)], s, tokens[s], chains[s], out)
            )
            for i, s in enumerate(chains)
        ]
        cpu_before = _cpu_seconds(servers)
        t0 = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - t0
        cpu_after = _cpu_seconds(servers)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)
    counts: dict[str, int] = {}
    latencies: list[float] = []
    for c, lat in out.values():
        latencies += lat
        for status, n in c.items():
            counts[status] = counts.get(status, 0) + n
    accepted = counts.get("accepted", 0)
    print(
        f"sync over HTTP ({SERVERS} server(s), {DEVICES} devices, batches of {BATCH}): {total:,}"
        f" records in"
        f" {elapsed:.1f} s = {accepted / elapsed:>8,.0f} accepted records/s"
        f"   batch p50 {statistics.median(latencies) * 1000:.0f} ms   answers: {counts}"
    )
    if cpu_before is not None and cpu_after is not None and accepted:
        used = cpu_after - cpu_before
        print(
            f"servers' CPU: {used / accepted * 1e6:,.0f} us per accepted record"
            f" ({used / elapsed:.2f} cores; most of it the single writer's, which runs one"
            " process at a time)"
        )
    print(
        f"accepted / raw Ed25519 rate: {accepted / elapsed / bare:.2f}, / the writer's floor:"
        f" {accepted / elapsed / floor:.2f}   (target: >= 20,000/s)"
    )
