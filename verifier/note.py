"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 signatures (signature type 0x01).

A signed note is a text, a blank line and one or more signature lines::

    <text: UTF-8 lines, each ending in "\\n">
    <blank line>
    — <key name> <base64(4-byte key id || signature)>\\n      (U+2014 EM DASH, then one space)

The signed bytes are the UTF-8 text, final newline included, blank line excluded. The text is
separated from the signatures by the *last* blank line, so a text may itself hold blank lines.

Verification follows the spec: signatures from unknown (name, key id) pairs are ignored; a
signature from a known key that does not verify rejects the whole note; a note with no
signature from a known key is rejected. A key id is a hint for finding the key, never trust.

``open_note`` takes any :class:`SignatureVerifier`, so other signature types built on notes
(the tlog-cosignature witness type 0x04 in :mod:`verifier.checkpoint`) plug into the same check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import keys
from verifier.errors import NoteError

__all__ = [
    "KEY_ID_SIZE",
    "MAX_SIGNATURES",
    "SIGNATURE_PREFIX",
    "SIGNATURE_TYPE_ED25519",
    "NoteSigner",
    "NoteVerifier",
    "OpenedNote",
    "Signature",
    "SignatureVerifier",
    "add_signatures",
    "b64decode_strict",
    "b64encode",
    "check_key_name",
    "check_note_chars",
    "check_note_text",
    "decode_verifier_key",
    "encode_verifier_key",
    "key_id_for",
    "note_key_id",
    "open_note",
    "sign_note",
    "split_note",
]

SIGNATURE_TYPE_ED25519 = 0x01
"""The signed-note signature type byte of plain Ed25519 note signatures."""

KEY_ID_SIZE = 4
_ED25519_KEY_SIZE = 32

MAX_SIGNATURES = 100
"""Most signature lines a note may carry (the spec asks for at least 16; a bound stops abuse)."""

SIGNATURE_PREFIX = "— "  # U+2014 EM DASH, U+0020 SPACE

# ASCII control characters other than newline: forbidden anywhere in a signed note.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_HEX_KEY_ID = re.compile(r"[0-9a-fA-F]{8}")


class SignatureVerifier(Protocol):
    """What :func:`open_note` needs of a trusted key: its name, its key id, and a check.

    ``verify(signature, message)`` returns ``None`` when ``signature`` (the bytes after the key
    id) is a valid signature of ``message`` (the note text) and raises
    :class:`keys.InvalidSignature` otherwise.
    """

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def verify(self, signature: bytes, message: bytes) -> None: ...


# --- encodings --------------------------------------------------------------------------------


def b64decode_strict(text: str) -> bytes:
    """Decode standard, padded base64 (RFC 4648 section 4), accepting only its canonical form.

    Rejects other alphabets, missing or extra padding, whitespace and non-zero trailing bits, so
    every byte string has exactly one accepted encoding.

    Raises:
        TypeError: ``text`` is not a str.
        ValueError: ``text`` is not canonical standard padded base64.
    """
    if not isinstance(text, str):
        raise TypeError(f"base64 text must be str, not {type(text).__name__}")
    if not text.isascii():
        raise ValueError("base64 text is not ASCII")
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error as e:
        raise ValueError("not standard padded base64") from e
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return raw


def b64encode(data: bytes) -> str:
    """Standard, padded base64 (RFC 4648 section 4) as a str."""
    return base64.b64encode(data).decode("ascii")


def check_note_chars(text: str, what: str) -> None:
    """Check the character rules every part of a signed note obeys.

    Raises:
        TypeError: ``text`` is not a str.
        NoteError: ``text`` is not valid UTF-8 (a lone surrogate) or holds an ASCII control
            character other than newline.
    """
    if not isinstance(text, str):
        raise TypeError(f"{what} must be str, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise NoteError(f"{what} is not valid UTF-8") from e
    found = _CONTROL.search(text)
    if found is not None:
        raise NoteError(f"{what} holds control character U+{ord(found.group()):04X}")


def check_key_name(name: str) -> None:
    """Check a signed-note key name: non-empty, no Unicode space, no '+', no control character.

    Raises:
        TypeError: ``name`` is not a str.
        NoteError: the name breaks one of those rules.
    """
    check_note_chars(name, "key name")
    if not name:
        raise NoteError("key name is empty")
    if "+" in name:
        raise NoteError(f"key name {name!r} contains '+'")
    if any(c.isspace() for c in name):
        raise NoteError(f"key name {name!r} contains a space")


def check_note_text(text: str) -> None:
    """Check a note text before signing it: non-empty, every line ending in newline.

    Raises:
        TypeError: ``text`` is not a str.
        NoteError: it is empty, does not end in newline, or breaks the character rules.
    """
    check_note_chars(text, "note text")
    if not text:
        raise NoteError("note text is empty")
    if not text.endswith("\n"):
        raise NoteError("note text does not end with a newline")


def key_id_for(name: str, signature_type: int, public_key: keys.PublicKey) -> bytes:
    """``SHA-256(name || 0x0A || signature type || 32-byte public key)[:4]``.

    Raises:
        TypeError: ``name`` is not a str or ``public_key`` not a :class:`keys.PublicKey`.
        NoteError: ``name`` is not a valid key name.
        ValueError: ``signature_type`` is not a byte value.
    """
    check_key_name(name)
    if not isinstance(public_key, keys.PublicKey):
        raise TypeError("public_key must be a keys.PublicKey")
    if not 0 <= signature_type <= 0xFF:
        raise ValueError("signature type must be a byte value")
    material = name.encode("utf-8") + b"\n" + bytes([signature_type]) + public_key.to_bytes()
    return hashlib.sha256(material).digest()[:KEY_ID_SIZE]


def note_key_id(name: str, public_key: keys.PublicKey) -> bytes:
    """The key id of an Ed25519 note key: ``SHA-256(name || 0x0A || 0x01 || key)[:4]``.

    Raises:
        TypeError, NoteError: as :func:`key_id_for`.
    """
    return key_id_for(name, SIGNATURE_TYPE_ED25519, public_key)


def encode_verifier_key(name: str, signature_type: int, public_key: keys.PublicKey) -> str:
    """The verifier key string ``<name>+<8 hex key id>+<base64(type || public key)>``.

    Raises:
        TypeError, NoteError, ValueError: as :func:`key_id_for`.
    """
    key_id = key_id_for(name, signature_type, public_key)
    material = bytes([signature_type]) + public_key.to_bytes()
    return f"{name}+{key_id.hex()}+{b64encode(material)}"


def decode_verifier_key(text: str, signature_type: int) -> tuple[str, keys.PublicKey]:
    """Parse a verifier key string of an Ed25519-based ``signature_type``: (name, public key).

    The key id in the string must equal the one computed from the name, type and key (it is
    a checksum here, not a second source of truth). Hex digits may be upper or lower case.

    Raises:
        TypeError: ``text`` is not a str.
        NoteError: the string is malformed, of another signature type, or its id is wrong.
    """
    if not isinstance(text, str):
        raise TypeError(f"verifier key must be str, not {type(text).__name__}")
    name, sep1, rest = text.partition("+")
    hex_id, sep2, key64 = rest.partition("+")
    if not (sep1 and sep2):
        raise NoteError("verifier key is not <name>+<hex key id>+<base64 key>")
    check_key_name(name)
    if _HEX_KEY_ID.fullmatch(hex_id) is None:
        raise NoteError("verifier key id is not 8 hex digits")
    try:
        material = b64decode_strict(key64)
    except ValueError as e:
        raise NoteError("verifier key material is not standard padded base64") from e
    if len(material) != 1 + _ED25519_KEY_SIZE:
        raise NoteError("verifier key material is not a type byte and a 32-byte key")
    if material[0] != signature_type:
        raise NoteError(
            f"verifier key has signature type 0x{material[0]:02x}, expected 0x{signature_type:02x}"
        )
    try:
        public_key = keys.PublicKey.from_bytes(material[1:])
    except keys.MalformedKey as e:
        raise NoteError("verifier key is not a valid Ed25519 public key") from e
    if key_id_for(name, signature_type, public_key) != bytes.fromhex(hex_id):
        raise NoteError("verifier key id does not match its name and key")
    return name, public_key


# --- values -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """One signature line: key name, 4-byte key id, and the signature bytes after the id."""

    name: str
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if not isinstance(self.key_id, bytes) or not isinstance(self.signature, bytes):
            raise TypeError("key_id and signature must be bytes")
        if len(self.key_id) != KEY_ID_SIZE:
            raise NoteError(f"key id must be {KEY_ID_SIZE} bytes, got {len(self.key_id)}")
        if not self.signature:
            raise NoteError("signature is empty")

    def line(self) -> str:
        """The signature line, ``— <name> <base64(key id || signature)>\\n``."""
        return f"{SIGNATURE_PREFIX}{self.name} {b64encode(self.key_id + self.signature)}\n"

    @classmethod
    def parse_line(cls, line: str) -> Signature:
        """Parse one signature line, without its final newline.

        Raises:
            NoteError: the line is not ``— <name> <base64 of at least 5 bytes>``.
        """
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError("signature line does not start with an em dash and a space")
        name, sep, sig64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        if not sep:
            raise NoteError("signature line has no space between key name and signature")
        try:
            raw = b64decode_strict(sig64)
        except ValueError as e:
            raise NoteError(f"signature by {name!r} is not standard padded base64") from e
        if len(raw) <= KEY_ID_SIZE:
            raise NoteError(f"signature by {name!r} is too short")
        return cls(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:])


@dataclass(frozen=True)
class OpenedNote:
    """A note whose signatures were checked against trusted keys.

    ``text`` is the signed text (final newline included). ``signatures`` are the signatures that
    verified, in note order; ``verified_by`` their key names. ``unverified`` are the signature
    lines from keys the caller did not trust (ignored, kept for inspection only).
    """

    text: str
    verified_by: tuple[str, ...]
    signatures: tuple[Signature, ...]
    unverified: tuple[Signature, ...] = ()

    def verified(self, verifier: SignatureVerifier) -> bool:
        """Whether ``verifier``'s key (its name and key id) signed this note."""
        return any(s.name == verifier.name and s.key_id == verifier.key_id for s in self.signatures)


@dataclass(frozen=True)
class NoteVerifier:
    """A trusted Ed25519 note key (signature type 0x01): name, public key and derived key id."""

    name: str
    public_key: keys.PublicKey
    key_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        # key_id_for checks the name and the key's type.
        object.__setattr__(self, "key_id", note_key_id(self.name, self.public_key))

    @classmethod
    def from_key_string(cls, text: str) -> NoteVerifier:
        """Parse ``<name>+<8 hex key id>+<base64(0x01 || 32-byte key)>``.

        Raises:
            TypeError: ``text`` is not a str.
            NoteError: malformed, not type 0x01, or the key id does not match.
        """
        name, public_key = decode_verifier_key(text, SIGNATURE_TYPE_ED25519)
        return cls(name, public_key)

    def key_string(self) -> str:
        """The verifier key string, the inverse of :meth:`from_key_string`."""
        return encode_verifier_key(self.name, SIGNATURE_TYPE_ED25519, self.public_key)

    def verify(self, signature: bytes, message: bytes) -> None:
        """Return ``None`` if ``signature`` is this key's Ed25519 signature of ``message``.

        Raises:
            keys.InvalidSignature: it is not.
        """
        self.public_key.verify(signature, message)


@dataclass(frozen=True)
class NoteSigner:
    """An Ed25519 note signing key: a key name and a :class:`keys.PrivateKey`."""

    name: str
    private_key: keys.PrivateKey

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if not isinstance(self.private_key, keys.PrivateKey):
            raise TypeError("private_key must be a keys.PrivateKey")

    @property
    def key_id(self) -> bytes:
        return note_key_id(self.name, self.private_key.public_key)

    def verifier(self) -> NoteVerifier:
        """The matching :class:`NoteVerifier` (what a relying party pins)."""
        return NoteVerifier(self.name, self.private_key.public_key)

    def signature_line(self, text: str) -> str:
        """This key's signature line for ``text`` (append it to a note's signature block).

        Raises:
            TypeError, NoteError: ``text`` is not a valid note text (see :func:`check_note_text`).
        """
        check_note_text(text)
        signature = self.private_key.sign(text.encode("utf-8"))
        return Signature(self.name, self.key_id, signature).line()

    def sign(self, text: str) -> str:
        """The signed note: ``text``, a blank line and this key's signature line.

        Raises:
            TypeError, NoteError: ``text`` is not a valid note text.
        """
        return sign_note(text, [self])


# --- signing and opening ----------------------------------------------------------------------


def split_note(note: str) -> tuple[str, tuple[Signature, ...]]:
    """Split a signed note into its text and its parsed signature lines, verifying nothing.

    Raises:
        TypeError: ``note`` is not a str.
        NoteError: the note is malformed (characters, blank line, signature lines, too many).
    """
    check_note_chars(note, "signed note")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("signed note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise NoteError("signed note has no signature lines")
    if not block.endswith("\n"):
        raise NoteError("signed note does not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"signed note has more than {MAX_SIGNATURES} signatures")
    return text, tuple(Signature.parse_line(line) for line in lines)


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """The signed note: ``text``, a blank line and one signature line per signer, in order.

    Raises:
        TypeError: ``text`` is not a str.
        NoteError: ``text`` is not a valid note text, there are no signers, two signers share
            a (name, key id), or there are more than :data:`MAX_SIGNATURES`.
    """
    check_note_text(text)
    if not signers:
        raise NoteError("a note needs at least one signer")
    _check_new_signers((), signers)
    return text + "\n" + "".join(signer.signature_line(text) for signer in signers)


def add_signatures(note: str, signers: Sequence[NoteSigner]) -> str:
    """``note`` with one more signature line per signer appended. Existing signatures are kept
    as they are and not verified (appending a line to a signed note is concatenation).

    Raises:
        TypeError: ``note`` is not a str.
        NoteError: ``note`` is malformed, a signer already signed it or appears twice, or the
            note would exceed :data:`MAX_SIGNATURES`.
    """
    text, existing = split_note(note)
    _check_new_signers(existing, signers)
    return note + "".join(signer.signature_line(text) for signer in signers)


def _check_new_signers(existing: Sequence[Signature], signers: Sequence[NoteSigner]) -> None:
    seen = {(s.name, s.key_id) for s in existing}
    for signer in signers:
        ident = (signer.name, signer.key_id)
        if ident in seen:
            raise NoteError(f"key {signer.name}+{signer.key_id.hex()} signs the note twice")
        seen.add(ident)
    if len(seen) > MAX_SIGNATURES:
        raise NoteError(f"a note may carry at most {MAX_SIGNATURES} signatures")


def open_note(note: str, verifiers: Sequence[SignatureVerifier]) -> OpenedNote:
    """Verify a signed note against trusted keys and return its text.

    Steps (c2sp.org/signed-note):
      1. the note is valid UTF-8 without control characters other than newline;
      2. the text ends at the last blank line; one or more well-formed signature lines follow;
      3. each signature whose (name, key id) matches a trusted key must verify (a key that
         signed twice counts once); the others are ignored;
      4. at least one trusted key's signature verified.

    Raises:
        TypeError: ``note`` is not a str.
        NoteError: the note is malformed, no trusted keys were given, two trusted keys share a
            (name, key id), a trusted key's signature fails, or no trusted key signed it.
    """
    text, signatures = split_note(note)
    if not verifiers:
        raise NoteError("no trusted keys given: a note cannot be verified against nothing")
    known: dict[tuple[str, bytes], SignatureVerifier] = {}
    for trusted in verifiers:
        ident = (trusted.name, trusted.key_id)
        if ident in known and known[ident] != trusted:
            raise NoteError(f"two trusted keys share name and key id {_label(*ident)}")
        known[ident] = trusted

    message = text.encode("utf-8")
    verified: list[Signature] = []
    unverified: list[Signature] = []
    seen: set[tuple[str, bytes]] = set()
    for sig in signatures:
        ident = (sig.name, sig.key_id)
        verifier = known.get(ident)
        if verifier is None:
            unverified.append(sig)
            continue
        try:
            verifier.verify(sig.signature, message)
        except keys.InvalidSignature as e:
            raise NoteError(f"signature by trusted key {_label(*ident)} does not verify") from e
        # A key that signed twice (a witness cosigning at two times) counts once. Unlike Go's
        # sumdb/note, which skips repeats unchecked, every line from a trusted key must verify.
        if ident not in seen:
            seen.add(ident)
            verified.append(sig)
    if not verified:
        raise NoteError("no signature by a trusted key")
    return OpenedNote(
        text=text,
        verified_by=tuple(s.name for s in verified),
        signatures=tuple(verified),
        unverified=tuple(unverified),
    )


def _label(name: str, key_id: bytes) -> str:
    return f"{name}+{key_id.hex()}"
