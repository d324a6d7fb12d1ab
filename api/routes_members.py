"""Member routes: enrol, apply with a join code, approve, transfer, leave, re-join, groups,
erasure, search by ID number, and reading members (officials in scope, auditors without
personal data, members themselves).

Personal data (name, ID number, phone, employer) is accepted in request bodies and returned
only by ``/personal``; it is never logged, never put in an error message and never sent to
the ledger (``ledger.members`` keeps it in the vault).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from api.auth import AuditorOrOfficialDep, MemberDep, OfficialDep, require, throttle
from api.deps import ServicesDep
from api.routes_unions import EntryRef, entry_ref
from ledger import members as m
from ledger.domain import Actor, Role
from ledger.vault import PersonalData

router = APIRouter(tags=["members"])

MemberId = Annotated[str, Path(max_length=32, description="The member's pseudonymous id")]
ReaderDep = Annotated[Actor, Depends(require(Role.OFFICIAL, Role.AUDITOR, Role.MEMBER))]
OfficialOrMemberDep = Annotated[Actor, Depends(require(Role.OFFICIAL, Role.MEMBER))]
GROUP_NAMES = ", ".join(g.value for g in m.Group)


class Person(BaseModel):
    """Personal data: kept encrypted in the vault, never on the ledger."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "张三",
                    "id_number": "11010519491231002X",
                    "phone": "13800138000",
                    "employer": "某外卖平台",
                }
            ]
        },
    )
    name: str = Field(max_length=64)
    id_number: str = Field(max_length=32)
    phone: str = Field(max_length=32)
    employer: str | None = Field(None, max_length=128)

    def data(self) -> PersonalData:
        return PersonalData(
            name=self.name, id_number=self.id_number, phone=self.phone, employer=self.employer
        )


class Enrol(BaseModel):
    model_config = ConfigDict(extra="forbid")
    union: str = Field(max_length=32, examples=["G-RIDERS"])
    person: Person
    groups: list[str] = Field(default_factory=list, description=f"Any of: {GROUP_NAMES}")


class Apply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    person: Person


class Transfer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    union: str = Field(max_length=32)


class GroupAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    group: str = Field(max_length=32, description=f"One of: {GROUP_NAMES}")
    start: str | None = Field(None, description="YYYY-MM-DD (default: today)")


class GroupEnd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    until: str | None = Field(None, description="YYYY-MM-DD (default: today)")


class Search(BaseModel):
    model_config = ConfigDict(extra="forbid")
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


def _read(services: ServicesDep, actor: Actor, member_id: str) -> MemberOut:
    with services.engine.connect() as conn:
        return member_out(m.visible_member(conn, actor, member_id))


# -- reading ----------------------------------------------------------------------------------


@router.get("/v1/members", summary="Members of a union's subtree")
def list_members(
    services: ServicesDep,
    actor: AuditorOrOfficialDep,
    union: Annotated[str, Query(max_length=32)],
    status: Annotated[str | None, Query(max_length=16)] = None,
    group: Annotated[str | None, Query(max_length=32)] = None,
    after: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> MemberPage:
    with services.engine.connect() as conn:
        rows = services.members.list_members(
            conn, actor, union_code=union, status=status, group=group, after=after, limit=limit
        )
    return MemberPage(
        items=[member_out(r) for r in rows],
        next=rows[-1].member_id if len(rows) == limit else None,
    )


@router.get("/v1/members/me", summary="Your own membership")
def me(services: ServicesDep, actor: MemberDep) -> MemberOut:
    assert actor.scope is not None
    return _read(services, actor, actor.scope)


@router.post("/v1/members/search", summary="Find a member by ID number (officials)")
def search(services: ServicesDep, actor: OfficialDep, body: Search) -> MemberOut:
    with services.engine.connect() as conn:
        return member_out(services.members.find_by_id_number(conn, actor, body.id_number))


@router.get("/v1/members/{member_id}", summary="One member")
def get_member(
    services: ServicesDep,
    actor: ReaderDep,
    member_id: MemberId,
) -> MemberOut:
    return _read(services, actor, member_id)


@router.get("/v1/members/{member_id}/personal", summary="Personal data (officials, the member)")
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


@router.get("/v1/members/{member_id}/groups", summary="Group memberships with their dates")
def groups(
    services: ServicesDep,
    actor: ReaderDep,
    member_id: MemberId,
    on: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")] = None,
) -> list[GroupOut]:
    with services.engine.connect() as conn:
        spans = services.members.groups_of(conn, actor, member_id, on=on)
    return [GroupOut(group=s.group, start=s.start, end=s.end) for s in spans]


@router.get("/v1/members/{member_id}/history", summary="Joins, transfers, leaves")
def history(
    services: ServicesDep,
    actor: ReaderDep,
    member_id: MemberId,
) -> list[HistoryOut]:
    with services.engine.connect() as conn:
        return [HistoryOut(**h) for h in m.history_of(conn, actor, member_id)]


# -- changing -----------------------------------------------------------------------------------


@router.post("/v1/members", status_code=201, summary="Enrol a worker in one step (一键入会)")
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
)
def apply(
    services: ServicesDep, join_code: Annotated[str, Path(max_length=32)], body: Apply
) -> MemberOut:
    person = body.person.data()
    row = services.sequencer.execute(
        lambda tx: services.members.apply(tx, join_code=join_code, person=person)
    )
    return member_out(row)


@router.post("/v1/members/{member_id}/approve", summary="Approve an application")
def approve(services: ServicesDep, actor: OfficialDep, member_id: MemberId) -> EntryRef:
    return entry_ref(
        services.sequencer.execute(lambda tx: services.members.approve(tx, actor, member_id))
    )


@router.post("/v1/members/{member_id}/reject", summary="Reject an application")
def reject(services: ServicesDep, actor: OfficialDep, member_id: MemberId) -> EntryRef:
    return entry_ref(
        services.sequencer.execute(lambda tx: services.members.reject(tx, actor, member_id))
    )


@router.post("/v1/members/{member_id}/transfer", summary="Transfer to another union (转会)")
def transfer(
    services: ServicesDep, actor: OfficialDep, member_id: MemberId, body: Transfer
) -> EntryRef:
    return entry_ref(
        services.sequencer.execute(
            lambda tx: services.members.transfer(tx, actor, member_id, body.union)
        )
    )


@router.post("/v1/members/{member_id}/leave", summary="End a membership")
def leave(
    services: ServicesDep,
    actor: OfficialOrMemberDep,
    member_id: MemberId,
) -> EntryRef:
    return entry_ref(
        services.sequencer.execute(lambda tx: services.members.leave(tx, actor, member_id))
    )


@router.post("/v1/members/{member_id}/rejoin", summary="Re-join after leaving")
def rejoin(
    services: ServicesDep, actor: OfficialDep, member_id: MemberId, body: Transfer
) -> EntryRef:
    return entry_ref(
        services.sequencer.execute(
            lambda tx: services.members.rejoin(tx, actor, member_id, body.union)
        )
    )


@router.post("/v1/members/{member_id}/groups", status_code=201, summary="Add to a group")
def add_group(
    services: ServicesDep, actor: OfficialDep, member_id: MemberId, body: GroupAdd
) -> EntryRef:
    return entry_ref(
        services.sequencer.execute(
            lambda tx: services.members.add_group(tx, actor, member_id, body.group, body.start)
        )
    )


@router.post("/v1/members/{member_id}/groups/{group}/end", summary="End a group membership")
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


@router.post("/v1/members/{member_id}/erase", summary="Erase personal data (PIPL)")
def erase(services: ServicesDep, actor: OfficialDep, member_id: MemberId) -> EntryRef:
    return entry_ref(
        services.sequencer.execute(lambda tx: services.members.erase(tx, actor, member_id))
    )
