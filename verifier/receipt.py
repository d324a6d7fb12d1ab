"""Redemption receipts: self-contained proof bundles that an entry is in the log.

A receipt holds the exact entry bytes, the entry's index, its RFC 6962 inclusion proof and the
log's signed checkpoint, verbatim. Anyone holding only the log's verifier key can check it
offline with :func:`verify_receipt`. Two encodings, both lossless for every valid receipt:

JSON (``Receipt.to_json``; keys sorted, no whitespace, UTF-8 text)::

    {"checkpoint": "<signed checkpoint note, verbatim>",
     "entry": "<base64 (standard, padded) of the exact entry bytes>",
     "format": "unionledger-receipt/1",
     "inclusion": ["<base64 of a 32-byte hash>", ...],
     "index": <zero-based leaf index>}

c2sp.org/tlog-proof@v1 (``Receipt.to_tlog_proof``), which leaves the entry out, as a detached
signature leaves out the signed file::

    c2sp.org/tlog-proof@v1
    index <i>
    <base64 inclusion-proof hash, leaf's sibling first>   (zero or more lines)
    <blank line>
    <signed checkpoint note, verbatim>
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from verifier.checkpoint import Checkpoint, CosignatureVerifier, verify_checkpoint
from verifier.entry import Entry, parse_entry
from verifier.errors import (
    CheckpointError,
    EntryError,
    InclusionProofError,
    NoteError,
    ReceiptError,
)
from verifier.merkle import leaf_hash, verify_inclusion
from verifier.note import NoteVerifier, b64decode_strict, b64encode, split_note

__all__ = [
    "HASH_SIZE",
    "MAX_INDEX",
    "MAX_PROOF_HASHES",
    "RECEIPT_FORMAT",
    "TLOG_PROOF_HEADER",
    "Receipt",
    "VerifiedReceipt",
    "verify_receipt",
]

RECEIPT_FORMAT = "unionledger-receipt/1"
TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"
HASH_SIZE = 32
MAX_INDEX = 2**64 - 2  # the largest index of a tree whose size fits in a uint64
MAX_PROOF_HASHES = 64  # the longest inclusion proof in a tree of fewer than 2**64 leaves


@functools.lru_cache(maxsize=8)
def _check_note(note: str) -> None:
    """``split_note`` for its check alone. Remembered: the receipts of one batch share their
    checkpoint (measured: 16 -> 4 us a receipt). Only a note that passed is remembered (a
    raised NoteError is not cached), and the check depends on nothing but the text."""
    split_note(note)


_MEMBERS = frozenset({"format", "index", "entry", "inclusion", "checkpoint"})
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True)
class Receipt:
    """A proof bundle: entry bytes, leaf index, inclusion proof, signed checkpoint note.

    Invariants (checked when built): 0 <= index < 2**64-1; entry is bytes; inclusion is at most
    64 hashes of 32 bytes; checkpoint_note is a
    well-formed signed note. Building one verifies nothing: call :func:`verify_receipt`.
    """

    index: int
    entry: bytes
    inclusion: tuple[bytes, ...]
    checkpoint_note: str

    def __post_init__(self) -> None:
        if not isinstance(self.index, int) or isinstance(self.index, bool):
            raise TypeError("receipt index must be an int")
        if not 0 <= self.index <= MAX_INDEX:
            raise ReceiptError(f"receipt index {self.index} is out of range")
        if not isinstance(self.entry, bytes):
            raise TypeError("receipt entry must be bytes")
        if not isinstance(self.inclusion, tuple):
            raise TypeError("receipt inclusion proof must be a tuple of bytes")
        if len(self.inclusion) > MAX_PROOF_HASHES:
            raise ReceiptError(f"inclusion proof has more than {MAX_PROOF_HASHES} hashes")
        for node in self.inclusion:
            if not isinstance(node, bytes):
                raise TypeError("inclusion proof hashes must be bytes")
            if len(node) != HASH_SIZE:
                raise ReceiptError(f"inclusion proof hash is not {HASH_SIZE} bytes")
        try:
            _check_note(self.checkpoint_note)
        except NoteError as e:
            raise ReceiptError(f"receipt checkpoint is not a signed note: {e}") from e

    # --- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The receipt as the JSON object that :meth:`to_json` writes."""
        return {
            "checkpoint": self.checkpoint_note,
            "entry": b64encode(self.entry),
            "format": RECEIPT_FORMAT,
            "inclusion": [b64encode(node) for node in self.inclusion],
            "index": self.index,
        }

    def to_json(self) -> str:
        """The receipt as JSON text: keys sorted, no whitespace, non-ASCII left as is."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Receipt:
        """Parse a receipt from JSON text (strict).

        Raises:
            TypeError: ``text`` is not a str.
            ReceiptError: not JSON, duplicate or unknown or missing members, another format,
                a member of the wrong type, base64 that is not canonical standard padded base64,
                or a value that breaks an invariant of :class:`Receipt`.
        """
        if not isinstance(text, str):
            raise TypeError(f"receipt JSON must be str, not {type(text).__name__}")
        try:
            document = json.loads(
                text, object_pairs_hook=_object_without_duplicates, parse_constant=_no_constant
            )
        except (ValueError, RecursionError) as e:
            raise ReceiptError("receipt is not valid JSON") from e
        if not isinstance(document, dict):
            raise ReceiptError("receipt is not a JSON object")
        if document.get("format") != RECEIPT_FORMAT:
            raise ReceiptError(f"receipt format is not {RECEIPT_FORMAT!r}")
        if set(document) != _MEMBERS:
            missing = sorted(_MEMBERS - set(document))
            unknown = sorted(set(document) - _MEMBERS)
            raise ReceiptError(f"receipt members: missing {missing}, unknown {unknown}")
        index = document["index"]
        if not isinstance(index, int) or isinstance(index, bool):
            raise ReceiptError("receipt 'index' is not an integer")
        entry = _decode(document["entry"], "'entry'")
        inclusion = document["inclusion"]
        if not isinstance(inclusion, list):
            raise ReceiptError("receipt 'inclusion' is not a list")
        nodes = tuple(_decode(node, "'inclusion' hash") for node in inclusion)
        note = document["checkpoint"]
        if not isinstance(note, str):
            raise ReceiptError("receipt 'checkpoint' is not a string")
        return cls(index, entry, nodes, note)

    # --- c2sp.org/tlog-proof@v1 ---------------------------------------------------------------

    def to_tlog_proof(self) -> str:
        """The c2sp.org/tlog-proof@v1 text (without an ``extra`` line, without the entry)."""
        hashes = "".join(b64encode(node) + "\n" for node in self.inclusion)
        return f"{TLOG_PROOF_HEADER}\nindex {self.index}\n{hashes}\n{self.checkpoint_note}"

    @classmethod
    def from_tlog_proof(cls, text: str, entry: bytes) -> Receipt:
        """Parse c2sp.org/tlog-proof@v1 text and pair it with the ``entry`` it proves (strict).

        Raises:
            TypeError: ``text`` is not a str or ``entry`` not bytes.
            ReceiptError: a wrong header, an ``extra`` line (we never issue one and would not
                trust it), an index with leading zeros, a hash that is not canonical base64 of
                32 bytes, no blank line, or a checkpoint that is not a signed note.
        """
        if not isinstance(text, str):
            raise TypeError(f"tlog-proof must be str, not {type(text).__name__}")
        header, _, rest = text.partition("\n")
        if header != TLOG_PROOF_HEADER:
            raise ReceiptError(f"tlog-proof does not start with {TLOG_PROOF_HEADER!r}")
        line, _, rest = rest.partition("\n")
        if line.startswith("extra "):
            raise ReceiptError("tlog-proof extra data is not supported")
        if not line.startswith("index ") or _DECIMAL.fullmatch(line[6:]) is None:
            raise ReceiptError("tlog-proof has no 'index <decimal>' line")
        index = int(line[6:])
        nodes: list[bytes] = []
        while True:
            line, newline, rest = rest.partition("\n")
            if not newline:
                raise ReceiptError("tlog-proof has no blank line before its checkpoint")
            if not line:
                break
            if len(nodes) == MAX_PROOF_HASHES:
                raise ReceiptError(f"tlog-proof has more than {MAX_PROOF_HASHES} hashes")
            nodes.append(_decode(line, "tlog-proof hash"))
        return cls(index, entry, tuple(nodes), rest)


def _decode(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ReceiptError(f"receipt {what} is not a string")
    try:
        return b64decode_strict(value)
    except ValueError as e:
        raise ReceiptError(f"receipt {what} is not standard padded base64") from e


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ReceiptError("receipt JSON has a duplicate member")
    return document


def _no_constant(name: str) -> Any:
    raise ReceiptError(f"receipt JSON holds {name}")


@dataclass(frozen=True)
class VerifiedReceipt:
    """What a receipt proves: ``entry`` is leaf ``index`` of the log at ``checkpoint``."""

    entry: bytes
    index: int
    checkpoint: Checkpoint


def verify_receipt(
    receipt: Receipt,
    verifier: NoteVerifier,
    *,
    origin: str | None = None,
    witnesses: Sequence[CosignatureVerifier] = (),
    witness_quorum: int = 0,
) -> VerifiedReceipt:
    """Verify a receipt offline against the log's key and return what it proves.

    Steps:
      1. the checkpoint is signed by ``verifier`` (and cosigned by ``witness_quorum`` of
         ``witnesses``) and its origin is ``origin`` (default: the log key's name);
      2. the index is inside the checkpointed tree;
      3. the inclusion proof leads from ``leaf_hash(entry)`` at that index to the root.

    Raises:
        ValueError: ``witness_quorum`` is negative or larger than the number of witnesses.
        ReceiptError: any step fails (wrapping the :class:`CheckpointError` or
            :class:`InclusionProofError` that said why).
    """
    try:
        checkpoint = verify_checkpoint(
            receipt.checkpoint_note,
            verifier,
            origin=origin,
            witnesses=witnesses,
            witness_quorum=witness_quorum,
        )
    except CheckpointError as e:
        raise ReceiptError(f"receipt checkpoint does not verify: {e}") from e
    if receipt.index >= checkpoint.size:
        raise ReceiptError(
            f"receipt index {receipt.index} is outside the tree of size {checkpoint.size}"
        )
    try:
        verify_inclusion(
            leaf_hash(receipt.entry),
            receipt.index,
            checkpoint.size,
            receipt.inclusion,
            checkpoint.root_hash,
        )
    except InclusionProofError as e:
        raise ReceiptError(f"receipt inclusion proof does not verify: {e}") from e
    return VerifiedReceipt(entry=receipt.entry, index=receipt.index, checkpoint=checkpoint)


def verify_entry_receipt(
    receipt: Receipt, verifier: NoteVerifier, *, origin: str | None = None
) -> tuple[Entry, Checkpoint]:
    """:func:`verify_receipt` for a UnionLedger entry: also checks that the proven bytes are a
    well-formed entry that names the same index (what a member's receipt must be).

    Raises:
        ReceiptError: the receipt does not verify, or its entry is malformed or misplaced.
    """
    verified = verify_receipt(receipt, verifier, origin=origin)
    try:
        entry = parse_entry(verified.entry)
    except EntryError as e:
        raise ReceiptError(f"receipt entry is malformed: {e}") from e
    if entry.index != verified.index:
        raise ReceiptError(f"receipt entry says index {entry.index}, not {verified.index}")
    return entry, verified.checkpoint
