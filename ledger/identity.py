"""Identifiers of people: validate them, and turn them into pseudonyms that can enter the ledger.

Everything here is pure (the clock and randomness are parameters, or default to the system's).
Personal values never appear in an error message: an error says which rule failed, never what
the input was, so an exception can be logged or returned to a client as it is.

- :func:`validate_id_number`: a mainland resident identity number (GB 11643-1999).
- :func:`validate_phone`: a mainland mobile number.
- :func:`validate_name`, :func:`validate_employer`: free text a person typed.
- :func:`keyed_hash` and its wrappers: HMAC-SHA256 pseudonyms (keyed with the keyring secret
  ``member-pseudonym``), so that one person cannot join twice without the ledger or the database
  holding their identity number. An identity number has only about 10^11 possible values: an
  unkeyed hash of one is reversed by brute force in hours, so these hashes are only as private
  as the key.
- :func:`new_member_id`: the random pseudonymous id a member is known by everywhere.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import random
import re
import secrets
import unicodedata

from ledger.domain import Invalid

ID_NUMBER_LENGTH = 18
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CHARS = "10X98765432"
_ID_SHAPE = re.compile(r"[0-9]{17}[0-9X]", re.ASCII)
# First two digits of GB/T 2260 codes: the 31 mainland provinces, plus Taiwan (71), Hong Kong
# (81) and Macao (82), whose residents may hold numbers with these prefixes.
PROVINCE_PREFIXES = frozenset(
    f"{n:02d}"
    for n in (
        *range(11, 16),
        *range(21, 24),
        *range(31, 38),
        *range(41, 47),
        *range(50, 55),
        *range(61, 66),
        71,
        81,
        82,
    )
)
EARLIEST_BIRTH = datetime.date(1900, 1, 1)
# Birth dates are calendar dates in China: "today" is today in China Standard Time (UTC+8), so a
# baby born this morning in Beijing is not "born in the future" while it is still yesterday in UTC.
CHINA_TZ = datetime.timezone(datetime.timedelta(hours=8), "CST")

_PHONE = re.compile(r"(?:\+86|86)?(1[3-9][0-9]{9})", re.ASCII)
_PHONE_SEPARATORS = str.maketrans("", "", " -")

NAME_MAX = 64
EMPLOYER_MAX = 128
# Cc: C0/C1 controls (newlines, tabs, NUL); Cf: invisible format characters (bidi overrides,
# zero-width spaces) that make two names look alike; Cs: lone surrogates, not encodable in UTF-8.
# Private-use (Co) and unassigned (Cn) code points are allowed: rare characters in Chinese names
# are often private-use in older systems, or newer than this Python's Unicode tables.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

PURPOSES = frozenset({"id-number", "phone"})
_HASH_DOMAIN = b"unionledger-pseudonym/1\x00"
MIN_HASH_KEY_SIZE = 32

MEMBER_ID_BYTES = 16
MEMBER_ID_LENGTH = 22
_MEMBER_ID_SHAPE = re.compile(r"[A-Za-z0-9_-]{22}", re.ASCII)


class InvalidIdNumber(Invalid):
    """Not a valid resident identity number. ``rule`` names the rule that failed: ``length``,
    ``format``, ``region``, ``birth-date`` or ``checksum``."""

    code = "invalid-id-number"

    def __init__(self, message: str, *, rule: str = "invalid") -> None:
        super().__init__(message)
        self.rule = rule


class InvalidPhone(Invalid):
    """Not a mainland mobile number."""

    code = "invalid-phone"


class InvalidName(Invalid):
    """An empty, over-long or control-character-bearing name."""

    code = "invalid-name"


class InvalidEmployer(Invalid):
    """An empty, over-long or control-character-bearing employer name."""

    code = "invalid-employer"


def _require_str(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, not {type(text).__name__}")
    return text


# -- resident identity numbers (GB 11643-1999) ------------------------------------------------


def id_check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of 17 ASCII digits.

    Raises:
        ValueError: ``first17`` is not 17 ASCII digits.
    """
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("the check character is computed over exactly 17 ASCII digits")
    total = sum(int(digit) * weight for digit, weight in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK_CHARS[total % 11]


def _today_in_china() -> datetime.date:
    return datetime.datetime.now(CHINA_TZ).date()


def validate_id_number(text: str, *, today: datetime.date | None = None) -> str:
    """The normalised identity number (surrounding whitespace stripped, a final ``x`` made
    ``X``), or raise. ``today`` (default: today in China) bounds the birth date.

    Rules, in the order they are checked: 18 characters; 17 ASCII digits and a digit or X; a
    province prefix of GB/T 2260; a real birth date (YYYYMMDD) from 1900 up to today; the
    ISO 7064 MOD 11-2 check character.

    Raises:
        InvalidIdNumber: a rule failed (the message names the rule, never the number).
        TypeError: ``text`` is not a str.
    """
    number = _require_str(text, "an identity number").strip()
    if number[-1:] == "x":
        number = number[:-1] + "X"
    if len(number) != ID_NUMBER_LENGTH:
        raise InvalidIdNumber("an identity number has 18 characters", rule="length")
    if not _ID_SHAPE.fullmatch(number):
        raise InvalidIdNumber(
            "an identity number is 17 digits followed by a digit or X", rule="format"
        )
    if number[:2] not in PROVINCE_PREFIXES:
        raise InvalidIdNumber(
            "the identity number's region code is not a province of China", rule="region"
        )
    try:
        birth = datetime.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise InvalidIdNumber(
            "the identity number's birth date is not a real date", rule="birth-date"
        ) from None
    if birth < EARLIEST_BIRTH:
        raise InvalidIdNumber("the identity number's birth date is before 1900", rule="birth-date")
    if birth > (today if today is not None else _today_in_china()):
        raise InvalidIdNumber(
            "the identity number's birth date is in the future", rule="birth-date"
        )
    if id_check_char(number[:17]) != number[17]:
        raise InvalidIdNumber(
            "the identity number's check character does not match (ISO 7064 MOD 11-2)",
            rule="checksum",
        )
    return number


def synthetic_id_number(
    rng: random.Random,
    *,
    region: str = "110101",
    birth: datetime.date | None = None,
) -> str:
    """A valid identity number for demo and test data: ``region`` (6 digits), ``birth``
    (default: a date from ``rng`` between 1950 and 2005), a sequence number from ``rng`` and its
    check character. Deterministic for a seeded ``rng``. Not anybody's number, unless by chance.

    Raises:
        ValueError: ``region`` is not 6 digits with a province prefix, or ``birth`` is before 1900.
    """
    if not (
        len(region) == 6
        and region.isascii()
        and region.isdigit()
        and region[:2] in PROVINCE_PREFIXES
    ):
        raise ValueError("region must be 6 digits starting with a GB/T 2260 province prefix")
    if birth is None:
        first, last = datetime.date(1950, 1, 1), datetime.date(2005, 12, 31)
        birth = first + datetime.timedelta(days=rng.randrange((last - first).days + 1))
    if birth < EARLIEST_BIRTH or birth.year > 9999:
        raise ValueError("birth must be a date from 1900 on")
    first17 = f"{region}{birth:%Y%m%d}{rng.randrange(1, 1000):03d}"
    return first17 + id_check_char(first17)


# -- phone numbers and free text --------------------------------------------------------------


def validate_phone(text: str) -> str:
    """The 11 digits of a mainland mobile number (``1[3-9]`` and 9 more digits). Accepts a
    ``+86`` or ``86`` prefix, spaces and dashes, and surrounding whitespace.

    Raises:
        InvalidPhone: anything else (the message never contains the number).
        TypeError: ``text`` is not a str.
    """
    compact = _require_str(text, "a phone number").strip().translate(_PHONE_SEPARATORS)
    match = _PHONE.fullmatch(compact)
    if match is None:
        raise InvalidPhone(
            "a phone number must be a mainland mobile number: 11 digits starting 13 to 19,"
            " optionally after +86"
        )
    return match.group(1)


def _validate_text(text: str, what: str, limit: int, error: type[Invalid]) -> str:
    value = _require_str(text, what).strip()
    if not 1 <= len(value) <= limit:
        raise error(f"{what} must have 1 to {limit} characters")
    if any(unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in value):
        raise error(f"{what} must not contain control or invisible formatting characters")
    return value


def validate_name(text: str) -> str:
    """A person's name with surrounding whitespace stripped: 1 to 64 characters, no control
    or invisible formatting characters. Not otherwise normalised (no NFC: it would replace CJK
    compatibility ideographs, which some names are written with).

    Raises:
        InvalidName: the message never contains the name.
        TypeError: ``text`` is not a str.
    """
    return _validate_text(text, "a name", NAME_MAX, InvalidName)


def validate_employer(text: str) -> str:
    """An employer's name: as :func:`validate_name`, up to 128 characters.

    Raises:
        InvalidEmployer, TypeError.
    """
    return _validate_text(text, "an employer", EMPLOYER_MAX, InvalidEmployer)


# -- pseudonyms ----------------------------------------------------------------------------


def keyed_hash(key: bytes, purpose: str, value: str) -> str:
    """HMAC-SHA256 of ``value`` under ``key``, separated by ``purpose`` (``id-number`` or
    ``phone``): the same value hashes differently for different purposes. Lowercase hex.
    ``value`` is hashed as given: use the wrappers, which normalise it first.

    Raises:
        ValueError: an unknown purpose, or a key shorter than 32 bytes.
        TypeError: ``key`` is not bytes or ``value`` not a str.
    """
    if not isinstance(key, bytes):
        raise TypeError(f"key must be bytes, not {type(key).__name__}")
    if len(key) < MIN_HASH_KEY_SIZE:
        raise ValueError(f"the pseudonym key must have at least {MIN_HASH_KEY_SIZE} bytes")
    if purpose not in PURPOSES:
        raise ValueError(f"unknown pseudonym purpose {purpose!r}")
    message = _HASH_DOMAIN + purpose.encode("ascii") + b"\x00"
    message += _require_str(value, "value").encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def id_number_hash(key: bytes, id_number: str) -> str:
    """The pseudonym of an identity number (validated and normalised first).

    Raises:
        InvalidIdNumber, ValueError, TypeError: as :func:`validate_id_number`, :func:`keyed_hash`.
    """
    return keyed_hash(key, "id-number", validate_id_number(id_number))


def phone_hash(key: bytes, phone: str) -> str:
    """The pseudonym of a mobile number (validated and reduced to its 11 digits first).

    Raises:
        InvalidPhone, ValueError, TypeError: as :func:`validate_phone`, :func:`keyed_hash`.
    """
    return keyed_hash(key, "phone", validate_phone(phone))


def new_member_id() -> str:
    """A fresh random member id: 16 random bytes, base64url without padding (22 characters),
    drawn again while it starts with ``-`` (a command line would read such an id as an
    option: ``unionledger member qr -2W6...``). Older ids may still start with one."""
    while True:
        text = base64.urlsafe_b64encode(secrets.token_bytes(MEMBER_ID_BYTES)).rstrip(b"=")
        if not text.startswith(b"-"):
            return text.decode()


def is_member_id(text: object) -> bool:
    """Whether ``text`` has the form of a member id (the canonical base64url of 16 bytes)."""
    if not isinstance(text, str) or not _MEMBER_ID_SHAPE.fullmatch(text):
        return False
    raw = base64.urlsafe_b64decode(text + "==")
    # 22 characters carry 132 bits: the last 4 must be zero, or two spellings name one id.
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == text
