"""The auditor's check of a whole ledger, trusting nothing but a pinned log public key.

:func:`audit` reads every entry from a :class:`LogSource` (a server's public API or an export
file) and checks, in order:

1. the latest checkpoint is a signed note by the pinned log key, with the expected origin;
2. it is not smaller than the checkpoint the previous audit saw (``AuditState``);
3. every entry is canonical JSON with exactly the entry fields, at the right index, whose
   ``prev`` is the SHA-256 of the entry before it and whose time does not go backwards;
4. the Merkle root of the first ``previous.size`` entries equals the root the previous audit
   recorded (the log was only appended to in between: history was not rewritten);
5. the Merkle root of all entries equals the checkpoint's root.

The first failure stops the audit with :class:`AuditFailure`, which names the entry index (when
there is one) and the reason. Nothing here imports the server or a database.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from verifier.checkpoint import Checkpoint, verify_checkpoint
from verifier.entry import GENESIS_PREV, check_link, parse_entry
from verifier.errors import NoteError, VerifierError
from verifier.merkle import CompactRange
from verifier.note import NoteVerifier

EXPORT_FORMAT = "unionledger-export/1"
PAGE = 1000


class AuditFailure(VerifierError):
    """The ledger does not verify. ``index`` is the first bad entry, if the failure has one."""

    code = "audit-failed"

    def __init__(self, reason: str, index: int | None = None) -> None:
        super().__init__(reason if index is None else f"entry {index}: {reason}")
        self.index = index
        self.reason = reason


class SourceError(VerifierError):
    """The source cannot be read (network, file, format): not a verdict on the ledger."""

    code = "source-unreadable"


class LogSource(Protocol):
    def checkpoint(self) -> str:
        """The latest signed checkpoint note."""
        ...

    def entries(self, start: int, end: int) -> Iterator[bytes]:
        """The exact bytes of entries ``start .. end - 1``, in order."""
        ...


@dataclass(frozen=True)
class AuditState:
    """What an audit remembers for the next one: the checkpoint it verified."""

    origin: str
    size: int
    root: bytes

    def to_json(self) -> str:
        return json.dumps({"origin": self.origin, "size": self.size, "root": self.root.hex()})

    @classmethod
    def from_json(cls, text: str) -> AuditState:
        """Raises SourceError for a malformed state file."""
        try:
            doc = json.loads(text)
            root = bytes.fromhex(doc["root"])
            if not isinstance(doc["size"], int) or doc["size"] < 0 or len(root) != 32:
                raise ValueError("bad size or root")
            return cls(origin=str(doc["origin"]), size=doc["size"], root=root)
        except (ValueError, KeyError, TypeError) as e:
            raise SourceError(f"malformed audit state: {e}") from e


@dataclass(frozen=True)
class AuditResult:
    checkpoint: Checkpoint
    entries: int

    @property
    def state(self) -> AuditState:
        cp = self.checkpoint
        return AuditState(cp.origin, cp.size, cp.root_hash)


def audit(
    source: LogSource,
    verifier: NoteVerifier,
    *,
    origin: str | None = None,
    previous: AuditState | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AuditResult:
    """Verify the whole log behind ``source``; see the module docstring for the steps.

    Raises:
        AuditFailure: the ledger does not verify (names the first bad index).
        SourceError: the source could not be read.
    """
    try:
        checkpoint = verify_checkpoint(
            source.checkpoint(), verifier, origin=origin or (previous.origin if previous else None)
        )
    except NoteError as e:
        raise AuditFailure(f"checkpoint: {e}") from e
    size = checkpoint.size
    if previous is not None and size < previous.size:
        raise AuditFailure(
            f"checkpoint size {size} is smaller than the {previous.size} seen before: "
            "the log was rolled back"
        )
    frontier = CompactRange()
    prev, prev_time, index = GENESIS_PREV, None, 0
    if previous is not None and previous.size == 0:
        _check_previous_root(frontier, previous)
    for start in range(0, size, PAGE):
        end = min(size, start + PAGE)
        count = 0
        for data in source.entries(start, end):
            if index >= end:
                raise AuditFailure("the source returned more entries than asked for", index)
            try:
                entry = parse_entry(data)
                check_link(entry, index, prev, prev_time)
            except VerifierError as e:
                raise AuditFailure(str(e), index) from e
            frontier.append(entry.leaf_hash)
            prev, prev_time = entry.hash, entry.time
            index += 1
            count += 1
            if previous is not None and index == previous.size:
                _check_previous_root(frontier, previous)
        if count != end - start:
            raise AuditFailure(f"the source holds {index} entries, the checkpoint {size}", index)
        if progress:
            progress(index, size)
    if frontier.root() != checkpoint.root_hash:
        raise AuditFailure(
            f"the Merkle root of the {size} entries does not match the signed checkpoint"
        )
    return AuditResult(checkpoint=checkpoint, entries=size)


def _check_previous_root(frontier: CompactRange, previous: AuditState) -> None:
    if frontier.root() != previous.root:
        raise AuditFailure(
            f"the first {previous.size} entries no longer have the root the last audit "
            "verified: history was rewritten"
        )


class HttpSource:
    """A UnionLedger server's public log API (``/v1/log/...``), read with urllib."""

    def __init__(self, base_url: str, *, timeout: float = 30) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str) -> bytes:
        url = self.base + path
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:  # noqa: S310
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as e:
            raise SourceError(f"GET {url}: HTTP {e.code}") from e
        except (urllib.error.URLError, OSError) as e:
            raise SourceError(f"GET {url}: {e}") from e

    def checkpoint(self) -> str:
        return self._get("/v1/log/checkpoint").decode("utf-8")

    def entries(self, start: int, end: int) -> Iterator[bytes]:
        query = urllib.parse.urlencode({"start": start, "end": end})
        body = self._get(f"/v1/log/entries?{query}")
        yield from body.splitlines()


class ExportSource:
    """An export file: a JSON header line, then one entry per line (see docs/formats.md)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file: IO[bytes] = self.path.open("rb")
        except OSError as e:
            raise SourceError(f"{self.path}: cannot read: {e.strerror}") from e
        try:
            header = json.loads(self._file.readline())
        except ValueError as e:
            self._file.close()
            raise SourceError(f"{self.path}: not an export file") from e
        if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
            self._file.close()
            raise SourceError(f"{self.path}: not a {EXPORT_FORMAT} file")
        self._checkpoint = header.get("checkpoint")
        if not isinstance(self._checkpoint, str):
            self._file.close()
            raise SourceError(f"{self.path}: the header holds no checkpoint")
        self._next = 0

    def checkpoint(self) -> str:
        assert isinstance(self._checkpoint, str)
        return self._checkpoint

    def entries(self, start: int, end: int) -> Iterator[bytes]:
        if start != self._next:
            raise SourceError("an export is read in order")
        for _ in range(start, end):
            line = self._file.readline()
            if not line:
                return
            self._next += 1
            yield line[:-1] if line.endswith(b"\n") else line

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ExportSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_export(out: IO[bytes], checkpoint_note: str, entries: Iterator[bytes]) -> int:
    """Write an export file: the header line, then each entry's bytes on a line of its own
    (canonical entries never contain a newline). Returns the number of entries written."""
    out.write(json.dumps({"format": EXPORT_FORMAT, "checkpoint": checkpoint_note}).encode())
    out.write(b"\n")
    count = 0
    for data in entries:
        if b"\n" in data:
            raise ValueError("an entry contains a newline: not canonical")
        out.write(data + b"\n")
        count += 1
    return count
