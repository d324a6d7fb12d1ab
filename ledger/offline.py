"""Offline sync, the server side: a station uploads the records it signed offline
(``verifier/station.py``: compact JWS, one hash chain per device key); the server verifies each
record's signature and place in its device's chain, re-judges it against the ledger at the
record's time, and accounts for every record it was sent (docs/station.md, section 10).

Three events (docs/events.md):

- ``OfflineRedemptionRecorded``: the body of ``RedemptionRecorded`` (idempotency key
  ``offline:<kid>:<seq>``) plus ``seq``, ``kid``, ``record`` (base64url SHA-256 of the JWS) and
  ``offline_at`` (the record's ``iat``). Counted against quota and budget like an online
  redemption (``ledger/redemptions.py``'s projection applies it to the same tables).
- ``OfflineRedemptionConflicted``: the record's facts and a ``reason`` (``quota-used``,
  ``budget-exhausted``, ``not-a-member``, ``not-eligible``, ``not-stackable``,
  ``program-not-open``, ``not-redeemable-here``, ``invalid-quantity``, ``replayed``,
  ``offline-not-allowed``, ``offline-member-limit``, ``offline-station-ceiling``): the
  benefit was handed out but the rules say no; recorded for review, never dropped, NOT
  counted against quota or budget.

The offline limits a genuine station enforces (docs/station.md, sections 4 and 5) are enforced
again here, from the records already accepted (``offline_records``), since a stolen key not yet
revoked could sign records the app would never make: the version in force at the record's
``iat`` must allow offline redemption; per device key, member, program and China day of
``iat``, the accepted units must stay within ``OfflinePolicy.member_daily_limit``; per device
key, program and China day, the accepted value within ``offline.station_daily_value``.
- ``OfflineRecordRefused`` {station, kid, seq, record, reason, message}: a record that does
  not verify (bad signature, unknown or revoked key, gap, reordered, forked or broken chain,
  a clock from the future, a presentation twice in one batch). No member facts: its claims
  are not to be trusted.

Tables (projections): ``offline_heads`` (device key → the last synced seq, record hash and
time: the next batch continues from it) and ``offline_records`` (one row per event above, by
entry index: duplicates are detected by record hash, and conflicts and refusals listed for
review).

Sync is idempotent and resumable: a record already synced (same record hash) is answered
``duplicate`` with its entry and appended nothing; a refusal already recorded for the same
record and reason is answered again without a new event; a batch cut anywhere can be resent
whole or from the first record not acknowledged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    String,
    Table,
    bindparam,
    func,
    insert,
    select,
    update,
)

import keys
from ledger import members as m
from ledger import redemptions as r
from ledger import unions
from ledger.domain import Actor, Forbidden, Invalid, Role
from ledger.schema import projection_metadata
from ledger.sequencer import Tx
from ledger.stations import UnknownStation, get_station, station_keys
from verifier.entry import Entry, parse_entry_time
from verifier.errors import StationCacheError, StationRecordError
from verifier.station import (
    CHINA,
    GENESIS,
    OFFLINE_MEMBER_LIMIT,
    OFFLINE_NOT_ALLOWED,
    OFFLINE_STATION_CEILING,
    OfflinePolicy,
    VerifiedRecord,
    record_hash,
    verify_batch,
    verify_record,
)

MAX_BATCH = 1000
"""Records per sync request."""
ACCEPTED, CONFLICT, REFUSED, DUPLICATE = "accepted", "conflict", "refused", "duplicate"
NOT_JUDGED = "not-judged"
"""The reason of a record that verifies on its own but follows a refused record of its device
in the batch: nothing is recorded for it; the station resends it once the chain is mended."""
REPLAYED = "replayed"
RECORDED_TYPE = "OfflineRedemptionRecorded"
CONFLICTED_TYPE = "OfflineRedemptionConflicted"
REFUSED_TYPE = "OfflineRecordRefused"
PAGE_MAX = 1000

offline_heads = Table(
    "offline_heads",
    projection_metadata,
    Column("kid", String(43), primary_key=True),
    Column("station_id", String(64), nullable=False, index=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(43), nullable=False),
    Column("iat", BigInteger, nullable=False),
    Column("entry", Integer, nullable=False),
)

offline_records = Table(
    "offline_records",
    projection_metadata,
    Column("entry", Integer, primary_key=True, autoincrement=False),
    Column("station_id", String(64), nullable=False),
    Column("kid", String(43), nullable=True),
    Column("seq", BigInteger, nullable=True),
    Column("record", String(43), nullable=False),
    Column("status", String(8), nullable=False),
    Column("reason", String(64), nullable=True),
    Column("member_id", String(32), nullable=True),
    Column("program_id", String(64), nullable=True),
    Column("quantity", Integer, nullable=True),
    Column("value", BigInteger, nullable=True),
    Column("offline_at", BigInteger, nullable=True),
    Column("at", String(32), nullable=False),
)
Index("ix_offline_records_record", offline_records.c.record)
Index("ix_offline_records_review", offline_records.c.status, offline_records.c.station_id)

_HEAD = select(offline_heads).where(offline_heads.c.kid == bindparam("kid"))
_ADVANCE = (
    update(offline_heads)
    .where(offline_heads.c.kid == bindparam("h_kid"), offline_heads.c.seq < bindparam("h_seq"))
    .values(
        seq=bindparam("h_seq"),
        hash=bindparam("h_hash"),
        iat=bindparam("h_iat"),
        entry=bindparam("h_entry"),
    )
)
_PRESENTATION_USED = select(r.redemptions.c.redemption).where(
    r.redemptions.c.presentation == bindparam("presentation")
)


class OfflineNotAllowed(r.Refused):
    """The program's version in force at the record's time does not allow offline redemption."""

    code = OFFLINE_NOT_ALLOWED


class OfflineMemberLimit(r.Refused):
    """Beyond ``offline.per_member_per_day`` (or the quota count) for the member that day."""

    code = OFFLINE_MEMBER_LIMIT


class OfflineStationCeiling(r.Refused):
    """Beyond the program's ``offline.station_daily_value`` for the device that day."""

    code = OFFLINE_STATION_CEILING


def _china_day_bounds(iat: int) -> tuple[str, int, int]:
    """The China date of ``iat`` and its first and past-the-last second (NumericDate)."""
    day = datetime.fromtimestamp(iat, CHINA).date()
    start = int(datetime(day.year, day.month, day.day, tzinfo=CHINA).timestamp())
    return day.isoformat(), start, start + 86400


# -- the projection ------------------------------------------------------------------------------


class OfflineProjection:
    """Keeps ``offline_heads`` and ``offline_records`` from the three Offline* events (the
    redemption itself, for a recorded one, is ``RedemptionsProjection``'s)."""

    name = "offline"
    tables = (offline_heads, offline_records)

    def apply(self, conn: Connection, entry: Entry) -> None:
        if entry.type not in (RECORDED_TYPE, CONFLICTED_TYPE, REFUSED_TYPE):
            return
        b = entry.body
        try:
            station, kid, seq, record = b["station"], b["kid"], b["seq"], b["record"]
        except KeyError:
            return  # only a direct append can lack them: deterministic, a rebuild agrees
        refused = entry.type == REFUSED_TYPE
        conn.execute(
            insert(offline_records).values(
                entry=entry.index,
                station_id=station,
                kid=kid,
                seq=seq,
                record=record,
                status=REFUSED
                if refused
                else (ACCEPTED if entry.type == RECORDED_TYPE else CONFLICT),
                reason=b.get("reason"),
                member_id=None if refused else b.get("member"),
                program_id=None if refused else b.get("program"),
                quantity=None if refused else b.get("quantity"),
                value=None if refused else b.get("value"),
                offline_at=None if refused else b.get("offline_at"),
                at=entry.time,
            )
        )
        if refused or not isinstance(seq, int) or not isinstance(kid, str):
            return
        params = {
            "h_kid": kid,
            "h_seq": seq,
            "h_hash": record,
            "h_iat": b.get("offline_at", 0),
            "h_entry": entry.index,
        }
        if conn.execute(_ADVANCE, params).rowcount == 0 and (
            conn.execute(_HEAD, {"kid": kid}).first() is None
        ):
            conn.execute(
                insert(offline_heads).values(
                    kid=kid,
                    station_id=station,
                    seq=seq,
                    hash=record,
                    iat=params["h_iat"],
                    entry=entry.index,
                )
            )

    def flush(self, conn: Connection) -> None:
        pass

    def reset(self) -> None:
        pass


# -- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Head:
    """The last synced record of one device key's chain."""

    kid: str
    seq: int
    hash: str
    iat: int
    entry: int


def heads_of(conn: Connection, station_id: str) -> list[Head]:
    rows = conn.execute(
        select(offline_heads)
        .where(offline_heads.c.station_id == station_id)
        .order_by(offline_heads.c.kid)
    )
    return [Head(x.kid, int(x.seq), x.hash, int(x.iat), x.entry) for x in rows]


def device_keys(conn: Connection, station_id: str) -> dict[str, keys.KeyRecord]:
    """kid → key record of every device key ever registered to the station (revoked ones too,
    with their revocation time): what :func:`verifier.station.verify_record` takes."""
    out: dict[str, keys.KeyRecord] = {}
    rows = conn.execute(select(station_keys).where(station_keys.c.station_id == station_id))
    for k in rows:
        public = keys.PublicKey.from_bytes(keys.b64url_decode(k.x))
        out[k.kid] = keys.KeyRecord(
            kid=public.key_id,
            role=keys.Role.STATION,
            public_key=public,
            not_before=parse_entry_time(k.registered_at),
            scope=station_id,
            revoked_at=None if k.revoked_at is None else parse_entry_time(k.revoked_at),
            revocation_reason=k.revoke_reason if k.revoked_at is not None else None,
        )
    return out


@dataclass(frozen=True, slots=True)
class ReviewRow:
    """A conflict or a refused record, for review."""

    entry: int
    station_id: str
    union: str
    kid: str | None
    seq: int | None
    record: str
    status: str
    reason: str | None
    member_id: str | None
    program_id: str | None
    quantity: int | None
    value: int | None
    offline_at: int | None
    at: str


def for_review(
    conn: Connection,
    actor: Actor,
    *,
    union: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[ReviewRow]:
    """Conflicts and refused records of the stations run by ``union``'s subtree (default: the
    official's scope; auditors: every station), oldest first, after entry ``after``.

    Raises:
        Forbidden: not an official or an auditor.
        unions.UnknownUnion: ``union`` is missing or outside the official's subtree.
        ValueError: ``limit`` outside 1..1000.
    """
    from ledger.stations import stations  # noqa: PLC0415

    if not 1 <= limit <= PAGE_MAX:
        raise ValueError(f"limit must be 1..{PAGE_MAX}")
    if actor.role is Role.OFFICIAL and actor.scope is not None:
        union = actor.scope if union is None else union
    elif actor.role not in (Role.SYSTEM, Role.AUDITOR):
        raise Forbidden(f"{actor.role.value} may not review offline records")
    o = offline_records
    query = (
        select(o, stations.c.union_code)
        .join(stations, stations.c.station_id == o.c.station_id)
        .where(o.c.status.in_((CONFLICT, REFUSED)))
    )
    if union is not None:
        root = unions.visible(conn, actor, union)
        if root is None:
            raise unions.UnknownUnion(f"no union {union!r}")
        u = unions.unions
        query = query.join(u, u.c.code == stations.c.union_code).where(
            u.c.path >= root.path, u.c.path < unions.path_upper(root.path)
        )
    if after is not None:
        query = query.where(o.c.entry > after)
    rows = conn.execute(query.order_by(o.c.entry).limit(limit)).all()
    return [
        ReviewRow(
            x.entry,
            x.station_id,
            x.union_code,
            x.kid,
            x.seq,
            x.record,
            x.status,
            x.reason,
            x.member_id,
            x.program_id,
            x.quantity,
            None if x.value is None else int(x.value),
            x.offline_at,
            x.at,
        )
        for x in rows
    ]


# -- the command -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncItem:
    """The answer for one record of a sync request (``index``: its place in the request)."""

    index: int
    seq: int | None
    kid: str | None
    record: str | None
    status: str
    reason: str | None
    entry: int | None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class SyncResult:
    items: tuple[SyncItem, ...]
    heads: tuple[Head, ...]
    server_time: datetime

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys((ACCEPTED, CONFLICT, REFUSED, DUPLICATE), 0)
        for item in self.items:
            out[item.status] += 1
        return out


def _peek(token: object) -> tuple[str | None, int | None]:
    """A record's kid and seq, read WITHOUT verifying anything (to group and to label)."""
    if not isinstance(token, str) or len(token) > 4096:
        return None, None
    parts = token.split(".")
    if len(parts) != 3:
        return None, None
    out: list[Any] = [None, None]
    for i, (part, name) in enumerate(((parts[0], "kid"), (parts[1], "seq"))):
        try:
            value = json.loads(keys.b64url_decode(part)).get(name)
        except (ValueError, AttributeError):
            continue
        if (i == 0 and isinstance(value, str) and len(value) == 43) or (
            i == 1 and type(value) is int
        ):
            out[i] = value
    return out[0], out[1]


def _hash(token: object) -> str | None:
    return record_hash(token) if isinstance(token, str) and token.isascii() else None


def _digest(token: object) -> str:
    """The record hash, or for a token that is not ASCII text the SHA-256 of its UTF-8."""
    digest = _hash(token)
    if digest is not None:
        return digest
    text = token if isinstance(token, str) else repr(token)
    return keys.b64url_encode(hashlib.sha256(text.encode("utf-8", "replace")).digest())


class _Sync:
    """One sync request inside the writer's transaction."""

    def __init__(self, tx: Tx, station: Actor, members: m.Members) -> None:
        self.tx, self.conn, self.members = tx, tx.conn, members
        assert station.scope is not None
        self.station_id = station.scope
        self.actor = station.ledger_actor
        place = get_station(self.conn, self.station_id)
        if place is None:
            raise UnknownStation(f"no station {self.station_id!r}")
        self.union = place.union_code
        self.keys = device_keys(self.conn, self.station_id)
        self.policies: dict[tuple[str, int], OfflinePolicy | StationCacheError] = {}
        self.units: dict[tuple[str, str, str, str], int] = {}
        """(kid, member, program, China day) → offline units accepted (this run included)."""
        self.values: dict[tuple[str, str, str], int] = {}
        """(kid, program, China day) → offline value accepted (this run included)."""

    def policy_at(self, program: str, at: datetime) -> OfflinePolicy | None:
        """The offline policy of the program's version in force at ``at`` (None: no version
        then, :func:`ledger.redemptions.judge_at` refuses it as not open).

        Raises:
            OfflineNotAllowed: that version does not allow offline redemption.
        """
        from ledger import programs as p  # noqa: PLC0415

        version = p.version_at(self.conn, program, p.format_time(at))
        if version is None:
            return None
        key = (program, version.version)
        if key not in self.policies:
            try:
                self.policies[key] = OfflinePolicy.from_rules(
                    program, version.version, version.rules.to_json()
                )
            except StationCacheError as e:  # no station could have been provisioned with it
                self.policies[key] = e
        policy = self.policies[key]
        if isinstance(policy, StationCacheError):
            raise OfflineNotAllowed(f"program {program!r} cannot be redeemed offline: {policy}")
        if not policy.allowed:
            raise OfflineNotAllowed(
                f"{policy.name} (version {policy.version}) is not redeemable offline"
            )
        return policy

    def _accepted(self, *where: Any) -> Any:
        o = offline_records
        return select(
            func.coalesce(func.sum(o.c.quantity), 0), func.coalesce(func.sum(o.c.value), 0)
        ).where(o.c.status == ACCEPTED, o.c.station_id == self.station_id, *where)

    def limit_keys(
        self, kid: str, member: str, program: str, iat: int
    ) -> tuple[tuple[str, str, str, str], tuple[str, str, str]]:
        """The counters' keys of a record, loaded from ``offline_records`` on first use."""
        o = offline_records
        day, start, end = _china_day_bounds(iat)
        units_key, value_key = (kid, member, program, day), (kid, program, day)
        same = (o.c.kid == kid, o.c.program_id == program, o.c.offline_at >= start)
        if units_key not in self.units:
            row = self.conn.execute(
                self._accepted(*same, o.c.offline_at < end, o.c.member_id == member)
            ).one()
            self.units[units_key] = int(row[0])
        if value_key not in self.values:
            row = self.conn.execute(self._accepted(*same, o.c.offline_at < end)).one()
            self.values[value_key] = int(row[1])
        return units_key, value_key

    def check_limits(
        self, record: VerifiedRecord, policy: OfflinePolicy, value: int
    ) -> tuple[tuple[str, str, str, str], tuple[str, str, str]]:
        """Section 5's limits for one record judged acceptable (docs/station.md).

        Raises:
            OfflineMemberLimit, OfflineStationCeiling.
        """
        c = record.claims
        units_key, value_key = self.limit_keys(record.kid, c.member, c.program, c.iat)
        units, limit = self.units[units_key], policy.member_daily_limit
        if units + c.quantity > limit:
            raise OfflineMemberLimit(
                f"offline, a member may get {limit} of {policy.name} a day at one device:"
                f" {units} accepted already on {units_key[3]}"
            )
        spent, ceiling = self.values[value_key], policy.station_daily_value
        if spent + value > ceiling:
            raise OfflineStationCeiling(
                f"the device's offline limit for {policy.name} on {value_key[2]} is {ceiling}"
                f" fen: {spent} accepted already, this record {value}"
            )
        return units_key, value_key

    def refuse(
        self, index: int, token: object, kid: str | None, seq: int | None, e: StationRecordError
    ) -> SyncItem:
        digest = _digest(token)
        code, message = e.code, str(e)[:200]
        earlier = self.conn.execute(
            select(offline_records.c.entry).where(
                offline_records.c.record == digest,
                offline_records.c.status == REFUSED,
                offline_records.c.reason == code,
            )
        ).scalar()
        if earlier is None:
            earlier = self.tx.append(
                REFUSED_TYPE,
                self.actor,
                {
                    "station": self.station_id,
                    "kid": kid,
                    "seq": seq,
                    "record": digest,
                    "reason": code,
                    "message": message,
                },
            ).index
        return SyncItem(index, seq, kid, digest, REFUSED, code, earlier, message)

    def judge(self, index: int, record: VerifiedRecord) -> SyncItem:
        c = record.claims
        facts: dict[str, Any] = {
            "program": c.program,
            "member": c.member,
            "station": self.station_id,
            "quantity": c.quantity,
            "presentation": c.presentation,
            "seq": c.seq,
            "kid": record.kid,
            "record": record.hash,
            "offline_at": c.iat,
        }
        at = datetime.fromtimestamp(c.iat, UTC)
        used = self.conn.execute(
            _PRESENTATION_USED, {"presentation": keys.b64url_decode(c.presentation).hex()}
        ).first()
        try:
            if used is not None:
                raise r.PresentationReplayed("this QR presentation was redeemed already")
            policy = self.policy_at(c.program, at)
            judged = r.judge_at(
                self.conn,
                self.members,
                station_id=self.station_id,
                program=c.program,
                member_id=c.member,
                quantity=c.quantity,
                at=at,
            )
            counted = None if policy is None else self.check_limits(record, policy, judged.value)
        except r.Refused as e:
            reason = REPLAYED if isinstance(e, r.PresentationReplayed) else e.code
            message = str(e)[:200]
            body = {
                **facts,
                "version": c.version,
                "value": c.value,
                "operating": self.union,
                "home": c.home,
                "reason": reason,
                "message": message,
            }
            entry = self.tx.append(CONFLICTED_TYPE, self.actor, body)
            return SyncItem(
                index, c.seq, record.kid, record.hash, CONFLICT, reason, entry.index, message
            )
        body = {
            **facts,
            "version": judged.version,
            "value": judged.value,
            "funding": judged.funding,
            "operating": judged.operating,
            "home": judged.home,
            "period": judged.period,
            "idempotency": f"offline:{record.kid}:{c.seq}",
        }
        entry = self.tx.append(RECORDED_TYPE, self.actor, body)
        if counted is not None:
            self.units[counted[0]] += c.quantity
            self.values[counted[1]] += judged.value
        return SyncItem(index, c.seq, record.kid, record.hash, ACCEPTED, None, entry.index)

    def chain(self, kid: str | None, group: list[tuple[int, str]]) -> list[SyncItem]:
        """Verify and judge one device key's records (in request order) after its head."""
        head = None if kid is None else self.conn.execute(_HEAD, {"kid": kid}).first()
        tokens = [t for _, t in group]
        result = verify_batch(
            tokens,
            0 if head is None else int(head.seq),
            GENESIS if head is None else head.hash,
            station_keys=self.keys,
            expected_station=self.station_id,
            now=self.tx.now,
            previous_time=None if head is None else int(head.iat),
            kid=kid,
        )
        out = [self.judge(group[i][0], rec) for i, rec in enumerate(result.accepted)]
        failure = result.failure
        if failure is None:
            return out
        index, token = group[failure.index]
        out.append(self.refuse(index, token, kid, failure.seq, failure.error))
        for index, token in group[failure.index + 1 :]:
            _, seq = _peek(token)
            try:
                verify_record(token, self.keys, expected_station=self.station_id, now=self.tx.now)
            except StationRecordError as e:  # wrong on its own: recorded (a stolen device)
                out.append(self.refuse(index, token, kid, seq, e))
                continue
            out.append(
                SyncItem(
                    index,
                    seq,
                    kid,
                    _hash(token),
                    REFUSED,
                    NOT_JUDGED,
                    None,
                    f"follows refused seq {failure.seq} of this device: resend it after mending",
                )
            )
        return out


def sync(tx: Tx, station: Actor, records: Sequence[str], *, members: m.Members) -> SyncResult:
    """Verify, judge and record a station's offline records (module docstring). Every record
    sent gets exactly one answer, in request order.

    Raises:
        Forbidden: not a station. Invalid: more than :data:`MAX_BATCH` records.
        UnknownStation: the station is not registered.
    """
    if station.role is not Role.STATION or station.scope is None:
        raise Forbidden("only a station syncs its offline records")
    if len(records) > MAX_BATCH:
        raise Invalid(f"at most {MAX_BATCH} records per sync request")
    run = _Sync(tx, station, members)
    conn = tx.conn
    hashes = [_hash(t) for t in records]
    wanted = {h for h in hashes if h is not None}
    synced: dict[str, tuple[int, int | None, str | None]] = {}
    if wanted:
        rows = conn.execute(
            select(
                offline_records.c.record,
                offline_records.c.entry,
                offline_records.c.seq,
                offline_records.c.kid,
            ).where(
                offline_records.c.record.in_(sorted(wanted)),
                offline_records.c.status.in_((ACCEPTED, CONFLICT)),
                offline_records.c.station_id == run.station_id,
            )
        )
        synced = {x.record: (x.entry, x.seq, x.kid) for x in rows}
    answers: dict[int, SyncItem] = {}
    first_of: dict[str, int] = {}
    repeats: list[tuple[int, int]] = []
    groups: dict[str | None, list[tuple[int, str]]] = {}
    for index, (token, digest) in enumerate(zip(records, hashes, strict=True)):
        if digest is not None and digest in synced:
            entry, seq, kid = synced[digest]
            answers[index] = SyncItem(index, seq, kid, digest, DUPLICATE, None, entry)
            continue
        if digest is not None and digest in first_of:
            repeats.append((index, first_of[digest]))
            continue
        if digest is not None:
            first_of[digest] = index
        kid, _ = _peek(token)
        groups.setdefault(kid, []).append((index, token))
    for kid, group in groups.items():
        for item in run.chain(kid, group):
            answers[item.index] = item
    for index, first in repeats:  # the same record twice in one request
        earlier = answers[first]
        status = DUPLICATE if earlier.status in (ACCEPTED, CONFLICT) else earlier.status
        answers[index] = SyncItem(
            index, earlier.seq, earlier.kid, earlier.record, status, earlier.reason, earlier.entry
        )
    items = tuple(answers[i] for i in range(len(records)))
    return SyncResult(items, tuple(heads_of(conn, run.station_id)), tx.now)


# -- provisioning ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Provisioned:
    """A program redeemable at a station now, as ``StationCache.with_programs`` takes it."""

    program: str
    version: int
    rules: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"program": self.program, "version": self.version, "rules": self.rules}


def redeemable_at(conn: Connection, station_id: str, now: datetime) -> list[Provisioned]:
    """The open programs whose version in force at ``now`` runs today (China time) and may be
    redeemed at the station (its ``where``, within the owner's or ``where.subtree``), by id."""
    from ledger import programs as p  # noqa: PLC0415
    from ledger.domain import SYSTEM  # noqa: PLC0415

    place = get_station(conn, station_id)
    if place is None or not place.active:
        return []
    stamp = p.format_time(now)
    today = now.astimezone(p.CHINA).date()
    out = []
    for row in p.list_programs(conn, SYSTEM, status="open"):
        version = p.version_at(conn, row.program_id, stamp)
        if version is None or not version.rules.runs_on(today):
            continue
        if not r.station_allows(conn, version.rules, row.owner, place):
            continue
        out.append(Provisioned(row.program_id, version.version, version.rules.to_json()))
    return out
