"""Members over HTTP: the flows an official uses, their errors, and no personal data leaking
into tables, the ledger export, responses to others, or the server log; nor the sensitive
group ``hardship`` into anything public (entries, tiles, the export)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select

import keys
from api.app import create_app
from api.bootstrap import init_data_dir
from api.settings import Settings
from ledger import unions
from ledger.accounts import PasswordCost, create_account
from ledger.domain import SYSTEM
from verifier.audit import write_export
from verifier.tiles import entries_path

PASS = "members api test passphrase"
# Recognisable personal data: valid numbers, unusual names (nothing else could contain them).
PEOPLE = [
    {
        "name": "欧阳独特甲",
        "id_number": "11010519491231002X",
        "phone": "13912340001",
        "employer": "独一无二的雇主甲",
    },
    {
        "name": "司马罕见乙",
        "id_number": "110101199003071233",
        "phone": "13912340002",
        "employer": "独一无二的雇主乙",
    },
]


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = Settings.load(
        data_dir=tmp_path / "data",
        environ={"UNIONLEDGER_KEY_PASSPHRASE": PASS, "UNIONLEDGER_DATABASE_URL": database_url},
    )
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    app = create_app(settings)
    services = app.state.services
    for code, kind, parent in [
        ("100000", "national", None),
        ("110000", "provincial", "100000"),
        ("310000", "provincial", "100000"),
        ("G-A", "enterprise", "110000"),
        ("G-B", "enterprise", "110000"),
        ("G-SH", "enterprise", "310000"),
    ]:
        services.sequencer.execute(
            lambda tx, c=code, k=kind, p=parent: unions.create_union(
                tx, SYSTEM, code=c, name=f"工会{c}", kind=k, parent=p
            )
        )
    with services.engine.begin() as conn:
        create_account(
            conn,
            username="official-bj",
            password="beijing password 1",
            role="official",
            scope="110000",
            now=0,
            cost=PasswordCost.fastest(),
        )
        create_account(
            conn,
            username="audit",
            password="auditor password 1",
            role="auditor",
            now=0,
            cost=PasswordCost.fastest(),
        )
    with TestClient(app, raise_server_exceptions=False) as client:
        headers = {}
        for user, password in (
            ("official-bj", "beijing password 1"),
            ("audit", "auditor password 1"),
        ):
            token = client.post("/v1/auth/login", json={"username": user, "password": password})
            headers[user.removeprefix("official-")] = token.json()["access_token"]
        yield client, headers


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_official_flow_over_http(env: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = env
    bj = auth(tokens["bj"])
    r = client.post(
        "/v1/members",
        headers=bj,
        json={"union": "G-A", "person": PEOPLE[0], "groups": ["delivery_rider"]},
    )
    assert r.status_code == 201, r.text
    mid = r.json()["member_id"]
    assert client.get(f"/v1/members/{mid}", headers=bj).json()["union"] == "G-A"
    assert client.get(f"/v1/members/{mid}/personal", headers=bj).json()["name"] == PEOPLE[0]["name"]
    found = client.post(
        "/v1/members/search", headers=bj, json={"id_number": PEOPLE[0]["id_number"]}
    )
    assert found.json()["member_id"] == mid
    assert (
        client.post(f"/v1/members/{mid}/transfer", headers=bj, json={"union": "G-B"}).status_code
        == 200
    )
    assert client.get("/v1/unions/G-B", headers=bj).json()["members_own"] == 1
    assert client.get("/v1/unions/110000", headers=bj).json()["members_subtree"] == 1
    page = client.get("/v1/members", headers=bj, params={"union": "110000"}).json()
    assert [m["member_id"] for m in page["items"]] == [mid]
    assert (
        client.post(f"/v1/members/{mid}/groups", headers=bj, json={"group": "hardship"}).status_code
        == 201
    )
    groups_official = {
        g["group"] for g in client.get(f"/v1/members/{mid}/groups", headers=bj).json()
    }
    groups_auditor = {
        g["group"]
        for g in client.get(f"/v1/members/{mid}/groups", headers=auth(tokens["audit"])).json()
    }
    assert groups_official == {"delivery_rider", "hardship"}
    assert groups_auditor == {"delivery_rider"}
    query = {"union": "110000", "group": "hardship"}
    listed = client.get("/v1/members", headers=bj, params=query).json()["items"]
    assert [m["member_id"] for m in listed] == [mid]
    refused = client.get("/v1/members", headers=auth(tokens["audit"]), params=query)
    assert (refused.status_code, refused.json()["type"]) == (403, "/problems/forbidden")
    assert client.post(f"/v1/members/{mid}/leave", headers=bj).status_code == 200
    history = [h["event"] for h in client.get(f"/v1/members/{mid}/history", headers=bj).json()]
    assert history == ["MemberEnrolled", "MemberTransferred", "MemberLeft"]


@pytest.mark.parametrize(
    ("body", "status", "slug"),
    [
        (
            {"union": "G-A", "person": {**PEOPLE[1], "id_number": "110101199003071234"}},
            422,
            "invalid-id-number",
        ),
        ({"union": "G-A", "person": {**PEOPLE[1], "phone": "1391234"}}, 422, "invalid-phone"),
        ({"union": "NOPE", "person": PEOPLE[1]}, 404, "unknown-union"),
        ({"union": "G-SH", "person": PEOPLE[1]}, 404, "unknown-union"),
        ({"union": "G-A", "person": PEOPLE[1], "groups": ["astronaut"]}, 422, "invalid-group"),
        ({"union": "G-A", "person": {**PEOPLE[1], "extra": 1}}, 422, "validation-error"),
    ],
)
def test_bad_input_is_a_specific_problem_and_writes_nothing(
    env: tuple[TestClient, dict[str, str]],
    body: dict,
    status: int,
    slug: str,  # type: ignore[type-arg]
) -> None:
    client, tokens = env
    size = client.app.state.services.reader.size()  # type: ignore[attr-defined]
    r = client.post("/v1/members", headers=auth(tokens["bj"]), json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == f"/problems/{slug}"
    for value in PEOPLE[1].values():
        assert value not in r.text  # a problem never echoes personal data
    assert client.app.state.services.reader.size() == size  # type: ignore[attr-defined]


def _stored(client: TestClient) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, sorted: what "nothing written" compares. Checkpoints are left
    out: the service signs them on its own schedule, whatever the requests."""
    engine = client.app.state.services.engine  # type: ignore[attr-defined]
    metadata = MetaData()
    metadata.reflect(engine)
    with engine.connect() as conn:
        return {
            name: sorted((tuple(row) for row in conn.execute(select(table))), key=repr)
            for name, table in metadata.tables.items()
            if name != "log_checkpoints"
        }


def _refused(
    client: TestClient, method: str, path: str, headers: dict[str, str], status: int, slug: str
) -> None:
    """The request ``method path`` is answered with the problem ``slug`` and writes nothing:
    not one ledger entry, not one row of any table."""
    services = client.app.state.services  # type: ignore[attr-defined]
    size, before = services.reader.size(), _stored(client)
    body = {"union": "G-A", "person": PEOPLE[0]} if path == "/v1/members" else None
    if path.endswith("/transfer"):
        body = {"union": "G-A"}
    r = client.request(method, path, headers=headers, json=body)
    assert (r.status_code, r.headers["content-type"]) == (status, "application/problem+json"), (
        r.text
    )
    problem = r.json()
    assert problem["type"] == f"/problems/{slug}"
    assert problem["status"] == status
    for value in PEOPLE[0].values():
        assert value not in r.text
    assert services.reader.size() == size
    assert _stored(client) == before


def test_duplicates_and_repeated_actions(env: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = env
    bj = auth(tokens["bj"])
    mid = client.post("/v1/members", headers=bj, json={"union": "G-A", "person": PEOPLE[0]}).json()[
        "member_id"
    ]
    # The same person again, in the same union or another one (the body names G-A).
    _refused(client, "POST", "/v1/members", bj, 409, "duplicate-person")
    again = client.post("/v1/members", headers=bj, json={"union": "G-B", "person": PEOPLE[0]})
    assert (again.status_code, again.json()["type"]) == (409, "/problems/duplicate-person")
    assert again.headers["content-type"] == "application/problem+json"
    # A transfer to the union the member is in already.
    _refused(client, "POST", f"/v1/members/{mid}/transfer", bj, 409, "transfer-to-same-union")
    assert client.get(f"/v1/members/{mid}", headers=bj).json()["union"] == "G-A"
    history = [h["event"] for h in client.get(f"/v1/members/{mid}/history", headers=bj).json()]
    assert history == ["MemberEnrolled"]
    # Leaving twice.
    assert client.post(f"/v1/members/{mid}/leave", headers=bj).status_code == 200
    _refused(client, "POST", f"/v1/members/{mid}/leave", bj, 409, "wrong-member-status")
    history = [h["event"] for h in client.get(f"/v1/members/{mid}/history", headers=bj).json()]
    assert history == ["MemberEnrolled", "MemberLeft"]
    rejoined = client.post("/v1/members", headers=bj, json={"union": "G-B", "person": PEOPLE[0]})
    assert rejoined.json()["member_id"] == mid
    # Once a member again, the same person is a duplicate again.
    _refused(client, "POST", "/v1/members", bj, 409, "duplicate-person")


def test_apply_with_join_code_and_erase(env: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = env
    bj = auth(tokens["bj"])
    code = client.get("/v1/unions/G-A", headers=bj).json()["join_code"]
    assert client.get(f"/v1/join/{code}").json()["code"] == "G-A"
    applied = client.post(f"/v1/join/{code}", json={"person": PEOPLE[1]})
    assert applied.status_code == 201, applied.text
    mid = applied.json()["member_id"]
    assert applied.json()["status"] == "pending"
    assert client.post(f"/v1/members/{mid}/approve", headers=bj).status_code == 200
    assert client.post(f"/v1/members/{mid}/erase", headers=bj).status_code == 200
    gone = client.get(f"/v1/members/{mid}/personal", headers=bj)
    assert (gone.status_code, gone.json()["type"]) == (409, "/problems/member-erased")
    search = client.post(
        "/v1/members/search", headers=bj, json={"id_number": PEOPLE[1]["id_number"]}
    )
    assert search.status_code == 404
    assert client.get("/v1/join/not-a-code").status_code == 404


def test_personal_data_appears_nowhere_but_the_vault(
    env: tuple[TestClient, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    client, tokens = env
    bj = auth(tokens["bj"])
    caplog.set_level(logging.DEBUG)
    ids = []
    for person, groups in zip(PEOPLE, (["courier", "hardship"], ["courier"]), strict=True):
        body = {"union": "G-A", "person": person, "groups": groups}
        ids.append(client.post("/v1/members", headers=bj, json=body).json()["member_id"])
        client.post("/v1/members", headers=bj, json={"union": "G-A", "person": person})  # dup
        client.post("/v1/auth/otp/request", json={"phone": person["phone"]})
    # The sensitive group, added and ended later too: never in clear on the ledger.
    added = client.post(
        f"/v1/members/{ids[1]}/groups",
        headers=bj,
        json={"group": "hardship", "start": "2026-01-05"},
    )
    assert added.status_code == 201, added.text
    ended = client.post(
        f"/v1/members/{ids[1]}/groups/hardship/end", headers=bj, json={"until": "2026-03-01"}
    )
    assert ended.status_code == 200, ended.text
    seen = client.get(f"/v1/members/{ids[1]}/groups", headers=bj).json()
    assert {"group": "hardship", "start": "2026-01-05", "end": "2026-03-01"} in seen
    client.post(f"/v1/members/{ids[0]}/erase", headers=bj)
    auditor_view = client.get(f"/v1/members/{ids[1]}", headers=auth(tokens["audit"])).text
    services = client.app.state.services  # type: ignore[attr-defined]
    services.sequencer.checkpoint()
    export = io.BytesIO()
    size = services.reader.size()
    write_export(
        export, services.reader.latest_checkpoint().note, iter(services.reader.entries(0, size))
    )
    entries = client.get("/v1/log/entries", params={"start": 0, "end": size})
    tile = client.get(f"/tlog/{entries_path(0, min(size, 256))}")
    assert entries.status_code == tile.status_code == 200
    public = {"export": export.getvalue(), "entries": entries.content, "tile": tile.content}
    for where, haystack in public.items():
        assert b"hardship" not in haystack, f"the sensitive group found in {where}"
    reflected = MetaData()
    reflected.reflect(services.engine)
    table_bytes = []
    with services.engine.connect() as conn:
        for table in reflected.sorted_tables:
            for row in conn.execute(select(table)).all():
                for value in row:
                    table_bytes.append(value if isinstance(value, bytes) else str(value).encode())
    haystacks = {
        "tables": b"\n".join(table_bytes),
        **public,
        "log": "\n".join(r.getMessage() for r in caplog.records).encode(),
        "auditor": auditor_view.encode(),
    }
    for person in PEOPLE:
        for field_name, value in person.items():
            for where, haystack in haystacks.items():
                assert value.encode() not in haystack, f"{field_name} found in {where}"


def test_the_public_join_form_is_throttled(env: tuple[TestClient, dict[str, str]]) -> None:
    # It tells an applicant that an ID number already holds a membership: with no limit it
    # would be an oracle for who is a member.
    client, tokens = env
    code = client.get("/v1/unions/G-A", headers=auth(tokens["bj"])).json()["join_code"]
    answers = [
        client.post(f"/v1/join/{code}", json={"person": PEOPLE[0]}).status_code for _ in range(21)
    ]
    assert answers[0] == 201
    assert set(answers[1:20]) == {409}  # the same person again: duplicate-person
    refused = client.post(f"/v1/join/{code}", json={"person": PEOPLE[1]})
    assert refused.status_code == 429
    assert refused.json()["type"] == "/problems/too-many-requests"
    assert int(refused.headers["retry-after"]) > 0
