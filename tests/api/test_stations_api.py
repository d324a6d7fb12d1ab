"""Stations over HTTP: the official's flows, errors as problem types, who reads what, a device
logging in with a key registered on the ledger, and a stolen device refused after revocation
(at once: its session ends); a closed station cannot log in with any key, keyring ones included.
The demo seeds its stations and registers the demo device's key on the ledger."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import keys
from api import demo
from api.app import create_app
from api.bootstrap import DEMO_STATION, demo_station_key_file, init_data_dir
from api.settings import Settings
from ledger import stations, unions
from ledger.domain import SYSTEM
from ledger.projections import compare, default_projections
from tests.api.accounts import add_accounts
from tests.api.accounts import login as account_login
from verifier.entry import parse_entry

PASS = "stations api test passphrase"
KEYRING_DEVICE = keys.PrivateKey.generate()  # ST-KR's device, registered in the keyring only
WEEK = {day: [["08:00", "20:00"]] for day in ("mon", "tue", "wed", "thu", "fri")} | {
    "sat": [["09:00", "12:00"], ["13:00", "17:00"]],
    "sun": [],
}


@dataclass
class Env:
    client: TestClient
    services: Any
    official: dict[str, str]
    auditor: dict[str, str]

    def create(self, station_id: str, union: str = "G-A", **extra: Any) -> Any:
        body = {"station_id": station_id, "name": f"驿站{station_id}", "kind": "union_station"}
        return self.client.post(
            "/v1/stations", headers=self.official, json=body | {"union": union} | extra
        )

    def add_key(self, station_id: str, device: keys.PrivateKey) -> str:
        r = self.client.post(
            f"/v1/stations/{station_id}/keys",
            headers=self.official,
            json={"jwk": device.public_key.to_jwk()},
        )
        assert r.status_code == 201, r.text
        kid: str = r.json()["kid"]
        return kid


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client: TestClient, station_id: str, device: keys.PrivateKey) -> Any:
    challenge = client.post("/v1/auth/station/challenge", json={"station_id": station_id})
    assert challenge.status_code == 200
    nonce = challenge.json()["challenge"]
    signature = device.sign(f"unionledger-station-login/1\n{station_id}\n{nonce}".encode())
    return client.post(
        "/v1/auth/station/verify",
        json={
            "station_id": station_id,
            "challenge": nonce,
            "signature": keys.b64url_encode(signature),
        },
    )


def assert_problem(response: Any, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == f"/problems/{slug}"


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Iterator[Env]:
    settings = Settings.load(
        data_dir=tmp_path / "data",
        environ={"UNIONLEDGER_KEY_PASSPHRASE": PASS, "UNIONLEDGER_DATABASE_URL": database_url},
    )
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    store = keys.KeyStore(settings.data_dir)
    ring, _ = store.load(PASS).register(
        keys.Role.STATION, KEYRING_DEVICE.public_key, keys.utc_now(), scope="ST-KR"
    )
    store.save(ring, PASS)
    app = create_app(settings)
    services = app.state.services
    for code, kind, parent in [
        ("100000", "national", None),
        ("110000", "provincial", "100000"),
        ("310000", "provincial", "100000"),
        ("G-A", "enterprise", "110000"),
        ("G-SH", "enterprise", "310000"),
    ]:
        services.sequencer.execute(
            lambda tx, c=code, k=kind, p=parent: unions.create_union(
                tx, SYSTEM, code=c, name=f"工会{c}", kind=k, parent=p
            )
        )
    add_accounts(
        services.engine, [("official-bj", "official", "110000"), ("audit", "auditor", None)]
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        tokens = [account_login(client, user) for user in ("official-bj", "audit")]
        yield Env(client, services, bearer(tokens[0]), bearer(tokens[1]))


def test_official_flow_and_device_login_with_a_ledger_key(env: Env) -> None:
    client = env.client
    r = env.create("ST-1", location="北京市朝阳区", lat="39.9968", lon="116.47", hours=WEEK)
    assert r.status_code == 201, r.text
    made = r.json()
    assert {k: made[k] for k in ("station_id", "kind", "union", "lat", "lon", "status")} == {
        "station_id": "ST-1",
        "kind": "union_station",
        "union": "G-A",
        "lat": "39.9968",
        "lon": "116.47",
        "status": "active",
    }
    assert made["hours"] == WEEK
    assert list(made["hours"]) == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

    r = client.patch(
        "/v1/stations/ST-1", headers=env.official, json={"name": "新名", "hours": None}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["hours"], r.json()["lat"]) == ("新名", None, "39.9968")
    r = client.patch("/v1/stations/ST-1", headers=env.official, json={"lat": None, "lon": None})
    assert (r.json()["lat"], r.json()["lon"]) == (None, None)

    # No key on the ledger and none in the keyring: the station cannot log in yet.
    device = keys.PrivateKey.generate()
    assert_problem(login(client, "ST-1", device), 401, "invalid-credentials")
    kid = env.add_key("ST-1", device)
    assert kid == device.key_id
    listed = client.get("/v1/stations/ST-1/keys", headers=env.auditor).json()
    assert listed == [
        {
            "kid": kid,
            "station_id": "ST-1",
            "jwk": device.public_key.to_jwk(),
            "registered_at": listed[0]["registered_at"],
            "revoked_at": None,
            "revoke_reason": None,
        }
    ]
    r = login(client, "ST-1", device)
    assert r.status_code == 200, r.text
    tokens = r.json()
    as_station = bearer(tokens["access_token"])
    assert client.get("/v1/auth/me", headers=as_station).json()["subject"] == "ST-1"
    assert client.get("/v1/stations/ST-1", headers=as_station).json()["name"] == "新名"
    assert client.get("/v1/stations/ST-1/keys", headers=as_station).status_code == 200
    assert client.get("/v1/stations", headers=as_station).status_code == 403
    # A refresh checks again, and passes while the key stands.
    r = client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200, r.text
    tokens = r.json()

    # A second device of the same station, then the first one is stolen.
    spare = keys.PrivateKey.generate()
    env.add_key("ST-1", spare)
    r = client.post(
        f"/v1/stations/ST-1/keys/{kid}/revoke", headers=env.official, json={"reason": "stolen"}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["revoke_reason"], r.json()["revoked_at"] is not None) == ("stolen", True)
    assert_problem(login(client, "ST-1", device), 401, "invalid-credentials")
    # Every session of the station ended with the revocation: the thief's token is dead now.
    r = client.get("/v1/auth/me", headers=bearer(tokens["access_token"]))
    assert r.status_code == 401
    r = client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 401
    spare_login = login(client, "ST-1", spare)
    assert spare_login.status_code == 200  # the station's other device logs in again
    r = client.post(
        f"/v1/stations/ST-1/keys/{kid}/revoke", headers=env.official, json={"reason": "again"}
    )
    assert_problem(r, 409, "station-key-revoked")

    # Closing revokes the remaining keys and ends the sessions.
    r = client.post("/v1/stations/ST-1/close", headers=env.official)
    assert (r.status_code, r.json()["status"]) == (200, "closed")
    assert r.json()["closed_at"] is not None
    keys_now = client.get("/v1/stations/ST-1/keys", headers=env.official).json()
    assert {k["revoke_reason"] for k in keys_now} == {"stolen", "station closed"}
    assert_problem(login(client, "ST-1", spare), 401, "invalid-credentials")
    spare_refresh = spare_login.json()["refresh_token"]
    assert client.post("/v1/auth/refresh", json={"refresh_token": spare_refresh}).status_code == 401

    reader = env.services.reader
    types = [parse_entry(e).type for e in reader.entries(0, reader.size())]
    assert [t for t in types if t.startswith("Station")] == [
        "StationRegistered",
        "StationUpdated",
        "StationUpdated",
        "StationKeyRegistered",
        "StationKeyRegistered",
        "StationKeyRevoked",
        "StationKeyRevoked",
        "StationClosed",
    ]
    assert compare(env.services.engine, default_projections()) == []


def test_a_closed_station_cannot_log_in_even_with_a_keyring_key(env: Env) -> None:
    client = env.client
    assert login(client, "ST-KR", KEYRING_DEVICE).status_code == 200  # not on the ledger: ok
    assert env.create("ST-KR").status_code == 201
    tokens = login(client, "ST-KR", KEYRING_DEVICE).json()  # on the ledger, open: still ok
    assert client.post("/v1/stations/ST-KR/close", headers=env.official).status_code == 200
    assert_problem(login(client, "ST-KR", KEYRING_DEVICE), 401, "invalid-credentials")
    assert client.get("/v1/auth/me", headers=bearer(tokens["access_token"])).status_code == 401
    r = client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 401


def test_listing_and_visibility(env: Env) -> None:
    client = env.client
    for station_id in ("ST-A1", "ST-A2", "ST-A3"):
        assert env.create(station_id).status_code == 201
    env.services.sequencer.execute(
        lambda tx: stations.register_station(
            tx, SYSTEM, station="ST-SH", name="上海驿站", kind="cultural_palace", union="G-SH"
        )
    )
    page = client.get("/v1/stations?limit=2", headers=env.official).json()
    assert [s["station_id"] for s in page["items"]] == ["ST-A1", "ST-A2"]
    assert page["next"] == "ST-A2"
    page = client.get(f"/v1/stations?limit=2&after={page['next']}", headers=env.official).json()
    assert ([s["station_id"] for s in page["items"]], page["next"]) == (["ST-A3"], None)
    everything = client.get("/v1/stations", headers=env.auditor).json()["items"]
    assert [s["station_id"] for s in everything] == ["ST-A1", "ST-A2", "ST-A3", "ST-SH"]
    palaces = client.get("/v1/stations?kind=cultural_palace", headers=env.auditor).json()
    assert [s["station_id"] for s in palaces["items"]] == ["ST-SH"]
    assert client.get("/v1/stations?union=G-A", headers=env.auditor).json()["items"][0]["union"]
    assert_problem(
        client.get("/v1/stations?union=310000", headers=env.official), 404, "unknown-union"
    )
    assert_problem(
        client.get("/v1/stations?kind=hotel", headers=env.official), 422, "unknown-station-kind"
    )
    assert client.get("/v1/stations?status=open", headers=env.official).status_code == 422
    hidden = client.get("/v1/stations/ST-SH", headers=env.official)
    missing = client.get("/v1/stations/ST-404", headers=env.official)
    assert_problem(hidden, 404, "unknown-station")
    assert hidden.json()["detail"].replace("ST-SH", "?") == missing.json()["detail"].replace(
        "ST-404", "?"
    )
    assert client.get("/v1/stations/ST-SH", headers=env.auditor).status_code == 200
    assert_problem(
        client.get("/v1/stations/ST-SH/keys", headers=env.official), 404, "unknown-station"
    )


def test_errors_are_problem_types(env: Env) -> None:
    client = env.client
    assert env.create("ST-1").status_code == 201
    assert_problem(env.create("ST-1"), 409, "duplicate-station")
    assert_problem(env.create("ST 2"), 422, "bad-station-id")
    assert_problem(env.create("ST-2", kind="hotel"), 422, "unknown-station-kind")
    assert_problem(env.create("ST-2", union="G-SH"), 404, "unknown-union")
    assert_problem(env.create("ST-2", lat="91", lon="0"), 422, "bad-coordinates")
    assert_problem(env.create("ST-2", lat="39.9"), 422, "bad-coordinates")
    assert_problem(env.create("ST-2", name=" x"), 422, "bad-station-text")
    assert_problem(
        env.create("ST-2", hours={"mon": [["08:00", "20:00"]]}), 422, "bad-opening-hours"
    )
    assert_problem(
        env.create("ST-2", hours=WEEK | {"sun": [["20:00", "08:00"]]}), 422, "bad-opening-hours"
    )
    assert_problem(env.create("ST-2", hours=WEEK | {"sun": [["20:00"]]}), 422, "bad-opening-hours")
    assert_problem(env.create("ST-2", extra="x"), 422, "validation-error")

    def patch(body: dict[str, Any], station_id: str = "ST-1") -> Any:
        return client.patch(f"/v1/stations/{station_id}", headers=env.official, json=body)

    assert_problem(patch({}), 422, "empty-station-update")
    assert_problem(patch({"union": "G-SH"}), 422, "validation-error")  # never moves
    assert_problem(patch({"kind": "other"}), 422, "validation-error")
    assert_problem(patch({"name": None}), 422, "bad-station-text")
    assert_problem(patch({"lon": "116.4"}), 422, "bad-coordinates")
    assert_problem(patch({"name": "x"}, "ST-404"), 404, "unknown-station")

    def add(jwk: Any) -> Any:
        return client.post("/v1/stations/ST-1/keys", headers=env.official, json={"jwk": jwk})

    device = keys.PrivateKey.generate()
    public = device.public_key.to_jwk()
    assert_problem(add({**public, "d": keys.b64url_encode(device.seed())}), 422, "bad-station-key")
    assert_problem(add({**public, "crv": "P-256"}), 422, "bad-station-key")
    assert_problem(add({"kty": "OKP", "crv": "Ed25519", "x": "short"}), 422, "bad-station-key")
    assert add({**public, "kid": "ignored", "use": "sig"}).status_code == 201
    assert_problem(add(public), 409, "duplicate-station-key")
    assert_problem(
        client.post(
            "/v1/stations/ST-1/keys/no-such-kid/revoke", headers=env.official, json={"reason": "x"}
        ),
        404,
        "unknown-station-key",
    )
    r = client.post(
        f"/v1/stations/ST-1/keys/{device.key_id}/revoke", headers=env.official, json={"reason": ""}
    )
    assert_problem(r, 422, "bad-station-text")
    assert client.post("/v1/stations/ST-1/close", headers=env.official).status_code == 200
    assert_problem(
        client.post("/v1/stations/ST-1/close", headers=env.official), 409, "station-closed"
    )
    assert_problem(patch({"name": "x"}), 409, "station-closed")
    assert_problem(add(keys.PrivateKey.generate().public_key.to_jwk()), 409, "station-closed")
    for slug in ("unknown-station", "bad-opening-hours", "station-key-revoked"):
        assert client.get(f"/problems/{slug}").status_code == 200


def test_openapi_shows_examples_for_the_bodies(env: Env) -> None:
    schemas = env.client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("StationCreate", "StationUpdate", "KeyRegister", "KeyRevoke"):
        assert schemas[name]["examples"], name
    assert schemas["StationCreate"]["examples"][0]["hours"]["sun"] == []


def test_the_demo_registers_its_stations_and_the_demo_device_key(tmp_path: Path) -> None:
    settings = Settings.load(data_dir=tmp_path / "demo", demo=True, environ={})
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    app = create_app(settings)
    services = app.state.services
    summary = demo.seed(services.engine, services.sequencer, services.members, services.keyring)
    assert summary is not None
    assert (summary.stations, summary.station_key_on_ledger) == (len(demo.STATIONS), True)
    text = demo.banner(summary, demo_station_key_file(settings))
    assert f"{len(demo.STATIONS)} stations" in text
    assert "registered on the ledger" in text
    assert compare(services.engine, default_projections()) == []
    (record,) = services.keyring.of_role(keys.Role.STATION, DEMO_STATION)
    seed = bytes.fromhex(demo_station_key_file(settings).read_text().strip())
    with TestClient(app) as client:
        r = client.post(
            "/v1/auth/login", json={"username": "auditor", "password": "demo-auditor-2026"}
        )
        auditor = bearer(r.json()["access_token"])
        listed = client.get("/v1/stations", headers=auditor).json()["items"]
        assert {s["kind"] for s in listed} == {
            "union_station",
            "truck_driver_home",
            "mother_infant_room",
            "cultural_palace",
        }
        on_ledger = client.get(f"/v1/stations/{DEMO_STATION}/keys", headers=auditor).json()
        assert [k["kid"] for k in on_ledger] == [record.kid]
        r = login(client, DEMO_STATION, keys.PrivateKey.from_seed(seed))
        assert r.status_code == 200, r.text
        station = bearer(r.json()["access_token"])
        assert client.get(f"/v1/stations/{DEMO_STATION}", headers=station).json()["union"] == (
            "110105-WJ"
        )


def test_the_daily_ceiling_is_set_shown_changed_removed_and_provisioned(env: Env) -> None:
    client = env.client
    r = env.create("ST-1", daily_ceiling=50_000)
    assert r.status_code == 201, r.text
    assert r.json()["daily_ceiling"] == 50_000
    assert client.get("/v1/stations/ST-1", headers=env.auditor).json()["daily_ceiling"] == 50_000

    def provisioned() -> Any:
        r = client.get("/v1/stations/ST-1/provision", headers=env.official)
        assert r.status_code == 200, r.text
        return r.json()["station"]["daily_ceiling"]

    assert provisioned() == 50_000

    def patch(body: dict[str, Any]) -> Any:
        return client.patch("/v1/stations/ST-1", headers=env.official, json=body)

    r = patch({"daily_ceiling": 80_000})
    assert r.status_code == 200, r.text
    assert r.json()["daily_ceiling"] == 80_000
    assert patch({"name": "改名"}).json()["daily_ceiling"] == 80_000  # absent: unchanged
    assert provisioned() == 80_000
    r = patch({"daily_ceiling": None})
    assert r.status_code == 200, r.text
    assert r.json()["daily_ceiling"] is None
    assert provisioned() is None
    assert env.create("ST-2").json()["daily_ceiling"] is None
    listed = client.get("/v1/stations", headers=env.official).json()["items"]
    assert [s["daily_ceiling"] for s in listed] == [None, None]

    before = env.services.reader.size()
    for bad in (-1, 10**12 + 1):
        assert_problem(patch({"daily_ceiling": bad}), 422, "bad-daily-ceiling")
        assert_problem(env.create("ST-3", daily_ceiling=bad), 422, "bad-daily-ceiling")
    for bad in ("100", True, 1.5):  # the body's types are strict
        assert_problem(patch({"daily_ceiling": bad}), 422, "validation-error")
        assert_problem(env.create("ST-3", daily_ceiling=bad), 422, "validation-error")
    assert env.services.reader.size() == before
    assert client.get("/v1/stations/ST-3", headers=env.official).status_code == 404
    assert client.get("/problems/bad-daily-ceiling").status_code == 200
