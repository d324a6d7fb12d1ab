"""Canonical JSON (our RFC 8785 subset): byte-for-byte agreement with the ``rfc8785`` reference,
known answers, every rejection, and a strict parser."""

from __future__ import annotations

import enum
import json
from collections import OrderedDict
from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.canonical import MAX_SAFE_INTEGER, JsonValue, canonical_bytes, parse_canonical
from verifier.errors import CanonicalError, VerifierError

# Characters where JSON encoders disagree or JCS has a rule: escapes, controls, DEL, the JS line
# terminators, BMP private use (sorts after surrogates in UTF-16), non-BMP, the BMP's edges.
SPECIAL = '"\\/\b\f\n\r\t\x00\x01\x1f\x7f\x80\xe9\u2028\u2029\ud7ff\ue000\uffff\U00010000\U0001f600'
text = st.text(st.one_of(st.characters(exclude_categories=["Cs"]), st.sampled_from(SPECIAL)))
keys = st.one_of(text, st.sampled_from(["a", "b", "\ue000", "\U0001f600", "é", "", "A", "aa"]))
ints = st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
scalars = st.one_of(st.none(), st.booleans(), ints, text)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6), st.dictionaries(keys, children, max_size=6)
    ),
    max_leaves=30,
)


def has_non_bmp_key(value: object) -> bool:
    if isinstance(value, dict):
        return any(max(k, default="\0") > "\uffff" or has_non_bmp_key(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_non_bmp_key(v) for v in value)
    return False


# --- agreement with the reference implementation -----------------------------------------------


@settings(max_examples=400)
@given(json_values)
def test_matches_rfc8785_reference(value: JsonValue) -> None:
    assert canonical_bytes(value) == rfc8785.dumps(value)


@settings(max_examples=300)
@given(json_values)
def test_round_trip(value: JsonValue) -> None:
    assert parse_canonical(canonical_bytes(value)) == value


@settings(max_examples=300)
@given(json_values.filter(lambda v: not has_non_bmp_key(v)))
def test_stdlib_json_is_jcs_without_non_bmp_keys(value: JsonValue) -> None:
    """The claim the fast path rests on: with no non-BMP character in any key, the C encoder's
    code-point key order is JCS's UTF-16 order, and its escaping is JCS's."""
    fast = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    assert fast.encode("utf-8") == rfc8785.dumps(value)


@settings(max_examples=300)
@given(json_values.filter(lambda v: not has_non_bmp_key(v)))
def test_orjson_is_jcs_without_non_bmp_keys(value: JsonValue) -> None:
    """canonical_bytes encodes with orjson when it is installed (it is a dependency): its
    sorted compact output is JCS for the subset, as long as no key is outside the BMP."""
    assert orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == rfc8785.dumps(value)


@settings(max_examples=200)
@given(json_values)
def test_orjson_and_standard_encoders_agree(value: JsonValue) -> None:
    with_orjson = canonical_bytes(value)
    saved, _canonical._orjson = _canonical._orjson, None
    try:
        assert canonical_bytes(value) == with_orjson  # the standard library's path
    finally:
        _canonical._orjson = saved


def test_stdlib_json_is_not_jcs_with_non_bmp_keys() -> None:
    """...and why the fallback exists: U+E000 sorts before U+1F600 by code point, after it by
    UTF-16 code unit (0xE000 > 0xD83D)."""
    value = {"\ue000": 1, "\U0001f600": 2}
    fast = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    assert fast.encode() != rfc8785.dumps(value)
    assert canonical_bytes(value) == rfc8785.dumps(value)


# --- known answers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ({"b": 1, "a": [True, None, "é"]}, b'{"a":[true,null,"\xc3\xa9"],"b":1}'),
        ({"\U0001f600": 2, "\ue000": 1}, '{"\U0001f600":2,"\ue000":1}'.encode()),
        # RFC 8785 section 3.2.3, the sorting example (its values are all strings).
        (
            {
                "\u20ac": "Euro Sign",
                "\r": "Carriage Return",
                "\ufb33": "Hebrew Letter Dalet",
                "1": "One",
                "\U0001f600": "Emoji: Grinning Face",
                "\u0080": "Control",
                "\u00f6": "Latin Small Letter O With Diaeresis",
            },
            '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
            '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
            '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet"}'.encode(),
        ),
        ('\x00\x1f\x7f\b\f\n\r\t"\\/', b'"\\u0000\\u001f\x7f\\b\\f\\n\\r\\t\\"\\\\/"'),
        ("\u2028\u2029", b'"\xe2\x80\xa8\xe2\x80\xa9"'),
        (
            [MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 0, -1],
            b"[9007199254740991,-9007199254740991,0,-1]",
        ),
        ({"a": {}, "b": []}, b'{"a":{},"b":[]}'),
        ((1, (2,)), b"[1,[2]]"),
        (True, b"true"),
        (None, b"null"),
        ({"aa": 1, "a": 2, "": 3, "B": 4}, b'{"":3,"B":4,"a":2,"aa":1}'),
    ],
)
def test_known_answers(value: object, encoded: bytes) -> None:
    assert canonical_bytes(value) == encoded


def test_subclasses_encode_as_what_they_extend() -> None:
    class Level(enum.IntEnum):
        HIGH = 3

    class Kind(enum.StrEnum):
        JOIN = "MemberJoined"

    value = OrderedDict([("type", Kind.JOIN), ("level", Level.HIGH)])
    assert canonical_bytes(value) == b'{"level":3,"type":"MemberJoined"}'


def test_a_type_orjson_refuses_goes_the_standard_way() -> None:
    """A tuple subclass (orjson does not encode it) is still the array it extends."""
    from collections import namedtuple

    Point = namedtuple("Point", "x y")
    assert canonical_bytes({"p": Point(1, 2)}) == b'{"p":[1,2]}'


# --- rejections --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (1.0, "$"),
        (0.5, "$"),
        (float("nan"), "$"),
        (float("inf"), "$"),
        (-float("inf"), "$"),
        (2**53, "$"),
        (-(2**53), "$"),
        (10**400, "$"),
        ({"body": {"items": [0, 1, 2, 1.5]}}, "$.body.items[3]"),
        ({"a b": [1.0]}, '$["a b"][0]'),
        ({1: "x"}, "$[1]"),
        ({"k": {None: 1}}, "$.k[None]"),
        ({"k": {True: 1}}, "$.k[True]"),
        ({(1, 2): 1}, "$[(1, 2)]"),
        ("\ud800", "$"),
        (["ok", "x\udfffy"], "$[1]"),
        ({"\ud800": 1}, '$["\\ud800"]'),
        ({"a": {"\udc00k": 1}}, '$.a["\\udc00k"]'),
        ({"s": {1, 2}}, "$.s"),
        ({"b": b"bytes"}, "$.b"),
        ({"o": object()}, "$.o"),
        ([bytearray(b"x")], "$[0]"),
    ],
)
def test_rejections_name_the_path(value: object, path: str) -> None:
    with pytest.raises(CanonicalError) as info:
        canonical_bytes(value)
    assert str(info.value).startswith(f"{path}: "), str(info.value)
    assert isinstance(info.value, VerifierError)
    assert isinstance(info.value, ValueError)


def test_nesting_and_cycles_are_errors_not_crashes() -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(CanonicalError, match="deep"):
        canonical_bytes(deep)
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with pytest.raises(CanonicalError, match="deep"):
        canonical_bytes(cycle)
    with pytest.raises(CanonicalError, match="deep"):
        parse_canonical(b"[" * 100_000 + b"]" * 100_000)


# --- the strict parser -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b" 1",
        b"1 ",
        b"1\n",
        b'{"a": 1}',
        b'{"a":1 }',
        b"[1, 2]",
        b'{"b":1,"a":2}',  # unsorted
        b'{"\xee\x80\x80":1,"\xf0\x9f\x98\x80":2}',  # code-point order, not UTF-16 order
        b'{"a":1,"a":1}',  # duplicate
        b'{"a":1,"a":2}',
        b"1.0",
        b"1.5",
        b"1e3",
        b"1E3",
        b"0e0",
        b"-0",
        b"01",
        b"+1",
        b"9007199254740992",
        b"-9007199254740992",
        b"1" * 5000,
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b'"\\u0041"',  # unnecessary escape
        b'"\\/"',
        b'"\\u001F"',  # uppercase hex
        b'"\\u000a"',  # \n has a short escape
        b'"\\u007f"',
        b'"\\u2028"',
        b'"\\ud83d\\ude00"',  # escaped surrogate pair instead of raw UTF-8
        b'"\\ud800"',  # escaped lone surrogate
        b'"\x1f"',  # raw control character
        b'"\xff"',  # invalid UTF-8
        b'"\xc0\xaf"',  # overlong
        b'"\xed\xa0\x80"',  # UTF-8-encoded surrogate
        b"\xef\xbb\xbf{}",  # BOM
        b"{}{}",
        b"[1],",
        b"[1]]",
        b"tru",
        b"True",
        b"'a'",
        b'{"a":undefined}',
    ],
)
def test_parse_refuses(data: bytes) -> None:
    with pytest.raises(CanonicalError):
        parse_canonical(data)


def test_parse_explains_rejections() -> None:
    with pytest.raises(CanonicalError, match='duplicate key "a"'):
        parse_canonical(b'{"a":1,"a":1}')
    with pytest.raises(CanonicalError, match="floats are not allowed"):
        parse_canonical(b'{"a":[1.0]}')
    with pytest.raises(CanonicalError, match="first difference at byte 2"):
        parse_canonical(b'{"b":1,"a":2}')
    with pytest.raises(CanonicalError, match="not UTF-8 at byte 5"):
        parse_canonical(b'{"a":\xff}')
    with pytest.raises(CanonicalError, match="range"):
        parse_canonical(b"[9007199254740992]")
    with pytest.raises(TypeError):
        parse_canonical('{"a":1}')  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"9007199254740991", MAX_SAFE_INTEGER),
        (b"-9007199254740991", -MAX_SAFE_INTEGER),
        (b'"\\u001f\x7f"', "\x1f\x7f"),
        (b'{"\xf0\x9f\x98\x80":2,"\xee\x80\x80":1}', {"\U0001f600": 2, "\ue000": 1}),
        (bytearray(b"[true,false,null]"), [True, False, None]),
        (memoryview(b'{"":{}}'), {"": {}}),
    ],
)
def test_parse_accepts(data: bytes, value: JsonValue) -> None:
    assert parse_canonical(data) == value


@settings(max_examples=300)
@given(json_values, st.data())
def test_any_single_byte_change_is_caught(value: JsonValue, data: st.DataObject) -> None:
    encoded = canonical_bytes(value)
    at = data.draw(st.integers(0, len(encoded) - 1), label="position")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != encoded[at]), label="byte")
    changed = encoded[:at] + bytes([new]) + encoded[at + 1 :]
    try:
        decoded = parse_canonical(changed)
    except CanonicalError:
        return
    assert decoded != value
    assert canonical_bytes(decoded) == changed


@settings(max_examples=200)
@given(json_values)
def test_parse_refuses_what_stdlib_json_writes_loosely(value: JsonValue) -> None:
    loose = json.dumps(value, ensure_ascii=True, indent=1).encode()
    if loose != canonical_bytes(value):
        with pytest.raises(CanonicalError):
            parse_canonical(loose)


# -- the optional orjson path must never accept what the standard path refuses -----------------

from verifier import canonical as _canonical  # noqa: E402


def _both(raw: bytes) -> None:
    fast = _canonical._parse_fast(raw)
    try:
        standard = _canonical._parse_standard(raw)
    except CanonicalError:
        assert fast is _canonical._REFUSED, raw
        return
    assert fast is _canonical._REFUSED or fast == standard


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )
)
def test_fast_and_standard_paths_agree_on_canonical_bytes(value: object) -> None:
    assert _canonical._orjson is not None, "orjson is a dependency: the fast path must be tested"
    raw = canonical_bytes(value)
    _both(raw)
    assert (
        _canonical._parse_fast(raw) == value or _canonical._parse_fast(raw) is _canonical._REFUSED
    )


@given(
    value=st.dictionaries(st.text(max_size=4), st.integers() | st.floats() | st.text(max_size=4)),
    position=st.integers(0, 1000),
    byte=st.integers(0, 255),
)
def test_fast_and_standard_paths_agree_on_mutated_bytes(
    value: dict[str, object], position: int, byte: int
) -> None:
    import json

    raw = bytearray(
        json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True
        ).encode("utf-8", "surrogatepass")
    )
    if raw:
        raw[position % len(raw)] = byte
    _both(bytes(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b"[1.0]",
        b"[1E5]",
        b"[-0]",
        b"[9007199254740992]",
        b"[18446744073709551616]",
        b'{"a":1,"a":1}',
        b'{"b":1,"a":2}',
        b'{"a":"\\u0041"}',
        b"[NaN]",
        b'"\\ud800"',
        b" {}",
    ],
)
def test_fast_path_refuses_what_the_subset_refuses(raw: bytes) -> None:
    assert _canonical._parse_fast(raw) is _canonical._REFUSED
    with pytest.raises(CanonicalError):
        parse_canonical(raw)
