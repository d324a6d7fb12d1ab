"""A small world for redemption tests: a union tree, a member with a registered holder key (a
Python wallet), stations with device keys, and helpers to log stations in and build fresh QR
presentations. Used by the HTTP tests and the concurrency test against a real server."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

import keys
from api.app import create_app
from api.bootstrap import init_data_dir
from api.settings import Settings
from ledger import programs, stations, unions
from ledger.domain import SYSTEM
from ledger.vault import PersonalData
from verifier.credential import IssuedCredential, present
from verifier.wallet import Wallet

PASS = "redemption tests passphrase"
PERSON = PersonalData(name="测试骑手", id_number="11010519491231002X", phone="13912340009")
STATIONS = {
    # id: (kind, operating union)
    "ST-BJ-1": ("union_station", "110000"),
    "ST-BJ-2": ("union_station", "110105-0001"),
    "ST-TD-1": ("truck_driver_home", "110000"),
    "ST-SH-1": ("union_station", "310000"),
}
TREE = [
    ("100000", "national", None),
    ("110000", "provincial", "100000"),
    ("310000", "provincial", "100000"),
    ("110105-0001", "enterprise", "110000"),
    ("110105-0002", "enterprise", "110000"),
]


def rules(**overrides: Any) -> dict[str, Any]:
    """A universal program open today, once per member, 50 yuan, redeemable anywhere."""
    today = datetime.now(programs.CHINA).date()
    base: dict[str, Any] = {
        "name": "送清凉",
        "kind": "universal",
        "period": {
            "from": (today - timedelta(days=1)).isoformat(),
            "until": (today + timedelta(days=30)).isoformat(),
        },
        "quota": {"count": 1, "per": "program"},
        "unit_value": 5000,
        "max_quantity": 1,
        "budget": None,
    }
    base.update(overrides)
    return base


@dataclass
class Outbox:
    codes: dict[str, str] = field(default_factory=dict)

    def send(self, member_id: str, phone: str, code: str) -> None:
        self.codes[phone] = code


@dataclass
class World:
    app: FastAPI
    devices: dict[str, keys.PrivateKey]
    member_id: str = ""
    wallet: Wallet | None = None
    _challenges: itertools.count = field(default_factory=itertools.count)  # type: ignore[type-arg]

    @property
    def services(self) -> Any:
        return self.app.state.services

    def run(self, command: Any) -> Any:
        return self.services.sequencer.execute(command)

    def program(self, program: str, owner: str = "100000", **overrides: Any) -> None:
        self.run(
            lambda tx: programs.create_program(
                tx, SYSTEM, program=program, owner=owner, rules=rules(**overrides)
            )
        )

    def station_token(self, client: httpx.Client | Any, station: str) -> dict[str, str]:
        challenge = client.post("/v1/auth/station/challenge", json={"station_id": station}).json()[
            "challenge"
        ]
        message = f"unionledger-station-login/1\n{station}\n{challenge}".encode()
        answer = client.post(
            "/v1/auth/station/verify",
            json={
                "station_id": station,
                "challenge": challenge,
                "signature": keys.b64url_encode(self.devices[station].sign(message)),
            },
        )
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    def member_token(self, client: httpx.Client | Any) -> dict[str, str]:
        outbox = Outbox()
        self.services.auth.sender = outbox
        client.post("/v1/auth/otp/request", json={"phone": PERSON.phone})
        answer = client.post(
            "/v1/auth/otp/verify", json={"phone": PERSON.phone, "code": outbox.codes[PERSON.phone]}
        )
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    def register_holder(self, client: httpx.Client | Any) -> dict[str, Any]:
        holder = keys.PrivateKey.generate()
        answer = client.post(
            "/v1/members/me/credential",
            json={"holder_key": holder.public_key.to_jwk()},
            headers=self.member_token(client),
        )
        assert answer.status_code == 201, answer.text
        body: dict[str, Any] = answer.json()
        issued = IssuedCredential(
            keys.b64url_decode(body["credential"]),
            {g: keys.b64url_decode(d) for g, d in body["disclosures"].items()},
            bytes.fromhex(body["hash"]),
        )
        self.wallet = Wallet.from_issued(holder, issued)
        return body

    def qr(self, now: datetime | None = None) -> tuple[str, str]:
        """A fresh presentation and the challenge that makes it unique (base64url)."""
        assert self.wallet is not None
        challenge = next(self._challenges).to_bytes(4, "big")
        text = present(
            self.wallet.token,
            self.wallet._holder_key,  # the test wallet's own key
            disclosures=[],
            now=now or keys.utc_now(),
            challenge=challenge,
        )
        return text, keys.b64url_encode(challenge)

    def redeem_body(self, program: str, key: str, **extra: Any) -> dict[str, Any]:
        text, challenge = self.qr()
        return {
            "presentation": text,
            "challenge": challenge,
            "program": program,
            "quantity": 1,
            "idempotency_key": key,
            **extra,
        }


def build_world(tmp_path: Path, database_url: str) -> World:
    settings = Settings.load(
        data_dir=tmp_path / "data",
        environ={"UNIONLEDGER_KEY_PASSPHRASE": PASS, "UNIONLEDGER_DATABASE_URL": database_url},
    )
    now = keys.utc_now()
    init_data_dir(settings, now, kdf=keys.KdfParams.fastest())
    devices = {s: keys.PrivateKey.generate() for s in STATIONS}
    store = keys.KeyStore(settings.data_dir)
    with store.locked():  # device keys in the keyring, as `unionledger keys register` does
        ring = store.load(PASS)
        for station, device in devices.items():
            ring, _ = ring.register(
                keys.Role.STATION, device.public_key, now - timedelta(hours=1), scope=station
            )
        store.save(ring, PASS)
    app = create_app(settings)
    world = World(app, devices)
    for code, kind, parent in TREE:
        world.run(
            lambda tx, c=code, k=kind, p=parent: unions.create_union(
                tx, SYSTEM, code=c, name=f"工会{c}", kind=k, parent=p
            )
        )
    for station, (kind, union) in STATIONS.items():
        world.run(
            lambda tx, s=station, k=kind, u=union: stations.register_station(
                tx, SYSTEM, station=s, name=f"驿站{s}", kind=k, union=u
            )
        )
    world.member_id = world.run(
        lambda tx: world.services.members.enrol(
            tx, SYSTEM, union_code="110105-0001", person=PERSON, groups=["delivery_rider"]
        )
    ).member_id
    return world
