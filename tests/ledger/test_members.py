"""Members on SQLite and PostgreSQL: join, apply, transfer, leave, groups, erasure, privacy."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, inspect, select

from keys import PrivateKey
from ledger import unions
from ledger.domain import SYSTEM, Actor, Forbidden, Role
from ledger.identity import synthetic_id_number
from ledger.members import (
    BadGroup,
    DuplicatePerson,
    DuplicatePhone,
    Members,
    MembersProjection,
    SameUnion,
    UnknownJoinCode,
    UnknownMember,
    WrongMemberStatus,
    get_member,
    history_of,
    member_groups,
)
from ledger.projections import EventCounts, compare, rebuild
from ledger.sequencer import Tx
from ledger.vault import Erased, PersonalData, Vault, vault
from tests.ledger.conftest import Ledger, open_ledger
from tests.ledger.test_processes import ReaderSource
from verifier.audit import audit
from verifier.entry import parse_entry

PROJECTIONS = [EventCounts(), unions.UnionsProjection(), MembersProjection()]
OFFICIAL_BJ = Actor(Role.OFFICIAL, "acct-bj", "110000")
OFFICIAL_SH = Actor(Role.OFFICIAL, "acct-sh", "310000")
AUDITOR = Actor(Role.AUDITOR, "acct-audit")

TREE = [
    ("100000", "中华全国总工会", "national", None),
    ("110000", "北京市总工会", "provincial", "100000"),
    ("310000", "上海市总工会", "provincial", "100000"),
    ("110100", "北京市朝阳区总工会", "county", "110000"),
    ("110101", "望京街道总工会", "township", "110100"),
    ("G-RIDERS", "某外卖平台骑手工会", "enterprise", "110101"),
    ("G-FACTORY", "某工厂工会", "enterprise", "110101"),
    ("G-SH-LOGI", "某物流公司工会", "enterprise", "310000"),
]


@dataclass
class World:
    ledger: Ledger
    members: Members
    rng: random.Random

    def run(self, command):  # type: ignore[no-untyped-def]
        return self.ledger.sequencer.execute(command)

    def person(self, name: str = "张三", phone: str | None = None) -> PersonalData:
        return PersonalData(
            name=name,
            id_number=synthetic_id_number(self.rng),
            phone=phone or f"13{self.rng.randrange(10**9):09d}",
            employer="某外卖平台",
        )

    def enrol(self, union: str = "G-RIDERS", actor: Actor = OFFICIAL_BJ, **kw):  # type: ignore[no-untyped-def]
        person = kw.pop("person", None) or self.person()
        return self.run(
            lambda tx: self.members.enrol(tx, actor, union_code=union, person=person, **kw)
        )

    def size(self) -> int:
        return self.ledger.reader.size()

    def union(self, code: str) -> unions.UnionRow:
        with self.ledger.engine.connect() as conn:
            row = unions.get_union(conn, code)
        assert row is not None
        return row


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    lg = open_ledger(database_url, PrivateKey.generate(), checkpoint_interval=0.0)
    lg.sequencer._projections[:] = PROJECTIONS  # the domain projections, as the app wires them
    transfers: list[tuple[str, str, str]] = []
    members = Members(
        Vault(os.urandom(32)),
        os.urandom(32),
        transfer_hooks=[lambda tx, actor, m, a, b: transfers.append((m, a, b))],
    )
    w = World(lg, members, random.Random(42))
    for code, name, kind, parent in TREE:
        w.run(
            lambda tx, c=code, n=name, k=kind, p=parent: unions.create_union(
                tx, SYSTEM, code=c, name=n, kind=k, parent=p
            )
        )
    w.transfers = transfers  # type: ignore[attr-defined]
    try:
        yield w
    finally:
        lg.sequencer.close()
        lg.writer.dispose()
        lg.engine.dispose()


def test_enrol_counts_up_the_tree_and_keeps_personal_data_in_the_vault(world: World) -> None:
    person = world.person("李四")
    member = world.enrol(person=person, groups=["delivery_rider"])
    assert member.status == "active"
    assert world.union("G-RIDERS").members_own == 1
    assert world.union("110000").members_subtree == 1
    assert world.union("100000").members_subtree == 1
    with world.ledger.engine.connect() as conn:
        assert world.members.personal_data(conn, OFFICIAL_BJ, member.member_id) == person
        assert [g.group for g in world.members.groups_of(conn, OFFICIAL_BJ, member.member_id)] == [
            "delivery_rider"
        ]
        assert world.members.find_by_id_number(conn, OFFICIAL_BJ, person.id_number) == member
        with pytest.raises(Forbidden):
            world.members.personal_data(conn, AUDITOR, member.member_id)
        with pytest.raises(UnknownMember):
            world.members.personal_data(conn, OFFICIAL_SH, member.member_id)
        assert world.members.member_for_phone(conn, person.phone) == member.member_id


def test_refusals_write_nothing(world: World) -> None:
    person = world.person()
    world.enrol(person=person)
    before = world.size()
    with pytest.raises(DuplicatePerson):
        world.enrol(
            person=world.person()
            if False
            else PersonalData(name="别人", id_number=person.id_number, phone="13900000001")
        )
    with pytest.raises(DuplicatePhone):
        world.enrol(person=world.person(phone=person.phone))
    with pytest.raises(unions.UnknownUnion):
        world.enrol(union="G-SH-LOGI")  # outside the Beijing official's subtree
    with pytest.raises(Forbidden):
        world.enrol(actor=AUDITOR)
    assert world.size() == before
    with world.ledger.engine.connect() as conn:
        from ledger.vault import vault

        assert len(conn.execute(select(vault)).all()) == 1


def _everything(world: World) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table (checkpoints aside: they follow their own schedule)."""
    reflected = MetaData()
    reflected.reflect(world.ledger.engine)
    with world.ledger.engine.connect() as conn:
        return {
            t.name: sorted((tuple(r) for r in conn.execute(select(t))), key=repr)
            for t in reflected.sorted_tables
            if t.name != "log_checkpoints"
        }


def _refused_and_nothing_written(
    world: World,
    error: type[Exception],
    code: str,
    command: Callable[[Tx], object],
    person: PersonalData,
) -> None:
    size, before = world.size(), _everything(world)
    with pytest.raises(error) as raised:
        world.run(command)
    assert getattr(raised.value, "code", None) == code
    for value in (person.name, person.id_number, person.phone):
        assert value not in str(raised.value)  # no personal data in the message either
    assert world.size() == size
    assert _everything(world) == before


def test_duplicate_same_union_and_leave_twice_write_nothing(world: World) -> None:
    person = world.person("赵六")
    mid = world.enrol(person=person).member_id
    other = PersonalData(name="别人", id_number=person.id_number, phone="13900000002")
    for union in ("G-RIDERS", "G-FACTORY"):
        _refused_and_nothing_written(
            world,
            DuplicatePerson,
            "duplicate-person",
            lambda tx, u=union: world.members.enrol(tx, OFFICIAL_BJ, union_code=u, person=other),
            person,
        )
    join_code = world.union("G-FACTORY").join_code
    _refused_and_nothing_written(
        world,
        DuplicatePerson,
        "duplicate-person",
        lambda tx: world.members.apply(tx, join_code=join_code, person=other),
        person,
    )
    _refused_and_nothing_written(
        world,
        SameUnion,
        "transfer-to-same-union",
        lambda tx: world.members.transfer(tx, OFFICIAL_BJ, mid, "G-RIDERS"),
        person,
    )
    assert world.transfers == []  # type: ignore[attr-defined]  # the hook did not run either
    world.run(lambda tx: world.members.leave(tx, OFFICIAL_BJ, mid))
    _refused_and_nothing_written(
        world,
        WrongMemberStatus,
        "wrong-member-status",
        lambda tx: world.members.leave(tx, OFFICIAL_BJ, mid),
        person,
    )
    with world.ledger.engine.connect() as conn:
        events = [h["event"] for h in history_of(conn, OFFICIAL_BJ, mid)]
    assert events == ["MemberEnrolled", "MemberLeft"]
    assert compare(world.ledger.engine, PROJECTIONS) == []


def test_transfer_leave_and_rejoin(world: World) -> None:
    person = world.person()
    member = world.enrol(person=person)
    mid = member.member_id
    world.run(lambda tx: world.members.transfer(tx, OFFICIAL_BJ, mid, "G-FACTORY"))
    assert world.transfers == [(mid, "G-RIDERS", "G-FACTORY")]  # type: ignore[attr-defined]
    assert world.union("G-RIDERS").members_own == 0
    assert world.union("G-FACTORY").members_own == 1
    with pytest.raises(SameUnion):
        world.run(lambda tx: world.members.transfer(tx, OFFICIAL_BJ, mid, "G-FACTORY"))
    with pytest.raises(unions.UnknownUnion):
        world.run(lambda tx: world.members.transfer(tx, OFFICIAL_BJ, mid, "G-SH-LOGI"))
    # The national federation's official can move a member across provinces.
    national = Actor(Role.OFFICIAL, "acct-national", "100000")
    world.run(lambda tx: world.members.transfer(tx, national, mid, "G-SH-LOGI"))
    with pytest.raises(UnknownMember):  # now outside Beijing
        world.run(lambda tx: world.members.leave(tx, OFFICIAL_BJ, mid))
    world.run(lambda tx: world.members.leave(tx, OFFICIAL_SH, mid))
    with pytest.raises(WrongMemberStatus):
        world.run(lambda tx: world.members.leave(tx, OFFICIAL_SH, mid))
    assert world.union("100000").members_subtree == 0
    again = world.enrol(person=person, union="G-RIDERS")  # re-join: the same pseudonym
    assert again.member_id == mid
    assert again.status == "active"
    with world.ledger.engine.connect() as conn:
        events = [h["event"] for h in history_of(conn, OFFICIAL_BJ, mid)]
    assert events == [
        "MemberEnrolled",
        "MemberTransferred",
        "MemberTransferred",
        "MemberLeft",
        "MemberRejoined",
    ]


def test_apply_with_a_join_code_and_approval(world: World) -> None:
    riders = world.union("G-RIDERS")
    applicant = world.run(
        lambda tx: world.members.apply(tx, join_code=riders.join_code, person=world.person())
    )
    assert applicant.status == "pending"
    assert world.union("G-RIDERS").members_own == 0
    world.run(lambda tx: world.members.approve(tx, OFFICIAL_BJ, applicant.member_id))
    assert world.union("G-RIDERS").members_own == 1
    with pytest.raises(WrongMemberStatus):
        world.run(lambda tx: world.members.approve(tx, OFFICIAL_BJ, applicant.member_id))
    with pytest.raises(UnknownJoinCode):
        world.run(lambda tx: world.members.apply(tx, join_code="nope", person=world.person()))
    world.run(lambda tx: unions.set_join_policy(tx, SYSTEM, code="G-FACTORY", auto_approve=True))
    factory = world.union("G-FACTORY")
    auto = world.run(
        lambda tx: world.members.apply(tx, join_code=factory.join_code, person=world.person())
    )
    assert auto.status == "active"


def test_groups_with_dates_and_the_sensitive_one(world: World) -> None:
    mid = world.enrol().member_id
    world.run(lambda tx: world.members.add_group(tx, OFFICIAL_BJ, mid, "hardship", "2026-01-01"))
    world.run(lambda tx: world.members.add_group(tx, OFFICIAL_BJ, mid, "courier", "2026-02-01"))
    world.run(lambda tx: world.members.end_group(tx, OFFICIAL_BJ, mid, "courier", "2026-06-01"))
    with world.ledger.engine.connect() as conn:
        seen = {g.group for g in world.members.groups_of(conn, OFFICIAL_BJ, mid)}
        assert seen == {"hardship", "courier"}
        assert {g.group for g in world.members.groups_of(conn, AUDITOR, mid)} == {"courier"}
        assert {
            g.group for g in world.members.groups_of(conn, OFFICIAL_BJ, mid, on="2026-07-01")
        } == {"hardship"}
        assert {
            g.group for g in world.members.groups_of(conn, OFFICIAL_BJ, mid, on="2026-03-01")
        } == {
            "hardship",
            "courier",
        }
        member = Actor(Role.MEMBER, mid, mid)
        assert "hardship" in {g.group for g in world.members.groups_of(conn, member, mid)}
        with pytest.raises(Forbidden):
            world.members.list_members(conn, AUDITOR, union_code="100000", group="hardship")
        found = world.members.list_members(conn, OFFICIAL_BJ, union_code="110000", group="hardship")
        assert [m.member_id for m in found] == ([mid] if _today() >= "2026-01-01" else [])
    from ledger.members import BadGroup

    with pytest.raises(BadGroup):
        world.run(lambda tx: world.members.add_group(tx, OFFICIAL_BJ, mid, "hardship"))
    with pytest.raises(BadGroup):
        world.run(lambda tx: world.members.add_group(tx, OFFICIAL_BJ, mid, "astronaut"))
    with pytest.raises(BadGroup):
        world.run(
            lambda tx: world.members.end_group(tx, OFFICIAL_BJ, mid, "hardship", "2025-01-01")
        )


def _today() -> str:
    """Today's UTC date, as the commands and the member listing take it."""
    from datetime import UTC, datetime

    return datetime.now(UTC).date().isoformat()


def test_erasure_shreds_personal_data_and_the_ledger_still_verifies(world: World) -> None:
    person = world.person("王五")
    mid = world.enrol(person=person).member_id
    world.run(lambda tx: world.members.erase(tx, OFFICIAL_BJ, mid))
    with world.ledger.engine.connect() as conn:
        with pytest.raises(Erased):
            world.members.personal_data(conn, OFFICIAL_BJ, mid)
        with pytest.raises(UnknownMember):
            world.members.find_by_id_number(conn, OFFICIAL_BJ, person.id_number)
        assert world.members.member_for_phone(conn, person.phone) is None
        assert get_member(conn, mid).status == "erased"  # type: ignore[union-attr]
    assert world.union("G-RIDERS").members_own == 0
    with pytest.raises(WrongMemberStatus):
        world.run(lambda tx: world.members.erase(tx, OFFICIAL_BJ, mid))
    world.ledger.sequencer.checkpoint()
    assert audit(ReaderSource(world.ledger.reader), world.ledger.verifier).entries == world.size()


def test_no_personal_data_in_any_table_or_the_ledger(world: World) -> None:
    people = [
        PersonalData(
            name=f"测试名字{i}甲乙",
            id_number=synthetic_id_number(world.rng),
            phone=f"1391234{i:04d}",
            employer=f"很特别的雇主{i}",
        )
        for i in range(5)
    ]
    ids = [world.enrol(person=p).member_id for p in people]
    world.run(lambda tx: world.members.erase(tx, OFFICIAL_BJ, ids[0]))
    needles = []
    for p in people:
        needles += [p.name, p.id_number, p.phone, p.employer or ""]
    raw_needles = [n.encode("utf-8") for n in needles]
    engine = world.ledger.engine
    reflected = MetaData()
    reflected.reflect(engine)
    with engine.connect() as conn:
        for table in reflected.sorted_tables:
            for row in conn.execute(select(table)).all():
                for value in row:
                    blob = value if isinstance(value, bytes) else str(value).encode("utf-8")
                    for needle in raw_needles:
                        assert needle not in blob, (table.name, needle.decode())
    for data in world.ledger.reader.entries(0, world.size()):
        for needle in raw_needles:
            assert needle not in data
    assert "vault" in inspect(engine).get_table_names()


def test_rebuild_reproduces_the_member_tables(world: World) -> None:
    mid = world.enrol().member_id
    world.run(lambda tx: world.members.transfer(tx, OFFICIAL_BJ, mid, "G-FACTORY"))
    world.run(lambda tx: world.members.add_group(tx, OFFICIAL_BJ, mid, "female_worker"))
    world.enrol()
    erased = world.enrol().member_id
    world.run(lambda tx: world.members.erase(tx, OFFICIAL_BJ, erased))
    assert compare(world.ledger.engine, PROJECTIONS) == []
    rebuild(world.ledger.writer, PROJECTIONS)
    assert compare(world.ledger.engine, PROJECTIONS) == []
    assert world.union("110000").members_subtree == 2


def test_commands_in_one_batch_see_each_other(world: World) -> None:
    person = world.person()

    def twice(tx: Tx) -> None:
        world.members.enrol(tx, OFFICIAL_BJ, union_code="G-RIDERS", person=person)
        world.members.enrol(tx, OFFICIAL_BJ, union_code="G-FACTORY", person=person)

    before = world.size()
    from ledger.errors import CommandFailed

    with pytest.raises((DuplicatePerson, CommandFailed)):
        world.run(twice)
    assert world.size() == before  # the whole command was rolled back


def test_rejoin_keeps_open_groups_and_clears_the_leave_date(world: World) -> None:
    person = world.person()
    mid = world.enrol(person=person, groups=["courier"]).member_id
    world.run(lambda tx: world.members.leave(tx, OFFICIAL_BJ, mid))
    again = world.enrol(person=person, groups=["courier", "female_worker"])  # same day
    assert again.member_id == mid
    assert again.left_at is None
    with world.ledger.engine.connect() as conn:
        spans = world.members.groups_of(conn, OFFICIAL_BJ, mid)
    assert sorted((s.group, s.end) for s in spans) == [("courier", None), ("female_worker", None)]
    riders = world.union("G-RIDERS")
    world.run(lambda tx: world.members.leave(tx, OFFICIAL_BJ, mid))
    world.run(lambda tx: world.members.apply(tx, join_code=riders.join_code, person=person))
    world.run(lambda tx: world.members.approve(tx, OFFICIAL_BJ, mid))
    with world.ledger.engine.connect() as conn:
        assert get_member(conn, mid).left_at is None  # type: ignore[union-attr]


# -- the sensitive group: sealed on the ledger ----------------------------------------------------

NATIONAL = Actor(Role.OFFICIAL, "acct-national", "100000")
OFFICIAL_FACTORY = Actor(Role.OFFICIAL, "acct-factory", "G-FACTORY")  # a sibling union


def entries(world: World) -> list[bytes]:
    size = world.size()
    return [
        e for s in range(0, size, 1000) for e in world.ledger.reader.entries(s, min(size, s + 1000))
    ]


def bodies(world: World, type_: str) -> list[dict]:  # type: ignore[type-arg]
    parsed = [parse_entry(e) for e in entries(world)]
    return [dict(e.body) for e in parsed if e.type == type_]


def spans(
    world: World, actor: Actor, mid: str, on: str | None = None
) -> list[tuple[str, str, str | None]]:
    with world.ledger.engine.connect() as conn:
        return [(s.group, s.start, s.end) for s in world.members.groups_of(conn, actor, mid, on=on)]


def test_hardship_never_reaches_the_ledger_in_clear(world: World) -> None:
    today = _today()
    poor = world.enrol(groups=["delivery_rider", "hardship"]).member_id
    plain = world.enrol(groups=["delivery_rider"]).member_id
    world.run(lambda tx: world.members.add_group(tx, OFFICIAL_BJ, plain, "hardship", "2026-03-01"))
    world.run(lambda tx: world.members.end_group(tx, OFFICIAL_BJ, plain, "hardship", "2026-09-01"))
    world.run(lambda tx: world.members.add_group(tx, OFFICIAL_BJ, plain, "courier", "2026-04-01"))

    # (a) Not in any entry; enrolments with and without hardship look alike.
    for data in entries(world):
        assert b"hardship" not in data
    enrolled = {b["member"]: b for b in bodies(world, "MemberEnrolled")}
    assert (
        set(enrolled[poor])
        == set(enrolled[plain])
        == {
            "member",
            "union",
            "id_hash",
            "groups",
            "sealed",
        }
    )
    assert enrolled[poor]["groups"] == enrolled[plain]["groups"] == ["delivery_rider"]
    changed = bodies(world, "MemberSealedGroupsChanged")
    assert [set(b) for b in changed] == [{"member", "sealed"}] * 2
    lengths = {len(b["sealed"]) for b in [*enrolled.values(), *changed]}
    assert lengths == {395}  # base64url of 24 + 256 + 16 bytes, whatever the state holds
    assert [b["group"] for b in bodies(world, "MemberGroupAdded")] == ["courier"]

    # (b) The member's own chain of officials sees the spans with their dates; nobody else.
    assert spans(world, OFFICIAL_BJ, poor) == [
        ("delivery_rider", today, None),
        ("hardship", today, None),
    ]
    assert spans(world, NATIONAL, plain) == [
        ("courier", "2026-04-01", None),
        ("delivery_rider", today, None),
        ("hardship", "2026-03-01", "2026-09-01"),
    ]
    assert spans(world, Actor(Role.MEMBER, plain, plain), plain)[2][0] == "hardship"
    assert [g for g, _, _ in spans(world, AUDITOR, plain)] == ["courier", "delivery_rider"]
    assert [g for g, _, _ in spans(world, AUDITOR, poor)] == ["delivery_rider"]
    with pytest.raises(UnknownMember):
        spans(world, OFFICIAL_SH, poor)
    with pytest.raises(UnknownMember):
        spans(world, OFFICIAL_FACTORY, poor)  # a sibling union is not the member's chain
    assert spans(world, OFFICIAL_BJ, plain, on="2026-05-01")[-1] == (
        "hardship",
        "2026-03-01",
        "2026-09-01",
    )
    with world.ledger.engine.connect() as conn:
        assert world.members.active_groups(conn, poor, today) == ["delivery_rider", "hardship"]
        assert world.members.active_groups(conn, plain, "2026-05-01") == ["courier", "hardship"]
        assert world.members.active_groups(conn, plain, date(2026, 9, 1)) == ["courier"]
        listed = world.members.list_members(
            conn, OFFICIAL_BJ, union_code="110000", group="hardship"
        )
        assert [m.member_id for m in listed] == [poor]
        with pytest.raises(Forbidden):
            world.members.list_members(conn, AUDITOR, union_code="110000", group="hardship")
        with pytest.raises(unions.UnknownUnion):
            world.members.list_members(conn, OFFICIAL_SH, union_code="110000", group="hardship")

    # Duplicates and impossible ends are refused like for any group, and write nothing.
    before = world.size()
    with pytest.raises(BadGroup):
        world.run(lambda tx: world.members.add_group(tx, OFFICIAL_BJ, poor, "hardship"))
    with pytest.raises(BadGroup):
        world.run(lambda tx: world.members.end_group(tx, OFFICIAL_BJ, plain, "hardship"))
    with pytest.raises(BadGroup):
        world.run(lambda tx: world.members.end_group(tx, OFFICIAL_BJ, poor, "hardship", today))
    with pytest.raises(UnknownMember):
        world.run(lambda tx: world.members.add_group(tx, OFFICIAL_SH, plain, "hardship"))
    assert world.size() == before

    # (c) The projections rebuild from the chain alone, without the vault.
    assert compare(world.ledger.engine, PROJECTIONS) == []
    rebuild(world.ledger.writer, PROJECTIONS)
    assert compare(world.ledger.engine, PROJECTIONS) == []
    assert spans(world, OFFICIAL_BJ, poor)[-1] == ("hardship", today, None)
    with world.ledger.engine.connect() as conn:
        assert "hardship" not in set(conn.execute(select(member_groups.c.grp)).scalars())

    # (e) A personal-data update rotates the data key but not the ledger sealing key.
    with world.ledger.engine.connect() as conn:
        key_before = conn.execute(
            select(vault.c.ledger_key).where(vault.c.member_id == poor)
        ).scalar()
    world.run(
        lambda tx: world.members.vault.put(
            tx.execute, poor, world.person("赵六"), "2026-12-01T00:00:00Z"
        )
    )
    with world.ledger.engine.connect() as conn:
        key_after = conn.execute(
            select(vault.c.ledger_key).where(vault.c.member_id == poor)
        ).scalar()
    assert key_after == key_before
    assert spans(world, OFFICIAL_BJ, poor)[-1] == ("hardship", today, None)

    # (d) Erasure shreds the sealing key: the spans are gone for everybody, the chain verifies.
    world.run(lambda tx: world.members.erase(tx, OFFICIAL_BJ, poor))
    for actor in (OFFICIAL_BJ, NATIONAL, SYSTEM, AUDITOR):
        assert [g for g, _, _ in spans(world, actor, poor)] == ["delivery_rider"]
    with world.ledger.engine.connect() as conn:
        assert world.members.active_groups(conn, poor, today) == ["delivery_rider"]
        assert world.members.list_members(conn, SYSTEM, union_code="100000", group="hardship") == []
        assert (
            conn.execute(select(vault.c.ledger_key).where(vault.c.member_id == poor)).scalar()
            is None
        )
    with pytest.raises(BadGroup):
        world.run(lambda tx: world.members.end_group(tx, OFFICIAL_BJ, poor, "hardship"))
    assert compare(world.ledger.engine, PROJECTIONS) == []
    world.ledger.sequencer.checkpoint()
    assert audit(ReaderSource(world.ledger.reader), world.ledger.verifier).entries == world.size()


def test_rejoining_keeps_an_open_hardship_span_and_reopens_an_ended_one(world: World) -> None:
    today = _today()
    person = world.person()
    mid = world.enrol(person=person, groups=["hardship"]).member_id
    world.run(lambda tx: world.members.leave(tx, OFFICIAL_BJ, mid))
    before = len(bodies(world, "MemberSealedGroupsChanged"))
    world.enrol(person=person, groups=["hardship", "courier"])  # re-join: vault.put again
    assert len(bodies(world, "MemberSealedGroupsChanged")) == before  # still open: unchanged
    assert spans(world, OFFICIAL_BJ, mid) == [("courier", today, None), ("hardship", today, None)]
    world.run(lambda tx: world.members.end_group(tx, OFFICIAL_BJ, mid, "hardship", "2099-01-01"))
    world.run(lambda tx: world.members.leave(tx, OFFICIAL_BJ, mid))
    # The span ends in the future, so it is not open: re-joining opens a second one from today.
    world.enrol(person=person, groups=["hardship"])
    assert [s for s in spans(world, OFFICIAL_BJ, mid) if s[0] == "hardship"] == [
        ("hardship", today, None),
        ("hardship", today, "2099-01-01"),
    ]
    for data in entries(world):
        assert b"hardship" not in data
    assert compare(world.ledger.engine, PROJECTIONS) == []


def test_a_long_hardship_history_keeps_the_latest_spans_in_one_box(world: World) -> None:
    mid = world.enrol().member_id
    for year in range(2020, 2027):
        world.run(
            lambda tx, y=year: world.members.add_group(
                tx, OFFICIAL_BJ, mid, "hardship", f"{y}-01-01"
            )
        )
        world.run(
            lambda tx, y=year: world.members.end_group(
                tx, OFFICIAL_BJ, mid, "hardship", f"{y}-07-01"
            )
        )
    assert spans(world, OFFICIAL_BJ, mid) == [
        ("hardship", f"{y}-01-01", f"{y}-07-01") for y in range(2023, 2027)
    ]
    assert {len(b["sealed"]) for b in bodies(world, "MemberSealedGroupsChanged")} == {395}


def test_visible_groups_follow_a_simple_model(world: World) -> None:
    """Random sequences of adding and ending the sensitive group and a normal one (mostly the
    valid move, sometimes the refused one): an official sees exactly the model's spans (the
    four latest hardship spans), an auditor the normal ones, ``active_groups`` all of them."""
    moves = st.lists(
        st.tuples(
            st.sampled_from(["valid", "valid", "valid", "refused"]),
            st.sampled_from(["hardship", "hardship", "courier"]),
            st.integers(1, 60),
        ),
        max_size=30,
    )

    @settings(max_examples=25)
    @given(moves=moves)
    def run(moves: list[tuple[str, str, int]]) -> None:
        mid = world.enrol().member_id
        model: dict[str, list[list[str | None]]] = {"hardship": [], "courier": []}
        day = date(2026, 1, 1)
        for kind, group, step in moves:
            day += timedelta(days=step)
            text = day.isoformat()
            spans_of = model[group]
            is_open = bool(spans_of) and spans_of[-1][1] is None
            adding = is_open != (kind == "valid")
            change = world.members.add_group if adding else world.members.end_group

            def command(tx: Tx, change=change, g=group, t=text) -> object:
                return change(tx, OFFICIAL_BJ, mid, g, t)

            if kind == "refused":
                with pytest.raises(BadGroup):
                    world.run(command)
                continue
            world.run(command)
            if adding:
                spans_of.append([text, None])
            else:
                spans_of[-1][1] = text
        expected = sorted(
            [("hardship", s, e) for s, e in model["hardship"][-4:]]
            + [("courier", s, e) for s, e in model["courier"]]
        )
        assert sorted(spans(world, OFFICIAL_BJ, mid)) == expected  # type: ignore[arg-type]
        assert sorted(spans(world, AUDITOR, mid)) == [s for s in expected if s[0] == "courier"]
        last = day.isoformat()
        with world.ledger.engine.connect() as conn:
            active = world.members.active_groups(conn, mid, last)
        assert active == sorted(
            {g for g, a, b in expected if a <= last and (b is None or last < b)}
        )

    run()
    for data in entries(world):
        assert b"hardship" not in data
    assert compare(world.ledger.engine, PROJECTIONS) == []


def test_listing_by_hardship_pages_across_scan_chunks(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger import members as members_module

    monkeypatch.setattr(members_module, "_SCAN_CHUNK", 2)
    chosen = [i % 3 == 0 for i in range(10)]
    ids = [world.enrol(groups=["hardship"] if h else []).member_id for h in chosen]
    world.run(lambda tx: world.members.leave(tx, OFFICIAL_BJ, ids[3]))  # left: still in hardship
    ended = ids[6]
    world.run(lambda tx: world.members.end_group(tx, OFFICIAL_BJ, ended, "hardship", "2099-01-01"))
    world.run(lambda tx: world.members.erase(tx, OFFICIAL_BJ, ids[9]))  # erased: not any more
    expected = sorted(i for i, h in zip(ids, chosen, strict=True) if h and i != ids[9])
    pages: list[list[str]] = []
    after = None
    with world.ledger.engine.connect() as conn:
        while True:
            page = world.members.list_members(
                conn, OFFICIAL_BJ, union_code="110000", group="hardship", after=after, limit=2
            )
            pages.append([m.member_id for m in page])
            if len(page) < 2:
                break
            after = page[-1].member_id
        assert [m for p in pages for m in p] == expected
        active = world.members.list_members(
            conn, OFFICIAL_BJ, union_code="G-RIDERS", group="hardship", status="active"
        )
        assert [m.member_id for m in active] == [m for m in expected if m != ids[3]]
        assert (
            world.members.list_members(conn, OFFICIAL_BJ, union_code="G-FACTORY", group="hardship")
            == []
        )
