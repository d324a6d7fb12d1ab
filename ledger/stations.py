"""Stations: the service points where members redeem (工会驿站, 司机之家, mother-and-infant rooms,
workers' cultural palaces), each run by one union, and their device keys.

State is the ``stations``, ``station_keys`` and ``station_ceilings`` projections of five events,
all appended by the commands below (docs/stations.md, section 1):

- ``StationRegistered`` {station, name, kind, union, location, lat, lon, hours, daily_ceiling}
  (``daily_ceiling`` optional: absent, as in events before it existed, means null)
- ``StationUpdated`` {station, and any of: name, location, lat + lon, hours, daily_ceiling}
- ``StationClosed`` {station}
- ``StationKeyRegistered`` {station, kid, x}
- ``StationKeyRevoked`` {station, kid, reason}

A station's operating union never changes (close it and register a new one instead), so the
stations of a subtree are the stations whose union is in it: a join on the unions' materialised
paths, which follows the union when it moves.

A station's ``daily_ceiling`` (fen, 0..10**12, or null: none) bounds the value each of its
devices may redeem offline per China day across all programs (docs/station.md, section 4 check
14); the sync re-checks it with the ceiling in force at each record's time, which
``station_ceilings`` keeps (one row per event that set it, by entry).

A device key is generated on the device; an official registers only its public key (an OKP
Ed25519 JWK). Closing a station revokes every key it still has (one ``StationKeyRevoked`` each,
reason ``station closed``) before ``StationClosed``: the chain shows when each key stopped. A
revocation, and so a closure, also ends every login session of the station in the same
transaction (``auth_sessions``, server state): a session does not say which device key opened it.

Commands check everything through ``tx.conn`` and raise a :class:`~ledger.domain.DomainError`
before appending. The system may do anything; an official acts on the stations of unions in the
subtree of ``actor.scope``, and a station outside it is reported exactly like a missing one;
auditors, members and stations change nothing.
"""

from __future__ import annotations

import enum
import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, TypeGuard
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    select,
    update,
)

import keys
from ledger import unions
from ledger.accounts import auth_sessions
from ledger.domain import Actor, Conflict, Forbidden, Invalid, NotFound, Role
from ledger.schema import projection_metadata
from ledger.sequencer import Tx
from verifier.entry import Entry, format_entry_time


class Kind(enum.StrEnum):
    """What kind of service point a station is."""

    UNION_STATION = "union_station"  # 工会驿站: rest stop for outdoor workers
    TRUCK_DRIVER_HOME = "truck_driver_home"  # 司机之家
    MOTHER_INFANT_ROOM = "mother_infant_room"  # 母婴室 (爱心妈妈小屋)
    CULTURAL_PALACE = "cultural_palace"  # 工人文化宫
    OTHER = "other"  # 其他服务阵地


KIND_ZH: Mapping[Kind, str] = {
    Kind.UNION_STATION: "工会驿站",
    Kind.TRUCK_DRIVER_HOME: "司机之家",
    Kind.MOTHER_INFANT_ROOM: "母婴室",
    Kind.CULTURAL_PALACE: "工人文化宫",
    Kind.OTHER: "其他",
}


class Status(enum.StrEnum):
    ACTIVE = "active"
    CLOSED = "closed"


ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")  # as keys scopes (keys/keyring.py)
TEXT_MAX = 200  # name, location, revocation reason
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
MAX_INTERVALS = 6  # per day
_START_RE = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]")
_END_RE = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00")
_DEGREES_RE = re.compile(r"-?(?:0|[1-9][0-9]{0,2})(?:\.[0-9]{1,7})?")
MAX_ACTIVE_KEYS = 8  # per station: bounds the signatures a login tries
CLOSING_REASON = "station closed"
MAX_CEILING = 10**12  # fen, as verifier.station.MAX_FEN
PAGE_MAX = 1000

try:
    LOCAL_TIME: tzinfo = ZoneInfo("Asia/Shanghai")
except ZoneInfoNotFoundError:  # no system tz database and no `tzdata` package
    # China has kept UTC+8 without daylight saving since 1991: the same answers for any
    # time a station can have been registered at.
    LOCAL_TIME = timezone(timedelta(hours=8), "CST")

Hours = dict[str, list[list[str]]]
"""A weekly schedule: every day of :data:`DAYS` → its opening intervals ``[start, end]``."""

# --- errors ------------------------------------------------------------------------------------


class UnknownStation(NotFound):
    """No such station (or not visible to this actor)."""

    code = "unknown-station"
    status = 404


class DuplicateStation(Conflict):
    """A station with this id already exists."""

    code = "duplicate-station"
    status = 409


class StationClosed(Conflict):
    """The station is closed."""

    code = "station-closed"
    status = 409


class BadStationId(Invalid):
    """Not a valid station id (1 to 64 letters, digits and ._:- not starting with one of ._:-)."""

    code = "bad-station-id"
    status = 422


class BadStationText(Invalid):
    """Not a valid station name, location or reason (control characters, edge spaces, length)."""

    code = "bad-station-text"
    status = 422


class UnknownStationKind(Invalid):
    """Not a kind of station."""

    code = "unknown-station-kind"
    status = 422


class BadCoordinates(Invalid):
    """Not a latitude and longitude as decimal strings (both or neither)."""

    code = "bad-coordinates"
    status = 422


class BadHours(Invalid):
    """Not a weekly opening-hours schedule."""

    code = "bad-opening-hours"
    status = 422


class BadDailyCeiling(Invalid):
    """Not a daily ceiling: an integer number of fen from 0 to 10**12, or null (none)."""

    code = "bad-daily-ceiling"
    status = 422


class NothingToUpdate(Invalid):
    """A station update that changes no field."""

    code = "empty-station-update"
    status = 422


class BadStationKey(Invalid):
    """Not an Ed25519 public key as an OKP JWK."""

    code = "bad-station-key"
    status = 422


class DuplicateStationKey(Conflict):
    """This device key is registered already (to this or another station, revoked or not)."""

    code = "duplicate-station-key"
    status = 409


class TooManyStationKeys(Conflict):
    """The station has as many unrevoked device keys as it may have."""

    code = "too-many-station-keys"
    status = 409


class UnknownStationKey(NotFound):
    """The station has no device key with this key id."""

    code = "unknown-station-key"
    status = 404


class StationKeyAlreadyRevoked(Conflict):
    """The device key is revoked already."""

    code = "station-key-revoked"
    status = 409


def _unknown(station_id: object) -> UnknownStation:
    # One message for "missing" and "outside your subtree": the reply must not tell them apart.
    return UnknownStation(f"no station {station_id!r}")


# --- tables ------------------------------------------------------------------------------------

stations = Table(
    "stations",
    projection_metadata,
    Column("station_id", String(64), primary_key=True),
    Column("name", String(TEXT_MAX), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("union_code", String(32), nullable=False),
    Column("location", String(TEXT_MAX), nullable=False),
    Column("lat", String(16), nullable=True),
    Column("lon", String(16), nullable=True),
    Column("hours", Text, nullable=True),  # canonical JSON of Hours; NULL: always open
    Column("daily_ceiling", BigInteger, nullable=True),  # fen; NULL: no station-wide ceiling
    Column("status", String(8), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Column("closed_at", String(32), nullable=True),
    Index("ix_stations_union", "union_code"),
)

station_keys = Table(
    "station_keys",
    projection_metadata,
    Column("kid", String(43), primary_key=True),  # RFC 7638 thumbprint
    Column("station_id", String(64), nullable=False),
    Column("x", String(43), nullable=False),  # the raw 32-byte public key, base64url
    Column("registered_at", String(32), nullable=False),
    Column("revoked_at", String(32), nullable=True),
    Column("revoke_reason", String(TEXT_MAX), nullable=True),
    Index("ix_station_keys_station", "station_id"),
)

station_ceilings = Table(
    "station_ceilings",
    projection_metadata,
    Column("entry", Integer, primary_key=True, autoincrement=False),
    Column("station_id", String(64), nullable=False),
    Column("at", String(32), nullable=False),  # the entry's time: in force from then on
    Column("daily_ceiling", BigInteger, nullable=True),
    Index("ix_station_ceilings_station", "station_id"),
)


@dataclass(frozen=True, slots=True)
class StationRow:
    """One row of ``stations``."""

    station_id: str
    name: str
    kind: Kind
    union_code: str
    location: str
    lat: str | None
    lon: str | None
    hours: Hours | None
    status: Status
    created_at: str
    updated_at: str
    closed_at: str | None
    daily_ceiling: int | None = None

    @property
    def active(self) -> bool:
        return self.status is Status.ACTIVE


@dataclass(frozen=True, slots=True)
class StationKeyRow:
    """One row of ``station_keys``."""

    kid: str
    station_id: str
    x: str
    registered_at: str
    revoked_at: str | None
    revoke_reason: str | None

    @property
    def public_key(self) -> keys.PublicKey:
        return keys.PublicKey.from_bytes(keys.b64url_decode(self.x))

    @property
    def jwk(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": self.x}


def _station(r: Any) -> StationRow:
    return StationRow(
        r.station_id,
        r.name,
        Kind(r.kind),
        r.union_code,
        r.location,
        r.lat,
        r.lon,
        None if r.hours is None else _days_in_order(json.loads(r.hours)),
        Status(r.status),
        r.created_at,
        r.updated_at,
        r.closed_at,
        None if r.daily_ceiling is None else int(r.daily_ceiling),
    )


def _days_in_order(hours: Hours) -> Hours:
    return {day: hours[day] for day in DAYS}


def _key(r: Any) -> StationKeyRow:
    return StationKeyRow(r.kid, r.station_id, r.x, r.registered_at, r.revoked_at, r.revoke_reason)


# --- validation: one function per field, a message or None, for commands and projection alike --


def _is_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def _text_problem(value: object, what: str, *, empty: bool = False) -> str | None:
    low = 0 if empty else 1
    if not isinstance(value, str) or not low <= len(value) <= TEXT_MAX or value != value.strip():
        return f"a station {what} is {low} to {TEXT_MAX} characters without edge spaces"
    if any(unicodedata.category(ch)[0] == "C" or ch in "\u2028\u2029" for ch in value):
        return f"a station {what} may not hold control or format characters"
    return None


def _coordinates_problem(lat: object, lon: object) -> str | None:
    if lat is None and lon is None:
        return None
    for value, limit, what in ((lat, 90, "latitude"), (lon, 180, "longitude")):
        if not isinstance(value, str) or not _DEGREES_RE.fullmatch(value):
            return f"{what} must be a decimal string like '39.9968' (both or neither)"
        if abs(Decimal(value)) > limit:
            return f"{what} must lie within ±{limit}"
    return None


def _ceiling_problem(value: object) -> str | None:
    if value is None or (type(value) is int and 0 <= value <= MAX_CEILING):
        return None
    return "a daily ceiling is an integer number of fen from 0 to 10**12, or null (none)"


def _minutes(text: str) -> int:
    return int(text[:2]) * 60 + int(text[3:])


def parse_hours(value: object) -> Hours | None:
    """``value`` as a checked weekly schedule (``None``: always open).

    The schedule is an object with exactly the keys ``mon`` .. ``sun``; each holds at most
    :data:`MAX_INTERVALS` intervals ``[start, end]`` of ``"HH:MM"`` local times (Asia/Shanghai),
    ``start`` in 00:00..23:59, ``end`` in 00:01..24:00 and after ``start``, ordered, and each
    starting after the previous one ends (touching intervals are one interval: merge them). An
    interval never crosses midnight: split it over the two days. ``[]`` is a closed day.

    Raises:
        BadHours: anything else.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != set(DAYS):
        raise BadHours("opening hours need exactly the days " + ", ".join(DAYS))
    out: Hours = {}
    for day in DAYS:
        spans = value[day]
        if not isinstance(spans, list | tuple) or len(spans) > MAX_INTERVALS:
            raise BadHours(f"{day}: a list of at most {MAX_INTERVALS} [start, end] intervals")
        previous_end = -1
        out[day] = []
        for span in spans:
            if not isinstance(span, list | tuple) or len(span) != 2:
                raise BadHours(f"{day}: each interval is [start, end]")
            start, end = span
            if not (isinstance(start, str) and _START_RE.fullmatch(start)):
                raise BadHours(f"{day}: start {start!r} is not HH:MM in 00:00..23:59")
            if not (isinstance(end, str) and _END_RE.fullmatch(end)):
                raise BadHours(f"{day}: end {end!r} is not HH:MM in 00:01..24:00")
            if _minutes(end) <= _minutes(start):
                raise BadHours(f"{day}: {start}-{end} ends before it starts")
            if _minutes(start) <= previous_end:
                raise BadHours(f"{day}: intervals must be ordered, apart and not touching")
            previous_end = _minutes(end)
            out[day].append([start, end])
    return out


def hours_text(hours: Hours | None) -> str | None:
    """The stored form: canonical JSON (keys sorted, no whitespace)."""
    if hours is None:
        return None
    return json.dumps(hours, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def hours_open_at(hours: Hours | None, when: datetime) -> bool:
    """Whether the schedule ``hours`` is open at ``when`` (Asia/Shanghai local time; an
    interval includes its start and excludes its end; ``None`` is always open).

    Raises:
        ValueError: ``when`` is naive.
    """
    if when.tzinfo is None:
        raise ValueError("naive datetime: pass an aware time")
    if hours is None:
        return True
    local = when.astimezone(LOCAL_TIME)
    second = local.hour * 3600 + local.minute * 60 + local.second
    return any(
        _minutes(start) * 60 <= second < _minutes(end) * 60
        for start, end in hours[DAYS[local.weekday()]]
    )


def is_open_at(row: StationRow, when: datetime) -> bool:
    """Whether the station's opening hours include ``when``: the schedule it has now, whatever
    its status (a redemption at a closed station is refused elsewhere).

    Raises:
        ValueError: ``when`` is naive.
    """
    return hours_open_at(row.hours, when)


def public_key_from_jwk(jwk: object) -> keys.PublicKey:
    """The Ed25519 public key of an OKP JWK (RFC 8037); other members (``kid``, ``use``,
    ``alg``) are ignored.

    Raises:
        BadStationKey: anything else (a private key ``d`` included: never accepted).
    """
    if not isinstance(jwk, Mapping):
        raise BadStationKey("the device key must be a JWK object")
    try:
        return keys.PublicKey.from_jwk(jwk)
    except (keys.KeysError, ValueError, TypeError) as e:
        raise BadStationKey(f"not an Ed25519 public JWK: {e}") from None


def _x_problem(kid: object, x: object) -> bool:
    """True when ``x`` is not a public key whose thumbprint is ``kid`` (projection check)."""
    if not isinstance(x, str):
        return True
    try:
        public = keys.PublicKey.from_bytes(keys.b64url_decode(x))
    except (keys.KeysError, ValueError):
        return True
    return public.key_id != kid


# --- queries -----------------------------------------------------------------------------------


_STATION = select(stations).where(stations.c.station_id == bindparam("station"))


def get_station(conn: Connection, station_id: str) -> StationRow | None:
    """The station ``station_id``, open or closed, or ``None``."""
    r = conn.execute(_STATION, {"station": station_id}).first()
    return None if r is None else _station(r)


def ceiling_history(conn: Connection, station_id: str) -> list[tuple[str, int | None]]:
    """``(entry time, daily_ceiling)`` of each event that set the station's ceiling, oldest
    first: the ceiling in force at a time is the last one at or before it (none before the
    first)."""
    c = station_ceilings
    rows = conn.execute(
        select(c.c.at, c.c.daily_ceiling).where(c.c.station_id == station_id).order_by(c.c.entry)
    )
    return [(x.at, None if x.daily_ceiling is None else int(x.daily_ceiling)) for x in rows]


def _sees(conn: Connection, actor: Actor, row: StationRow) -> bool:
    if actor.role in (Role.SYSTEM, Role.AUDITOR):
        return True
    if actor.role is Role.STATION:
        return actor.scope == row.station_id
    if actor.role is Role.OFFICIAL and actor.scope is not None:
        return unions.is_within(conn, actor.scope, row.union_code)
    return False


def visible_station(conn: Connection, actor: Actor, station_id: str) -> StationRow:
    """The station, if ``actor`` may see it: the system and auditors every station, an official
    the stations of unions in their subtree, a station itself.

    Raises:
        UnknownStation: missing, or outside the actor's view (reported alike).
    """
    row = get_station(conn, station_id) if isinstance(station_id, str) else None
    if row is None or not _sees(conn, actor, row):
        raise _unknown(station_id)
    return row


def list_stations(
    conn: Connection,
    actor: Actor,
    *,
    union: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> list[StationRow]:
    """One page of the stations run by the subtree of ``union`` (default: the official's scope;
    for auditors and the system, every station), by station id; for the next page pass the last
    id as ``after``.

    Raises:
        Forbidden: members and stations list nothing.
        unions.UnknownUnion: ``union`` is missing or outside the official's subtree.
        UnknownStationKind: ``kind`` is not a kind.
        ValueError: ``status`` is not a status, or ``limit`` is outside 1..1000.
    """
    if not 1 <= limit <= PAGE_MAX:
        raise ValueError(f"limit must be 1..{PAGE_MAX}")
    if actor.role is Role.OFFICIAL and actor.scope is not None:
        union = actor.scope if union is None else union
    elif actor.role not in (Role.SYSTEM, Role.AUDITOR):
        raise Forbidden(f"{actor.role.value} may not list stations")
    query = select(stations)
    if union is not None:
        root = unions.visible(conn, actor, union)
        if root is None:
            raise unions.UnknownUnion(f"no union {union!r}")
        u = unions.unions
        query = query.join(u, u.c.code == stations.c.union_code).where(
            u.c.path >= root.path, u.c.path < unions.path_upper(root.path)
        )
    if kind is not None:
        query = query.where(stations.c.kind == _kind(kind).value)
    if status is not None:
        query = query.where(stations.c.status == Status(status).value)
    if after is not None:
        query = query.where(stations.c.station_id > after)
    rows = conn.execute(query.order_by(stations.c.station_id).limit(limit)).all()
    return [_station(r) for r in rows]


def station_keys_of(conn: Connection, actor: Actor, station_id: str) -> list[StationKeyRow]:
    """Every device key ever registered to a station visible to ``actor``, revoked ones too,
    oldest first.

    Raises:
        UnknownStation: missing or not visible.
    """
    visible_station(conn, actor, station_id)
    return _keys_of(conn, station_id)


def _keys_of(conn: Connection, station_id: str) -> list[StationKeyRow]:
    rows = conn.execute(
        select(station_keys)
        .where(station_keys.c.station_id == station_id)
        .order_by(station_keys.c.registered_at, station_keys.c.kid)
    ).all()
    return [_key(r) for r in rows]


def station_public_keys(
    conn: Connection, station_id: str, at: datetime | None = None
) -> list[keys.PublicKey]:
    """The device keys on the ledger that ``station_id`` may have signed with at ``at``: keys
    registered at or before ``at``, not revoked at ``at`` (a revocation takes effect at its
    entry's time), of a station not closed at ``at``. Without ``at``: as the ledger stands now,
    every registered key not revoked, of an open station (what a login checks).

    Raises:
        ValueError: ``at`` is naive.
    """
    row = get_station(conn, station_id)
    if row is None:
        return []
    found = _keys_of(conn, station_id)
    if at is None:
        if not row.active:
            return []
        return [k.public_key for k in found if k.revoked_at is None]
    stamp = format_entry_time(at)
    if row.closed_at is not None and row.closed_at <= stamp:
        return []
    return [
        k.public_key
        for k in found
        if k.registered_at <= stamp and (k.revoked_at is None or k.revoked_at > stamp)
    ]


# --- commands ----------------------------------------------------------------------------------


def _require_writer(actor: Actor) -> None:
    if actor.role is Role.SYSTEM:
        return
    if (
        actor.role is Role.OFFICIAL
        and actor.scope is not None
        and unions.CODE_RE.fullmatch(actor.scope)
    ):
        return
    raise Forbidden(f"{actor.role.value} may not change stations")


def _check_text(value: object, what: str, *, empty: bool = False) -> str:
    problem = _text_problem(value, what, empty=empty)
    if problem is not None:
        raise BadStationText(problem)
    assert isinstance(value, str)
    return value


def _check_ceiling(value: object) -> int | None:
    problem = _ceiling_problem(value)
    if problem is not None:
        raise BadDailyCeiling(problem)
    assert value is None or isinstance(value, int)
    return value


def _check_coordinates(lat: object, lon: object) -> None:
    problem = _coordinates_problem(lat, lon)
    if problem is not None:
        raise BadCoordinates(problem)


def _kind(kind: object) -> Kind:
    if not isinstance(kind, str) or kind not in _KINDS:
        raise UnknownStationKind(f"unknown station kind {kind!r}")
    return Kind(kind)


def _active_station(conn: Connection, actor: Actor, station_id: str) -> StationRow:
    row = visible_station(conn, actor, station_id)
    if not row.active:
        raise StationClosed(f"station {station_id!r} is closed")
    return row


def _end_sessions(tx: Tx, station_id: str) -> None:
    """End every login session of the station (server state, in the command's transaction)."""
    tx.execute(
        update(auth_sessions)
        .where(
            auth_sessions.c.subject == station_id,
            auth_sessions.c.role == Role.STATION.value,
            auth_sessions.c.revoked_at.is_(None),
        )
        .values(revoked_at=int(tx.now.timestamp()))
    )


def register_station(
    tx: Tx,
    actor: Actor,
    *,
    station: str,
    name: str,
    kind: str,
    union: str,
    location: str = "",
    lat: str | None = None,
    lon: str | None = None,
    hours: Mapping[str, Any] | None = None,
    daily_ceiling: int | None = None,
) -> Entry:
    """Register a new active station run by ``union``; ``daily_ceiling``: fen per device and
    China day redeemed offline across all programs (None: no station-wide ceiling).

    Raises:
        Forbidden: the actor may not change stations.
        BadStationId, BadStationText, UnknownStationKind, BadCoordinates, BadHours,
        BadDailyCeiling: malformed.
        unions.UnknownUnion: ``union`` is missing or outside the official's subtree.
        unions.UnionClosed: ``union`` is closed.
        DuplicateStation: the id is taken, also by a closed station.
    """
    _require_writer(actor)
    if not _is_id(station):
        raise BadStationId(f"bad station id {station!r}")
    _check_text(name, "name")
    level = _kind(kind)
    _check_text(location, "location", empty=True)
    _check_coordinates(lat, lon)
    schedule = parse_hours(hours)
    _check_ceiling(daily_ceiling)
    unions.require_active_union(tx.conn, actor, union)
    if get_station(tx.conn, station) is not None:
        raise DuplicateStation(f"station {station!r} already exists")
    body = {
        "station": station,
        "name": name,
        "kind": level.value,
        "union": union,
        "location": location,
        "lat": lat,
        "lon": lon,
        "hours": schedule,
        "daily_ceiling": daily_ceiling,
    }
    return tx.append("StationRegistered", actor.ledger_actor, body)


class _Unset(enum.Enum):
    UNSET = enum.auto()


UNSET = _Unset.UNSET
"""A field that :func:`update_station` leaves as it is (``None`` means "none", not "unchanged")."""


def update_station(
    tx: Tx,
    actor: Actor,
    *,
    station: str,
    name: str | _Unset = UNSET,
    location: str | _Unset = UNSET,
    coordinates: tuple[str | None, str | None] | _Unset = UNSET,
    hours: Mapping[str, Any] | _Unset | None = UNSET,
    daily_ceiling: int | _Unset | None = UNSET,
) -> Entry:
    """Change an active station's name, location, coordinates ``(lat, lon)``, opening hours or
    daily ceiling (None removes it). The event carries the fields given (``lat`` and ``lon``
    together). The operating union and the kind do not change: close the station and register
    a new one.

    Raises:
        Forbidden, BadStationText, BadCoordinates, BadHours, BadDailyCeiling, UnknownStation,
        StationClosed.
        NothingToUpdate: no field given.
    """
    _require_writer(actor)
    body: dict[str, Any] = {"station": station}
    if name is not UNSET:
        body["name"] = _check_text(name, "name")
    if location is not UNSET:
        body["location"] = _check_text(location, "location", empty=True)
    if coordinates is not UNSET:
        lat, lon = coordinates
        _check_coordinates(lat, lon)
        body["lat"], body["lon"] = lat, lon
    if hours is not UNSET:
        body["hours"] = parse_hours(hours)
    if daily_ceiling is not UNSET:
        body["daily_ceiling"] = _check_ceiling(daily_ceiling)
    if len(body) == 1:
        raise NothingToUpdate(
            "give at least one of name, location, lat and lon, hours, daily_ceiling"
        )
    _active_station(tx.conn, actor, station)
    return tx.append("StationUpdated", actor.ledger_actor, body)


def close_station(tx: Tx, actor: Actor, *, station: str) -> Entry:
    """Close an active station for good: first revoke each of its unrevoked device keys
    (reason :data:`CLOSING_REASON`), then ``StationClosed``; its login sessions end. A closed
    station cannot log in, nor be changed or reopened.

    Raises:
        Forbidden, UnknownStation, StationClosed.
    """
    _require_writer(actor)
    _active_station(tx.conn, actor, station)
    for key in _keys_of(tx.conn, station):
        if key.revoked_at is None:
            body = {"station": station, "kid": key.kid, "reason": CLOSING_REASON}
            tx.append("StationKeyRevoked", actor.ledger_actor, body)
    _end_sessions(tx, station)
    return tx.append("StationClosed", actor.ledger_actor, {"station": station})


def register_station_key(
    tx: Tx, actor: Actor, *, station: str, jwk: Mapping[str, Any] | keys.PublicKey
) -> Entry:
    """Register a device's public key for an active station (the device made the key pair and
    keeps the private half). The key id is the key's RFC 7638 thumbprint.

    Raises:
        Forbidden, UnknownStation, StationClosed.
        BadStationKey: not an Ed25519 public JWK.
        DuplicateStationKey: the key is registered already, to any station, even revoked.
        TooManyStationKeys: the station has :data:`MAX_ACTIVE_KEYS` unrevoked keys.
    """
    _require_writer(actor)
    public = jwk if isinstance(jwk, keys.PublicKey) else public_key_from_jwk(jwk)
    conn = tx.conn
    _active_station(conn, actor, station)
    kid = public.key_id
    if conn.execute(select(station_keys.c.kid).where(station_keys.c.kid == kid)).first():
        raise DuplicateStationKey(f"device key {kid} is registered already")
    if sum(k.revoked_at is None for k in _keys_of(conn, station)) >= MAX_ACTIVE_KEYS:
        raise TooManyStationKeys(f"a station has at most {MAX_ACTIVE_KEYS} unrevoked keys")
    body = {"station": station, "kid": kid, "x": keys.b64url_encode(public.to_bytes())}
    return tx.append("StationKeyRegistered", actor.ledger_actor, body)


def revoke_station_key(tx: Tx, actor: Actor, *, station: str, kid: str, reason: str) -> Entry:
    """Revoke a station's device key (a stolen or retired device) from the entry's time on.
    Every login session of the station ends: the station's other devices log in again.

    Raises:
        Forbidden, BadStationText (the reason), UnknownStation.
        UnknownStationKey: the station has no key ``kid``.
        StationKeyAlreadyRevoked: it is revoked already.
    """
    _require_writer(actor)
    _check_text(reason, "revocation reason")
    conn = tx.conn
    visible_station(conn, actor, station)
    key = next((k for k in _keys_of(conn, station) if k.kid == kid), None)
    if key is None:
        raise UnknownStationKey(f"station {station!r} has no key {kid!r}")
    if key.revoked_at is not None:
        raise StationKeyAlreadyRevoked(f"key {kid} was revoked at {key.revoked_at}")
    _end_sessions(tx, station)
    body = {"station": station, "kid": kid, "reason": reason}
    return tx.append("StationKeyRevoked", actor.ledger_actor, body)


# --- the projection ----------------------------------------------------------------------------
#
# The commands make sure each event fits. An event they would have refused can only come from a
# direct append; the projection must not fail on anything the ledger accepted, so such an event
# (a malformed field, an unknown or closed station, an unknown union, a duplicate id or key)
# leaves the tables unchanged, deterministically: a rebuild does the same.


_REGISTERED = frozenset({"station", "name", "kind", "union", "location", "lat", "lon", "hours"})


def _registered(conn: Connection, entry: Entry) -> None:
    b = entry.body
    if not _REGISTERED.issubset(b):
        return
    station, union = b.get("station"), b.get("union")
    if not (_is_id(station) and isinstance(union, str)) or b.get("kind") not in _KINDS:
        return
    if _text_problem(b.get("name"), "") or _text_problem(b.get("location"), "", empty=True):
        return
    ceiling = b.get("daily_ceiling")  # absent (older events): none
    if _coordinates_problem(b.get("lat"), b.get("lon")) or _ceiling_problem(ceiling):
        return
    try:
        schedule = parse_hours(b.get("hours"))
    except BadHours:
        return
    if unions.get_union(conn, union) is None or get_station(conn, station) is not None:
        return
    conn.execute(
        stations.insert().values(
            station_id=station,
            name=b["name"],
            kind=b["kind"],
            union_code=union,
            location=b["location"],
            lat=b.get("lat"),
            lon=b.get("lon"),
            hours=hours_text(schedule),
            daily_ceiling=ceiling,
            status=Status.ACTIVE.value,
            created_at=entry.time,
            updated_at=entry.time,
            closed_at=None,
        )
    )
    if ceiling is not None:
        _ceiling_set(conn, entry, station, ceiling)


def _ceiling_set(conn: Connection, entry: Entry, station: str, ceiling: int | None) -> None:
    conn.execute(
        station_ceilings.insert().values(
            entry=entry.index, station_id=station, at=entry.time, daily_ceiling=ceiling
        )
    )


def _open_station(conn: Connection, station: object) -> StationRow | None:
    row = get_station(conn, station) if _is_id(station) else None
    return row if row is not None and row.active else None


def _update_values(b: Mapping[str, Any]) -> dict[str, Any] | None:
    """The columns a ``StationUpdated`` body changes, or None when a member is malformed."""
    values: dict[str, Any] = {}
    if "name" in b:
        if _text_problem(b["name"], ""):
            return None
        values["name"] = b["name"]
    if "location" in b:
        if _text_problem(b["location"], "", empty=True):
            return None
        values["location"] = b["location"]
    if "lat" in b or "lon" in b:
        if _coordinates_problem(b.get("lat", 0), b.get("lon", 0)):  # 0: one without the other
            return None
        values["lat"], values["lon"] = b["lat"], b["lon"]
    if "hours" in b:
        try:
            values["hours"] = hours_text(parse_hours(b["hours"]))
        except BadHours:
            return None
    if "daily_ceiling" in b:
        if _ceiling_problem(b["daily_ceiling"]):
            return None
        values["daily_ceiling"] = b["daily_ceiling"]
    return values


def _updated(conn: Connection, entry: Entry) -> None:
    b = entry.body
    if _open_station(conn, b.get("station")) is None:
        return
    values = _update_values(b)
    if values:
        conn.execute(
            update(stations)
            .where(stations.c.station_id == b["station"])
            .values(values | {"updated_at": entry.time})
        )
        if "daily_ceiling" in values:
            _ceiling_set(conn, entry, b["station"], values["daily_ceiling"])


def _closed(conn: Connection, entry: Entry) -> None:
    station = entry.body.get("station")
    if _open_station(conn, station) is not None:
        conn.execute(
            update(stations)
            .where(stations.c.station_id == station)
            .values(
                status=Status.CLOSED.value,
                closed_at=entry.time,
                updated_at=entry.time,
            )
        )


def _key_registered(conn: Connection, entry: Entry) -> None:
    b = entry.body
    station, kid, x = b.get("station"), b.get("kid"), b.get("x")
    if _open_station(conn, station) is None or _x_problem(kid, x):
        return
    if conn.execute(select(station_keys.c.kid).where(station_keys.c.kid == kid)).first():
        return
    conn.execute(
        station_keys.insert().values(
            kid=kid,
            station_id=station,
            x=x,
            registered_at=entry.time,
            revoked_at=None,
            revoke_reason=None,
        )
    )


def _key_revoked(conn: Connection, entry: Entry) -> None:
    b = entry.body
    station, kid, reason = b.get("station"), b.get("kid"), b.get("reason")
    if not (_is_id(station) and isinstance(kid, str)) or _text_problem(reason, ""):
        return
    conn.execute(
        update(station_keys)
        .where(
            station_keys.c.kid == kid,
            station_keys.c.station_id == station,
            station_keys.c.revoked_at.is_(None),
        )
        .values(revoked_at=entry.time, revoke_reason=reason)
    )


_Apply = Callable[[Connection, Entry], None]
_KINDS = frozenset(k.value for k in Kind)
_APPLY: Mapping[str, _Apply] = {
    "StationRegistered": _registered,
    "StationUpdated": _updated,
    "StationClosed": _closed,
    "StationKeyRegistered": _key_registered,
    "StationKeyRevoked": _key_revoked,
}
EVENT_TYPES = frozenset(_APPLY)


class StationsProjection:
    """The ``stations``, ``station_keys`` and ``station_ceilings`` tables. Writes in
    :meth:`apply`: commands later in the same batch read them (a station registered a moment
    ago gets its key). Reads ``unions`` (a station's union must exist), so it applies after
    :class:`unions.UnionsProjection`."""

    name = "stations"
    tables: Sequence[Table] = (stations, station_keys, station_ceilings)

    def apply(self, conn: Connection, entry: Entry) -> None:
        handler = _APPLY.get(entry.type)
        if handler is not None:
            handler(conn, entry)

    def flush(self, conn: Connection) -> None:
        pass

    def reset(self) -> None:
        pass
