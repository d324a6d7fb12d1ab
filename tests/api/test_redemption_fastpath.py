"""``POST /v1/redemptions`` is answered by an ASGI fast path (api/fastpath.py, in front of the
FastAPI application in a server) when the request is well formed, and by the FastAPI route
otherwise: both must give the same answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import fastpath
from api.app import server_app
from api.fastpath import MAX_BODY
from api.routes_programs import redemption_router
from tests.api.redemption_world import World


def _served(world: World) -> TestClient:
    """A client of what a server runs: the fast path in front of the world's application (no
    lifespan of its own: the world's client runs the application's)."""
    return TestClient(server_app(world.app), raise_server_exceptions=False)


def _requests(
    w: World, station: dict[str, str], member: dict[str, str], program: str, tag: str
) -> list[tuple[str, dict[str, Any]]]:
    """(what, httpx keyword arguments) for one run of every kind of request."""

    def body(key: str, **extra: Any) -> dict[str, Any]:
        return w.redeem_body(program, f"{tag}-{key}", **extra)

    first = body("1")
    return [
        ("redeemed", {"json": first, "headers": station}),
        ("a retry", {"json": first, "headers": station}),
        ("again, quantity 1 of 2", {"json": body("2"), "headers": station}),
        ("quota used", {"json": body("3"), "headers": station}),
        ("too many", {"json": body("4", quantity=3), "headers": station}),
        ("unknown program", {"json": {**body("5"), "program": "NOPE"}, "headers": station}),
        ("quantity 0", {"json": body("6", quantity=0), "headers": station}),
        ("an extra field", {"json": body("7", extra=1), "headers": station}),
        (
            "no key",
            {
                "json": {k: v for k, v in body("8").items() if k != "idempotency_key"},
                "headers": station,
            },
        ),
        (
            "not JSON",
            {"content": b"{not json", "headers": {**station, "Content-Type": "application/json"}},
        ),
        ("form data", {"data": {"program": program}, "headers": station}),
        (
            "JSON as text/x+json",
            {
                "content": json.dumps(body("15")).encode(),
                "headers": {**station, "Content-Type": "text/x+json"},
            },
        ),
        (
            "JSON as application/x+json",
            {
                "content": json.dumps(body("16")).encode(),
                "headers": {**station, "Content-Type": "application/x+json"},
            },
        ),
        ("no token", {"json": body("9")}),
        ("a bad token", {"json": body("10"), "headers": {"Authorization": "Bearer x.y.z"}}),
        ("a member's token", {"json": body("11"), "headers": member}),
        (
            "a member's, then a station's",
            {"json": body("14"), "headers": [*member.items(), *station.items()]},
        ),
        ("a stale QR", {"json": {**body("12"), "presentation": "UL1:AAAA"}, "headers": station}),
        (
            "too large",
            {"json": {**body("13"), "presentation": "x" * (MAX_BODY + 1)}, "headers": station},
        ),
    ]


VOLATILE = ("redemption", "at", "receipt", "idempotency_key")


def _answer(response: Any, program: str) -> tuple[int, str, Any]:
    text = response.text.replace(program, "PROGRAM")
    try:
        document = json.loads(text)
    except ValueError:
        document = text
    if isinstance(document, dict):
        document = {k: v for k, v in document.items() if k not in VOLATILE}
    return response.status_code, response.headers.get("content-type", ""), document


def test_the_fast_path_answers_as_the_route_does(world: tuple[World, TestClient]) -> None:
    w, client = world
    station = w.station_token(client, "ST-BJ-1")
    member = w.member_token(client)
    answers: dict[bool, list[tuple[str, tuple[int, str, Any]]]] = {}
    served = _served(w)
    for on, program in ((False, "ROUTE"), (True, "FAST")):
        w.program(program, quota={"count": 2, "per": "day"}, max_quantity=2)
        answers[on] = [
            (what, _answer((served if on else client).post("/v1/redemptions", **kwargs), program))
            for what, kwargs in _requests(w, station, member, program, program)
        ]
    statuses = {what: answer[0] for what, answer in answers[True]}
    assert statuses["redeemed"] == 201
    assert statuses["a retry"] == 200
    assert statuses["quota used"] == 409
    assert statuses["no token"] == 401
    assert statuses["a member's token"] == 403
    assert statuses["a member's, then a station's"] == 403  # the first header counts
    assert statuses["JSON as text/x+json"] == 422  # not a JSON media type to FastAPI
    assert statuses["JSON as application/x+json"] == 409  # read as JSON and judged: quota used
    assert statuses["an extra field"] == 422
    assert statuses["too large"] == 422
    for (what, fast), (_, route) in zip(answers[True], answers[False], strict=True):
        assert fast == route, what


def test_only_well_formed_requests_take_the_fast_path(world: tuple[World, TestClient]) -> None:
    """With the route gone, the fast path still redeems (and refuses), and everything it does
    not take reaches the router, which no longer knows the path."""
    w, client = world
    w.program("ONCE")
    station = w.station_token(client, "ST-BJ-1")
    member = w.member_token(client)
    w.app.router.routes = [  # the route alone (FastAPI >= 0.13x keeps included routers whole)
        r
        for r in w.app.router.routes
        if getattr(r, "path", None) != "/v1/redemptions"
        and getattr(r, "original_router", None) is not redemption_router
    ]
    post: Callable[..., Any] = _served(w).post
    redeemed = post("/v1/redemptions", json=w.redeem_body("ONCE", "a"), headers=station)
    assert redeemed.status_code == 201, redeemed.text
    assert redeemed.json()["receipt"]["entry"]
    used = post("/v1/redemptions", json=w.redeem_body("ONCE", "b"), headers=station)
    assert used.status_code == 409
    assert used.headers["content-type"] == "application/problem+json"
    assert used.json()["type"] == "/problems/quota-used"
    assert used.json()["instance"] == "/v1/redemptions"
    for what, kwargs in _requests(w, station, member, "ONCE", "passed-on"):
        if what in (
            "redeemed",
            "a retry",
            "again, quantity 1 of 2",
            "quota used",
            "too many",
            "unknown program",
            "a stale QR",
            "JSON as application/x+json",
        ):
            continue  # well formed: the fast path's own (judged, refused or answered)
        assert post("/v1/redemptions", **kwargs).status_code in (404, 405), what


def test_an_unexpected_error_on_the_fast_path_is_a_problem_not_a_traceback(
    world: tuple[World, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In front of the application, the fast path answers what FastAPI's server error
    middleware would: 500 problem+json from the application's catch-all handler."""
    w, client = world
    w.program("ONCE")
    station = w.station_token(client, "ST-BJ-1")

    async def broken(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(fastpath, "answer_redemption", broken)
    answer = _served(w).post("/v1/redemptions", json=w.redeem_body("ONCE", "x"), headers=station)
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "/problems/internal-error"
    assert "boom" not in answer.text
