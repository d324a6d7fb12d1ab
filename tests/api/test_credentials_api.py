"""Credentials over HTTP: a member registers a holder key and gets a station credential that
the pure verifier accepts with the server's own trust list and status list; transfers and group
changes re-issue it, leaving and erasure revoke it, and only hashes reach the ledger."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

import keys
from api.app import create_app
from api.bootstrap import init_data_dir
from api.cli import main
from api.settings import Settings
from ledger import credentials as c
from ledger import programs, unions
from ledger.accounts import PasswordCost, create_account
from ledger.domain import SYSTEM
from ledger.projections import compare, default_projections
from ledger.vault import PersonalData
from verifier.credential import IssuedCredential, verify_presentation
from verifier.entry import parse_entry
from verifier.errors import CredentialRevoked
from verifier.sdjwt import present_sd_jwt, verify_sd_jwt
from verifier.statuslist import verify_status_list
from verifier.wallet import Wallet

PASS = "credentials api test passphrase"
PERSON = PersonalData(name="测试甲", id_number="11010519491231002X", phone="13912340001")


@dataclass
class Outbox:
    codes: dict[str, str] = field(default_factory=dict)

    def send(self, member_id: str, phone: str, code: str) -> None:
        self.codes[phone] = code


@dataclass
class Env:
    client: TestClient
    services: Any
    official: dict[str, str]
    member: dict[str, str]
    member_id: str
    root: keys.PublicKey

    def trust(self) -> keys.TrustList:
        token = self.client.get("/v1/trust-list").text
        return keys.verify_trust_list(token, self.root, keys.utc_now())

    def statuses(self, trust: keys.TrustList, issuer: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/status-lists/{issuer}")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/statuslist+jwt"
        return {issuer: verify_status_list(response.text, trust, keys.utc_now(), issuer=issuer)}

    def entries(self, kind: str) -> list[dict[str, Any]]:
        reader = self.services.reader
        return [
            e.body for e in map(parse_entry, reader.entries(0, reader.size())) if e.type == kind
        ]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Iterator[Env]:
    settings = Settings.load(
        data_dir=tmp_path / "data",
        environ={"UNIONLEDGER_KEY_PASSPHRASE": PASS, "UNIONLEDGER_DATABASE_URL": database_url},
    )
    now = keys.utc_now()
    init_data_dir(settings, now, kdf=keys.KdfParams.fastest())
    store = keys.KeyStore(settings.data_dir)  # the provincial federation issues, as in the demo
    with store.locked():
        ring, _ = store.load(PASS).rotate(keys.Role.ISSUER, now - timedelta(days=1), scope="110000")
        store.save(ring, PASS)
    app = create_app(settings)
    services = app.state.services
    for code, kind, parent in [
        ("100000", "national", None),
        ("110000", "provincial", "100000"),
        ("310000", "provincial", "100000"),
        ("110105-0001", "enterprise", "110000"),
        ("G-SH", "enterprise", "310000"),
    ]:
        services.sequencer.execute(
            lambda tx, c=code, k=kind, p=parent: unions.create_union(
                tx, SYSTEM, code=c, name=f"工会{c}", kind=k, parent=p
            )
        )
    member_id = services.sequencer.execute(
        lambda tx: services.members.enrol(
            tx, SYSTEM, union_code="110105-0001", person=PERSON, groups=["delivery_rider"]
        )
    ).member_id
    with services.engine.begin() as conn:
        create_account(
            conn,
            username="official-national",
            password="national password 1",
            role="official",
            scope="100000",
            now=0,
            cost=PasswordCost.fastest(),
        )
    outbox = Outbox()
    services.auth.sender = outbox
    with TestClient(app, raise_server_exceptions=False) as client:
        login = client.post(
            "/v1/auth/login",
            json={"username": "official-national", "password": "national password 1"},
        )
        client.post("/v1/auth/otp/request", json={"phone": PERSON.phone})
        verify = client.post(
            "/v1/auth/otp/verify", json={"phone": PERSON.phone, "code": outbox.codes[PERSON.phone]}
        )
        root = services.keyring.current(keys.Role.ROOT, keys.utc_now())
        yield Env(
            client,
            services,
            bearer(login.json()["access_token"]),
            bearer(verify.json()["access_token"]),
            member_id,
            root.public_key,
        )


def register(env: Env, holder: keys.PrivateKey) -> dict[str, Any]:
    response = env.client.post(
        "/v1/members/me/credential",
        json={"holder_key": holder.public_key.to_jwk()},
        headers=env.member,
    )
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


def wallet(holder: keys.PrivateKey, body: dict[str, Any]) -> Wallet:
    issued = IssuedCredential(
        keys.b64url_decode(body["credential"]),
        {g: keys.b64url_decode(d) for g, d in body["disclosures"].items()},
        bytes.fromhex(body["hash"]),
    )
    return Wallet.from_issued(holder, issued)


def check(env: Env, text: str, issuer: str = "110000") -> Any:
    trust = env.trust()
    return verify_presentation(
        text, trust_list=trust, status_lists=env.statuses(trust, issuer), now=keys.utc_now()
    )


def test_register_a_holder_key_and_present(env: Env) -> None:
    holder = keys.PrivateKey.generate()
    body = register(env, holder)
    assert (body["issuer"], body["union"], body["member_id"]) == (
        "110000",  # the nearest union up the chain with an issuer key
        "110105-0001",
        env.member_id,
    )
    assert sorted(body["disclosures"]) == ["delivery_rider"]
    token = keys.b64url_decode(body["credential"])
    assert hashlib.sha256(token).hexdigest() == body["hash"]

    text = wallet(holder, body).presentation(["delivery_rider"], keys.utc_now())
    verified = check(env, text)
    assert verified.member_id == env.member_id
    assert verified.home_union == "110105-0001"
    assert verified.groups == frozenset({"delivery_rider"})
    assert len(text) <= 410  # the typical case: a grassroots union, one disclosure

    again = env.client.get("/v1/members/me/credential", headers=env.member).json()
    assert again == body
    # On the chain: the hash and the facts, never the credential or its groups.
    (issued,) = env.entries("CredentialIssued")
    assert issued["hash"] == keys.b64url_encode(bytes.fromhex(body["hash"]))
    assert (issued["member"], issued["issuer"], issued["index"]) == (
        env.member_id,
        "110000",
        body["status_index"],
    )
    assert "delivery_rider" not in repr(issued)
    assert (
        env.client.get(f"/v1/members/{env.member_id}/credentials", headers=env.official).json()[0][
            "hash"
        ]
        == (body["hash"])
    )


def test_a_new_holder_key_revokes_the_old_credential(env: Env) -> None:
    first_holder, second_holder = keys.PrivateKey.generate(), keys.PrivateKey.generate()
    first = register(env, first_holder)
    old_text = wallet(first_holder, first).presentation([], keys.utc_now())
    second = register(env, second_holder)
    assert second["status_index"] == first["status_index"] + 1
    with pytest.raises(CredentialRevoked):
        check(env, old_text)
    check(env, wallet(second_holder, second).presentation([], keys.utc_now()))
    (revoked,) = env.entries("CredentialRevoked")
    assert (revoked["index"], revoked["reason"]) == (first["status_index"], "superseded")


def test_transfer_and_group_changes_reissue_leaving_revokes(env: Env) -> None:
    holder = keys.PrivateKey.generate()
    first = register(env, holder)
    moved = env.client.post(
        f"/v1/members/{env.member_id}/transfer", json={"union": "G-SH"}, headers=env.official
    )
    assert moved.status_code == 200, moved.text
    after_move = env.client.get("/v1/members/me/credential", headers=env.member).json()
    assert (after_move["issuer"], after_move["union"]) == ("100000", "G-SH")  # no 310000 key
    with pytest.raises(CredentialRevoked):
        check(env, wallet(holder, first).presentation([], keys.utc_now()))
    # Same holder key: the phone keeps presenting without registering again.
    check(env, wallet(holder, after_move).presentation([], keys.utc_now()), issuer="100000")

    added = env.client.post(
        f"/v1/members/{env.member_id}/groups", json={"group": "hardship"}, headers=env.official
    )
    assert added.status_code == 201, added.text
    after_group = env.client.get("/v1/members/me/credential", headers=env.member).json()
    assert sorted(after_group["disclosures"]) == ["delivery_rider", "hardship"]
    verified = check(
        env,
        wallet(holder, after_group).presentation(["hardship"], keys.utc_now()),
        issuer="100000",
    )
    assert verified.groups == frozenset({"hardship"})
    reasons = [e["reason"] for e in env.entries("CredentialRevoked")]
    assert reasons == ["transferred", "groups-changed"]
    assert "hardship" not in repr(env.entries("CredentialIssued"))

    left = env.client.post(f"/v1/members/{env.member_id}/leave", headers=env.member)
    assert left.status_code == 200, left.text
    gone = env.client.get("/v1/members/me/credential", headers=env.member)
    assert (gone.status_code, gone.json()["type"]) == (404, "/problems/no-credential")
    refused = env.client.post(
        "/v1/members/me/credential",
        json={"holder_key": holder.public_key.to_jwk()},
        headers=env.member,
    )
    assert (refused.status_code, refused.json()["type"]) == (
        409,
        "/problems/credential-not-issuable",
    )
    with pytest.raises(CredentialRevoked):
        check(env, wallet(holder, after_group).presentation([], keys.utc_now()), issuer="100000")
    with env.services.engine.connect() as conn:
        assert compare(env.services.engine, default_projections()) == []
        assert conn.execute(select(c.credentials)).all()


def test_erasure_revokes_and_forgets_the_stored_credential(env: Env) -> None:
    holder = keys.PrivateKey.generate()
    body = register(env, holder)
    erased = env.client.post(f"/v1/members/{env.member_id}/erase", headers=env.official)
    assert erased.status_code == 200, erased.text
    assert env.entries("CredentialRevoked")[-1]["reason"] == "erased"
    with env.services.engine.connect() as conn:
        assert conn.execute(select(c.credential_store)).all() == []
    with pytest.raises(CredentialRevoked):
        check(env, wallet(holder, body).presentation([], keys.utc_now()))


def test_bad_holder_keys_are_refused(env: Env) -> None:
    holder = keys.PrivateKey.generate()
    jwk = holder.public_key.to_jwk()
    for bad in (
        {**jwk, "crv": "X25519"},
        {**jwk, "x": jwk["x"][:-2]},
        {**jwk, "x": jwk["x"] + "="},
        {**jwk, "d": keys.b64url_encode(holder.seed())},
        {"kty": "EC"},
    ):
        response = env.client.post(
            "/v1/members/me/credential", json={"holder_key": bad}, headers=env.member
        )
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["type"] == "/problems/invalid-holder-key"
    assert env.entries("CredentialIssued") == []
    missing = env.client.get("/v1/status-lists/440000")
    assert (missing.status_code, missing.json()["type"]) == (404, "/problems/not-found")


def test_the_sd_jwt_vc_shares_holder_key_and_status(env: Env) -> None:
    holder = keys.PrivateKey.generate()
    body = register(env, holder)
    response = env.client.get("/v1/members/me/credential/sd-jwt", headers=env.member)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dc+sd-jwt"
    now = keys.utc_now()
    presented = present_sd_jwt(
        response.text,
        holder_key=holder,
        disclose=["delivery_rider"],
        audience="station:ST-1",
        nonce="n-1",
        now=now,
    )
    trust = env.trust()
    uri = f"{env.services.settings.public_url}/v1/status-lists/110000"
    status_token = env.client.get("/v1/status-lists/110000").text
    lists = {uri: verify_status_list(status_token, trust, now, uri=uri)}
    verified = verify_sd_jwt(
        presented,
        trust_list=trust,
        now=now,
        status_lists=lists,
        expected_audience="station:ST-1",
        expected_nonce="n-1",
    )
    assert (verified.member_id, verified.home_union, verified.status_index) == (
        env.member_id,
        "110105-0001",
        body["status_index"],
    )
    assert verified.groups == frozenset({"delivery_rider"})


def test_cli_member_qr_is_a_development_wallet(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    settings = env.services.settings
    monkeypatch.setenv("UNIONLEDGER_KEY_PASSPHRASE", PASS)
    monkeypatch.setenv("UNIONLEDGER_DATABASE_URL", settings.database_url)
    wallet_file = tmp_path / "w.json"
    base = ["member", "qr", "--data-dir", str(settings.data_dir), "--wallet", str(wallet_file)]
    assert main([*base, env.member_id, "--disclose", "delivery_rider"]) == 0
    first = capsys.readouterr()
    text = first.out.strip()
    assert check(env, text).groups == frozenset({"delivery_rider"})
    assert "QR version 15 at Q" in first.err
    assert oct(wallet_file.stat().st_mode & 0o777) == "0o600"
    assert wallet_file.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    assert main([*base, env.member_id]) == 0  # the same credential, a fresh proof
    assert check(env, capsys.readouterr().out.strip()).groups == frozenset()
    assert len(env.entries("CredentialIssued")) == 1
    assert main([*base, env.member_id, "--program", "NO-SUCH-PROGRAM"]) == 2
    # A program made this very second is in force for the wallet as for the server (the
    # wallet once judged at a time cut to the second, before the version's effective time).
    today = keys.utc_now().astimezone(programs.CHINA).date()
    rules = {
        "name": "骑手茶饮",
        "kind": "targeted",
        "period": {"from": today.isoformat(), "until": (today + timedelta(days=30)).isoformat()},
        "quota": {"count": 1, "per": "program"},
        "unit_value": 0,
        "eligibility": {"groups_any": ["delivery_rider"]},
    }
    env.services.sequencer.execute(
        lambda tx: programs.create_program(
            tx, SYSTEM, program="RIDER-TEA", owner="110000", rules=rules
        )
    )
    assert main([*base, env.member_id, "--program", "RIDER-TEA"]) == 0
    assert check(env, capsys.readouterr().out.strip()).groups == frozenset({"delivery_rider"})
    assert main([*base, env.member_id, "--disclose", "courier"]) == 2
    assert "no group courier" in capsys.readouterr().err
    assert main([*base, "AAAAAAAAAAAAAAAAAAAAAA", "--renew"]) == 1  # no such member
    assert main([*base, "not-a-member-at-all"]) == 2  # the wallet is another member's
