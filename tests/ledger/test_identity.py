"""Identity numbers, phones, names and pseudonyms: known answers, invalid inputs, properties."""

from __future__ import annotations

import datetime
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.domain import Invalid
from ledger.identity import (
    PROVINCE_PREFIXES,
    InvalidEmployer,
    InvalidIdNumber,
    InvalidName,
    InvalidPhone,
    id_check_char,
    id_number_hash,
    is_member_id,
    keyed_hash,
    new_member_id,
    phone_hash,
    synthetic_id_number,
    validate_employer,
    validate_id_number,
    validate_name,
    validate_phone,
)

SAMPLE = "11010519491231002X"  # the sample number printed in GB 11643-1999 and everywhere since
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def with_check(first17: str) -> str:
    """Independent of the module: the MOD 11-2 check as ISO 7064 states it (sum of a_i * 2^i)."""
    total = sum(int(d) * pow(2, 17 - i, 11) for i, d in enumerate(first17))
    return first17 + "10X98765432"[total % 11]


def rule_of(number: str, **kwargs: object) -> str:
    with pytest.raises(InvalidIdNumber) as info:
        validate_id_number(number, **kwargs)  # type: ignore[arg-type]
    assert info.value.code == "invalid-id-number"
    assert info.value.status == 422
    assert isinstance(info.value, Invalid)
    stripped = number.strip()
    if len(stripped) >= 6:  # the message never contains the number, nor a recognisable part
        for part in (stripped, stripped[:6], stripped[6:14], stripped[-6:]):
            assert part not in str(info.value)
            assert part not in info.value.diagnostics()
    return info.value.rule


# -- identity numbers: known answers ------------------------------------------------------


def test_published_sample_is_valid() -> None:
    assert validate_id_number(SAMPLE) == SAMPLE
    assert id_check_char(SAMPLE[:17]) == "X"


@pytest.mark.parametrize(
    "first17",
    [
        "11010519491231002",
        "44030819990110151",
        "32010620000229123",  # 29 February of a leap year
        "65010219000101001",  # the earliest birth date allowed
        "82000019850615888",
        "71000020101010010",
    ],
)
def test_numbers_with_a_correct_check_character_are_valid(first17: str) -> None:
    number = with_check(first17)
    assert id_check_char(first17) == number[17]
    assert validate_id_number(number) == number


def test_lowercase_x_and_surrounding_whitespace_are_normalised() -> None:
    assert validate_id_number(SAMPLE.lower()) == SAMPLE
    assert validate_id_number(f"  {SAMPLE[:17]}x\n") == SAMPLE
    assert validate_id_number("\u3000" + SAMPLE + "\t") == SAMPLE  # ideographic space


@pytest.mark.parametrize(
    ("number", "rule"),
    [
        ("", "length"),
        ("   ", "length"),
        (SAMPLE[:17], "length"),
        (SAMPLE + "0", "length"),
        ("110105194912310", "length"),  # the old 15-digit numbers are not accepted
        ("X1010519491231002X", "format"),
        ("1101051949123100XX", "format"),
        ("11010519491231 02X", "format"),
        ("１１０１０５１９４９１２３１００２X", "format"),  # full-width digits
        ("11010519491231002Y", "format"),
    ],
)
def test_malformed_numbers_are_refused(number: str, rule: str) -> None:
    assert rule_of(number) == rule


@pytest.mark.parametrize(
    "prefix", ["00", "10", "16", "20", "24", "30", "38", "47", "55", "66", "99"]
)
def test_unknown_region_is_refused(prefix: str) -> None:
    assert rule_of(with_check(prefix + "010519491231002")) == "region"


@pytest.mark.parametrize(
    "birth",
    [
        "19490230",  # 30 February
        "20230229",  # 29 February of a common year
        "19001301",  # month 13
        "19000100",  # day 0
        "19491232",
        "00000000",
    ],
)
def test_impossible_birth_dates_are_refused(birth: str) -> None:
    assert rule_of(with_check(f"110105{birth}002")) == "birth-date"


def test_birth_before_1900_is_refused() -> None:
    assert validate_id_number(with_check("11010519000101002"))
    assert rule_of(with_check("11010518991231002")) == "birth-date"


def test_birth_in_the_future_is_refused() -> None:
    today = datetime.date(2024, 6, 1)
    born_today = with_check("11010520240601002")
    assert validate_id_number(born_today, today=today) == born_today
    assert rule_of(with_check("11010520240602002"), today=today) == "birth-date"
    assert rule_of(with_check("11010520990101002")) == "birth-date"  # against the real clock


def test_wrong_check_character_is_refused() -> None:
    for check in "0123456789X":
        if check != "X":
            assert rule_of(SAMPLE[:17] + check) == "checksum"


def test_non_strings_are_a_type_error() -> None:
    with pytest.raises(TypeError):
        validate_id_number(110105194912310020)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        validate_phone(b"13812345678")  # type: ignore[arg-type]


def test_check_character_helper_refuses_bad_input() -> None:
    for bad in ("1101051949123100", "110105194912310021", "1101051949123100X"):
        with pytest.raises(ValueError, match="17"):
            id_check_char(bad)


# -- identity numbers: properties ---------------------------------------------------------

regions = st.builds(
    lambda prefix, rest: prefix + f"{rest:04d}",
    st.sampled_from(sorted(PROVINCE_PREFIXES)),
    st.integers(0, 9999),
)
births = st.dates(datetime.date(1900, 1, 1), datetime.date(2020, 12, 31))


@given(seed=st.integers(0, 2**32), region=regions, birth=births)
def test_synthetic_numbers_are_valid_and_every_single_change_is_refused(
    seed: int, region: str, birth: datetime.date
) -> None:
    number = synthetic_id_number(random.Random(seed), region=region, birth=birth)
    assert validate_id_number(number) == number
    assert number.startswith(region + birth.strftime("%Y%m%d"))
    assert number[17] == with_check(number[:17])[17]
    for i, original in enumerate(number):
        for char in "0123456789X" if i == 17 else "0123456789":
            if char != original:
                changed = number[:i] + char + number[i + 1 :]
                with pytest.raises(InvalidIdNumber):
                    validate_id_number(changed)
    for i in range(17):  # adjacent transpositions are caught too (ISO 7064 guarantees it)
        if number[i] != number[i + 1]:
            swapped = number[:i] + number[i + 1] + number[i] + number[i + 2 :]
            with pytest.raises(InvalidIdNumber):
                validate_id_number(swapped)


def test_synthetic_numbers_are_deterministic_and_default_to_adult_births() -> None:
    first = [synthetic_id_number(random.Random(7)) for _ in range(2)]
    assert first[0] == first[1]
    rng = random.Random(1)
    for _ in range(200):
        number = synthetic_id_number(rng)
        assert number.startswith("110101")
        assert "19500101" <= number[6:14] <= "20051231"
        assert validate_id_number(number) == number


def test_synthetic_numbers_refuse_bad_parameters() -> None:
    rng = random.Random(0)
    for region in ("990101", "11010", "1101011", "11O101"):
        with pytest.raises(ValueError, match="region"):
            synthetic_id_number(rng, region=region)
    with pytest.raises(ValueError, match="1900"):
        synthetic_id_number(rng, birth=datetime.date(1899, 12, 31))


# -- phones, names, employers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "13812345678",
        " 13812345678 ",
        "138-1234-5678",
        "138 1234 5678",
        "+8613812345678",
        "+86 138 1234 5678",
        "+86-138-1234-5678",
        "8613812345678",
        "86 138 1234 5678",
    ],
)
def test_phone_formats_are_accepted_and_normalised(text: str) -> None:
    assert validate_phone(text) == "13812345678"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1381234567",  # 10 digits
        "138123456789",  # 12 digits
        "12812345678",  # 12x is not a mobile prefix
        "10012345678",
        "23812345678",
        "+8513812345678",
        "+86+8613812345678",
        "008613812345678",
        "(138)12345678",
        "138.1234.5678",
        "１３８１２３４５６７８",  # full-width digits
        "+86",
        "861381234567",  # 86 then 10 digits
    ],
)
def test_bad_phones_are_refused_without_echo(text: str) -> None:
    with pytest.raises(InvalidPhone) as info:
        validate_phone(text)
    assert info.value.code == "invalid-phone"
    assert isinstance(info.value, Invalid)
    digits = "".join(c for c in text if c.isdigit())
    if len(digits) >= 4:
        assert digits[-4:] not in str(info.value)
        assert text not in str(info.value)


def test_names_are_stripped_and_checked() -> None:
    assert validate_name("  张伟 ") == "张伟"
    assert validate_name("阿依古丽·买买提") == "阿依古丽·买买提"
    assert validate_name("Li Wei") == "Li Wei"
    assert validate_name("x" * 64) == "x" * 64
    assert validate_name("\ue000") == "\ue000"  # private use: rare characters in old systems


@pytest.mark.parametrize(
    "text",
    ["", "   ", "\u3000", "x" * 65, "张\n伟", "张\x00伟", "张\u202e伟", "张\u200b伟", "\ud800"],
)
def test_bad_names_are_refused_without_echo(text: str) -> None:
    with pytest.raises(InvalidName) as info:
        validate_name(text)
    assert info.value.code == "invalid-name"
    if text.strip():
        assert text.strip() not in str(info.value)


def test_employers_allow_128_characters() -> None:
    assert validate_employer(" 顺丰速运有限公司 ") == "顺丰速运有限公司"
    assert validate_employer("公" * 128) == "公" * 128
    with pytest.raises(InvalidEmployer):
        validate_employer("公" * 129)


# -- pseudonyms --------------------------------------------------------------------------


def test_keyed_hash_is_stable_hex_hmac_sha256() -> None:
    import hashlib
    import hmac

    expected = hmac.new(
        KEY, b"unionledger-pseudonym/1\x00id-number\x00" + SAMPLE.encode(), hashlib.sha256
    ).hexdigest()
    assert keyed_hash(KEY, "id-number", SAMPLE) == expected
    assert id_number_hash(KEY, SAMPLE) == expected
    assert len(expected) == 64


def test_hashes_are_separated_by_key_and_purpose() -> None:
    value = "13812345678"
    by_phone = keyed_hash(KEY, "phone", value)
    assert keyed_hash(KEY, "id-number", value) != by_phone
    assert keyed_hash(OTHER_KEY, "phone", value) != by_phone
    assert phone_hash(KEY, value) == by_phone


def test_equivalent_spellings_hash_equally() -> None:
    assert id_number_hash(KEY, SAMPLE.lower()) == id_number_hash(KEY, f" {SAMPLE} ")
    assert phone_hash(KEY, "+86 138-1234-5678") == phone_hash(KEY, "13812345678")
    with pytest.raises(InvalidIdNumber):
        id_number_hash(KEY, SAMPLE[:17] + "1")
    with pytest.raises(InvalidPhone):
        phone_hash(KEY, "12345")


def test_keyed_hash_refuses_bad_keys_and_purposes() -> None:
    with pytest.raises(ValueError, match="purpose"):
        keyed_hash(KEY, "name", "张伟")
    with pytest.raises(ValueError, match="32"):
        keyed_hash(b"short", "phone", "13812345678")
    with pytest.raises(TypeError):
        keyed_hash("0" * 32, "phone", "13812345678")  # type: ignore[arg-type]


@given(st.text(max_size=40), st.text(max_size=40))
def test_distinct_values_hash_distinctly(a: str, b: str) -> None:
    assert (keyed_hash(KEY, "phone", a) == keyed_hash(KEY, "phone", b)) == (a == b)


def test_member_ids() -> None:
    ids = {new_member_id() for _ in range(1000)}
    assert len(ids) == 1000
    for member_id in ids:
        assert len(member_id) == 22
        assert is_member_id(member_id)
    # never a leading "-" (a command line's option; 1 in 64 random ids would have one):
    assert not any(member_id.startswith("-") for member_id in ids)
    assert is_member_id("-AAAAAAAAAAAAAAAAAAAAA")  # an older id may: it is still an id
    assert is_member_id("AAAAAAAAAAAAAAAAAAAAAA")
    assert is_member_id("_____________________w")
    for bad in (
        "",
        "AAAAAAAAAAAAAAAAAAAAA",  # 21
        "AAAAAAAAAAAAAAAAAAAAAAA",  # 23
        "AAAAAAAAAAAAAAAAAAAAAB",  # non-canonical: the last 4 bits are not zero
        "AAAAAAAAAAAAAAAAAAAA+A",  # standard, not url-safe, base64
        "AAAAAAAAAAAAAAAAAAAA=A",
        "ＡAAAAAAAAAAAAAAAAAAAAA",
        None,
        12,
    ):
        assert not is_member_id(bad)
