"""Keyring files: encryption at rest, permissions, and every way a file can be bad."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys import (
    CorruptKeyFile,
    KdfParams,
    Keyring,
    KeyringExists,
    KeyringMissing,
    KeyStore,
    PrivateKey,
    Role,
    WrongPassphrase,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PASS = "correct horse battery staple"
FAST = KdfParams.fastest()


def sample_ring() -> Keyring:
    ring = Keyring()
    for role in (Role.ROOT, Role.LOG, Role.API):
        ring, _ = ring.rotate(role, T0)
    ring, issuer = ring.rotate(Role.ISSUER, T0, scope="110000")
    ring = ring.revoke(issuer.kid, T0 + timedelta(days=3), "test")
    ring, _ = ring.register(Role.STATION, PrivateKey.generate().public_key, T0, scope="ST-1")
    return ring


def same(a: Keyring, b: Keyring) -> bool:
    return sorted(a, key=lambda r: r.kid) == sorted(b, key=lambda r: r.kid) and dict(
        a.private_keys()
    ) == dict(b.private_keys())


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    s = KeyStore(tmp_path / "data")
    s.create(sample_ring(), PASS, kdf=FAST)
    return s


def test_round_trip_keeps_records_and_private_keys(tmp_path: Path) -> None:
    ring = sample_ring()
    store = KeyStore(tmp_path)
    store.create(ring, PASS, kdf=FAST)
    assert same(store.load(PASS), ring)
    public = store.load_public()
    assert sorted(public, key=lambda r: r.kid) == sorted(ring, key=lambda r: r.kid)
    assert not public.private_keys()


def test_file_is_private_and_holds_no_secret_in_clear(store: KeyStore) -> None:
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.folder.stat().st_mode) == 0o700
    text = store.path.read_text()
    assert PASS not in text
    for key in store.load(PASS).private_keys().values():
        seed = key.seed()
        assert seed.hex() not in text
        from keys import b64url_encode

        assert b64url_encode(seed) not in text
    assert not list(store.folder.glob("*.tmp"))


def test_default_cost_is_argon2id_above_owasp_minimum(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.create(Keyring(), PASS)
    kdf = json.loads(store.path.read_text())["kdf"]
    assert kdf["alg"] == "argon2id13"
    assert kdf["memlimit"] >= 19 * 1024 * 1024
    assert kdf["opslimit"] >= 2


def test_wrong_passphrase(store: KeyStore) -> None:
    with pytest.raises(WrongPassphrase) as info:
        store.load("not the passphrase")
    assert PASS not in str(info.value)
    with pytest.raises(WrongPassphrase):
        store.load("")


def test_save_refuses_a_wrong_passphrase_and_keeps_the_file(store: KeyStore) -> None:
    before = store.path.read_bytes()
    with pytest.raises(WrongPassphrase):
        store.save(Keyring(), "typo")
    assert store.path.read_bytes() == before


def test_save_refuses_to_drop_private_keys(store: KeyStore) -> None:
    with pytest.raises(CorruptKeyFile, match="drop"):
        store.save(store.load_public(), PASS)


def test_save_keeps_passphrase_and_rotation_survives(store: KeyStore) -> None:
    ring, record = store.load(PASS).rotate(Role.LOG, T0 + timedelta(days=1))
    store.save(ring, PASS)
    loaded = store.load(PASS)
    assert loaded.has_private(record.kid)
    assert same(loaded, ring)


def test_create_refuses_to_overwrite(store: KeyStore) -> None:
    with pytest.raises(KeyringExists):
        store.create(Keyring(), PASS, kdf=FAST)


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyringMissing):
        KeyStore(tmp_path).load(PASS)


@pytest.mark.parametrize("keep", [0, 1, 10, 100, 1000])
def test_truncated_file(store: KeyStore, keep: int) -> None:
    store.path.write_bytes(store.path.read_bytes()[:keep])
    with pytest.raises(CorruptKeyFile):
        store.load(PASS)


@pytest.mark.parametrize(
    "content", [b"\xff\xfe\x00", b"[]", b'{"format": "other/1"}', b"null", b"{}"]
)
def test_not_a_keyring(store: KeyStore, content: bytes) -> None:
    store.path.write_bytes(content)
    with pytest.raises(CorruptKeyFile):
        store.load(PASS)


def _edit(store: KeyStore, change) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(store.path.read_text())
    change(doc)
    store.path.write_text(json.dumps(doc))


def test_damaged_private_key_is_not_mistaken_for_a_wrong_passphrase(store: KeyStore) -> None:
    def flip(doc: dict) -> None:  # type: ignore[type-arg]
        entry = next(e for e in doc["keys"] if "private" in e)
        sealed = entry["private"]
        entry["private"] = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]

    _edit(store, flip)
    with pytest.raises(CorruptKeyFile, match="damaged"):
        store.load(PASS)


def test_swapping_sealed_keys_between_records_is_detected(store: KeyStore) -> None:
    def swap(doc: dict) -> None:  # type: ignore[type-arg]
        sealed = [e for e in doc["keys"] if "private" in e]
        sealed[0]["private"], sealed[1]["private"] = sealed[1]["private"], sealed[0]["private"]

    _edit(store, swap)
    with pytest.raises(CorruptKeyFile):
        store.load(PASS)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["kdf"].update(salt="AAAA"),
        lambda d: d["kdf"].update(memlimit=1 << 40),
        lambda d: d["kdf"].update(alg="scrypt"),
        lambda d: d["keys"][0].update(role="emperor"),
        lambda d: d["keys"][0].update(kid="x" * 43),
        lambda d: d["keys"][0].update(not_before="yesterday"),
        lambda d: d.update(keys="none"),
        lambda d: d["keys"][0].update(jwk="not an object"),
        lambda d: d["keys"].append(d["keys"][0]),  # the same key id twice
        lambda d: d.update(aead="aes-128-ecb"),
        lambda d: d.pop("check"),
        lambda d: d["kdf"].update(opslimit="3"),
        lambda d: d["keys"].__setitem__(0, 42),
    ],
)
def test_altered_metadata(store: KeyStore, change) -> None:  # type: ignore[no-untyped-def]
    _edit(store, change)
    with pytest.raises(CorruptKeyFile):
        store.load(PASS)


@given(
    roles=st.lists(st.sampled_from([Role.ROOT, Role.LOG, Role.API]), max_size=4),
    revoke_days=st.lists(st.integers(0, 100), max_size=3),
    passphrase=st.text(min_size=1, max_size=30),
)
def test_serialisation_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    roles: list[Role],
    revoke_days: list[int],
    passphrase: str,
) -> None:
    ring = Keyring()
    for i, role in enumerate(roles):
        ring, _ = ring.rotate(role, T0 + timedelta(days=i), lead_time=timedelta(0))
    for record, days in zip(list(ring), revoke_days, strict=False):
        ring = ring.revoke(record.kid, T0 + timedelta(days=days))
    store = KeyStore(tmp_path_factory.mktemp("ring"))
    store.create(ring, passphrase, kdf=FAST)
    assert same(store.load(passphrase), ring)


def test_secrets_are_sealed_kept_and_never_replaced(tmp_path: Path) -> None:
    ring = sample_ring().with_secret("vault-master").with_secret("member-pseudonym")
    assert ring.with_secret("vault-master").secret("vault-master") == ring.secret("vault-master")
    store = KeyStore(tmp_path)
    store.create(ring, PASS, kdf=FAST)
    loaded = store.load(PASS)
    assert loaded.secret("vault-master") == ring.secret("vault-master")
    assert loaded.secret_names() == ["member-pseudonym", "vault-master"]
    assert ring.secret("vault-master").hex() not in store.path.read_text()
    assert store.load_public().secret_names() == []
    # Rotating a key keeps the secrets; dropping one is refused.
    store.save(loaded.rotate(Role.LOG, T0 + timedelta(days=1))[0], PASS)
    assert store.load(PASS).secret("member-pseudonym") == ring.secret("member-pseudonym")
    current = store.load(PASS)
    with pytest.raises(CorruptKeyFile, match="secret"):
        store.save(Keyring(current, current.private_keys()), PASS)


def test_a_damaged_secret_is_reported(store: KeyStore) -> None:
    ring = store.load(PASS).with_secret("vault-master")
    store.save(ring, PASS)

    def flip(doc: dict) -> None:  # type: ignore[type-arg]
        sealed = doc["secrets"]["vault-master"]
        doc["secrets"]["vault-master"] = (
            sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
        )

    _edit(store, flip)
    with pytest.raises(CorruptKeyFile, match="vault-master"):
        store.load(PASS)


def test_bad_secret_names_and_sizes() -> None:
    from keys import MalformedKey

    with pytest.raises(MalformedKey):
        Keyring().with_secret("Vault Master")
    with pytest.raises(MalformedKey):
        Keyring().with_secret("short", b"x" * 31)
