"""Bad input anywhere gets a clear error: a 4xx problem+json (RFC 9457), never a 5xx.

Hypothesis sends every route of the access table (tests/api/test_access_table.py, which must
list every route the app serves) malformed input, as each role the table lets through: the
route's valid body with one field, at any depth, replaced by any JSON value, removed, or joined
by an unknown one; any JSON document; bytes that are not JSON; and random text in its path
parameters and in the query parameters the API uses. A 2xx is fine (a changed body may still be
valid); a 4xx must be a problem document whose ``status`` is the HTTP status; a 5xx fails.
Destructive routes (logout, erasure, closing: the table's ``order`` > 0) are left out so that
the tokens and the world stay usable.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.api.test_access_table import (
    OK,
    ROLES,
    TABLE,
    Spec,
    World,
    _fill,
    _fill_body,
    world,  # noqa: F401  (its fixture, built again here)
)

# Any JSON value: the odd ones included (huge and negative integers, floats, empty and
# non-ASCII strings, nesting).
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
NOT_JSON = st.sampled_from([b"", b"{", b"[1,", b"\xff\xfe", b'{"a": NaN}', b"null", b"1e999"])
# The query parameters the API's routes read (a route ignores the ones it does not take).
QUERY_NAMES = [
    "union", "after", "limit", "before", "from", "until", "program", "station", "size",
    "first", "second", "index", "tree_size", "status", "period", "day", "month", "q",
    "format",
]  # fmt: skip
# Values that reach further than random text: the statistics' CSV answered 500 once (54deee5).
QUERY_VALUES: dict[str, st.SearchStrategy[str]] = {
    "format": st.sampled_from(["csv", "json", "CSV", ""]),
    "limit": st.sampled_from(["1", "100", "101", "0", "-1"]),
}


def _paths(body: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every path to a member of ``body``'s objects, at any depth."""
    out = []
    if isinstance(body, dict):
        for key, value in body.items():
            out.append((*prefix, key))
            out.extend(_paths(value, (*prefix, key)))
    return out


def _changed(body: Any, path: tuple[str, ...], how: str, value: Any) -> Any:
    """``body`` with the member at ``path`` replaced by ``value``, removed, or with a sibling
    member ``value`` (a text) added."""
    if not path:
        return value
    copy = dict(body)
    head, rest = path[0], path[1:]
    if rest:
        copy[head] = _changed(copy[head], rest, how, value)
    elif how == "replace":
        copy[head] = value
    elif how == "remove":
        del copy[head]
    else:
        copy[str(value)] = copy[head]
    return copy


@st.composite
def _bodies(draw: st.DrawFn, valid: Any) -> tuple[str, Any]:
    """("json", a document) or ("raw", bytes)."""
    paths = _paths(valid)
    kind = draw(st.sampled_from(["field", "field", "field", "any", "raw"] if paths else ["any"]))
    if kind == "raw":
        return "raw", draw(NOT_JSON)
    if kind == "any":
        return "json", draw(JSON)
    path = draw(st.sampled_from(paths))
    how = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
    value = draw(st.text(max_size=10)) if how == "add" else draw(JSON)
    return "json", _changed(valid, path, how, value)


def _roles(spec: Spec) -> list[str]:
    """The roles the table lets through this route (inside the official's subtree)."""
    out = []
    for role in ROLES:
        expected = spec.expect[role]
        inside = expected[0] if isinstance(expected, tuple) else expected
        if inside == OK:
            out.append(role)
    return out


CASES = [
    pytest.param(spec, role, id=f"{spec.method} {spec.path} as {role}")
    for spec in TABLE
    if spec.order == 0 and not spec.path.startswith(("/docs", "/redoc"))
    for role in _roles(spec)
]


def _assert_clear(response: Any, what: str) -> None:
    status = response.status_code
    assert status < 500, f"{what}: {status} {response.text[:500]}"
    if status >= 400:
        kind = response.headers.get("content-type", "")
        assert kind.startswith("application/problem+json"), f"{what}: {status} {kind}"
        problem = response.json()
        assert problem["status"] == status, f"{what}: {problem}"
        assert isinstance(problem["title"], str), f"{what}: {problem}"
        assert problem["title"], f"{what}: {problem}"


@pytest.mark.parametrize(("spec", "role"), CASES)
@settings(max_examples=12)
@given(data=st.data())
def test_malformed_input_gets_a_problem_never_a_5xx(
    world: World,  # noqa: F811  (the imported fixture)
    spec: Spec,
    role: str,
    data: st.DataObject,
) -> None:
    path = spec.path
    query: dict[str, str] = {}
    for key, template in spec.inside.items():
        value = _fill(template, world.ids)
        placeholder = next((p for p in ("{" + key + "}", "{" + key + ":path}") if p in path), None)
        if data.draw(st.booleans(), label=f"fuzz {key}"):
            value = data.draw(st.text(min_size=1, max_size=30), label=key)
        if placeholder is not None:
            path = path.replace(placeholder, quote(value, safe=""))
        else:
            query[key] = value
    for name in data.draw(st.lists(st.sampled_from(QUERY_NAMES), max_size=2), label="query"):
        values = st.one_of(QUERY_VALUES.get(name, st.nothing()), st.text(max_size=20))
        query[name] = data.draw(values, label=name)
    request: dict[str, Any] = {"params": query, "headers": world.headers(role)}
    if spec.body is not None:
        kind, body = data.draw(_bodies(_fill_body(spec.body, world.ids)), label="body")
        content = body if kind == "raw" else json.dumps(body).encode()
        request["content"] = content
        request["headers"] = {**request["headers"], "Content-Type": "application/json"}
    response = world.client.request(spec.method, path, **request)
    _assert_clear(response, f"{spec.method} {path} as {role}")
