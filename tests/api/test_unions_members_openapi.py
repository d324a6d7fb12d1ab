"""The union and member routes over HTTP: their OpenAPI (examples for every request body, the
problem+json errors of every route), the filters of the listings (a bad value is a 422 problem,
not an empty page) and keyset pagination with those filters, and the scope dependencies of
``api.scopes`` (404 outside the subtree, answered like a missing union or member)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

import keys
from api import routes_members, routes_unions
from api.app import create_app
from api.bootstrap import init_data_dir
from api.settings import Settings
from ledger import unions
from ledger.domain import SYSTEM
from ledger.identity import synthetic_id_number
from ledger.vault import PersonalData
from tests.api.accounts import add_accounts, login

PASS = "unions members openapi test passphrase"
PROBLEM = "application/problem+json"

# The request bodies of the union and member routes, each with an example in OpenAPI.
BODIES: dict[str, type[BaseModel]] = {
    "UnionCreate": routes_unions.UnionCreate,
    "UnionRename": routes_unions.UnionRename,
    "UnionMove": routes_unions.UnionMove,
    "JoinPolicy": routes_unions.JoinPolicy,
    "Person": routes_members.Person,
    "Enrol": routes_members.Enrol,
    "Apply": routes_members.Apply,
    "Transfer": routes_members.Transfer,
    "GroupAdd": routes_members.GroupAdd,
    "GroupEnd": routes_members.GroupEnd,
    "Search": routes_members.Search,
}

READ = {401, 403, 404, 422}
WRITE = {401, 403, 404, 409, 422}
# Every union and member route, with the problem+json answers its OpenAPI must declare.
ERRORS: dict[tuple[str, str], set[int]] = {
    ("get", "/v1/unions/{code}"): READ,
    ("get", "/v1/unions/{code}/children"): READ,
    ("get", "/v1/unions/{code}/subtree"): READ,
    ("post", "/v1/unions"): WRITE,
    ("patch", "/v1/unions/{code}"): WRITE,
    ("post", "/v1/unions/{code}/move"): WRITE,
    ("post", "/v1/unions/{code}/close"): WRITE,
    ("put", "/v1/unions/{code}/join-policy"): WRITE,
    ("get", "/v1/join/{join_code}"): {404, 422},
    ("get", "/v1/join/{join_code}/qr.svg"): {404, 422},
    ("post", "/v1/join/{join_code}"): {404, 409, 422, 429},
    ("get", "/v1/members"): READ,
    ("get", "/v1/members/me"): READ,
    ("post", "/v1/members/search"): READ,
    ("get", "/v1/members/{member_id}"): READ,
    ("get", "/v1/members/{member_id}/personal"): READ | {409},
    ("get", "/v1/members/{member_id}/groups"): READ,
    ("get", "/v1/members/{member_id}/history"): READ,
    ("post", "/v1/members"): WRITE,
    ("post", "/v1/members/{member_id}/approve"): WRITE,
    ("post", "/v1/members/{member_id}/reject"): WRITE,
    ("post", "/v1/members/{member_id}/transfer"): WRITE,
    ("post", "/v1/members/{member_id}/leave"): WRITE,
    ("post", "/v1/members/{member_id}/rejoin"): WRITE,
    ("post", "/v1/members/{member_id}/groups"): WRITE,
    ("post", "/v1/members/{member_id}/groups/{group}/end"): WRITE,
    ("post", "/v1/members/{member_id}/erase"): WRITE,
}


def _settings(folder: Path, database_url: str | None = None) -> Settings:
    environ = {"UNIONLEDGER_KEY_PASSPHRASE": PASS}
    if database_url is not None:
        environ["UNIONLEDGER_DATABASE_URL"] = database_url
    settings = Settings.load(data_dir=folder, environ=environ)
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    return settings


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    app = create_app(_settings(tmp_path_factory.mktemp("openapi") / "data"))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/openapi.json")
        assert r.status_code == 200
        yield client, r.json()


# -- OpenAPI ----------------------------------------------------------------------------------


def test_every_request_body_has_a_valid_example(openapi: tuple[TestClient, Any]) -> None:
    _, doc = openapi
    schemas = doc["components"]["schemas"]
    for name, model in BODIES.items():
        examples = schemas[name].get("examples")
        assert examples, f"{name} has no example"
        for example in examples:
            model.model_validate(example)  # the example is a body the route accepts


def test_the_routes_use_the_bodies_with_examples(openapi: tuple[TestClient, Any]) -> None:
    _, doc = openapi
    used = set()
    for (method, path), _ in ERRORS.items():
        body = doc["paths"][path][method].get("requestBody")
        if body is not None:
            ref = body["content"]["application/json"]["schema"]["$ref"]
            used.add(ref.rsplit("/", 1)[1])
    assert used == set(BODIES) - {"Person"}  # Person is a part of Enrol and Apply


def test_every_route_declares_its_problem_answers(openapi: tuple[TestClient, Any]) -> None:
    _, doc = openapi
    served = {
        (method, path)
        for path, item in doc["paths"].items()
        if path.startswith(("/v1/unions", "/v1/members", "/v1/join"))
        for method in item
        # credentials, entitlements and redemptions are other modules' routes
        if not any(part in path for part in ("credential", "entitlements", "redemptions"))
    }
    assert served == set(ERRORS), served ^ set(ERRORS)
    missing = []
    for (method, path), statuses in ERRORS.items():
        responses = doc["paths"][path][method]["responses"]
        for status in statuses:
            answer = responses.get(str(status))
            if answer is None or set(answer.get("content", {})) != {PROBLEM}:
                missing.append(f"{method.upper()} {path}: {status}")
                continue
            media = answer["content"][PROBLEM]
            assert media["schema"]["required"] == ["type", "title", "status"]
            assert media["examples"], (method, path, status)
            for example in media["examples"].values():
                assert example["value"]["status"] == status
    assert not missing, missing


def _examples(doc: Any) -> dict[str, dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for method, path in ERRORS:
        for answer in doc["paths"][path][method]["responses"].values():
            for example in answer.get("content", {}).get(PROBLEM, {}).get("examples", {}).values():
                seen[example["value"]["type"]] = example["value"]
    return seen


def test_problem_examples_are_the_types_the_api_serves(openapi: tuple[TestClient, Any]) -> None:
    client, doc = openapi
    seen = _examples(doc)
    assert "/problems/unknown-union" in seen
    assert "/problems/wrong-member-status" in seen
    for uri, example in seen.items():
        served = client.get(uri)
        assert served.status_code == 200, uri
        assert (served.json()["type"], served.json()["status"]) == (uri, example["status"])


def test_problem_examples_have_the_served_titles(openapi: tuple[TestClient, Any]) -> None:
    client, doc = openapi
    wrong = {
        uri: (example["title"], client.get(uri).json()["title"])
        for uri, example in _examples(doc).items()
        if client.get(uri).json()["title"] != example["title"]
    }
    assert not wrong, wrong


def test_the_filters_are_documented_as_enums(openapi: tuple[TestClient, Any]) -> None:
    _, doc = openapi
    schemas = doc["components"]["schemas"]

    def values(path: str, name: str) -> list[str]:
        (param,) = [p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == name]
        ref = next(s["$ref"] for s in param["schema"]["anyOf"] if "$ref" in s)
        return list(schemas[ref.rsplit("/", 1)[1]]["enum"])

    assert values("/v1/members", "status") == ["pending", "active", "rejected", "left", "erased"]
    assert "delivery_rider" in values("/v1/members", "group")
    assert values("/v1/unions/{code}/subtree", "status") == ["active", "closed"]
    assert "enterprise" in values("/v1/unions/{code}/subtree", "kind")


# -- filters and pagination over HTTP -----------------------------------------------------------


@dataclass
class Env:
    client: TestClient
    official: dict[str, str]
    auditor: dict[str, str]
    members: dict[str, dict[str, Any]]  # member id -> {"union", "status", "groups"}


# Grassroots unions below 110000 (the official's scope) and one outside (310000).
TREE = [
    ("100000", "national", None),
    ("110000", "provincial", "100000"),
    ("310000", "provincial", "100000"),
    ("110100", "city", "110000"),
    ("110105", "county", "110100"),
    ("G-A", "enterprise", "110105"),
    ("G-B", "enterprise", "110105"),
    ("G-C", "industry", "110105"),
    ("G-D", "enterprise", "110100"),
    ("G-E", "regional", "110100"),
    ("G-F", "enterprise", "110000"),
    ("G-X", "enterprise", "110000"),  # closed below
    ("G-SH", "enterprise", "310000"),
]


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Iterator[Env]:
    app = create_app(_settings(tmp_path / "data", database_url))
    services = app.state.services
    for code, kind, parent in TREE:
        services.sequencer.execute(
            lambda tx, c=code, k=kind, p=parent: unions.create_union(
                tx, SYSTEM, code=c, name=f"工会{c}", kind=k, parent=p
            )
        )
    services.sequencer.execute(lambda tx: unions.close_union(tx, SYSTEM, code="G-X"))
    add_accounts(
        services.engine, [("official-bj", "official", "110000"), ("audit", "auditor", None)]
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        tokens = {
            username: {"Authorization": f"Bearer {login(client, username)}"}
            for username in ("official-bj", "audit")
        }
        official = tokens["official-bj"]
        rng = random.Random(11)
        members: dict[str, dict[str, Any]] = {}
        # Nine members over four unions: couriers and delivery riders, a few who left.
        for i, (union, groups) in enumerate(
            [
                ("G-A", ["courier"]),
                ("G-A", ["delivery_rider"]),
                ("G-B", ["courier", "migrant_worker"]),
                ("G-B", []),
                ("G-C", ["courier"]),
                ("G-D", ["delivery_rider", "courier"]),
                ("G-E", ["courier"]),
                ("G-F", []),
                ("G-SH", ["courier"]),  # outside the official's subtree: enrolled by the system
            ]
        ):
            person = {
                "name": f"测试{i}",
                "id_number": synthetic_id_number(rng),
                "phone": f"139000000{i:02d}",
            }
            if union == "G-SH":
                member_id = services.sequencer.execute(
                    lambda tx, p=person, g=groups: services.members.enrol(
                        tx, SYSTEM, union_code="G-SH", person=PersonalData(**p), groups=g
                    )
                ).member_id
            else:
                r = client.post(
                    "/v1/members",
                    headers=official,
                    json={"union": union, "person": person, "groups": groups},
                )
                assert r.status_code == 201, r.text
                member_id = r.json()["member_id"]
            members[member_id] = {"union": union, "status": "active", "groups": set(groups)}
        # Three of them leave, chosen by enrolment order: the ids are random, and a choice by id
        # order once left no courier among the leavers (the left/courier filter had nothing).
        for member_id in list(members)[0::3]:  # G-A's courier, G-B's member without groups, G-E's
            r = client.post(f"/v1/members/{member_id}/leave", headers=official)
            assert r.status_code == 200, r.text
            members[member_id]["status"] = "left"
        yield Env(client, official, tokens["audit"], members)


def _assert_problem(r: Any, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    return body


def _pages(env: Env, path: str, params: dict[str, Any], key: str) -> list[list[str]]:
    """Every page of a keyset listing, following ``next`` as ``after``."""
    pages: list[list[str]] = []
    after = None
    while True:
        query = {**params, **({"after": after} if after is not None else {})}
        r = env.client.get(path, headers=env.official, params=query)
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append([item[key] for item in page["items"]])
        assert len(page["items"]) <= params["limit"]
        if page["next"] is None:
            return pages
        assert page["next"] == (
            page["items"][-1]["member_id"] if key == "member_id" else page["items"][-1]["path"]
        )
        after = page["next"]
        assert len(pages) < 50, "the listing does not end"


BAD_MEMBER_FILTERS = [("status", "actve"), ("status", "ACTIVE"), ("group", "astronaut")]


def test_a_bad_member_filter_is_a_422_problem(env: Env) -> None:
    for param, value in BAD_MEMBER_FILTERS:
        for headers in (env.official, env.auditor):
            query = {"union": "110000", param: value}
            r = env.client.get("/v1/members", headers=headers, params=query)
            body = _assert_problem(r, 422, "validation-error")
            assert [e["loc"] for e in body["errors"]] == [["query", param]], body
            assert value not in str(body["errors"])  # the rejected input is not echoed


def test_a_join_policy_is_a_json_boolean_only(env: Env) -> None:
    """ "yes", "true", 0 or 1 are not booleans: refused (422), nothing appended."""
    services = env.client.app.state.services  # type: ignore[attr-defined]
    size = services.reader.size()
    for loose in ("yes", "no", "true", 0, 1, None):
        r = env.client.put(
            "/v1/unions/110100/join-policy", headers=env.official, json={"auto_approve": loose}
        )
        _assert_problem(r, 422, "validation-error")
        created = env.client.post(
            "/v1/unions",
            headers=env.official,
            json={
                "code": "110199",
                "name": "新工会",
                "kind": "county",
                "parent": "110100",
                "auto_approve": loose,
            },
        )
        _assert_problem(created, 422, "validation-error")
    assert services.reader.size() == size
    ok = env.client.put(
        "/v1/unions/110100/join-policy", headers=env.official, json={"auto_approve": True}
    )
    assert ok.status_code == 200, ok.text


def test_a_bad_subtree_filter_is_a_422_problem(env: Env) -> None:
    for param, value in (("status", "open"), ("kind", "factory"), ("kind", "Enterprise")):
        r = env.client.get("/v1/unions/110000/subtree", headers=env.official, params={param: value})
        body = _assert_problem(r, 422, "validation-error")
        assert [e["loc"] for e in body["errors"]] == [["query", param]], body


def test_the_sensitive_group_filter_is_still_for_officials_only(env: Env) -> None:
    query = {"union": "110000", "group": "hardship"}
    ok = env.client.get("/v1/members", headers=env.official, params=query)
    assert ok.status_code == 200
    assert ok.json()["items"] == []
    _assert_problem(
        env.client.get("/v1/members", headers=env.auditor, params=query), 403, "forbidden"
    )


MEMBER_FILTERS = [
    ("active", None),
    ("left", None),
    (None, "courier"),
    ("active", "courier"),
    ("left", "courier"),
    (None, "delivery_rider"),
    (None, None),
]


def test_members_paginate_with_filters(env: Env) -> None:
    for status, group in MEMBER_FILTERS:
        expected = sorted(
            member_id
            for member_id, m in env.members.items()
            if m["union"] != "G-SH"
            and (status is None or m["status"] == status)
            and (group is None or group in m["groups"])
        )
        assert expected, f"the world has a member for {status}/{group}"
        for limit in (1, 2, 3, 500):
            params: dict[str, Any] = {"union": "110000", "limit": limit}
            params |= {"status": status} if status is not None else {}
            params |= {"group": group} if group is not None else {}
            pages = _pages(env, "/v1/members", params, "member_id")
            listed = [member_id for page in pages for member_id in page]
            # in id order, each once, nothing outside the subtree, full pages but the last
            assert listed == expected, (status, group, limit)
            assert all(len(page) == limit for page in pages[:-1])


def test_member_pagination_of_a_smaller_subtree(env: Env) -> None:
    params = {"union": "110105", "group": "courier", "status": "active", "limit": 1}
    listed = [m for page in _pages(env, "/v1/members", params, "member_id") for m in page]
    assert listed == sorted(
        member_id
        for member_id, m in env.members.items()
        if m["union"] in ("G-A", "G-B", "G-C")
        and m["status"] == "active"
        and "courier" in m["groups"]
    )


UNION_FILTERS = [
    ("enterprise", None),
    (None, "active"),
    (None, "closed"),
    ("enterprise", "active"),
    ("county", None),
    (None, None),
]


def test_the_union_subtree_paginates_with_filters(env: Env) -> None:
    for kind, status in UNION_FILTERS:
        expected = sorted(
            code
            for code, k, _ in TREE
            if code not in ("100000", "310000", "G-SH")
            and (kind is None or k == kind)
            and (status is None or (status == "closed") == (code == "G-X"))
        )
        assert expected, f"the tree has a union for {kind}/{status}"
        full = env.client.get(
            "/v1/unions/110000/subtree",
            headers=env.official,
            params={"limit": 1000}
            | ({"kind": kind} if kind else {})
            | ({"status": status} if status else {}),
        ).json()["items"]
        paths = [item["path"] for item in full]
        assert paths == sorted(paths)  # depth first
        assert sorted(item["code"] for item in full) == expected
        for limit in (1, 2, 4):
            params: dict[str, Any] = {"limit": limit}
            params |= {"kind": kind} if kind is not None else {}
            params |= {"status": status} if status is not None else {}
            pages = _pages(env, "/v1/unions/110000/subtree", params, "path")
            assert [path for page in pages for path in page] == paths, (kind, status, limit)
            assert all(len(page) == limit for page in pages[:-1])


# -- the scope dependencies ---------------------------------------------------------------------


UNION_ROUTES = [
    ("GET", "/v1/unions/{code}", None),
    ("GET", "/v1/unions/{code}/children", None),
    ("GET", "/v1/unions/{code}/subtree", None),
    ("PATCH", "/v1/unions/{code}", {"name": "改名"}),
    ("POST", "/v1/unions/{code}/move", {"parent": "110000"}),
    ("POST", "/v1/unions/{code}/close", None),
    ("PUT", "/v1/unions/{code}/join-policy", {"auto_approve": True}),
]


def test_a_union_outside_the_subtree_is_answered_like_a_missing_one(env: Env) -> None:
    services = env.client.app.state.services  # type: ignore[attr-defined]
    size = services.reader.size()
    title = env.client.get("/problems/unknown-union").json()["title"]
    for method, path, body in UNION_ROUTES:
        for code in ("G-SH", "NO-SUCH"):
            url = path.format(code=code)
            r = env.client.request(method, url, headers=env.official, json=body)
            answer = _assert_problem(r, 404, "unknown-union")
            assert answer == {
                "type": "/problems/unknown-union",
                "title": title,
                "status": 404,
                "detail": f"no union {code!r}",
                "instance": url,
            }
        # The auditor reads every union but changes none (403 before any lookup).
        r = env.client.request(method, path.format(code="G-SH"), headers=env.auditor, json=body)
        assert r.status_code == (200 if method == "GET" else 403), (method, path, r.text)
    assert services.reader.size() == size  # nothing written


def test_a_member_outside_the_subtree_is_answered_like_a_missing_one(env: Env) -> None:
    outside = next(mid for mid, m in env.members.items() if m["union"] == "G-SH")
    inside = next(mid for mid, m in env.members.items() if m["union"] == "G-A")
    for member_id in (outside, "m-no-such"):
        r = env.client.get(f"/v1/members/{member_id}", headers=env.official)
        body = _assert_problem(r, 404, "unknown-member")
        assert body["detail"] == f"no member {member_id!r}"
    assert env.client.get(f"/v1/members/{inside}", headers=env.official).json()["union"] == "G-A"
    assert env.client.get(f"/v1/members/{outside}", headers=env.auditor).status_code == 200
    _assert_problem(env.client.get("/v1/members/me", headers=env.official), 403, "forbidden")
