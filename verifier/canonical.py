"""Canonical JSON: the RFC 8785 (JCS) subset that every hashed or signed UnionLedger value uses.

The subset: objects with string keys, arrays, strings, integers, ``true``, ``false`` and
``null``. No floating-point numbers at all (``1.0``, NaN and the infinities are refused even where
JCS could print them), and integers only in the I-JSON safe range ``|n| <= 2**53 - 1``. Within the
subset the output is exactly what RFC 8785 prescribes: no whitespace, members sorted by the UTF-16
code units of their keys, strings escaped as ECMAScript ``JSON.stringify`` does (``\\"``, ``\\\\``,
``\\b \\f \\n \\r \\t``, other characters below U+0020 as ``\\u00xx`` in lowercase hex, everything
else, U+007F and U+2028/U+2029 included, as raw UTF-8), and the whole encoded as UTF-8. Strings
and keys holding a lone surrogate cannot be encoded as UTF-8 and are refused.

Contracts:

* ``canonical_bytes(v)`` is the one function that turns a value into the bytes that get hashed or
  signed. ``parse_canonical(b)`` accepts ``b`` only when ``canonical_bytes(parse_canonical(b)) ==
  b``, so a verifier can check that stored bytes are canonical without trusting whoever wrote them.
* Both raise :class:`~verifier.errors.CanonicalError` (a ``ValueError``) and nothing else for
  bad input; ``parse_canonical`` raises ``TypeError`` for an argument that is not bytes-like.

Why it is fast: the hot path is a tight type-checking walk in Python followed by orjson's sorted
compact encoder (orjson is a dependency; without it, the C JSON encoder of the standard
library, which writes the same bytes: ``tests/verifier/test_canonical.py`` checks both against
the reference). ``json`` with ``ensure_ascii=False``, compact separators and
``sort_keys=True`` writes exactly the JCS bytes for this subset as long as no object key holds
a character outside the BMP, because only then can code-point order and UTF-16 order disagree
(U+E000..U+FFFF sort *after* U+10000.. in UTF-16, whose surrogates are D800..DFFF). The walk
notices such keys, and only then the members are re-ordered by UTF-16 before encoding (with
the standard encoder). ``tests/verifier/test_canonical.py`` checks the claim against the
``rfc8785`` reference implementation.

Measured on the development container (CPython 3.11.7, one core) for a ~300-byte ledger entry
(``{"actor":…,"body":{…},"index":123,"prev":<64 hex>,"time":…,"type":…,"v":1}``):
``canonical_bytes`` 290,000/s with the standard encoder (270,000/s with non-ASCII text),
``parse_canonical`` 240,000/s (210,000/s). json.dumps with the same options alone manages
330,000/s. With orjson (2026-12-06, a slower day for this machine): 344,000/s for that entry,
and 11.5 -> 4.1 us for a 640-byte ``OfflineRedemptionRecorded``. orjson's escaping and its
key order (code points) are JCS's for keys within the BMP, like the standard encoder's; a
value orjson refuses (a lone surrogate, a tuple subclass) takes the standard path.

``parse_canonical`` has a second, faster path when the optional ``orjson`` package is present
(it is a dependency of the project, but the module works without it): orjson decodes, a walk
refuses floats and out-of-range integers, and orjson's sorted compact output must equal the
input byte for byte. Whatever that path does not accept goes through the standard-library path
above, which decides and explains; so the fast path can only ever accept what the standard path
accepts (``tests/verifier/test_canonical.py`` checks that both agree). Measured: 3.6 us -> 1.6 us
per ledger entry, which is what lets an audit keep up 300,000 entries/s on two cores.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json.encoder import c_make_encoder  # type: ignore[attr-defined]
from typing import Any, TypeAlias, cast

from verifier.errors import CanonicalError

_orjson: Any
try:  # optional accelerator; see the module docstring
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is installed with the project
    _orjson = None

JsonValue: TypeAlias = dict[str, "JsonValue"] | list["JsonValue"] | str | int | bool | None
"""A value of the canonical subset. (``canonical_bytes`` also takes tuples as arrays.)"""

MAX_SAFE_INTEGER = 2**53 - 1
"""I-JSON (RFC 7493) / ECMAScript ``Number.MAX_SAFE_INTEGER``; the subset's integer bound."""

__all__ = ["MAX_SAFE_INTEGER", "JsonValue", "canonical_bytes", "parse_canonical"]


class _Invalid(Exception):
    """Internal: a value outside the subset. Collects the JSON path while unwinding."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.segments: list[str] = []

    def path(self) -> str:
        return "$" + "".join(reversed(self.segments))


def _key_segment(key: str) -> str:
    if key.isidentifier() and key.isascii():
        return f".{key}"
    return f"[{json.dumps(key)}]"


def _check(value: object) -> bool:
    """Walk ``value``; raise :class:`_Invalid` for anything outside the subset.

    Returns True when some object key holds a non-BMP character, i.e. when the C encoder's
    code-point key order may differ from the JCS UTF-16 order. Lone surrogates are *not* looked
    for here (that would cost a scan of every string); UTF-8 encoding of the result catches them.
    """
    # Exact type tests first: they are the common case and much cheaper than isinstance.
    t = type(value)
    if t is str or t is bool or value is None:
        return False
    if t is int:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:  # type: ignore[operator]
            return False
        raise _Invalid("integer outside the I-JSON range |n| <= 2**53 - 1")
    if t is dict:
        return _check_object(value)  # type: ignore[arg-type]
    if t is list or t is tuple:
        return _check_array(value)  # type: ignore[arg-type]
    return _check_subclass(value)


def _check_subclass(value: object) -> bool:
    # Subclasses (an IntEnum, an OrderedDict, a str-based enum) count as what they extend, but a
    # float is refused even when integral: JCS would print 1.0 as 1 and lose the type.
    if isinstance(value, float):
        raise _Invalid(f"floating-point number {value!r} is not allowed")
    if isinstance(value, int) and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise _Invalid("integer outside the I-JSON range |n| <= 2**53 - 1")
    if isinstance(value, str | int):
        return False
    if isinstance(value, dict):
        return _check_object(value)
    if isinstance(value, list | tuple):
        return _check_array(value)
    raise _Invalid(f"{type(value).__name__} is not a JSON value")


def _check_object(obj: dict[object, object]) -> bool:
    non_bmp = False
    for key, item in obj.items():
        if type(key) is not str and not isinstance(key, str):
            e = _Invalid(f"object key {key!r} is not a string")
            e.segments.append(f"[{key!r}]")
            raise e
        # isascii() is O(1) in CPython; max() only runs for the rare non-ASCII key.
        if not key.isascii() and max(key) > "\uffff":
            non_bmp = True
        # The common members inline (a call per member cost half of the walk); anything
        # else, an out-of-range integer included, goes to _check, which explains.
        t = type(item)
        if t is str or t is bool or item is None:
            continue
        if t is int and -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:  # type: ignore[operator]
            continue
        try:
            if _check(item):
                non_bmp = True
        except _Invalid as e:
            e.segments.append(_key_segment(key))
            raise
    return non_bmp


def _check_array(items: list[object] | tuple[object, ...]) -> bool:
    non_bmp = False
    for i, item in enumerate(items):
        try:
            if _check(item):
                non_bmp = True
        except _Invalid as e:
            e.segments.append(f"[{i}]")
            raise
    return non_bmp


def _utf16_key(item: tuple[str, object]) -> bytes:
    return item[0].encode("utf-16-be", "surrogatepass")


def _utf16_ordered(value: object) -> object:
    """A copy of ``value`` whose objects list their members in JCS (UTF-16) order."""
    if isinstance(value, dict):
        members = sorted(value.items(), key=_utf16_key)
        return {k: _utf16_ordered(v) for k, v in members}
    if isinstance(value, list | tuple):
        return [_utf16_ordered(v) for v in value]
    return value


def _surrogate_path(value: object, path: str) -> str | None:
    """The JSON path of the first string or key holding a lone surrogate, if any."""
    if isinstance(value, str):
        return path if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            here = path + _key_segment(k)
            if _SURROGATE.search(k):
                return here
            found = _surrogate_path(v, here)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = _surrogate_path(v, f"{path}[{i}]")
            if found is not None:
                return found
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")

# One reusable C encoder per key order: json.dumps() builds a JSONEncoder and a C encoder on every
# call, which costs about as much as encoding a small entry. markers=None (no cycle check) is safe
# because _check has walked the value first (a cycle ends there in RecursionError); floats and
# non-string keys, which the encoder would otherwise handle its own way, never reach it.
# c_make_encoder is CPython's undocumented accelerator, hence the fallback to the public class.
_Encode: TypeAlias = Callable[[object], str]


def _make_encoder(sort_keys: bool) -> _Encode:
    if c_make_encoder is not None:
        try:
            c_encode = c_make_encoder(
                None, None, json.encoder.encode_basestring, None, ":", ",", sort_keys, False, False
            )
        except TypeError:  # pragma: no cover - a future CPython changed the signature
            pass
        else:
            return lambda value: "".join(c_encode(value, 0))
    encoder = json.JSONEncoder(  # pragma: no cover - CPython has the C encoder
        ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys, check_circular=False
    )
    return encoder.encode  # pragma: no cover


_encode_sorted = _make_encoder(sort_keys=True)
_encode_as_is = _make_encoder(sort_keys=False)


def canonical_bytes(value: object) -> bytes:
    """The canonical (JCS subset) UTF-8 encoding of ``value``.

    Measured: ~290,000 entries/s for a ~300-byte ledger entry (one core; see module docstring).

    Raises:
        CanonicalError: ``value`` is outside the subset (a float, an integer beyond 2**53 - 1,
            a non-string key, a lone surrogate, a set, bytes, any other object, or nesting too
            deep); the message names the JSON path of the offending value, e.g.
            ``$.body.items[3]``.
    """
    try:
        non_bmp_keys = _check(value)
    except _Invalid as e:  # internal: its message and path are the whole story
        raise CanonicalError(f"{e.path()}: {e.message}") from None
    except RecursionError as e:
        raise CanonicalError("$: nested too deeply (or a reference cycle)") from e
    if _orjson is not None and not non_bmp_keys:
        try:  # the same bytes as the standard path below, four to ten times faster
            return cast(bytes, _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS))
        except TypeError:  # JSONEncodeError: a lone surrogate, a type orjson does not take
            pass  # the standard path decides and explains
    try:
        text = _encode_as_is(_utf16_ordered(value)) if non_bmp_keys else _encode_sorted(value)
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        where = _surrogate_path(value, "$") or "$"
        raise CanonicalError(f"{where}: string holds a lone surrogate (not UTF-8)") from e
    except RecursionError as e:
        raise CanonicalError("$: nested too deeply") from e


# ---------------------------------------------------------------------------------------------
# Parsing


def _refuse_float(text: str) -> object:
    raise _Invalid(f"number {text} has a fraction or exponent (floats are not allowed)")


def _refuse_constant(text: str) -> object:
    raise _Invalid(f"{text} is not JSON")


def _parse_int(text: str) -> int:
    # Only called for integer literals; bounding the digits first keeps a hostile
    # 100,000-digit literal from costing a quadratic int() conversion.
    if len(text) > 17:
        raise _Invalid(f"integer {text[:20]}... outside the I-JSON range")
    n = int(text)
    if -MAX_SAFE_INTEGER <= n <= MAX_SAFE_INTEGER:
        return n
    raise _Invalid(f"integer {text} outside the I-JSON range |n| <= 2**53 - 1")


def _refuse_duplicates(pairs: list[tuple[str, JsonValue]]) -> dict[str, JsonValue]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Invalid(f"duplicate key {json.dumps(key)}")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(
    parse_float=_refuse_float, parse_int=_parse_int, parse_constant=_refuse_constant
)
# Every integer of at most 15 digits is within the safe range, so the per-number range hook
# (a Python call per integer) is only needed when the bytes hold a run of 16 or more digits
# somewhere. Finding one: map digits to "0" and everything else to " " (one C pass), then
# look for 16 zeros. A run inside a string is a false alarm that only costs the hooked
# decoder. Measured: 0.25 us per entry instead of about 0.8 us of hook calls.
_FAST_DECODER = json.JSONDecoder(parse_float=_refuse_float, parse_constant=_refuse_constant)
_DIGITS_TO_ZERO = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_SIXTEEN_DIGITS = b"0" * 16
# Only used to explain a rejection: duplicates already fail the byte comparison, because the
# decoded object holds one member fewer than the input.
_STRICT_DECODER = json.JSONDecoder(
    parse_float=_refuse_float,
    parse_int=_parse_int,
    parse_constant=_refuse_constant,
    object_pairs_hook=_refuse_duplicates,
)
# A 4-byte UTF-8 sequence (a non-BMP character) starts with one of these bytes. Deleting them
# and comparing lengths is several times faster than a regular-expression search.
_NON_BMP_LEADS = b"\xf0\xf1\xf2\xf3\xf4"


def parse_canonical(data: bytes | bytearray | memoryview) -> JsonValue:
    """Decode ``data`` and check that it is exactly the canonical encoding of its value.

    Measured: ~240,000 entries/s for a ~300-byte ledger entry (one core; see module docstring).

    Raises:
        TypeError: ``data`` is not bytes-like.
        CanonicalError: invalid UTF-8, invalid JSON, trailing data, a float or exponent, an
            integer outside the safe range, a duplicate key, or any non-canonical spelling
            (whitespace, member order, an unnecessary escape, ``-0``, ...).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"canonical JSON must be bytes, not {type(data).__name__}")
    raw = bytes(data)
    if _orjson is not None and len(raw.translate(None, _NON_BMP_LEADS)) == len(raw):
        fast = _parse_fast(raw)
        if fast is not _REFUSED:
            return cast(JsonValue, fast)
    return _parse_standard(raw)


_REFUSED = object()


def _parse_fast(raw: bytes) -> JsonValue | object:
    """orjson's verdict, or ``_REFUSED`` when the standard path must decide (and explain).

    Only called without non-BMP characters, where orjson's key order (UTF-8 bytes, that is code
    points) is the JCS order.
    """
    assert _orjson is not None
    try:
        value = _orjson.loads(raw)
    except _orjson.JSONDecodeError:
        return _REFUSED
    if not _plain(value):
        return _REFUSED
    if _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS) != raw:
        return _REFUSED
    return cast(object, value)


def _plain(value: object) -> bool:
    """Whether ``value`` (as orjson decoded it) holds no float and no integer beyond the safe
    range: the two things orjson accepts that the subset does not."""
    kind = type(value)
    if kind is dict:
        return all(_plain(v) for v in value.values())  # type: ignore[attr-defined]
    if kind is list:
        return all(_plain(v) for v in value)  # type: ignore[attr-defined]
    if kind is int:
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER  # type: ignore[operator]
    return kind is str or kind is bool or value is None


def _parse_standard(raw: bytes) -> JsonValue:
    """The standard-library path of :func:`parse_canonical` (see there)."""
    try:
        text = raw.decode("utf-8")  # strict: also refuses encoded surrogates and overlongs
    except UnicodeDecodeError as e:
        raise CanonicalError(f"not UTF-8 at byte {e.start}") from e
    try:
        long_number = raw.translate(_DIGITS_TO_ZERO).find(_SIXTEEN_DIGITS) >= 0
        value, end = (_DECODER if long_number else _FAST_DECODER).raw_decode(text)
    except _Invalid as e:
        raise CanonicalError(e.message) from None
    except ValueError as e:  # JSONDecodeError
        raise CanonicalError(f"not JSON: {e}") from e
    except RecursionError as e:
        raise CanonicalError("nested too deeply") from e
    if end != len(text):
        raise CanonicalError(f"trailing data at character {end}")
    try:
        if raw.isascii() or len(raw.translate(None, _NON_BMP_LEADS)) == len(raw):
            # No non-BMP character anywhere, so code-point key order is JCS order.
            again = _encode_sorted(value).encode("utf-8")
        else:
            again = _encode_as_is(_utf16_ordered(value)).encode("utf-8")
    except UnicodeEncodeError as e:
        # Only an escaped lone surrogate (\ud800) can decode to a str that is not UTF-8.
        raise CanonicalError("a string holds a lone surrogate (not UTF-8)") from e
    if again != raw:
        raise CanonicalError(_explain(text, raw, again))
    return value  # type: ignore[no-any-return]


def _explain(text: str, raw: bytes, canonical: bytes) -> str:
    """Why ``raw`` (which decodes) is not canonical: the slow path, run only on rejection."""
    try:
        _STRICT_DECODER.raw_decode(text)
    except _Invalid as e:
        return e.message
    at = next(
        (i for i, (a, b) in enumerate(zip(raw, canonical, strict=False)) if a != b),
        min(len(raw), len(canonical)),
    )
    return f"not in canonical form (first difference at byte {at})"
