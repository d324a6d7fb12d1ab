"""The station device's durable offline queue: one SQLite file, standard library only.

It holds what an offline station must never lose or double-count (docs/station.md, section 7):

- ``records``: every offline record this device signed, by ``seq``, with its token and a
  status: ``pending`` (not yet synced: shown as such), ``synced``, ``conflict`` (recorded by
  the server but flagged, e.g. the same quota used at two stations offline) or ``refused``
  (not recorded by the server), with the server's reason;
- the counters the offline limits read: units per (China day, member, program), value per
  (day, program) and per day;
- the replay cache: the presentation hashes redeemed here, each until it expires;
- the head of the device's chain: the last ``seq``, its record's hash and time.

:meth:`StationQueue.record_offline` (and :meth:`StationQueue.scan`, which verifies the QR
first) decides and appends in ONE transaction: the counters are read under the write lock, and
the signed record, the counters, the replay entry and the new head commit together or not at
all. The file runs in WAL mode with ``synchronous=FULL``: a record acknowledged (the call
returned) survives a crash or a power loss. The queue belongs to one device key: the chain is
per device (``docs/station.md``, section 3).

Only the standard library's ``sqlite3`` (no SQLAlchemy): the station client must stay small.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import keys
from verifier.credential import VerifiedPresentation
from verifier.errors import StationQueueError
from verifier.station import (
    DEFAULT_MAX_SKEW,
    GENESIS,
    REPLAY_KEEP,
    Accept,
    BatchResult,
    LocalCounters,
    OfflinePolicy,
    OfflineRecord,
    OfflineRedemption,
    OfflineRemaining,
    Refusal,
    StationCache,
    StationInfo,
    StationKeys,
    china_day,
    decide,
    judge,
    sign_record,
    verify_batch,
)

__all__ = ["FORMAT", "Head", "QueuedRecord", "StationQueue", "Status"]

FORMAT = "unionledger-station-queue/1"
Status = Literal["pending", "synced", "conflict", "refused"]
STATUSES: tuple[Status, ...] = ("pending", "synced", "conflict", "refused")

_SCHEMA = """
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE head (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    seq INTEGER NOT NULL CHECK (seq >= 0),
    hash TEXT NOT NULL,
    at INTEGER
);
CREATE TABLE records (
    seq INTEGER PRIMARY KEY CHECK (seq >= 1),
    token TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    prev TEXT NOT NULL,
    presentation TEXT NOT NULL UNIQUE,
    member TEXT NOT NULL,
    program TEXT NOT NULL,
    day TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity >= 1),
    value INTEGER NOT NULL CHECK (value >= 0),
    at INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'synced', 'conflict', 'refused')),
    reason TEXT
);
CREATE INDEX records_by_status ON records (status, seq);
CREATE TABLE member_units (
    day TEXT NOT NULL,
    member TEXT NOT NULL,
    program TEXT NOT NULL,
    units INTEGER NOT NULL CHECK (units >= 0),
    PRIMARY KEY (day, member, program)
) WITHOUT ROWID;
CREATE TABLE program_value (
    day TEXT NOT NULL,
    program TEXT NOT NULL,
    value INTEGER NOT NULL CHECK (value >= 0),
    PRIMARY KEY (day, program)
) WITHOUT ROWID;
CREATE TABLE station_value (
    day TEXT PRIMARY KEY,
    value INTEGER NOT NULL CHECK (value >= 0)
) WITHOUT ROWID;
CREATE TABLE replay (
    presentation TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Head:
    """The device chain's head: the last ``seq`` (0: none yet), its record's hash
    (:data:`~verifier.station.GENESIS` before the first) and time (None before the first)."""

    seq: int
    hash: str
    at: int | None


@dataclass(frozen=True, slots=True)
class QueuedRecord:
    """A record in the queue, with what the station shows about it."""

    seq: int
    token: str
    hash: str
    prev: str
    presentation: str
    member: str
    program: str
    day: str
    quantity: int
    value: int
    at: int
    status: Status
    reason: str | None
    remaining: OfflineRemaining | None = field(default=None, compare=False)
    """Set on the record :meth:`StationQueue.scan` or :meth:`StationQueue.record_offline`
    just queued: what is left for the member and program today at this device (not stored)."""

    @property
    def accepted(self) -> bool:
        """True: a queued record is an accepted redemption (cf. ``Refusal.accepted``)."""
        return True


_SELECT = (
    "SELECT seq, token, hash, prev, presentation, member, program, day, quantity, value, at,"
    " status, reason FROM records"
)


def _queued(row: tuple[Any, ...]) -> QueuedRecord:
    return QueuedRecord(*row)


class StationQueue:
    """The durable queue of one station device (station ``station_id``, device key ``kid``).

    Opening a file that does not exist creates it; opening one made for another station or
    device key raises :class:`~verifier.errors.StationQueueError`. One writer at a time: the
    write transactions take SQLite's write lock (``BEGIN IMMEDIATE``), so two processes
    sharing the file serialise, and a second one waits up to ``timeout`` seconds.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, station_id: str, kid: str, timeout: float = 10.0
    ) -> None:
        self.path = os.fspath(path)
        self.station_id = station_id
        self.kid = kid
        self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=timeout)
        try:
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StationQueueError(f"the queue needs WAL mode, the file gave {mode}")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._init()
        except BaseException:
            self._conn.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StationQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed if the block ends normally, rolled back if not."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (a full disk)
                conn.execute("ROLLBACK")
            raise

    def _init(self) -> None:
        with self._write() as conn:
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            if not exists:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany(
                    "INSERT INTO meta (name, value) VALUES (?, ?)",
                    [
                        ("format", FORMAT),
                        ("station", self.station_id),
                        ("kid", self.kid),
                        ("clock_offset", "0"),
                    ],
                )
                conn.execute(
                    "INSERT INTO head (one, seq, hash, at) VALUES (1, 0, ?, NULL)", (GENESIS,)
                )
                return
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        if meta.get("format") != FORMAT:
            raise StationQueueError(f"{self.path} is not a {FORMAT} file")
        if (meta.get("station"), meta.get("kid")) != (self.station_id, self.kid):
            raise StationQueueError(
                f"{self.path} is the queue of station {meta.get('station')}, device key"
                f" {meta.get('kid')}: not this device's"
            )

    # -- reading -----------------------------------------------------------------------------

    def head(self) -> Head:
        seq, hash_, at = self._conn.execute("SELECT seq, hash, at FROM head").fetchone()
        return Head(seq, hash_, at)

    def _counters(
        self, conn: sqlite3.Connection, member: str, program: str, day: str, presentation: str
    ) -> LocalCounters:
        def one(sql: str, *args: object) -> int:
            row = conn.execute(sql, args).fetchone()
            return 0 if row is None else int(row[0])

        replayed = (
            conn.execute(
                "SELECT 1 FROM replay WHERE presentation = ?"
                " UNION ALL SELECT 1 FROM records WHERE presentation = ?",
                (presentation, presentation),
            ).fetchone()
            is not None
        )
        return LocalCounters(
            member_units=one(
                "SELECT units FROM member_units WHERE day = ? AND member = ? AND program = ?",
                day,
                member,
                program,
            ),
            program_value=one(
                "SELECT value FROM program_value WHERE day = ? AND program = ?", day, program
            ),
            station_value=one("SELECT value FROM station_value WHERE day = ?", day),
            replayed=replayed,
            last_time=conn.execute("SELECT at FROM head").fetchone()[0],
        )

    def counters(self, member: str, program: str, day: str, presentation: str) -> LocalCounters:
        """The counters a decision for this member, program, China day and presentation hash
        (base64url) would read now."""
        return self._counters(self._conn, member, program, day, presentation)

    def records(self, status: Status | None = None, *, after: int = 0) -> list[QueuedRecord]:
        """The records after ``seq`` ``after``, in order (of ``status`` only, when given)."""
        if status is None:
            rows = self._conn.execute(_SELECT + " WHERE seq > ? ORDER BY seq", (after,))
        else:
            rows = self._conn.execute(
                _SELECT + " WHERE status = ? AND seq > ? ORDER BY seq",
                (status, after),
            )
        return [_queued(row) for row in rows]

    def pending(self) -> list[QueuedRecord]:
        """The records not yet synced, in ``seq`` order (the station shows them as pending)."""
        return self.records("pending")

    def summary(self) -> dict[str, int]:
        """How many records have each status (every status present, 0 included)."""
        found = dict(self._conn.execute("SELECT status, count(*) FROM records GROUP BY status"))
        return {status: int(found.get(status, 0)) for status in STATUSES}

    def day_totals(self, day: str) -> dict[str, int]:
        """Value redeemed offline on China ``day``: per program, and ``""`` for the total."""
        out = {
            str(program): int(value)
            for program, value in self._conn.execute(
                "SELECT program, value FROM program_value WHERE day = ? ORDER BY program", (day,)
            )
        }
        out[""] = self._conn.execute(
            "SELECT coalesce(sum(value), 0) FROM station_value WHERE day = ?", (day,)
        ).fetchone()[0]
        return out

    # -- the clock ---------------------------------------------------------------------------

    @property
    def clock_offset(self) -> timedelta:
        """Server time minus device clock, as learned at the last sync (0 before any)."""
        row = self._conn.execute("SELECT value FROM meta WHERE name = 'clock_offset'").fetchone()
        return timedelta(seconds=int(row[0]))

    def set_clock_offset(self, server_time: datetime, device_clock: datetime) -> None:
        """Remember how far the device clock is from the server's (call it at each sync)."""
        offset = int((server_time - device_clock).total_seconds())
        with self._write() as conn:
            conn.execute("UPDATE meta SET value = ? WHERE name = 'clock_offset'", (str(offset),))

    def station_time(self, device_clock: datetime) -> datetime:
        """The station's judged time: the device clock corrected by :attr:`clock_offset`.
        Pass it as ``now`` and the raw clock as ``clock``."""
        return (device_clock + self.clock_offset).astimezone(UTC)

    # -- redeeming ---------------------------------------------------------------------------

    def _append(
        self,
        conn: sqlite3.Connection,
        redemption: OfflineRedemption,
        key: keys.PrivateKey,
        remaining: OfflineRemaining | None = None,
    ) -> QueuedRecord:
        head_seq, head_hash = conn.execute("SELECT seq, hash FROM head").fetchone()
        record: OfflineRecord = sign_record(redemption.claims(head_seq + 1, head_hash), key)
        claims, day = record.claims, redemption.day
        conn.execute(
            "INSERT INTO records (seq, token, hash, prev, presentation, member, program, day,"
            " quantity, value, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                claims.seq,
                record.token,
                record.hash,
                claims.prev,
                claims.presentation,
                claims.member,
                claims.program,
                day,
                claims.quantity,
                claims.value,
                claims.iat,
            ),
        )
        conn.execute(
            "INSERT INTO member_units (day, member, program, units) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (day, member, program) DO UPDATE SET units = units + excluded.units",
            (day, claims.member, claims.program, claims.quantity),
        )
        conn.execute(
            "INSERT INTO program_value (day, program, value) VALUES (?, ?, ?)"
            " ON CONFLICT (day, program) DO UPDATE SET value = value + excluded.value",
            (day, claims.program, claims.value),
        )
        conn.execute(
            "INSERT INTO station_value (day, value) VALUES (?, ?)"
            " ON CONFLICT (day) DO UPDATE SET value = value + excluded.value",
            (day, claims.value),
        )
        conn.execute(
            "INSERT INTO replay (presentation, expires_at) VALUES (?, ?)"
            " ON CONFLICT (presentation) DO UPDATE SET expires_at ="
            " max(expires_at, excluded.expires_at)",
            (claims.presentation, redemption.replay_until),
        )
        conn.execute(
            "UPDATE head SET seq = ?, hash = ?, at = ? WHERE one = 1",
            (claims.seq, record.hash, claims.iat),
        )
        return QueuedRecord(
            claims.seq,
            record.token,
            record.hash,
            claims.prev,
            claims.presentation,
            claims.member,
            claims.program,
            day,
            claims.quantity,
            claims.value,
            claims.iat,
            "pending",
            None,
            remaining,
        )

    def _check_key(self, key: keys.PrivateKey, station: StationInfo) -> None:
        if key.key_id != self.kid:
            raise ValueError(f"key {key.key_id} is not this queue's device key {self.kid}")
        if station.station_id != self.station_id:
            raise ValueError(f"station {station.station_id} is not this queue's {self.station_id}")

    def record_offline(
        self,
        presentation: VerifiedPresentation,
        policy: OfflinePolicy,
        *,
        station: StationInfo,
        quantity: int,
        now: datetime,
        key: keys.PrivateKey,
        clock: datetime | None = None,
        max_skew: timedelta = DEFAULT_MAX_SKEW,
    ) -> QueuedRecord | Refusal:
        """Decide (:func:`~verifier.station.decide`) on an already verified presentation with
        the counters as they are under the write lock, and if accepted, sign the record with
        the device ``key`` and commit it with its counters, replay entry and the new head, all
        in one transaction. Returns the queued record (``pending``) or the refusal (nothing
        written).

        Raises:
            ValueError: ``key`` or ``station`` is not this queue's.
            sqlite3.Error: the disk failed; nothing was written.
        """
        self._check_key(key, station)
        with self._write() as conn:
            counters = self._counters(
                conn,
                presentation.member_id,
                policy.program,
                china_day(now),
                keys.b64url_encode(presentation.presentation_hash),
            )
            decision = decide(
                presentation,
                policy,
                counters,
                station=station,
                quantity=quantity,
                now=now,
                clock=clock,
                max_skew=max_skew,
            )
            if not isinstance(decision, Accept):
                return decision  # the transaction wrote nothing: committing it is a no-op
            return self._append(conn, decision.redemption, key, decision.remaining)

    def scan(
        self,
        text: str,
        *,
        program: str,
        quantity: int,
        cache: StationCache,
        now: datetime,
        key: keys.PrivateKey,
        clock: datetime | None = None,
    ) -> QueuedRecord | Refusal:
        """The station's offline redemption of a scanned QR ``text``: the whole
        :func:`~verifier.station.judge` (cache freshness, the presentation verified with the
        cached lists, the decision) with the counters read under the write lock, then the
        append, in one transaction."""
        self._check_key(key, cache.station)
        with self._write() as conn:

            def counters(
                member: str, program_id: str, day: str, presentation: str
            ) -> LocalCounters:
                return self._counters(conn, member, program_id, day, presentation)

            decision = judge(
                text,
                program=program,
                quantity=quantity,
                cache=cache,
                counters=counters,
                now=now,
                clock=clock,
            )
            if not isinstance(decision, Accept):
                return decision
            return self._append(conn, decision.redemption, key, decision.remaining)

    # -- syncing -----------------------------------------------------------------------------

    def pending_tokens(self, limit: int = 1000) -> list[str]:
        """The first ``limit`` pending records' tokens, in ``seq`` order: the next sync batch."""
        rows = self._conn.execute(
            "SELECT token FROM records WHERE status = 'pending' ORDER BY seq LIMIT ?", (limit,)
        )
        return [str(token) for (token,) in rows]

    def mark(self, seq: int, status: Status, reason: str | None = None) -> None:
        """Record the server's answer for record ``seq``: ``synced``, ``conflict`` or
        ``refused`` (with the server's reason). Only a pending record changes.

        Raises:
            StationQueueError: no such record, it is not pending, or ``status`` is pending.
        """
        if status not in STATUSES or status == "pending":
            raise StationQueueError(f"a record becomes synced, conflict or refused, not {status}")
        with self._write() as conn:
            row = conn.execute("SELECT status FROM records WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                raise StationQueueError(f"no record {seq} in this queue")
            if row[0] != "pending":
                raise StationQueueError(f"record {seq} is {row[0]} already")
            conn.execute(
                "UPDATE records SET status = ?, reason = ? WHERE seq = ?", (status, reason, seq)
            )

    def mark_many(self, answers: Mapping[int, tuple[Status, str | None]]) -> None:
        """:meth:`mark` for several records in one transaction (all or none)."""
        with self._write() as conn:
            for seq, (status, reason) in sorted(answers.items()):
                if status not in STATUSES or status == "pending":
                    raise StationQueueError(
                        f"a record becomes synced, conflict or refused, not {status}"
                    )
                changed = conn.execute(
                    "UPDATE records SET status = ?, reason = ?"
                    " WHERE seq = ? AND status = 'pending'",
                    (status, reason, seq),
                ).rowcount
                if changed != 1:
                    raise StationQueueError(f"record {seq} is missing or not pending")

    def purge_replay(self, now: datetime) -> int:
        """Forget the replay entries that expired before ``now``; returns how many. (A
        presentation of a record still in the queue stays refused: the records hold it too.)"""
        if now.tzinfo is None:
            raise ValueError("now must be an aware datetime")
        with self._write() as conn:
            return conn.execute(
                "DELETE FROM replay WHERE expires_at < ?", (int(now.timestamp()),)
            ).rowcount

    # -- checking ----------------------------------------------------------------------------

    def audit(self, station_keys: StationKeys, now: datetime) -> list[str]:
        """Check the whole file against itself (run it at start-up, and in tests): the chain of
        every record from seq 1 verifies (:func:`~verifier.station.verify_batch` against the
        device's key records), the head is its last record, each counter equals the sum over
        the records, and every record's presentation is in the replay cache unless expired.
        Returns the problems found (empty: all is well)."""
        problems: list[str] = []
        conn = self._conn
        conn.execute("BEGIN")  # one consistent snapshot for every read below
        try:
            rows = self.records()
            result: BatchResult = verify_batch(
                [r.token for r in rows],
                0,
                GENESIS,
                station_keys=station_keys,
                expected_station=self.station_id,
                now=now,
                kid=self.kid,
            )
            if result.failure is not None:
                problems.append(f"chain: {result.failure}")
            for row, verified in zip(rows, result.accepted, strict=False):
                c = verified.claims
                stored = (row.hash, row.prev, row.presentation, row.member, row.program)
                if stored != (verified.hash, c.prev, c.presentation, c.member, c.program) or (
                    row.day,
                    row.quantity,
                    row.value,
                    row.at,
                ) != (c.day, c.quantity, c.value, c.iat):
                    problems.append(f"record {row.seq}: its columns differ from its token")
            head = self.head()
            last = rows[-1] if rows else None
            expected_head = (last.seq, last.hash, last.at) if last else (0, GENESIS, None)
            if (head.seq, head.hash, head.at) != expected_head:
                problems.append(f"head {head} is not the last record {expected_head}")
            problems += self._audit_counters(rows, now)
        finally:
            conn.execute("COMMIT")
        return problems

    def _audit_counters(self, rows: list[QueuedRecord], now: datetime) -> list[str]:
        units: dict[tuple[str, str, str], int] = {}
        program_value: dict[tuple[str, str], int] = {}
        station_value: dict[str, int] = {}
        for r in rows:
            units[(r.day, r.member, r.program)] = (
                units.get((r.day, r.member, r.program), 0) + r.quantity
            )
            program_value[(r.day, r.program)] = program_value.get((r.day, r.program), 0) + r.value
            station_value[r.day] = station_value.get(r.day, 0) + r.value
        conn = self._conn
        found_units = {
            (str(d), str(m), str(p)): int(u)
            for d, m, p, u in conn.execute("SELECT day, member, program, units FROM member_units")
        }
        found_program = {
            (str(d), str(p)): int(v)
            for d, p, v in conn.execute("SELECT day, program, value FROM program_value")
        }
        found_station = {
            str(d): int(v) for d, v in conn.execute("SELECT day, value FROM station_value")
        }
        problems = []
        if found_units != units:
            problems.append("member_units differ from the sums over the records")
        if found_program != program_value:
            problems.append("program_value differs from the sums over the records")
        if found_station != station_value:
            problems.append("station_value differs from the sums over the records")
        replay = dict(conn.execute("SELECT presentation, expires_at FROM replay").fetchall())
        # An entry expires no sooner than REPLAY_KEEP after its record: until then it is there.
        keep = int(REPLAY_KEEP.total_seconds())
        now_s = int(now.timestamp())
        missing = [r.seq for r in rows if r.presentation not in replay and now_s < r.at + keep]
        if missing:
            problems.append(f"records {missing} are missing from the replay cache")
        return problems
