"""The station's durable offline queue: the chain and counters it keeps, atomicity (a failure
anywhere in the transaction leaves nothing), kill -9 durability with a real process, sync
marks, and a hypothesis state machine of two stations sharing members through random online
and offline periods across China-time midnights: the offline limits are never exceeded, and
every refusal has the right reason.

    python -m tests.verifier.test_station_queue append PATH SEED_HEX

is the child process of the kill -9 test: it appends records until killed, printing each
``seq`` once its transaction has committed.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from keys import PrivateKey, b64url_encode
from tests.verifier.test_station import (
    A_INFO,
    CACHE,
    OTHER,
    STATION,
    T0,
    W,
    rules,
    verified,
)
from verifier.credential import VerifiedPresentation, presentation_digest
from verifier.errors import StationQueueError
from verifier.station import (
    CHINA,
    GENESIS,
    REFUSAL_CODES,
    OfflinePolicy,
    Refusal,
    StationCache,
    StationInfo,
    china_day,
    verify_batch,
)
from verifier.station_queue import Head, QueuedRecord, StationQueue

REPO = Path(__file__).resolve().parents[2]
DAY = timedelta(days=1)


def open_queue(path: Path, key: PrivateKey = W.device, station: str = STATION) -> StationQueue:
    return StationQueue(path, station_id=station, kid=key.key_id)


@pytest.fixture
def queue(tmp_path: Path) -> Any:
    q = open_queue(tmp_path / "queue.db")
    yield q
    q.close()


def redeem(
    q: StationQueue,
    member: str = "rider",
    program: str = "COOL",
    *,
    at: datetime = T0,
    quantity: int = 1,
    station: StationInfo = A_INFO,
    made: datetime | None = None,
) -> QueuedRecord | Refusal:
    """Redeem a presentation made at ``made`` (default: ``at``) offline at ``at``."""
    return q.record_offline(
        verified(member, program, made or at),
        CACHE.programs[program],
        station=station,
        quantity=quantity,
        now=at,
        key=W.device,
    )


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}


# -- the basics --------------------------------------------------------------------------------


def test_a_new_queue_is_empty_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with open_queue(path) as q:
        assert q.head() == Head(0, GENESIS, None)
        assert q.summary() == {"pending": 0, "synced": 0, "conflict": 0, "refused": 0}
        assert q.pending() == []
        assert q.audit(W.keys_a, T0) == []
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_records_chain_and_counters(queue: StationQueue) -> None:
    first = redeem(queue, "rider", "COOL")
    second = redeem(queue, "courier", "MEAL", quantity=2, at=T0 + timedelta(minutes=1))
    third = redeem(queue, "rider", "WATER", quantity=2, at=T0 + timedelta(minutes=2))
    assert isinstance(first, QueuedRecord)
    assert isinstance(second, QueuedRecord)
    assert isinstance(third, QueuedRecord)
    assert [r.seq for r in (first, second, third)] == [1, 2, 3]
    assert (first.prev, second.prev, third.prev) == (GENESIS, first.hash, second.hash)
    assert (first.status, first.value, second.value, third.value) == ("pending", 5000, 3000, 0)
    assert queue.head() == Head(3, third.hash, int(T0.timestamp()) + 120)
    assert queue.pending() == [first, second, third]
    assert queue.summary()["pending"] == 3
    assert queue.day_totals("2027-07-01") == {"COOL": 5000, "MEAL": 3000, "WATER": 0, "": 8000}
    p = verified("rider", "COOL")
    c = queue.counters(p.member_id, "COOL", "2027-07-01", b64url_encode(p.presentation_hash))
    assert (c.member_units, c.program_value, c.station_value, c.replayed) == (1, 5000, 8000, True)
    assert c.last_time == int(T0.timestamp()) + 120
    result = verify_batch(
        queue.pending_tokens(),
        0,
        GENESIS,
        station_keys=W.keys_a,
        expected_station=STATION,
        now=T0 + DAY,
    )
    assert result.ok
    assert [r.claims.program for r in result.accepted] == ["COOL", "MEAL", "WATER"]
    assert queue.audit(W.keys_a, T0 + DAY) == []


def test_a_refusal_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with open_queue(path) as q:
        assert isinstance(redeem(q), QueuedRecord)
        before = snapshot(path)
        again = redeem(q)  # the same presentation
        assert isinstance(again, Refusal)
        assert again.code == "replayed"
        limit = q.record_offline(
            verified("rider", "COOL", T0 + timedelta(seconds=5)),
            CACHE.programs["COOL"],
            station=A_INFO,
            quantity=1,
            now=T0 + timedelta(seconds=5),
            key=W.device,
        )
        assert isinstance(limit, Refusal)
        assert limit.code == "offline-member-limit"
        assert snapshot(path) == before


def test_the_key_and_station_must_be_the_queues(queue: StationQueue) -> None:
    with pytest.raises(ValueError, match="device key"):
        queue.record_offline(
            verified(),
            CACHE.programs["COOL"],
            station=A_INFO,
            quantity=1,
            now=T0,
            key=W.device2,
        )
    with pytest.raises(ValueError, match="station"):
        redeem(queue, station=StationInfo(OTHER, "union_station"))


def test_a_queue_is_one_devices(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    open_queue(path).close()
    with pytest.raises(StationQueueError, match="not this device's"):
        open_queue(path, key=W.device2)
    with pytest.raises(StationQueueError, match="not this device's"):
        open_queue(path, station=OTHER)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT INTO meta VALUES ('format', 'something else')")
    with pytest.raises(StationQueueError, match="not a"):
        open_queue(other)


# -- atomicity ---------------------------------------------------------------------------------

FAULTS = {
    "records": "AFTER INSERT ON records",
    "member_units": "AFTER INSERT ON member_units",
    "program_value": "AFTER INSERT ON program_value",
    "station_value": "AFTER UPDATE ON station_value",  # the day's row exists: an upsert
    "replay": "AFTER INSERT ON replay",
    "head": "AFTER UPDATE ON head",
}


@pytest.mark.parametrize("where", sorted(FAULTS))
def test_a_failure_anywhere_in_the_transaction_leaves_nothing(tmp_path: Path, where: str) -> None:
    """A fault injected at each write of the transaction (a trigger that aborts): the record,
    the counters, the replay entry and the head are all or nothing."""
    path = tmp_path / "queue.db"
    with open_queue(path) as q:
        assert isinstance(redeem(q, "rider", "COOL"), QueuedRecord)
        before = snapshot(path)
        head = q.head()
        with sqlite3.connect(path) as db:
            db.execute(
                f"CREATE TRIGGER fault {FAULTS[where]} BEGIN SELECT RAISE(ABORT, 'disk fault'); END"
            )
        with pytest.raises(sqlite3.IntegrityError, match="disk fault"):
            redeem(q, "courier", "MEAL", quantity=2, at=T0 + timedelta(minutes=1))
        assert not q._conn.in_transaction
        with sqlite3.connect(path) as db:
            db.execute("DROP TRIGGER fault")
        after = snapshot(path)
        assert after == before
        assert q.head() == head
        # The queue goes on: the next record continues the chain from the same head.
        record = redeem(q, "courier", "MEAL", quantity=2, at=T0 + timedelta(minutes=2))
        assert isinstance(record, QueuedRecord)
        assert (record.seq, record.prev) == (2, head.hash)
        assert q.audit(W.keys_a, T0 + DAY) == []


def test_an_exception_while_deciding_rolls_back(queue: StationQueue) -> None:
    with pytest.raises(ValueError, match="aware"):
        redeem(queue, at=datetime(2027, 7, 1), made=T0)  # naive: refused, nothing written
    assert not queue._conn.in_transaction
    assert queue.head().seq == 0


# -- sync marks, the clock, the replay cache ---------------------------------------------------


def test_sync_marks(queue: StationQueue) -> None:
    for i, (member, program) in enumerate(
        [("rider", "COOL"), ("courier", "MEAL"), ("plain", "WATER")]
    ):
        redeemed = redeem(queue, member, program, at=T0 + timedelta(minutes=i))
        assert isinstance(redeemed, QueuedRecord)
    assert len(queue.pending_tokens(limit=2)) == 2
    queue.mark(1, "synced")
    with pytest.raises(StationQueueError, match="synced already"):
        queue.mark(1, "conflict", "quota used elsewhere")
    with pytest.raises(StationQueueError, match="no record"):
        queue.mark(9, "synced")
    with pytest.raises(StationQueueError, match="not pending"):
        queue.mark(2, "pending")
    with pytest.raises(StationQueueError, match="not pending"):  # all or nothing
        queue.mark_many({2: ("conflict", "quota-used"), 1: ("synced", None)})
    assert queue.summary() == {"pending": 2, "synced": 1, "conflict": 0, "refused": 0}
    queue.mark_many({2: ("conflict", "quota-used"), 3: ("refused", "presentation-replayed")})
    assert queue.summary() == {"pending": 0, "synced": 1, "conflict": 1, "refused": 1}
    assert [(r.status, r.reason) for r in queue.records()] == [
        ("synced", None),
        ("conflict", "quota-used"),
        ("refused", "presentation-replayed"),
    ]
    assert queue.records("conflict")[0].seq == 2
    assert queue.pending_tokens() == []
    with pytest.raises(StationQueueError):
        queue.mark_many({1: ("pending", None)})


def test_the_clock_offset(queue: StationQueue) -> None:
    assert queue.clock_offset == timedelta(0)
    device = datetime(2027, 7, 1, 4, 0, 0, tzinfo=UTC)
    queue.set_clock_offset(device + timedelta(seconds=75), device)
    assert queue.clock_offset == timedelta(seconds=75)
    assert queue.station_time(device) == device + timedelta(seconds=75)


def test_the_replay_cache_expires_but_queued_records_still_refuse(queue: StationQueue) -> None:
    assert isinstance(redeem(queue), QueuedRecord)
    assert queue.purge_replay(T0 + DAY) == 0
    assert queue.purge_replay(T0 + 3 * DAY) == 1
    again = redeem(queue, at=T0 + timedelta(seconds=1), made=T0)
    assert isinstance(again, Refusal)
    assert again.code == "replayed"


def test_a_clock_set_back_is_refused(queue: StationQueue) -> None:
    assert isinstance(redeem(queue, "rider", at=T0), QueuedRecord)
    back = redeem(queue, "courier", at=T0 - timedelta(minutes=6), made=T0)
    assert isinstance(back, Refusal)
    assert back.code == "station-clock-behind"
    five = redeem(queue, "courier", at=T0 - timedelta(minutes=5), made=T0)
    assert isinstance(five, QueuedRecord)


def test_scan_verifies_decides_and_appends(queue: StationQueue) -> None:
    text = W.members["rider"].present("COOL", T0)
    first = queue.scan(text, program="COOL", quantity=1, cache=CACHE, now=T0, key=W.device)
    assert isinstance(first, QueuedRecord)
    again = queue.scan(text, program="COOL", quantity=1, cache=CACHE, now=T0, key=W.device)
    assert isinstance(again, Refusal)
    assert again.code == "replayed"
    late = T0 + DAY
    stale = queue.scan(
        W.members["courier"].present("COOL", late),
        program="COOL",
        quantity=1,
        cache=CACHE,
        now=late,
        key=W.device,
    )
    assert isinstance(stale, Refusal)
    assert stale.code == "stale-cache"
    assert queue.head().seq == 1


def test_audit_finds_a_doctored_file(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with open_queue(path) as q:
        for i, member in enumerate(["rider", "courier"]):
            assert isinstance(redeem(q, member, at=T0 + timedelta(minutes=i)), QueuedRecord)
        with sqlite3.connect(path) as db:
            db.execute("UPDATE member_units SET units = 0")
        assert q.audit(W.keys_a, T0 + DAY) == ["member_units differ from the sums over the records"]
        with sqlite3.connect(path) as db:
            db.execute("UPDATE member_units SET units = 1")
            db.execute("DELETE FROM records WHERE seq = 1")
        problems = q.audit(W.keys_a, T0 + DAY)
        assert any("record-reordered" in p or "record-gap" in p for p in problems)
        assert any(p.startswith("member_units") for p in problems)


# -- kill -9 -------------------------------------------------------------------------------------

CHILD_POLICY = OfflinePolicy.from_rules(
    "P",
    1,
    rules(
        unit_value=100,
        max_quantity=5,
        quota={"count": 1000, "per": "day"},
        offline={"per_member_per_day": 1000, "station_daily_value": 10**12},
    ),
)


def synthetic(rng: random.Random, at: int) -> VerifiedPresentation:
    """A presentation as verify_presentation would return it (durability is tested here, not
    verification)."""
    member = b64url_encode(hashlib.sha256(b"m%d" % rng.randrange(40)).digest()[:16])
    return VerifiedPresentation(
        member,
        "440106-0012",
        "440000",
        frozenset(),
        datetime(2030, 1, 1, tzinfo=UTC),
        W.device.public_key,
        bytes(32),
        rng.randbytes(32),
        1,
        at,
    )


def append_forever(path: str, seed_hex: str) -> None:
    """The child: append records until killed, printing each seq after its commit."""
    key = PrivateKey.from_seed(bytes.fromhex(seed_hex))
    station = StationInfo(STATION, "union_station")
    queue = StationQueue(path, station_id=STATION, kid=key.key_id)
    rng = random.Random(os.getpid())
    t = queue.head().at or int(T0.timestamp())
    while True:
        t += rng.randrange(900)  # about 200 records a China day: many midnights
        record = queue.record_offline(
            synthetic(rng, t),
            CHILD_POLICY,
            station=station,
            quantity=rng.randint(1, 5),
            now=datetime.fromtimestamp(t, UTC),
            key=key,
        )
        assert isinstance(record, QueuedRecord), record
        sys.stdout.write(f"{record.seq}\n")
        sys.stdout.flush()


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_record(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    rng = random.Random()
    acked: list[int] = []
    for _ in range(3):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.verifier.test_station_queue",
                "append",
                str(path),
                W.device.seed().hex(),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        wanted, got = rng.randint(20, 300), 0
        deadline = time.monotonic() + 60
        while got < wanted and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(int(line))
            got += 1
        time.sleep(rng.random() * 0.01)  # somewhere inside a later transaction
        os.kill(proc.pid, signal.SIGKILL)
        rest, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err
        assert got == wanted, f"the appender did not get going: {err}"
        complete = rest.split("\n")[:-1]  # a line cut by the kill is not an acknowledgement
        acked += [int(x) for x in complete]
        with open_queue(path) as q:
            seqs = [r.seq for r in q.records()]
            assert seqs == list(range(1, len(seqs) + 1)), "contiguous, from 1"
            assert set(acked) <= set(seqs), "an acknowledged record was lost"
            assert q.audit(W.keys_a, datetime(2100, 1, 1, tzinfo=UTC)) == []
            assert q.head().seq == len(seqs)
    assert len(acked) >= 60


# -- the state machine -----------------------------------------------------------------------

START = datetime(2027, 7, 1, 15, 0, tzinfo=UTC)  # 23:00 China time: midnight comes soon
POLICIES = CACHE.programs
MEMBERS = sorted(W.members)
STATIONS = {
    STATION: (StationInfo(STATION, "union_station", daily_ceiling=12000), W.device),
    OTHER: (StationInfo(OTHER, "truck_driver_home"), W.other_device),
}
KEYS = {STATION: W.keys_a, OTHER: W.keys_b}
WINDOW = 120  # max proof age 90 s + leeway 30 s
# The programs an offline station can redeem come up three times as often as the others.
WEIGHTED_PROGRAMS = [*(["COOL", "MEAL", "WATER", "DRIVERS"] * 3), "GIFT", "TENURE", "AUTUMN"]


@dataclass
class Scanned:
    text: str
    member: str
    program: str
    proof_time: int
    presentation: str


@dataclass
class Sim:
    info: StationInfo
    key: PrivateKey
    queue: StationQueue
    cache: StationCache
    refreshed: datetime
    online: bool = False
    server_head: tuple[int, str, int | None] = (0, GENESIS, None)
    redeemed: set[str] = field(default_factory=set)


class OfflineStations(RuleBasedStateMachine):
    """Two stations (a union station with a daily ceiling, a truck-driver home without one)
    shared by four members; the clock only moves forward, through China midnights; each
    station goes online (refresh its cache, sync its queue to a model server) and offline at
    random; members scan at random, sometimes with an old QR code or one already redeemed."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="station-sm-")
        self.now = START
        self.sims: dict[str, Sim] = {}
        for station_id, (info, key) in STATIONS.items():
            self.sims[station_id] = Sim(
                info=info,
                key=key,
                queue=StationQueue(
                    Path(self.dir) / f"{station_id}.db", station_id=station_id, kid=key.key_id
                ),
                cache=W.cache(START, info),
                refreshed=START,
            )
        self.scanned: list[Scanned] = []
        self.server_presentations: dict[str, str] = {}
        # The model's own counts of accepted offline redemptions.
        self.units: dict[tuple[str, str, str, str], int] = {}
        self.program_value: dict[tuple[str, str, str], int] = {}
        self.station_value: dict[tuple[str, str], int] = {}
        self.refusals: dict[str, int] = {}
        self.accepted = 0
        self.record_events = True

    def teardown(self) -> None:
        for sim in self.sims.values():
            sim.queue.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the world moves ---------------------------------------------------------------------

    @rule(minutes=st.integers(1, 12 * 60))
    def tick(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        for sim in self.sims.values():
            if sim.online:
                self.refresh_and_sync(sim)

    @rule(station=st.sampled_from(sorted(STATIONS)))
    def go_online(self, station: str) -> None:
        sim = self.sims[station]
        sim.online = True
        self.refresh_and_sync(sim)

    @rule(station=st.sampled_from(sorted(STATIONS)))
    def go_offline(self, station: str) -> None:
        self.sims[station].online = False

    def refresh_and_sync(self, sim: Sim) -> None:
        sim.cache = W.cache(self.now, sim.info)
        sim.refreshed = self.now
        tokens = sim.queue.pending_tokens()
        seq, head, at = sim.server_head
        result = verify_batch(
            tokens,
            seq,
            head,
            station_keys=KEYS[sim.info.station_id],
            expected_station=sim.info.station_id,
            now=self.now,
            previous_time=at,
            kid=sim.key.key_id,
        )
        assert result.ok, result.failure
        answers: dict[int, tuple[Any, str | None]] = {}
        for record in result.accepted:
            presentation = record.claims.presentation
            if presentation in self.server_presentations:
                # The same QR redeemed at both stations while offline: found and reported.
                assert self.server_presentations[presentation] != sim.info.station_id
                answers[record.seq] = ("conflict", "presentation-replayed")
            else:
                self.server_presentations[presentation] = sim.info.station_id
                answers[record.seq] = ("synced", None)
        sim.queue.mark_many(answers)
        if result.accepted:
            last = result.accepted[-1]
            sim.server_head = (last.seq, last.hash, last.claims.iat)
        assert sim.queue.pending() == []

    # -- scans -----------------------------------------------------------------------------------

    @rule(
        station=st.sampled_from(sorted(STATIONS)),
        member=st.sampled_from(MEMBERS),
        program=st.sampled_from(WEIGHTED_PROGRAMS),
        quantity=st.just(1) | st.integers(1, 3),
        lag=st.integers(0, 20) | st.integers(0, 150),
    )
    def scan(self, station: str, member: str, program: str, quantity: int, lag: int) -> None:
        proof = self.now - timedelta(seconds=lag)
        text = W.members[member].present(program, proof)
        digest = presentation_digest(text)
        assert digest is not None
        scanned = Scanned(text, member, program, int(proof.timestamp()), b64url_encode(digest))
        self.scanned.append(scanned)
        self.attempt(self.sims[station], scanned, quantity)

    @rule(station=st.sampled_from(sorted(STATIONS)), pick=st.integers(0, 10**6))
    def scan_again(self, station: str, pick: int) -> None:
        """A QR code shown before (at either station), scanned again now."""
        if self.scanned:
            self.attempt(self.sims[station], self.scanned[pick % len(self.scanned)], 1)

    def attempt(self, sim: Sim, scanned: Scanned, quantity: int) -> None:
        if sim.online:
            return  # online, the server redeems: not the offline queue's business
        outcome = sim.queue.scan(
            scanned.text,
            program=scanned.program,
            quantity=quantity,
            cache=sim.cache,
            now=self.now,
            key=sim.key,
        )
        expected = self.expected(sim, scanned, quantity)
        if self.record_events:  # hypothesis.event() works only inside a hypothesis run
            event(f"decision: {expected}")
        if isinstance(outcome, Refusal):
            assert outcome.code in REFUSAL_CODES
            assert outcome.message
            assert outcome.code == expected, (outcome, expected)
            self.refusals[outcome.code] = self.refusals.get(outcome.code, 0) + 1
            return
        assert expected == "accepted", (expected, outcome)
        policy = POLICIES[scanned.program]
        day, station = china_day(self.now), sim.info.station_id
        value = policy.unit_value * quantity
        member_key = (station, day, scanned.member, scanned.program)
        self.units[member_key] = self.units.get(member_key, 0) + quantity
        self.program_value[(station, day, scanned.program)] = (
            self.program_value.get((station, day, scanned.program), 0) + value
        )
        self.station_value[(station, day)] = self.station_value.get((station, day), 0) + value
        sim.redeemed.add(scanned.presentation)
        self.accepted += 1

    def expected(self, sim: Sim, scanned: Scanned, quantity: int) -> str:
        """The decision, computed from the model alone (docs/station.md, section 4)."""
        policy = POLICIES[scanned.program]
        station, day = sim.info.station_id, china_day(self.now)
        now_s = int(self.now.timestamp())
        if not policy.allowed:
            return "offline-not-allowed"
        if self.now >= sim.refreshed + DAY:  # programs and status lists: one day
            return "stale-cache"
        if scanned.member == "revoked" or abs(now_s - scanned.proof_time) > WINDOW:
            return "presentation-refused"
        if scanned.presentation in sim.redeemed:
            return "replayed"
        today = self.now.astimezone(CHINA).date()
        if not policy.start <= today <= policy.until:
            return "program-not-open"
        if policy.station_kinds and sim.info.kind not in policy.station_kinds:
            return "not-redeemable-here"
        if quantity > policy.max_quantity:
            return "invalid-quantity"
        if policy.min_tenure_days:
            return "offline-cannot-judge"
        if policy.groups_any and not policy.groups_any & W.members[scanned.member].wallet.groups:
            return "not-eligible"
        used = self.units.get((station, day, scanned.member, scanned.program), 0)
        if used + quantity > policy.member_daily_limit:
            return "offline-member-limit"
        value = policy.unit_value * quantity
        if self.program_value.get((station, day, scanned.program), 0) + value > (
            policy.station_daily_value
        ):
            return "offline-station-ceiling"
        ceiling = sim.info.daily_ceiling
        if ceiling is not None and self.station_value.get((station, day), 0) + value > ceiling:
            return "offline-station-ceiling"
        return "accepted"

    # -- what must always hold ---------------------------------------------------------------

    @invariant()
    def the_offline_limits_are_never_exceeded(self) -> None:
        across: dict[tuple[str, str, str], int] = {}
        for station, sim in self.sims.items():
            units: dict[tuple[str, str, str], int] = {}
            program_value: dict[tuple[str, str], int] = {}
            station_value: dict[str, int] = {}
            for r in sim.queue.records():
                assert r.day == china_day(r.at)
                units[(r.day, r.member, r.program)] = (
                    units.get((r.day, r.member, r.program), 0) + r.quantity
                )
                program_value[(r.day, r.program)] = (
                    program_value.get((r.day, r.program), 0) + r.value
                )
                station_value[r.day] = station_value.get(r.day, 0) + r.value
                across[(r.day, r.member, r.program)] = (
                    across.get((r.day, r.member, r.program), 0) + r.quantity
                )
            for (_, _, program), n in units.items():
                assert n <= POLICIES[program].member_daily_limit
            for (_, program), value in program_value.items():
                assert value <= POLICIES[program].station_daily_value
            for value in station_value.values():
                assert value <= sim.cache.worst_case_daily_value()
                if sim.info.daily_ceiling is not None:
                    assert value <= sim.info.daily_ceiling
            assert sim.queue.audit(KEYS[station], self.now) == []
        # Across stations: at most one day's limit per station (the known worst case).
        for (_, _, program), n in across.items():
            assert n <= len(self.sims) * POLICIES[program].member_daily_limit


OfflineStations.TestCase.settings = settings(
    max_examples=100, stateful_step_count=60, deadline=None
)
TestOfflineStations = OfflineStations.TestCase


def test_the_state_machine_reaches_every_decision() -> None:
    """A fixed walk through the machine that meets each reason it can produce (so the
    hypothesis run above is known to be able to reach them)."""
    m = OfflineStations()
    m.record_events = False
    try:
        m.scan(STATION, "rider", "COOL", 1, 0)  # accepted
        m.scan_again(STATION, 0)  # replayed
        m.scan_again(OTHER, 0)  # the same QR at the other station: accepted (offline)
        m.scan(STATION, "rider", "COOL", 1, 10)  # offline-member-limit
        m.scan(STATION, "courier", "COOL", 1, 0)  # accepted: COOL's 10,000 a day reached
        m.scan(STATION, "plain", "COOL", 1, 0)  # offline-station-ceiling (the program's)
        m.scan(STATION, "courier", "MEAL", 2, 0)  # 13,000 > 12,000: the station's ceiling
        m.scan(STATION, "plain", "MEAL", 1, 0)  # not-eligible
        m.scan(STATION, "revoked", "COOL", 1, 0)  # presentation-refused
        m.scan(STATION, "plain", "COOL", 1, 130)  # presentation-refused (an old QR)
        m.scan(STATION, "plain", "GIFT", 1, 0)  # offline-not-allowed
        m.scan(STATION, "plain", "TENURE", 1, 0)  # offline-cannot-judge
        m.scan(STATION, "plain", "DRIVERS", 1, 0)  # not-redeemable-here
        m.scan(STATION, "plain", "AUTUMN", 1, 0)  # program-not-open
        m.scan(STATION, "plain", "WATER", 3, 0)  # invalid-quantity
        m.the_offline_limits_are_never_exceeded()
        m.tick(60)  # China midnight: a new day
        m.scan(STATION, "rider", "WATER", 2, 0)  # accepted
        m.go_online(STATION)
        m.go_online(OTHER)  # the QR redeemed at both stations: a conflict
        assert m.sims[OTHER].queue.summary() == {
            "pending": 0,
            "synced": 0,
            "conflict": 1,
            "refused": 0,
        }
        assert m.sims[STATION].queue.summary()["synced"] == 3
        m.go_offline(STATION)
        m.tick(24 * 60)  # the station's cache is a day old now
        m.scan(STATION, "rider", "WATER", 1, 0)  # stale-cache
        m.the_offline_limits_are_never_exceeded()
        assert set(m.refusals) == set(REFUSAL_CODES) - {"station-clock-behind"}
        assert m.accepted == 4
    finally:
        m.teardown()


if __name__ == "__main__" and sys.argv[1:2] == ["append"]:
    append_forever(sys.argv[2], sys.argv[3])
