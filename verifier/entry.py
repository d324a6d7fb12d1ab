"""Ledger entries: the exact bytes that are hashed, chained and put in the Merkle tree.

An entry is the canonical JSON (``verifier.canonical``) of::

    {"actor": str, "body": {...}, "index": int, "prev": "<64 hex>", "time": "<RFC 3339 UTC>",
     "type": "<EventType>", "v": 1}

- ``index``: 0-based position in the log, gap-free.
- ``time``: ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, microseconds); never decreases along the chain.
- ``type``: the event type, a past-tense name such as ``MemberJoined``.
- ``actor``: who caused it: a key id or a role, never a person's name.
- ``body``: the event's facts: pseudonyms and commitments, never personal data.
- ``prev``: lowercase hex SHA-256 of the previous entry's bytes (64 zeros for entry 0), which
  binds the hash chain to the Merkle tree: both are computed over the same bytes.

Entry hash = SHA-256(bytes); Merkle leaf hash = SHA-256(0x00 || bytes). The bytes are stored and
served as they are and never re-serialised: :func:`parse_entry` checks that bytes are canonical.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from verifier.canonical import canonical_bytes, parse_canonical
from verifier.errors import CanonicalError, ChainError, EntryError
from verifier.merkle import leaf_hash

ENTRY_VERSION = 1
GENESIS_PREV = bytes(32)
_FIELDS = frozenset({"actor", "body", "index", "prev", "time", "type", "v"})
# fullmatch, never "$": "$" also matches before a final newline ("...Z\n" would pass).
# Month 01-12, day 01-31, hour 00-23, minute and second 00-59. A day past its month's end
# (02-30) fits the pattern: make_entry refuses it, so the ledger never writes one.
_TIME_RE = re.compile(
    r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z"
)
MAX_ENTRY_SIZE = 0xFFFF  # an entry bundle (C2SP tlog-tiles) prefixes each entry with a uint16
_TYPE_RE = re.compile(r"[A-Z][A-Za-z0-9]{0,63}")
_PREV_RE = re.compile(r"[0-9a-f]{64}")
_time_ok = _TIME_RE.fullmatch
_type_ok = _TYPE_RE.fullmatch
_prev_ok = _PREV_RE.fullmatch
MAX_ACTOR = 128


def format_entry_time(value: datetime) -> str:
    """``2026-11-25T08:46:12.123456Z``.

    Raises:
        ValueError: ``value`` is naive.
    """
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass an aware UTC time")
    # isoformat (C, always 4-digit years) rather than strftime: every append formats a time.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def seconds_entry_time(seconds: int) -> str:
    """:func:`format_entry_time` of a whole number of seconds since 1970 (a NumericDate, as
    offline records carry), by arithmetic: ``2026-11-25T08:46:12.000000Z``.

    Raises:
        ValueError: outside years 1970..9999.
    """
    if not 0 <= seconds < _YEAR_10000:
        raise ValueError(f"{seconds} is not a time of years 1970..9999")
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{_utc_day(days)}T{hours:02d}:{minutes:02d}:{secs:02d}.000000Z"


_YEAR_10000 = 253402300800  # 10000-01-01T00:00:00Z


@functools.lru_cache(maxsize=4096)
def _utc_day(days: int) -> str:
    return (_EPOCH_DATE + timedelta(days=days)).isoformat()


_EPOCH_DATE = date(1970, 1, 1)


def parse_entry_time(text: str) -> datetime:
    """Inverse of :func:`format_entry_time`.

    Raises:
        ValueError: not in that exact form.
    """
    if not _time_ok(text):
        raise ValueError(f"not an entry time: {text!r}")
    # The pattern fixed the form; fromisoformat (C) checks the date (no 02-30) like strptime.
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger entry and its exact bytes. Build with :func:`make_entry` or
    :func:`parse_entry`, which check every field."""

    index: int
    time: str
    type: str
    actor: str
    body: Mapping[str, Any]
    prev: bytes
    data: bytes

    @property
    def hash(self) -> bytes:
        """SHA-256 of the entry bytes: the next entry's ``prev``."""
        return hashlib.sha256(self.data).digest()

    @property
    def leaf_hash(self) -> bytes:
        """The RFC 6962 leaf hash: SHA-256(0x00 || bytes)."""
        return leaf_hash(self.data)

    @property
    def timestamp(self) -> datetime:
        return parse_entry_time(self.time)


def _check_fields(value: Mapping[str, Any]) -> None:
    # On the auditor's hot path: exact type() checks (a bool is not an int here), bound
    # regex methods, and the error text built only on failure.
    index, time, type_, actor = value["index"], value["time"], value["type"], value["actor"]
    if type(index) is not int or index < 0:
        raise EntryError("index must be a non-negative integer")
    if value["v"] != ENTRY_VERSION or type(value["v"]) is not int:
        raise EntryError(f"entry {index}: unknown entry version {value['v']!r}")
    if type(time) is not str or not _time_ok(time):
        raise EntryError(f"entry {index}: time must be YYYY-MM-DDTHH:MM:SS.ffffffZ")
    if type(type_) is not str or not _type_ok(type_):
        raise EntryError(f"entry {index}: type must be a CamelCase event name")
    if type(actor) is not str or not 0 < len(actor) <= MAX_ACTOR:
        raise EntryError(f"entry {index}: actor must be 1..{MAX_ACTOR} characters")
    if type(value["body"]) is not dict:
        raise EntryError(f"entry {index}: body must be an object")
    prev = value["prev"]
    if type(prev) is not str or not _prev_ok(prev):
        raise EntryError(f"entry {index}: prev must be 64 lowercase hex digits")


def _entry(value: Mapping[str, Any], data: bytes) -> Entry:
    return Entry(
        index=value["index"],
        time=value["time"],
        type=value["type"],
        actor=value["actor"],
        body=value["body"],
        prev=bytes.fromhex(value["prev"]),
        data=data,
    )


def make_entry(
    *, index: int, time: str, type: str, actor: str, body: Mapping[str, Any], prev: bytes
) -> Entry:
    """Build an entry and its canonical bytes.

    Raises:
        EntryError: a field is malformed (including a body that is not canonical JSON).
    """
    if not isinstance(prev, bytes) or len(prev) != 32:
        raise EntryError("prev must be a 32-byte hash")
    if index.__class__ is not int or index < 0:  # ``type`` is a parameter here
        raise EntryError("index must be a non-negative integer")
    if time.__class__ is str and type.__class__ is str:
        problem = _known_time_and_type(time, type)
    else:
        problem = _time_and_type_problem(time, type)
    if problem is not None:
        raise EntryError(f"entry {index}: {problem}")
    if not isinstance(actor, str) or not 0 < len(actor) <= MAX_ACTOR:
        raise EntryError(f"entry {index}: actor must be 1..{MAX_ACTOR} characters")
    if not isinstance(body, Mapping):
        raise EntryError(f"entry {index}: body must be an object")
    body = dict(body)
    value = {
        "actor": actor,
        "body": body,
        "index": index,
        "prev": prev.hex(),
        "time": time,
        "type": type,
        "v": ENTRY_VERSION,
    }
    try:
        data = canonical_bytes(value)
    except CanonicalError as e:
        raise EntryError(f"entry {index}: {e}") from e
    if len(data) > MAX_ENTRY_SIZE:
        raise EntryError(f"entry {index}: {len(data)} bytes, at most {MAX_ENTRY_SIZE}")
    return Entry(index=index, time=time, type=type, actor=actor, body=body, prev=prev, data=data)


def _time_and_type_problem(time: object, type_: object) -> str | None:
    """What is wrong with an entry's time and type (None: nothing)."""
    if type(time) is not str or not _time_ok(time):
        return "time must be YYYY-MM-DDTHH:MM:SS.ffffffZ"
    try:
        parse_entry_time(time)
    except ValueError:
        return f"time {time!r} is not a real date"
    if type(type_) is not str or not _type_ok(type_):
        return "type must be a CamelCase event name"
    return None


# Memoised for strings: the entries of one command share their time and type, so a sync of a
# thousand records checks them once.
_known_time_and_type = functools.lru_cache(maxsize=256)(_time_and_type_problem)


def parse_entry_fields(data: bytes) -> dict[str, Any]:
    """The checked fields of stored entry bytes, as decoded (``prev`` stays hex): what
    :func:`parse_entry` wraps, for the auditor's hot loop, which needs no :class:`Entry`.

    Raises:
        EntryError: not a well-formed, canonical entry.
    """
    try:
        value = parse_canonical(data)
    except CanonicalError as e:
        raise EntryError(f"entry is not canonical JSON: {e}") from e
    if not isinstance(value, dict) or value.keys() != _FIELDS:
        raise EntryError("entry must have exactly the fields " + ", ".join(sorted(_FIELDS)))
    _check_fields(value)
    return value


def parse_entry(data: bytes) -> Entry:
    """Parse stored entry bytes, checking canonical form and every field.

    Raises:
        EntryError: not a well-formed, canonical entry.
    """
    return _entry(parse_entry_fields(data), bytes(data))


def check_link(entry: Entry, index: int, prev: bytes, previous_time: str | None) -> None:
    """Check that ``entry`` sits at ``index`` after an entry whose hash is ``prev``.

    Raises:
        ChainError: wrong index, wrong previous hash, or time going backwards.
    """
    if entry.index != index:
        raise ChainError(f"entry at position {index} says index {entry.index}")
    if entry.prev != prev:
        raise ChainError(f"entry {index}: prev does not match the hash of entry {index - 1}")
    if previous_time is not None and entry.time < previous_time:
        raise ChainError(f"entry {index}: time goes backwards")
