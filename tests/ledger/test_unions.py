"""The union tree on SQLite and PostgreSQL: commands, refusals, access, paths, counts, rebuild."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Table, select, text, update

from keys import PrivateKey
from ledger.db import make_engine
from ledger.domain import SYSTEM, Actor, Forbidden, Role
from ledger.log import LogReader
from ledger.projections import EventCounts, Projection, compare, rebuild, snapshot
from ledger.schema import init_schema
from ledger.sequencer import Event, Sequencer
from ledger.unions import (
    JOIN_CODE_ALPHABET,
    BadTreeShape,
    BadUnionCode,
    BadUnionName,
    DuplicateUnion,
    Kind,
    Status,
    UnionClosed,
    UnionNotEmpty,
    UnionsProjection,
    UnknownKind,
    UnknownUnion,
    adjust_member_counts,
    chain,
    children,
    close_union,
    create_union,
    get_union,
    is_within,
    list_subtree,
    move_union,
    rename_union,
    require_active_union,
    set_join_policy,
    subtree_member_count,
    union_by_join_code,
    unions,
    visible,
)
from tests.conftest import SHARED
from tests.ledger.appender import ORIGIN
from tests.ledger.conftest import Ledger
from tests.pg import PostgresCluster
from verifier.entry import Entry, make_entry
from verifier.note import NoteSigner

NATIONAL, BEIJING, SHANGHAI = "100000", "110000", "310000"
CITY, HAIDIAN, CHAOYANG, XUHUI = "110100", "110108", "110105", "310104"
STREET, CBD = "110108010", "110105-CBD"
ENTERPRISE, INDUSTRY, REGIONAL, CBD_FIRM = (
    "91110108-0001",
    "110108010-IND1",
    "110108010-REG1",
    "91110105-0042",
)


class MemberCounts:
    """Stands in for the members projection: ``TestMembersCounted`` {union, delta} moves the
    counters through :func:`adjust_member_counts` from ``apply``, as the real one will."""

    name = "test_member_counts"
    tables: Sequence[Table] = ()

    def apply(self, conn: Connection, entry: Entry) -> None:
        if entry.type == "TestMembersCounted":
            adjust_member_counts(conn, entry.body["union"], entry.body["delta"])

    def flush(self, conn: Connection) -> None:
        pass

    def reset(self) -> None:
        pass


def projections() -> list[Projection]:
    return [EventCounts(), UnionsProjection(), MemberCounts()]


def open_tree_ledger(url: str) -> Ledger:
    engine = make_engine(url)
    writer = make_engine(url, writer=True)
    init_schema(engine)
    key = PrivateKey.generate()
    signer = NoteSigner(ORIGIN, key)
    sequencer = Sequencer(
        writer,
        origin=ORIGIN,
        signer=lambda: signer,
        projections=projections(),
        checkpoint_interval=3600,
    )
    return Ledger(url, engine, writer, sequencer, LogReader(engine), key)


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    opened = open_tree_ledger(database_url)
    try:
        yield opened
    finally:
        opened.sequencer.close()
        opened.writer.dispose()
        opened.engine.dispose()


# --- helpers -----------------------------------------------------------------------------------

Command = Callable[..., Entry]


def run(ledger: Ledger, command: Command, actor: Actor = SYSTEM, **kwargs: Any) -> Entry:
    return ledger.sequencer.execute(lambda tx: command(tx, actor, **kwargs))


def count_members(ledger: Ledger, code: str, delta: int) -> None:
    ledger.sequencer.append([Event("TestMembersCounted", "test", {"union": code, "delta": delta})])


def table(ledger: Ledger) -> list[tuple[object, ...]]:
    with ledger.engine.connect() as conn:
        return snapshot(conn, [unions])["unions"]


def row(ledger: Ledger, code: str) -> Any:
    with ledger.engine.connect() as conn:
        found = get_union(conn, code)
    assert found is not None
    return found


def refused(
    ledger: Ledger,
    error: type[Exception],
    command: Command,
    actor: Actor = SYSTEM,
    **kwargs: Any,
) -> Any:
    """Run a command that must fail with exactly ``error`` and leave chain and table alone."""
    before = (ledger.reader.size(), table(ledger))
    with pytest.raises(error) as info:
        run(ledger, command, actor, **kwargs)
    assert type(info.value) is error
    assert (ledger.reader.size(), table(ledger)) == before
    return info.value


def provinces() -> list[dict[str, str]]:
    with (SHARED / "data" / "provinces.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def build(ledger: Ledger) -> None:
    """The national federation, all 31 provinces (one batch), and a slice of Beijing and
    Shanghai down to grassroots unions."""
    run(ledger, create_union, code=NATIONAL, name="中华全国总工会", kind="national", parent=None)
    ledger.sequencer.execute(
        lambda tx: [
            create_union(
                tx,
                SYSTEM,
                code=p["code"],
                name=p["federation_zh"],
                kind="provincial",
                parent=NATIONAL,
            )
            for p in provinces()
        ]
    )
    for code, name, kind, parent in [
        (CITY, "北京市市辖区总工会", "city", BEIJING),
        (HAIDIAN, "海淀区总工会", "county", CITY),
        (CHAOYANG, "朝阳区总工会", "county", CITY),
        (STREET, "中关村街道总工会", "township", HAIDIAN),
        (CBD, "朝阳区CBD商务区工会联合会", "township", CHAOYANG),
        (ENTERPRISE, "北京中关村某科技有限公司工会", "enterprise", STREET),
        (INDUSTRY, "中关村街道快递行业工会联合会", "industry", STREET),
        (REGIONAL, "中关村街道区域性工会联合会", "regional", STREET),
        (CBD_FIRM, "北京朝阳某商贸有限公司工会", "enterprise", CBD),
        (XUHUI, "徐汇区总工会", "county", SHANGHAI),  # a county right below a province
    ]:
        run(ledger, create_union, code=code, name=name, kind=kind, parent=parent)


def check_counts_roll_up(conn: Connection) -> None:
    """Every union's subtree count is its own count plus its children's subtree counts."""
    rows = {r.code: r for r in conn.execute(select(unions)).all()}
    below: dict[str, int] = dict.fromkeys(rows, 0)
    for r in rows.values():
        if r.parent is not None:
            below[r.parent] += r.members_subtree
    for code, r in rows.items():
        assert r.members_own >= 0
        assert r.members_subtree == r.members_own + below[code], code


def check_paths(conn: Connection) -> None:
    rows = {r.code: r for r in conn.execute(select(unions)).all()}
    for r in rows.values():
        if r.parent is None:
            assert (r.path, r.depth) == (f"/{r.code}/", 0)
        else:
            up = rows[r.parent]
            assert (r.path, r.depth) == (f"{up.path}{r.code}/", up.depth + 1)


# --- creating and reading ----------------------------------------------------------------------


def test_the_tree_is_built_from_events(ledger: Ledger) -> None:
    build(ledger)
    street = row(ledger, STREET)
    assert street.path == f"/{NATIONAL}/{BEIJING}/{CITY}/{HAIDIAN}/{STREET}/"
    assert (street.depth, street.kind, street.status) == (4, Kind.TOWNSHIP, Status.ACTIVE)
    assert (street.parent, street.name, street.auto_approve) == (HAIDIAN, "中关村街道总工会", False)
    assert (street.members_own, street.members_subtree) == (0, 0)
    assert row(ledger, XUHUI).path == f"/{NATIONAL}/{SHANGHAI}/{XUHUI}/"
    assert row(ledger, BEIJING).name == "北京市总工会"

    entry = run(
        ledger,
        create_union,
        code="91110108-0002",
        name="某公司工会",
        kind="enterprise",
        parent=STREET,
        auto_approve=True,
    )
    created = row(ledger, "91110108-0002")
    assert entry.type == "UnionCreated"
    assert entry.actor == SYSTEM.ledger_actor
    assert dict(entry.body) == {
        "code": "91110108-0002",
        "name": "某公司工会",
        "kind": "enterprise",
        "parent": STREET,
        "join_code": created.join_code,
        "auto_approve": True,
    }
    assert created.created_at == created.updated_at == entry.time
    assert created.auto_approve is True

    everything = table(ledger)
    assert len(everything) == 1 + 31 + 11
    join_codes = [row(ledger, c).join_code for c in (NATIONAL, STREET, XUHUI)]
    assert all(len(j) == 10 and set(j) <= set(JOIN_CODE_ALPHABET) for j in join_codes)
    with ledger.engine.connect() as conn:
        all_codes = conn.execute(select(unions.c.join_code)).scalars().all()
        assert len(set(all_codes)) == len(all_codes)
        assert union_by_join_code(conn, street.join_code) == street
        assert union_by_join_code(conn, "0000000000") is None
        assert get_union(conn, "999999") is None
        assert chain(conn, ENTERPRISE) == [NATIONAL, BEIJING, CITY, HAIDIAN, STREET, ENTERPRISE]
        assert chain(conn, NATIONAL) == [NATIONAL]
        assert [r.code for r in children(conn, STREET)] == sorted(
            [ENTERPRISE, INDUSTRY, REGIONAL, "91110108-0002"], key=lambda c: f"{c}/"
        )
        assert children(conn, ENTERPRISE) == []
        assert len(children(conn, NATIONAL)) == 31
        assert is_within(conn, BEIJING, ENTERPRISE)
        assert is_within(conn, ENTERPRISE, ENTERPRISE)
        assert not is_within(conn, ENTERPRISE, STREET)
        assert not is_within(conn, SHANGHAI, ENTERPRISE)
        assert not is_within(conn, BEIJING, "999999")
        assert not is_within(conn, "1101", ENTERPRISE)  # a prefix of a code is not an ancestor
        for query in (chain, children, subtree_member_count):
            with pytest.raises(UnknownUnion):
                query(conn, "999999")


def test_list_subtree_pages_depth_first(ledger: Ledger) -> None:
    build(ledger)
    with ledger.engine.connect() as conn:
        everything = list_subtree(conn, NATIONAL, limit=1000)
        assert len(everything) == len(table(ledger))
        paths = [r.path for r in everything]
        assert paths == sorted(paths, key=lambda p: p.encode())
        seen: set[str] = set()
        for r in everything:  # depth-first: a union comes after its parent...
            assert r.parent is None or r.parent in seen
            seen.add(r.code)
        beijing = list_subtree(conn, BEIJING, limit=1000)
        codes = [r.code for r in beijing]
        assert codes[0] == BEIJING
        for r in everything:  # ...and its whole subtree is one contiguous run
            run_ = [x.code for x in everything if x.path.startswith(r.path)]
            start = [x.code for x in everything].index(r.code)
            assert [x.code for x in everything][start : start + len(run_)] == run_
        assert set(codes) == {
            r.code for r in everything if r.path.startswith(f"/{NATIONAL}/{BEIJING}/")
        }

        pages: list[str] = []
        after = None
        while page := list_subtree(conn, BEIJING, after=after, limit=3):
            assert len(page) <= 3
            pages += [r.code for r in page]
            after = page[-1].path
        assert pages == codes
        middle = beijing[len(beijing) // 2]
        assert [r.code for r in list_subtree(conn, BEIJING, after=middle.path)] == codes[
            len(beijing) // 2 + 1 :
        ]
        grassroots = list_subtree(conn, BEIJING, kind="enterprise")
        assert [r.code for r in grassroots] == [CBD_FIRM, ENTERPRISE]
        assert list_subtree(conn, HAIDIAN, kind="city") == []
        with pytest.raises(UnknownKind):
            list_subtree(conn, BEIJING, kind="village")
        with pytest.raises(ValueError, match="limit"):
            list_subtree(conn, BEIJING, limit=0)
        with pytest.raises(UnknownUnion):
            list_subtree(conn, "999999")
    run(ledger, close_union, code=REGIONAL)
    with ledger.engine.connect() as conn:
        assert [r.code for r in list_subtree(conn, NATIONAL, status="closed")] == [REGIONAL]
        active = list_subtree(conn, STREET, status="active")
        assert REGIONAL not in {r.code for r in active}
        assert len(active) == 3


def _bytewise_tree(ledger: Ledger) -> None:
    """Sibling codes that a linguistic collation orders or groups wrongly: case variants, a
    hyphen, a digit right after a code, and children under each."""
    run(ledger, create_union, code=NATIONAL, name="全总", kind="national", parent=None)
    run(ledger, create_union, code="P", name="省", kind="provincial", parent=NATIONAL)
    for code in ("A", "a", "A-1", "A0", "AB", "A-"):
        run(ledger, create_union, code=code, name=code, kind="city", parent="P")
        run(ledger, create_union, code=f"{code}x", name=code, kind="county", parent=code)


def _check_bytewise(ledger: Ledger) -> None:
    with ledger.engine.connect() as conn:
        assert [r.code for r in list_subtree(conn, "A")] == ["A", "Ax"]
        assert [r.code for r in list_subtree(conn, "a")] == ["a", "ax"]
        assert [r.code for r in list_subtree(conn, "A-")] == ["A-", "A-x"]
        everything = [r.path for r in list_subtree(conn, NATIONAL)]
        assert everything == sorted(everything, key=lambda p: p.encode())
        assert not is_within(conn, "A", "ax")
        if conn.dialect.name == "postgresql":
            collation = conn.execute(
                text(
                    "SELECT collation_name FROM information_schema.columns"
                    " WHERE table_name = 'unions' AND column_name = 'path'"
                )
            ).scalar()
            assert collation == "C"


def test_prefix_ranges_and_order_are_bytewise(ledger: Ledger) -> None:
    _bytewise_tree(ledger)
    _check_bytewise(ledger)


@pytest.mark.postgres
def test_bytewise_on_a_database_with_a_linguistic_default_collation(
    postgres_cluster: PostgresCluster,
) -> None:
    import sqlalchemy

    admin = sqlalchemy.create_engine(postgres_cluster.url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "CREATE DATABASE unions_icu TEMPLATE template0 ENCODING 'UTF8'"
                    " LOCALE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
                )
            )
    except sqlalchemy.exc.DBAPIError as e:
        pytest.skip(f"no ICU collations in this PostgreSQL: {e.orig}")
    finally:
        admin.dispose()
    lg = open_tree_ledger(postgres_cluster.url("unions_icu"))
    try:
        _bytewise_tree(lg)
        with lg.engine.connect() as conn:
            # The hazard is real here: the same range under the database's collation is wrong.
            naive = conn.execute(
                text(
                    'SELECT count(*) FROM unions WHERE path COLLATE "default" >= :lo'
                    ' AND path COLLATE "default" < :hi'
                ),
                {"lo": f"/{NATIONAL}/P/A/", "hi": f"/{NATIONAL}/P/A0"},
            ).scalar()
            assert naive != 2
        _check_bytewise(lg)
    finally:
        lg.sequencer.close()
        lg.writer.dispose()
        lg.engine.dispose()


# --- refusals ----------------------------------------------------------------------------------


def test_create_refusals_append_nothing(ledger: Ledger) -> None:
    build(ledger)

    def create(error: type[Exception], **kwargs: Any) -> Exception:
        args = {"code": "91110108-0009", "name": "某工会", "kind": "enterprise", "parent": STREET}
        return refused(ledger, error, create_union, **(args | kwargs))

    for bad in ("", "-1", "a/b", "x" * 33, "京A", " 1", "1\n", "a_b", None):
        assert create(BadUnionCode, code=bad).code == "bad-union-code"
    for bad in ("", " 某工会", "某工会 ", "x" * 201, "a\x00b", "a\u200bb", "a\u2028b"):
        assert create(BadUnionName, name=bad).code == "bad-union-name"
    assert create(UnknownKind, kind="village").code == "unknown-union-kind"
    shape = [
        {"kind": "city", "parent": STREET},  # a city below a street
        {"kind": "enterprise", "parent": ENTERPRISE},  # grassroots below grassroots
        {"kind": "provincial", "parent": BEIJING},
        {"kind": "county", "parent": HAIDIAN},
        {"kind": "national", "parent": None},  # a second national federation
        {"kind": "national", "parent": BEIJING},  # a national union with a parent
        {"kind": "city", "parent": None},  # no parent
    ]
    for case_ in shape:
        assert create(BadTreeShape, **case_).code == "bad-tree-shape"
    assert create(DuplicateUnion, code=HAIDIAN, kind="county", parent=CITY).code == (
        "duplicate-union"
    )
    assert create(UnknownUnion, parent="999999").code == "unknown-union"
    create(TypeError, auto_approve="yes")
    run(ledger, close_union, code=REGIONAL)
    assert create(UnionClosed, parent=REGIONAL, kind="enterprise").code == "union-closed"


def test_a_colliding_join_code_is_drawn_again(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(ledger, create_union, code=NATIONAL, name="全总", kind="national", parent=None)
    taken = row(ledger, NATIONAL).join_code
    draws = iter([taken, taken, "ABCDEFGH23"])
    monkeypatch.setattr("ledger.unions.new_join_code", lambda: next(draws))
    entry = run(ledger, create_union, code=BEIJING, name="北京", kind="provincial", parent=NATIONAL)
    assert entry.body["join_code"] == "ABCDEFGH23" == row(ledger, BEIJING).join_code


def test_rename_and_join_policy(ledger: Ledger) -> None:
    build(ledger)
    created = row(ledger, HAIDIAN)
    entry = run(ledger, rename_union, code=HAIDIAN, name="北京市海淀区总工会")
    assert (entry.type, dict(entry.body)) == (
        "UnionRenamed",
        {"code": HAIDIAN, "name": "北京市海淀区总工会"},
    )
    renamed = row(ledger, HAIDIAN)
    assert renamed.name == "北京市海淀区总工会"
    assert (renamed.created_at, renamed.updated_at) == (created.created_at, entry.time)
    entry = run(ledger, set_join_policy, code=ENTERPRISE, auto_approve=True)
    assert (entry.type, dict(entry.body)) == (
        "UnionJoinPolicySet",
        {"code": ENTERPRISE, "auto_approve": True},
    )
    assert row(ledger, ENTERPRISE).auto_approve is True
    run(ledger, set_join_policy, code=ENTERPRISE, auto_approve=False)
    assert row(ledger, ENTERPRISE).auto_approve is False
    refused(ledger, UnknownUnion, rename_union, code="999999", name="x")
    refused(ledger, BadUnionName, rename_union, code=HAIDIAN, name="")
    refused(ledger, UnknownUnion, set_join_policy, code="999999", auto_approve=True)
    refused(ledger, TypeError, set_join_policy, code=HAIDIAN, auto_approve=1)


def test_move_repaths_the_subtree_and_moves_the_counts(ledger: Ledger) -> None:
    build(ledger)
    for code, n in ((ENTERPRISE, 120), (INDUSTRY, 30), (STREET, 5), (CBD_FIRM, 40)):
        count_members(ledger, code, n)
    before = {c: row(ledger, c).members_subtree for c in (NATIONAL, BEIJING, CITY, HAIDIAN)}
    assert before == {NATIONAL: 195, BEIJING: 195, CITY: 195, HAIDIAN: 155}
    assert row(ledger, CHAOYANG).members_subtree == 40

    entry = run(ledger, move_union, code=STREET, parent=CHAOYANG)
    assert (entry.type, dict(entry.body)) == ("UnionMoved", {"code": STREET, "parent": CHAOYANG})
    moved = row(ledger, STREET)
    assert (moved.parent, moved.path) == (
        CHAOYANG,
        f"/{NATIONAL}/{BEIJING}/{CITY}/{CHAOYANG}/{STREET}/",
    )
    assert row(ledger, ENTERPRISE).path == f"{moved.path}{ENTERPRISE}/"
    assert row(ledger, ENTERPRISE).updated_at == entry.time
    assert row(ledger, HAIDIAN).members_subtree == 0
    assert row(ledger, CHAOYANG).members_subtree == 195
    assert row(ledger, CITY).members_subtree == 195  # a common ancestor: unchanged
    assert row(ledger, NATIONAL).members_subtree == 195

    run(ledger, move_union, code=STREET, parent=CITY)  # up a level: depths shrink by one
    assert (row(ledger, STREET).depth, row(ledger, ENTERPRISE).depth) == (3, 4)
    assert row(ledger, CHAOYANG).members_subtree == 40
    with ledger.engine.connect() as conn:
        check_paths(conn)
        check_counts_roll_up(conn)
        assert is_within(conn, CITY, ENTERPRISE)
        assert not is_within(conn, HAIDIAN, ENTERPRISE)
        assert subtree_member_count(conn, STREET) == 155

    cycle = refused(ledger, BadTreeShape, move_union, code=CITY, parent=HAIDIAN)
    assert "inside the subtree" in str(cycle)
    refused(ledger, BadTreeShape, move_union, code=STREET, parent=STREET)
    refused(ledger, BadTreeShape, move_union, code=NATIONAL, parent=BEIJING)
    refused(ledger, BadTreeShape, move_union, code=HAIDIAN, parent=CBD)  # county below township
    refused(ledger, BadTreeShape, move_union, code=CITY, parent=CITY)
    refused(ledger, UnknownUnion, move_union, code=STREET, parent="999999")
    refused(ledger, UnknownUnion, move_union, code="999999", parent=CITY)


def test_close_needs_an_empty_union(ledger: Ledger) -> None:
    build(ledger)
    count_members(ledger, ENTERPRISE, 3)
    assert refused(ledger, UnionNotEmpty, close_union, code=STREET).code == "union-not-empty"
    refused(ledger, UnionNotEmpty, close_union, code=ENTERPRISE)
    count_members(ledger, ENTERPRISE, -3)
    entry = run(ledger, close_union, code=ENTERPRISE)
    assert (entry.type, dict(entry.body)) == ("UnionClosed", {"code": ENTERPRISE})
    closed = row(ledger, ENTERPRISE)
    assert (closed.status, closed.updated_at) == (Status.CLOSED, entry.time)

    refused(ledger, UnionClosed, close_union, code=ENTERPRISE)
    refused(ledger, UnionClosed, rename_union, code=ENTERPRISE, name="x")
    refused(ledger, UnionClosed, set_join_policy, code=ENTERPRISE, auto_approve=True)
    refused(ledger, UnionClosed, move_union, code=ENTERPRISE, parent=CBD)
    refused(ledger, UnionClosed, move_union, code=CBD_FIRM, parent=ENTERPRISE)
    with ledger.engine.connect() as conn:
        assert visible(conn, SYSTEM, ENTERPRISE) == closed
        with pytest.raises(UnionClosed):
            require_active_union(conn, SYSTEM, ENTERPRISE)
        assert require_active_union(conn, SYSTEM, STREET).code == STREET

    run(ledger, close_union, code=INDUSTRY)
    refused(ledger, UnionNotEmpty, close_union, code=STREET)  # the regional union is active
    run(ledger, close_union, code=REGIONAL)
    run(ledger, close_union, code=STREET)  # closed children may stay below a closed union
    assert row(ledger, STREET).status is Status.CLOSED


# --- access ------------------------------------------------------------------------------------


def test_officials_act_only_inside_their_subtree(ledger: Ledger) -> None:
    build(ledger)
    beijing = Actor(Role.OFFICIAL, "kid-bj", scope=BEIJING)
    haidian = Actor(Role.OFFICIAL, "kid-hd", scope=HAIDIAN)

    entry = run(
        ledger,
        create_union,
        beijing,
        code="110108-P1",
        name="中关村科技园区工会联合会",
        kind="township",
        parent=HAIDIAN,
    )
    assert entry.actor == "official:kid-bj"
    run(ledger, rename_union, beijing, code=BEIJING, name="北京市总工会（新）")
    run(ledger, set_join_policy, beijing, code=BEIJING, auto_approve=True)
    run(ledger, move_union, haidian, code="110108-P1", parent=HAIDIAN)
    run(ledger, rename_union, beijing, code=BEIJING, name="北京市总工会")
    # Its own position is not the official's to change.
    refused(ledger, Forbidden, move_union, beijing, code=BEIJING, parent=NATIONAL)
    refused(ledger, Forbidden, close_union, beijing, code=BEIJING)
    refused(ledger, Forbidden, close_union, haidian, code=HAIDIAN)
    refused(
        ledger,
        Forbidden,
        create_union,
        beijing,
        code="999999",
        name="x",
        kind="national",
        parent=None,
    )

    # Outside the subtree looks exactly like missing.
    hidden = refused(ledger, UnknownUnion, rename_union, beijing, code=XUHUI, name="x")
    missing = refused(ledger, UnknownUnion, rename_union, beijing, code="999999", name="x")
    assert str(hidden).replace(XUHUI, "?") == str(missing).replace("999999", "?")
    refused(
        ledger,
        UnknownUnion,
        create_union,
        beijing,
        code="310104-1",
        name="x",
        kind="township",
        parent=XUHUI,
    )
    refused(ledger, UnknownUnion, move_union, beijing, code=STREET, parent=XUHUI)
    refused(ledger, UnknownUnion, move_union, beijing, code=XUHUI, parent=CITY)
    refused(ledger, UnknownUnion, close_union, beijing, code=XUHUI)
    refused(ledger, UnknownUnion, set_join_policy, beijing, code=SHANGHAI, auto_approve=True)
    refused(ledger, UnknownUnion, rename_union, haidian, code=CITY, name="x")  # an ancestor
    refused(ledger, UnknownUnion, move_union, haidian, code=STREET, parent=CHAOYANG)

    for nobody in (
        Actor(Role.AUDITOR, "kid-au"),
        Actor(Role.MEMBER, "m-1", scope="m-1"),
        Actor(Role.STATION, "st-1", scope="ST-1"),
        Actor(Role.OFFICIAL, "kid-x"),  # an official without a scope
        Actor(Role.OFFICIAL, "kid-y", scope=f"{NATIONAL}/{BEIJING}"),  # not a union code
    ):
        for command, kwargs in (
            (create_union, {"code": "X1", "name": "x", "kind": "enterprise", "parent": STREET}),
            (rename_union, {"code": STREET, "name": "x"}),
            (move_union, {"code": STREET, "parent": CHAOYANG}),
            (close_union, {"code": REGIONAL}),
            (set_join_policy, {"code": STREET, "auto_approve": True}),
        ):
            error = refused(ledger, Forbidden, command, nobody, **kwargs)
            assert error.code == "forbidden"

    with ledger.engine.connect() as conn:
        assert visible(conn, haidian, STREET) is not None
        assert visible(conn, haidian, HAIDIAN) is not None
        assert visible(conn, haidian, CITY) is None
        assert visible(conn, haidian, XUHUI) is None
        assert visible(conn, Actor(Role.AUDITOR, "kid-au"), XUHUI) is not None
        assert visible(conn, SYSTEM, "999999") is None
        assert visible(conn, Actor(Role.MEMBER, "m-1", scope=STREET), STREET) is None
        assert visible(conn, Actor(Role.STATION, "st-1", scope=STREET), STREET) is None
        with pytest.raises(UnknownUnion):
            require_active_union(conn, haidian, XUHUI)


# --- member counts -----------------------------------------------------------------------------

TIME = "2026-11-25T08:00:00.000000Z"


LEVELS = ["national", "provincial", "city", "county", "township", "enterprise"]


@st.composite
def trees_and_changes(draw: st.DrawFn) -> tuple[list[int], list[tuple[str, int, int]]]:
    """A tree as each union's parent index (kinds follow depth, down to grassroots at 5) and a
    list of changes: (count, union, delta) or (move, union, seed of the new parent)."""
    size = draw(st.integers(1, 24))
    parents, depth = [-1], [0]
    for i in range(1, size):
        p = draw(st.sampled_from([j for j in range(i) if depth[j] < 5]))
        parents.append(p)
        depth.append(depth[p] + 1)
    op = st.tuples(
        st.sampled_from(["count", "count", "move"]),
        st.integers(0, size - 1),
        st.integers(-8, 12),
    )
    return parents, draw(st.lists(op, max_size=30))


def test_member_counts_roll_up_the_tree(ledger: Ledger) -> None:
    projection = UnionsProjection()
    moves = []

    def apply(conn: Connection, type_: str, body: dict[str, Any]) -> None:
        entry = make_entry(index=0, time=TIME, type=type_, actor="test", body=body, prev=bytes(32))
        projection.apply(conn, entry)

    @settings(max_examples=40)
    @given(trees_and_changes())
    def check(case_: tuple[list[int], list[tuple[str, int, int]]]) -> None:
        parents, changes = case_
        codes = [f"U{i}" for i in range(len(parents))]
        own = dict.fromkeys(codes, 0)
        parent: dict[str, str | None] = {}
        rank: dict[str, int] = {}
        with ledger.engine.connect() as conn, conn.begin() as tx:
            for i, p in enumerate(parents):
                code = codes[i]
                parent[code] = None if p < 0 else codes[p]
                rank[code] = 0 if p < 0 else rank[codes[p]] + 1
                body = {
                    "code": code,
                    "name": code,
                    "parent": parent[code],
                    "kind": LEVELS[rank[code]],
                    "join_code": f"J{i:09d}",
                    "auto_approve": False,
                }
                apply(conn, "UnionCreated", body)
            for what, i, n in changes:
                code = codes[i]
                if what == "count":
                    delta = max(n, -own[code])
                    adjust_member_counts(conn, code, delta)
                    own[code] += delta
                    continue
                above = [c for c in codes if rank[c] < rank[code]]  # ranks rule out cycles
                if not above:  # the national union stays where it is
                    continue
                target = above[n % len(above)]
                apply(conn, "UnionMoved", {"code": code, "parent": target})
                parent[code] = target
                moves.append(code)
            check_paths(conn)
            check_counts_roll_up(conn)
            found = {r.code: (r.parent, r.members_own) for r in conn.execute(select(unions))}
            assert found == {c: (parent[c], own[c]) for c in codes}
            for c in codes:
                below = [d for d in codes if is_within(conn, c, d)]
                assert subtree_member_count(conn, c) == sum(own[d] for d in below)
            tx.rollback()

    check()
    assert moves  # the examples did move subtrees around


def test_adjust_member_counts_fails_closed(ledger: Ledger) -> None:
    build(ledger)
    count_members(ledger, ENTERPRISE, 2)
    with ledger.engine.connect() as conn, conn.begin() as tx:
        with pytest.raises(UnknownUnion):
            adjust_member_counts(conn, "999999", 1)
        with pytest.raises(ValueError, match="members"):
            adjust_member_counts(conn, ENTERPRISE, -3)
        with pytest.raises(TypeError):
            adjust_member_counts(conn, ENTERPRISE, True)
        adjust_member_counts(conn, ENTERPRISE, 0)
        assert subtree_member_count(conn, NATIONAL) == 2
        tx.rollback()


# --- rebuild -----------------------------------------------------------------------------------


def test_rebuild_reproduces_the_table(ledger: Ledger) -> None:
    build(ledger)
    for code, n in ((ENTERPRISE, 7), (INDUSTRY, 3), (CBD_FIRM, 11), (XUHUI, 2)):
        count_members(ledger, code, n)
    run(ledger, rename_union, code=CHAOYANG, name="北京市朝阳区总工会")
    run(ledger, set_join_policy, code=INDUSTRY, auto_approve=True)
    run(ledger, move_union, code=STREET, parent=CHAOYANG)
    count_members(ledger, CBD_FIRM, -11)
    run(ledger, close_union, code=CBD_FIRM)
    run(ledger, move_union, code=CBD, parent=HAIDIAN)
    before = table(ledger)
    projections_ = projections()
    assert compare(ledger.engine, projections_) == []

    with ledger.engine.begin() as conn:  # what a database administrator's edit looks like
        conn.execute(update(unions).where(unions.c.code == BEIJING).values(members_subtree=10**6))
    assert any(BEIJING in d for d in compare(ledger.engine, projections_))

    assert rebuild(ledger.writer, projections_) == ledger.reader.size()
    assert compare(ledger.engine, projections_) == []
    assert table(ledger) == before
    with ledger.engine.connect() as conn:
        check_paths(conn)
        check_counts_roll_up(conn)


def test_events_the_commands_would_refuse_change_nothing(ledger: Ledger) -> None:
    """The projection must not fail on anything the ledger holds: an impossible event that a
    direct append slipped past the commands is ignored, and replays ignore it too."""
    build(ledger)
    before = table(ledger)
    base = {"name": "x", "kind": "enterprise", "join_code": "ZZZZZZZZZZ", "auto_approve": False}

    def created(**fields: Any) -> Event:
        return Event("UnionCreated", "test", base | {"parent": STREET} | fields)

    ledger.sequencer.append(
        [
            created(code="X1", parent="999999"),
            created(code=HAIDIAN, parent=CITY),  # a duplicate code
            created(code="X2", kind="x"),
            created(code="X3", parent=None, kind="national"),  # a second national union
            created(code="X4", kind="city"),  # ranks out of order
            created(code="X5", name="x" * 201),
            created(code="X6", join_code="Z"),
            created(code="X7", join_code=row(ledger, STREET).join_code),
            Event("UnionMoved", "test", {"code": HAIDIAN, "parent": CBD}),  # county below township
            Event("UnionMoved", "test", {"code": NATIONAL, "parent": BEIJING}),
            Event("UnionMoved", "test", {"code": CITY, "parent": STREET}),  # a cycle
            Event("UnionMoved", "test", {"code": STREET, "parent": 7}),
            Event("UnionRenamed", "test", {"code": STREET, "name": 7}),
            Event("UnionRenamed", "test", {"code": STREET, "name": ""}),
            Event("UnionJoinPolicySet", "test", {"code": STREET, "auto_approve": "yes"}),
            Event("UnionClosed", "test", {"code": "999999"}),
        ]
    )
    assert table(ledger) == before
    assert compare(ledger.engine, projections()) == []
