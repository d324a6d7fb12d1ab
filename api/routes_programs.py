"""Benefit programs, entitlements and redemptions (福利核销).

- ``/v1/programs``: officials create programs in their subtree, add versions (effective now or
  later, never in the past) and close them; every logged-in party may read a program it can see.
- ``/v1/members/me/entitlements`` (and ``/v1/members/{id}/entitlements`` for officials and
  auditors): what the member may redeem now, with the quota left.
- ``POST /v1/redemptions`` (stations): the scanned QR presentation, the program, a quantity
  and an idempotency key → the recorded redemption and its receipt (entry, inclusion proof and
  signed checkpoint: verifiable offline). Refusals are problem+json with a specific type.
- ``POST /v1/redemptions/{id}/reverse``: the station within the window, or an official.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

import keys
from api.auth import AuditorOrOfficialDep, MemberDep, OfficialDep, StationDep, require
from api.deps import ServicesDep
from api.routes_credentials import status_list_uri
from api.routes_members import ReaderDep
from api.routes_unions import EntryRef, entry_ref
from ledger import members as m
from ledger import programs as p
from ledger import redemptions as r
from ledger import stats as ls
from ledger.domain import Actor, Role
from verifier.credential import VerifiedPresentation, presentation_digest, verify_presentation
from verifier.errors import CredentialError, StatusListMissing

router = APIRouter(tags=["programs"])
redemption_router = APIRouter(tags=["programs"])  # POST /v1/redemptions alone, included first
log = logging.getLogger("unionledger.api")

AnyoneDep = Annotated[
    Actor, Depends(require(Role.OFFICIAL, Role.AUDITOR, Role.MEMBER, Role.STATION))
]
ProgramId = Annotated[str, Path(max_length=64)]

SUMMER_PACK: dict[str, Any] = {
    "name": "2027 送清凉 summer cooling pack",
    "kind": "universal",
    "period": {"from": "2027-06-01", "until": "2027-08-31"},
    "quota": {"count": 1, "per": "program"},
    "unit_value": 5000,
    "max_quantity": 1,
    "budget": 500000000,
    "allocations": {"440000": 100000000},
    "where": {"station_kinds": ["union_station", "truck_driver_home"]},
    "offline": {"allowed": True, "per_member_per_day": 1, "station_daily_value": 200000},
    "no_stack_with": [],
}


class ProgramCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"program": "NAT-2027-SUMMER", "owner": "100000", "rules": dict(SUMMER_PACK)}
            ]
        },
    )
    program: str = Field(max_length=64)
    owner: str = Field(max_length=32)
    rules: dict[str, Any] = Field(description="The version's rules (docs/programs.md)")


class ProgramRevise(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: dict[str, Any]
    effective: datetime | None = Field(None, description="RFC 3339; default now; never past")


class VersionOut(BaseModel):
    version: int
    effective: str
    rules: dict[str, Any]


class ProgramOut(BaseModel):
    program: str
    owner: str
    name: str
    status: str
    created_at: str
    closed_at: str | None
    versions: list[VersionOut]


def program_out(conn: Any, row: p.ProgramRow) -> ProgramOut:
    return ProgramOut(
        program=row.program_id,
        owner=row.owner,
        name=p.name_at(conn, row, p.format_time(datetime.now(UTC))),
        status=row.status,
        created_at=row.created_at,
        closed_at=row.closed_at,
        versions=[
            VersionOut(version=v.version, effective=v.effective, rules=v.rules.to_json())
            for v in p.versions(conn, row.program_id)
        ],
    )


@router.post("/v1/programs", status_code=201, summary="Create a program in your subtree")
def create_program(services: ServicesDep, actor: OfficialDep, body: ProgramCreate) -> ProgramOut:
    services.sequencer.execute(
        lambda tx: p.create_program(
            tx, actor, program=body.program, owner=body.owner, rules=body.rules
        )
    )
    with services.engine.connect() as conn:
        return program_out(conn, p.visible_program(conn, actor, body.program))


@router.get("/v1/programs", summary="Programs that reach a union (default: your scope)")
def list_programs(
    services: ServicesDep,
    actor: AuditorOrOfficialDep,
    union: Annotated[str | None, Query(max_length=32)] = None,
    status: Annotated[str | None, Query(pattern="^(open|closed)$")] = None,
) -> list[ProgramOut]:
    with services.engine.connect() as conn:
        if union is not None and actor.role is Role.OFFICIAL:
            from ledger import unions  # noqa: PLC0415

            if unions.visible(conn, actor, union) is None:
                raise unions.UnknownUnion(f"no union {union!r}")
        rows = p.list_programs(conn, actor, union=union, status=status)
        return [program_out(conn, row) for row in rows]


@router.get("/v1/programs/{program}", summary="One program with all its versions")
def get_program(services: ServicesDep, actor: AnyoneDep, program: ProgramId) -> ProgramOut:
    with services.engine.connect() as conn:
        return program_out(conn, p.visible_program(conn, actor, program))


@router.post("/v1/programs/{program}/versions", status_code=201, summary="A new version")
def revise_program(
    services: ServicesDep, actor: OfficialDep, program: ProgramId, body: ProgramRevise
) -> ProgramOut:
    services.sequencer.execute(
        lambda tx: p.revise_program(
            tx, actor, program=program, rules=body.rules, effective=body.effective
        )
    )
    with services.engine.connect() as conn:
        return program_out(conn, p.visible_program(conn, actor, program))


@router.post("/v1/programs/{program}/close", summary="Close a program: no more redemptions")
def close_program(services: ServicesDep, actor: OfficialDep, program: ProgramId) -> EntryRef:
    return entry_ref(
        services.sequencer.execute(lambda tx: p.close_program(tx, actor, program=program))
    )


# -- entitlements ------------------------------------------------------------------------------


class EntitlementOut(BaseModel):
    program: str
    version: int
    name: str
    kind: str
    owner: str
    unit_value: int = Field(description="fen")
    quota: int
    per: str
    remaining: int
    renews_at: str | None
    until: str
    where: dict[str, Any]
    offline: bool
    not_stackable_with: str | None = Field(
        None,
        description="a program the member received in this one's period that does not stack"
        " with it: a station refuses this one (not-stackable) until that one is reversed",
    )


def _entitlements(
    services: ServicesDep, member_id: str, *, sensitive: bool = True
) -> list[EntitlementOut]:
    with services.engine.connect() as conn:
        found = r.entitlements(
            conn, services.members, member_id, datetime.now(UTC), sensitive=sensitive
        )
    return [
        EntitlementOut(
            program=e.program_id,
            version=e.version,
            name=e.name,
            kind=e.kind,
            owner=e.owner,
            unit_value=e.unit_value,
            quota=e.quota,
            per=e.per,
            remaining=e.remaining,
            renews_at=e.renews_at,
            until=e.until,
            where=e.where,
            offline=e.offline,
            not_stackable_with=e.not_stackable_with,
        )
        for e in found
    ]


@router.get("/v1/members/me/entitlements", summary="What you may redeem now")
def my_entitlements(services: ServicesDep, actor: MemberDep) -> list[EntitlementOut]:
    return _entitlements(services, actor.key_id)


@router.get("/v1/members/{member_id}/entitlements", summary="What a member may redeem now")
def member_entitlements(
    services: ServicesDep, actor: ReaderDep, member_id: Annotated[str, Path(max_length=32)]
) -> list[EntitlementOut]:
    with services.engine.connect() as conn:
        m.visible_member(conn, actor, member_id)
    # An auditor never learns a member's sensitive groups (docs/auth.md section 5): a program
    # for hardship listed as their entitlement would tell it.
    return _entitlements(services, member_id, sensitive=actor.role is not Role.AUDITOR)


# -- redemptions -------------------------------------------------------------------------------


class RedeemRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "presentation": "UL1:...",
                    "program": "NAT-2027-SUMMER",
                    "quantity": 1,
                    "idempotency_key": "0b7c6d3e-5f1a-4c2b-9d8e-7f6a5b4c3d2e",
                }
            ]
        },
    )
    presentation: str = Field(max_length=4296, description="The scanned QR text")
    program: str = Field(max_length=64)
    quantity: int = Field(1, ge=1, le=1000)
    idempotency_key: str = Field(min_length=1, max_length=r.MAX_KEY)
    challenge: str | None = Field(
        None, max_length=64, description="base64url of the challenge the station showed, if any"
    )


class RedemptionOut(BaseModel):
    redemption: int
    program: str
    program_name: str
    version: int
    member_id: str
    station: str
    quantity: int
    value: int = Field(description="fen")
    funding_union: str
    operating_union: str
    home_union: str
    at: str
    reversed_at: str | None
    remaining: int | None = Field(None, description="quota left this period, for the member")
    renews_at: str | None = None
    repeated: bool = Field(False, description="an earlier answer to the same idempotency key")
    receipt: dict[str, Any] | None = Field(
        None, description="the entry's proof bundle (docs/formats.md), verifiable offline"
    )


def _receipt(services: ServicesDep, index: int) -> dict[str, Any] | None:
    try:
        receipt: dict[str, Any] = json.loads(services.reader.receipt(index).to_json())
    except LookupError:
        return None
    except Exception as e:  # NotCheckpointed: the next checkpoint covers it
        if type(e).__name__ == "NotCheckpointed":
            return None
        raise
    return receipt


def redemption_out(
    services: ServicesDep,
    row: r.RedemptionRow,
    *,
    name: str | None = None,
    done: r.Redeemed | None = None,
    receipt: dict[str, Any] | None = None,
) -> RedemptionOut:
    if receipt is None:
        receipt = _receipt(services, row.redemption)
    return RedemptionOut(**_redemption_fields(row, name, done, receipt))


def _redemption_fields(
    row: r.RedemptionRow, name: str | None, done: r.Redeemed | None, receipt: dict[str, Any] | None
) -> dict[str, Any]:
    """:class:`RedemptionOut`'s fields, in its order: what the model holds, and what the answer
    to a fresh redemption writes as they are (orjson: the same bytes as the model's
    ``model_dump_json``, tested, without building the model on the hottest path)."""
    return {
        "redemption": row.redemption,
        "program": row.program_id,
        "program_name": name or (done.program_name if done else row.program_id),
        "version": row.version,
        "member_id": row.member_id,
        "station": row.station_id,
        "quantity": row.quantity,
        "value": row.value,
        "funding_union": row.funding_union,
        "operating_union": row.operating_union,
        "home_union": row.home_union,
        "at": row.at,
        "reversed_at": row.reversed_at,
        "remaining": done.remaining if done else None,
        "renews_at": done.renews_at if done else None,
        "repeated": done.repeated if done else False,
        "receipt": receipt,
    }


@redemption_router.post(
    "/v1/redemptions",
    status_code=201,
    response_model=RedemptionOut,
    responses={200: {"model": RedemptionOut, "description": "An earlier answer (a retry)"}},
    summary="Redeem a program for the member whose QR code was scanned (stations)",
)
async def redeem(services: ServicesDep, actor: StationDep, body: RedeemRequest) -> Response:
    # Served by :class:`api.fastpath.RedemptionFastPath` for well-formed requests of a
    # station: this route answers the others (its errors are the reference) and documents it.
    return await answer_redemption(services, actor, body)


async def answer_redemption(services: Any, actor: Actor, body: RedeemRequest) -> Response:
    """The answer to a checked redemption request of station ``actor``.

    Async, the hottest path: the presentation is verified on the event loop (about 0.1 ms of
    CPU, mostly libsodium) and the writer's future awaited, with no thread-pool hop; the
    database is read here only on the rare paths (a retry, a cache refresh).

    Raises:
        r.Refused: nothing was written (counted for the anomaly report first).
    """
    try:
        answer, status = await _redeem(services, actor, body)
    except r.Refused as e:  # nothing was written; the anomaly report counts it
        reason = str(e.extra.get("reason") or e.code)
        try:
            await services.sequencer.submit_async(
                lambda tx: ls.note_refusal(tx, str(actor.scope), reason)
            )
        except Exception:  # the refusal itself is the answer, whatever befell the tally
            log.exception("could not count a refusal")
        raise
    # Written once: FastAPI would validate the answer again against the response model.
    return Response(answer, status, media_type="application/json")


async def _redeem(services: Any, actor: Actor, body: RedeemRequest) -> tuple[bytes, int]:
    """The answer's JSON and its status: 201 for a fresh redemption (its fields written by
    orjson), 200 for an earlier one (the model's JSON)."""
    station = str(actor.scope)
    now = keys.utc_now()
    try:
        verified = await _verified(services, body, now)
    except r.PresentationRefused:
        # A retry of an answered request is answered again, even once its QR code is stale;
        # a fresh one is judged (and its key looked up) by the writer.
        done = await run_in_threadpool(_answer_retry, services, station, body)
        if done is None:
            raise
    else:
        # The batch that commits it signs a checkpoint of its end and proves its entries from
        # memory: the answer carries the receipt without an extra batch or tile reads.
        done, receipts = await services.sequencer.submit_async(
            lambda tx: services.redemptions.redeem(
                tx,
                actor,
                verified,
                program=body.program,
                quantity=body.quantity,
                key=body.idempotency_key,
            ),
            receipts=True,
        )
        if receipts:
            fields = _redemption_fields(done.row, None, done, receipts[0].to_dict())
            return orjson.dumps(fields), 201
    # An earlier answer (no entry appended now).
    out = await run_in_threadpool(redemption_out, services, done.row, done=done)
    return out.model_dump_json().encode(), 200


async def _verified(services: Any, body: RedeemRequest, now: datetime) -> VerifiedPresentation:
    """The presentation verified as a station verifies it (verifier/ code), against the trust
    and status lists the server keeps verified for a moment (read afresh when stale, or when
    an issuer's first credential is newer than them).

    Raises:
        r.PresentationRefused: with the verifier's reason and step.
    """
    challenge = None
    if body.challenge is not None:
        try:
            challenge = keys.b64url_decode(body.challenge)
        except ValueError:
            raise r.PresentationRefused("the challenge is not base64url") from None
    material = services.credentials.cached_material(now)
    for fresh in (False, True):
        if material is None or fresh:
            material = await run_in_threadpool(_material, services, now, fresh)
        trust, lists = material
        try:
            return verify_presentation(
                body.presentation,
                trust_list=trust,
                status_lists=lists,
                now=now,
                challenge=challenge,
            )
        except StatusListMissing as e:
            if fresh:
                raise r.PresentationRefused(str(e), reason=e.code, step=e.step) from None
        except CredentialError as e:
            raise r.PresentationRefused(str(e), reason=e.code, step=e.step) from None
    raise AssertionError("unreachable")


def _material(services: Any, now: datetime, fresh: bool) -> Any:
    with services.engine.connect() as conn:
        return services.credentials.verification_material(
            conn, lambda issuer: status_list_uri(services, issuer), now, fresh=fresh
        )


def _answer_retry(services: Any, station: str, body: RedeemRequest) -> r.Redeemed | None:
    """The answer again if ``body`` retries an answered request (same station and key)."""
    with services.engine.connect() as conn:
        earlier = r.by_idempotency(conn, station, body.idempotency_key)
        if earlier is None:
            return None
        again: r.Redeemed = services.redemptions.answer_again(
            conn,
            earlier,
            program=body.program,
            quantity=body.quantity,
            presentation=presentation_digest(body.presentation),
            now=keys.utc_now(),
        )
    return again


class RedemptionSeen(RedemptionOut):
    """A redemption as the listing and the single read show it: with what its reader may do."""

    window_ends: str = Field(
        description="until when the station that redeemed, or an official without a reason,"
        " may reverse it (RFC 3339); after it only an official, with a reason"
    )
    can_reverse: bool = Field(
        description="whether the caller may reverse it now (an official past the window: with"
        " a reason)"
    )


class RedemptionPage(BaseModel):
    items: list[RedemptionSeen]
    next: int | None = Field(None, description="Pass as `before` for the next (older) page")


def redemption_seen(
    services: ServicesDep, conn: Connection, actor: Actor, row: r.RedemptionRow, name: str | None
) -> RedemptionSeen:
    fields = _redemption_fields(row, name, None, _receipt(services, row.redemption))
    judge = services.redemptions
    now = datetime.now(UTC)  # to the microsecond, as the reversal judges
    refusal = judge.reversal_refusal(conn, actor, row, now, reason="(a reason)")
    return RedemptionSeen(
        **fields,
        window_ends=keys.format_rfc3339(judge.window_ends(row)),
        can_reverse=refusal is None,
    )


@router.get("/v1/redemptions", summary="Redemptions, newest first (to find one to reverse)")
def list_redemptions(
    services: ServicesDep,
    actor: Annotated[Actor, Depends(require(Role.OFFICIAL, Role.AUDITOR, Role.STATION))],
    union: Annotated[str | None, Query(max_length=32)] = None,
    station: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=r.LIST_MAX)] = 20,
) -> RedemptionPage:
    with services.engine.connect() as conn:
        rows = r.list_redemptions(
            conn, actor, union=union, station=station, before=before, limit=limit
        )
        names = {row.program_id: p.get_program(conn, row.program_id) for row in rows}
        items = [
            redemption_seen(
                services, conn, actor, row, getattr(names[row.program_id], "name", None)
            )
            for row in rows
        ]
    return RedemptionPage(items=items, next=rows[-1].redemption if len(rows) == limit else None)


@router.get("/v1/redemptions/{redemption}", summary="One redemption with its receipt")
def get_redemption(
    services: ServicesDep, actor: AnyoneDep, redemption: Annotated[int, Path(ge=0, le=2**62)]
) -> RedemptionSeen:
    with services.engine.connect() as conn:
        row = r.visible_redemption(conn, actor, redemption)
        program = p.get_program(conn, row.program_id)
        name = None if program is None else p.name_at(conn, program, row.at)
        return redemption_seen(services, conn, actor, row, name)


class ReverseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=200)


@router.post("/v1/redemptions/{redemption}/reverse", summary="Reverse a redemption")
def reverse(
    services: ServicesDep,
    actor: Annotated[Actor, Depends(require(Role.OFFICIAL, Role.STATION))],
    redemption: Annotated[int, Path(ge=0, le=2**62)],
    body: ReverseRequest,
) -> EntryRef:
    return entry_ref(
        services.sequencer.execute(
            lambda tx: services.redemptions.reverse(tx, actor, redemption, reason=body.reason)
        )
    )


@router.get("/v1/members/me/redemptions", summary="Your redemptions, newest first, with receipts")
def my_redemptions(
    services: ServicesDep,
    actor: MemberDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[RedemptionOut]:
    with services.engine.connect() as conn:
        rows = r.history_of(conn, actor.key_id, limit=limit)
        names = {row.program_id: p.get_program(conn, row.program_id) for row in rows}
    return [
        redemption_out(services, row, name=getattr(names[row.program_id], "name", None))
        for row in rows
    ]
