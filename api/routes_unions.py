"""Union routes: browse the tree (officials in their subtree, auditors everywhere), create,
rename, move, close and set the join policy (officials), and the public join-code lookup.

Routes only translate: the role comes from ``api.auth`` dependencies, the union a route names
from ``api.scopes`` (``VisibleUnion`` for readers, ``ScopedUnion`` for officials' changes: 404
outside the caller's subtree, before the route runs). The ``ledger.unions`` commands check the
scope again inside the batch transaction.
"""

from __future__ import annotations

import io
from typing import Annotated, Any

import qrcode
import qrcode.image.svg
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from api.auth import AuditorOrOfficialDep, OfficialDep
from api.deps import ServicesDep
from api.scopes import AUTHENTICATED, ScopedUnion, VisibleUnion, problem_responses
from ledger import unions
from ledger.domain import Actor, Forbidden, Role
from ledger.members import UnknownJoinCode

router = APIRouter(tags=["unions"])


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
    auto_approve: StrictBool = False  # JSON true or false only, not "yes" or 0


class UnionRename(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "北京市朝阳区总工会"}]}
    )
    name: str = Field(max_length=200)


class UnionMove(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"parent": "110105"}]},
    )
    parent: str = Field(max_length=32, description="The new parent's code, in your subtree")


class JoinPolicy(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"auto_approve": True}]}
    )
    auto_approve: StrictBool


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


def _current(services: ServicesDep, code: str) -> unions.UnionRow:
    """The union as it is after a change the actor was allowed to make (no scope check: the
    command made it, inside the batch transaction)."""
    with services.engine.connect() as conn:
        row = unions.get_union(conn, code)
    if row is None:
        raise unions.UnknownUnion(f"no union {code!r}")
    return row


READ = problem_responses(*AUTHENTICATED, unions.UnknownUnion, 422)
# move and close: also 403 when an official moves or closes the union they administer
CHANGE_ANSWERS = (*AUTHENTICATED, Forbidden, unions.UnknownUnion, unions.UnionClosed, 422)


@router.get("/v1/unions/{code}", summary="One union", responses=READ)
def get_union(actor: AuditorOrOfficialDep, union: VisibleUnion) -> UnionOut:
    return union_out(union, actor)


@router.get(
    "/v1/unions/{code}/children", summary="The unions directly below one union", responses=READ
)
def get_children(
    services: ServicesDep, actor: AuditorOrOfficialDep, union: VisibleUnion
) -> list[UnionOut]:
    with services.engine.connect() as conn:
        return [union_out(r, actor) for r in unions.children(conn, union.code)]


@router.get(
    "/v1/unions/{code}/subtree", summary="A page of the subtree, depth first", responses=READ
)
def get_subtree(
    services: ServicesDep,
    actor: AuditorOrOfficialDep,
    union: VisibleUnion,
    kind: Annotated[unions.Kind | None, Query(description="Only unions of this kind")] = None,
    status: Annotated[unions.Status | None, Query(description="Only open or closed ones")] = None,
    after: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> UnionPage:
    with services.engine.connect() as conn:
        rows = unions.list_subtree(
            conn,
            union.code,
            kind=None if kind is None else kind.value,
            status=None if status is None else status.value,
            after=after,
            limit=limit,
        )
    items = [union_out(r, actor) for r in rows]
    return UnionPage(items=items, next=rows[-1].path if len(rows) == limit else None)


@router.post(
    "/v1/unions",
    status_code=201,
    summary="Create a union below one in your subtree",
    responses=problem_responses(
        *AUTHENTICATED,
        Forbidden,
        unions.UnknownUnion,
        unions.UnionClosed,
        unions.DuplicateUnion,
        422,
        unions.BadUnionCode,
        unions.BadUnionName,
        unions.UnknownKind,
        unions.BadTreeShape,
    ),
)
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
    return union_out(_current(services, body.code), actor)


@router.patch(
    "/v1/unions/{code}",
    summary="Rename a union",
    responses=problem_responses(
        *AUTHENTICATED, unions.UnknownUnion, unions.UnionClosed, 422, unions.BadUnionName
    ),
)
def rename(
    services: ServicesDep, actor: OfficialDep, union: ScopedUnion, body: UnionRename
) -> UnionOut:
    code = union.code
    services.sequencer.execute(lambda tx: unions.rename_union(tx, actor, code=code, name=body.name))
    return union_out(_current(services, code), actor)


@router.post(
    "/v1/unions/{code}/move",
    summary="Move a union under another parent",
    responses=problem_responses(*CHANGE_ANSWERS, unions.BadTreeShape),
)
def move(
    services: ServicesDep, actor: OfficialDep, union: ScopedUnion, body: UnionMove
) -> UnionOut:
    code = union.code
    services.sequencer.execute(
        lambda tx: unions.move_union(tx, actor, code=code, parent=body.parent)
    )
    return union_out(_current(services, code), actor)


@router.post(
    "/v1/unions/{code}/close",
    summary="Close an empty union",
    responses=problem_responses(*CHANGE_ANSWERS, unions.UnionNotEmpty),
)
def close(services: ServicesDep, actor: OfficialDep, union: ScopedUnion) -> UnionOut:
    code = union.code
    services.sequencer.execute(lambda tx: unions.close_union(tx, actor, code=code))
    return union_out(_current(services, code), actor)


@router.put(
    "/v1/unions/{code}/join-policy",
    summary="Approve applications automatically or not",
    responses=problem_responses(*AUTHENTICATED, unions.UnknownUnion, unions.UnionClosed, 422),
)
def join_policy(
    services: ServicesDep, actor: OfficialDep, union: ScopedUnion, body: JoinPolicy
) -> UnionOut:
    code = union.code
    services.sequencer.execute(
        lambda tx: unions.set_join_policy(tx, actor, code=code, auto_approve=body.auto_approve)
    )
    return union_out(_current(services, code), actor)


JoinCode = Annotated[str, Path(max_length=32)]


def _open_union(services: ServicesDep, join_code: str) -> unions.UnionRow:
    with services.engine.connect() as conn:
        row = unions.union_by_join_code(conn, join_code)
    if row is None or not row.active:
        raise UnknownJoinCode("no open union has this join code")
    return row


PUBLIC_JOIN = problem_responses(UnknownJoinCode, 422)


@router.get(
    "/v1/join/{join_code}",
    tags=["public"],
    summary="Which union a join code opens",
    responses=PUBLIC_JOIN,
)
def join_target(services: ServicesDep, join_code: JoinCode) -> JoinTarget:
    row = _open_union(services, join_code)
    return JoinTarget(code=row.code, name=row.name, auto_approve=row.auto_approve)


@router.get(
    "/v1/join/{join_code}/qr.svg",
    tags=["public"],
    summary="The union's join QR code (一键入会), an SVG to print or show",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}, **PUBLIC_JOIN},
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
