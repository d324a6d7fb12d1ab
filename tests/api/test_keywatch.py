"""A running server follows its keyring file (api/keywatch.py, docs/keys.md section 3.6):
after `unionledger keys rotate` and `keys revoke` of the ``api`` key, new logins are signed
with the new key and a token that a thief signs with the revoked key, dated after the
revocation, is refused, without a restart. A file that cannot be loaded keeps the keys in use.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

import keys
from api.app import create_app
from api.bootstrap import init_data_dir
from api.settings import Settings
from tests.api.accounts import add_accounts, login

PASS = "keyring watcher test passphrase"


@pytest.fixture
def app(tmp_path: Path) -> Any:
    settings = Settings.load(
        data_dir=tmp_path / "data", environ={"UNIONLEDGER_KEY_PASSPHRASE": PASS}
    )
    # Keys made an hour ago: a rotation with no lead time then hands over at once.
    init_data_dir(settings, keys.utc_now() - timedelta(hours=1), kdf=keys.KdfParams.fastest())
    built = create_app(settings)
    add_accounts(built.state.services.engine, [("auditor-1", "auditor", None)])
    return built


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def _forged(ring: keys.Keyring, kid: str, like: str) -> str:
    """A token as a thief holding the ``api`` key ``kid`` would sign it now: the claims of a
    real token (its live session), freshly dated."""
    claims = jwt.decode(like, options={"verify_signature": False})
    now = int(time.time())
    claims.update(iat=now, exp=now + 600, jti="forged-by-a-thief")
    return jwt.encode(
        claims,
        ring.private_key(kid).to_cryptography(),
        algorithm="EdDSA",
        headers={"kid": kid, "typ": "at+jwt"},
    )


def _rotate_and_revoke_api_key(data_dir: Path) -> tuple[keys.Keyring, str, str]:
    """As `keys rotate api --lead-time 0` then `keys revoke OLD` do; (the keyring before, the
    old kid, the new kid)."""
    store = keys.KeyStore(data_dir)
    with store.locked():
        before = store.load(PASS)
        now = keys.utc_now()
        old = before.current(keys.Role.API, now)
        ring, new = before.rotate(keys.Role.API, now, lead_time=timedelta(0))
        ring = ring.revoke(old.kid, now, reason="the api key leaked")
        store.save(ring, PASS)
    return before, old.kid, new.kid


def _me(client: TestClient, token: str) -> int:
    return client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code


def test_a_revoked_api_key_stops_signing_and_verifying_without_a_restart(app: Any) -> None:
    services = app.state.services
    client = TestClient(app)  # no lifespan: no watcher thread, check() is called by hand
    token = login(client, "auditor-1")
    assert services.watcher.check() is False  # the file did not change
    before, old, new = _rotate_and_revoke_api_key(services.settings.data_dir)
    assert _kid(token) == old
    time.sleep(1.1)  # the thief's token is dated a second after the revocation
    stolen = _forged(before, old, token)
    assert _me(client, stolen) == 200  # before the reload the server still trusts the old key
    assert services.watcher.check() is True
    assert _me(client, stolen) == 401
    fresh = login(client, "auditor-1")
    assert _kid(fresh) == new
    assert _me(client, fresh) == 200


def test_a_keyring_file_that_cannot_be_loaded_keeps_the_keys_in_use(app: Any) -> None:
    services = app.state.services
    client = TestClient(app)
    path = keys.KeyStore(services.settings.data_dir).path
    keys.store.atomic_write(path, b'{"format": "not a keyring"}\n', mode=0o600)
    assert services.watcher.check() is False
    assert _me(client, login(client, "auditor-1")) == 200


def test_the_serving_app_reloads_by_itself(app: Any) -> None:
    services = app.state.services
    with TestClient(app) as client:  # the lifespan starts the watcher (every second)
        token = login(client, "auditor-1")
        before, old, new = _rotate_and_revoke_api_key(services.settings.data_dir)
        time.sleep(1.1)
        stolen = _forged(before, old, token)
        deadline = time.monotonic() + 10
        while _me(client, stolen) != 401:
            assert time.monotonic() < deadline, "the revoked key is still trusted after 10 s"
            time.sleep(0.2)
        assert _kid(login(client, "auditor-1")) == new


def test_a_key_registered_while_serving_reaches_the_trust_list(app: Any) -> None:
    """As `unionledger keys register station` does: the trust list the server signs lists the
    new device key once the watcher reloaded the file (the signed list is cached otherwise)."""
    services = app.state.services
    client = TestClient(app)

    def listed() -> set[str]:
        token = client.get("/v1/trust-list").text
        return {e["kid"] for e in jwt.decode(token, options={"verify_signature": False})["keys"]}

    before = listed()
    device = keys.PrivateKey.generate().public_key
    store = keys.KeyStore(services.settings.data_dir)
    with store.locked():
        ring, _ = store.load(PASS).register(
            keys.Role.STATION, device, keys.utc_now(), scope="ST-NEW"
        )
        store.save(ring, PASS)
    assert device.key_id not in listed()  # the running server has not looked yet
    assert services.watcher.check() is True
    assert listed() == before | {device.key_id}


def test_a_revocation_undone_by_hand_is_not_followed(app: Any) -> None:
    """Someone who can write the keyring file but lacks the passphrase un-revokes the stolen
    key: the records' seal no longer opens, so the server keeps the revocation (docs/keys.md
    section 4.5) and keeps refusing the thief's tokens."""
    services = app.state.services
    client = TestClient(app)
    token = login(client, "auditor-1")
    before, old, _ = _rotate_and_revoke_api_key(services.settings.data_dir)
    assert services.watcher.check() is True
    time.sleep(1.1)
    stolen = _forged(before, old, token)
    assert _me(client, stolen) == 401
    store = keys.KeyStore(services.settings.data_dir)
    doc = json.loads(store.path.read_text())
    entry = next(e for e in doc["keys"] if e["kid"] == old)
    del entry["revoked_at"], entry["revocation_reason"]
    keys.store.atomic_write(store.path, json.dumps(doc).encode(), mode=0o600)
    assert services.watcher.check() is False  # the edit is not taken
    assert _me(client, stolen) == 401


def test_an_older_copy_of_the_file_put_back_does_not_undo_a_revocation(app: Any) -> None:
    """The rollback the seal cannot see (docs/keys.md section 4.6): the revocation is on the
    chain, so the old file, which opens, changes nothing the chain said."""
    services = app.state.services
    client = TestClient(app)
    store = keys.KeyStore(services.settings.data_dir)
    backup = store.path.read_bytes()
    token = login(client, "auditor-1")
    before, old, new = _rotate_and_revoke_api_key(services.settings.data_dir)
    assert services.watcher.check() is True
    time.sleep(1.1)
    stolen = _forged(before, old, token)
    assert _me(client, stolen) == 401
    time.sleep(0.01)  # a new modification time for the watcher
    keys.store.atomic_write(store.path, backup, mode=0o600)
    assert store.load(PASS).record(old).revoked_at is None  # the old copy opens
    assert services.watcher.check() is True  # and is loaded...
    assert services.keyring.record(old).revoked_at is not None  # ...merged with the chain
    assert _me(client, stolen) == 401
    assert new in services.keyring  # known from the chain, though the file lacks it
