"""The personal-data vault: each member's personal data, encrypted under its own key, erasable.

Personal data never enters the ledger: events carry the pseudonymous member id (and keyed
hashes, see ``identity.py``). The name, identity number, phone and employer live here, one row
per member in table ``vault``:

- ``sealed``: the data as JSON, padded to a multiple of 128 bytes (so the ciphertext's length
  says little about the name's), sealed with XChaCha20-Poly1305-IETF under the member's data key
  with AAD ``unionledger-vault/1 data <member id>``;
- ``wrapped_key``: the 32-byte data key sealed under the master key (keyring secret
  ``vault-master``) with AAD ``unionledger-vault/1 key <member id>``.

Both are stored as ``nonce (24 bytes) || ciphertext``. The AAD binds every box to its member:
a wrapped key or a sealed blob copied to another member's row does not open.

Every :meth:`Vault.put` seals under a *fresh* data key (rotation, not reuse): it never needs to
unwrap the old key, and no two versions of a member's data share a key.

Erasure is crypto-shredding: :meth:`Vault.erase` sets ``wrapped_key`` and ``sealed`` to NULL and
records ``erased_at``; an erased member stays erased (:meth:`Vault.put` refuses them). Caveat for
operators: the old bytes can survive the UPDATE in database files (SQLite free pages and WAL,
PostgreSQL dead tuples and WAL) and in backups, and the master key opens an old wrapped key. The
erasure is complete only once those copies are gone, or once the master key they were wrapped
under is retired.

Writes go through an ``execute`` callable (a command passes ``tx.execute``, so the write commits
with its ledger events); reads take a connection. Nothing here logs, and no message, repr or
exception raised here contains a personal value.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nacl.bindings
import nacl.exceptions
from sqlalchemy import Column, Connection, CursorResult, Executable, LargeBinary, String, Table
from sqlalchemy import select as sql_select

from keys.keyring import Keyring
from ledger.domain import Conflict, DomainError, Invalid
from ledger.identity import (
    validate_employer,
    validate_id_number,
    validate_name,
    validate_phone,
)
from ledger.schema import metadata

MASTER_SECRET = "vault-master"  # noqa: S105  (the name of a keyring secret, not a secret)
FORMAT = "unionledger-vault/1"
KEY_SIZE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES  # 32
_NONCE_SIZE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
_TAG_SIZE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
_PAD_TO = 128
_MEMBER_ID = re.compile(r"[A-Za-z0-9._:-]{1,32}", re.ASCII)

Execute = Callable[[Executable], CursorResult[Any]]

vault = Table(
    "vault",
    metadata,
    Column("member_id", String(32), primary_key=True),
    Column("wrapped_key", LargeBinary, nullable=True),  # NULL once erased
    Column("sealed", LargeBinary, nullable=True),  # NULL once erased
    Column("erased_at", String(32), nullable=True),
    Column("updated_at", String(32), nullable=False),
)


class Erased(Conflict):
    """The member's personal data was erased: it cannot be read or written again."""

    code = "member-erased"


class VaultCorrupt(DomainError):
    """A vault row does not open: the wrong master key, or a row altered or swapped."""

    code = "vault-corrupt"
    status = 500


@dataclass(frozen=True, slots=True, repr=False)
class PersonalData:
    """A member's personal data, validated and normalised when built (the identity number's
    ``x`` becomes ``X``, the phone its 11 digits, text is stripped). Its repr shows nothing.

    Raises:
        identity.InvalidName, InvalidIdNumber, InvalidPhone, InvalidEmployer.
    """

    name: str
    id_number: str
    phone: str
    employer: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", validate_name(self.name))
        object.__setattr__(self, "id_number", validate_id_number(self.id_number))
        object.__setattr__(self, "phone", validate_phone(self.phone))
        if self.employer is not None:
            object.__setattr__(self, "employer", validate_employer(self.employer))

    def __repr__(self) -> str:
        return "PersonalData(<redacted>)"

    def to_json(self) -> bytes:
        """Canonical UTF-8 JSON (sorted keys, no whitespace)."""
        doc = {
            "name": self.name,
            "id_number": self.id_number,
            "phone": self.phone,
            "employer": self.employer,
        }
        return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PersonalData:
        """Raises: ValueError (malformed JSON or fields) or an ``identity`` Invalid error."""
        doc = json.loads(data)
        if not isinstance(doc, dict) or set(doc) != {"name", "id_number", "phone", "employer"}:
            raise ValueError("not a personal-data document")
        return cls(doc["name"], doc["id_number"], doc["phone"], doc["employer"])


def _data_aad(member_id: str) -> bytes:
    return f"{FORMAT} data ".encode() + member_id.encode()


def _key_aad(member_id: str) -> bytes:
    return f"{FORMAT} key ".encode() + member_id.encode()


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(_NONCE_SIZE)
    return nonce + bytes(
        nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)
    )


def _open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Raises nacl.exceptions.CryptoError or ValueError when the box does not open."""
    if len(blob) < _NONCE_SIZE + _TAG_SIZE:
        raise ValueError("sealed value too short")
    return bytes(
        nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            blob[_NONCE_SIZE:], aad, blob[:_NONCE_SIZE], key
        )
    )


def _pad(data: bytes) -> bytes:
    # JSON allows trailing whitespace: the padding needs no length field.
    return data + b" " * (-len(data) % _PAD_TO)


def _check_member_id(member_id: str) -> None:
    if not isinstance(member_id, str) or not _MEMBER_ID.fullmatch(member_id):
        raise Invalid("a member id is 1 to 32 letters, digits or ._:-")


class Vault:
    """Reads and writes table ``vault`` with one master key (32 bytes)."""

    __slots__ = ("_master",)

    def __init__(self, master_key: bytes) -> None:
        """Raises: TypeError (not bytes), ValueError (not 32 bytes)."""
        if not isinstance(master_key, bytes):
            raise TypeError(f"the vault master key must be bytes, not {type(master_key).__name__}")
        if len(master_key) != KEY_SIZE:
            raise ValueError(f"the vault master key must have {KEY_SIZE} bytes")
        self._master = master_key

    @classmethod
    def from_keyring(cls, keyring: Keyring) -> Vault:
        """The vault keyed with the keyring's ``vault-master`` secret.

        Raises:
            keys.errors.UnknownKeyId: the keyring holds no such secret.
        """
        return cls(keyring.secret(MASTER_SECRET))

    def __repr__(self) -> str:
        return "Vault(<master key>)"

    def put(self, execute: Execute, member_id: str, data: PersonalData, now: str) -> None:
        """Store (insert or replace) a member's personal data, sealed under a fresh data key.

        Raises:
            Erased: the member was erased (their data is never stored again).
            ledger.domain.Invalid: a malformed member id.
        """
        _check_member_id(member_id)
        if not isinstance(data, PersonalData):
            raise TypeError(f"data must be PersonalData, not {type(data).__name__}")
        row = execute(sql_select(vault.c.erased_at).where(vault.c.member_id == member_id)).first()
        if row is not None and row.erased_at is not None:
            raise Erased("this member's personal data was erased")
        data_key = secrets.token_bytes(KEY_SIZE)
        values = {
            "wrapped_key": _seal(self._master, data_key, _key_aad(member_id)),
            "sealed": _seal(data_key, _pad(data.to_json()), _data_aad(member_id)),
            "updated_at": now,
        }
        if row is None:
            execute(vault.insert().values(member_id=member_id, erased_at=None, **values))
        else:
            execute(vault.update().where(vault.c.member_id == member_id).values(**values))

    def get(self, conn: Connection, member_id: str) -> PersonalData | None:
        """A member's personal data, or ``None`` if the vault has no row for them.

        Raises:
            Erased: the member was erased.
            VaultCorrupt: the row does not open (wrong master key, altered or swapped values).
            ledger.domain.Invalid: a malformed member id.
        """
        _check_member_id(member_id)
        row = conn.execute(
            sql_select(vault.c.wrapped_key, vault.c.sealed, vault.c.erased_at).where(
                vault.c.member_id == member_id
            )
        ).first()
        if row is None:
            return None
        if row.erased_at is not None:
            raise Erased("this member's personal data was erased")
        if row.wrapped_key is None or row.sealed is None:
            raise VaultCorrupt("a vault row has no key or no data but is not erased")
        try:
            data_key = _open(self._master, bytes(row.wrapped_key), _key_aad(member_id))
            plaintext = _open(data_key, bytes(row.sealed), _data_aad(member_id))
        except (nacl.exceptions.CryptoError, ValueError) as e:
            raise VaultCorrupt(
                "a vault row does not open: wrong master key, or the row was altered"
            ) from e
        try:
            return PersonalData.from_json(plaintext)
        except (ValueError, TypeError, DomainError):
            # Authentic but unreadable (or no longer valid under today's rules). ``from None``:
            # the parser's error holds the plaintext (JSONDecodeError.doc).
            raise VaultCorrupt("a vault row opened but its data is malformed") from None

    def erase(self, execute: Execute, member_id: str, now: str) -> None:
        """Destroy a member's data key and sealed data for good (crypto-shredding). Idempotent:
        erasing again changes nothing; erasing a member without a row records the erasure, so
        that their data can never be stored afterwards.

        Raises:
            ledger.domain.Invalid: a malformed member id.
        """
        _check_member_id(member_id)
        row = execute(sql_select(vault.c.erased_at).where(vault.c.member_id == member_id)).first()
        if row is None:
            execute(
                vault.insert().values(
                    member_id=member_id,
                    wrapped_key=None,
                    sealed=None,
                    erased_at=now,
                    updated_at=now,
                )
            )
        elif row.erased_at is None:
            execute(
                vault.update()
                .where(vault.c.member_id == member_id)
                .values(wrapped_key=None, sealed=None, erased_at=now, updated_at=now)
            )

    def is_erased(self, conn: Connection, member_id: str) -> bool:
        """Whether the member's personal data was erased.

        Raises:
            ledger.domain.Invalid: a malformed member id.
        """
        _check_member_id(member_id)
        erased_at = conn.execute(
            sql_select(vault.c.erased_at).where(vault.c.member_id == member_id)
        ).scalar()
        return erased_at is not None
