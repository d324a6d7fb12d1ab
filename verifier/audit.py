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

import hashlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple, Protocol

from verifier.checkpoint import Checkpoint, verify_checkpoint
from verifier.entry import GENESIS_PREV, parse_entry_fields
from verifier.errors import NoteError, VerifierError
from verifier.merkle import CompactRange, root_from_leaf_hashes
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
            size, origin, root_hex = doc["size"], doc["origin"], doc["root"]
            if type(size) is not int or size < 0 or not isinstance(origin, str):
                raise ValueError("bad size or origin")
            if not isinstance(root_hex, str) or not re.fullmatch("[0-9a-f]{64}", root_hex):
                raise ValueError("root must be 64 lowercase hex digits")
            return cls(origin=origin, size=size, root=bytes.fromhex(root_hex))
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


CHUNK_HEIGHT = 14
CHUNK = 1 << CHUNK_HEIGHT  # entries per unit of parallel work: an aligned perfect subtree
PARALLEL_FROM = 200_000  # smaller logs are checked in-process: starting workers costs more


def audit(
    source: LogSource,
    verifier: NoteVerifier,
    *,
    origin: str | None = None,
    previous: AuditState | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    visit: Callable[[int, Sequence[bytes]], None] | None = None,
) -> AuditResult:
    """Verify the whole log behind ``source``; see the module docstring for the steps.

    Parsing and hashing the entries (most of the work) runs in ``workers`` processes (default:
    one per core for logs of 200,000 entries or more, none below); the chain, the Merkle
    frontier and the comparisons run here, in order, so the verdict and the first bad index
    are the same either way.

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
    if workers is None:
        workers = (os.cpu_count() or 1) if size >= PARALLEL_FROM else 0
    chain = _Chain(previous)
    for start, datas, facts in _checked(_chunks(source, size), workers):
        chain.take(start, len(datas), facts)
        if visit is not None:  # the entries just checked, in order (e.g. statistics)
            visit(start, datas)
        if progress:
            progress(chain.index, size)
    if chain.frontier.root() != checkpoint.root_hash:
        raise AuditFailure(
            f"the Merkle root of the {size} entries does not match the signed checkpoint"
        )
    return AuditResult(checkpoint=checkpoint, entries=size)


class _Facts(NamedTuple):
    """What a worker found in a run of entries ``start ..``: the leaf hashes of the entries
    that passed (in order), the root of the run when it is a whole aligned chunk, the first
    entry's ``prev`` and time, the last entry's hash and time, and the first failure."""

    leaves: bytes
    subtree_root: bytes | None
    first_prev: bytes
    first_time: str
    last_hash: bytes
    last_time: str
    failure: tuple[int, str] | None


def entry_facts(start: int, datas: Sequence[bytes]) -> _Facts:
    """Parse, hash and chain-check entries ``start ..`` among themselves (runs in a worker
    process; the links to the run before are checked in order by the caller).

    The hot loop of an audit: hashes are compared as hex strings, as ``prev`` is written, and
    no :class:`~verifier.entry.Entry` is built (measured: 30 % faster than ``parse_entry``).
    """
    leaves = bytearray()
    first_prev, first_time = "", ""
    prev, time = "", ""
    failure: tuple[int, str] | None = None
    sha256 = hashlib.sha256
    for index, data in enumerate(datas, start):
        try:
            fields = parse_entry_fields(data)
        except VerifierError as e:
            failure = (index, str(e))
            break
        if fields["index"] != index:
            failure = (index, f"entry at position {index} says index {fields['index']}")
            break
        if index == start:
            first_prev, first_time = fields["prev"], fields["time"]
        elif fields["prev"] != prev:
            failure = (index, f"prev does not match the hash of entry {index - 1}")
            break
        elif fields["time"] < time:
            failure = (index, "time goes backwards")
            break
        prev, time = sha256(data).hexdigest(), fields["time"]
        leaves += sha256(b"\x00" + data).digest()
    whole = failure is None and len(datas) == CHUNK and start % CHUNK == 0
    root = (
        root_from_leaf_hashes([bytes(leaves[i : i + 32]) for i in range(0, len(leaves), 32)])
        if whole
        else None
    )
    return _Facts(
        bytes(leaves),
        root,
        bytes.fromhex(first_prev),
        first_time,
        bytes.fromhex(prev),
        time,
        failure,
    )


def _checked(
    chunks: Iterator[tuple[int, list[bytes]]], workers: int
) -> Iterator[tuple[int, list[bytes], _Facts]]:
    """:func:`entry_facts` of each chunk, in order; in ``workers`` processes (at most two
    chunks each in flight, so memory stays bounded) or, with no workers, here."""
    if workers <= 0:
        for start, datas in chunks:
            yield start, datas, entry_facts(start, datas)
        return
    with ProcessPoolExecutor(workers) as pool:
        in_flight: deque[tuple[int, list[bytes], Future[_Facts]]] = deque()
        for start, datas in chunks:
            in_flight.append((start, datas, pool.submit(entry_facts, start, datas)))
            if len(in_flight) > 2 * workers:
                first, run, future = in_flight.popleft()
                yield first, run, future.result()
        while in_flight:
            first, run, future = in_flight.popleft()
            yield first, run, future.result()


def _chunks(source: LogSource, size: int) -> Iterator[tuple[int, list[bytes]]]:
    """The entries in aligned runs of :data:`CHUNK` (the last may be shorter), read a page at
    a time; the run with a missing entry ends there and is followed by the failure."""
    run: list[bytes] = []
    for start in range(0, size, PAGE):
        end = min(size, start + PAGE)
        page = list(source.entries(start, end))
        if len(page) > end - start:
            raise AuditFailure("the source returned more entries than asked for", end)
        run += page
        while len(run) >= CHUNK:
            yield start + len(page) - len(run), run[:CHUNK]
            run = run[CHUNK:]
        if len(page) < end - start:
            if run:
                yield start + len(page) - len(run), run
            raise AuditFailure(
                f"the source holds {start + len(page)} entries, the checkpoint {size}",
                start + len(page),
            )
    if run:
        yield size - len(run), run


class _Chain:
    """The in-order part of the audit: links between runs, the Merkle frontier, the old
    root. Failures surface in entry order, exactly as a one-by-one check would report them."""

    def __init__(self, previous: AuditState | None) -> None:
        self.previous = previous
        self.previous_size = previous.size if previous is not None else -1
        self.frontier = CompactRange()
        self.prev = GENESIS_PREV
        self.prev_time = ""
        self.index = 0
        if self.previous_size == 0:
            self._check_previous()

    def _check_previous(self) -> None:
        assert self.previous is not None
        _check_previous_root(self.frontier, self.previous)

    def take(self, start: int, count: int, facts: _Facts) -> None:
        """Check the next run of entries."""
        assert start == self.index
        passed = len(facts.leaves) // 32
        if passed:
            if facts.first_prev != self.prev:
                raise AuditFailure(f"prev does not match the hash of entry {start - 1}", start)
            if facts.first_time < self.prev_time:
                raise AuditFailure("time goes backwards", start)
        end = start + passed
        if facts.subtree_root is not None and not start < self.previous_size < end:
            self.frontier.append_subtree(CHUNK_HEIGHT, facts.subtree_root)
            self.index = end
            if end == self.previous_size:
                self._check_previous()
        else:
            leaves = facts.leaves
            for offset in range(0, len(leaves), 32):
                self.frontier.append(leaves[offset : offset + 32])
                self.index += 1
                if self.index == self.previous_size:
                    self._check_previous()
        if passed:
            self.prev, self.prev_time = facts.last_hash, facts.last_time
        if facts.failure is not None:
            raise AuditFailure(facts.failure[1], facts.failure[0])
        assert self.index == start + count


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

    def trust_list(self) -> str:
        """The server's trust list (a compact JWS, keys.md section 5): to be verified against
        a pinned root key before any of its keys is used."""
        return self._get("/v1/trust-list").decode("utf-8").strip()

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
