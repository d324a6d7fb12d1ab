"""Station routes: register, change and close stations and their device keys (officials in
their subtree), and read them (officials in their subtree, auditors everywhere, a station
itself). docs/stations.md describes the registry; every check happens in ``ledger.stations``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from api.auth import AuditorOrOfficialDep, OfficialDep, require
from api.deps import ServicesDep
from ledger import stations as st
from ledger.domain import Actor, Role

router = APIRouter(tags=["stations"])

StationId = Annotated[str, Path(max_length=64, description="Station id, e.g. ST-BJ-WJ-0001")]
Kid = Annotated[str, Path(max_length=64, description="The device key's RFC 7638 thumbprint")]
ReaderDep = Annotated[Actor, Depends(require(Role.OFFICIAL, Role.AUDITOR, Role.STATION))]
KINDS = ", ".join(f"{k.value} ({st.KIND_ZH[k]})" for k in st.Kind)
HOURS_DOC = (
    "Weekly opening hours in Asia/Shanghai time: every day mon..sun with a list of "
    '["HH:MM", "HH:MM"] intervals ([] = closed that day); null = always open'
)
WEEKDAYS = [["08:00", "20:00"]]
HOURS_EXAMPLE: dict[str, Any] = {
    "mon": WEEKDAYS,
    "tue": WEEKDAYS,
    "wed": WEEKDAYS,
    "thu": WEEKDAYS,
    "fri": WEEKDAYS,
    "sat": [["09:00", "12:00"], ["13:00", "17:00"]],
    "sun": [],
}
Schedule = dict[str, list[list[str]]]
CEILING_DOC = (
    "Fen each device of the station may redeem offline per China day, all programs together"
    " (0..10**12; re-checked at sync); null = no station-wide ceiling"
)


class StationOut(BaseModel):
    station_id: str
    name: str
    kind: str
    union: str = Field(description="The operating union")
    location: str
    lat: str | None
    lon: str | None
    hours: Schedule | None
    daily_ceiling: int | None = Field(description=CEILING_DOC)
    status: str
    created_at: str
    updated_at: str
    closed_at: str | None


class StationPage(BaseModel):
    items: list[StationOut]
    next: str | None = Field(None, description="Pass as `after` for the next page")


class StationCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "station_id": "ST-BJ-WJ-0001",
                    "name": "望京街道工会驿站",
                    "kind": "union_station",
                    "union": "110105-WJ",
                    "location": "北京市朝阳区望京街道",
                    "lat": "39.9968",
                    "lon": "116.4700",
                    "hours": HOURS_EXAMPLE,
                    "daily_ceiling": 200000,
                }
            ]
        },
    )
    station_id: str = Field(max_length=64)
    name: str = Field(max_length=st.TEXT_MAX)
    kind: str = Field(max_length=32, description=f"One of: {KINDS}")
    union: str = Field(max_length=32, description="The operating union (in your subtree)")
    location: str = Field("", max_length=st.TEXT_MAX, description="A place, never a person")
    lat: str | None = Field(None, max_length=16, description="Decimal degrees, e.g. 39.9968")
    lon: str | None = Field(None, max_length=16, description="Decimal degrees, e.g. 116.47")
    hours: Schedule | None = Field(None, description=HOURS_DOC)
    daily_ceiling: StrictInt | None = Field(None, description=CEILING_DOC)


class StationUpdate(BaseModel):
    """The fields to change; absent ones stay. ``lat`` and ``lon`` go together; ``null`` hours
    means always open; ``null`` daily_ceiling removes it. The operating union and the kind
    never change."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "望京街道SOHO工会驿站", "hours": None},
                {"hours": HOURS_EXAMPLE},
                {"daily_ceiling": 100000},
            ]
        },
    )
    name: str | None = Field(None, max_length=st.TEXT_MAX)
    location: str | None = Field(None, max_length=st.TEXT_MAX)
    lat: str | None = Field(None, max_length=16)
    lon: str | None = Field(None, max_length=16)
    hours: Schedule | None = Field(None, description=HOURS_DOC)
    daily_ceiling: StrictInt | None = Field(None, description=CEILING_DOC)


class KeyRegister(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "jwk": {
                        "kty": "OKP",
                        "crv": "Ed25519",
                        "x": "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg",
                    }
                }
            ]
        },
    )
    jwk: dict[str, Any] = Field(description="The device's Ed25519 public key, an OKP JWK")


class KeyRevoke(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "device reported stolen"}]}
    )
    reason: str = Field(max_length=st.TEXT_MAX)


class StationKeyOut(BaseModel):
    kid: str
    station_id: str
    jwk: dict[str, str]
    registered_at: str
    revoked_at: str | None
    revoke_reason: str | None


def station_out(row: st.StationRow) -> StationOut:
    return StationOut(
        station_id=row.station_id,
        name=row.name,
        kind=row.kind.value,
        union=row.union_code,
        location=row.location,
        lat=row.lat,
        lon=row.lon,
        hours=row.hours,
        daily_ceiling=row.daily_ceiling,
        status=row.status.value,
        created_at=row.created_at,
        updated_at=row.updated_at,
        closed_at=row.closed_at,
    )


def key_out(row: st.StationKeyRow) -> StationKeyOut:
    return StationKeyOut(
        kid=row.kid,
        station_id=row.station_id,
        jwk=row.jwk,
        registered_at=row.registered_at,
        revoked_at=row.revoked_at,
        revoke_reason=row.revoke_reason,
    )


def _read(services: ServicesDep, actor: Actor, station_id: str) -> StationOut:
    with services.engine.connect() as conn:
        return station_out(st.visible_station(conn, actor, station_id))


def _key(services: ServicesDep, actor: Actor, station_id: str, kid: str) -> StationKeyOut:
    with services.engine.connect() as conn:
        found = [k for k in st.station_keys_of(conn, actor, station_id) if k.kid == kid]
    if not found:
        raise st.UnknownStationKey(f"station {station_id!r} has no key {kid!r}")
    return key_out(found[0])


@router.get("/v1/stations", summary="A page of the stations run by a union's subtree")
def list_stations(
    services: ServicesDep,
    actor: AuditorOrOfficialDep,
    union: Annotated[
        str | None, Query(max_length=32, description="Default: your scope (auditors: all)")
    ] = None,
    kind: Annotated[str | None, Query(max_length=32, description=f"One of: {KINDS}")] = None,
    status: Annotated[str | None, Query(pattern="^(active|closed)$")] = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> StationPage:
    with services.engine.connect() as conn:
        rows = st.list_stations(
            conn, actor, union=union, kind=kind, status=status, after=after, limit=limit
        )
    items = [station_out(r) for r in rows]
    return StationPage(items=items, next=rows[-1].station_id if len(rows) == limit else None)


@router.post("/v1/stations", status_code=201, summary="Register a station of a union you run")
def register(services: ServicesDep, actor: OfficialDep, body: StationCreate) -> StationOut:
    services.sequencer.execute(
        lambda tx: st.register_station(
            tx,
            actor,
            station=body.station_id,
            name=body.name,
            kind=body.kind,
            union=body.union,
            location=body.location,
            lat=body.lat,
            lon=body.lon,
            hours=body.hours,
            daily_ceiling=body.daily_ceiling,
        )
    )
    return _read(services, actor, body.station_id)


@router.get("/v1/stations/{station_id}", summary="One station")
def get_station(services: ServicesDep, actor: ReaderDep, station_id: StationId) -> StationOut:
    return _read(services, actor, station_id)


@router.patch(
    "/v1/stations/{station_id}", summary="Change a station's name, place, hours or daily ceiling"
)
def update(
    services: ServicesDep, actor: OfficialDep, station_id: StationId, body: StationUpdate
) -> StationOut:
    given = body.model_fields_set
    changes: dict[str, Any] = {}
    for name in ("name", "location"):
        if name in given:
            changes[name] = getattr(body, name)  # null: refused by the domain as not text
    if given & {"lat", "lon"}:
        changes["coordinates"] = (body.lat, body.lon)
    for name in ("hours", "daily_ceiling"):
        if name in given:
            changes[name] = getattr(body, name)
    services.sequencer.execute(
        lambda tx: st.update_station(tx, actor, station=station_id, **changes)
    )
    return _read(services, actor, station_id)


@router.post("/v1/stations/{station_id}/close", summary="Close a station (and revoke its keys)")
def close(services: ServicesDep, actor: OfficialDep, station_id: StationId) -> StationOut:
    services.sequencer.execute(lambda tx: st.close_station(tx, actor, station=station_id))
    return _read(services, actor, station_id)


@router.post(
    "/v1/stations/{station_id}/keys",
    status_code=201,
    summary="Register a station device's public key",
)
def register_key(
    services: ServicesDep, actor: OfficialDep, station_id: StationId, body: KeyRegister
) -> StationKeyOut:
    entry = services.sequencer.execute(
        lambda tx: st.register_station_key(tx, actor, station=station_id, jwk=body.jwk)
    )
    return _key(services, actor, station_id, entry.body["kid"])


@router.get("/v1/stations/{station_id}/keys", summary="A station's device keys, revoked ones too")
def list_keys(
    services: ServicesDep, actor: ReaderDep, station_id: StationId
) -> list[StationKeyOut]:
    with services.engine.connect() as conn:
        return [key_out(k) for k in st.station_keys_of(conn, actor, station_id)]


@router.post(
    "/v1/stations/{station_id}/keys/{kid}/revoke",
    summary="Revoke a station device key (a stolen or retired device)",
)
def revoke_key(
    services: ServicesDep, actor: OfficialDep, station_id: StationId, kid: Kid, body: KeyRevoke
) -> StationKeyOut:
    services.sequencer.execute(
        lambda tx: st.revoke_station_key(tx, actor, station=station_id, kid=kid, reason=body.reason)
    )
    return _key(services, actor, station_id, kid)
