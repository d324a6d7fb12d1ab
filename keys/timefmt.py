"""RFC 3339 UTC times at one-second precision, the only time format keys/ writes.

Times are truncated to whole seconds so that they round-trip exactly through JWT NumericDate
values (trust lists) and RFC 3339 strings (keyring files).
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """The current time, UTC, truncated to the second."""
    return datetime.now(UTC).replace(microsecond=0)


def to_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime truncated to the second.

    Raises:
        ValueError: ``value`` is naive (has no time zone).
    """
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass an aware UTC time")
    return value.astimezone(UTC).replace(microsecond=0)


def format_rfc3339(value: datetime) -> str:
    """``2026-11-25T08:46:12Z``."""
    return to_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    """Parse what :func:`format_rfc3339` writes (any RFC 3339 offset is accepted).

    Raises:
        ValueError: not an RFC 3339 date-time with an offset.
    """
    if not isinstance(text, str) or "T" not in text:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return to_utc(parsed)


def to_numeric_date(value: datetime) -> int:
    """Seconds since the epoch (JWT NumericDate)."""
    return int(to_utc(value).timestamp())


def from_numeric_date(value: int) -> datetime:
    """Inverse of :func:`to_numeric_date`.

    Raises:
        ValueError: not an integer (booleans and floats are refused).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"NumericDate must be an integer, got {type(value).__name__}")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError) as e:
        raise ValueError(f"NumericDate out of range: {value}") from e
