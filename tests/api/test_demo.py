"""The demo that `make run` serves: a realistic tree, members, and a working login per role."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import keys
from api import demo
from api.app import create_app
from api.bootstrap import DEMO_STATION, demo_station_key_file, init_data_dir
from api.settings import ConfigError, Settings
from ledger.db import make_engine
from ledger.projections import compare, default_projections
from ledger.schema import meta


def test_demo_seeds_once_and_every_role_can_log_in(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.load(data_dir=tmp_path / "demo", demo=True, environ={})
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    app = create_app(settings)
    services = app.state.services
    summary = demo.seed(services.engine, services.sequencer, services.members, services.keyring)
    assert summary is not None
    assert summary.unions == 1 + 31 + len(demo.LOCAL_UNIONS)
    assert 60 <= summary.redemptions <= 150
    assert summary.reversals >= 2
    assert summary.members == sum(n for n, _, _ in demo.MEMBERSHIP.values())
    assert (
        demo.seed(services.engine, services.sequencer, services.members, services.keyring) is None
    )
    text = demo.banner(summary, demo_station_key_file(settings))
    for username in demo.DEMO_PASSWORDS:
        assert username in text
    assert compare(services.engine, default_projections()) == []
    caplog.set_level(logging.INFO, logger="unionledger.otp")
    with TestClient(app) as client:
        national = client.get("/v1/unions/100000", headers=_login(client, "official-national"))
        assert national.json()["members_subtree"] == summary.members
        beijing = client.get("/v1/unions/110000", headers=_login(client, "official-beijing"))
        assert beijing.json()["name"] == "北京市总工会"
        assert client.get("/v1/unions/100000", headers=_login(client, "auditor")).status_code == 200
        # The member: a one-time code to the printed phone, read from the development sink.
        assert (
            client.post("/v1/auth/otp/request", json={"phone": summary.member_phone}).status_code
            == 202
        )
        code = caplog.records[-1].getMessage().rsplit(" ", 1)[-1]
        member = client.post(
            "/v1/auth/otp/verify", json={"phone": summary.member_phone, "code": code}
        )
        assert member.status_code == 200, member.text
        me = client.get(
            "/v1/members/me", headers={"Authorization": "Bearer " + member.json()["access_token"]}
        )
        assert me.json()["status"] == "active"
        # The member's entitlements: the national pack and the station services at least
        # (the first demo member is a Beijing delivery rider).
        entitled = client.get(
            "/v1/members/me/entitlements",
            headers={"Authorization": "Bearer " + member.json()["access_token"]},
        ).json()
        assert {"NAT-SONGQINGLIANG", "NAT-YIZHAN-WATER", "BJ-SONGQINGLIANG"} <= {
            e["program"] for e in entitled
        }
        assert "GD-SIJI-SHOWER" not in {e["program"] for e in entitled}  # Guangdong's
        _the_statistics_have_the_redemptions(client, summary)
        programs = client.get(
            "/v1/programs", headers=_login(client, "auditor"), params={"union": "440000"}
        ).json()
        assert {p["program"] for p in programs} >= {"GD-NUANXIN", "GD-SIJI-SHOWER"}
        # The station: sign the challenge with the demo device key.
        seed = bytes.fromhex(demo_station_key_file(settings).read_text().strip())
        challenge = client.post(
            "/v1/auth/station/challenge", json={"station_id": DEMO_STATION}
        ).json()["challenge"]
        signature = keys.PrivateKey.from_seed(seed).sign(
            b"unionledger-station-login/1\n" + DEMO_STATION.encode() + b"\n" + challenge.encode()
        )
        station = client.post(
            "/v1/auth/station/verify",
            json={
                "station_id": DEMO_STATION,
                "challenge": challenge,
                "signature": base64.urlsafe_b64encode(signature).rstrip(b"=").decode(),
            },
        )
        assert station.status_code == 200, station.text
    assert oct(demo_station_key_file(settings).stat().st_mode & 0o777) == "0o600"


def _the_statistics_have_the_redemptions(client: TestClient, summary: demo.DemoSummary) -> None:
    """The demo's redemptions, made through the real commands, are in the figures (for the
    auditor console): the national subtree counts them all, across programs and stations."""
    auditor = _login(client, "auditor")
    figures = client.get("/v1/stats/unions/100000", headers=auditor).json()
    total = figures["subtree"]["total"]
    assert total["redemptions"] == summary.redemptions
    assert total["reversals"] == summary.reversals
    assert total["value"] > total["reversed_value"] > 0
    assert len(figures["subtree"]["programs"]) >= 5
    assert sum(c["redemptions"] for c in figures["children"]) == summary.redemptions
    assert any(b["used"] > 0 for b in figures["budgets"])
    series = client.get("/v1/stats/unions/100000/series", headers=auditor).json()
    assert sum(d["redemptions"] for d in series["days"]) == summary.redemptions
    settlement = client.get("/v1/stats/settlement", headers=auditor).json()
    assert settlement["pairs"]
    assert settlement["net_total"] == 0
    statement = client.get("/v1/stats/stations/ST-DEMO-0001/statement", headers=auditor).json()
    assert statement["ledger"]["total"]["redemptions"] > 0
    # An official sees their subtree only: Beijing's part of the whole.
    beijing = client.get("/v1/stats/unions/110000", headers=_login(client, "official-beijing"))
    assert 0 < beijing.json()["subtree"]["total"]["redemptions"] < summary.redemptions


def _login(client: TestClient, username: str) -> dict[str, str]:
    _, _, password = demo.DEMO_PASSWORDS[username]
    r = client.post("/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": "Bearer " + r.json()["access_token"]}


def test_demo_without_the_shared_reference_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNIONLEDGER_SHARED_DATA", str(tmp_path / "nowhere"))
    settings = Settings.load(data_dir=tmp_path / "demo", demo=True, environ={})
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    app = create_app(settings)
    services = app.state.services
    try:
        summary = demo.seed(services.engine, services.sequencer, services.members)
        assert summary is not None
        assert summary.unions == 1 + 3 + len(demo.LOCAL_UNIONS)
    finally:
        services.sequencer.close()


def test_an_old_demo_database_is_refused_with_a_way_out(tmp_path: Path) -> None:
    settings = Settings.load(data_dir=tmp_path / "demo", demo=True, environ={})
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    engine = make_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(meta.update().where(meta.c.key == "schema_version").values(value="1"))
    finally:
        engine.dispose()
    with pytest.raises(ConfigError, match=r"delete .* and start again"):
        create_app(settings)


def test_serving_a_directory_made_by_init_demo_seeds_it(tmp_path: Path) -> None:
    """`unionledger init --demo` makes the national federation; `serve --demo` on that
    directory must still seed the demo (it used to see the tree and skip it, while printing
    the demo's logins), keeping the union that exists."""
    from api.cli import main

    data_dir = tmp_path / "demo"
    assert main(["init", "--data-dir", str(data_dir), "--demo"]) == 0
    settings = Settings.load(data_dir=data_dir, demo=True, environ={})
    app = create_app(settings)
    services = app.state.services
    summary = demo.seed(services.engine, services.sequencer, services.members, services.keyring)
    assert summary is not None
    assert summary.unions == 31 + len(demo.LOCAL_UNIONS)  # the national union was there
    assert summary.members == sum(n for n, _, _ in demo.MEMBERSHIP.values())
    assert compare(services.engine, default_projections()) == []
    services.sequencer.close()
