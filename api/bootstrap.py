"""Setting up a data directory: keys, database schema and (with ``--demo``) demo data.

Used by ``unionledger init``, ``unionledger keys init``, ``unionledger accounts`` and
``unionledger serve --demo``. Every step is safe to run again: what exists is kept.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

import keys
from api.settings import DEMO_MARKER, ConfigError, Settings, warn
from ledger import unions
from ledger.db import make_engine
from ledger.domain import SYSTEM
from ledger.keyevents import KeyringConflict, keyring_on_chain
from ledger.projections import default_projections
from ledger.schema import init_schema
from ledger.sequencer import Sequencer, Tx
from verifier.credential import short_kid_collisions

# Where the team's shared reference data lives, relative to the repository (../shared/data).
_REPO = Path(__file__).resolve().parent.parent
NATIONAL_UNION_CODE = "100000"  # 中华全国总工会, the root of the union tree


def shared_data_dir() -> Path:
    return Path(os.environ.get("UNIONLEDGER_SHARED_DATA", _REPO.parent / "shared" / "data"))


@dataclass(frozen=True)
class Province:
    code: str
    name_zh: str
    name_en: str
    federation_zh: str


def load_provinces(path: Path | None = None) -> list[Province]:
    """The 31 provincial federations from ``provinces.csv`` (GB/T 2260 codes).

    Raises:
        FileNotFoundError: the reference data is not there.
    """
    source = path or shared_data_dir() / "provinces.csv"
    with source.open(encoding="utf-8", newline="") as f:
        return [
            Province(row["code"], row["name_zh"], row["name_en"], row["federation_zh"])
            for row in csv.DictReader(f)
        ]


# The keyring's symmetric secrets: what each is for is in docs/keys.md.
SECRETS = ("accounts", "member-pseudonym", "vault-master")


def _secret_in_use(engine: Engine, name: str) -> bool:
    """Whether the database holds data that only the keyring secret ``name`` opens or matches:
    the vault's rows (``vault-master``), members (``member-pseudonym``: their ids and keyed
    hashes), TOTP secrets (``accounts``)."""
    from sqlalchemy import exists, select  # noqa: PLC0415

    from ledger import accounts, members, vault  # noqa: PLC0415

    if name == "vault-master":
        query = select(exists().select_from(vault.vault))
    elif name == "member-pseudonym":
        query = select(exists().select_from(members.members))
    else:
        sealed = accounts.accounts.c
        query = select(
            exists().where(sealed.totp_secret.is_not(None) | sealed.totp_pending.is_not(None))
        )
    with engine.connect() as conn:
        return bool(conn.execute(query).scalar())


def ensure_secrets(
    store: keys.KeyStore, keyring: keys.Keyring, passphrase: str, engine: Engine
) -> keys.Keyring:
    """``keyring`` with every secret of :data:`SECRETS`, added to the file first when missing
    (a data directory made before the secret existed). Never replaces one, and never makes one
    that data in ``engine``'s database already needs: a keyring file that lost a secret (a bad
    edit, a partial restore) would otherwise get a new one, and every vault row or member
    pseudonym made with the old one would be lost for good.

    Raises:
        ConfigError: a missing secret is one the database's data needs.
    """
    missing = [name for name in SECRETS if name not in keyring.secret_names()]
    if not missing:
        return keyring
    needed = [name for name in missing if _secret_in_use(engine, name)]
    if needed:
        raise ConfigError(
            f"the keyring file {store.path} lacks the secret(s) {', '.join(needed)}, which data"
            " in the database needs: restore the keyring file from a backup (a new secret would"
            " make that data unreadable)"
        )
    with store.locked():
        ring = store.load(passphrase)
        for name in SECRETS:
            ring = ring.with_secret(name)
        store.save(ring, passphrase)
    return ring


def initial_keyring(now: datetime, issuer_scopes: tuple[str, ...] = ()) -> keys.Keyring:
    """A new keyring: one root, log and api key, an issuer key per scope, and the secrets."""
    ring = keys.Keyring()
    for name in SECRETS:
        ring = ring.with_secret(name)
    for role in (keys.Role.ROOT, keys.Role.LOG, keys.Role.API):
        ring, _ = ring.rotate(role, now)
    for scope in issuer_scopes:
        ring, _ = rotate_key(ring, keys.Role.ISSUER, now, scope=scope)
    return ring


def rotate_key(
    ring: keys.Keyring,
    role: keys.Role,
    now: datetime,
    *,
    scope: str | None = None,
    lead_time: timedelta | None = None,
) -> tuple[keys.Keyring, keys.KeyRecord]:
    """:meth:`keys.Keyring.rotate`, except that a new issuer key whose 4-byte short kid (the
    credential's key reference, docs/credentials.md section 7) collides with another issuer
    key's is drawn again: it has signed nothing yet, so nothing is lost."""
    for _ in range(16):
        candidate, record = ring.rotate(role, now, scope=scope, lead_time=lead_time)
        if role is not keys.Role.ISSUER or not short_kid_collisions(candidate):
            return candidate, record
    raise keys.KeysError("could not draw an issuer key with a short kid of its own")


def init_keys(
    settings: Settings, now: datetime, *, kdf: keys.KdfParams | None = None
) -> keys.Keyring:
    """Create the keyring of ``settings.data_dir`` unless it exists; return it unlocked.

    Raises:
        keys.WrongPassphrase: it exists and the passphrase does not open it.
        api.settings.ConfigError: no usable passphrase.
    """
    store = keys.KeyStore(settings.data_dir)
    passphrase = settings.passphrase()
    if settings.demo:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (settings.data_dir / DEMO_MARKER).write_text(
            "Made by --demo: its keys use the published development passphrase.\n"
        )
    if store.exists():
        return store.load(passphrase)
    scopes: tuple[str, ...] = (NATIONAL_UNION_CODE,)
    if settings.demo:
        try:
            scopes += tuple(p.code for p in load_provinces())
        except FileNotFoundError:
            warn(f"demo: no reference data at {shared_data_dir()}; national issuer key only")
    ring = initial_keyring(now, scopes)
    if settings.demo:
        ring = _demo_station(settings, ring, now)
    store.create(ring, passphrase, kdf=kdf)
    return ring


DEMO_STATION = "ST-DEMO-0001"


def demo_station_key_file(settings: Settings) -> Path:
    return settings.data_dir / f"demo-station-{DEMO_STATION}.key"


def _demo_station(settings: Settings, ring: keys.Keyring, now: datetime) -> keys.Keyring:
    """A demo station device: its key is made here (a real device makes its own) and its seed
    written beside the data (0600) so the demo can log in as a station; only the public key
    goes into the keyring, as for a real device."""
    device = keys.PrivateKey.generate()
    path = demo_station_key_file(settings)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(device.seed().hex() + "\n")
    ring, _ = ring.register(keys.Role.STATION, device.public_key, now, scope=DEMO_STATION)
    return ring


def init_data_dir(
    settings: Settings, now: datetime, *, kdf: keys.KdfParams | None = None
) -> keys.Keyring:
    """Create the data directory, its keys and its database schema (idempotent)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ring = init_keys(settings, now, kdf=kdf)
    engine = make_engine(settings.database_url)
    try:
        init_schema(engine)
    finally:
        engine.dispose()
    return ring


NATIONAL_UNION_NAME = "中华全国总工会"


def keyring_conflict(e: Exception) -> ConfigError:
    """What a server or a command says when the keyring file contradicts the ledger."""
    return ConfigError(
        f"the keyring file does not agree with the ledger (keyring-conflict: {e}): restore the"
        " keyring file that belongs to this data directory (docs/keys.md section 4.6)"
    )


@contextmanager
def ledger_writer(settings: Settings) -> Iterator[tuple[Engine, Sequencer]]:
    """The ledger of ``settings`` opened for writing by a command-line tool (the server may run
    beside it: writers exclude each other through the database). Closing writes a last
    checkpoint.

    Raises:
        ConfigError: no keyring in the data directory, or no usable passphrase.
        keys.KeysError: the keyring does not open.
    """
    from api.deps import log_signer  # noqa: PLC0415  (api.deps imports the web framework)

    store = keys.KeyStore(settings.data_dir)
    if not store.exists():
        raise ConfigError(
            f"{settings.data_dir} has no keyring: run `unionledger init --data-dir "
            f"{settings.data_dir}` first"
        )
    passphrase = settings.passphrase()
    keyring = store.load(passphrase)
    engine = make_engine(settings.database_url)
    writer = make_engine(settings.database_url, writer=True)
    try:
        init_schema(engine)
        keyring = ensure_secrets(store, keyring, passphrase, engine)
        live = [keyring]
        sequencer = Sequencer(
            writer,
            origin=settings.log_origin,
            signer=lambda: log_signer(settings, live[0]),
            projections=default_projections(),
        )
        try:
            try:
                live[0] = keyring_on_chain(sequencer, keyring)
            except KeyringConflict as e:
                raise keyring_conflict(e) from e
            yield engine, sequencer
        finally:
            sequencer.close()
    finally:
        writer.dispose()
        engine.dispose()


def seed_tree(sequencer: Sequencer, provinces: Sequence[Province] = ()) -> list[str]:
    """Create the national federation and the provincial federations ``provinces`` that do not
    exist yet, as the system; return the codes created (idempotent: nothing on a second run).

    Raises:
        ledger.domain.DomainError: a province's code or name is unusable (nothing is created
            then: all of it is one transaction).
    """

    def command(tx: Tx) -> list[str]:
        created = []
        if unions.get_union(tx.conn, NATIONAL_UNION_CODE) is None:
            unions.create_union(
                tx,
                SYSTEM,
                code=NATIONAL_UNION_CODE,
                name=NATIONAL_UNION_NAME,
                kind="national",
                parent=None,
            )
            created.append(NATIONAL_UNION_CODE)
        for p in provinces:
            if unions.get_union(tx.conn, p.code) is None:
                unions.create_union(
                    tx,
                    SYSTEM,
                    code=p.code,
                    name=p.federation_zh,
                    kind="provincial",
                    parent=NATIONAL_UNION_CODE,
                )
                created.append(p.code)
        return created

    return sequencer.execute(command)
