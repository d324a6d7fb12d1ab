"""Authentication: logins of every kind, tokens, sessions, lock-out, throttling, roles, the CLI.

Real app, real database (SQLite and PostgreSQL), a fake clock injected into the service.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pyotp
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection, select

import keys
from api.app import create_app
from api.auth import (
    AuditorOrOfficialDep,
    AuthFailure,
    AuthPolicy,
    AuthService,
    LogOtpSender,
    OfficialDep,
    StationDep,
    UndeliverableOtpSender,
    require,
)
from api.bootstrap import Province, init_data_dir, seed_tree
from api.cli import main
from api.deps import Services
from api.settings import Settings
from ledger import accounts
from ledger.accounts import PasswordCost
from ledger.domain import Conflict, Invalid, Role
from verifier.entry import parse_entry

PASS = "auth tests passphrase"
PASSWORD = "correct horse battery staple"
PHONE = "13800138000"
MEMBER = "m-7f3a"
STATION = "ST-1"
DEVICE = keys.PrivateKey.generate()


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Directory:
    phones: dict[str, str]
    erased: set[str] = field(default_factory=set)

    def member_for_phone(self, conn: Connection, phone: str) -> str | None:
        return self.phones.get(phone)

    def may_hold_session(self, conn: Connection, member_id: str) -> bool:
        return member_id not in self.erased


@dataclass
class Outbox:
    sent: list[tuple[str, str, str]] = field(default_factory=list)

    def send(self, member_id: str, phone: str, code: str) -> None:
        self.sent.append((member_id, phone, code))


@dataclass
class Env:
    client: TestClient
    app: FastAPI
    services: Services
    auth: AuthService
    clock: Clock
    outbox: Outbox
    settings: Settings

    def add_account(
        self, username: str, role: Role = Role.OFFICIAL, scope: str | None = "110000"
    ) -> accounts.Account:
        with self.services.engine.begin() as conn:
            return accounts.create_account(
                conn,
                username=username,
                password=PASSWORD,
                role=role,
                scope=scope if role == Role.OFFICIAL else None,
                now=int(self.clock.now.timestamp()),
                cost=PasswordCost.fastest(),
            )

    def login(self, username: str, password: str = PASSWORD, **extra: Any) -> Any:
        return self.client.post(
            "/v1/auth/login", json={"username": username, "password": password, **extra}
        )

    def tokens(self, username: str, **extra: Any) -> dict[str, Any]:
        response = self.login(username, **extra)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Iterator[Env]:
    environ = {"UNIONLEDGER_KEY_PASSPHRASE": PASS, "UNIONLEDGER_DATABASE_URL": database_url}
    settings = Settings.load(data_dir=tmp_path / "data", environ=environ)
    start = keys.utc_now()
    init_data_dir(settings, start, kdf=keys.KdfParams.fastest())
    store = keys.KeyStore(settings.data_dir)  # a station device's key, as `keys register` does
    with store.locked():
        ring, _ = store.load(PASS).register(
            keys.Role.STATION, DEVICE.public_key, start - timedelta(hours=1), scope=STATION
        )
        store.save(ring, PASS)
    app = create_app(settings)
    services: Services = app.state.services
    clock, outbox = Clock(start), Outbox()
    services.auth = AuthService(
        engine=services.engine,
        keyring=services.keyring,
        clock=clock,
        directory=Directory({PHONE: MEMBER}),
        sender=outbox,
        policy=AuthPolicy(password_cost=PasswordCost.fastest()),
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Env(client, app, services, services.auth, clock, outbox, settings)


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{slug}"
    return body


def assert_unauthorized(response: Any) -> None:
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


# -- officials and auditors --------------------------------------------------------------------


def test_login_gives_tokens_that_name_a_pseudonym(env: Env) -> None:
    account = env.add_account("Wang.Official")
    response = env.login("wang.official")  # usernames are case-insensitive
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert len(body["refresh_token"]) == 43  # 32 bytes, base64url

    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "EdDSA"
    assert header["typ"] == "at+jwt"
    assert header["kid"] == env.services.keyring.current(keys.Role.API, env.clock.now).kid
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["iss"] == "unionledger"
    assert claims["sub"] == account.account_id
    assert (claims["role"], claims["scope"]) == ("official", "110000")
    assert claims["exp"] - claims["iat"] == 600
    assert {"sid", "jti"} <= claims.keys()
    assert "wang" not in json.dumps(claims).lower()

    me = env.client.get("/v1/auth/me", headers=bearer(body["access_token"]))
    assert me.json() == {
        "role": "official",
        "subject": account.account_id,
        "scope": "110000",
        "username": account.username,
    }

    env.add_account("li.auditor", Role.AUDITOR)
    auditor = env.tokens("li.auditor")["access_token"]
    claims = jwt.decode(auditor, options={"verify_signature": False})
    assert claims["role"] == "auditor"
    assert "scope" not in claims
    assert env.client.get("/v1/auth/me", headers=bearer(auditor)).json()["scope"] is None


def test_every_failed_login_looks_the_same(env: Env) -> None:
    env.add_account("zhang.official")
    disabled = env.add_account("gone.official")
    with env.services.engine.begin() as conn:
        accounts.disable_account(conn, disabled.username, int(env.clock.now.timestamp()))
    answers = [
        env.login("zhang.official", "wrong password here"),
        env.login("nobody.here"),
        env.login("gone.official"),
        env.login("x"),  # not even a possible username
    ]
    bodies = [assert_problem(r, 401, "invalid-credentials") for r in answers]
    assert all(b == bodies[0] for b in bodies)
    assert_problem(
        env.client.post("/v1/auth/login", json={"username": "a"}), 422, "validation-error"
    )


def test_totp_setup_confirm_then_required(env: Env) -> None:
    env.add_account("chen.official")
    access = env.tokens("chen.official")["access_token"]
    assert_problem(
        env.client.post("/v1/auth/totp/confirm", json={"code": "123456"}, headers=bearer(access)),
        409,
        "conflict",
    )
    # The password again: a token alone (perhaps stolen) does not bind a second factor.
    stolen = env.client.post(
        "/v1/auth/totp/setup", json={"password": "not the password"}, headers=bearer(access)
    )
    assert_problem(stolen, 401, "invalid-credentials")
    assert_problem(
        env.client.post("/v1/auth/totp/setup", headers=bearer(access)), 422, "validation-error"
    )
    with env.services.engine.connect() as conn:
        counted = accounts.find_account(conn, "chen.official")
    assert counted is not None
    assert counted.totp_pending is None  # nothing was set up
    setup = env.client.post(
        "/v1/auth/totp/setup", json={"password": PASSWORD}, headers=bearer(access)
    )
    assert setup.status_code == 200
    assert setup.headers["cache-control"] == "no-store"
    uri = setup.json()["otpauth_uri"]
    assert uri.startswith("otpauth://totp/")
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    code = totp.at(env.clock.now)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    confirm = env.client.post("/v1/auth/totp/confirm", json={"code": wrong}, headers=bearer(access))
    assert_problem(confirm, 422, "invalid-request")
    confirm = env.client.post("/v1/auth/totp/confirm", json={"code": code}, headers=bearer(access))
    assert confirm.status_code == 204
    again = env.client.post(
        "/v1/auth/totp/setup", json={"password": PASSWORD}, headers=bearer(access)
    )
    assert_problem(again, 409, "conflict")
    with env.services.engine.connect() as conn:
        stored = accounts.find_account(conn, "chen.official")
    assert stored is not None
    assert stored.totp_secret is not None
    assert totp.secret not in stored.totp_secret  # sealed, not stored in clear

    env.clock.advance(30)  # the confirmation used this step's code
    assert_problem(env.login("chen.official"), 401, "invalid-credentials")
    assert_problem(env.login("chen.official", totp=wrong), 401, "invalid-credentials")
    code = totp.at(env.clock.now)
    assert_problem(
        env.login("chen.official", "a wrong password!", totp=code), 401, "invalid-credentials"
    )
    assert env.login("chen.official", totp=code).status_code == 200
    # The same code again (replay within its window) is refused; the next step's is fine.
    assert_problem(env.login("chen.official", totp=code), 401, "invalid-credentials")
    env.clock.advance(30)
    assert env.login("chen.official", totp=totp.at(env.clock.now)).status_code == 200


def test_an_administrator_unlocks_an_account_and_resets_a_lost_totp(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`unionledger accounts unlock` ends a lock someone caused by failing the password on
    purpose; `accounts reset-totp` switches TOTP off for a lost authenticator and ends the
    account's sessions, after which the password alone logs in and TOTP may be set up anew."""
    data_dir = str(env.settings.data_dir)
    monkeypatch.setenv("UNIONLEDGER_DATABASE_URL", env.settings.database_url)
    monkeypatch.setenv("UNIONLEDGER_KEY_PASSPHRASE", PASS)
    env.add_account("qian.official")
    for _ in range(5):
        env.login("qian.official", "somebody else's guess")
    assert_problem(env.login("qian.official"), 429, "account-locked")
    assert main(["accounts", "unlock", "--data-dir", data_dir, "qian.official"]) == 0
    assert env.login("qian.official").status_code == 200
    assert main(["accounts", "unlock", "--data-dir", data_dir, "nobody.here"]) == 1

    access = env.tokens("qian.official")["access_token"]
    setup = env.client.post(
        "/v1/auth/totp/setup", json={"password": PASSWORD}, headers=bearer(access)
    )
    totp = pyotp.parse_uri(setup.json()["otpauth_uri"])
    assert isinstance(totp, pyotp.TOTP)
    code = totp.at(env.clock.now)
    confirm = env.client.post("/v1/auth/totp/confirm", json={"code": code}, headers=bearer(access))
    assert confirm.status_code == 204
    assert_problem(env.login("qian.official"), 401, "invalid-credentials")  # TOTP is needed now
    assert main(["accounts", "reset-totp", "--data-dir", data_dir, "qian.official"]) == 0
    assert "TOTP is off for qian.official" in capsys.readouterr().out
    assert_unauthorized(env.client.get("/v1/auth/me", headers=bearer(access)))  # sessions ended
    assert env.login("qian.official").status_code == 200  # the password alone again
    with env.services.engine.connect() as conn:
        stored = accounts.find_account(conn, "qian.official")
    assert stored is not None
    assert (stored.totp_secret, stored.totp_pending, stored.totp_enabled) == (None, None, False)
    assert main(["accounts", "reset-totp", "--data-dir", data_dir, "nobody.here"]) == 1


def test_five_failures_lock_the_account_until_the_time_is_up(env: Env) -> None:
    env.add_account("sun.official")
    for _ in range(4):
        assert env.login("sun.official", "not the password").status_code == 401
    assert env.login("sun.official").status_code == 200  # a success resets the count
    for _ in range(5):
        assert_problem(env.login("sun.official", "not the password"), 401, "invalid-credentials")
    locked = env.login("sun.official")  # even the right password
    assert_problem(locked, 429, "account-locked")
    assert int(locked.headers["retry-after"]) == 15 * 60
    assert env.client.get("/problems/account-locked").json()["status"] == 429
    env.clock.advance(15 * 60 - 1)
    assert env.login("sun.official").status_code == 429
    env.clock.advance(1)
    assert env.login("sun.official").status_code == 200


def test_unknown_usernames_lock_like_real_ones(env: Env) -> None:
    for _ in range(5):
        assert_problem(env.login("ghost.official", "whatever it is"), 401, "invalid-credentials")
    assert_problem(env.login("ghost.official"), 429, "account-locked")


def test_a_client_is_throttled_after_20_attempts_a_minute(env: Env) -> None:
    for i in range(20):
        assert env.login(f"user{i}.unknown").status_code == 401
    throttled = env.login("user-last.unknown")
    assert_problem(throttled, 429, "too-many-requests")
    assert 1 <= int(throttled.headers["retry-after"]) <= 3
    env.clock.advance(3)
    assert env.login("user-after.unknown").status_code == 401


# -- tokens and sessions -------------------------------------------------------------------------


def test_refresh_rotates_and_a_reused_token_revokes_the_session(env: Env) -> None:
    env.add_account("zhao.official")
    first = env.tokens("zhao.official")
    second = env.client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    assert second.headers["cache-control"] == "no-store"
    second_body = second.json()
    assert second_body["refresh_token"] != first["refresh_token"]
    assert env.client.get("/v1/auth/me", headers=bearer(second_body["access_token"])).is_success
    third = env.client.post(
        "/v1/auth/refresh", json={"refresh_token": second_body["refresh_token"]}
    ).json()

    # The first token again: someone holds a copy. The whole session ends.
    reuse = env.client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_unauthorized(reuse)
    latest = env.client.post("/v1/auth/refresh", json={"refresh_token": third["refresh_token"]})
    assert_unauthorized(latest)
    assert_unauthorized(env.client.get("/v1/auth/me", headers=bearer(third["access_token"])))
    assert_unauthorized(env.client.post("/v1/auth/refresh", json={"refresh_token": "nonsense"}))
    # Another session of the same account is untouched.
    assert env.client.get(
        "/v1/auth/me", headers=bearer(env.tokens("zhao.official")["access_token"])
    ).is_success


def test_logout_revokes_the_session(env: Env) -> None:
    env.add_account("qian.official")
    tokens = env.tokens("qian.official")
    other = env.tokens("qian.official")
    assert_unauthorized(env.client.post("/v1/auth/logout"))
    assert (
        env.client.post("/v1/auth/logout", headers=bearer(tokens["access_token"])).status_code
        == 204
    )
    assert_unauthorized(env.client.get("/v1/auth/me", headers=bearer(tokens["access_token"])))
    refresh = env.client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_unauthorized(refresh)
    assert env.client.get("/v1/auth/me", headers=bearer(other["access_token"])).is_success


def test_access_tokens_expire_after_ten_minutes_and_30_s_leeway(env: Env) -> None:
    env.add_account("wu.official")
    access = env.tokens("wu.official")["access_token"]
    env.clock.advance(600 + 29)
    assert env.client.get("/v1/auth/me", headers=bearer(access)).status_code == 200
    env.clock.advance(1)
    assert_unauthorized(env.client.get("/v1/auth/me", headers=bearer(access)))


def test_a_session_ends_12_hours_after_login_however_often_it_is_refreshed(env: Env) -> None:
    env.add_account("feng.official")
    life = AuthPolicy().session_ttl
    assert life == env.auth.policy.session_ttl == 12 * 3600
    tokens = env.tokens("feng.official")
    # Refreshed every nine minutes, the session stays usable until its twelve hours are up...
    elapsed = 0
    while elapsed + 540 < life - 60:
        env.clock.advance(540)
        elapsed += 540
        refreshed = env.client.post(
            "/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refreshed.status_code == 200, (elapsed, refreshed.text)
        tokens = refreshed.json()
    env.clock.advance(life - 60 - elapsed)  # one minute before the end
    last = env.client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert last.status_code == 200, last.text
    tokens = last.json()
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert env.client.get("/v1/auth/me", headers=bearer(tokens["access_token"])).is_success
    env.clock.advance(59)
    assert env.client.get("/v1/auth/me", headers=bearer(tokens["access_token"])).is_success

    # ...and not a second longer: the access token itself has nine minutes left, but its
    # session is over, and refresh cannot extend it.
    env.clock.advance(1)
    assert int(env.clock.now.timestamp()) < claims["exp"]
    assert_unauthorized(env.client.get("/v1/auth/me", headers=bearer(tokens["access_token"])))
    refresh = env.client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_unauthorized(refresh)
    env.clock.advance(3600)
    refresh = env.client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_unauthorized(refresh)
    # Logging in again opens a new twelve-hour session.
    again = env.tokens("feng.official")
    assert env.client.get("/v1/auth/me", headers=bearer(again["access_token"])).is_success


def test_a_session_expires_for_every_kind_of_login(env: Env) -> None:
    env.client.post("/v1/auth/otp/request", json={"phone": PHONE})
    code = env.outbox.sent[-1][2]
    member = env.client.post("/v1/auth/otp/verify", json={"phone": PHONE, "code": code})
    station = _station_login(env, _challenge(env))
    sessions = [member.json(), station.json()]
    env.clock.advance(env.auth.policy.session_ttl - 300)
    for tokens in sessions:
        fresh = env.client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert fresh.status_code == 200, fresh.text
        tokens.update(fresh.json())
        assert env.client.get("/v1/auth/me", headers=bearer(tokens["access_token"])).is_success
    env.clock.advance(300)
    for tokens in sessions:
        assert_unauthorized(env.client.get("/v1/auth/me", headers=bearer(tokens["access_token"])))
        assert_unauthorized(
            env.client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        )


def _sign(claims: dict[str, Any], key: keys.PrivateKey, **header: Any) -> str:
    headers = {"kid": key.key_id, "typ": "at+jwt", **header}
    return jwt.encode(claims, key.to_cryptography(), algorithm="EdDSA", headers=headers)


def test_anyone_can_verify_an_access_token_with_the_published_api_keys(env: Env) -> None:
    """GET /v1/auth/keys: the api keys as a JWKS; a generic JWT library verifies a token with
    the key its kid names, and no key of another role is published there."""
    account = env.add_account("wu.official")
    token = env.tokens("wu.official")["access_token"]
    published = env.client.get("/v1/auth/keys")
    assert published.status_code == 200
    jwks = published.json()["keys"]
    assert {k["role"] for k in jwks} == {"api"}
    kid = jwt.get_unverified_header(token)["kid"]
    (jwk,) = [k for k in jwks if k["kid"] == kid]
    assert keys.jwk_thumbprint(jwk) == kid
    key = jwt.PyJWK({k: jwk[k] for k in ("kty", "crv", "x")}, algorithm="EdDSA")
    claims = jwt.decode(
        token,
        key,
        algorithms=["EdDSA"],
        issuer="unionledger",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["sub"] == account.account_id
    assert jwk["nbf"] <= claims["iat"]


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_forged_and_altered_tokens_are_refused(env: Env) -> None:
    env.add_account("zheng.official")
    genuine = env.tokens("zheng.official")["access_token"]
    claims = jwt.decode(genuine, options={"verify_signature": False})
    api_key = env.services.keyring.signer(keys.Role.API, env.clock.now)
    log_key = env.services.keyring.signer(keys.Role.LOG, env.clock.now)
    stranger = keys.PrivateKey.generate()
    assert env.client.get("/v1/auth/me", headers=bearer(_sign(claims, api_key))).is_success

    head, body, sig = genuine.split(".")
    altered = dict(claims, role="auditor")
    altered.pop("scope")
    altered_body = keys.b64url_encode(json.dumps(altered).encode())
    none_header = keys.b64url_encode(
        json.dumps({"alg": "none", "typ": "at+jwt", "kid": api_key.key_id}).encode()
    )
    bad = [
        _sign(claims, stranger),  # a key the keyring does not know
        _sign(claims, stranger, kid=api_key.key_id),  # our kid, another key
        _sign(claims, log_key),  # a key of ours, but not an api key
        _sign(claims, api_key, typ="JWT"),  # not an access token
        _sign({**claims, "exp": claims["iat"] + 86400}, api_key),  # longer-lived than we issue
        _sign({**claims, "iss": "elsewhere"}, api_key),
        _sign({k: v for k, v in claims.items() if k != "sid"}, api_key),
        _sign({**claims, "sid": "made-up"}, api_key),
        _sign({**claims, "role": "system"}, api_key),
        f"{none_header}.{body}.",  # alg=none
        f"{head}.{altered_body}.{sig}",  # payload altered under the signature
        "not-a-jwt",
        # Another spelling of the genuine token: padding, or non-zero trailing bits (the last
        # character of an 86-character signature carries 4 unused bits).
        f"{genuine}==",
        f"{head}==.{body}.{sig}",
        f"{head}.{body}.{sig[:-1]}{B64[B64.index(sig[-1]) + 1]}",  # same bytes, a bit set
    ]
    for token in bad:
        assert_unauthorized(env.client.get("/v1/auth/me", headers=bearer(token)))
    assert_unauthorized(env.client.get("/v1/auth/me", headers={"Authorization": "Basic eDp5"}))
    assert_unauthorized(env.client.get("/v1/auth/me"))


def test_require_refuses_other_roles_with_403(env: Env) -> None:
    @env.app.get("/test/official")
    def officials_only(actor: OfficialDep) -> dict[str, str]:
        return {"who": actor.key_id}

    @env.app.get("/test/read")
    def readers(actor: AuditorOrOfficialDep) -> dict[str, str]:
        return {"who": actor.role.value}

    @env.app.get("/test/station")
    def stations_only(actor: StationDep) -> dict[str, str]:
        return {"who": actor.key_id}

    official = env.add_account("feng.official")
    env.add_account("he.auditor", Role.AUDITOR)
    as_official = bearer(env.tokens("feng.official")["access_token"])
    as_auditor = bearer(env.tokens("he.auditor")["access_token"])
    assert env.client.get("/test/official", headers=as_official).json() == {
        "who": official.account_id
    }
    assert env.client.get("/test/read", headers=as_auditor).json() == {"who": "auditor"}
    body = assert_problem(env.client.get("/test/official", headers=as_auditor), 403, "forbidden")
    assert "official" in body["detail"]
    assert_problem(env.client.get("/test/station", headers=as_official), 403, "forbidden")
    assert_unauthorized(env.client.get("/test/official"))
    with pytest.raises(ValueError, match="at least one role"):
        require()


def test_without_an_auth_service_logins_are_unavailable(env: Env) -> None:
    env.services.auth = None
    assert_problem(env.login("anyone.at.all"), 503, "unavailable")


# -- members ---------------------------------------------------------------------------------------


def test_member_one_time_code_flow(env: Env) -> None:
    known = env.client.post("/v1/auth/otp/request", json={"phone": PHONE})
    unknown = env.client.post("/v1/auth/otp/request", json={"phone": "13900000000"})
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json() == {"expires_in": 300}
    assert len(env.outbox.sent) == 1
    member_id, phone, code = env.outbox.sent[0]
    assert (member_id, phone) == (MEMBER, PHONE)
    assert len(code) == 6
    assert code.isdigit()

    wrong = f"{(int(code) + 1) % 10**6:06d}"
    verify = env.client.post("/v1/auth/otp/verify", json={"phone": PHONE, "code": wrong})
    assert_problem(verify, 401, "invalid-credentials")
    stranger = env.client.post("/v1/auth/otp/verify", json={"phone": "13900000000", "code": code})
    assert_problem(stranger, 401, "invalid-credentials")
    ok = env.client.post("/v1/auth/otp/verify", json={"phone": PHONE, "code": code})
    assert ok.status_code == 200
    access = ok.json()["access_token"]
    me = env.client.get("/v1/auth/me", headers=bearer(access)).json()
    assert me == {"role": "member", "subject": MEMBER, "scope": MEMBER, "username": None}
    assert PHONE not in json.dumps(jwt.decode(access, options={"verify_signature": False}))
    again = env.client.post("/v1/auth/otp/verify", json={"phone": PHONE, "code": code})
    assert_problem(again, 401, "invalid-credentials")  # used up

    # A member may not set up TOTP (members have no account).
    assert_problem(
        env.client.post("/v1/auth/totp/setup", json={"password": "x"}, headers=bearer(access)),
        403,
        "forbidden",
    )


def test_member_codes_expire_and_burn_after_five_guesses(env: Env) -> None:
    env.client.post("/v1/auth/otp/request", json={"phone": PHONE})
    code = env.outbox.sent[-1][2]
    env.clock.advance(300)
    expired = env.client.post("/v1/auth/otp/verify", json={"phone": PHONE, "code": code})
    assert_problem(expired, 401, "invalid-credentials")

    env.client.post("/v1/auth/otp/request", json={"phone": PHONE})
    code = env.outbox.sent[-1][2]
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(5):
        env.client.post("/v1/auth/otp/verify", json={"phone": PHONE, "code": wrong})
    burnt = env.client.post("/v1/auth/otp/verify", json={"phone": PHONE, "code": code})
    assert_problem(burnt, 401, "invalid-credentials")

    # A new code replaces the old one.
    env.client.post("/v1/auth/otp/request", json={"phone": PHONE})
    old = env.outbox.sent[-1][2]
    env.client.post("/v1/auth/otp/request", json={"phone": PHONE})
    new = env.outbox.sent[-1][2]
    if old != new:
        replaced = env.client.post("/v1/auth/otp/verify", json={"phone": PHONE, "code": old})
        assert_problem(replaced, 401, "invalid-credentials")
    verify = env.client.post("/v1/auth/otp/verify", json={"phone": PHONE, "code": new})
    assert verify.status_code == 200
    # Five codes per member per 15 minutes (three used since the refill); more are not sent,
    # and the answer does not say so.
    sent = len(env.outbox.sent)
    for _ in range(4):
        assert env.client.post("/v1/auth/otp/request", json={"phone": PHONE}).status_code == 202
    assert len(env.outbox.sent) == sent + 2


# -- stations ------------------------------------------------------------------------------------


def _challenge(env: Env, station_id: str = STATION) -> str:
    response = env.client.post("/v1/auth/station/challenge", json={"station_id": station_id})
    assert response.status_code == 200
    assert response.json()["expires_in"] == 60
    challenge: str = response.json()["challenge"]
    assert len(keys.b64url_decode(challenge)) == 32
    return challenge


def _station_login(
    env: Env, challenge: str, key: keys.PrivateKey = DEVICE, station_id: str = STATION
) -> Any:
    message = f"unionledger-station-login/1\n{station_id}\n{challenge}".encode()
    signature = keys.b64url_encode(key.sign(message))
    return env.client.post(
        "/v1/auth/station/verify",
        json={"station_id": station_id, "challenge": challenge, "signature": signature},
    )


def test_station_challenge_response(env: Env) -> None:
    challenge = _challenge(env)
    ok = _station_login(env, challenge)
    assert ok.status_code == 200
    access = ok.json()["access_token"]
    me = env.client.get("/v1/auth/me", headers=bearer(access)).json()
    assert me == {"role": "station", "subject": STATION, "scope": STATION, "username": None}
    assert_problem(_station_login(env, challenge), 401, "invalid-credentials")  # used

    stranger = keys.PrivateKey.generate()
    assert_problem(_station_login(env, _challenge(env), stranger), 401, "invalid-credentials")
    late = _challenge(env)
    env.clock.advance(60)
    assert_problem(_station_login(env, late), 401, "invalid-credentials")
    unknown = _challenge(env, "ST-404")  # issued all the same: station ids are not confirmed
    assert_problem(_station_login(env, unknown, station_id="ST-404"), 401, "invalid-credentials")
    # A challenge issued to another station, signed for this one.
    other = _challenge(env, "ST-2")
    assert_problem(_station_login(env, other), 401, "invalid-credentials")
    garbled = env.client.post(
        "/v1/auth/station/verify",
        json={"station_id": STATION, "challenge": _challenge(env), "signature": "!!"},
    )
    assert_problem(garbled, 401, "invalid-credentials")
    made_up = _station_login(env, keys.b64url_encode(bytes(32)))
    assert_problem(made_up, 401, "invalid-credentials")


def test_a_revoked_station_key_cannot_log_in_or_refresh(env: Env) -> None:
    tokens = _station_login(env, _challenge(env)).json()
    env.auth.keyring = env.auth.keyring.revoke(DEVICE.key_id, env.clock.now)
    assert_problem(_station_login(env, _challenge(env)), 401, "invalid-credentials")
    refresh = env.client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_unauthorized(refresh)
    assert_unauthorized(env.client.get("/v1/auth/me", headers=bearer(tokens["access_token"])))


# -- personal data -------------------------------------------------------------------------------


def test_no_password_phone_code_or_username_reaches_the_logs(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env.add_account("secretive.official")
    env.login("secretive.official", "the wrong password 4711")
    env.login("no.such.user", "another wrong password")
    env.login("secretive.official")
    env.client.post("/v1/auth/otp/request", json={"phone": PHONE})
    code = env.outbox.sent[-1][2]
    env.client.post("/v1/auth/otp/verify", json={"phone": PHONE, "code": "000000"})
    env.client.post("/v1/auth/otp/verify", json={"phone": PHONE, "code": code})
    env.client.post("/v1/auth/otp/request", json={"phone": "13911112222"})
    text = caplog.text
    assert "login failed" in text  # something was logged...
    for secret in (
        PASSWORD,
        "the wrong password 4711",
        "another wrong password",
        PHONE,
        "13911112222",
        code,
        "secretive",
        "no.such.user",
    ):
        assert secret not in text


def test_the_development_sender_logs_the_code_but_not_the_phone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="unionledger.otp")
    LogOtpSender().send(MEMBER, PHONE, "123456")
    assert caplog.records[-1].name == "unionledger.otp"
    assert caplog.records[-1].getMessage() == f"OTP for member {MEMBER}: 123456"
    UndeliverableOtpSender().send(MEMBER, PHONE, "654321")
    assert PHONE not in caplog.text
    assert "654321" not in caplog.text


# -- accounts: rules and the command line ----------------------------------------------------------


def test_account_rules(env: Env) -> None:
    env.add_account("rules.official")
    with pytest.raises(Conflict):
        env.add_account("RULES.official")
    with env.services.engine.begin() as conn:
        for kwargs in (
            {"username": "ok.name", "password": "too short", "role": "official", "scope": "1"},
            {"username": "ok.name", "password": PASSWORD, "role": "official"},
            {"username": "ok.name", "password": PASSWORD, "role": "auditor", "scope": "1"},
            {"username": "ok.name", "password": PASSWORD, "role": "member", "scope": "1"},
            {"username": "bad name", "password": PASSWORD, "role": "auditor"},
        ):
            with pytest.raises(Invalid):
                accounts.create_account(conn, now=0, cost=PasswordCost.fastest(), **kwargs)
    with env.services.engine.connect() as conn:
        found = accounts.find_account(conn, "rules.official")
    assert found is not None
    assert PASSWORD not in repr(found)
    assert found.password_hash not in repr(found)


def test_cli_add_list_disable(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = str(env.settings.data_dir)
    monkeypatch.setenv("UNIONLEDGER_DATABASE_URL", env.settings.database_url)
    monkeypatch.setenv("UNIONLEDGER_KEY_PASSPHRASE", PASS)
    monkeypatch.setenv("UNIONLEDGER_NEW_PASSWORD", PASSWORD)
    seed_tree(env.services.sequencer, [Province("310000", "上海市", "Shanghai", "上海市总工会")])
    add = ["accounts", "add", "--data-dir", data_dir, "--username", "Liu.Official"]
    assert main([*add, "--role", "official", "--scope", "310000"]) == 0
    assert main([*add, "--role", "official", "--scope", "310000"]) == 1  # taken
    assert main([*add[:-1], "liu2.official", "--role", "official"]) == 2  # no scope
    assert main([*add[:-1], "liu2.official", "--role", "official", "--scope", "320000"]) == 2
    monkeypatch.setenv("UNIONLEDGER_NEW_PASSWORD", "short")
    assert main([*add[:-1], "liu3.official", "--role", "auditor"]) == 2
    out = capsys.readouterr()
    assert "created official account acct-" in out.out
    assert "taken" in out.err
    assert "no open union has the code '320000'" in out.err
    assert PASSWORD not in out.out + out.err

    tokens = env.tokens("liu.official")
    assert main(["accounts", "list", "--data-dir", data_dir, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(a["username"], a["role"], a["scope"], a["status"]) for a in listed] == [
        ("liu.official", "official", "310000", "active")
    ]
    assert main(["accounts", "list", "--data-dir", data_dir]) == 0
    assert "liu.official" in capsys.readouterr().out

    assert main(["accounts", "disable", "--data-dir", data_dir, "liu.official"]) == 0
    assert main(["accounts", "disable", "--data-dir", data_dir, "liu.official"]) == 1  # again
    assert main(["accounts", "disable", "--data-dir", data_dir, "nobody.else"]) == 1
    # The grants are on the chain: by pseudonymous account id, role and scope, never the name.
    account_id = listed[0]["account_id"]
    grants = [
        (e.type, e.body)
        for e in map(parse_entry, env.services.reader.entries(0, env.services.reader.size()))
        if e.type.startswith("Account")
    ]
    assert grants == [
        ("AccountCreated", {"account": account_id, "role": "official", "scope": "310000"}),
        ("AccountDisabled", {"account": account_id}),
    ]
    assert_problem(env.login("liu.official"), 401, "invalid-credentials")
    assert_unauthorized(env.client.get("/v1/auth/me", headers=bearer(tokens["access_token"])))
    refresh = env.client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_unauthorized(refresh)


def test_an_erased_member_loses_their_session(env: Env) -> None:
    env.client.post("/v1/auth/otp/request", json={"phone": PHONE})
    code = env.outbox.sent[-1][2]
    tokens = env.client.post("/v1/auth/otp/verify", json={"phone": PHONE, "code": code}).json()
    assert env.client.get("/v1/auth/me", headers=bearer(tokens["access_token"])).status_code == 200
    directory = env.auth.directory
    assert isinstance(directory, Directory)
    directory.erased.add(MEMBER)
    assert_unauthorized(env.client.get("/v1/auth/me", headers=bearer(tokens["access_token"])))
    refresh = env.client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_unauthorized(refresh)
    directory.erased.clear()  # the refusal revoked the session: it stays ended
    refresh = env.client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_unauthorized(refresh)


def _attempt(env: Env, username: str, client: str, password: str = PASSWORD) -> str:
    """A login of ``username`` from address ``client``: ``ok``, or the failure's problem type."""
    try:
        env.auth.login(username, password, None, client)
    except AuthFailure as e:
        return e.slug
    return "ok"


@pytest.mark.parametrize("username", ["zhou.official", "nobody.official"])
def test_a_stranger_locks_an_account_only_for_their_own_address(env: Env, username: str) -> None:
    """docs/auth.md section 4.1: five failures in a row lock the username for the address
    they came from; its owner, elsewhere, still logs in (and an unknown username behaves the
    same, so the lock does not tell which exist)."""
    real = username == "zhou.official"
    if real:
        env.add_account(username)
    for _ in range(5):
        assert (
            _attempt(env, username, "198.51.100.7", "a stranger's guess!") == "invalid-credentials"
        )
    assert _attempt(env, username, "198.51.100.7") == "account-locked"  # even the password
    assert _attempt(env, username, "203.0.113.20") == ("ok" if real else "invalid-credentials")
    assert _attempt(env, username, "198.51.100.7") == "account-locked"  # the owner's success
    env.clock.advance(15 * 60)  # does not lift the stranger's lock; the time does
    assert _attempt(env, username, "198.51.100.7") == ("ok" if real else "invalid-credentials")


def test_failures_from_many_addresses_lock_the_account_everywhere(env: Env) -> None:
    """A guess spread over many addresses (5 each) locks the account for every address at the
    50th failure in a row; `accounts unlock` lifts both kinds of lock."""
    env.add_account("wu.official")
    for n in range(10):
        for _ in range(5):
            assert _attempt(env, "wu.official", f"192.0.2.{n}", "guess guess guess") == (
                "invalid-credentials"
            )
    assert _attempt(env, "wu.official", "203.0.113.99") == "account-locked"
    with env.services.engine.begin() as conn:
        accounts.unlock_account(conn, "wu.official")
    assert _attempt(env, "wu.official", "192.0.2.0") == "ok"  # the pair's lock is gone too
    assert _attempt(env, "wu.official", "203.0.113.99") == "ok"


def test_a_success_restarts_only_its_own_addresses_count(env: Env) -> None:
    env.add_account("zheng.official")
    for _ in range(4):
        _attempt(env, "zheng.official", "198.51.100.1", "wrong wrong wrong")
        _attempt(env, "zheng.official", "198.51.100.2", "wrong wrong wrong")
    assert _attempt(env, "zheng.official", "198.51.100.1") == "ok"
    assert _attempt(env, "zheng.official", "198.51.100.1", "wrong again!!") == "invalid-credentials"
    assert _attempt(env, "zheng.official", "198.51.100.2", "wrong again!!") == "invalid-credentials"
    assert _attempt(env, "zheng.official", "198.51.100.2") == "account-locked"  # its fifth
    assert _attempt(env, "zheng.official", "198.51.100.1") == "ok"
    with env.services.engine.connect() as conn:  # neither usernames nor addresses are stored
        rows = conn.execute(select(accounts.login_failures)).all()
    assert rows
    flat = repr(rows).encode()
    assert b"zheng" not in flat
    assert b"198.51" not in flat
