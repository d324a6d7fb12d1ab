"""Offline stations: provisioning, sync, review (docs/station.md, section 10).

- ``GET /v1/stations/{id}/provision`` (the station itself; officials of its subtree, auditors):
  what a device caches to redeem offline: the trust list token, each issuer's status list
  token, the programs redeemable here now (``{"program", "version", "rules"}``, what
  ``verifier.station.StationCache`` takes), the device chain heads and the server time.
- ``POST /v1/stations/{id}/sync`` (the station itself): up to 1,000 offline records (compact
  JWS) → one answer per record, in order: ``accepted``, ``conflict``, ``refused`` or
  ``duplicate``, with its reason and entry index.
- ``GET /v1/offline/conflicts`` (officials of the subtree, auditors): conflicts and refused
  records, for review.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

import keys
from api.auth import AuditorOrOfficialDep, StationDep, require
from api.deps import ServicesDep
from api.routes_credentials import status_list_uri
from ledger import offline as o
from ledger import stations as st
from ledger.credentials import issuers
from ledger.domain import Actor, Role
from ledger.errors import LedgerError

router = APIRouter(tags=["offline"])

StationId = Annotated[str, Path(max_length=64)]
ReaderDep = Annotated[Actor, Depends(require(Role.OFFICIAL, Role.AUDITOR, Role.STATION))]


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    records: list[Annotated[str, Field(max_length=4096)]] = Field(
        max_length=o.MAX_BATCH, description="offline records (compact JWS), in seq order"
    )


class SyncItemOut(BaseModel):
    index: int = Field(description="the record's place in the request")
    seq: int | None
    kid: str | None
    record: str | None = Field(description="base64url SHA-256 of the record")
    status: str = Field(description="accepted, conflict, refused or duplicate")
    reason: str | None
    entry: int | None = Field(description="the ledger entry that records it")
    message: str | None = None


class HeadOut(BaseModel):
    kid: str
    seq: int
    hash: str
    iat: int
    entry: int


class SyncOut(BaseModel):
    items: list[SyncItemOut]
    counts: dict[str, int]
    heads: list[HeadOut]
    server_time: int = Field(description="NumericDate: for the station's clock offset")


class StationInfoOut(BaseModel):
    station_id: str
    kind: str
    union: str
    daily_ceiling: int | None = Field(
        None, description="fen per device and China day offline, all programs (null: none)"
    )


class ProvisionOut(BaseModel):
    station: StationInfoOut
    trust_list: str
    status_lists: list[str]
    programs: list[dict[str, object]]
    heads: list[HeadOut]
    server_time: int


class ReviewOut(BaseModel):
    entry: int
    station: str
    union: str
    kid: str | None
    seq: int | None
    record: str
    status: str
    reason: str | None
    member_id: str | None
    program: str | None
    quantity: int | None
    value: int | None
    offline_at: int | None
    at: str


class ReviewPage(BaseModel):
    items: list[ReviewOut]
    next: int | None


def _head(h: o.Head) -> HeadOut:
    return HeadOut(kid=h.kid, seq=h.seq, hash=h.hash, iat=h.iat, entry=h.entry)


@router.post(
    "/v1/stations/{station_id}/sync",
    response_model=SyncOut,
    summary="Upload offline records (the station itself): one answer per record",
)
def sync(
    services: ServicesDep, actor: StationDep, station_id: StationId, body: SyncRequest
) -> Response:
    if actor.scope != station_id:
        raise st.UnknownStation(f"no station {station_id!r}")
    members = services.members
    with services.engine.connect() as conn:  # the signatures, before the single writer
        presigned = o.check_ahead(conn, station_id, body.records)
    result: o.SyncResult = services.sequencer.execute(
        lambda tx: o.sync(tx, actor, body.records, members=members, presigned=presigned)
    )
    # SyncOut's shape written directly: a model per record, validated twice (here and against
    # the response model), cost a tenth of a 1,000-record sync.
    answer = {
        "items": [
            {
                "index": i.index,
                "seq": i.seq,
                "kid": i.kid,
                "record": i.record,
                "status": i.status,
                "reason": i.reason,
                "entry": i.entry,
                "message": i.message,
            }
            for i in result.items
        ],
        "counts": result.counts(),
        "heads": [_head(h).model_dump() for h in result.heads],
        "server_time": int(result.server_time.timestamp()),
    }
    return Response(orjson.dumps(answer), media_type="application/json")


@router.get(
    "/v1/stations/{station_id}/provision",
    summary="What a station device caches to redeem offline",
)
def provision(services: ServicesDep, actor: ReaderDep, station_id: StationId) -> ProvisionOut:
    now = keys.utc_now()
    with services.engine.connect() as conn:
        row = st.visible_station(conn, actor, station_id)
        lists = []
        for issuer in issuers(conn):
            try:
                lists.append(
                    services.credentials.status_list(
                        conn, issuer, status_list_uri(services, issuer), now
                    )
                )
            except LedgerError:  # an issuer without a key valid now: its credentials refuse
                continue
        exact = datetime.now(UTC)  # keys.utc_now() is whole seconds: a version just made counts
        programs = [p.to_json() for p in o.redeemable_at(conn, row.station_id, exact)]
        heads = [_head(h) for h in o.heads_of(conn, row.station_id)]
    return ProvisionOut(
        station=StationInfoOut(
            station_id=row.station_id,
            kind=row.kind.value,
            union=row.union_code,
            daily_ceiling=row.daily_ceiling,
        ),
        trust_list=services.credentials.trust_list(now),
        status_lists=lists,
        programs=programs,
        heads=heads,
        server_time=int(now.timestamp()),
    )


@router.get(
    "/v1/offline/conflicts",
    summary="Offline conflicts and refused records of a union's subtree, for review",
)
def conflicts(
    services: ServicesDep,
    actor: AuditorOrOfficialDep,
    union: Annotated[
        str | None, Query(max_length=32, description="Default: your scope (auditors: all)")
    ] = None,
    after: Annotated[int | None, Query(ge=0, description="entry index")] = None,
    limit: Annotated[int, Query(ge=1, le=o.PAGE_MAX)] = 100,
) -> ReviewPage:
    with services.engine.connect() as conn:
        rows = o.for_review(conn, actor, union=union, after=after, limit=limit)
    items = [
        ReviewOut(
            entry=x.entry,
            station=x.station_id,
            union=x.union,
            kid=x.kid,
            seq=x.seq,
            record=x.record,
            status=x.status,
            reason=x.reason,
            member_id=x.member_id,
            program=x.program_id,
            quantity=x.quantity,
            value=x.value,
            offline_at=x.offline_at,
            at=x.at,
        )
        for x in rows
    ]
    return ReviewPage(items=items, next=rows[-1].entry if len(rows) == limit else None)
