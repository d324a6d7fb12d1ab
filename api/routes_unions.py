"""Union routes: browse the tree (officials in their subtree, auditors everywhere), create,
rename, move, close and set the join policy (officials), and the public join-code lookup.

Routes only translate: authentication comes from ``api.auth`` dependencies, every scope check
happens in ``ledger.unions`` (inside the batch transaction for writes).
"""

from __future__ import annotations

import io
from typing import Annotated, Any

import qrcode
import qrcode.image.svg
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import AuditorOrOfficialDep, OfficialDep
from api.deps import ServicesDep
from ledger import unions
from ledger.domain import Actor, Role
from ledger.members import UnknownJoinCode

router = APIRouter(tags=["unions"])

Code = Annotated[str, Path(max_length=32, description="Union code, e.g. 110000")]


class UnionOut(BaseModel):
    code: str
    name: str
    kind: str
    parent: str | None
    depth: int
    status: str
    auto_approve: bool
    members_own: int
    members_subtree: int
    join_code: str | None = Field(
        None, description="For officials in scope: the code printed on the union's join QR"
    )
    path: str
    created_at: str
    updated_at: str


class UnionPage(BaseModel):
    items: list[UnionOut]
    next: str | None = Field(None, description="Pass as `after` for the next page")


class UnionCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"code": "110105", "name": "朝阳区总工会", "kind": "county", "parent": "110000"}
            ]
        },
    )
    code: str = Field(max_length=32)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=32)
    parent: str = Field(max_length=32)
    auto_approve: bool = False


class UnionRename(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=200)


class UnionMove(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parent: str = Field(max_length=32)


class JoinPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    auto_approve: bool


class JoinTarget(BaseModel):
    code: str
    name: str
    auto_approve: bool


class EntryRef(BaseModel):
    """Where a change landed on the ledger."""

    index: int
    type: str
    time: str


def union_out(row: unions.UnionRow, actor: Actor) -> UnionOut:
    return UnionOut(
        code=row.code,
        name=row.name,
        kind=row.kind.value,
        parent=row.parent,
        depth=row.depth,
        status=row.status.value,
        auto_approve=row.auto_approve,
        members_own=row.members_own,
        members_subtree=row.members_subtree,
        join_code=row.join_code if actor.role == Role.OFFICIAL else None,
        path=row.path,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def entry_ref(entry: Any) -> EntryRef:
    return EntryRef(index=entry.index, type=entry.type, time=entry.time)


def _visible(services: ServicesDep, actor: Actor, code: str) -> unions.UnionRow:
    with services.engine.connect() as conn:
        row = unions.visible(conn, actor, code)
    if row is None:
        raise unions.UnknownUnion(f"no union {code!r}")
    return row


@router.get("/v1/unions/{code}", summary="One union")
def get_union(services: ServicesDep, actor: AuditorOrOfficialDep, code: Code) -> UnionOut:
    return union_out(_visible(services, actor, code), actor)


@router.get("/v1/unions/{code}/children", summary="The unions directly below one union")
def get_children(services: ServicesDep, actor: AuditorOrOfficialDep, code: Code) -> list[UnionOut]:
    _visible(services, actor, code)
    with services.engine.connect() as conn:
        return [union_out(r, actor) for r in unions.children(conn, code)]


@router.get("/v1/unions/{code}/subtree", summary="A page of the subtree, depth first")
def get_subtree(
    services: ServicesDep,
    actor: AuditorOrOfficialDep,
    code: Code,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    status: Annotated[str | None, Query(pattern="^(active|closed)$")] = None,
    after: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> UnionPage:
    _visible(services, actor, code)
    with services.engine.connect() as conn:
        rows = unions.list_subtree(conn, code, kind=kind, status=status, after=after, limit=limit)
    items = [union_out(r, actor) for r in rows]
    return UnionPage(items=items, next=rows[-1].path if len(rows) == limit else None)


@router.post("/v1/unions", status_code=201, summary="Create a union below one in your subtree")
def create(services: ServicesDep, actor: OfficialDep, body: UnionCreate) -> UnionOut:
    services.sequencer.execute(
        lambda tx: unions.create_union(
            tx,
            actor,
            code=body.code,
            name=body.name,
            kind=body.kind,
            parent=body.parent,
            auto_approve=body.auto_approve,
        )
    )
    return union_out(_visible(services, actor, body.code), actor)


@router.patch("/v1/unions/{code}", summary="Rename a union")
def rename(services: ServicesDep, actor: OfficialDep, code: Code, body: UnionRename) -> UnionOut:
    services.sequencer.execute(lambda tx: unions.rename_union(tx, actor, code=code, name=body.name))
    return union_out(_visible(services, actor, code), actor)


@router.post("/v1/unions/{code}/move", summary="Move a union under another parent")
def move(services: ServicesDep, actor: OfficialDep, code: Code, body: UnionMove) -> UnionOut:
    services.sequencer.execute(
        lambda tx: unions.move_union(tx, actor, code=code, parent=body.parent)
    )
    return union_out(_visible(services, actor, code), actor)


@router.post("/v1/unions/{code}/close", summary="Close an empty union")
def close(services: ServicesDep, actor: OfficialDep, code: Code) -> UnionOut:
    services.sequencer.execute(lambda tx: unions.close_union(tx, actor, code=code))
    return union_out(_visible(services, actor, code), actor)


@router.put("/v1/unions/{code}/join-policy", summary="Approve applications automatically or not")
def join_policy(
    services: ServicesDep, actor: OfficialDep, code: Code, body: JoinPolicy
) -> UnionOut:
    services.sequencer.execute(
        lambda tx: unions.set_join_policy(tx, actor, code=code, auto_approve=body.auto_approve)
    )
    return union_out(_visible(services, actor, code), actor)


JoinCode = Annotated[str, Path(max_length=32)]


def _open_union(services: ServicesDep, join_code: str) -> unions.UnionRow:
    with services.engine.connect() as conn:
        row = unions.union_by_join_code(conn, join_code)
    if row is None or not row.active:
        raise UnknownJoinCode("no open union has this join code")
    return row


@router.get("/v1/join/{join_code}", tags=["public"], summary="Which union a join code opens")
def join_target(services: ServicesDep, join_code: JoinCode) -> JoinTarget:
    row = _open_union(services, join_code)
    return JoinTarget(code=row.code, name=row.name, auto_approve=row.auto_approve)


@router.get(
    "/v1/join/{join_code}/qr.svg",
    tags=["public"],
    summary="The union's join QR code (一键入会), an SVG to print or show",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}},
)
def join_qr(services: ServicesDep, join_code: JoinCode, request: Request) -> Response:
    """The QR holds the address of the member app's join page, ``<server>/join/<join code>``:
    a worker scans it with the phone's camera, fills in the form and applies (the union's join
    policy decides whether an official approves). Error correction M, byte mode."""
    row = _open_union(services, join_code)
    target = f"{str(request.base_url).rstrip('/')}/join/{row.join_code}"
    image = qrcode.make(
        target,
        image_factory=qrcode.image.svg.SvgPathImage,
        error_correction=qrcode.constants.ERROR_CORRECT_M,
    )
    out = io.BytesIO()
    image.save(out)
    return Response(
        out.getvalue(),
        media_type="image/svg+xml",
        headers={"Cache-Control": "public, max-age=300", "X-Join-Target": target},
    )
