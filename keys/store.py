"""Keyrings on disk: one JSON file, private keys encrypted with a passphrase.

``<data-dir>/keys/keyring.json`` (mode 0600, folder 0700) holds every key record in clear (they
are public facts) and each private key sealed with XChaCha20-Poly1305 (IETF) under a key derived
from the passphrase with Argon2id. A sealed ``check`` value tells a wrong passphrase apart from a
damaged file, and a ``records`` tag (the same AEAD over the records as associated data)
authenticates the records, so that nobody without the passphrase can un-revoke, re-scope or add
a key by editing the file. The format is specified in docs/keys.md.

Writes are atomic (temporary file, fsync, rename, fsync of the folder): a crash leaves the old
file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.bindings
import nacl.exceptions
from nacl.pwhash import argon2id

from keys.ed25519 import KeyId, PrivateKey
from keys.errors import CorruptKeyFile, KeyringExists, KeyringMissing, MalformedKey, WrongPassphrase
from keys.jwk import b64url_decode, b64url_encode
from keys.keyring import KeyRecord, Keyring

FORMAT = "unionledger-keyring/1"
FILE_NAME = "keyring.json"
AEAD = "xchacha20poly1305-ietf"
_CHECK_PLAINTEXT = b"unionledger keyring passphrase check"
_NONCE_SIZE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
_SALT_SIZE = argon2id.SALTBYTES  # 16


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost. Stored in the file, so a keyring opens with the cost it was made with."""

    opslimit: int = 3
    memlimit: int = 64 * 1024 * 1024  # 64 MiB: about 75 ms here, above OWASP's minimum

    def __post_init__(self) -> None:
        # Bounds also stop a crafted file from asking for unbounded memory or time.
        if not argon2id.OPSLIMIT_MIN <= self.opslimit <= 16:
            raise ValueError(f"Argon2id opslimit out of range: {self.opslimit}")
        if not argon2id.MEMLIMIT_MIN <= self.memlimit <= 1024 * 1024 * 1024:
            raise ValueError(f"Argon2id memlimit out of range: {self.memlimit}")

    @classmethod
    def fastest(cls) -> KdfParams:
        """The cheapest cost libsodium allows. For tests only: it protects nothing."""
        return cls(opslimit=argon2id.OPSLIMIT_MIN, memlimit=argon2id.MEMLIMIT_MIN)

    def derive(self, passphrase: str, salt: bytes) -> bytes:
        if not isinstance(passphrase, str) or not passphrase:
            raise WrongPassphrase("an empty passphrase opens nothing")
        return bytes(
            argon2id.kdf(
                32,
                passphrase.encode("utf-8"),
                salt,
                opslimit=self.opslimit,
                memlimit=self.memlimit,
            )
        )


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> str:
    nonce = secrets.token_bytes(_NONCE_SIZE)
    sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)
    return b64url_encode(nonce + sealed)


def _open(key: bytes, text: str, aad: bytes) -> bytes:
    """Raises nacl.exceptions.CryptoError or ValueError when the box does not open."""
    blob = b64url_decode(text)
    if len(blob) < _NONCE_SIZE + 16:
        raise ValueError("sealed value too short")
    return bytes(
        nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            blob[_NONCE_SIZE:], aad, blob[:_NONCE_SIZE], key
        )
    )


def _key_aad(record: KeyRecord) -> bytes:
    # Binds each sealed key to its id and role: swapping sealed values between records fails.
    return f"{FORMAT} key {record.kid} {record.role.value}".encode()


def _secret_aad(name: str) -> bytes:
    return f"{FORMAT} secret {name}".encode()


def _check_aad() -> bytes:
    return f"{FORMAT} check".encode()


def records_aad(entries: list[Any]) -> bytes:
    """The associated data of the ``records`` tag (docs/keys.md section 4.4): the key entries
    as written, each without ``private``, sorted by ``kid``, as JSON with sorted members, no
    white space and UTF-8 text, after the line ``unionledger-keyring/1 records``."""
    public = sorted(
        ({k: v for k, v in entry.items() if k != "private"} for entry in entries),
        key=lambda entry: str(entry.get("kid")),
    )
    body = json.dumps(public, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{FORMAT} records\n".encode() + body.encode("utf-8")


_ENTRY_MEMBERS = frozenset(
    {"kid", "role", "jwk", "not_before", "not_after", "scope", "revoked_at"}
    | {"revocation_reason", "private"}
)
_JWK_MEMBERS = frozenset(("kty", "crv", "x"))


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON)
        return False
    return True


def _entry_problem(entry: Mapping[str, Any]) -> str | None:
    """What makes a key entry unfit for the file (docs/keys.md section 4.2), or ``None``: only
    the members of the table, each a string (``private`` may be ``null``), ``jwk`` exactly
    ``kty``, ``crv`` and ``x``, strings; every string valid Unicode. So the records' bytes
    (:func:`records_aad`) are their JCS form, and nothing in the file escapes the seal's
    meaning."""
    unknown = sorted(set(entry) - _ENTRY_MEMBERS)
    if unknown:
        return f"has a member the format does not know: {unknown[0]!r}"
    for name, value in entry.items():
        if name == "jwk":
            if not isinstance(value, dict) or set(value) != _JWK_MEMBERS:
                return "has a jwk other than {kty, crv, x}"
            if not all(isinstance(v, str) and _utf8(v) for v in value.values()):
                return "has a jwk member that is not a string"
        elif not (isinstance(value, str) and _utf8(value)) and not (
            name == "private" and value is None
        ):
            return f"has {name!r} that is not a string"
    return None


class KeyStore:
    """The keyring file of one data directory."""

    def __init__(self, data_dir: Path | str) -> None:
        self.folder = Path(data_dir) / "keys"
        self.path = self.folder / FILE_NAME

    def exists(self) -> bool:
        return self.path.exists()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the keyring's exclusive lock: wrap every read-change-write in it, so two
        commands changing keys at once cannot lose one's update."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- reading ------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raise KeyringMissing(f"no keyring at {self.path}") from None
        except OSError as e:
            raise CorruptKeyFile(f"cannot read {self.path}: {e.strerror}") from e
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptKeyFile(f"{self.path} is not a keyring file (truncated?)") from e
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CorruptKeyFile(f"{self.path} is not a {FORMAT} file")
        if doc.get("aead") != AEAD or not isinstance(doc.get("check"), str):
            raise CorruptKeyFile(f"{self.path}: unknown cipher or no passphrase check value")
        return doc

    def _records(self, doc: Mapping[str, Any]) -> list[tuple[KeyRecord, str | None]]:
        entries = doc.get("keys")
        if not isinstance(entries, list):
            raise CorruptKeyFile(f"{self.path}: 'keys' is not a list")
        out: list[tuple[KeyRecord, str | None]] = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise CorruptKeyFile(f"{self.path}: a key entry is not an object")
            problem = _entry_problem(entry)
            if problem is not None:
                raise CorruptKeyFile(f"{self.path}: a key entry {problem}")
            try:
                record = KeyRecord.from_dict(entry)
            except MalformedKey as e:
                raise CorruptKeyFile(f"{self.path}: {e}") from e
            sealed = entry.get("private")
            if sealed is not None and not isinstance(sealed, str):
                raise CorruptKeyFile(f"{self.path}: key {record.kid} has a bad private value")
            out.append((record, sealed))
        return out

    def _kdf(self, doc: Mapping[str, Any]) -> tuple[KdfParams, bytes]:
        kdf = doc.get("kdf")
        try:
            if not isinstance(kdf, dict) or kdf.get("alg") != "argon2id13":
                raise ValueError("unknown kdf")
            ops, mem = kdf["opslimit"], kdf["memlimit"]
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (ops, mem)):
                raise TypeError("cost parameters must be integers")
            params = KdfParams(opslimit=ops, memlimit=mem)
            salt = b64url_decode(kdf["salt"])
            if len(salt) != _SALT_SIZE:
                raise ValueError("bad salt")
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptKeyFile(f"{self.path}: bad key-derivation parameters") from e
        return params, salt

    def load_public(self) -> Keyring:
        """The key records without any private key (no passphrase needed).

        Raises:
            KeyringMissing, CorruptKeyFile.
        """
        doc = self._read()
        return self._keyring([record for record, _ in self._records(doc)], {})

    def _check_records(self, key: bytes, doc: Mapping[str, Any]) -> None:
        tag = doc.get("records")
        if not isinstance(tag, str):
            raise CorruptKeyFile(
                f"{self.path}: the key records carry no 'records' seal (a keyring written"
                " before 2026-12-07?): check them with `unionledger keys list`, then seal them"
                " with `unionledger keys reseal`"
            )
        try:
            if _open(key, tag, records_aad(doc["keys"])) != b"":
                raise ValueError("the records tag seals a value")
        except (nacl.exceptions.CryptoError, ValueError) as e:
            raise CorruptKeyFile(
                f"{self.path}: the key records were changed without the passphrase (a key"
                " un-revoked, re-scoped, added or removed by hand?): restore the file, or check"
                " the records with `unionledger keys list` and seal them with"
                " `unionledger keys reseal`"
            ) from e

    def _keyring(self, records: list[KeyRecord], private: dict[KeyId, PrivateKey]) -> Keyring:
        try:
            return Keyring(records, private)
        except MalformedKey as e:  # e.g. the same key id twice
            raise CorruptKeyFile(f"{self.path}: {e}") from e

    def load(self, passphrase: str, *, accept_unsealed: bool = False) -> Keyring:
        """The keyring with its private keys decrypted and its records authenticated.

        ``accept_unsealed`` opens a file whose records carry no ``records`` tag (written before
        the tag existed) or a wrong one (edited by hand): only for ``unionledger keys reseal``,
        which an operator runs after checking the records.

        Raises:
            KeyringMissing: no keyring file.
            WrongPassphrase: the passphrase does not open it.
            CorruptKeyFile: the file is truncated, altered or not a keyring, or its records
                were changed without the passphrase.
        """
        doc = self._read()
        params, salt = self._kdf(doc)
        records = self._records(doc)
        key = params.derive(passphrase, salt)
        try:
            check = _open(key, doc["check"], _check_aad())
        except (nacl.exceptions.CryptoError, ValueError) as e:
            raise WrongPassphrase("wrong passphrase for this keyring") from e
        if check != _CHECK_PLAINTEXT:
            raise CorruptKeyFile(f"{self.path}: passphrase check value altered")
        if not accept_unsealed:
            self._check_records(key, doc)
        private: dict[KeyId, PrivateKey] = {}
        for record, sealed in records:
            if sealed is None:
                continue
            try:
                seed = _open(key, sealed, _key_aad(record))
                private_key = PrivateKey.from_seed(seed)
            except (nacl.exceptions.CryptoError, ValueError) as e:
                raise CorruptKeyFile(f"{self.path}: private key {record.kid} is damaged") from e
            if private_key.public_key != record.public_key:
                raise CorruptKeyFile(f"{self.path}: private key {record.kid} does not match")
            private[record.kid] = private_key
        sealed_secrets = doc.get("secrets", {})
        if not isinstance(sealed_secrets, dict):
            raise CorruptKeyFile(f"{self.path}: 'secrets' is not an object")
        opened: dict[str, bytes] = {}
        for name, sealed in sealed_secrets.items():
            try:
                opened[name] = _open(key, sealed, _secret_aad(name))
            except (nacl.exceptions.CryptoError, ValueError, TypeError) as e:
                raise CorruptKeyFile(f"{self.path}: secret {name!r} is damaged") from e
        try:
            return Keyring([r for r, _ in records], private, opened)
        except MalformedKey as e:
            raise CorruptKeyFile(f"{self.path}: {e}") from e

    # -- writing ------------------------------------------------------------------------------

    def create(self, keyring: Keyring, passphrase: str, *, kdf: KdfParams | None = None) -> None:
        """Write a new keyring file with a fresh salt.

        Raises:
            KeyringExists: there is one already.
        """
        if self.exists():
            raise KeyringExists(f"a keyring already exists at {self.path}")
        self._write(keyring, passphrase, kdf or KdfParams(), secrets.token_bytes(_SALT_SIZE))

    def save(self, keyring: Keyring, passphrase: str, *, accept_unsealed: bool = False) -> None:
        """Replace the keyring file, keeping its passphrase and cost.

        The passphrase is checked against the existing file first, so a typo can never
        re-encrypt the keyring under a passphrase nobody knows; so are the records' seal
        (unless ``accept_unsealed``, for ``keys reseal``).

        Raises:
            KeyringMissing, WrongPassphrase, CorruptKeyFile.
        """
        current = self.load(passphrase, accept_unsealed=accept_unsealed)
        for kid in current.private_keys():
            # Saving must never lose a private key that the file held.
            if not keyring.has_private(kid):
                raise CorruptKeyFile(f"refusing to drop private key {kid} from the keyring")
        for name in current.secret_names():
            if name not in keyring.secret_names() or keyring.secret(name) != current.secret(name):
                raise CorruptKeyFile(f"refusing to drop or replace secret {name!r}")
        params, salt = self._kdf(self._read())
        self._write(keyring, passphrase, params, salt)

    def _write(self, keyring: Keyring, passphrase: str, params: KdfParams, salt: bytes) -> None:
        key = params.derive(passphrase, salt)
        entries = []
        for record in sorted(keyring, key=lambda r: (r.role.value, r.not_before, r.kid)):
            entry = record.to_dict()
            if keyring.has_private(record.kid):
                seed = keyring.private_key(record.kid).seed()
                entry["private"] = _seal(key, seed, _key_aad(record))
            entries.append(entry)
        doc = {
            "format": FORMAT,
            "kdf": {
                "alg": "argon2id13",
                "opslimit": params.opslimit,
                "memlimit": params.memlimit,
                "salt": b64url_encode(salt),
            },
            "aead": AEAD,
            "check": _seal(key, _CHECK_PLAINTEXT, _check_aad()),
            "keys": entries,
            "records": _seal(key, b"", records_aad(entries)),
            "secrets": {
                name: _seal(key, keyring.secret(name), _secret_aad(name))
                for name in keyring.secret_names()
            },
        }
        data = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        atomic_write(self.path, data, mode=0o600)


def atomic_write(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed or widened O_CREAT's mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
