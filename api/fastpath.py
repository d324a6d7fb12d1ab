"""``POST /v1/redemptions`` without FastAPI's per-request machinery (the busiest route).

:class:`RedemptionFastPath` is the ASGI application the server runs, in front of the FastAPI
application. It answers a well-formed redemption request of a station itself: a JSON body that
:class:`~api.routes_programs.RedeemRequest` accepts and a bearer token that authenticates a
station. Everything else (every other path, no token or a bad one, another role, a body the
model refuses, a body too large, another content type) goes on, untouched, to the FastAPI
application, whose answers (401, 403, 422 problem+json) stay the reference. So the fast path
has no error answers of its own: the ones the redemption raises (refusals) and any unexpected
error (500) it renders with the application's own exception handlers.

Why: dependency solving, request and response objects and the routing layers cost about 0.25 ms
of CPU per request (a trivial FastAPI POST against a bare ASGI one on this machine: 327 us against
90 us), a quarter of a redemption's cost. In front of the application rather than inside it, it
also skips FastAPI's own middleware (server errors, OpenTelemetry hooks, body limit): about
0.06 ms of server CPU per redemption (paired servers under the same load, three rounds). The
checks and the answer are the route's own (:func:`api.routes_programs.answer_redemption`); only
the plumbing differs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.requests import Request

from api.routes_programs import RedeemRequest, answer_redemption
from ledger.domain import Role

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PATH = "/v1/redemptions"
MAX_BODY = 16 * 1024
"""Larger bodies go to the route (a valid one is under 5 KiB: the presentation is at most 4,296
characters)."""


class RedemptionFastPath:
    """The ASGI application in front of the FastAPI application ``app``; see the module
    docstring."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        token, json_body, length = _headers(scope)
        if token is None or not json_body or length > MAX_BODY:
            await self.app(scope, receive, send)
            return
        body, more, gone = await _read(receive)
        if gone:
            return  # the client left before sending its request: nothing to answer
        if more:
            await self.app(scope, _replay(body, more, receive), send)
            return
        app = self.app
        scope["app"] = app  # as FastAPI sets it: the handlers' requests may read it
        services = app.state.services
        actor = await _station(services, token)
        try:
            request = None if actor is None else RedeemRequest.model_validate_json(body)
        except ValidationError:
            request = None
        if actor is None or request is None:
            await self.app(scope, _replay(body, False, receive), send)
            return
        try:
            response = await answer_redemption(services, actor, request)
        except Exception as exc:
            handler = _handler(app.exception_handlers, exc)
            if handler is None:
                raise  # an application without handlers: the server answers 500
            response = await handler(Request(scope, receive), exc)
        await response(scope, receive, send)


def _headers(scope: Scope) -> tuple[str | None, bool, int]:
    """The bearer token, whether the body is JSON, and the declared length (0 if none). The
    first of a repeated header counts, as for the route (Starlette's ``headers.get``)."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in _WANTED and name not in found:
            found[name] = value.decode("latin-1")
    token = None
    scheme, _, credentials = found.get(b"authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials:
        token = credentials
    media = found.get(b"content-type", "").split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")  # FastAPI's test: application/json or .../*+json
    json_body = kind == "application" and (subtype == "json" or subtype.endswith("+json"))
    try:
        length = int(found.get(b"content-length", "0"))
    except ValueError:
        length = MAX_BODY + 1  # the route answers it
    return token, json_body, length


_WANTED = frozenset((b"authorization", b"content-type", b"content-length"))


async def _read(receive: Receive) -> tuple[bytes, bool, bool]:
    """The body up to :data:`MAX_BODY`: (bytes, more to come, the client disconnected)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", False, True
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = bool(message.get("more_body", False))
        if not more or size > MAX_BODY:
            return b"".join(chunks), more, False


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """``receive`` with the part already read given back first."""
    pending = True

    async def again() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return again


async def _station(services: Any, token: str) -> Any:
    """The station actor the token authenticates, or None (the route then answers)."""
    auth = services.auth
    if auth is None:
        return None
    if auth.reads_inline:
        grant = auth.grant_or_none(token)
    else:
        grant = await run_in_threadpool(auth.grant_or_none, token)
    if grant is None or grant.actor.role != Role.STATION:
        return None
    return grant.actor


def _handler(handlers: dict[Any, Any], exc: Exception) -> Any:
    """The application's handler for ``exc`` (by its class, nearest first, down to the
    catch-all for ``Exception``, which logs and answers 500 problem+json), as Starlette's
    exception and server error middleware find it; None if there is none."""
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None
