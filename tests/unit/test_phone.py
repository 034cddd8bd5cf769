"""PhoneNumber: parsed from common notations into E.164, shown only masked."""

from __future__ import annotations

import pytest

from onboarding.domain.errors import InvalidValue
from onboarding.domain.phone import PhoneNumber


@pytest.mark.parametrize(
    "raw",
    [
        "+7 916 123-45-67",
        "8 (916) 123-45-67",
        "89161234567",
        "+79161234567",
        "+7 (916) 123-45-67",
        "7 916 1234567",
        "9161234567",
        "  +7 916 123 45 67  ",
        "+7-916-123-45-67",
        "+7.916.123.45.67",
    ],
)
def test_common_notations_give_e164(raw: str) -> None:
    assert PhoneNumber.parse(raw).e164 == "+79161234567"


def test_foreign_number_with_explicit_country_code() -> None:
    assert PhoneNumber.parse("+44 20 7183 8750").e164 == "+442071838750"


def test_default_region_is_used_for_national_notation() -> None:
    assert PhoneNumber.parse("020 7183 8750", default_region="GB").e164 == "+442071838750"


def test_parsing_is_idempotent() -> None:
    phone = PhoneNumber.parse("8 (916) 123-45-67")
    assert PhoneNumber.parse(phone.e164) == phone


def test_equal_numbers_compare_equal() -> None:
    assert PhoneNumber.parse("89161234567") == PhoneNumber.parse("+7 916 123-45-67")
    assert hash(PhoneNumber.parse("89161234567")) == hash(PhoneNumber.parse("+79161234567"))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("\t\n", id="whitespace"),
        pytest.param("abc", id="letters"),
        pytest.param("not a phone", id="words"),
        pytest.param("8 916 123 45 6a", id="trailing-letter"),
        pytest.param("+7 000", id="too-short-country-code"),
        pytest.param("8916", id="too-short"),
        pytest.param("123", id="three-digits"),
        pytest.param("+7 916 123-45-678", id="one-digit-too-many"),
        pytest.param("+7 916 123-45-6", id="one-digit-too-few"),
        pytest.param("+7 000 000-00-00", id="unassigned-range"),
        pytest.param("+", id="plus-only"),
        pytest.param("1" * 33, id="33-chars"),
        pytest.param("+7 916 123-45-67" + "0" * 20, id="long-digits"),
        pytest.param("+7 916 123-45-67" + "-" * 17, id="33-chars-of-punctuation"),
    ],
)
def test_invalid_inputs_are_refused(raw: str) -> None:
    with pytest.raises(InvalidValue):
        PhoneNumber.parse(raw)


def test_invalid_value_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="required"):
        PhoneNumber.parse("")


def test_up_to_32_characters_are_accepted_after_trimming() -> None:
    exactly_32 = "+7  (916)  123  -  45  -  67    ".rstrip().ljust(32, "-")
    assert len(exactly_32) == 32
    assert PhoneNumber.parse(exactly_32).e164 == "+79161234567"
    # Surrounding blanks do not count.
    assert PhoneNumber.parse("   " + exactly_32 + "   ").e164 == "+79161234567"


def test_over_32_characters_is_refused_before_parsing() -> None:
    too_long = "+7  (916)  123  -  45  -  67    ".rstrip().ljust(33, "-")
    assert len(too_long) == 33
    with pytest.raises(InvalidValue, match="at most 32"):
        PhoneNumber.parse(too_long)


@pytest.mark.parametrize("raw", ["+7 916 ABC-DE-FG", "+79161234567 ext. 5", "+79161234567 доб. 5"])
def test_letters_inside_a_number_are_refused(raw: str) -> None:
    # phonenumbers would read letters as keypad digits (a different, real number) and drop
    # extensions; either way a code could reach someone else.
    with pytest.raises(InvalidValue):
        PhoneNumber.parse(raw)


def test_short_numbers_keep_at_least_four_digits_hidden() -> None:
    assert PhoneNumber.parse("+6834002").masked == "+6****02"


class TestMasked:
    def test_keeps_country_code_operator_and_last_two_digits(self) -> None:
        assert PhoneNumber.parse("+79161234567").masked == "+7916*****67"

    def test_never_shows_the_whole_number(self) -> None:
        phone = PhoneNumber.parse("+79161234567")
        assert phone.masked != phone.e164
        assert "1234567" not in phone.masked
        assert phone.masked.count("*") == 5
        assert len(phone.masked) == len(phone.e164)

    def test_foreign_number(self) -> None:
        masked = PhoneNumber.parse("+442071838750").masked
        assert masked == "+4420******50"

    @pytest.mark.parametrize(
        "raw", ["+79161234567", "+442071838750", "+14155552671", "+6834002", "+29022158"]
    )
    def test_hides_at_least_one_digit_for_any_length(self, raw: str) -> None:
        phone = PhoneNumber.parse(raw)
        assert phone.masked != phone.e164
        assert phone.masked.startswith(phone.e164[:2])
        assert phone.masked.endswith(phone.e164[-2:])
        assert "*" in phone.masked

    def test_repr_and_str_show_only_the_masked_number(self) -> None:
        phone = PhoneNumber.parse("+7 916 123-45-67")
        assert repr(phone) == "PhoneNumber('+7916*****67')"
        assert str(phone) == repr(phone)
        assert "+79161234567" not in f"{phone}"
        assert "9161234567" not in repr([phone])
