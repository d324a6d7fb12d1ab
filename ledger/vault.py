"""The personal-data vault: each member's personal data, encrypted under its own key, erasable.

Personal data never enters the ledger: events carry the pseudonymous member id (and keyed
hashes, see ``identity.py``). The name, identity number, phone and employer live here, one row
per member in table ``vault``:

- ``sealed``: the data as JSON, padded to a multiple of 128 bytes (so the ciphertext's length
  says little about the name's), sealed with XChaCha20-Poly1305-IETF under the member's data key
  with AAD ``unionledger-vault/1 data <member id>``;
- ``wrapped_key``: the 32-byte data key sealed under the master key (keyring secret
  ``vault-master``) with AAD ``unionledger-vault/1 key <member id>``;
- ``ledger_key``: the member's 32-byte *ledger sealing key*, sealed under the master key with
  AAD ``unionledger-vault/1 ledger-key <member id>``.

All three are stored as ``nonce (24 bytes) || ciphertext``. The AAD binds every box to its
member: a wrapped key or a sealed blob copied to another member's row does not open.

Every :meth:`Vault.put` seals under a *fresh* data key (rotation, not reuse): it never needs to
unwrap the old key, and no two versions of a member's data share a key.

The ledger sealing key is the opposite: it is drawn when the member's row is first written and
then NEVER rotated, because what it seals goes onto the public, unchangeable chain
(:meth:`Vault.seal_for_ledger`, used for the member's sensitive groups, see ``members.py``) and
must still open years later. A ledger box is ``nonce (24) || XChaCha20-Poly1305-IETF(key,
pad(plaintext), AAD "unionledger-vault/1 ledger-seal <purpose> <member id>")``; ``pad`` is
ISO/IEC 7816-4 padding (``0x80`` then zero bytes, libsodium's ``sodium_pad``) to exactly
:data:`LEDGER_PADDED_SIZE` bytes, so every ledger box has the same length (296 bytes) whatever
it holds (:data:`LEDGER_PLAINTEXT_MAX` bytes at most).

Erasure is crypto-shredding: :meth:`Vault.erase` sets ``wrapped_key``, ``sealed`` and
``ledger_key`` to NULL and records ``erased_at``; an erased member stays erased
(:meth:`Vault.put` refuses them), and their ledger boxes, which stay on the chain, no longer open
for anyone. Caveat for operators: the old bytes can survive the UPDATE in database files (SQLite
free pages and WAL, PostgreSQL dead tuples and WAL) and in backups, and the master key opens an
old wrapped key. The erasure is complete only once those copies are gone, or once the master key
they were wrapped under is retired.

Writes go through an ``execute`` callable (a command passes ``tx.execute``, so the write commits
with its ledger events); reads take a connection. Nothing here logs, and no message, repr or
exception raised here contains a personal value.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Mapping
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
_PURPOSE = re.compile(r"[a-z][a-z0-9-]{0,31}", re.ASCII)
LEDGER_PADDED_SIZE = 256
"""Every ledger box's plaintext is padded to exactly this many bytes (its box: 24 + 256 + 16)."""
LEDGER_PLAINTEXT_MAX = LEDGER_PADDED_SIZE - 1
"""The longest plaintext a ledger box holds (the padding takes at least one byte)."""
SENSITIVE_GROUPS_PURPOSE = "sensitive-groups"
_IN_CHUNK = 500  # member ids per IN (...) list

Execute = Callable[[Executable], CursorResult[Any]]

vault = Table(
    "vault",
    metadata,
    Column("member_id", String(32), primary_key=True),
    Column("wrapped_key", LargeBinary, nullable=True),  # NULL once erased
    Column("sealed", LargeBinary, nullable=True),  # NULL once erased
    Column("ledger_key", LargeBinary, nullable=True),  # NULL once erased; never rotated
    Column("erased_at", String(32), nullable=True),
    Column("updated_at", String(32), nullable=False),
)


class Erased(Conflict):
    """The member's personal data was erased: it cannot be read or written again."""

    code = "member-erased"


class VaultCorrupt(DomainError):
    """A vault row or a ledger box does not open: the wrong master key, a row altered, swapped
    or missing, or a ledger box altered."""

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


def _ledger_key_aad(member_id: str) -> bytes:
    return f"{FORMAT} ledger-key ".encode() + member_id.encode()


def _ledger_seal_aad(purpose: str, member_id: str) -> bytes:
    return f"{FORMAT} ledger-seal {purpose} ".encode() + member_id.encode()


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


def _check_purpose(purpose: str) -> None:
    if not isinstance(purpose, str) or not _PURPOSE.fullmatch(purpose):
        raise Invalid("a ledger sealing purpose is 1 to 32 lowercase letters, digits or -")


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
        """Store (insert or replace) a member's personal data, sealed under a fresh data key. The
        first write also draws the member's ledger sealing key; later writes keep it.

        Raises:
            Erased: the member was erased (their data is never stored again).
            ledger.domain.Invalid: a malformed member id.
        """
        _check_member_id(member_id)
        if not isinstance(data, PersonalData):
            raise TypeError(f"data must be PersonalData, not {type(data).__name__}")
        row = execute(
            sql_select(vault.c.erased_at, vault.c.ledger_key).where(vault.c.member_id == member_id)
        ).first()
        if row is not None and row.erased_at is not None:
            raise Erased("this member's personal data was erased")
        data_key = secrets.token_bytes(KEY_SIZE)
        values: dict[str, object] = {
            "wrapped_key": _seal(self._master, data_key, _key_aad(member_id)),
            "sealed": _seal(data_key, _pad(data.to_json()), _data_aad(member_id)),
            "updated_at": now,
        }
        if row is None or row.ledger_key is None:
            # First write (or a row from before ledger keys): draw the ledger sealing key. An
            # existing one is kept as it is: boxes sealed under it are on the chain for good.
            values["ledger_key"] = self._new_ledger_key(member_id)
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
        """Destroy a member's data key, sealed data and ledger sealing key for good
        (crypto-shredding: their ledger boxes no longer open either). Idempotent:
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
                    ledger_key=None,
                    erased_at=now,
                    updated_at=now,
                )
            )
        elif row.erased_at is None:
            execute(
                vault.update()
                .where(vault.c.member_id == member_id)
                .values(
                    wrapped_key=None, sealed=None, ledger_key=None, erased_at=now, updated_at=now
                )
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

    # -- ledger boxes ---------------------------------------------------------------------------

    def _new_ledger_key(self, member_id: str) -> bytes:
        return _seal(self._master, secrets.token_bytes(KEY_SIZE), _ledger_key_aad(member_id))

    def _ledger_key(self, member_id: str, wrapped: bytes) -> bytes:
        try:
            return _open(self._master, wrapped, _ledger_key_aad(member_id))
        except (nacl.exceptions.CryptoError, ValueError) as e:
            raise VaultCorrupt(
                "a ledger sealing key does not open: wrong master key, or the row was altered"
            ) from e

    def seal_for_ledger(
        self,
        execute: Execute,
        member_id: str,
        plaintext: bytes,
        *,
        purpose: str = SENSITIVE_GROUPS_PURPOSE,
    ) -> bytes:
        """Seal ``plaintext`` for the public ledger under the member's ledger sealing key:
        ``nonce || ciphertext``, always ``24 + LEDGER_PADDED_SIZE + 16`` bytes. The member needs
        a vault row (written by :meth:`put`). ``execute`` writes only for a row from before
        ledger keys, which gets its key now; a command passes ``tx.execute``.

        Raises:
            Erased: the member was erased (nothing is sealed for them again).
            VaultCorrupt: the member has no vault row, or their ledger key does not open.
            ValueError: ``plaintext`` is longer than :data:`LEDGER_PLAINTEXT_MAX` bytes.
            TypeError: ``plaintext`` is not bytes.
            ledger.domain.Invalid: a malformed member id or purpose.
        """
        _check_member_id(member_id)
        _check_purpose(purpose)
        if not isinstance(plaintext, bytes):
            raise TypeError(f"plaintext must be bytes, not {type(plaintext).__name__}")
        if len(plaintext) > LEDGER_PLAINTEXT_MAX:
            raise ValueError(f"a ledger box holds at most {LEDGER_PLAINTEXT_MAX} bytes")
        row = execute(
            sql_select(vault.c.ledger_key, vault.c.erased_at).where(vault.c.member_id == member_id)
        ).first()
        if row is None:
            raise VaultCorrupt("the member has no vault row: nothing to seal under")
        if row.erased_at is not None:
            raise Erased("this member's personal data was erased")
        if row.ledger_key is None:
            wrapped = self._new_ledger_key(member_id)
            execute(vault.update().where(vault.c.member_id == member_id).values(ledger_key=wrapped))
        else:
            wrapped = bytes(row.ledger_key)
        key = self._ledger_key(member_id, wrapped)
        padded = bytes(nacl.bindings.sodium_pad(plaintext, LEDGER_PADDED_SIZE))
        assert len(padded) == LEDGER_PADDED_SIZE
        return _seal(key, padded, _ledger_seal_aad(purpose, member_id))

    def open_from_ledger(
        self,
        conn: Connection,
        member_id: str,
        blob: bytes,
        *,
        purpose: str = SENSITIVE_GROUPS_PURPOSE,
    ) -> bytes | None:
        """Open a box made by :meth:`seal_for_ledger` (padding removed), or ``None`` when the
        member was erased or has no ledger key (crypto-shredded: nobody opens it any more).

        Raises:
            VaultCorrupt: the key or the box does not open (wrong master key, altered row or
                box, a box of another member or purpose).
            ledger.domain.Invalid: a malformed member id or purpose.
        """
        return self.open_many_from_ledger(conn, {member_id: blob}, purpose=purpose)[member_id]

    def open_many_from_ledger(
        self,
        conn: Connection,
        blobs: Mapping[str, bytes],
        *,
        purpose: str = SENSITIVE_GROUPS_PURPOSE,
    ) -> dict[str, bytes | None]:
        """:meth:`open_from_ledger` for many members (member id -> box), reading their keys in
        a few queries instead of one per member.

        Raises:
            as :meth:`open_from_ledger`.
        """
        _check_purpose(purpose)
        for member_id in blobs:
            _check_member_id(member_id)
        wrapped: dict[str, bytes] = {}
        ids = sorted(blobs)
        for start in range(0, len(ids), _IN_CHUNK):
            rows = conn.execute(
                sql_select(vault.c.member_id, vault.c.ledger_key).where(
                    vault.c.member_id.in_(ids[start : start + _IN_CHUNK]),
                    vault.c.erased_at.is_(None),
                    vault.c.ledger_key.is_not(None),
                )
            ).all()
            wrapped.update((r.member_id, bytes(r.ledger_key)) for r in rows)
        out: dict[str, bytes | None] = {}
        for member_id, blob in blobs.items():
            if member_id not in wrapped:
                out[member_id] = None
                continue
            key = self._ledger_key(member_id, wrapped[member_id])
            try:
                padded = _open(key, bytes(blob), _ledger_seal_aad(purpose, member_id))
                out[member_id] = bytes(nacl.bindings.sodium_unpad(padded, LEDGER_PADDED_SIZE))
            except (nacl.exceptions.CryptoError, ValueError, TypeError) as e:
                raise VaultCorrupt(
                    "a ledger box does not open: altered, or sealed for another member"
                ) from e
        return out
