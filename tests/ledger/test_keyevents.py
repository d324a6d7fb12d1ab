"""The keyring on the chain (ledger/keyevents.py, docs/keys.md section 4.6, events.md section
15): the file's facts are recorded once, and an older file (a rollback) can neither un-revoke a
key nor reopen a closed window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

import keys
from ledger.keyevents import (
    KeyringConflict,
    chain_records,
    keyring_on_chain,
    merge,
    record_keyring,
)
from ledger.projections import compare, default_projections
from ledger.schema import log_entries
from tests.ledger.conftest import Ledger, open_ledger
from verifier.entry import parse_entry

T0 = datetime(2026, 12, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 7, tzinfo=UTC)


def first_ring() -> keys.Keyring:
    ring = keys.Keyring()
    for role in (keys.Role.ROOT, keys.Role.LOG, keys.Role.API):
        ring, _ = ring.rotate(role, T0)
    ring, _ = ring.rotate(keys.Role.ISSUER, T0, scope="100000")
    return ring


def entries(ledger: Ledger) -> list[tuple[str, dict[str, object]]]:
    with ledger.engine.connect() as conn:
        rows = conn.execute(select(log_entries.c.data).order_by(log_entries.c.idx)).all()
    return [(e.type, dict(e.body)) for e in (parse_entry(bytes(r.data)) for r in rows)]


def record(ledger: Ledger, ring: keys.Keyring) -> keys.Keyring:
    return keyring_on_chain(ledger.sequencer, ring)


def test_a_fresh_ledger_records_each_key_once(ledger: Ledger) -> None:
    ring = first_ring()
    merged = record(ledger, ring)
    published = entries(ledger)
    assert [t for t, _ in published] == ["KeyPublished"] * 4
    by_kid = {b["kid"]: b for _, b in published}
    for r in ring:
        assert by_kid[r.kid] == {
            "kid": r.kid,
            "role": r.role.value,
            "x": keys.b64url_encode(r.public_key.to_bytes()),
            "scope": r.scope,
            "not_before": keys.format_rfc3339(r.not_before),
            "not_after": None,
        }
    assert sorted(merged, key=lambda r: r.kid) == sorted(ring, key=lambda r: r.kid)
    assert dict(merged.private_keys()) == dict(ring.private_keys())
    record(ledger, ring)  # up to date: nothing more
    assert len(entries(ledger)) == 4


def test_a_revocation_survives_a_rollback_of_the_file(ledger: Ledger) -> None:
    old = first_ring()
    record(ledger, old)
    api = old.current(keys.Role.API, NOW)
    revoked = old.revoke(api.kid, NOW, "leaked")
    merged = record(ledger, revoked)
    revocation = {"kid": api.kid, "revoked_at": "2026-12-07T00:00:00Z"}
    assert entries(ledger)[-1] == ("KeyRevoked", revocation)
    assert merged.record(api.kid).revocation_reason == "leaked"
    # The whole file is put back as it was before the revocation:
    rolled_back = record(ledger, old)
    assert rolled_back.record(api.kid).revoked_at == NOW
    with pytest.raises(keys.KeyRevoked):
        rolled_back.verification_key(api.kid, keys.Role.API, NOW + timedelta(seconds=1))
    assert len(entries(ledger)) == 5  # the rollback appended nothing
    # An earlier revocation moves it earlier; a later one does not.
    record(ledger, old.revoke(api.kid, NOW - timedelta(days=1)))
    record(ledger, old.revoke(api.kid, NOW + timedelta(days=1)))
    assert [t for t, _ in entries(ledger)][5:] == ["KeyRevoked"]
    with ledger.engine.connect() as conn:
        assert chain_records(conn)[api.kid]["revoked_at"] == "2026-12-06T00:00:00Z"


def test_a_rotation_is_a_new_key_and_a_retired_one_and_a_rollback_cannot_reopen_it(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    old = first_ring()
    record(ledger, old)
    issuer = old.current(keys.Role.ISSUER, NOW, scope="100000")
    rotated, new = old.rotate(keys.Role.ISSUER, NOW, scope="100000")
    record(ledger, rotated)
    assert [t for t, _ in entries(ledger)][4:] == ["KeyPublished", "KeyRetired"]
    assert entries(ledger)[-1][1] == {"kid": issuer.kid, "not_after": "2027-01-06T00:00:00Z"}
    # Back to the file of before the rotation: the new key is known (public only), the old
    # key's window stays closed, so after the handover nothing can sign as this issuer. The
    # server says so in its log.
    assert not caplog.records
    merged = record(ledger, old)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1
    assert new.kid in warned[0]
    assert "restore the newest keyring file" in warned[0]
    assert new.kid in merged
    assert not merged.has_private(new.kid)
    assert merged.record(issuer.kid).not_after == new.not_before
    later = new.not_before + timedelta(days=1)
    assert merged.verification_key(new.kid, keys.Role.ISSUER, later).key_id == new.kid
    with pytest.raises(keys.NoCurrentKey):
        merged.signer(keys.Role.ISSUER, later, scope="100000")
    assert len(entries(ledger)) == 6


@pytest.mark.parametrize("change", ["scope", "not_before", "role"])
def test_a_file_that_contradicts_the_chain_is_refused(ledger: Ledger, change: str) -> None:
    ring = first_ring()
    record(ledger, ring)
    issuer = ring.current(keys.Role.ISSUER, NOW, scope="100000")
    fields = {
        "scope": {"scope": "440000"},
        "not_before": {"not_before": T0 - timedelta(days=1)},
        "role": {"role": keys.Role.STATION, "scope": "100000"},
    }[change]
    forged = keys.KeyRecord(
        kid=issuer.kid,
        role=fields.get("role", issuer.role),  # type: ignore[arg-type]
        public_key=issuer.public_key,
        not_before=fields.get("not_before", issuer.not_before),  # type: ignore[arg-type]
        scope=fields.get("scope", issuer.scope),  # type: ignore[arg-type]
    )
    others = [r for r in ring if r.kid != issuer.kid]
    bad = keys.Keyring([*others, forged], dict(ring.private_keys()))
    with pytest.raises(KeyringConflict, match=issuer.kid):
        record(ledger, bad)
    with ledger.engine.connect() as conn, pytest.raises(KeyringConflict):
        merge(bad, chain_records(conn))
    assert len(entries(ledger)) == 4  # nothing appended


def test_replaying_the_chain_gives_the_same_table(ledger: Ledger) -> None:
    ring = first_ring()
    record(ledger, ring)
    api = ring.current(keys.Role.API, NOW)
    ring = ring.revoke(api.kid, NOW)
    ring, _ = ring.rotate(keys.Role.LOG, NOW)
    record(ledger, ring)
    assert compare(ledger.engine, default_projections()) == []


def test_the_record_command_appends_nothing_when_up_to_date(ledger: Ledger) -> None:
    ring = first_ring()
    record(ledger, ring)
    assert ledger.sequencer.execute(lambda tx: record_keyring(tx, ring)) == []


# -- property: whatever files come and go, the chain keeps the earliest facts ------------------

STEP = st.one_of(
    st.tuples(st.just("rotate"), st.sampled_from([keys.Role.API, keys.Role.LOG])),
    st.tuples(st.just("revoke"), st.integers(0, 6), st.integers(-3, 3)),
    st.tuples(st.just("rollback"), st.integers(0, 20)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=1, max_size=8))
def test_any_history_of_files_keeps_the_earliest_end_and_revocation(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[object, ...]]
) -> None:
    url = f"sqlite:///{tmp_path_factory.mktemp('keys') / 'ledger.db'}"
    ledger = open_ledger(url, keys.PrivateKey.generate(), checkpoint_interval=0.0)
    try:
        files = [first_ring()]
        current = files[0]
        earliest: dict[str, dict[str, datetime | None]] = {}

        def note(ring: keys.Keyring) -> None:
            for r in ring:
                seen = earliest.setdefault(r.kid, {"not_after": None, "revoked_at": None})
                for name in ("not_after", "revoked_at"):
                    value = getattr(r, name)
                    if value is not None and (seen[name] is None or value < seen[name]):
                        seen[name] = value

        for n, step in enumerate(steps):
            at = NOW + timedelta(days=n)
            if step[0] == "rotate":
                role = step[1]
                assert isinstance(role, keys.Role)
                try:
                    current, _ = current.rotate(role, at, lead_time=timedelta(0))
                except keys.KeysError:
                    continue
            elif step[0] == "revoke":
                kids = sorted(r.kid for r in current)
                kid = kids[int(step[1]) % len(kids)]  # type: ignore[call-overload]
                current = current.revoke(kid, at + timedelta(days=int(step[2])))  # type: ignore[call-overload]
            else:
                current = files[int(step[1]) % len(files)]  # type: ignore[call-overload]
            files.append(current)
            note(current)
            merged = record(ledger, current)
            size = len(entries(ledger))
            assert record(ledger, current) is not None
            assert len(entries(ledger)) == size  # recording again appends nothing
            assert {r.kid for r in merged} == set(earliest)
            for r in merged:
                assert r.not_after == earliest[r.kid]["not_after"]
                assert r.revoked_at == earliest[r.kid]["revoked_at"]
                assert merged.has_private(r.kid) == current.has_private(r.kid)
    finally:
        ledger.sequencer.close()
        ledger.writer.dispose()
        ledger.engine.dispose()
