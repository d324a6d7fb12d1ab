"""Member routes: enrol, apply with a join code, approve, transfer, leave, re-join, groups,
erasure, search by ID number, and reading members (officials in scope, auditors without
personal data, members themselves).

Personal data (name, ID number, phone, employer) is accepted in request bodies and returned
only by ``/personal``; it is never logged, never put in an error message and never sent to
the ledger (``ledger.members`` keeps it in the vault).

Roles come from ``api.auth`` dependencies. ``GET /v1/members/{member_id}`` and ``/me`` get the
member from ``api.scopes`` (404 outside the caller's view, before the route runs); the other
routes pass the actor to ``ledger.members``, which checks the scope (for writes inside the
batch transaction).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from api import scopes
from api.auth import AuditorOrOfficialDep, OfficialDep, require, throttle
from api.deps import ServicesDep
from api.routes_unions import EntryRef, entry_ref
from api.scopes import AUTHENTICATED, MemberId, OwnMember, VisibleMember, problem_responses
from ledger import members as m
from ledger import unions
from ledger.domain import Actor, Forbidden, Role
from ledger.identity import InvalidEmployer, InvalidIdNumber, InvalidName, InvalidPhone
from ledger.vault import Erased, PersonalData

router = APIRouter(tags=["members"])

ReaderDep = scopes.ReaderDep  # officials, auditors, members (other route modules import it here)

OfficialOrMemberDep = Annotated[Actor, Depends(require(Role.OFFICIAL, Role.MEMBER))]
GROUP_NAMES = ", ".join(g.value for g in m.Group)


# Synthetic, for the OpenAPI examples: a placeholder name (张三, "John Doe"), the GB 11643
# standard's own worked-example ID number (valid checksum), a carrier's public service number
# and "a delivery platform".
EXAMPLE_PERSON: JsonDict = {
    "name": "张三",
    "id_number": "11010519491231002X",
    "phone": "13800138000",
    "employer": "某外卖平台",
}


class Person(BaseModel):
    """Personal data: kept encrypted in the vault, never on the ledger."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_PERSON]})
    name: str = Field(max_length=64)
    id_number: str = Field(max_length=32)
    phone: str = Field(max_length=32)
    employer: str | None = Field(None, max_length=128)

    def data(self) -> PersonalData:
        return PersonalData(
            name=self.name, id_number=self.id_number, phone=self.phone, employer=self.employer
        )


class Enrol(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "union": "G-RIDERS",
                    "person": EXAMPLE_PERSON,
                    "groups": ["delivery_rider", "migrant_worker"],
                }
            ]
        },
    )
    union: str = Field(max_length=32, examples=["G-RIDERS"])
    person: Person
    groups: list[str] = Field(default_factory=list, description=f"Any of: {GROUP_NAMES}")


class Apply(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"person": EXAMPLE_PERSON}]}
    )
    person: Person


class Transfer(BaseModel):
    """The union to transfer to (转会) or to re-join."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"union": "G-COURIERS"}]}
    )
    union: str = Field(max_length=32)


class GroupAdd(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"group": "courier", "start": "2026-07-01"}]},
    )
    group: str = Field(max_length=32, description=f"One of: {GROUP_NAMES}")
    start: str | None = Field(None, description="YYYY-MM-DD (default: today)")


class GroupEnd(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"until": "2026-12-31"}, {}]}
    )
    until: str | None = Field(None, description="YYYY-MM-DD (default: today)")


class Search(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"id_number": "11010519491231002X"}]}
    )
    id_number: str = Field(max_length=32)


class MemberOut(BaseModel):
    member_id: str
    union: str
    status: str
    joined_at: str
    since: str
    left_at: str | None


class MemberPage(BaseModel):
    items: list[MemberOut]
    next: str | None = Field(None, description="Pass as `after` for the next page")


class GroupOut(BaseModel):
    group: str
    start: str
    end: str | None


class HistoryOut(BaseModel):
    event: str
    union: str
    at: str
    entry: int


def member_out(row: m.MemberRow) -> MemberOut:
    return MemberOut(
        member_id=row.member_id,
        union=row.union_code,
        status=row.status,
        joined_at=row.joined_at,
        since=row.since,
        left_at=row.left_at,
    )


READ = problem_responses(*AUTHENTICATED, m.UnknownMember, 422)
COMMAND = (*AUTHENTICATED, Forbidden, m.UnknownMember, m.WrongMemberStatus, 422)
NEW_PERSON = (
    m.DuplicatePerson,
    m.DuplicatePhone,
    InvalidIdNumber,
    InvalidPhone,
    InvalidName,
    InvalidEmployer,
)


# -- reading ----------------------------------------------------------------------------------


@router.get(
    "/v1/members",
    summary="Members of a union's subtree",
    responses=problem_responses(*AUTHENTICATED, Forbidden, unions.UnknownUnion, 422),
)
def list_members(
    services: ServicesDep,
    actor: AuditorOrOfficialDep,
    union: Annotated[str, Query(max_length=32)],
    status: Annotated[m.Status | None, Query(description="Only members in this status")] = None,
    group: Annotated[
        m.Group | None,
        Query(description="Only members in this group today (hardship: officials only, 403)"),
    ] = None,
    after: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> MemberPage:
    with services.engine.connect() as conn:
        rows = services.members.list_members(
            conn,
            actor,
            union_code=union,
            status=None if status is None else status.value,
            group=None if group is None else group.value,
            after=after,
            limit=limit,
        )
    return MemberPage(
        items=[member_out(r) for r in rows],
        next=rows[-1].member_id if len(rows) == limit else None,
    )


@router.get("/v1/members/me", summary="Your own membership", responses=READ)
def me(member: OwnMember) -> MemberOut:
    return member_out(member)


@router.post(
    "/v1/members/search",
    summary="Find a member by ID number (officials)",
    responses=problem_responses(*AUTHENTICATED, m.UnknownMember, 422, InvalidIdNumber),
)
def search(services: ServicesDep, actor: OfficialDep, body: Search) -> MemberOut:
    with services.engine.connect() as conn:
        return member_out(services.members.find_by_id_number(conn, actor, body.id_number))


@router.get("/v1/members/{member_id}", summary="One member", responses=READ)
def get_member(member: VisibleMember) -> MemberOut:
    return member_out(member)


@router.get(
    "/v1/members/{member_id}/personal",
    summary="Personal data (officials, the member)",
    responses=problem_responses(*AUTHENTICATED, m.UnknownMember, Erased, 422),
)
def personal(
    services: ServicesDep,
    actor: OfficialOrMemberDep,
    member_id: MemberId,
) -> Person:
    with services.engine.connect() as conn:
        data = services.members.personal_data(conn, actor, member_id)
    return Person(
        name=data.name, id_number=data.id_number, phone=data.phone, employer=data.employer
    )


@router.get(
    "/v1/members/{member_id}/groups", summary="Group memberships with their dates", responses=READ
)
def groups(
    services: ServicesDep,
    actor: ReaderDep,
    member_id: MemberId,
    on: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")] = None,
) -> list[GroupOut]:
    with services.engine.connect() as conn:
        spans = services.members.groups_of(conn, actor, member_id, on=on)
    return [GroupOut(group=s.group, start=s.start, end=s.end) for s in spans]


@router.get("/v1/members/{member_id}/history", summary="Joins, transfers, leaves", responses=READ)
def history(
    services: ServicesDep,
    actor: ReaderDep,
    member_id: MemberId,
) -> list[HistoryOut]:
    with services.engine.connect() as conn:
        return [HistoryOut(**h) for h in m.history_of(conn, actor, member_id)]


# -- changing -----------------------------------------------------------------------------------


@router.post(
    "/v1/members",
    status_code=201,
    summary="Enrol a worker in one step (一键入会)",
    responses=problem_responses(
        *AUTHENTICATED,
        Forbidden,
        unions.UnknownUnion,
        unions.UnionClosed,
        422,
        m.BadGroup,
        *NEW_PERSON,
    ),
)
def enrol(services: ServicesDep, actor: OfficialDep, body: Enrol) -> MemberOut:
    person = body.person.data()
    row = services.sequencer.execute(
        lambda tx: services.members.enrol(
            tx, actor, union_code=body.union, person=person, groups=body.groups
        )
    )
    return member_out(row)


@router.post(
    "/v1/join/{join_code}",
    tags=["public"],
    status_code=201,
    summary="Apply to join with a union's join code",
    dependencies=[Depends(throttle("join"))],  # 20 a minute per client address
    responses=problem_responses(m.UnknownJoinCode, 422, *NEW_PERSON, 429),
)
def apply(
    services: ServicesDep, join_code: Annotated[str, Path(max_length=32)], body: Apply
) -> MemberOut:
    person = body.person.data()
    row = services.sequencer.execute(
        lambda tx: services.members.apply(tx, join_code=join_code, person=person)
    )
    return member_out(row)


@router.post(
    "/v1/members/{member_id}/approve",
    summary="Approve an application",
    responses=problem_responses(*COMMAND),
)
def approve(services: ServicesDep, actor: OfficialDep, member_id: MemberId) -> EntryRef:
    return entry_ref(
        services.sequencer.execute(lambda tx: services.members.approve(tx, actor, member_id))
    )


@router.post(
    "/v1/members/{member_id}/reject",
    summary="Reject an application",
    responses=problem_responses(*COMMAND),
)
def reject(services: ServicesDep, actor: OfficialDep, member_id: MemberId) -> EntryRef:
    return entry_ref(
        services.sequencer.execute(lambda tx: services.members.reject(tx, actor, member_id))
    )


@router.post(
    "/v1/members/{member_id}/transfer",
    summary="Transfer to another union (转会)",
    responses=problem_responses(*COMMAND, unions.UnknownUnion, unions.UnionClosed, m.SameUnion),
)
def transfer(
    services: ServicesDep, actor: OfficialDep, member_id: MemberId, body: Transfer
) -> EntryRef:
    return entry_ref(
        services.sequencer.execute(
            lambda tx: services.members.transfer(tx, actor, member_id, body.union)
        )
    )


@router.post(
    "/v1/members/{member_id}/leave",
    summary="End a membership",
    responses=problem_responses(*COMMAND),
)
def leave(
    services: ServicesDep,
    actor: OfficialOrMemberDep,
    member_id: MemberId,
) -> EntryRef:
    return entry_ref(
        services.sequencer.execute(lambda tx: services.members.leave(tx, actor, member_id))
    )


@router.post(
    "/v1/members/{member_id}/rejoin",
    summary="Re-join after leaving",
    responses=problem_responses(*COMMAND, unions.UnknownUnion, unions.UnionClosed),
)
def rejoin(
    services: ServicesDep, actor: OfficialDep, member_id: MemberId, body: Transfer
) -> EntryRef:
    return entry_ref(
        services.sequencer.execute(
            lambda tx: services.members.rejoin(tx, actor, member_id, body.union)
        )
    )


@router.post(
    "/v1/members/{member_id}/groups",
    status_code=201,
    summary="Add to a group",
    responses=problem_responses(*COMMAND, m.BadGroup),
)
def add_group(
    services: ServicesDep, actor: OfficialDep, member_id: MemberId, body: GroupAdd
) -> EntryRef:
    return entry_ref(
        services.sequencer.execute(
            lambda tx: services.members.add_group(tx, actor, member_id, body.group, body.start)
        )
    )


@router.post(
    "/v1/members/{member_id}/groups/{group}/end",
    summary="End a group membership",
    responses=problem_responses(*COMMAND, m.BadGroup),
)
def end_group(
    services: ServicesDep,
    actor: OfficialDep,
    member_id: MemberId,
    group: Annotated[str, Path(max_length=32)],
    body: GroupEnd,
) -> EntryRef:
    return entry_ref(
        services.sequencer.execute(
            lambda tx: services.members.end_group(tx, actor, member_id, group, body.until)
        )
    )


@router.post(
    "/v1/members/{member_id}/erase",
    summary="Erase personal data (PIPL)",
    responses=problem_responses(*COMMAND),
)
def erase(services: ServicesDep, actor: OfficialDep, member_id: MemberId) -> EntryRef:
    return entry_ref(
        services.sequencer.execute(lambda tx: services.members.erase(tx, actor, member_id))
    )
