"""Keyrings: current key, rotation ahead of use, revocation, verification by signing time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys import (
    DEFAULT_LEAD_TIMES,
    InvalidSignature,
    KeyExpired,
    KeyNotYetValid,
    KeyRecord,
    KeyRevoked,
    Keyring,
    KeyRoleMismatch,
    KeyScopeMismatch,
    MalformedKey,
    NoCurrentKey,
    PrivateKey,
    Role,
    UnknownKeyId,
)
from keys.keyring import RotationPending

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def ring_with_issuer() -> tuple[Keyring, KeyRecord]:
    return Keyring().rotate(Role.ISSUER, T0, scope="110000")


def test_first_key_is_valid_at_once_and_signs() -> None:
    ring, record = ring_with_issuer()
    assert record.not_before == T0
    assert ring.current(Role.ISSUER, T0, scope="110000") == record
    signature = ring.signer(Role.ISSUER, T0, scope="110000").sign(b"credential")
    ring.verify(record.kid, Role.ISSUER, T0 + DAY, signature, b"credential")


def test_rotation_publishes_ahead_and_hands_over_at_the_lead_time() -> None:
    ring, old = ring_with_issuer()
    ring, new = ring.rotate(Role.ISSUER, T0 + DAY, scope="110000")
    lead = DEFAULT_LEAD_TIMES[Role.ISSUER]
    assert lead == timedelta(days=30)
    assert new.not_before == T0 + DAY + lead
    assert ring.record(old.kid).not_after == new.not_before
    # Before the hand-over the old key signs; from it on the new one does.
    assert ring.current(Role.ISSUER, new.not_before - timedelta(seconds=1), "110000").kid == old.kid
    assert ring.current(Role.ISSUER, new.not_before, "110000").kid == new.kid
    # What the old key signed while current still verifies; nothing it "signed" later does.
    ring.verification_key(old.kid, Role.ISSUER, T0 + 10 * DAY)
    with pytest.raises(KeyExpired):
        ring.verification_key(old.kid, Role.ISSUER, new.not_before)
    with pytest.raises(KeyNotYetValid):
        ring.verification_key(new.kid, Role.ISSUER, T0 + 2 * DAY)


def test_a_second_rotation_while_one_is_pending_is_refused() -> None:
    ring, _ = ring_with_issuer()
    ring, _ = ring.rotate(Role.ISSUER, T0 + DAY, scope="110000")
    with pytest.raises(RotationPending):
        ring.rotate(Role.ISSUER, T0 + 2 * DAY, scope="110000")


def test_scopes_rotate_independently() -> None:
    ring, a = ring_with_issuer()
    ring, b = ring.rotate(Role.ISSUER, T0, scope="120000")
    assert b.not_before == T0  # no active key in that scope: valid at once
    assert ring.current(Role.ISSUER, T0, "110000") == a
    assert ring.current(Role.ISSUER, T0, "120000") == b


def test_revocation_refuses_signatures_from_its_time_on() -> None:
    ring, record = ring_with_issuer()
    key = ring.private_key(record.kid)
    ring = ring.revoke(record.kid, T0 + 5 * DAY, "device lost")
    ring.verify(record.kid, Role.ISSUER, T0 + 4 * DAY, key.sign(b"m"), b"m")
    with pytest.raises(KeyRevoked):
        ring.verify(record.kid, Role.ISSUER, T0 + 5 * DAY, key.sign(b"m"), b"m")
    with pytest.raises(NoCurrentKey):
        ring.current(Role.ISSUER, T0 + 6 * DAY, "110000")
    # An emergency rotation with no lead time restores signing at once.
    ring, fresh = ring.rotate(Role.ISSUER, T0 + 6 * DAY, scope="110000", lead_time=timedelta(0))
    assert ring.current(Role.ISSUER, T0 + 6 * DAY, "110000") == fresh


def test_revocation_can_move_earlier_never_later() -> None:
    ring, record = ring_with_issuer()
    ring = ring.revoke(record.kid, T0 + 5 * DAY)
    assert ring.revoke(record.kid, T0 + 9 * DAY).record(record.kid).revoked_at == T0 + 5 * DAY
    assert ring.revoke(record.kid, T0 + 2 * DAY).record(record.kid).revoked_at == T0 + 2 * DAY


def test_unknown_kid_and_wrong_role_are_specific_errors() -> None:
    ring, record = ring_with_issuer()
    with pytest.raises(UnknownKeyId):
        ring.verification_key("no-such-kid", Role.ISSUER, T0)
    with pytest.raises(KeyRoleMismatch):
        ring.verification_key(record.kid, Role.STATION, T0)
    with pytest.raises(UnknownKeyId):
        ring.revoke("no-such-kid", T0)


def test_a_key_of_another_scope_is_refused_when_the_scope_is_claimed() -> None:
    ring, _ = ring_with_issuer()
    ring, b = ring.rotate(Role.ISSUER, T0, scope="120000")
    signature = ring.private_key(b.kid).sign(b"m")
    ring.verify(b.kid, Role.ISSUER, T0, signature, b"m", scope="120000")
    with pytest.raises(KeyScopeMismatch):
        ring.verify(b.kid, Role.ISSUER, T0, signature, b"m", scope="110000")


def test_public_only_station_key_verifies_but_cannot_sign() -> None:
    device = PrivateKey.generate()
    ring, record = Keyring().register(Role.STATION, device.public_key, T0, scope="ST-0001")
    ring.verify(record.kid, Role.STATION, T0, device.sign(b"offline record"), b"offline record")
    with pytest.raises(UnknownKeyId):
        ring.private_key(record.kid)
    with pytest.raises(NoCurrentKey):
        ring.current(Role.STATION, T0, "ST-0001")


@pytest.mark.parametrize(
    ("role", "scope"), [(Role.ISSUER, None), (Role.STATION, None), (Role.ROOT, "110000")]
)
def test_scope_rules(role: Role, scope: str | None) -> None:
    with pytest.raises(MalformedKey, match="scope"):
        Keyring().rotate(role, T0, scope=scope)


def test_record_invariants() -> None:
    key = PrivateKey.generate().public_key
    other = PrivateKey.generate().public_key
    with pytest.raises(MalformedKey, match="thumbprint"):
        KeyRecord(kid=other.key_id, role=Role.LOG, public_key=key, not_before=T0)
    with pytest.raises(MalformedKey, match="later"):
        KeyRecord(key.key_id, Role.LOG, key, not_before=T0, not_after=T0)
    with pytest.raises(ValueError, match="naive"):
        KeyRecord(key.key_id, Role.LOG, key, not_before=datetime(2026, 1, 1))
    with pytest.raises(MalformedKey, match="scope"):
        KeyRecord(key.key_id, Role.ISSUER, key, not_before=T0, scope="bad scope!")


@given(
    message=st.binary(max_size=64),
    kid_index=st.integers(0, 42),
    replacement=st.characters(codec="ascii", categories=["L", "N"]),
)
def test_any_change_to_the_key_id_fails(message: bytes, kid_index: int, replacement: str) -> None:
    ring, record = ring_with_issuer()
    signature = ring.private_key(record.kid).sign(message)
    kid = list(record.kid)
    if kid[kid_index] == replacement:
        return
    kid[kid_index] = replacement
    with pytest.raises(UnknownKeyId):
        ring.verify("".join(kid), Role.ISSUER, T0, signature, message)


def test_a_signature_by_another_key_of_the_keyring_fails() -> None:
    ring, a = ring_with_issuer()
    ring, b = ring.rotate(Role.ISSUER, T0, scope="120000")
    signature = ring.private_key(b.kid).sign(b"m")
    with pytest.raises(InvalidSignature):
        ring.verify(a.kid, Role.ISSUER, T0, signature, b"m")


@given(
    offsets=st.lists(st.integers(0, 400), min_size=1, max_size=6),
    lead_days=st.integers(0, 60),
    probe=st.integers(0, 800),
)
def test_at_most_one_current_key_and_windows_never_overlap(
    offsets: list[int], lead_days: int, probe: int
) -> None:
    ring = Keyring()
    for offset in sorted(offsets):
        try:
            ring, _ = ring.rotate(Role.LOG, T0 + offset * DAY, lead_time=timedelta(days=lead_days))
        except RotationPending:
            continue
    at = T0 + probe * DAY
    valid = [r for r in ring if r.is_valid_at(at)]
    assert len(valid) <= 1
    if valid:
        assert ring.current(Role.LOG, at) == valid[0]


def test_record_dict_round_trip() -> None:
    ring, record = ring_with_issuer()
    ring = ring.revoke(record.kid, T0 + DAY, "lost")
    revoked = ring.record(record.kid)
    assert KeyRecord.from_dict(revoked.to_dict()) == revoked
    with pytest.raises(MalformedKey):
        KeyRecord.from_dict({**revoked.to_dict(), "role": "emperor"})
    with pytest.raises(MalformedKey):
        KeyRecord.from_dict({k: v for k, v in revoked.to_dict().items() if k != "jwk"})
