"""The personal-data vault on SQLite and PostgreSQL: round trips, binding, erasure, no leaks."""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Iterator
from typing import Any

import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, text

from keys.keyring import Keyring
from ledger.db import make_engine
from ledger.domain import Conflict, DomainError, Invalid
from ledger.identity import (
    InvalidEmployer,
    InvalidIdNumber,
    InvalidName,
    InvalidPhone,
    new_member_id,
    synthetic_id_number,
)
from ledger.schema import metadata
from ledger.vault import (
    LEDGER_PADDED_SIZE,
    LEDGER_PLAINTEXT_MAX,
    Erased,
    PersonalData,
    Vault,
    VaultCorrupt,
    vault,
)
from tests.ledger.conftest import Ledger

MASTER = bytes(range(32))
NOW = "2025-07-01T08:00:00Z"
LATER = "2025-07-02T09:30:00Z"
ID_NUMBER = "11010519491231002X"
DATA = PersonalData("王秀英", ID_NUMBER, "+86 139-1234-5678", "顺丰速运有限公司北京分公司")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    metadata.create_all(engine, tables=[vault])
    try:
        yield engine
    finally:
        engine.dispose()


def put(engine: Engine, box: Vault, member_id: str, data: PersonalData, now: str = NOW) -> None:
    with engine.begin() as conn:
        box.put(conn.execute, member_id, data, now)


def get(engine: Engine, box: Vault, member_id: str) -> PersonalData | None:
    with engine.connect() as conn:
        return box.get(conn, member_id)


def erase(engine: Engine, box: Vault, member_id: str, now: str = LATER) -> None:
    with engine.begin() as conn:
        box.erase(conn.execute, member_id, now)


def raw_row(engine: Engine, member_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM vault WHERE member_id = :m"), {"m": member_id}).one()
    return dict(row._mapping)


def set_column(engine: Engine, member_id: str, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(vault.update().where(vault.c.member_id == member_id).values(**values))


def personal_values(data: PersonalData) -> list[bytes]:
    values = [data.name, data.id_number, data.phone, data.id_number[6:14], data.phone[3:]]
    if data.employer is not None:
        values.append(data.employer)
    return [v.encode() for v in values]


def assert_holds_none_of(row: dict[str, Any], data: PersonalData) -> None:
    """The row's boxes hold none of the values (values under 6 bytes would match random bytes by
    chance); its other columns are exactly the pseudonymous id and the times."""
    assert set(row) == {
        "member_id",
        "wrapped_key",
        "sealed",
        "ledger_key",
        "erased_at",
        "updated_at",
    }
    assert isinstance(row["member_id"], str)
    assert row["erased_at"] is None or isinstance(row["erased_at"], str)
    boxes = b"".join(bytes(row[c] or b"") for c in ("wrapped_key", "sealed", "ledger_key"))
    for value in personal_values(data):
        if len(value) >= 6:
            assert value not in boxes
    for column in ("member_id", "erased_at", "updated_at"):
        shown = str(row[column]).encode()
        for value in personal_values(data):
            assert value not in shown or len(value) < 6


def assert_no_personal_values(error: BaseException, data: PersonalData = DATA) -> None:
    shown = f"{error} {error!r} {getattr(error, 'diagnostics', lambda: '')()}"
    for value in personal_values(data):
        assert value.decode() not in shown


# -- PersonalData ---------------------------------------------------------------------------


def test_personal_data_is_normalised_and_never_shown() -> None:
    data = PersonalData(" 王秀英 ", ID_NUMBER.lower(), "+86 139-1234-5678", " 顺丰 ")
    assert (data.name, data.id_number, data.phone, data.employer) == (
        "王秀英",
        ID_NUMBER,
        "13912345678",
        "顺丰",
    )
    assert repr(data) == str(data) == f"{data}" == "PersonalData(<redacted>)"
    assert repr([data]) == "[PersonalData(<redacted>)]"
    assert PersonalData("王秀英", ID_NUMBER, "13912345678").employer is None


@pytest.mark.parametrize(
    ("fields", "error", "code"),
    [
        (("", ID_NUMBER, "13912345678"), InvalidName, "invalid-name"),
        (("王秀英", ID_NUMBER[:17] + "1", "13912345678"), InvalidIdNumber, "invalid-id-number"),
        (("王秀英", ID_NUMBER, "12912345678"), InvalidPhone, "invalid-phone"),
        (("王秀英", ID_NUMBER, "13912345678", "\x00"), InvalidEmployer, "invalid-employer"),
    ],
)
def test_personal_data_is_validated(
    fields: tuple[str, ...], error: type[Invalid], code: str
) -> None:
    with pytest.raises(error) as info:
        PersonalData(*fields)
    assert info.value.code == code
    for value in fields:
        if len(value) > 3:
            assert value not in str(info.value)


def test_vault_key_is_checked_and_hidden() -> None:
    with pytest.raises(ValueError, match="32"):
        Vault(bytes(31))
    with pytest.raises(TypeError):
        Vault(MASTER.hex())  # type: ignore[arg-type]
    box = Vault(MASTER)
    assert MASTER.hex() not in repr(box)
    assert repr(box) == "Vault(<master key>)"


def test_vault_from_keyring_uses_the_vault_master_secret(engine: Engine) -> None:
    member = new_member_id()
    put(engine, Vault.from_keyring(Keyring(secrets={"vault-master": MASTER})), member, DATA)
    assert get(engine, Vault(MASTER), member) == DATA


# -- round trips ------------------------------------------------------------------------------


def test_round_trip_and_update(engine: Engine) -> None:
    box, member = Vault(MASTER), new_member_id()
    assert get(engine, box, member) is None
    put(engine, box, member, DATA)
    assert get(engine, box, member) == DATA
    first = raw_row(engine, member)
    assert first["erased_at"] is None
    assert first["updated_at"] == NOW

    moved = PersonalData(DATA.name, DATA.id_number, "13800000000")  # new phone, no employer
    put(engine, box, member, moved, LATER)
    assert get(engine, box, member) == moved
    second = raw_row(engine, member)
    assert second["updated_at"] == LATER
    # Every put seals under a fresh data key, so the wrapped key changes too.
    assert bytes(second["wrapped_key"]) != bytes(first["wrapped_key"])
    with engine.connect() as conn:
        assert conn.execute(select(vault.c.member_id)).scalars().all() == [member]


def test_members_get_different_keys(engine: Engine) -> None:
    box = Vault(MASTER)
    a, b = new_member_id(), new_member_id()
    put(engine, box, a, DATA)
    put(engine, box, b, DATA)
    row_a, row_b = raw_row(engine, a), raw_row(engine, b)
    assert bytes(row_a["sealed"]) != bytes(row_b["sealed"])
    assert bytes(row_a["wrapped_key"]) != bytes(row_b["wrapped_key"])
    # nonce (24) + data key (32) + tag (16); the data is padded to hide the name's length.
    assert len(bytes(row_a["wrapped_key"])) == 24 + 32 + 16
    assert (len(bytes(row_a["sealed"])) - 24 - 16) % 128 == 0
    assert get(engine, box, a) == get(engine, box, b) == DATA


def test_stored_row_holds_no_plaintext(engine: Engine) -> None:
    box, member = Vault(MASTER), new_member_id()
    put(engine, box, member, DATA)
    row = raw_row(engine, member)
    assert_holds_none_of(row, DATA)
    stored = b"".join(bytes(v) if isinstance(v, bytes) else str(v).encode() for v in row.values())
    for value in personal_values(DATA):
        assert value not in stored
    assert MASTER not in stored


# -- tampering ------------------------------------------------------------------------------


def test_wrong_master_key_is_vault_corrupt(engine: Engine) -> None:
    member = new_member_id()
    put(engine, Vault(MASTER), member, DATA)
    with pytest.raises(VaultCorrupt) as info:
        get(engine, Vault(bytes(32)), member)
    assert info.value.code == "vault-corrupt"
    assert info.value.status == 500
    assert isinstance(info.value, DomainError)
    assert_no_personal_values(info.value)


@pytest.mark.parametrize("column", ["wrapped_key", "sealed"])
def test_swapping_a_column_between_members_is_vault_corrupt(engine: Engine, column: str) -> None:
    box = Vault(MASTER)
    a, b = new_member_id(), new_member_id()
    other = PersonalData("李强", synthetic_id_number(random.Random(1)), "13700000001")
    put(engine, box, a, DATA)
    put(engine, box, b, other)
    value_a, value_b = raw_row(engine, a)[column], raw_row(engine, b)[column]
    set_column(engine, a, **{column: bytes(value_b)})
    set_column(engine, b, **{column: bytes(value_a)})
    for member in (a, b):
        with pytest.raises(VaultCorrupt) as info:
            get(engine, box, member)
        assert_no_personal_values(info.value)
        assert_no_personal_values(info.value, other)


def test_moving_a_whole_row_to_another_member_is_vault_corrupt(engine: Engine) -> None:
    box = Vault(MASTER)
    a, b = new_member_id(), new_member_id()
    put(engine, box, a, DATA)
    put(engine, box, b, PersonalData("李强", synthetic_id_number(random.Random(2)), "13700000002"))
    row_a = raw_row(engine, a)
    set_column(engine, b, wrapped_key=bytes(row_a["wrapped_key"]), sealed=bytes(row_a["sealed"]))
    with pytest.raises(VaultCorrupt):
        get(engine, box, b)


@pytest.mark.parametrize("column", ["wrapped_key", "sealed"])
@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "null"])
def test_damaged_rows_are_vault_corrupt(engine: Engine, column: str, damage: str) -> None:
    box, member = Vault(MASTER), new_member_id()
    put(engine, box, member, DATA)
    blob = bytearray(raw_row(engine, member)[column])
    if damage == "flip":
        blob[len(blob) // 2] ^= 1
        set_column(engine, member, **{column: bytes(blob)})
    elif damage == "truncate":
        set_column(engine, member, **{column: bytes(blob[:30])})
    elif damage == "empty":
        set_column(engine, member, **{column: b""})
    else:
        set_column(engine, member, **{column: None})
    with pytest.raises(VaultCorrupt) as info:
        get(engine, box, member)
    assert_no_personal_values(info.value)


# -- erasure ----------------------------------------------------------------------------------


def test_erase_destroys_key_and_data(engine: Engine) -> None:
    box, member, kept = Vault(MASTER), new_member_id(), new_member_id()
    put(engine, box, member, DATA)
    put(engine, box, kept, DATA)
    with engine.connect() as conn:
        assert not box.is_erased(conn, member)
    erase(engine, box, member)
    with pytest.raises(Erased) as info:
        get(engine, box, member)
    assert info.value.code == "member-erased"
    assert info.value.status == 409
    assert isinstance(info.value, Conflict)
    with engine.connect() as conn:
        assert box.is_erased(conn, member)
        assert not box.is_erased(conn, kept)
    row = raw_row(engine, member)
    assert row == {
        "member_id": member,
        "wrapped_key": None,
        "sealed": None,
        "ledger_key": None,
        "erased_at": LATER,
        "updated_at": LATER,
    }
    assert get(engine, box, kept) == DATA  # erasure is per member


def test_erase_is_idempotent_and_final(engine: Engine) -> None:
    box, member = Vault(MASTER), new_member_id()
    put(engine, box, member, DATA)
    erase(engine, box, member, LATER)
    erase(engine, box, member, "2026-01-01T00:00:00Z")
    assert raw_row(engine, member)["erased_at"] == LATER  # the first erasure is what counts
    with pytest.raises(Erased):
        put(engine, box, member, DATA, "2026-01-02T00:00:00Z")
    assert raw_row(engine, member)["sealed"] is None


def test_erasing_an_unknown_member_records_the_erasure(engine: Engine) -> None:
    box, member = Vault(MASTER), new_member_id()
    with engine.connect() as conn:
        assert not box.is_erased(conn, member)
    erase(engine, box, member)
    with engine.connect() as conn:
        assert box.is_erased(conn, member)
    with pytest.raises(Erased):
        get(engine, box, member)
    with pytest.raises(Erased):
        put(engine, box, member, DATA)


def test_malformed_member_ids_are_refused(engine: Engine) -> None:
    box = Vault(MASTER)
    for bad in ("", "x" * 33, "a b", "张伟", "a\x00"):
        with pytest.raises(Invalid):
            put(engine, box, bad, DATA)
        with engine.connect() as conn, pytest.raises(Invalid):
            box.get(conn, bad)


def test_nothing_personal_is_logged(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    box, member = Vault(MASTER), new_member_id()
    with caplog.at_level(logging.DEBUG):
        put(engine, box, member, DATA)
        get(engine, box, member)
        erase(engine, box, member)
        with pytest.raises(Erased):
            get(engine, box, member)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for value in personal_values(DATA):
        assert value.decode() not in logged


# -- ledger boxes: sealed under a key that outlives every put, shredded by erasure --------------


def seal(engine: Engine, box: Vault, member_id: str, plaintext: bytes, **kw: str) -> bytes:
    with engine.begin() as conn:
        return box.seal_for_ledger(conn.execute, member_id, plaintext, **kw)


def unseal(engine: Engine, box: Vault, member_id: str, blob: bytes, **kw: str) -> bytes | None:
    with engine.connect() as conn:
        return box.open_from_ledger(conn, member_id, blob, **kw)


def test_ledger_boxes_round_trip_with_one_length(engine: Engine) -> None:
    box, member = Vault(MASTER), new_member_id()
    put(engine, box, member, DATA)
    for plaintext in (b"", b"[]", b'[{"from":"2026-11-25","group":"hardship","to":null}]'):
        blob = seal(engine, box, member, plaintext)
        assert len(blob) == 24 + LEDGER_PADDED_SIZE + 16
        # Only a plaintext long enough not to occur in random bytes by chance
        # (a 2-byte one does, about once in 250 seals) can be looked for.
        assert len(plaintext) < 16 or plaintext not in blob
        assert unseal(engine, box, member, blob) == plaintext
    longest = b"x" * LEDGER_PLAINTEXT_MAX
    assert unseal(engine, box, member, seal(engine, box, member, longest)) == longest
    with pytest.raises(ValueError, match="at most"):
        seal(engine, box, member, longest + b"x")
    with pytest.raises(TypeError):
        seal(engine, box, member, "[]")  # type: ignore[arg-type]
    with pytest.raises(Invalid):
        seal(engine, box, member, b"[]", purpose="Not A Purpose")
    # Two seals of one plaintext differ (fresh nonces), and both open.
    first, second = seal(engine, box, member, b"[]"), seal(engine, box, member, b"[]")
    assert first != second


def test_ledger_box_format_is_as_documented(engine: Engine) -> None:
    """docs/events.md: an independent holder of the master key opens a box with libsodium."""
    box, member = Vault(MASTER), new_member_id()
    put(engine, box, member, DATA)
    blob = seal(engine, box, member, b"[]")
    wrapped = bytes(raw_row(engine, member)["ledger_key"])
    decrypt = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt
    key = decrypt(
        wrapped[24:], b"unionledger-vault/1 ledger-key " + member.encode(), wrapped[:24], MASTER
    )
    aad = b"unionledger-vault/1 ledger-seal sensitive-groups " + member.encode()
    padded = decrypt(blob[24:], aad, blob[:24], key)
    assert padded == b"[]" + b"\x80" + bytes(LEDGER_PADDED_SIZE - 3)


def test_put_keeps_the_ledger_key_and_old_boxes_open(engine: Engine) -> None:
    box, member = Vault(MASTER), new_member_id()
    put(engine, box, member, DATA)
    first = raw_row(engine, member)
    blob = seal(engine, box, member, b"old state")
    put(engine, box, member, PersonalData(DATA.name, DATA.id_number, "13800000000"), LATER)
    second = raw_row(engine, member)
    assert bytes(second["wrapped_key"]) != bytes(first["wrapped_key"])  # the data key rotates
    assert bytes(second["ledger_key"]) == bytes(first["ledger_key"])  # the ledger key does not
    assert unseal(engine, box, member, blob) == b"old state"


def test_erasure_shreds_ledger_boxes(engine: Engine) -> None:
    box, member, kept = Vault(MASTER), new_member_id(), new_member_id()
    put(engine, box, member, DATA)
    put(engine, box, kept, DATA)
    blob, other = seal(engine, box, member, b"[]"), seal(engine, box, kept, b"[]")
    erase(engine, box, member)
    assert unseal(engine, box, member, blob) is None
    assert unseal(engine, box, kept, other) == b"[]"
    with pytest.raises(Erased):
        seal(engine, box, member, b"[]")
    with engine.connect() as conn:
        assert box.open_many_from_ledger(conn, {member: blob, kept: other}) == {
            member: None,
            kept: b"[]",
        }


def test_a_member_without_a_row_or_a_key(engine: Engine) -> None:
    box, member = Vault(MASTER), new_member_id()
    with pytest.raises(VaultCorrupt):
        seal(engine, box, member, b"[]")
    assert unseal(engine, box, member, secrets.token_bytes(296)) is None
    # A row from before ledger keys opens nothing until it gets one, at a put or a seal.
    put(engine, box, member, DATA)
    set_column(engine, member, ledger_key=None)
    assert unseal(engine, box, member, secrets.token_bytes(296)) is None
    blob = seal(engine, box, member, b"[]")
    assert raw_row(engine, member)["ledger_key"] is not None
    assert unseal(engine, box, member, blob) == b"[]"
    set_column(engine, member, ledger_key=None)
    put(engine, box, member, DATA, LATER)
    assert raw_row(engine, member)["ledger_key"] is not None


def test_ledger_boxes_are_bound_to_member_purpose_key_and_bytes(engine: Engine) -> None:
    box, a, b = Vault(MASTER), new_member_id(), new_member_id()
    put(engine, box, a, DATA)
    put(engine, box, b, DATA)
    blob = seal(engine, box, a, b"[]")
    flipped = bytearray(blob)
    flipped[40] ^= 1
    for member, bad, kw in [
        (b, blob, {}),  # another member's box
        (a, blob, {"purpose": "something-else"}),
        (a, bytes(flipped), {}),
        (a, blob[:30], {}),
        (a, b"", {}),
    ]:
        with pytest.raises(VaultCorrupt) as info:
            unseal(engine, box, member, bad, **kw)
        assert_no_personal_values(info.value)
    with pytest.raises(VaultCorrupt):
        unseal(engine, Vault(bytes(32)), a, blob)  # the wrong master key
    set_column(engine, a, ledger_key=bytes(raw_row(engine, b)["ledger_key"]))
    with pytest.raises(VaultCorrupt):  # a wrapped ledger key moved to another member
        unseal(engine, box, a, blob)


# -- with the sequencer: the vault write commits with the events, or not at all ----------------


def test_vault_writes_commit_and_roll_back_with_the_batch(ledger: Ledger) -> None:
    box = Vault(MASTER)
    joined, failed = new_member_id(), new_member_id()

    def join(tx: Any) -> None:
        box.put(tx.execute, joined, DATA, NOW)
        tx.append("MemberJoined", "test", {"member": joined})

    def join_then_fail(tx: Any) -> None:
        box.put(tx.execute, failed, DATA, NOW)
        raise Invalid("refused after writing")

    ledger.sequencer.execute(join)
    with pytest.raises(Invalid):
        ledger.sequencer.execute(join_then_fail)
    with ledger.engine.connect() as conn:
        assert box.get(conn, joined) == DATA
        assert box.get(conn, failed) is None
    with ledger.engine.connect() as conn:
        entries = b"".join(
            bytes(v) for v in conn.execute(text("SELECT data FROM log_entries")).scalars()
        )
    assert joined.encode() in entries
    for value in personal_values(DATA):
        assert value not in entries


# -- properties -----------------------------------------------------------------------------

cjk = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
names = st.one_of(
    st.text(cjk, min_size=1, max_size=8),
    st.builds(
        lambda a, b: f"{a}·{b}",
        st.text(cjk, min_size=1, max_size=6),
        st.text(cjk, min_size=1, max_size=6),
    ),
)
employers = st.none() | st.text(
    st.characters(categories=["L", "N", "P", "S", "Zs"]), min_size=1, max_size=128
).filter(lambda s: s.strip() != "")


def test_round_trip_property(engine: Engine) -> None:
    box = Vault(MASTER)

    @settings(max_examples=40)
    @given(name=names, employer=employers, seed=st.integers(0, 2**32), mobile=st.integers(0, 10**9))
    def round_trip(name: str, employer: str | None, seed: int, mobile: int) -> None:
        phone = f"1{3 + mobile % 7}{mobile % 10**9:09d}"
        data = PersonalData(name, synthetic_id_number(random.Random(seed)), phone, employer)
        member = new_member_id()
        put(engine, box, member, data)
        assert get(engine, box, member) == data
        assert_holds_none_of(raw_row(engine, member), data)

    round_trip()
