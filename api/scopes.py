"""Scope checks as FastAPI dependencies: the union or member a route names, resolved and checked
against the caller's scope once, before the route runs.

``api.auth`` says *who* may call a route (the role); this module says *what* they may touch: a
route that takes ``VisibleUnion`` (or ``ScopedUnion``, ``VisibleMember``, ``OwnMember``)
receives the row only when the actor may see it. A union or member that is missing and one
outside the actor's subtree answer alike: 404 ``unknown-union`` / ``unknown-member``, so an
official cannot tell what exists outside their scope. The role check comes first (401, 403),
then this scope check (404), then the validation of the other parameters and the body (422).

Writes are checked twice: here, and again by the ``ledger`` command inside the batch transaction
(which is what makes the check hold against a concurrent move or close).

Also here: :func:`problem_responses`, the OpenAPI description of the problem+json answers a
route can give.

The dependencies read the database, so they are plain ``def`` (FastAPI runs them in its thread
pool); the role dependencies they build on are ``async`` (no I/O).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Path

from api.auth import AuditorOrOfficialDep, MemberDep, OfficialDep, require
from api.deps import ServicesDep
from api.problems import MEDIA_TYPE, TYPES, type_uri
from ledger import members as m
from ledger import unions
from ledger.domain import Actor, DomainError, Role

Code = Annotated[str, Path(max_length=32, description="Union code, e.g. 110000")]
MemberId = Annotated[str, Path(max_length=32, description="The member's pseudonymous id")]

ReaderDep = Annotated[Actor, Depends(require(Role.OFFICIAL, Role.AUDITOR, Role.MEMBER))]
"""Officials, auditors and members: those who may read a member (their scope decides which)."""


def _union_for(services: ServicesDep, actor: Actor, code: str) -> unions.UnionRow:
    with services.engine.connect() as conn:
        row = unions.visible(conn, actor, code)
    if row is None:
        raise unions.UnknownUnion(f"no union {code!r}")
    return row


def visible_union(
    actor: AuditorOrOfficialDep, services: ServicesDep, code: Code
) -> unions.UnionRow:
    """The union of the ``code`` path parameter, for an auditor (any union) or an official (a
    union of their subtree).

    Raises:
        Problem: 401 or 403 (``api.auth``), before anything is read.
        unions.UnknownUnion: 404, missing or outside the official's subtree (alike).
    """
    return _union_for(services, actor, code)


def scoped_union(actor: OfficialDep, services: ServicesDep, code: Code) -> unions.UnionRow:
    """The union of the ``code`` path parameter, for an official whose subtree holds it (the
    routes that change a union). Whether the change is allowed (the union open, not the
    official's own for a move or a close) is the ledger command's to decide.

    Raises:
        Problem: 401 or 403 (``api.auth``: auditors, members and stations never write).
        unions.UnknownUnion: 404, missing or outside the official's subtree (alike).
    """
    return _union_for(services, actor, code)


def visible_member(actor: ReaderDep, services: ServicesDep, member_id: MemberId) -> m.MemberRow:
    """The member of the ``member_id`` path parameter: for an auditor anyone, for an official a
    member of a union in their subtree, for a member themselves only.

    Raises:
        Problem: 401 or 403 (``api.auth``).
        members.UnknownMember: 404, missing or not the actor's to see (alike).
    """
    with services.engine.connect() as conn:
        return m.visible_member(conn, actor, member_id)


def own_member(actor: MemberDep, services: ServicesDep) -> m.MemberRow:
    """The calling member's own membership (``/v1/members/me``).

    Raises:
        Problem: 401 or 403 (not a member's token).
        members.UnknownMember: 404, no such member any more.
    """
    if actor.scope is None:  # a member's token always names the member (api.auth)
        raise m.UnknownMember("no member")
    with services.engine.connect() as conn:
        return m.visible_member(conn, actor, actor.scope)


VisibleUnion = Annotated[unions.UnionRow, Depends(visible_union)]
ScopedUnion = Annotated[unions.UnionRow, Depends(scoped_union)]
VisibleMember = Annotated[m.MemberRow, Depends(visible_member)]
OwnMember = Annotated[m.MemberRow, Depends(own_member)]


# -- OpenAPI: the problem+json answers ---------------------------------------------------------

PROBLEM_SCHEMA: Mapping[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; `type` resolves to a page describing it",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri-reference", "example": "/problems/not-found"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "format": "uri-reference"},
        "errors": {
            "type": "array",
            "description": "validation-error only: where and what, never the rejected input",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}

_DESCRIPTIONS = {
    401: "No valid access token",
    403: "Not allowed for this role (or this change is not allowed to this official)",
    404: "Missing, or outside the caller's scope (answered alike)",
    409: "Conflicts with the current state",
    422: "The parameters or the body are invalid",
    429: "Too many attempts: retry after `Retry-After` seconds",
}

_GENERIC = {
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    409: "conflict",
    422: "validation-error",
    429: "too-many-requests",
}

Answer = int | type[DomainError]


def _title(error: type[DomainError]) -> str:
    """The title :func:`api.problems.register_domain_errors` gives ``error`` (same rule)."""
    known = TYPES.get(error.code)
    if known is not None:
        return known.title
    title = getattr(error, "title", None)
    if isinstance(title, str):
        return title
    doc = " ".join((error.__doc__ or error.__name__).split())
    return doc.split(". ")[0].split(" (")[0].rstrip(".")


def _example(slug: str, title: str, status: int) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_uri(slug), "title": title, "status": status}
    if slug == "validation-error":
        body["detail"] = "see 'errors'"
        body["errors"] = [{"loc": ["body", "name"], "msg": "Field required"}]
    return body


def problem_responses(*answers: Answer) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each answer is an HTTP status (its generic problem type)
    or a ledger error class (its own type, title and status), documented as
    ``application/problem+json`` with an example of each problem type."""
    by_status: dict[int, dict[str, dict[str, Any]]] = {}
    for answer in answers:
        if isinstance(answer, int):
            slug = _GENERIC.get(answer) or next(
                t.slug for t in TYPES.values() if t.status == answer
            )
            status, title = answer, TYPES[slug].title
        else:
            slug, status, title = answer.code, answer.status, _title(answer)
        by_status.setdefault(status, {})[slug] = {
            "summary": title,
            "value": _example(slug, title, status),
        }
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted(by_status):
        examples = by_status[status]
        slugs = ", ".join(f"`{s}`" for s in examples)
        out[status] = {
            "description": f"{_DESCRIPTIONS.get(status, 'Error')}: {slugs}",
            "content": {MEDIA_TYPE: {"schema": dict(PROBLEM_SCHEMA), "examples": examples}},
        }
    return out


AUTHENTICATED = (401, 403)
"""What every route behind a token can answer before it looks at anything."""
