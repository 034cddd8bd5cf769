"""The INN lookup's domain: names, dates, passport data, INN check digits, the lookup rules,
and the in-process wake-ups of waiting FindInn calls."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onboarding.domain.errors import InvalidRequest, InvalidValue
from onboarding.domain.inn import (
    MAX_DETAILS_LENGTH,
    InnLookup,
    LookupPolicy,
    LookupStatus,
    PersonData,
    StoredAnswer,
    UpstreamAnswer,
    UpstreamVerdict,
    decide,
    inn_is_valid,
    normalize_name,
    parse_date,
)
from onboarding.service_layer.inn_service import Waiters

TODAY = date(2025, 3, 14)
NOW = datetime(2025, 3, 14, 9, 26, 53, 123457, tzinfo=UTC)
VALID_INN = "500100732259"
POLICY = LookupPolicy()


def raw_person(**overrides: str) -> dict[str, str]:
    fields = {
        "last_name": "Иванов",
        "first_name": "Иван",
        "middle_name": "Иванович",
        "birth_date": "1980-05-17",
        "document_serial": "4508",
        "document_number": "123456",
        "document_date": "2005-06-01",
    }
    fields.update(overrides)
    return fields


def parse(today: date = TODAY, **overrides: str) -> PersonData:
    return PersonData.parse(**raw_person(**overrides), today=today)


def violations(today: date = TODAY, **overrides: str) -> list[tuple[str, str]]:
    with pytest.raises(InvalidRequest) as caught:
        parse(today, **overrides)
    return [(v.field, v.description) for v in caught.value.violations]


def fields_of(found: list[tuple[str, str]]) -> list[str]:
    return [name for name, _ in found]


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Иванов", "Иванов"),
        ("  Иванов  ", "Иванов"),
        ("иванов", "Иванов"),
        ("ИВАНОВ", "Иванов"),
        ("иВаНоВ", "Иванов"),
        ("иванова - петрова", "Иванова-Петрова"),
        ("иванова-петрова", "Иванова-Петрова"),
        ("Иванова -Петрова", "Иванова-Петрова"),
        ("анна   мария", "Анна Мария"),
        ("\tанна \n мария\u00a0", "Анна Мария"),
        ("алёна", "Алёна"),
        ("ёлкин", "Ёлкин"),
        ("ЁЛКИН", "Ёлкин"),
        ("оглы-эдуард оглы", "Оглы-Эдуард Оглы"),
    ],
)
def test_names_are_trimmed_folded_and_capitalised(raw: str, expected: str) -> None:
    assert normalize_name(raw, required=True) == expected


def _normalize_as_first_written(raw: str) -> str:
    """The first version of normalize_name, with a regex per step, kept to check the faster one."""
    text = re.sub(r"\s*-\s*", "-", " ".join(raw.split()))
    if not text or len(text) > 60 or not re.fullmatch(r"[А-ЯЁа-яё]+(?:[ -][А-ЯЁа-яё]+)*", text):
        raise InvalidValue("refused")
    return re.sub(r"[А-ЯЁа-яё]+", lambda m: m.group(0).capitalize(), text)


@given(st.text(alphabet="аяёжАЯЁЖ- \t\u00a0zZ", max_size=70))
def test_names_are_normalised_as_by_the_first_version(raw: str) -> None:
    try:
        expected = _normalize_as_first_written(raw)
    except InvalidValue:
        with pytest.raises(InvalidValue):
            normalize_name(raw, required=True)
    else:
        assert normalize_name(raw, required=True) == expected


def test_yo_is_kept_not_replaced_by_ye() -> None:
    assert "ё" in normalize_name("Семёнов", required=True)
    assert normalize_name("Семёнов", required=True) != normalize_name("Семенов", required=True)


@pytest.mark.parametrize(
    "raw",
    [
        "Ivanov",
        "Ивaнов",  # a Latin "a" among Cyrillic letters
        "Иванов2",
        "Иван0в",
        "Иванов.",
        "Д'Артаньян",
        "Иванов,Петров",
        "Иванов_Петров",
        "-Иванов",
        "Иванов-",
        "Иванова--Петрова",
        "Иванова - - Петрова",
        "Иванов!",
        "Иванов (Петров)",
    ],
)
def test_names_with_latin_digits_or_punctuation_are_refused(raw: str) -> None:
    with pytest.raises(InvalidValue):
        normalize_name(raw, required=True)


def test_names_are_at_most_sixty_characters() -> None:
    assert normalize_name("а" * 60, required=True) == "А" + "а" * 59
    with pytest.raises(InvalidValue, match="at most 60"):
        normalize_name("а" * 61, required=True)
    # measured after folding the spaces
    assert len(normalize_name("   " + "а" * 60 + "   ", required=True)) == 60


@pytest.mark.parametrize("raw", ["", "   ", "\t\n"])
def test_empty_names_are_refused_when_required_and_empty_otherwise(raw: str) -> None:
    with pytest.raises(InvalidValue, match="required"):
        normalize_name(raw, required=True)
    assert normalize_name(raw, required=False) == ""


# -- dates ---------------------------------------------------------------------------------


def test_dates_are_iso() -> None:
    assert parse_date("2024-02-29") == date(2024, 2, 29)
    assert parse_date("1900-01-01") == date(1900, 1, 1)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "2024-2-29",
        "29.02.2024",
        "2024/02/29",
        "20240229",
        " 2024-02-29",
        "2024-02-29 ",
        "2024-02-29T00:00",
        "2024-02-29\n",
        "year-mm-dd",
    ],
)
def test_other_date_formats_are_refused(raw: str) -> None:
    with pytest.raises(InvalidValue, match="YYYY-MM-DD"):
        parse_date(raw)


@pytest.mark.parametrize(
    "raw", ["2023-02-29", "2024-02-30", "2024-13-01", "2024-00-10", "2024-04-31", "0000-01-01"]
)
def test_dates_that_do_not_exist_are_refused(raw: str) -> None:
    with pytest.raises(InvalidValue, match="real date"):
        parse_date(raw)


@pytest.mark.parametrize("raw", ["٢٠٢٠-٠١-٠١", "２０２０-01-01"])
def test_dates_in_non_ascii_digits_are_refused(raw: str) -> None:
    with pytest.raises(InvalidValue):
        parse_date(raw)


# -- PersonData.parse ----------------------------------------------------------------------


def test_a_good_person_is_parsed_into_normalised_fields() -> None:
    person = parse(last_name=" иванова - петрова ", first_name="АННА", middle_name="")
    assert person.last_name == "Иванова-Петрова"
    assert person.first_name == "Анна"
    assert person.middle_name == ""
    assert person.birth_date == date(1980, 5, 17)
    assert person.document_serial == "4508"
    assert person.document_number == "123456"
    assert person.document_date == date(2005, 6, 1)


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("last_name", ""),
        ("last_name", "Smith"),
        ("first_name", "   "),
        ("first_name", "Иван1"),
        ("middle_name", "Ivanovich"),
        ("birth_date", "17.05.1980"),
        ("birth_date", "1980-02-30"),
        ("document_serial", "450"),
        ("document_serial", "45088"),
        ("document_serial", "45a8"),
        ("document_serial", ""),
        ("document_number", "12345"),
        ("document_number", "1234567"),
        ("document_number", "12-456"),
        ("document_date", "2005-6-1"),
        ("document_date", "2005-02-29"),
    ],
)
def test_each_bad_field_gives_exactly_one_violation(field: str, bad: str) -> None:
    assert fields_of(violations(**{field: bad})) == [field]


def test_all_bad_fields_are_reported_together() -> None:
    found = violations(
        last_name="",
        first_name="John",
        middle_name="3",
        birth_date="yesterday",
        document_serial="12",
        document_number="x",
        document_date="2020-13-01",
    )
    assert sorted(fields_of(found)) == sorted(
        [
            "last_name",
            "first_name",
            "middle_name",
            "birth_date",
            "document_serial",
            "document_number",
            "document_date",
        ]
    )


def test_the_error_message_shows_no_value() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(last_name="Smith", document_serial="987", document_number="65432")
    message = str(caught.value)
    for secret in ("Smith", "987", "65432", "Иван", "1980"):
        assert secret not in message


@pytest.mark.parametrize("born", [TODAY, TODAY + timedelta(days=1), date(2100, 1, 1)])
def test_a_birth_date_today_or_later_is_refused(born: date) -> None:
    assert violations(birth_date=born.isoformat(), document_date="2005-06-01") == [
        ("birth_date", "must be in the past")
    ]


def test_a_birth_date_before_1900_is_refused() -> None:
    assert fields_of(violations(birth_date="1899-12-31")) == ["birth_date"]
    assert parse(birth_date="1900-01-01", document_date="1950-01-01").birth_date == date(1900, 1, 1)


def test_a_document_date_in_the_future_is_refused_but_today_is_fine() -> None:
    assert violations(document_date=(TODAY + timedelta(days=1)).isoformat()) == [
        ("document_date", "must not be in the future")
    ]
    assert parse(document_date=TODAY.isoformat()).document_date == TODAY


def test_the_person_must_be_fourteen_on_the_document_date() -> None:
    born = "2000-07-15"
    assert parse(birth_date=born, document_date="2014-07-15").document_date == date(2014, 7, 15)
    found = violations(birth_date=born, document_date="2014-07-14")
    assert fields_of(found) == ["document_date"]
    assert "at least 14" in found[0][1]
    assert fields_of(violations(birth_date=born, document_date="1999-01-01")) == ["document_date"]


def test_a_person_born_on_29_february_turns_fourteen_on_28_february() -> None:
    # A term in years with no matching day ends on the month's last day (Civil Code, art. 192).
    born = "2008-02-29"
    assert fields_of(violations(birth_date=born, document_date="2022-02-27")) == ["document_date"]
    assert parse(birth_date=born, document_date="2022-02-28").document_date == date(2022, 2, 28)


def test_no_age_violation_is_added_when_a_date_is_already_bad() -> None:
    assert fields_of(violations(birth_date=TODAY.isoformat(), document_date="2000-01-01")) == [
        "birth_date"
    ]
    assert fields_of(
        violations(birth_date="2020-01-01", document_date=(TODAY + timedelta(days=1)).isoformat())
    ) == ["document_date"]


@pytest.mark.parametrize(
    ("serial", "number"), [("45 08", "123456"), ("4508", "123 456"), ("45 08", "12 34 56")]
)
def test_spaces_inside_document_numbers_are_dropped(serial: str, number: str) -> None:
    person = parse(document_serial=serial, document_number=number)
    assert (person.document_serial, person.document_number) == ("4508", "123456")


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("document_serial", "４５０８"),  # fullwidth digits
        ("document_serial", "٤٥٠٨"),  # Arabic-Indic digits
        ("document_number", "１２３４５６"),
        ("document_number", "12345٦"),
        ("document_serial", "45\t08"),
    ],
)
def test_non_ascii_digits_are_refused(field: str, bad: str) -> None:
    assert fields_of(violations(**{field: bad})) == [field]


def test_the_repr_of_person_data_reveals_nothing() -> None:
    person = parse(middle_name="Петрович")
    for text in (repr(person), str(person), f"{person}"):
        for secret in ("Иванов", "Иван", "Петрович", "4508", "123456", "1980", "2005", "05"):
            assert secret not in text


def test_key_material_folds_yo_and_case() -> None:
    yo = PersonData.parse(**raw_person(last_name="Ёлкин", first_name="Пётр"), today=TODAY)
    ye = PersonData.parse(**raw_person(last_name="Елкин", first_name="Петр"), today=TODAY)
    assert yo.last_name != ye.last_name
    assert yo.key_material() == ye.key_material()

    upper = PersonData(
        "ИВАНОВ", "ИВАН", "ИВАНОВИЧ", date(1980, 5, 17), "4508", "123456", date(2005, 6, 1)
    )
    assert upper.key_material() == parse().key_material()
    assert parse(last_name="ИВАНОВ", first_name="иван").key_material() == parse().key_material()


@pytest.mark.parametrize(
    "change",
    [
        {"document_serial": "4509"},
        {"document_number": "123457"},
        {"document_date": "2005-06-02"},
        {"birth_date": "1980-05-18"},
        {"last_name": "Петров"},
        {"first_name": "Пётр"},
        {"middle_name": ""},
        {"middle_name": "Петрович"},
    ],
)
def test_key_material_differs_for_other_people_or_documents(change: dict[str, str]) -> None:
    assert parse(**change).key_material() != parse().key_material()


# -- INN check digits ----------------------------------------------------------------------


def test_the_contract_example_is_valid() -> None:
    assert inn_is_valid(VALID_INN)


@pytest.mark.parametrize("position", range(12))
def test_every_single_digit_change_is_invalid(position: int) -> None:
    for digit in "0123456789":
        if digit != VALID_INN[position]:
            changed = VALID_INN[:position] + digit + VALID_INN[position + 1 :]
            assert not inn_is_valid(changed), changed


@pytest.mark.parametrize(
    "inn",
    [
        "",
        "5001007322",
        "50010073225",
        "5001007322590",
        "50010073225a",
        " 500100732259",
        "５００１００７３２２５９",
        "50010073225٩",
        "+50010073225",
    ],
)
def test_other_lengths_and_non_digits_are_invalid(inn: str) -> None:
    assert not inn_is_valid(inn)


def test_a_found_answer_needs_a_valid_inn() -> None:
    assert UpstreamAnswer(UpstreamVerdict.FOUND, VALID_INN).inn == VALID_INN
    with pytest.raises(ValueError):
        UpstreamAnswer(UpstreamVerdict.FOUND, "500100732258")
    with pytest.raises(ValueError):
        UpstreamAnswer(UpstreamVerdict.FOUND, None)
    with pytest.raises(ValueError):
        UpstreamAnswer(UpstreamVerdict.FOUND, "")
    # other verdicts carry no INN to check
    assert UpstreamAnswer(UpstreamVerdict.FAULT, detail="http 502").inn is None


# -- decide --------------------------------------------------------------------------------


def test_found_is_cached_for_the_found_ttl() -> None:
    decision = decide(
        UpstreamAnswer(UpstreamVerdict.FOUND, VALID_INN), attempts=1, now=NOW, policy=POLICY
    )
    assert decision.status is LookupStatus.FOUND
    assert decision.inn == VALID_INN
    assert decision.cache_for == POLICY.found_ttl == timedelta(days=30)
    assert decision.next_attempt_time is None and decision.pause_until is None


def test_not_found_is_cached_for_the_not_found_ttl() -> None:
    decision = decide(UpstreamAnswer(UpstreamVerdict.NOT_FOUND), attempts=3, now=NOW, policy=POLICY)
    assert decision.status is LookupStatus.NOT_FOUND
    assert decision.inn is None
    assert decision.cache_for == POLICY.not_found_ttl == timedelta(days=1)
    assert decision.details
    assert decision.next_attempt_time is None and decision.pause_until is None


def test_rejected_fails_at_once_without_cache_or_retry() -> None:
    decision = decide(
        UpstreamAnswer(UpstreamVerdict.REJECTED, detail="docno"), attempts=1, now=NOW, policy=POLICY
    )
    assert decision.status is LookupStatus.FAILED
    assert decision.cache_for is None
    assert decision.next_attempt_time is None and decision.pause_until is None
    assert "docno" in decision.details


@pytest.mark.parametrize("attempts", [1, 2, 3, 4])
def test_a_fault_under_the_limit_is_retried_later_and_later(attempts: int) -> None:
    decision = decide(
        UpstreamAnswer(UpstreamVerdict.FAULT, detail="http 502"),
        attempts=attempts,
        now=NOW,
        policy=POLICY,
    )
    assert decision.status is LookupStatus.PENDING
    assert decision.next_attempt_time == NOW + POLICY.retry_delay * attempts
    assert decision.pause_until is None and decision.cache_for is None
    assert "http 502" in decision.details
    assert f"attempt {attempts + 1} of {POLICY.max_attempts}" in decision.details


def test_fault_delays_grow() -> None:
    times = [
        decide(
            UpstreamAnswer(UpstreamVerdict.FAULT), attempts=n, now=NOW, policy=POLICY
        ).next_attempt_time
        for n in range(1, POLICY.max_attempts)
    ]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_throttled_pauses_everyone_and_the_next_attempt_waits_for_the_pause() -> None:
    policy = LookupPolicy(retry_delay=timedelta(seconds=10), captcha_pause=timedelta(seconds=60))
    decision = decide(
        UpstreamAnswer(UpstreamVerdict.THROTTLED, detail="captcha"),
        attempts=1,
        now=NOW,
        policy=policy,
    )
    assert decision.status is LookupStatus.PENDING
    assert decision.pause_until == NOW + timedelta(seconds=60)
    assert decision.next_attempt_time == decision.pause_until
    assert decision.cache_for is None


def test_throttled_with_a_longer_retry_delay_keeps_the_retry_delay() -> None:
    policy = LookupPolicy(retry_delay=timedelta(seconds=50), captcha_pause=timedelta(seconds=60))
    decision = decide(UpstreamAnswer(UpstreamVerdict.THROTTLED), attempts=3, now=NOW, policy=policy)
    assert decision.pause_until == NOW + timedelta(seconds=60)
    assert decision.next_attempt_time == NOW + timedelta(seconds=150)
    assert decision.next_attempt_time >= decision.pause_until


@pytest.mark.parametrize("verdict", [UpstreamVerdict.FAULT, UpstreamVerdict.THROTTLED])
@pytest.mark.parametrize("extra", [0, 1])
def test_at_max_attempts_the_lookup_fails_with_details(
    verdict: UpstreamVerdict, extra: int
) -> None:
    attempts = POLICY.max_attempts + extra
    decision = decide(
        UpstreamAnswer(verdict, detail="timeout"), attempts=attempts, now=NOW, policy=POLICY
    )
    assert decision.status is LookupStatus.FAILED
    assert decision.next_attempt_time is None and decision.cache_for is None
    assert "timeout" in decision.details and str(attempts) in decision.details
    if verdict is UpstreamVerdict.THROTTLED:
        assert decision.pause_until == NOW + POLICY.captcha_pause
    else:
        assert decision.pause_until is None


def test_a_custom_max_attempts_is_respected() -> None:
    policy = LookupPolicy(max_attempts=2)
    first = decide(UpstreamAnswer(UpstreamVerdict.FAULT), attempts=1, now=NOW, policy=policy)
    second = decide(UpstreamAnswer(UpstreamVerdict.FAULT), attempts=2, now=NOW, policy=policy)
    assert first.status is LookupStatus.PENDING and second.status is LookupStatus.FAILED


@pytest.mark.parametrize("verdict", list(UpstreamVerdict))
@pytest.mark.parametrize("attempts", [1, 5])
def test_details_hold_only_the_answer_detail(verdict: UpstreamVerdict, attempts: int) -> None:
    """decide sees no personal data; its details are fixed text, numbers of the rules, and the
    answer's own (personal-data-free) detail."""
    marker = "MARKER-DETAIL"
    inn = VALID_INN if verdict is UpstreamVerdict.FOUND else None
    decision = decide(
        UpstreamAnswer(verdict, inn, detail=marker), attempts=attempts, now=NOW, policy=POLICY
    )
    stripped = decision.details.replace(marker, "")
    if decision.next_attempt_time is not None:
        stripped = stripped.replace(decision.next_attempt_time.isoformat(timespec="seconds"), "")
    assert VALID_INN not in decision.details
    assert "4508" not in decision.details and "Иванов" not in decision.details
    # what is left is plain words and the attempt counters
    assert all(c.isascii() for c in stripped)
    assert not any(
        c.isdigit()
        for c in stripped.replace(str(attempts), "")
        .replace(str(attempts + 1), "")
        .replace(str(POLICY.max_attempts), "")
    )


def test_retry_after_never_drops_below_the_base_delay() -> None:
    assert POLICY.retry_after(0) == POLICY.retry_delay
    assert POLICY.retry_after(1) == POLICY.retry_delay
    assert POLICY.retry_after(3) == POLICY.retry_delay * 3


# -- InnLookup and StoredAnswer ------------------------------------------------------------

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def test_a_started_lookup_is_pending_and_waits() -> None:
    lookup = InnLookup.start("req-1", KEY, NOW)
    assert lookup.request_id == "req-1"
    assert lookup.status is LookupStatus.PENDING
    assert lookup.create_time == NOW
    assert lookup.inn is None and lookup.cached is False
    assert lookup.attempts == 0 and lookup.finish_time is None
    assert lookup.details


def test_a_lookup_from_a_stored_found_answer_is_cached_and_finished() -> None:
    stored = StoredAnswer(LookupStatus.FOUND, VALID_INN, NOW + timedelta(days=1))
    lookup = InnLookup.from_stored_answer("req-2", KEY, stored, NOW)
    assert lookup.status is LookupStatus.FOUND
    assert lookup.inn == VALID_INN
    assert lookup.cached is True
    assert lookup.details == ""
    assert lookup.create_time == lookup.finish_time == NOW
    assert lookup.attempts == 0


def test_a_lookup_from_a_stored_not_found_answer_says_so() -> None:
    stored = StoredAnswer(LookupStatus.NOT_FOUND, None, NOW + timedelta(days=1))
    lookup = InnLookup.from_stored_answer("req-3", KEY, stored, NOW)
    assert lookup.status is LookupStatus.NOT_FOUND
    assert lookup.inn is None and lookup.cached is True
    assert lookup.details == "no INN found for this person"
    assert lookup.finish_time == NOW


def test_same_person_compares_keys() -> None:
    lookup = InnLookup.start("req-4", KEY, NOW)
    assert lookup.same_person(bytes(KEY))
    assert not lookup.same_person(OTHER_KEY)
    assert not lookup.same_person(KEY[:-1])


def test_the_repr_of_a_lookup_hides_the_person_key() -> None:
    assert repr(KEY) not in repr(InnLookup.start("req-5", KEY, NOW))


def test_a_stored_answer_is_fresh_until_its_expiry_exclusive() -> None:
    stored = StoredAnswer(LookupStatus.FOUND, VALID_INN, NOW)
    assert stored.fresh(NOW - timedelta(microseconds=1))
    assert not stored.fresh(NOW)
    assert not stored.fresh(NOW + timedelta(microseconds=1))


# -- Waiters -------------------------------------------------------------------------------


def internals(waiters: Waiters) -> dict[bytes, set[asyncio.Event]]:
    return waiters._events  # type: ignore[attr-defined]


async def test_a_wake_after_arming_reaches_a_later_wait() -> None:
    waiters = Waiters()
    event = waiters.arm(KEY)
    waiters.wake(KEY)  # e.g. while the waiter is still reading the lookup
    await asyncio.wait_for(event.wait(), 1)
    waiters.disarm(KEY, event)


async def test_a_wake_reaches_a_waiter_already_waiting() -> None:
    waiters = Waiters()
    event = waiters.arm(KEY)
    task = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    assert not task.done()
    waiters.wake(KEY)
    await asyncio.wait_for(task, 1)
    waiters.disarm(KEY, event)


async def test_a_wake_of_another_person_does_not_wake() -> None:
    waiters = Waiters()
    event = waiters.arm(KEY)
    waiters.wake(OTHER_KEY)
    assert not event.is_set()
    assert internals(waiters) == {KEY: {event}}
    waiters.disarm(KEY, event)


async def test_a_wake_with_nobody_waiting_is_dropped() -> None:
    waiters = Waiters()
    waiters.wake(KEY)
    assert internals(waiters) == {}
    event = waiters.arm(KEY)
    assert not event.is_set()  # the earlier wake is not kept for a later waiter
    waiters.disarm(KEY, event)
    assert internals(waiters) == {}


async def test_re_arming_gives_a_fresh_event() -> None:
    waiters = Waiters()
    event = waiters.arm(KEY)
    waiters.wake(KEY)
    assert event.is_set()
    waiters.disarm(KEY, event)
    again = waiters.arm(KEY)
    assert not again.is_set()
    waiters.disarm(KEY, again)


async def test_two_waiters_of_one_person_are_both_woken_and_both_forgotten() -> None:
    waiters = Waiters()
    first = waiters.arm(KEY)
    second = waiters.arm(KEY)
    waiters.wake(KEY)
    await asyncio.wait_for(asyncio.gather(first.wait(), second.wait()), 1)

    waiters.disarm(KEY, first)
    assert internals(waiters) == {KEY: {second}}
    waiters.disarm(KEY, second)
    assert internals(waiters) == {}


async def test_wake_finished_wakes_the_people_a_unit_of_work_finished() -> None:
    uow = SimpleNamespace(inn_lookups=SimpleNamespace(finished_people={KEY}))

    waiters = Waiters()
    event = waiters.arm(KEY)
    other = waiters.arm(OTHER_KEY)
    waiters.wake_finished(uow)  # type: ignore[arg-type]
    assert event.is_set() and not other.is_set()
    waiters.disarm(KEY, event)
    waiters.disarm(OTHER_KEY, other)


async def test_a_second_waiter_arming_does_not_erase_a_wake_of_the_first() -> None:
    waiters = Waiters()
    first = waiters.arm(KEY)  # the first FindInn armed and is reading the lookup
    waiters.wake(KEY)  # the worker finishes the person's job
    second = waiters.arm(KEY)  # a second FindInn for the same person arms
    try:
        await asyncio.wait_for(first.wait(), 0.2)
    finally:
        waiters.disarm(KEY, first)
        waiters.disarm(KEY, second)


@pytest.mark.parametrize(
    ("verdict", "attempts"),
    [
        (UpstreamVerdict.REJECTED, 1),  # FAILED at once
        (UpstreamVerdict.FAULT, 1),  # PENDING, to be retried
        (UpstreamVerdict.FAULT, POLICY.max_attempts),  # FAILED after the last attempt
    ],
)
def test_details_never_outgrow_their_limit(verdict: UpstreamVerdict, attempts: int) -> None:
    # An upstream answer may name many long fields; the lookup must still be recordable.
    long_detail = "fields: " + ", ".join(f"field_number_{n:02d}_of_the_form_x" for n in range(20))
    decision = decide(
        UpstreamAnswer(verdict, detail=long_detail), attempts=attempts, now=NOW, policy=POLICY
    )
    assert len(decision.details) == MAX_DETAILS_LENGTH
    assert decision.details.endswith("…")
    assert "field_number_00" in decision.details  # what fits is kept, from the start


def test_short_details_are_kept_whole() -> None:
    decision = decide(
        UpstreamAnswer(UpstreamVerdict.REJECTED, detail="fields: docno"),
        attempts=1,
        now=NOW,
        policy=POLICY,
    )
    assert decision.details == "rejected by service.nalog.ru: fields: docno"


@pytest.mark.parametrize("attempts", [1, POLICY.max_attempts, POLICY.max_attempts + 3])
def test_a_call_not_made_during_a_pause_is_no_attempt_and_never_fails(attempts: int) -> None:
    decision = decide(
        UpstreamAnswer(UpstreamVerdict.PAUSED, detail="paused after a captcha"),
        attempts=attempts,
        now=NOW,
        policy=POLICY,
    )
    assert decision.status is LookupStatus.PENDING
    assert decision.attempted is False
    assert decision.next_attempt_time == NOW + POLICY.captcha_pause
    assert decision.pause_until is None  # the lookup that met the captcha set the pause
