"""C2SP checkpoints (c2sp.org/tlog-checkpoint) and Ed25519 witness cosignatures
(c2sp.org/tlog-cosignature, type 0x04).

A checkpoint is a signed note whose text is exactly::

    <origin>\\n
    <tree size, ASCII decimal, no leading zeros>\\n
    <base64 (standard, padded) of the 32-byte RFC 6962 root hash>\\n
    [<extension line>\\n ...]

Our logs sign with a key whose name equals the origin (:func:`sign_checkpoint` enforces it), and
:func:`verify_checkpoint` expects the origin to be the log key's name unless told otherwise.

A v1 cosignature is a note signature of type 0x04 whose bytes are ``u64 big-endian unix time ||
Ed25519 signature`` over ``"cosignature/v1\\ntime <t>\\n" || checkpoint body``. It states: as of
time t, this is the largest checkpoint consistent with everything the witness has seen for the
origin. Witness keys are :class:`CosignatureVerifier` values, passed to :func:`verify_checkpoint`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import keys
from verifier.errors import CheckpointError, NoteError
from verifier.note import (
    NoteSigner,
    NoteVerifier,
    Signature,
    SignatureVerifier,
    b64decode_strict,
    b64encode,
    check_key_name,
    check_note_chars,
    decode_verifier_key,
    encode_verifier_key,
    key_id_for,
    open_note,
)

__all__ = [
    "COSIGNATURE_HEADER",
    "HASH_SIZE",
    "MAX_TIMESTAMP",
    "MAX_TREE_SIZE",
    "SIGNATURE_TYPE_COSIGNATURE_V1",
    "Checkpoint",
    "CosignatureVerifier",
    "Cosigner",
    "cosignature_message",
    "cosignature_timestamp",
    "sign_checkpoint",
    "verify_checkpoint",
]

HASH_SIZE = 32
MAX_TREE_SIZE = 2**64 - 1
"""Tree sizes are uint64 in every tlog implementation we interoperate with."""

SIGNATURE_TYPE_COSIGNATURE_V1 = 0x04
COSIGNATURE_HEADER = "cosignature/v1\n"
MAX_TIMESTAMP = 2**63 - 1
_TIMESTAMP_SIZE = 8
_ED25519_SIGNATURE_SIZE = 64

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")  # ASCII only; int() would take "٣" and "1_0"


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, tree size, RFC 6962 root hash, optional extension lines.

    Invariants (checked when built): origin non-empty, one line, no control characters;
    0 <= size < 2**64; root_hash 32 bytes; each extension line non-empty, one line.
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "checkpoint origin")
        if not isinstance(self.size, int) or isinstance(self.size, bool):
            raise TypeError("checkpoint size must be an int")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"checkpoint size {self.size} is out of range")
        if not isinstance(self.root_hash, bytes):
            raise TypeError("checkpoint root hash must be bytes")
        if len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"checkpoint root hash must be {HASH_SIZE} bytes")
        if not isinstance(self.extensions, tuple):
            raise TypeError("checkpoint extensions must be a tuple of str")
        for line in self.extensions:
            _check_line(line, "checkpoint extension line")

    def body(self) -> str:
        """The note text: the exact string that is signed and cosigned."""
        lines = [self.origin, str(self.size), b64encode(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        """Parse a checkpoint note text (strict: ``parse(b).body() == b`` for every accepted b).

        Raises:
            TypeError: ``body`` is not a str.
            CheckpointError: fewer than three lines, an empty line, a size with a sign, leading
                zeros or non-ASCII digits, a root that is not canonical base64 of 32 bytes.
        """
        if not isinstance(body, str):
            raise TypeError(f"checkpoint body must be str, not {type(body).__name__}")
        if not body.endswith("\n"):
            raise CheckpointError("checkpoint body does not end with a newline")
        lines = body[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("checkpoint body has fewer than three lines")
        origin, size_text, root_text, *extensions = lines
        if _DECIMAL.fullmatch(size_text) is None:
            raise CheckpointError("checkpoint size is not a decimal without leading zeros")
        try:
            root_hash = b64decode_strict(root_text)
        except ValueError as e:
            raise CheckpointError("checkpoint root hash is not standard padded base64") from e
        checkpoint = cls(origin, int(size_text), root_hash, tuple(extensions))
        if checkpoint.body() != body:  # cannot happen given the checks above; fail closed anyway
            raise CheckpointError("checkpoint body is not in canonical form")
        return checkpoint


def _check_line(line: str, what: str) -> None:
    try:
        check_note_chars(line, what)
    except NoteError as e:
        raise CheckpointError(str(e)) from e
    if not line:
        raise CheckpointError(f"{what} is empty")
    if "\n" in line:
        raise CheckpointError(f"{what} spans more than one line")


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    """The signed checkpoint note (the log's signature).

    Raises:
        CheckpointError: the signer's key name is not the checkpoint's origin.
    """
    if signer.name != checkpoint.origin:
        raise CheckpointError(
            f"log key name {signer.name!r} is not the checkpoint origin {checkpoint.origin!r}"
        )
    return signer.sign(checkpoint.body())


def verify_checkpoint(
    note: str,
    verifier: NoteVerifier,
    *,
    origin: str | None = None,
    witnesses: Sequence[CosignatureVerifier] = (),
    witness_quorum: int = 0,
) -> Checkpoint:
    """Verify a signed checkpoint and return it.

    Steps:
      1. open the note with the log key and the witness keys (c2sp.org/signed-note rules:
         unknown signatures are ignored, a failing known one rejects the note);
      2. the log key itself must have signed it (a witness alone is not enough);
      3. at least ``witness_quorum`` distinct witnesses must have cosigned it;
      4. the text must parse as a checkpoint whose origin is ``origin``, or the log key's name
         when ``origin`` is None.

    Raises:
        TypeError: ``note`` is not a str.
        ValueError: ``witness_quorum`` is negative or larger than the number of witnesses.
        CheckpointError: any step fails (wrapping the :class:`NoteError` that said why).
    """
    distinct = {(w.name, w.key_id): w for w in witnesses}
    if not 0 <= witness_quorum <= len(distinct):
        raise ValueError("witness_quorum must be between 0 and the number of witnesses")
    expected_origin = verifier.name if origin is None else origin
    trusted: list[SignatureVerifier] = [verifier, *witnesses]
    try:
        opened = open_note(note, trusted)
    except NoteError as e:
        raise CheckpointError(f"checkpoint signature check failed: {e}") from e
    if not opened.verified(verifier):
        raise CheckpointError(f"checkpoint is not signed by the log key {verifier.name!r}")
    cosigned = sum(1 for w in distinct.values() if opened.verified(w))
    if cosigned < witness_quorum:
        raise CheckpointError(
            f"checkpoint is cosigned by {cosigned} of the required {witness_quorum} witnesses"
        )
    checkpoint = Checkpoint.parse(opened.text)
    if checkpoint.origin != expected_origin:
        raise CheckpointError(
            f"checkpoint origin {checkpoint.origin!r} is not the expected {expected_origin!r}"
        )
    return checkpoint


# --- tlog-cosignature/v1 (Ed25519, type 0x04) -------------------------------------------------


def cosignature_message(body: str, timestamp: int) -> bytes:
    """The bytes a v1 cosignature signs: ``cosignature/v1\\ntime <t>\\n`` then the note text.

    Raises:
        ValueError: ``timestamp`` is outside 0..2**63-1.
    """
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError("cosignature timestamp is outside 0..2**63-1")
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{body}".encode()


def cosignature_timestamp(signature: Signature) -> int:
    """The unix time in a v1 cosignature's signature bytes (only meaningful once verified).

    Raises:
        CheckpointError: the signature is not ``8-byte time || 64-byte signature``.
    """
    if len(signature.signature) != _TIMESTAMP_SIZE + _ED25519_SIGNATURE_SIZE:
        raise CheckpointError("a v1 cosignature is 72 bytes")
    return int.from_bytes(signature.signature[:_TIMESTAMP_SIZE], "big")


@dataclass(frozen=True)
class CosignatureVerifier:
    """A trusted witness key for Ed25519 v1 cosignatures; its key id uses type byte 0x04."""

    name: str
    public_key: keys.PublicKey
    key_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        key_id = key_id_for(self.name, SIGNATURE_TYPE_COSIGNATURE_V1, self.public_key)
        object.__setattr__(self, "key_id", key_id)

    @classmethod
    def from_key_string(cls, text: str) -> CosignatureVerifier:
        """Parse ``<name>+<8 hex key id>+<base64(0x04 || 32-byte key)>``.

        Raises:
            TypeError: ``text`` is not a str.
            NoteError: malformed, not type 0x04, or the key id does not match.
        """
        name, public_key = decode_verifier_key(text, SIGNATURE_TYPE_COSIGNATURE_V1)
        return cls(name, public_key)

    def key_string(self) -> str:
        """The verifier key string, the inverse of :meth:`from_key_string`."""
        return encode_verifier_key(self.name, SIGNATURE_TYPE_COSIGNATURE_V1, self.public_key)

    def verify(self, signature: bytes, message: bytes) -> None:
        """Check a cosignature (``time || Ed25519 signature``) over checkpoint text ``message``.

        Raises:
            keys.InvalidSignature: wrong length, time above 2**63-1, or it does not verify.
        """
        if len(signature) != _TIMESTAMP_SIZE + _ED25519_SIGNATURE_SIZE:
            raise keys.InvalidSignature("a v1 cosignature is 72 bytes")
        timestamp = int.from_bytes(signature[:_TIMESTAMP_SIZE], "big")
        if timestamp > MAX_TIMESTAMP:
            raise keys.InvalidSignature("cosignature timestamp is above 2**63-1")
        signed = COSIGNATURE_HEADER.encode() + b"time %d\n" % timestamp + message
        self.public_key.verify(signature[_TIMESTAMP_SIZE:], signed)


@dataclass(frozen=True)
class Cosigner:
    """A witness's Ed25519 cosigning key: a key name and a :class:`keys.PrivateKey`."""

    name: str
    private_key: keys.PrivateKey

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if not isinstance(self.private_key, keys.PrivateKey):
            raise TypeError("private_key must be a keys.PrivateKey")

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.private_key.public_key)

    def cosign(self, checkpoint: Checkpoint, timestamp: int) -> str:
        """The cosignature line for ``checkpoint`` at unix time ``timestamp``; append it to the
        signed checkpoint note (``note + line``).

        The witness must have verified the log's signature and the consistency of
        ``checkpoint`` with the largest checkpoint it saw before calling this: a cosignature
        vouches for exactly that.

        Raises:
            ValueError: ``timestamp`` is outside 0..2**63-1.
        """
        message = cosignature_message(checkpoint.body(), timestamp)
        signature = timestamp.to_bytes(_TIMESTAMP_SIZE, "big") + self.private_key.sign(message)
        return Signature(self.name, self.verifier().key_id, signature).line()
