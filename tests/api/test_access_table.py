"""Every route x every role x inside/outside the official's subtree: 401, 403, 404 or through.

The table below must list every route the app serves: a new route that is not added here
makes ``test_every_route_is_in_the_table`` fail. "ok" means the request got past
authentication and authorisation: any answer but 401, 403 or 404 (a 409 or 422 from the
domain is fine) and never a 5xx.

Tokens come from the real login flows: passwords for the official and the auditor, a one-time
code for the member, a signed challenge for the station.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

import keys
from api.app import create_app
from api.bootstrap import init_data_dir
from api.settings import Settings
from ledger import programs, stations, unions
from ledger.domain import SYSTEM
from ledger.identity import synthetic_id_number
from ledger.vault import PersonalData
from tests.api.accounts import add_accounts, login

PASS = "access table test passphrase"
ROLES = ("anon", "official", "auditor", "member", "station")
OK = "ok"


@dataclass
class World:
    client: TestClient
    tokens: dict[str, str]
    ids: dict[str, str]
    otps: list[str] = field(default_factory=list)

    def headers(self, role: str) -> dict[str, str]:
        token = self.tokens.get(role)
        return {"Authorization": f"Bearer {token}"} if token else {}


class Capture:
    def __init__(self, sink: list[str]) -> None:
        self.sink = sink

    def send(self, member_id: str, phone: str, code: str) -> None:
        self.sink.append(code)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("access") / "data"
    settings = Settings.load(data_dir=folder, environ={"UNIONLEDGER_KEY_PASSPHRASE": PASS})
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    device = keys.PrivateKey.generate()
    store = keys.KeyStore(folder)
    ring, _ = store.load(PASS).register(
        keys.Role.STATION, device.public_key, keys.utc_now(), scope="ST-1"
    )
    store.save(ring, PASS)
    app = create_app(settings)
    services = app.state.services
    otps: list[str] = []
    services.auth.sender = Capture(otps)
    rng = random.Random(5)
    seq = services.sequencer
    for code, kind, parent in [
        ("100000", "national", None),
        ("110000", "provincial", "100000"),
        ("310000", "provincial", "100000"),
        ("G-IN", "enterprise", "110000"),
        ("G-IN2", "enterprise", "110000"),
        ("G-OUT", "enterprise", "310000"),
    ]:
        seq.execute(
            lambda tx, c=code, k=kind, p=parent: unions.create_union(
                tx, SYSTEM, code=c, name=f"工会{c}", kind=k, parent=p
            )
        )

    def person(phone: str) -> PersonalData:
        return PersonalData(name="测试", id_number=synthetic_id_number(rng), phone=phone)

    people = {
        "in": person("13800000001"),
        "out": person("13800000002"),
        "erasable": person("13800000003"),  # not the logged-in member: erasing ends a session
    }
    ids = {}
    for where, union in (("in", "G-IN"), ("out", "G-OUT"), ("erasable", "G-IN")):
        ids[where] = seq.execute(
            lambda tx, u=union, p=people[where]: services.members.enrol(
                tx, SYSTEM, union_code=u, person=p
            )
        ).member_id
        ids[f"id_number_{where}"] = people[where].id_number
    # Stations with a device key on the ledger: ST-1 (the logged-in station device's) and
    # ST-IN2 (closed and its key revoked by the table) inside the subtree, ST-OUT outside.
    for station_id, union in (("ST-1", "G-IN"), ("ST-IN2", "G-IN"), ("ST-OUT", "G-OUT")):
        seq.execute(
            lambda tx, s=station_id, u=union: stations.register_station(
                tx, SYSTEM, station=s, name=f"驿站{s}", kind="union_station", union=u
            )
        )
        ids[f"kid_{station_id}"] = seq.execute(
            lambda tx, s=station_id: stations.register_station_key(
                tx, SYSTEM, station=s, jwk=keys.PrivateKey.generate().public_key
            )
        ).body["kid"]
    # Programs: P-IN owned inside the official's subtree, P-OUT outside (and its twin to close).
    for program, owner in (("P-IN", "G-IN"), ("P-IN2", "G-IN"), ("P-OUT", "G-OUT")):
        seq.execute(
            lambda tx, p=program, o=owner: programs.create_program(
                tx, SYSTEM, program=p, owner=o, rules=PROGRAM_RULES
            )
        )
    join_code = unions.get_union(services.engine.connect(), "G-IN").join_code  # type: ignore[union-attr]
    ids["join_code"] = join_code
    seq.checkpoint()  # receipts need a checkpoint that covers entry 0
    add_accounts(
        services.engine, [("official-bj", "official", "110000"), ("auditor-1", "auditor", None)]
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        tokens = {"official": login(client, "official-bj"), "auditor": login(client, "auditor-1")}
        assert (
            client.post("/v1/auth/otp/request", json={"phone": people["in"].phone}).status_code
            == 202
        )
        r = client.post("/v1/auth/otp/verify", json={"phone": people["in"].phone, "code": otps[-1]})
        assert r.status_code == 200, r.text
        tokens["member"] = r.json()["access_token"]
        challenge = client.post("/v1/auth/station/challenge", json={"station_id": "ST-1"}).json()[
            "challenge"
        ]
        signature = device.sign(b"unionledger-station-login/1\nST-1\n" + challenge.encode())
        r = client.post(
            "/v1/auth/station/verify",
            json={
                "station_id": "ST-1",
                "challenge": challenge,
                "signature": base64.urlsafe_b64encode(signature).rstrip(b"=").decode(),
            },
        )
        assert r.status_code == 200, r.text
        tokens["station"] = r.json()["access_token"]
        yield World(client, tokens, ids, otps)


@dataclass(frozen=True)
class Spec:
    """One route: how to call it inside and outside the official's subtree, and what each role
    gets (one expectation, or an (inside, outside) pair)."""

    method: str
    path: str
    expect: dict[str, Any]
    inside: dict[str, str] = field(default_factory=dict)
    outside: dict[str, str] | None = None
    body: Any = None
    body_out: Any = None
    order: int = 0  # destructive routes run last


def _all(outcome: Any) -> dict[str, Any]:
    return dict.fromkeys(ROLES, outcome)


PUBLIC = _all(OK)
ACCOUNT_HOLDERS = {"anon": 401, "official": OK, "auditor": OK, "member": 403, "station": 403}
ANY_LOGGED_IN = {"anon": 401, "official": OK, "auditor": OK, "member": OK, "station": OK}
READ_UNION = {"anon": 401, "official": (OK, 404), "auditor": OK, "member": 403, "station": 403}
WRITE_SCOPED = {"anon": 401, "official": (OK, 404), "auditor": 403, "member": 403, "station": 403}
READ_MEMBER = {
    "anon": 401,
    "official": (OK, 404),
    "auditor": OK,
    "member": (OK, 404),
    "station": 403,
}
PERSONAL = {"anon": 401, "official": (OK, 404), "auditor": 403, "member": (OK, 404), "station": 403}
LEAVE = {"anon": 401, "official": (OK, 404), "auditor": 403, "member": (OK, 404), "station": 403}

MEMBER_ONLY = {"anon": 401, "official": 403, "auditor": 403, "member": OK, "station": 403}
STATION_ONLY = {"anon": 401, "official": 403, "auditor": 403, "member": 403, "station": OK}
ANYONE_PROGRAM = {"anon": 401, "official": (OK, 404), "auditor": OK, "member": OK, "station": OK}
NO_REDEMPTION = {"anon": 401, "official": 404, "auditor": 404, "member": 404, "station": 404}
REVERSE = {"anon": 401, "official": 404, "auditor": 403, "member": 403, "station": 404}
PROGRAM_RULES = {
    "name": "送清凉",
    "kind": "universal",
    "period": {"from": "2026-01-01", "until": "2099-12-31"},
    "quota": {"count": 1, "per": "program"},
    "unit_value": 5000,
}
P_IN, P_OUT = {"program": "P-IN"}, {"program": "P-OUT"}
HOLDER_JWK = keys.PrivateKey.generate().public_key.to_jwk()

U_IN, U_OUT = {"code": "G-IN2"}, {"code": "G-OUT"}
NEWCOMER_IN = {"name": "新人", "id_number": "11010519491231002X", "phone": "13912345678"}
NEWCOMER_OUT = {"name": "新人", "id_number": "110101199003071233", "phone": "13912345679"}
M_IN, M_OUT = {"member_id": "{in}"}, {"member_id": "{out}"}
READ_STATION = {
    "anon": 401,
    "official": (OK, 404),
    "auditor": OK,
    "member": 403,
    "station": (OK, 404),
}
ST_IN, ST_OUT = {"station_id": "ST-1"}, {"station_id": "ST-OUT"}
U_IN, U_OUT = {"code": "G-IN"}, {"code": "G-OUT"}
STATS_STATION = {**READ_UNION}
READ_STATS = {"anon": 401, "official": OK, "auditor": OK, "member": 403, "station": 403}
AUDITOR_ONLY = {"anon": 401, "official": 403, "auditor": OK, "member": 403, "station": 403}
DEVICE_JWK = keys.PrivateKey.generate().public_key.to_jwk()

TABLE: list[Spec] = [
    # public: no authentication at all
    Spec("GET", "/healthz", PUBLIC),
    Spec("GET", "/admin", PUBLIC),
    Spec("GET", "/auditor", PUBLIC),
    Spec("GET", "/static/{name}", PUBLIC, {"name": "admin.js"}),
    Spec("GET", "/static/vendor/{name}", PUBLIC, {"name": "cbor.js"}),
    Spec("GET", "/app", PUBLIC),
    Spec("GET", "/join/{join_code}", PUBLIC, {"join_code": "{join_code}"}),
    Spec("GET", "/sw.js", PUBLIC),
    Spec("GET", "/docs", PUBLIC),
    Spec("GET", "/docs/oauth2-redirect", PUBLIC),
    Spec("GET", "/redoc", PUBLIC),
    Spec("GET", "/openapi.json", PUBLIC),
    Spec("GET", "/problems/{slug}", PUBLIC, {"slug": "not-found"}),
    Spec("GET", "/v1/log/checkpoint", PUBLIC),
    Spec("GET", "/v1/log/public-key", PUBLIC),
    Spec("GET", "/v1/log/entries", PUBLIC, body=None),
    Spec("GET", "/v1/log/proof/inclusion", PUBLIC),
    Spec("GET", "/v1/log/proof/consistency", PUBLIC),
    Spec("GET", "/v1/log/receipt/{index}", PUBLIC, {"index": "0"}),
    Spec("GET", "/tlog/checkpoint", PUBLIC),
    Spec("GET", "/tlog/tile/{path:path}", PUBLIC, {"path": "0/000.p/1"}),
    Spec("GET", "/v1/join/{join_code}", PUBLIC, {"join_code": "{join_code}"}),
    Spec("GET", "/v1/join/{join_code}/qr.svg", PUBLIC, {"join_code": "{join_code}"}),
    Spec("POST", "/v1/join/{join_code}", PUBLIC, {"join_code": "{join_code}"}, body={}),
    Spec("POST", "/v1/auth/login", PUBLIC, body={}),
    Spec("POST", "/v1/auth/refresh", PUBLIC, body={}),
    Spec("POST", "/v1/auth/otp/request", PUBLIC, body={}),
    Spec("POST", "/v1/auth/otp/verify", PUBLIC, body={}),
    Spec("POST", "/v1/auth/station/challenge", PUBLIC, body={}),
    Spec("POST", "/v1/auth/station/verify", PUBLIC, body={}),
    # any logged-in party
    Spec("GET", "/v1/auth/me", ANY_LOGGED_IN),
    Spec("GET", "/v1/auth/keys", PUBLIC),
    Spec("POST", "/v1/auth/logout", ANY_LOGGED_IN, order=9),
    # officials and auditors
    Spec("POST", "/v1/auth/totp/setup", ACCOUNT_HOLDERS, order=8),
    Spec("POST", "/v1/auth/totp/confirm", ACCOUNT_HOLDERS, body={"code": "000000"}, order=8),
    # unions
    Spec("GET", "/v1/unions/{code}", READ_UNION, U_IN, U_OUT),
    Spec("GET", "/v1/unions/{code}/children", READ_UNION, U_IN, U_OUT),
    Spec("GET", "/v1/unions/{code}/subtree", READ_UNION, U_IN, U_OUT),
    Spec(
        "POST",
        "/v1/unions",
        WRITE_SCOPED,
        body={"code": "G-NEW", "name": "新工会", "kind": "enterprise", "parent": "110000"},
        body_out={"code": "G-NEW2", "name": "新工会", "kind": "enterprise", "parent": "310000"},
    ),
    Spec("PATCH", "/v1/unions/{code}", WRITE_SCOPED, U_IN, U_OUT, body={"name": "改名工会"}),
    Spec("POST", "/v1/unions/{code}/move", WRITE_SCOPED, U_IN, U_OUT, body={"parent": "110000"}),
    Spec(
        "PUT",
        "/v1/unions/{code}/join-policy",
        WRITE_SCOPED,
        U_IN,
        U_OUT,
        body={"auto_approve": False},
    ),
    Spec("POST", "/v1/unions/{code}/close", WRITE_SCOPED, {"code": "G-IN"}, U_OUT, order=5),
    # reading members
    Spec("GET", "/v1/members", READ_UNION, {"union": "G-IN"}, {"union": "G-OUT"}),
    Spec(
        "GET",
        "/v1/members/me",
        {"anon": 401, "official": 403, "auditor": 403, "member": OK, "station": 403},
    ),
    Spec(
        "POST",
        "/v1/members/search",
        {"anon": 401, "official": (OK, 404), "auditor": 403, "member": 403, "station": 403},
        body={"id_number": "{id_number_in}"},
        body_out={"id_number": "{id_number_out}"},
    ),
    Spec("GET", "/v1/members/{member_id}", READ_MEMBER, M_IN, M_OUT),
    Spec("GET", "/v1/members/{member_id}/groups", READ_MEMBER, M_IN, M_OUT),
    Spec("GET", "/v1/members/{member_id}/history", READ_MEMBER, M_IN, M_OUT),
    # credentials: the member registers a holder key first, so that the reads find one
    Spec("POST", "/v1/members/me/credential", MEMBER_ONLY, body={"holder_key": HOLDER_JWK}),
    Spec("GET", "/v1/members/me/credential", MEMBER_ONLY),
    Spec("GET", "/v1/members/me/credential/sd-jwt", MEMBER_ONLY),
    Spec("GET", "/v1/members/{member_id}/credentials", READ_MEMBER, M_IN, M_OUT),
    Spec("GET", "/v1/status-lists/{issuer}", PUBLIC, {"issuer": "100000"}),
    Spec("GET", "/v1/trust-list", PUBLIC),
    Spec("GET", "/v1/members/{member_id}/personal", PERSONAL, M_IN, M_OUT),
    # changing members
    Spec(
        "POST",
        "/v1/members",
        WRITE_SCOPED,
        body={"union": "G-IN", "person": NEWCOMER_IN},
        body_out={"union": "G-OUT", "person": NEWCOMER_OUT},
    ),
    Spec("POST", "/v1/members/{member_id}/approve", WRITE_SCOPED, M_IN, M_OUT),
    Spec("POST", "/v1/members/{member_id}/reject", WRITE_SCOPED, M_IN, M_OUT),
    Spec(
        "POST",
        "/v1/members/{member_id}/groups",
        WRITE_SCOPED,
        M_IN,
        M_OUT,
        body={"group": "courier"},
    ),
    Spec(
        "POST",
        "/v1/members/{member_id}/groups/{group}/end",
        WRITE_SCOPED,
        {**M_IN, "group": "courier"},
        {**M_OUT, "group": "courier"},
        body={},
    ),
    Spec(
        "POST",
        "/v1/members/{member_id}/transfer",
        WRITE_SCOPED,
        M_IN,
        M_OUT,
        body={"union": "G-IN2"},
        order=2,
    ),
    Spec(
        "POST",
        "/v1/members/{member_id}/rejoin",
        WRITE_SCOPED,
        M_IN,
        M_OUT,
        body={"union": "G-IN"},
        order=3,
    ),
    Spec("POST", "/v1/members/{member_id}/leave", LEAVE, M_IN, M_OUT, order=4),
    Spec(
        "POST",
        "/v1/members/{member_id}/erase",
        WRITE_SCOPED,
        {"member_id": "{erasable}"},
        M_OUT,
        order=7,
    ),
    # stations: the station device reads itself (ST-1) and nothing else
    Spec("GET", "/v1/stations", READ_UNION, {"union": "G-IN"}, {"union": "G-OUT"}),
    Spec(
        "POST",
        "/v1/stations",
        WRITE_SCOPED,
        body={"station_id": "ST-NEW", "name": "新驿站", "kind": "other", "union": "G-IN"},
        body_out={"station_id": "ST-NEW2", "name": "新驿站", "kind": "other", "union": "G-OUT"},
    ),
    Spec("GET", "/v1/stations/{station_id}", READ_STATION, ST_IN, ST_OUT),
    Spec("GET", "/v1/stations/{station_id}/keys", READ_STATION, ST_IN, ST_OUT),
    Spec("PATCH", "/v1/stations/{station_id}", WRITE_SCOPED, ST_IN, ST_OUT, body={"name": "改名"}),
    Spec(
        "POST",
        "/v1/stations/{station_id}/keys",
        WRITE_SCOPED,
        ST_IN,
        ST_OUT,
        body={"jwk": DEVICE_JWK},
    ),
    Spec(
        "POST",
        "/v1/stations/{station_id}/keys/{kid}/revoke",
        WRITE_SCOPED,
        {"station_id": "ST-IN2", "kid": "{kid_ST-IN2}"},
        {"station_id": "ST-OUT", "kid": "{kid_ST-OUT}"},
        body={"reason": "设备遗失"},
    ),
    Spec(
        "POST",
        "/v1/stations/{station_id}/close",
        WRITE_SCOPED,
        {"station_id": "ST-IN2"},
        ST_OUT,
        order=5,
    ),
    # offline stations: provisioning, sync (the station itself), review
    Spec("GET", "/v1/stations/{station_id}/provision", READ_STATION, ST_IN, ST_OUT),
    Spec("POST", "/v1/stations/{station_id}/sync", STATION_ONLY, ST_IN, body={"records": []}),
    Spec("GET", "/v1/offline/conflicts", READ_UNION, {"union": "G-IN"}, {"union": "G-OUT"}),
    # programs, entitlements and redemptions
    Spec(
        "POST",
        "/v1/programs",
        WRITE_SCOPED,
        body={"program": "P-NEW", "owner": "G-IN", "rules": PROGRAM_RULES},
        body_out={"program": "P-NEW2", "owner": "G-OUT", "rules": PROGRAM_RULES},
    ),
    Spec("GET", "/v1/programs", READ_UNION, {"union": "G-IN"}, {"union": "G-OUT"}),
    Spec("GET", "/v1/programs/{program}", ANYONE_PROGRAM, P_IN, P_OUT),
    Spec(
        "POST",
        "/v1/programs/{program}/versions",
        WRITE_SCOPED,
        P_IN,
        P_OUT,
        body={"rules": PROGRAM_RULES},
    ),
    Spec(
        "POST", "/v1/programs/{program}/close", WRITE_SCOPED, {"program": "P-IN2"}, P_OUT, order=5
    ),
    Spec("GET", "/v1/members/me/entitlements", MEMBER_ONLY),
    Spec("GET", "/v1/members/{member_id}/entitlements", READ_MEMBER, M_IN, M_OUT),
    Spec("POST", "/v1/redemptions", STATION_ONLY, body={}),
    Spec(
        "GET",
        "/v1/redemptions",
        {"anon": 401, "official": (OK, 404), "auditor": OK, "member": 403, "station": OK},
        {"union": "G-IN"},
        {"union": "G-OUT"},
    ),
    Spec("GET", "/v1/redemptions/{redemption}", NO_REDEMPTION, {"redemption": "999999"}),
    Spec(
        "POST",
        "/v1/redemptions/{redemption}/reverse",
        REVERSE,
        {"redemption": "999999"},
        body={},
    ),
    Spec("GET", "/v1/members/me/redemptions", MEMBER_ONLY),
    # statistics (officials: their subtree; auditors: everything)
    Spec("GET", "/v1/stats/unions/{code}", READ_UNION, U_IN, U_OUT),
    Spec("GET", "/v1/stats/unions/{code}/series", READ_UNION, U_IN, U_OUT),
    Spec("GET", "/v1/stats/unions/{code}/statement", READ_UNION, U_IN, U_OUT),
    Spec("GET", "/v1/stats/stations/{station_id}", STATS_STATION, ST_IN, ST_OUT),
    Spec("GET", "/v1/stats/stations/{station_id}/statement", STATS_STATION, ST_IN, ST_OUT),
    Spec("GET", "/v1/stats/settlement", READ_STATS),
    Spec("GET", "/v1/stats/anomalies", READ_STATS),
    Spec("GET", "/v1/stats/export", AUDITOR_ONLY),
]


def _fill(text: str, ids: dict[str, str]) -> str:
    for key, value in ids.items():
        text = text.replace("{" + key + "}", value)
    return text


def _fill_body(body: Any, ids: dict[str, str]) -> Any:
    if isinstance(body, dict):
        return {k: _fill_body(v, ids) for k, v in body.items()}
    return _fill(body, ids) if isinstance(body, str) else body


def _call(world: World, spec: Spec, role: str, where: str) -> int:
    params = spec.inside if where == "in" else (spec.outside or spec.inside)
    path = spec.path
    query = {}
    for key, template in params.items():
        value = _fill(template, world.ids)
        placeholders = [p for p in ("{" + key + "}", "{" + key + ":path}") if p in path]
        if placeholders:
            path = path.replace(placeholders[0], value)
        else:
            query[key] = value
    body = spec.body_out if where == "out" and spec.body_out is not None else spec.body
    response = world.client.request(
        spec.method,
        path,
        params=query,
        headers=world.headers(role),
        json=_fill_body(body, world.ids) if body is not None else None,
    )
    assert response.status_code < 500, (spec.method, spec.path, role, where, response.text)
    return response.status_code


def _matches(expected: Any, status: int) -> bool:
    if expected == OK:
        return status not in (401, 403, 404)
    return status == expected


@pytest.mark.parametrize(
    "spec", sorted(TABLE, key=lambda s: s.order), ids=lambda s: f"{s.method} {s.path}"
)
def test_route_answers_each_role_as_the_table_says(world: World, spec: Spec) -> None:
    wrong = []
    for role in ROLES:
        expected = spec.expect[role]
        pairs = expected if isinstance(expected, tuple) else (expected, expected)
        for where, want in zip(("in", "out"), pairs, strict=True):
            if where == "out" and spec.outside is None and spec.body_out is None:
                continue
            if spec.path == "/v1/auth/logout" and role != "anon":
                continue  # revokes the token: checked once, at the very end
            status = _call(world, spec, role, where)
            if not _matches(want, status):
                wrong.append(f"{role}/{where}: got {status}, table says {want}")
    assert not wrong, f"{spec.method} {spec.path}: " + "; ".join(wrong)


def _routes(routes: list[Any]) -> Iterator[Any]:
    """Every route, descending into included routers (FastAPI keeps those as one entry each;
    we include them without a prefix, so their paths are the app's)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes)
        else:
            yield route


def test_every_route_is_in_the_table(world: World) -> None:
    served = {
        (method, route.path)
        for route in _routes(world.client.app.routes)  # type: ignore[attr-defined]
        for method in getattr(route, "methods", None) or set()
        if method not in ("HEAD", "OPTIONS")
    }
    assert ("GET", "/v1/members/{member_id}") in served  # the walk reaches included routers
    listed = {(s.method, s.path) for s in TABLE}
    assert served - listed == set(), f"add these routes to the access table: {served - listed}"
    assert listed - served == set(), f"the table lists routes not served: {listed - served}"


def test_zz_logout_revokes_every_role(world: World) -> None:
    for role in ("official", "auditor", "member", "station"):
        assert world.client.post("/v1/auth/logout", headers=world.headers(role)).status_code == 204
        assert world.client.get("/v1/auth/me", headers=world.headers(role)).status_code == 401
