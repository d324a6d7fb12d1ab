"""Keyring files: encryption at rest, permissions, and every way a file can be bad."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nacl.bindings
import pytest
from hypothesis import given
from hypothesis import strategies as st

import keys
import keys.jwk
import keys.store
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


# -- the records' seal (docs/keys.md sections 4.4 and 4.5) --------------------------------------


def _issuer(doc: dict) -> dict:  # type: ignore[type-arg]
    return next(e for e in doc["keys"] if e["role"] == "issuer")


def _public_station(doc: dict) -> dict:  # type: ignore[type-arg]
    return next(e for e in doc["keys"] if e["role"] == "station")


def _unrevoke(doc: dict) -> None:  # type: ignore[type-arg]
    issuer = _issuer(doc)
    issuer.pop("revoked_at")
    issuer.pop("revocation_reason")


def _add_station(doc: dict) -> None:  # type: ignore[type-arg]
    public = PrivateKey.generate().public_key
    doc["keys"].append(
        {
            "kid": public.key_id,
            "role": "station",
            "jwk": public.to_jwk(),
            "not_before": "2026-01-01T00:00:00Z",
            "scope": "ST-THIEF",
        }
    )


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(_unrevoke, id="un-revoke"),
        pytest.param(lambda d: _issuer(d).update(revoked_at="2027-01-01T00:00:00Z"), id="later"),
        pytest.param(lambda d: _issuer(d).update(scope="440000"), id="re-scope"),
        pytest.param(lambda d: _issuer(d).update(revocation_reason="other"), id="reason"),
        pytest.param(lambda d: _issuer(d).update(not_before="2025-01-01T00:00:00Z"), id="window"),
        pytest.param(lambda d: _public_station(d).update(not_after="2030-01-01T00:00:00Z")),
        pytest.param(_add_station, id="add-a-station-key"),
        pytest.param(lambda d: d["keys"].remove(_public_station(d)), id="drop-a-public-key"),
        pytest.param(lambda d: d.update(records=d["check"]), id="another-seal"),
    ],
)
def test_records_changed_without_the_passphrase_are_refused(store: KeyStore, change) -> None:  # type: ignore[no-untyped-def]
    _edit(store, change)
    with pytest.raises(CorruptKeyFile, match="without the passphrase"):
        store.load(PASS)
    with pytest.raises(CorruptKeyFile):  # nor can a key-changing command write over it
        store.save(store.load(PASS, accept_unsealed=True), PASS)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda d: _issuer(d).update(extra="member"), id="unknown-member"),
        pytest.param(lambda d: _issuer(d).update(not_after=None), id="null-window"),
        pytest.param(lambda d: _issuer(d).update(revocation_reason=7), id="number"),
        pytest.param(lambda d: _issuer(d)["jwk"].update(alg="EdDSA"), id="jwk-member"),
        pytest.param(lambda d: _issuer(d).update(scope="\ud800"), id="lone-surrogate"),
    ],
)
def test_members_the_format_does_not_define_make_the_file_damaged(
    store: KeyStore,
    change,  # type: ignore[no-untyped-def]
) -> None:
    """docs/keys.md 4.2: only the listed members, each a string (``private`` may be null):
    so the records' bytes are their JCS form, and no member escapes what the seal means.
    Also without the passphrase (``keys list``), and ``reseal`` does not take them either."""
    _edit(store, change)
    with pytest.raises(CorruptKeyFile, match="a key entry"):
        store.load_public()
    with pytest.raises(CorruptKeyFile, match="a key entry"):
        store.load(PASS, accept_unsealed=True)


def test_a_file_without_the_seal_is_refused_and_reseal_repairs_it(store: KeyStore) -> None:
    before = store.load(PASS)
    _edit(store, lambda d: d.pop("records"))
    with pytest.raises(CorruptKeyFile, match="keys reseal"):
        store.load(PASS)
    ring = store.load(PASS, accept_unsealed=True)
    store.save(ring, PASS, accept_unsealed=True)
    assert same(store.load(PASS), before)


def test_reseal_keeps_a_deliberate_edit(store: KeyStore) -> None:
    _edit(store, _unrevoke)
    ring = store.load(PASS, accept_unsealed=True)
    store.save(ring, PASS, accept_unsealed=True)
    issuer = next(r for r in store.load(PASS) if r.role is Role.ISSUER)
    assert issuer.revoked_at is None


def test_a_wrong_passphrase_is_reported_before_the_seal(store: KeyStore) -> None:
    _edit(store, _unrevoke)
    with pytest.raises(WrongPassphrase):
        store.load("not the passphrase")


def test_the_seal_depends_on_neither_order_nor_layout(store: KeyStore) -> None:
    before = store.load(PASS)
    doc = json.loads(store.path.read_text())
    doc["keys"].reverse()
    doc["keys"] = [dict(reversed(list(entry.items()))) for entry in doc["keys"]]
    store.path.write_text(json.dumps(dict(reversed(list(doc.items()))), indent=7))
    assert same(store.load(PASS), before)


def test_records_aad_known_answer() -> None:
    """The exact bytes of docs/keys.md section 4.4's example."""
    entries = [
        {
            "kid": "b-kid",
            "role": "station",
            "jwk": {"x": "X2", "kty": "OKP", "crv": "Ed25519"},
            "not_before": "2026-12-07T00:00:00Z",
            "scope": "站-1",
            "private": "ignored",
        },
        {"role": "root", "kid": "a-kid", "not_before": "2026-12-07T00:00:00Z", "jwk": {}},
    ]
    assert keys.store.records_aad(entries) == (
        b"unionledger-keyring/1 records\n"
        b'[{"jwk":{},"kid":"a-kid","not_before":"2026-12-07T00:00:00Z","role":"root"},'
        b'{"jwk":{"crv":"Ed25519","kty":"OKP","x":"X2"},"kid":"b-kid",'
        b'"not_before":"2026-12-07T00:00:00Z","role":"station","scope":"\xe7\xab\x99-1"}]'
    )


def test_the_seal_is_a_tag_over_the_records_under_the_file_key(store: KeyStore) -> None:
    """As an independent reader computes it: XChaCha20-Poly1305 of the empty plaintext with
    the records as associated data, under K, opens."""
    doc = json.loads(store.path.read_text())
    salt = keys.jwk.b64url_decode(doc["kdf"]["salt"])
    key = FAST.derive(PASS, salt)
    blob = keys.jwk.b64url_decode(doc["records"])
    assert len(blob) == 24 + 16
    assert len(doc["records"]) == 54
    opened = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        blob[24:], keys.store.records_aad(doc["keys"]), blob[:24], key
    )
    assert opened == b""


@given(
    member=st.sampled_from(["role", "scope", "not_before", "not_after", "revoked_at", "kid"]),
    value=st.one_of(st.none(), st.text(max_size=30), st.integers()),
    index=st.integers(0, 5),
)
def test_any_edit_of_a_record_is_refused(
    tmp_path_factory: pytest.TempPathFactory, member: str, value: object, index: int
) -> None:
    store = KeyStore(tmp_path_factory.mktemp("ring"))
    store.create(sample_ring(), PASS, kdf=FAST)
    doc = json.loads(store.path.read_text())
    entry = doc["keys"][index % len(doc["keys"])]
    if entry.get(member) == value or (value is None and member not in entry):
        return  # not an edit
    if value is None:
        entry.pop(member, None)
    else:
        entry[member] = value
    store.path.write_text(json.dumps(doc))
    with pytest.raises(CorruptKeyFile):
        store.load(PASS)
