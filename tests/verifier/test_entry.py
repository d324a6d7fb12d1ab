"""Entries: construction, parsing, and every malformed field refused."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifier.canonical import canonical_bytes
from verifier.entry import (
    GENESIS_PREV,
    format_entry_time,
    make_entry,
    parse_entry,
    parse_entry_time,
    seconds_entry_time,
)
from verifier.errors import EntryError

GOOD = {
    "index": 0,
    "time": "2026-11-25T08:46:12.123456Z",
    "type": "MemberJoined",
    "actor": "kid-abc",
    "body": {"member": "p1"},
    "prev": GENESIS_PREV,
}


def test_known_answer() -> None:
    entry = make_entry(**GOOD)  # type: ignore[arg-type]
    assert entry.data == (
        b'{"actor":"kid-abc","body":{"member":"p1"},"index":0,"prev":"' + b"0" * 64 + b'",'
        b'"time":"2026-11-25T08:46:12.123456Z","type":"MemberJoined","v":1}'
    )
    assert entry.hash == hashlib.sha256(entry.data).digest()
    assert entry.leaf_hash == hashlib.sha256(b"\x00" + entry.data).digest()
    assert parse_entry(entry.data) == entry


@given(
    index=st.integers(0, 2**53 - 1),
    body=st.dictionaries(st.text(max_size=5), st.integers(-(2**53) + 1, 2**53 - 1) | st.text()),
    prev=st.binary(min_size=32, max_size=32),
)
def test_round_trip(index: int, body: dict[str, object], prev: bytes) -> None:
    entry = make_entry(**{**GOOD, "index": index, "body": body, "prev": prev})  # type: ignore[arg-type]
    assert parse_entry(entry.data) == entry


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("index", -1),
        ("index", True),
        ("time", "2026-11-25T08:46:12Z"),
        ("time", "2026-11-25T08:46:12.123456Z\n"),
        ("time", "2026-11-25 08:46:12.123456Z"),
        ("type", "memberJoined"),
        ("type", "MemberJoined\n"),
        ("type", ""),
        ("actor", ""),
        ("actor", "x" * 129),
        ("body", []),
    ],
)
def test_malformed_fields_are_refused(field: str, value: object) -> None:
    with pytest.raises(EntryError):
        make_entry(**{**GOOD, field: value})  # type: ignore[arg-type]
    raw = {**GOOD, "prev": "0" * 64, "v": 1, field: value}
    with pytest.raises(EntryError):
        parse_entry(canonical_bytes(raw))


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(v=2),
        lambda d: d.update(prev="0" * 63),
        lambda d: d.update(prev="A" * 64),
        lambda d: d.update(prev="0" * 64 + "\n"),
        lambda d: d.update(extra=1),
        lambda d: d.pop("actor"),
    ],
)
def test_malformed_stored_entries_are_refused(change) -> None:  # type: ignore[no-untyped-def]
    raw = {**GOOD, "prev": "0" * 64, "v": 1}
    change(raw)
    with pytest.raises(EntryError):
        parse_entry(canonical_bytes(raw))


def test_non_canonical_bytes_are_refused() -> None:
    data = make_entry(**GOOD).data  # type: ignore[arg-type]
    with pytest.raises(EntryError, match="canonical"):
        parse_entry(data.replace(b'"index":0', b'"index": 0'))
    with pytest.raises(EntryError):
        make_entry(**{**GOOD, "body": {"amount": 1.5}})  # type: ignore[arg-type]


def test_time_format() -> None:
    from datetime import UTC, datetime

    t = datetime(2026, 11, 25, 8, 46, 12, 123456, tzinfo=UTC)
    assert format_entry_time(t) == "2026-11-25T08:46:12.123456Z"
    assert parse_entry_time(format_entry_time(t)) == t
    with pytest.raises(ValueError, match="naive"):
        format_entry_time(datetime(2026, 1, 1))


def test_impossible_dates_and_oversized_entries_are_refused() -> None:
    for time in ("2026-02-30T00:00:00.000000Z", "2026-13-01T00:00:00.000000Z"):
        with pytest.raises(EntryError):
            make_entry(**{**GOOD, "time": time})  # type: ignore[arg-type]
    raw = {**GOOD, "prev": "0" * 64, "v": 1, "time": "2026-11-25T24:00:00.000000Z"}
    with pytest.raises(EntryError):
        parse_entry(canonical_bytes(raw))
    with pytest.raises(EntryError, match="at most 65535"):
        make_entry(**{**GOOD, "body": {"blob": "x" * 70_000}})  # type: ignore[arg-type]


def test_receipts_of_entries_check_the_entry_itself() -> None:
    from keys import PrivateKey
    from verifier.checkpoint import Checkpoint, sign_checkpoint
    from verifier.errors import ReceiptError
    from verifier.merkle import leaf_hash, root_from_leaf_hashes
    from verifier.note import NoteSigner
    from verifier.receipt import Receipt, verify_entry_receipt

    signer = NoteSigner("test.example/log", PrivateKey.generate())
    first = make_entry(**GOOD)  # type: ignore[arg-type]
    second = make_entry(**{**GOOD, "index": 1, "prev": first.hash})  # type: ignore[arg-type]
    leaves = [leaf_hash(first.data), leaf_hash(second.data)]
    note = sign_checkpoint(Checkpoint("test.example/log", 2, root_from_leaf_hashes(leaves)), signer)
    entry, cp = verify_entry_receipt(Receipt(1, second.data, (leaves[0],), note), signer.verifier())
    assert entry == second
    assert cp.size == 2
    # The right bytes at the wrong index: the Merkle proof is fine, the entry is not.
    swapped = [leaf_hash(second.data), leaf_hash(first.data)]
    note2 = sign_checkpoint(
        Checkpoint("test.example/log", 2, root_from_leaf_hashes(swapped)), signer
    )
    with pytest.raises(ReceiptError, match="index"):
        verify_entry_receipt(Receipt(0, second.data, (swapped[1],), note2), signer.verifier())


@given(st.integers(0, 253402300799))
def test_seconds_entry_time_is_format_entry_time(seconds: int) -> None:
    """The arithmetic formatting of a NumericDate agrees with the datetime one everywhere."""
    expected = format_entry_time(datetime.fromtimestamp(seconds, UTC))
    assert seconds_entry_time(seconds) == expected
    assert parse_entry_time(expected) == datetime.fromtimestamp(seconds, UTC)


@pytest.mark.parametrize("seconds", [-1, 253402300800])
def test_seconds_entry_time_outside_the_format_is_refused(seconds: int) -> None:
    with pytest.raises(ValueError, match=r"years 1970\.\.9999"):
        seconds_entry_time(seconds)
