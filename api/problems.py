"""RFC 9457 problem details: every error the API returns is ``application/problem+json``.

Each kind of error has a stable ``type`` URI, ``/problems/<slug>``, served by the API itself
with its title and meaning (so the URI resolves). Handlers are installed in one place,
:func:`install`; routes raise :class:`Problem` (or a package error that is mapped here) and never
build error responses by hand. Unexpected exceptions become a 500 problem without any detail:
no traceback, no input, no personal data reaches the client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import keys
from ledger.domain import DomainError
from ledger.errors import LedgerError

log = logging.getLogger("unionledger.api")

MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True)
class ProblemType:
    slug: str
    status: int
    title: str


# The registry of problem types. A slug never changes meaning once published.
TYPES: dict[str, ProblemType] = {
    t.slug: t
    for t in (
        ProblemType("bad-request", 400, "The request is malformed"),
        ProblemType("unauthorized", 401, "Authentication is required"),
        ProblemType("forbidden", 403, "Not allowed for this role or scope"),
        ProblemType("not-found", 404, "No such resource"),
        ProblemType("method-not-allowed", 405, "Method not allowed on this resource"),
        ProblemType("conflict", 409, "The request conflicts with the current state"),
        ProblemType("validation-error", 422, "The request body or parameters are invalid"),
        ProblemType("too-many-requests", 429, "Too many requests"),
        ProblemType("internal-error", 500, "Internal error"),
        ProblemType("unavailable", 503, "The service is unavailable"),
        ProblemType("invalid-signature", 400, "A signature does not verify"),
        ProblemType("unknown-key-id", 400, "Unknown key id"),
        ProblemType("key-role-mismatch", 400, "Key of the wrong role"),
        ProblemType("key-scope-mismatch", 400, "Key of another union or station"),
        ProblemType("key-not-yet-valid", 400, "Key not yet valid at the signing time"),
        ProblemType("key-expired", 400, "Key expired before the signing time"),
        ProblemType("key-revoked", 400, "Key revoked before the signing time"),
        ProblemType("malformed-key", 400, "Malformed key"),
        ProblemType("no-current-key", 503, "No key may sign now"),
        ProblemType("out-of-range", 404, "Beyond the log, or an impossible range"),
        ProblemType("not-checkpointed", 404, "Not covered by a signed checkpoint yet"),
        ProblemType("ledger-error", 503, "The ledger cannot take this now"),
        ProblemType("ledger-closed", 503, "The ledger is shutting down"),
        ProblemType("command-failed", 500, "The command failed"),
        ProblemType("invalid-request", 422, "The request is not valid"),
    )
}

_STATUS_SLUGS = {t.status: t.slug for t in reversed(TYPES.values())}


def type_uri(slug: str) -> str:
    return f"/problems/{slug}"


class Problem(Exception):
    """Raise in a route to answer with a problem+json document."""

    def __init__(
        self, slug: str, detail: str | None = None, *, status: int | None = None, **extra: Any
    ) -> None:
        if slug not in TYPES:
            raise ValueError(f"unregistered problem type {slug!r}")
        super().__init__(detail or TYPES[slug].title)
        self.slug = slug
        self.status = status or TYPES[slug].status
        self.detail = detail
        self.extra = extra


def problem_response(
    slug: str,
    *,
    status: int,
    detail: str | None,
    instance: str | None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": type_uri(slug), "title": TYPES[slug].title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def register_domain_errors() -> None:
    """Register a problem type for every :class:`DomainError` subclass imported so far (its
    ``code``, ``status`` and the first line of its docstring as the title)."""
    pending = [DomainError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        doc = " ".join((cls.__doc__ or cls.__name__).split())
        title = getattr(cls, "title", None) or doc.split(". ")[0].split(" (")[0].rstrip(".")
        if cls.code not in TYPES:
            TYPES[cls.code] = ProblemType(cls.code, cls.status, title)


def install(app: FastAPI) -> None:
    """Install the problem+json handlers and the ``/problems/<slug>`` pages on ``app``."""
    register_domain_errors()

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(
            exc.slug,
            status=exc.status,
            detail=exc.detail,
            instance=request.url.path,
            extra=exc.extra,
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        slug = _STATUS_SLUGS.get(exc.status_code, "bad-request")
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(
            slug,
            status=exc.status_code,
            detail=detail,
            instance=request.url.path,
            headers=exc.headers,
        )

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # Field locations and messages only: the rejected input is not echoed back.
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        return problem_response(
            "validation-error",
            status=422,
            detail="see 'errors'",
            instance=request.url.path,
            extra={"errors": errors},
        )

    async def on_keys_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, keys.KeysError)
        slug = exc.code if exc.code in TYPES else "bad-request"
        return problem_response(
            slug, status=TYPES[slug].status, detail=str(exc), instance=request.url.path
        )

    async def on_ledger_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, LedgerError)
        slug = exc.code if exc.code in TYPES else "ledger-error"
        status = exc.status if isinstance(exc, DomainError) else TYPES[slug].status
        extra = getattr(exc, "extra", None)  # e.g. a refused redemption's renews_at
        return problem_response(
            slug,
            status=status,
            detail=str(exc),
            instance=request.url.path,
            extra=extra if isinstance(extra, dict) else None,
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s on %s", type(exc).__name__, request.url.path, exc_info=exc)
        return problem_response(
            "internal-error", status=500, detail=None, instance=request.url.path
        )

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(keys.KeysError, on_keys_error)
    app.add_exception_handler(LedgerError, on_ledger_error)
    app.add_exception_handler(Exception, on_unexpected)

    @app.get("/problems/{slug}", tags=["public"], summary="What a problem type means")
    def describe(slug: str) -> dict[str, Any]:
        found = TYPES.get(slug)
        if found is None:
            raise Problem("not-found", f"no problem type {slug!r}")
        return {"type": type_uri(slug), "title": found.title, "status": found.status}
