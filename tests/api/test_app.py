"""The application factory, /healthz, OpenAPI and problem+json errors."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

import keys
from api.app import create_app
from api.bootstrap import init_data_dir
from api.settings import DEV_PASSPHRASE, ConfigError, Settings
from ledger import unions
from ledger.domain import SYSTEM
from ledger.vault import PersonalData

PASS = "a long enough production passphrase"


def make_settings(tmp_path: Path, *, demo: bool = False, url: str | None = None) -> Settings:
    env = {"UNIONLEDGER_KEY_PASSPHRASE": PASS}
    if url:
        env["UNIONLEDGER_DATABASE_URL"] = url
    return Settings.load(data_dir=tmp_path / "data", demo=demo, environ=env)


@pytest.fixture
def client(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, url=database_url)
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_healthz_reports_the_database(client: TestClient, database_url: str) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == database_url.split(":", maxsplit=1)[0].split("+", maxsplit=1)[0]


def test_openapi_and_docs_are_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "UnionLedger"
    assert "/healthz" in spec["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


def test_unknown_route_is_problem_json(client: TestClient) -> None:
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "/problems/not-found"
    assert body["status"] == 404
    assert body["instance"] == "/v1/nothing-here"
    described = client.get(body["type"]).json()
    assert described["title"] == body["title"]


def test_wrong_method_is_problem_json(client: TestClient) -> None:
    response = client.post("/healthz")
    assert response.status_code == 405
    assert response.json()["type"] == "/problems/method-not-allowed"
    assert response.headers["content-type"] == "application/problem+json"


def test_unexpected_errors_are_a_bare_500_problem(client: TestClient) -> None:
    app = client.app

    @app.get("/boom")  # type: ignore[attr-defined,untyped-decorator]
    def boom() -> None:
        raise RuntimeError("secret internal detail 13800138000")

    response = client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "13800138000" not in response.text
    assert "Traceback" not in response.text
    assert response.json()["type"] == "/problems/internal-error"


def test_production_refuses_default_missing_or_short_passphrases(tmp_path: Path) -> None:
    for env in (
        {},
        {"UNIONLEDGER_KEY_PASSPHRASE": DEV_PASSPHRASE},
        {"UNIONLEDGER_KEY_PASSPHRASE": "short"},
    ):
        settings = Settings.load(data_dir=tmp_path / "p", environ=env)
        with pytest.raises(ConfigError):
            create_app(settings)


def test_demo_falls_back_to_the_development_passphrase_loudly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.load(data_dir=tmp_path / "demo", demo=True, environ={})
    assert settings.passphrase() == DEV_PASSPHRASE
    assert "WARNING" in capsys.readouterr().err


def test_an_uninitialised_data_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unionledger init"):
        create_app(make_settings(tmp_path))


def test_a_wrong_passphrase_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    other = Settings.load(
        data_dir=settings.data_dir, environ={"UNIONLEDGER_KEY_PASSPHRASE": "another passphrase"}
    )
    with pytest.raises(keys.WrongPassphrase):
        create_app(other)


def _drop_secret(store: keys.KeyStore, name: str) -> None:
    """Edit the keyring file as a bad hand edit or a partial restore would: ``name`` gone."""
    doc = json.loads(store.path.read_text(encoding="utf-8"))
    del doc["secrets"][name]
    store.path.write_text(json.dumps(doc), encoding="utf-8")


def test_a_lost_secret_is_never_replaced_once_data_needs_it(tmp_path: Path) -> None:
    """A keyring file without a secret gets a new one only while nothing in the database
    needs it: replacing vault-master would make every member's personal data unreadable."""
    settings = make_settings(tmp_path)
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    store = keys.KeyStore(settings.data_dir)
    _drop_secret(store, "vault-master")
    app = create_app(settings)  # no member yet: the secret is made again
    assert "vault-master" in store.load(PASS).secret_names()
    services = app.state.services
    for code, kind, parent in (("100000", "national", None), ("110000", "provincial", "100000")):
        services.sequencer.execute(
            lambda tx, c=code, k=kind, p=parent: unions.create_union(
                tx, SYSTEM, code=c, name=f"工会{c}", kind=k, parent=p
            )
        )
    person = PersonalData(name="测试", id_number="11010519491231002X", phone="13912340009")
    services.sequencer.execute(
        lambda tx: services.members.enrol(tx, SYSTEM, union_code="110000", person=person)
    )
    services.sequencer.close()
    before = store.path.read_bytes()
    for name in ("vault-master", "member-pseudonym"):
        _drop_secret(store, name)
        with pytest.raises(ConfigError, match=name):
            create_app(settings)
        store.path.write_bytes(before)


def test_settings_from_environment(tmp_path: Path) -> None:
    env = {
        "UNIONLEDGER_DATA_DIR": str(tmp_path / "d"),
        "UNIONLEDGER_DATABASE_URL": "postgresql://u@h/db",
        "UNIONLEDGER_PORT": "9001",
    }
    s = Settings.load(environ=env)
    assert s.data_dir == (tmp_path / "d").resolve()
    assert s.database_url == "postgresql://u@h/db"
    assert s.port == 9001
    assert Settings.load(data_dir=tmp_path / "x", port=7000, environ=env).port == 7000
    with pytest.raises(ConfigError, match="data directory"):
        Settings.load(environ={})
    with pytest.raises(ConfigError, match="port"):
        Settings.load(data_dir=tmp_path, environ={"UNIONLEDGER_PORT": "eighty"})
    assert PASS not in repr(make_settings(tmp_path))
    assert s.access_log  # on by default
    for text, on in (("0", False), ("off", False), ("1", True), ("TRUE", True)):
        quiet = Settings.load(data_dir=tmp_path, environ={"UNIONLEDGER_ACCESS_LOG": text})
        assert quiet.access_log is on
    with pytest.raises(ConfigError, match="ACCESS_LOG"):
        Settings.load(data_dir=tmp_path, environ={"UNIONLEDGER_ACCESS_LOG": "sometimes"})


def _serving(settings: Settings) -> Any:
    app = create_app(settings)
    app.state.services.sequencer.close()
    return app


def test_a_keyring_file_rolled_back_past_a_revocation_does_not_undo_it(tmp_path: Path) -> None:
    """docs/keys.md section 4.6: the server recorded the revocation on the chain; started
    again on an older copy of the keyring file (sealed correctly: it opens), it still treats
    the key as revoked, and the trust list it signs says so."""
    settings = make_settings(tmp_path)
    init_data_dir(settings, keys.utc_now() - timedelta(hours=1), kdf=keys.KdfParams.fastest())
    store = keys.KeyStore(settings.data_dir)
    _serving(settings)  # records the first keys
    backup = store.path.read_bytes()
    issuer = store.load(PASS).current(keys.Role.ISSUER, keys.utc_now(), scope="100000")
    at = keys.utc_now().replace(microsecond=0)
    with store.locked():
        store.save(store.load(PASS).revoke(issuer.kid, at, "stolen"), PASS)
    _serving(settings)  # records the revocation
    store.path.write_bytes(backup)  # the old copy comes back
    assert store.load(PASS).record(issuer.kid).revoked_at is None
    app = _serving(settings)
    assert app.state.services.keyring.record(issuer.kid).revoked_at == at
    token = TestClient(app).get("/v1/trust-list").text
    listed = {e["kid"]: e for e in jwt.decode(token, options={"verify_signature": False})["keys"]}
    assert listed[issuer.kid]["revoked"] == int(at.timestamp())


def test_a_keyring_file_of_another_ledger_is_refused(tmp_path: Path) -> None:
    """A key the chain knows as one union's issuer key, claimed by the file for another
    union: the server does not start, and says why."""
    settings = make_settings(tmp_path)
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    _serving(settings)
    store = keys.KeyStore(settings.data_dir)
    ring = store.load(PASS)
    issuer = ring.current(keys.Role.ISSUER, keys.utc_now(), scope="100000")
    moved = keys.KeyRecord(
        kid=issuer.kid,
        role=keys.Role.ISSUER,
        public_key=issuer.public_key,
        not_before=issuer.not_before,
        scope="440000",
    )
    forged = keys.Keyring(
        [*(r for r in ring if r.kid != issuer.kid), moved],
        dict(ring.private_keys()),
        {name: ring.secret(name) for name in ring.secret_names()},
    )
    with store.locked():
        store.save(forged, PASS)  # with the passphrase: the seal cannot tell
    with pytest.raises(ConfigError, match="does not agree with the ledger"):
        create_app(settings)


def test_a_file_rolled_back_past_a_log_key_rotation_stops_with_no_current_key(
    tmp_path: Path,
) -> None:
    """The log key was revoked and replaced; an older keyring file comes back (the old key
    not revoked in it, the new one missing). The ledger's facts stand: no log key may sign,
    and the server says exactly that (keys.md 4.6), not that the file disagrees."""
    settings = make_settings(tmp_path)
    init_data_dir(settings, keys.utc_now() - timedelta(hours=1), kdf=keys.KdfParams.fastest())
    _serving(settings)
    store = keys.KeyStore(settings.data_dir)
    backup = store.path.read_bytes()
    with store.locked():
        ring = store.load(PASS)
        old = ring.current(keys.Role.LOG, keys.utc_now())
        ring = ring.revoke(old.kid, keys.utc_now())
        ring, _ = ring.rotate(keys.Role.LOG, keys.utc_now())
        store.save(ring, PASS)
    _serving(settings)  # records the revocation and the new key
    store.path.write_bytes(backup)
    with pytest.raises(keys.NoCurrentKey):
        create_app(settings)
