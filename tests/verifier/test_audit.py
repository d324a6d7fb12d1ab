"""The auditor catches every kind of tampering with a real stored ledger."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys import PrivateKey
from ledger.sequencer import Event
from tests.ledger.appender import ORIGIN
from tests.ledger.conftest import open_ledger
from verifier.audit import (
    AuditFailure,
    AuditState,
    ExportSource,
    SourceError,
    audit,
    write_export,
)
from verifier.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from verifier.entry import make_entry, parse_entry
from verifier.merkle import leaf_hash, root_from_leaf_hashes
from verifier.note import NoteSigner

KEY = PrivateKey.from_seed(hashlib.sha256(b"audit test log key").digest())
SIGNER = NoteSigner(ORIGIN, KEY)
VERIFIER = SIGNER.verifier()
SIZE = 60


class ListSource:
    def __init__(self, entries: list[bytes], note: str) -> None:
        self.data = entries
        self.note = note

    def checkpoint(self) -> str:
        return self.note

    def entries(self, start: int, end: int) -> Iterator[bytes]:
        yield from self.data[start:end]


def _stored_ledger() -> tuple[list[bytes], str]:
    """A real ledger on SQLite, read back: its entries and latest checkpoint."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="ul-audit-"))
    lg = open_ledger(f"sqlite:///{folder / 'l.db'}", KEY, checkpoint_interval=0.0)
    try:
        for i in range(SIZE):
            lg.sequencer.append([Event("TestAppended", "test", {"i": i, "note": "é\u2028"})])
        lg.sequencer.checkpoint()
        latest = lg.reader.latest_checkpoint()
        assert latest is not None
        return lg.reader.entries(0, SIZE), latest.note
    finally:
        lg.sequencer.close()
        lg.writer.dispose()
        lg.engine.dispose()


ENTRIES, NOTE = _stored_ledger()
LAST_TIME = parse_entry(ENTRIES[-1]).time  # the stored ledger's entries carry today's times


def checkpoint_for(entries: list[bytes], signer: NoteSigner = SIGNER) -> str:
    root = root_from_leaf_hashes([leaf_hash(e) for e in entries])
    return sign_checkpoint(Checkpoint(ORIGIN, len(entries), root), signer)


def fails(entries: list[bytes], note: str = NOTE, **kwargs: object) -> AuditFailure:
    with pytest.raises(AuditFailure) as info:
        audit(ListSource(entries, note), VERIFIER, **kwargs)  # type: ignore[arg-type]
    return info.value


def test_the_untouched_ledger_verifies() -> None:
    result = audit(ListSource(ENTRIES, NOTE), VERIFIER)
    assert result.entries == SIZE
    assert result.state.size == SIZE


@given(i=st.integers(0, SIZE - 1), j=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_changed_bit_of_any_entry_is_caught(i: int, j: int, bit: int) -> None:
    changed = list(ENTRIES)
    data = bytearray(changed[i])
    data[j % len(data)] ^= 1 << bit
    changed[i] = bytes(data)
    failure = fails(changed)
    assert failure.index is None or failure.index <= i + 1


@given(i=st.integers(0, SIZE - 1))
def test_deleting_an_entry_is_caught(i: int) -> None:
    assert fails(ENTRIES[:i] + ENTRIES[i + 1 :]).index == i if i < SIZE - 1 else True


@given(i=st.integers(0, SIZE - 1), j=st.integers(0, SIZE - 1))
def test_swapping_entries_is_caught(i: int, j: int) -> None:
    if i == j:
        return
    changed = list(ENTRIES)
    changed[i], changed[j] = changed[j], changed[i]
    assert fails(changed).index == min(i, j)


@given(i=st.integers(0, SIZE - 1))  # one past the end is a newer, uncheckpointed entry
def test_inserting_an_entry_is_caught(i: int) -> None:
    fake = make_entry(
        index=i,
        time="2026-01-01T00:00:00.000000Z",
        type="TestAppended",
        actor="x",
        body={},
        prev=bytes(32),
    ).data
    fails([*ENTRIES[:i], fake, *ENTRIES[i:]])


def test_a_truncated_log_is_caught() -> None:
    assert fails(ENTRIES[:-1]).index == SIZE - 1


def test_a_forged_or_replaced_checkpoint_is_caught() -> None:
    other = NoteSigner(ORIGIN, PrivateKey.generate())
    assert "checkpoint" in str(fails(ENTRIES, checkpoint_for(ENTRIES, other)))
    assert "root" in str(fails(ENTRIES, checkpoint_for([*ENTRIES[:-1], ENTRIES[0]])))
    assert "checkpoint" in str(fails(ENTRIES, NOTE.replace(f"\n{SIZE}\n", f"\n{SIZE - 1}\n")))
    assert "checkpoint" in str(fails(ENTRIES, NOTE, origin="another.origin/log"))


def rewrite_from(k: int) -> list[bytes]:
    """History as a dishonest server with the log key would rewrite it: a valid chain."""
    out = list(ENTRIES[:k])
    prev = parse_entry(out[-1]).hash if out else bytes(32)
    for i in range(k, SIZE):
        e = make_entry(
            index=i,
            time=LAST_TIME,  # no earlier than the entries kept before k (time never goes back)
            type="TestAppended",
            actor="x",
            body={"new": i},
            prev=prev,
        )
        out.append(e.data)
        prev = e.hash
    return out


@given(k=st.integers(0, SIZE - 1), seen=st.integers(1, SIZE))
def test_rewritten_history_is_caught_by_the_remembered_state(k: int, seen: int) -> None:
    rewritten = rewrite_from(k)
    note = checkpoint_for(rewritten)
    state = AuditState(ORIGIN, seen, root_from_leaf_hashes([leaf_hash(e) for e in ENTRIES[:seen]]))
    if seen <= k:  # the part the last audit saw is intact: appending after it is legitimate
        audit(ListSource(rewritten, note), VERIFIER, previous=state)
    else:
        assert "rewritten" in str(fails(rewritten, note, previous=state))


def test_a_rolled_back_log_is_caught() -> None:
    state = audit(ListSource(ENTRIES, NOTE), VERIFIER).state
    shorter = ENTRIES[:10]
    assert "rolled back" in str(fails(shorter, checkpoint_for(shorter), previous=state))


def test_export_file_round_trip_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "ledger.export"
    with path.open("wb") as out:
        assert write_export(out, NOTE, iter(ENTRIES)) == SIZE
    with ExportSource(path) as source:
        assert audit(source, VERIFIER).entries == SIZE
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:-10]) + b"\n")  # truncated export
    with ExportSource(path) as source, pytest.raises(AuditFailure):
        audit(source, VERIFIER)
    path.write_bytes(b"not an export\n")
    with pytest.raises(SourceError):
        ExportSource(path)
    with pytest.raises(ValueError, match="newline"):
        write_export(io.BytesIO(), NOTE, iter([b"a\nb"]))


def test_state_round_trip() -> None:
    state = AuditState(ORIGIN, 5, bytes(range(32)))
    assert AuditState.from_json(state.to_json()) == state
    with pytest.raises(SourceError):
        AuditState.from_json('{"origin": "x", "size": -1, "root": "00"}')
    assert verify_checkpoint(NOTE, VERIFIER).size == SIZE


@pytest.mark.parametrize("bad", [0, 6, 7, 30, SIZE - 1])
def test_worker_processes_give_the_same_verdict_and_first_bad_index(
    monkeypatch: pytest.MonkeyPatch, bad: int
) -> None:
    import verifier.audit as audit_module

    monkeypatch.setattr(audit_module, "CHUNK_HEIGHT", 3)
    monkeypatch.setattr(audit_module, "CHUNK", 8)  # many chunks, several in flight
    assert audit(ListSource(ENTRIES, NOTE), VERIFIER, workers=2).entries == SIZE
    changed = list(ENTRIES)
    changed[bad] = changed[bad].replace(b'"i":', b'"j":')  # still canonical: breaks the chain
    changed[min(bad + 3, SIZE - 1)] = b"not json"  # a later parse failure must not win
    with pytest.raises(AuditFailure) as parallel:
        audit(ListSource(changed, NOTE), VERIFIER, workers=2)
    with pytest.raises(AuditFailure) as serial:
        audit(ListSource(changed, NOTE), VERIFIER, workers=0)
    assert parallel.value.index == serial.value.index
    assert str(parallel.value) == str(serial.value)
    assert serial.value.index in (bad, bad + 1)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize(("k", "seen"), [(3, 8), (8, 8), (9, 8), (5, 13), (20, 16), (30, 40)])
def test_chunked_audit_checks_the_remembered_root_inside_and_at_chunk_edges(
    monkeypatch: pytest.MonkeyPatch, workers: int, k: int, seen: int
) -> None:
    import verifier.audit as audit_module

    monkeypatch.setattr(audit_module, "CHUNK_HEIGHT", 3)
    monkeypatch.setattr(audit_module, "CHUNK", 8)
    rewritten = rewrite_from(k)
    note = checkpoint_for(rewritten)
    state = AuditState(ORIGIN, seen, root_from_leaf_hashes([leaf_hash(e) for e in ENTRIES[:seen]]))
    if seen <= k:
        audit(ListSource(rewritten, note), VERIFIER, previous=state, workers=workers)
    else:
        failure = fails(rewritten, note, previous=state, workers=workers)
        assert "rewritten" in str(failure)
