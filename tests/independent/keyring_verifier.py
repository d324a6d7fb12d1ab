"""An independent reader of UnionLedger's keyring file and of the key facts on its chain,
written from docs/keys.md, docs/events.md and docs/formats.md only (the rule of this package:
see ``tests/independent/__init__.py``).

It imports nothing of the repository: only the standard library, pynacl (libsodium's Argon2id,
XChaCha20-Poly1305 and Ed25519), httpx, and ``ledger_verifier`` (entries, checkpoints, trust
lists, written from formats.md). "keys N" is docs/keys.md section N, "events N" is
docs/events.md section N, "formats N" is docs/formats.md section N.

What each part implements:

- ``parse_time``, ``format_time``: keys conventions (RFC 3339 in files, truncated to seconds).
- ``records_bytes``, ``records_aad``, ``key_aad``, ``secret_aad``, ``CHECK_AAD``: keys 4.4 (the
  AAD table, "The records' bytes").
- ``derive_key``: keys 4.3. ``unseal``, ``seal``: keys 4.4 (the stored form).
- ``read_keyring``: keys 4.5 steps 1-3 (what needs no passphrase), with keys 4.2 and keys 2.
- ``open_keyring``: keys 4.5 steps 1-7, including step 5a (the records' seal); the errors of
  keys 4.5 "What the seals protect": ``WrongPassphrase``, ``Damaged`` and its case
  ``RecordsChanged``.
- ``fold_key_events``: events 15 "Replaying them" (the ``chain_keys`` projection).
- ``check_key_events``: events 15 and keys 4.6 "When they are appended": what the server's key
  events must look like (actor, exact body members, nothing that changes nothing, no
  contradiction, the order inside one command).
- ``expected_key_events``: keys 4.6 "When they are appended": the events a server appends for a
  file and a chain.
- ``merge``: keys 4.6 "The keys in use".
- ``trust_list_entries``: keys 5.1 (what a trust list made from keys contains, in its order).
- ``fetch_entries``, ``read_log``: formats 4 (``GET /v1/log/entries``, the checkpoint) and
  formats 5 "Obtaining the log key" with keys 5.2, through ``ledger_verifier``.
"""

from __future__ import annotations

import base64
import calendar
import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_pwhash_alg,
    crypto_pwhash_ALG_ARGON2ID13,
)
from nacl.exceptions import CryptoError
from nacl.signing import SigningKey

import tests.independent.ledger_verifier as lv

__all__ = [
    "CHECK_AAD",
    "CHECK_PLAINTEXT",
    "Damaged",
    "FileKey",
    "Key",
    "Keyring",
    "KeyringConflict",
    "KeyringError",
    "MergedKey",
    "PublicKeyring",
    "RecordsChanged",
    "WrongPassphrase",
    "check_key_events",
    "derive_key",
    "expected_key_events",
    "fetch_entries",
    "fold_key_events",
    "format_time",
    "key_aad",
    "merge",
    "open_keyring",
    "parse_time",
    "read_keyring",
    "read_log",
    "records_aad",
    "records_bytes",
    "seal",
    "secret_aad",
    "trust_list_entries",
    "unseal",
]

FORMAT = "unionledger-keyring/1"
AEAD = "xchacha20poly1305-ietf"
CHECK_PLAINTEXT = b"unionledger keyring passphrase check"
CHECK_AAD = b"unionledger-keyring/1 check"
RECORDS_AAD_PREFIX = b"unionledger-keyring/1 records\n"
ROLES = ("root", "log", "issuer", "station", "api")
SCOPED = ("issuer", "station")
PUBLISHED_ROLES = ("root", "log", "issuer", "station")
_SCOPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_SECRET_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
NONCE = 24
TAG = 16
SYSTEM = "system:server"


# ---------------------------------------------------------------- errors (keys 4.5, 4.6)
class KeyringError(Exception):
    """A keyring that cannot be used; ``code`` is the CLI's error code (keys 4.5, 4.6, 6)."""

    code = "keyring-error"


class WrongPassphrase(KeyringError):
    """keys 4.5 step 5: ``check`` does not open."""

    code = "wrong-passphrase"


class Damaged(KeyringError):
    """keys 4.5: the file is damaged (``corrupt-key-file``)."""

    code = "corrupt-key-file"


class RecordsChanged(Damaged):
    """keys 4.5 step 5a: the records' seal does not open: the records were changed by someone
    without the passphrase (a case of a damaged file)."""


class KeyringConflict(KeyringError):
    """keys 4.6: the file contradicts the chain on a key's role, scope or not_before."""

    code = "keyring-conflict"


# ---------------------------------------------------------------- keys conventions: times
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_CHAIN_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def parse_time(text: object) -> int:
    """keys conventions: an RFC 3339 time (any offset, converted to UTC), truncated to whole
    seconds; returned as seconds since the epoch. Raises ``ValueError``."""
    match = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        raise ValueError(f"no such date: {text!r}")
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"no such time: {text!r}")
    offset = 0
    if match.group(9):
        off_h, off_m = int(match.group(10)), int(match.group(11))
        if off_h > 23 or off_m > 59:
            raise ValueError(f"bad offset: {text!r}")
        offset = (off_h * 60 + off_m) * 60 * (1 if match.group(9) == "+" else -1)
    local = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return local - offset


def format_time(epoch: int) -> str:
    """keys conventions: the written form, ``2026-11-25T08:46:12Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def parse_chain_time(text: object) -> int:
    """keys 4.6 / events 15: "RFC 3339 UTC to the second, as in the file" (the written form)."""
    if not isinstance(text, str) or not _CHAIN_TIME.fullmatch(text):
        raise lv.Fail(f"key event time not in the written form: {text!r}")
    value = parse_time(text)
    if format_time(value) != text:
        raise lv.Fail(f"key event time {text!r}")
    return value


# ---------------------------------------------------------------- base64url (keys conventions)
def b64ud(text: object) -> bytes:
    """Strict base64url without padding; raises ``ValueError``."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("bad base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64ue(raw) != text:
        raise ValueError("non-canonical base64url")
    return raw


def b64ue(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


# ---------------------------------------------------------------- keys 4.4: the AADs and bytes
_JSON_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _json_string(text: str) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:
            raise Damaged("a record holds a string that is not valid Unicode (lone surrogate)")
        if ch in _JSON_ESCAPES:
            out.append(_JSON_ESCAPES[ch])
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _json(value: object) -> str:
    """keys 4.4: sorted members, no white space, strings as UTF-8 with only the required
    escapes. The document names strings and objects; other JSON values are written as JSON
    writes them (``json.dumps``, which keys 4.4 names as the reference)."""
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ",".join(_json_string(k) + ":" + _json(v) for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json(v) for v in value) + "]"
    if value is None or isinstance(value, bool | int):
        return json.dumps(value)
    raise Damaged(f"a record holds a value the records' bytes do not define: {value!r}")


def records_bytes(entries: Sequence[Mapping[str, Any]]) -> bytes:
    """keys 4.4 "The records' bytes": every entry without ``private``, sorted by ``kid`` (code
    point order), as JSON with sorted members and no white space, in UTF-8."""
    stripped = [{k: v for k, v in entry.items() if k != "private"} for entry in entries]
    stripped.sort(key=lambda e: e["kid"])
    return _json(stripped).encode("utf-8")


def records_aad(entries: Sequence[Mapping[str, Any]]) -> bytes:
    """keys 4.4: ``unionledger-keyring/1 records``, a line feed, then the records' bytes."""
    return RECORDS_AAD_PREFIX + records_bytes(entries)


def key_aad(kid: str, role: str) -> bytes:
    """keys 4.4: ``unionledger-keyring/1 key <kid> <role>``."""
    return f"{FORMAT} key {kid} {role}".encode("ascii")


def secret_aad(name: str) -> bytes:
    """keys 4.4: ``unionledger-keyring/1 secret <name>``."""
    return f"{FORMAT} secret {name}".encode("ascii")


# ---------------------------------------------------------------- keys 4.3 and 4.4: crypto
def derive_key(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    """keys 4.3: ``crypto_pwhash(32, passphrase, salt, opslimit, memlimit, ARGON2ID13)`` over the
    passphrase's UTF-8 bytes (no normalisation); an empty passphrase is refused."""
    if not passphrase:
        raise KeyringError("an empty passphrase is refused")
    return bytes(
        crypto_pwhash_alg(
            32, passphrase.encode("utf-8"), salt, opslimit, memlimit, crypto_pwhash_ALG_ARGON2ID13
        )
    )


def unseal(key: bytes, stored: str, aad: bytes) -> bytes:
    """keys 4.4: ``base64url(nonce (24) ‖ ciphertext ‖ tag (16))`` opened with XChaCha20-
    Poly1305-IETF. Raises ``ValueError`` when the value is malformed or does not open."""
    raw = b64ud(stored)
    if len(raw) < NONCE + TAG:
        raise ValueError("sealed value too short")
    try:
        return bytes(crypto_aead_xchacha20poly1305_ietf_decrypt(raw[NONCE:], aad, raw[:NONCE], key))
    except CryptoError as e:
        raise ValueError("does not open") from e


def seal(key: bytes, plaintext: bytes, aad: bytes, nonce: bytes | None = None) -> str:
    """keys 4.4: the stored form of a sealed value (fresh random nonce unless one is given)."""
    nonce = os.urandom(NONCE) if nonce is None else nonce
    if len(nonce) != NONCE:
        raise ValueError("the nonce is 24 bytes")
    return b64ue(nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key))


# ---------------------------------------------------------------- keys 4.2, 4.5 steps 1-3
@dataclass(frozen=True)
class Key:
    """The public facts of one key (keys 4.2, 4.6), times in seconds since the epoch."""

    kid: str
    role: str
    x: str
    scope: str | None
    not_before: int
    not_after: int | None = None
    revoked_at: int | None = None


@dataclass(frozen=True)
class FileKey:
    """A key entry of the file: its facts, the revocation reason, and whether (after
    ``open_keyring``: which) private seed it holds."""

    key: Key
    reason: str | None
    sealed_private: str | None
    seed: bytes | None = None


@dataclass(frozen=True)
class PublicKeyring:
    """What keys 4.5 steps 1-3 give without the passphrase."""

    document: dict[str, Any]
    entries: list[dict[str, Any]]  # the key entries as read
    keys: dict[str, FileKey]
    salt: bytes
    opslimit: int
    memlimit: int


@dataclass(frozen=True)
class Keyring:
    """An opened keyring (keys 4.5 steps 1-7)."""

    public: PublicKeyring
    file_key: bytes
    keys: dict[str, FileKey]  # with seeds
    secrets: dict[str, bytes] = field(default_factory=dict)

    def facts(self) -> dict[str, Key]:
        """The public facts of every key of the file."""
        return {kid: fk.key for kid, fk in self.keys.items()}


def _no_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise Damaged(f"member {name!r} given twice in one object")
        out[name] = value
    return out


def _file_time(entry: Mapping[str, Any], name: str) -> int:
    try:
        return parse_time(entry[name])
    except ValueError as e:
        raise Damaged(f"{name} of {entry.get('kid')!r}: {e}") from e


ENTRY_MEMBERS = frozenset(
    {"kid", "role", "jwk", "not_before", "not_after", "scope", "revoked_at"}
    | {"revocation_reason", "private"}
)


def _read_entry(entry: object) -> FileKey:
    """keys 4.5 step 3: one key entry checked against keys 4.2 and keys 2."""
    if not isinstance(entry, dict):
        raise Damaged("a key entry is not an object")
    for name in ("kid", "role", "jwk", "not_before"):
        if name not in entry:
            raise Damaged(f"a key entry lacks {name!r}")
    unknown = set(entry) - ENTRY_MEMBERS
    if unknown:
        raise Damaged(f"a key entry has a member keys 4.2 does not list: {sorted(unknown)[0]!r}")
    for name, value in entry.items():  # keys 4.2: strings only; private may be null
        if (
            name != "jwk"
            and not isinstance(value, str)
            and not (name == "private" and value is None)
        ):
            raise Damaged(f"{name} of a key entry is not a string")
    jwk_members = entry["jwk"] if isinstance(entry["jwk"], dict) else {}
    if set(jwk_members) != {"kty", "crv", "x"} or not all(
        isinstance(v, str) for v in jwk_members.values()
    ):
        raise Damaged("a key entry's jwk is not exactly {kty, crv, x}, strings")
    kid, role, jwk = entry["kid"], entry["role"], entry["jwk"]
    if not isinstance(kid, str):
        raise Damaged("kid is not a string")
    if role not in ROLES:
        raise Damaged(f"unknown role {role!r}")
    if not isinstance(jwk, dict) or "d" in jwk:
        raise Damaged(f"jwk of {kid!r} is not a public JWK")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise Damaged(f"jwk of {kid!r} is not an Ed25519 OKP key")
    try:
        x_bytes = b64ud(jwk.get("x"))
    except ValueError as e:
        raise Damaged(f"jwk.x of {kid!r}: {e}") from e
    if len(x_bytes) != 32:
        raise Damaged(f"jwk.x of {kid!r} is not 32 bytes")
    if lv.jwk_thumbprint(jwk["x"]) != kid:
        raise Damaged(f"kid {kid!r} is not the thumbprint of its jwk")
    not_before = _file_time(entry, "not_before")
    not_after = _file_time(entry, "not_after") if "not_after" in entry else None
    if not_after is not None and not_after <= not_before:
        raise Damaged(f"not_after of {kid!r} is not later than not_before")
    scope = entry.get("scope")
    if role in SCOPED:
        if not isinstance(scope, str) or not _SCOPE.fullmatch(scope):
            raise Damaged(f"{role} key {kid!r} needs a valid scope (malformed-key)")
    elif "scope" in entry:
        raise Damaged(f"{role} key {kid!r} may not have a scope (malformed-key)")
    revoked_at = _file_time(entry, "revoked_at") if "revoked_at" in entry else None
    reason = entry.get("revocation_reason")
    if "revocation_reason" in entry and (revoked_at is None or not isinstance(reason, str)):
        raise Damaged(f"revocation_reason of {kid!r} without revoked_at, or not text")
    private = entry.get("private")
    if private is not None and not isinstance(private, str):
        raise Damaged(f"private of {kid!r} is not a string")
    key = Key(kid, role, jwk["x"], scope, not_before, not_after, revoked_at)
    return FileKey(key, reason, private)


def read_keyring(data: bytes) -> PublicKeyring:
    """keys 4.5 steps 1-3: parse, read ``kdf``, read and check every key entry. Needs no
    passphrase (what ``keys list`` and ``keys export-public`` do). Raises ``Damaged``."""
    try:
        text = data.decode("utf-8")
        document = json.loads(text, object_pairs_hook=_no_duplicate_members)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise Damaged(f"not UTF-8 JSON: {e}") from e
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise Damaged("not a keyring (format)")
    if document.get("aead") != AEAD:
        raise Damaged("aead is not xchacha20poly1305-ietf")
    if not isinstance(document.get("check"), str):
        raise Damaged("check is missing or not a string")
    # step 2
    kdf = document.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("alg") != "argon2id13":
        raise Damaged("kdf.alg is not argon2id13")
    opslimit, memlimit = kdf.get("opslimit"), kdf.get("memlimit")
    if not isinstance(opslimit, int) or isinstance(opslimit, bool) or not 1 <= opslimit <= 16:
        raise Damaged(f"kdf.opslimit out of range: {opslimit!r}")
    if not isinstance(memlimit, int) or isinstance(memlimit, bool) or not 8192 <= memlimit <= 2**30:
        raise Damaged(f"kdf.memlimit out of range: {memlimit!r}")
    try:
        salt = b64ud(kdf.get("salt"))
    except ValueError as e:
        raise Damaged(f"kdf.salt: {e}") from e
    if len(salt) != 16:
        raise Damaged("kdf.salt is not 16 bytes")
    # step 3
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise Damaged("keys is not an array")
    keys: dict[str, FileKey] = {}
    for entry in entries:
        file_key = _read_entry(entry)
        if file_key.key.kid in keys:
            raise Damaged(f"kid {file_key.key.kid!r} appears twice")
        keys[file_key.key.kid] = file_key
    return PublicKeyring(document, entries, keys, salt, opslimit, memlimit)


# ---------------------------------------------------------------- keys 4.5 steps 4-7
def open_keyring(data: bytes, passphrase: str) -> Keyring:
    """keys 4.5 steps 1-7. Raises ``WrongPassphrase`` (step 5), ``RecordsChanged`` (step 5a) or
    ``Damaged`` (any other step)."""
    public = read_keyring(data)
    document = public.document
    file_key = derive_key(passphrase, public.salt, public.opslimit, public.memlimit)  # step 4
    # step 5
    try:
        check = unseal(file_key, document["check"], CHECK_AAD)
    except ValueError as e:
        # keys 4.5: "an altered check value cannot be told apart from a wrong passphrase";
        # a string that is not even a sealed value is an altered check value too.
        raise WrongPassphrase(f"the passphrase check does not open ({e})") from e
    if check != CHECK_PLAINTEXT:
        raise Damaged("check opened to something else than the check string")
    # step 5a
    records = document.get("records")
    if not isinstance(records, str):
        raise RecordsChanged("the records' seal is missing or not a string")
    try:
        sealed_nothing = unseal(file_key, records, records_aad(public.entries))
    except ValueError as e:
        raise RecordsChanged(f"the records' seal does not open: records changed ({e})") from e
    if sealed_nothing != b"":
        raise RecordsChanged("the records' seal opened to a non-empty plaintext")
    # step 6
    opened: dict[str, FileKey] = {}
    for kid, fk in public.keys.items():
        seed = None
        if fk.sealed_private is not None:
            try:
                seed = unseal(file_key, fk.sealed_private, key_aad(kid, fk.key.role))
            except ValueError as e:
                raise Damaged(f"private of {kid!r} does not open: {e}") from e
            if len(seed) != 32:
                raise Damaged(f"private of {kid!r} is not 32 bytes")
            if b64ue(bytes(SigningKey(seed).verify_key)) != fk.key.x:
                raise Damaged(f"private of {kid!r} does not match jwk.x")
        opened[kid] = replace(fk, seed=seed)
    # step 7
    secrets: dict[str, bytes] = {}
    sealed_secrets = document.get("secrets", {})
    if not isinstance(sealed_secrets, dict):
        raise Damaged("secrets is not an object")
    for name, sealed in sealed_secrets.items():
        if not _SECRET_NAME.fullmatch(name) or not isinstance(sealed, str):
            raise Damaged(f"secret {name!r} malformed")
        try:
            secret = unseal(file_key, sealed, secret_aad(name))
        except ValueError as e:
            raise Damaged(f"secret {name!r} does not open: {e}") from e
        if len(secret) != 32:
            raise Damaged(f"secret {name!r} is not 32 bytes")
        secrets[name] = secret
    return Keyring(public, file_key, opened, secrets)


# ---------------------------------------------------------------- events 15: the key events
KEY_EVENTS = ("KeyPublished", "KeyRetired", "KeyRevoked")
_BODY_MEMBERS = {
    "KeyPublished": {"kid", "role", "x", "scope", "not_before", "not_after"},
    "KeyRetired": {"kid", "not_after"},
    "KeyRevoked": {"kid", "revoked_at"},
}


def _published_key(body: Mapping[str, Any]) -> Key:
    """events 15: a ``KeyPublished`` body as a key (kid = thumbprint of x, keys 2)."""
    kid, role, x, scope = body.get("kid"), body.get("role"), body.get("x"), body.get("scope")
    if not isinstance(kid, str) or role not in ROLES:
        raise lv.Fail(f"KeyPublished: kid/role {kid!r} {role!r}")
    try:
        raw = b64ud(x)
    except ValueError as e:
        raise lv.Fail(f"KeyPublished {kid}: x {e}") from e
    if len(raw) != 32 or lv.jwk_thumbprint(str(x)) != kid:
        raise lv.Fail(f"KeyPublished {kid}: x is not the key of this kid")
    if role in SCOPED:
        if not isinstance(scope, str) or not _SCOPE.fullmatch(scope):
            raise lv.Fail(f"KeyPublished {kid}: scope {scope!r}")
    elif scope is not None:
        raise lv.Fail(f"KeyPublished {kid}: a {role} key with a scope")
    not_before = parse_chain_time(body.get("not_before"))
    not_after = None if body.get("not_after") is None else parse_chain_time(body["not_after"])
    return Key(kid, str(role), str(x), scope, not_before, not_after)


def _earlier(held: int | None, new: int) -> int:
    return new if held is None else min(held, new)


def fold_key_events(entries: Iterable[Mapping[str, Any]]) -> dict[str, Key]:
    """events 15 "Replaying them": ``KeyPublished`` adds a key (a second one of the same kid
    changes nothing); ``KeyRetired``/``KeyRevoked`` set ``not_after``/``revoked_at`` to the
    earlier of the value held and the event's; an event for an unknown kid changes nothing.
    Entries are parsed entries (formats 2), in index order; other types are ignored."""
    keys: dict[str, Key] = {}
    for entry in entries:
        kind, body = entry["type"], entry["body"]
        if kind == "KeyPublished":
            key = _published_key(body)
            keys.setdefault(key.kid, key)
        elif kind == "KeyRetired" and body.get("kid") in keys:
            held = keys[body["kid"]]
            new = parse_chain_time(body.get("not_after"))
            keys[held.kid] = replace(held, not_after=_earlier(held.not_after, new))
        elif kind == "KeyRevoked" and body.get("kid") in keys:
            held = keys[body["kid"]]
            new = parse_chain_time(body.get("revoked_at"))
            keys[held.kid] = replace(held, revoked_at=_earlier(held.revoked_at, new))
    return keys


def _published_body(key: Key) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "role": key.role,
        "x": key.x,
        "scope": key.scope,
        "not_before": format_time(key.not_before),
        "not_after": None if key.not_after is None else format_time(key.not_after),
    }


def expected_key_events(
    file_keys: Mapping[str, Key], chain: Mapping[str, Key]
) -> list[tuple[str, dict[str, Any]]]:
    """keys 4.6 "When they are appended": what one command appends for this file and chain.
    First a ``KeyPublished`` for each key the chain lacks, then for each key a ``KeyRetired``
    when the file's ``not_after`` is earlier than the chain's (or the chain has none) and a
    ``KeyRevoked`` when the file's ``revoked_at`` is earlier (or the chain has none), keys taken
    in order of ``not_before``, then ``kid``. A contradiction is ``KeyringConflict``."""
    order = sorted(file_keys.values(), key=lambda k: (k.not_before, k.kid))
    events: list[tuple[str, dict[str, Any]]] = []
    known = dict(chain)
    for key in order:
        if key.kid not in known:
            published = replace(key, revoked_at=None)
            events.append(("KeyPublished", _published_body(published)))
            known[key.kid] = published
        else:
            _check_agrees(key, known[key.kid])
    for key in order:
        held = known[key.kid]
        if key.not_after is not None and (held.not_after is None or key.not_after < held.not_after):
            events.append(("KeyRetired", {"kid": key.kid, "not_after": format_time(key.not_after)}))
        if key.revoked_at is not None and (
            held.revoked_at is None or key.revoked_at < held.revoked_at
        ):
            body = {"kid": key.kid, "revoked_at": format_time(key.revoked_at)}
            events.append(("KeyRevoked", body))
    return events


def check_key_events(entries: Sequence[Mapping[str, Any]]) -> None:
    """events 15 and keys 4.6: every key event is appended by ``system:server`` with exactly
    the documented body members; none changes nothing; none contradicts an earlier
    ``KeyPublished`` of its kid; and inside one command (entries of equal ``time``, events 1's
    conventions) ``KeyPublished`` come first, then the others, keys in (not_before, kid) order.
    Raises ``lv.Fail``."""
    keys: dict[str, Key] = {}
    batches: dict[str, list[tuple[str, str]]] = {}
    for entry in entries:
        kind, body = entry["type"], entry["body"]
        if kind not in KEY_EVENTS:
            continue
        where = f"entry {entry['index']} ({kind})"
        if entry["actor"] != SYSTEM:
            raise lv.Fail(f"{where}: actor {entry['actor']!r}")
        if set(body) != _BODY_MEMBERS[kind]:
            raise lv.Fail(f"{where}: body members {sorted(body)}")
        kid = body["kid"]
        if kind == "KeyPublished":
            key = _published_key(body)
            if kid in keys:
                raise lv.Fail(f"{where}: {kid} published twice")
            keys[kid] = key
        elif kid not in keys:
            raise lv.Fail(f"{where}: unknown kid {kid}")
        elif kind == "KeyRetired":
            new = parse_chain_time(body["not_after"])
            held = keys[kid]
            if held.not_after is not None and new >= held.not_after:
                raise lv.Fail(f"{where}: changes nothing")
            if new <= held.not_before:
                raise lv.Fail(f"{where}: would empty the window")
            keys[kid] = replace(held, not_after=new)
        else:
            new = parse_chain_time(body["revoked_at"])
            held = keys[kid]
            if held.revoked_at is not None and new >= held.revoked_at:
                raise lv.Fail(f"{where}: changes nothing")
            keys[kid] = replace(held, revoked_at=new)
        batches.setdefault(entry["time"], []).append((kind, kid))
    for stamp, batch in batches.items():
        kinds = [k for k, _ in batch]
        n_published = kinds.count("KeyPublished")
        if kinds[:n_published] != ["KeyPublished"] * n_published:
            raise lv.Fail(f"batch at {stamp}: KeyPublished not first")
        rest = [(keys[kid].not_before, kid) for _, kid in batch[n_published:]]
        if rest != sorted(rest):
            raise lv.Fail(f"batch at {stamp}: keys not in (not_before, kid) order")
        published = [(keys[kid].not_before, kid) for _, kid in batch[:n_published]]
        if published != sorted(published):
            raise lv.Fail(f"batch at {stamp}: KeyPublished not in (not_before, kid) order")


# ---------------------------------------------------------------- keys 4.6: the keys in use
@dataclass(frozen=True)
class MergedKey:
    key: Key
    seed: bytes | None  # the private half, from the file only
    reason: str | None  # from the file only
    in_file: bool
    on_chain: bool


def _check_agrees(file_key: Key, chain_key: Key) -> None:
    for name in ("role", "scope", "not_before", "x"):
        if getattr(file_key, name) != getattr(chain_key, name):
            raise KeyringConflict(
                f"{file_key.kid}: the file's {name} {getattr(file_key, name)!r} contradicts the "
                f"chain's {getattr(chain_key, name)!r}"
            )


def merge(file_keys: Mapping[str, FileKey], chain: Mapping[str, Key]) -> dict[str, MergedKey]:
    """keys 4.6 "The keys in use": role, scope and not_before never change (a contradiction is
    ``KeyringConflict``); not_after and revoked_at are the earlier of the file's and the
    chain's; a chain key the file lacks is kept public-only; private halves and revocation
    reasons come from the file."""
    out: dict[str, MergedKey] = {}
    for kid, fk in file_keys.items():
        key = fk.key
        if kid in chain:
            held = chain[kid]
            _check_agrees(key, held)
            if held.not_after is not None:
                key = replace(key, not_after=_earlier(key.not_after, held.not_after))
            if held.revoked_at is not None:
                key = replace(key, revoked_at=_earlier(key.revoked_at, held.revoked_at))
        out[kid] = MergedKey(key, fk.seed, fk.reason, in_file=True, on_chain=kid in chain)
    for kid, held in chain.items():
        if kid not in out:
            out[kid] = MergedKey(held, None, None, in_file=False, on_chain=True)
    return out


# ---------------------------------------------------------------- keys 5.1: trust list entries
def trust_list_entries(keys: Iterable[Key]) -> list[dict[str, Any]]:
    """keys 5.1: the entries a trust list made from these keys holds (published roles only,
    NumericDate times, ``exp``/``scope``/``revoked`` only when set), sorted by (role, scope,
    nbf, kid)."""
    out: list[dict[str, Any]] = []
    for key in keys:
        if key.role not in PUBLISHED_ROLES:
            continue
        entry: dict[str, Any] = {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": key.x,
            "kid": key.kid,
            "alg": "EdDSA",
            "use": "sig",
            "role": key.role,
            "nbf": key.not_before,
        }
        if key.not_after is not None:
            entry["exp"] = key.not_after
        if key.scope is not None:
            entry["scope"] = key.scope
        if key.revoked_at is not None:
            entry["revoked"] = key.revoked_at
        out.append(entry)
    out.sort(key=lambda e: (e["role"], e.get("scope", ""), e["nbf"], e["kid"]))
    return out


# ---------------------------------------------------------------- formats 4 and 5: the chain
def fetch_entries(client: httpx.Client, start: int, end: int, page: int = 1000) -> list[bytes]:
    """formats 4: ``GET /v1/log/entries?start=S&end=E`` in half-open pages of at most 1,000,
    each entry's exact bytes and ``\\n``."""
    out: list[bytes] = []
    for s in range(start, end, page):
        e = min(end, s + page)
        answer = client.get("/v1/log/entries", params={"start": s, "end": e})
        if answer.status_code != 200:
            raise lv.Fail(f"entries {s}..{e}: HTTP {answer.status_code}")
        if not answer.headers.get("content-type", "").startswith("application/x-ndjson"):
            raise lv.Fail("entries: not application/x-ndjson")
        if not answer.content.endswith(b"\n"):
            raise lv.Fail("entries: no final newline")
        lines = answer.content[:-1].split(b"\n")
        if len(lines) != e - s:
            raise lv.Fail(f"entries {s}..{e}: {len(lines)} lines")
        out += lines
    return out


def read_log(
    client: httpx.Client, root_jwk: Mapping[str, Any], origin: str, now: int
) -> tuple[int, list[dict[str, Any]]]:
    """formats 5 "Obtaining the log key" (the current ``log`` entry of a trust list verified
    against the pinned root, keys 5.2), the checkpoint it signed (formats 5), every entry it
    covers (formats 4), each canonical and chained (formats 2) with the checkpoint's Merkle
    root (formats 3). Returns the size and the parsed entries."""
    claims = lv.verify_trust_list(client.get("/v1/trust-list").text, [dict(root_jwk)], now)
    logs = [
        e
        for e in claims["keys"]
        if e["role"] == "log"
        and e["nbf"] <= now
        and ("exp" not in e or now < e["exp"])
        and ("revoked" not in e or now < e["revoked"])
    ]
    if len(logs) != 1:
        raise lv.Fail(f"{len(logs)} current log keys in the trust list")
    log_key = lv.note_verifier_key_from_jwk(origin, logs[0]["x"])
    _, size, root, _ = lv.verify_checkpoint(client.get("/v1/log/checkpoint").content, log_key)
    raw = fetch_entries(client, 0, size)
    lv.check_chain(raw)
    if lv.mth([lv.leaf_hash(e) for e in raw]) != root:
        raise lv.Fail("the entries do not make the checkpoint's root")
    return size, [lv.parse_entry(e) for e in raw]
