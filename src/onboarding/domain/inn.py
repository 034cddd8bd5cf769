"""INN lookup: a person's passport data, the INN's check digits, and what the upstream said."""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum

from onboarding.domain.errors import FieldViolation, InvalidRequest, InvalidValue

_NAME = re.compile(r"[А-ЯЁа-яё]+(?:[ -][А-ЯЁа-яё]+)*")
_AROUND_HYPHEN = re.compile(r" ?- ?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MAX_NAME = 60
_MIN_AGE_FOR_PASSPORT = 14
_OLDEST_BIRTH = date(1900, 1, 1)


def normalize_name(raw: str, *, required: bool) -> str:
    """Trimmed, inner runs of spaces folded, each part capitalised: ``иванова-петрова`` →
    ``Иванова-Петрова``. Cyrillic letters, spaces and hyphens only."""
    text = " ".join(raw.split())
    if "-" in text:
        text = _AROUND_HYPHEN.sub("-", text)
    if not text:
        if required:
            raise InvalidValue("is required")
        return ""
    if len(text) > _MAX_NAME:
        raise InvalidValue(f"must be at most {_MAX_NAME} characters")
    if not _NAME.fullmatch(text):
        raise InvalidValue("may hold only Cyrillic letters, spaces and hyphens")
    # Only letters, spaces and hyphens are left: title() capitalises each run of letters.
    return text.title()


def parse_date(raw: str) -> date:
    if not _DATE.fullmatch(raw):
        raise InvalidValue("must be a date YYYY-MM-DD")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidValue("is not a real date") from None


def _digits(raw: str, count: int) -> str:
    text = raw.replace(" ", "")
    if len(text) != count or not (text.isascii() and text.isdigit()):
        raise InvalidValue(f"must be {count} digits")
    return text


def _add_years(day: date, years: int) -> date:
    """The day ``years`` later. A term counted from 29 February ends on 28 February in a
    common year: the last day of that month (Civil Code of the Russian Federation, art. 192)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


@dataclass(frozen=True, slots=True)
class PersonData:
    """What the upstream needs to find an INN. ``repr`` shows nothing of it."""

    last_name: str = field(repr=False)
    first_name: str = field(repr=False)
    middle_name: str = field(repr=False)  # "" when the person has none
    birth_date: date = field(repr=False)
    document_serial: str = field(repr=False)
    document_number: str = field(repr=False)
    document_date: date = field(repr=False)

    @classmethod
    def parse(
        cls,
        *,
        last_name: str,
        first_name: str,
        middle_name: str,
        birth_date: str,
        document_serial: str,
        document_number: str,
        document_date: str,
        today: date,
    ) -> PersonData:
        """Every bad field becomes one violation; all of them are raised together."""
        violations: list[FieldViolation] = []

        def take(name: str, parse, raw: str):  # type: ignore[no-untyped-def]
            try:
                return parse(raw)
            except InvalidValue as error:
                violations.append(FieldViolation(name, str(error)))
                return None

        last = take("last_name", lambda r: normalize_name(r, required=True), last_name)
        first = take("first_name", lambda r: normalize_name(r, required=True), first_name)
        middle = take("middle_name", lambda r: normalize_name(r, required=False), middle_name)
        born = take("birth_date", parse_date, birth_date)
        serial = take("document_serial", lambda r: _digits(r, 4), document_serial)
        number = take("document_number", lambda r: _digits(r, 6), document_number)
        issued = take("document_date", parse_date, document_date)
        if born is not None and born >= today:
            violations.append(FieldViolation("birth_date", "must be in the past"))
            born = None
        elif born is not None and born < _OLDEST_BIRTH:
            violations.append(FieldViolation("birth_date", f"must not be before {_OLDEST_BIRTH}"))
            born = None
        if issued is not None and issued > today:
            violations.append(FieldViolation("document_date", "must not be in the future"))
            issued = None
        if (
            born is not None
            and issued is not None
            and issued < _add_years(born, _MIN_AGE_FOR_PASSPORT)
        ):
            violations.append(
                FieldViolation(
                    "document_date",
                    f"the person must be at least {_MIN_AGE_FOR_PASSPORT} on this date",
                )
            )
        if violations:
            raise InvalidRequest(violations)
        return cls(last, first, middle, born, serial, number, issued)  # type: ignore[arg-type]

    def key_material(self) -> tuple[bytes, ...]:
        """The normalised fields that identify the person, for the keyed person key."""
        fold = lambda s: s.upper().replace("Ё", "Е").encode()  # noqa: E731
        return (
            fold(self.last_name),
            fold(self.first_name),
            fold(self.middle_name),
            self.birth_date.isoformat().encode(),
            self.document_serial.encode(),
            self.document_number.encode(),
            self.document_date.isoformat().encode(),
        )


def inn_is_valid(inn: str) -> bool:
    """A personal INN: 12 digits whose two check digits hold."""
    if len(inn) != 12 or not (inn.isascii() and inn.isdigit()):
        return False
    digits = [int(c) for c in inn]

    def check(weights: tuple[int, ...]) -> int:
        return sum(w * d for w, d in zip(weights, digits, strict=False)) % 11 % 10

    return (
        check((7, 2, 4, 10, 3, 5, 9, 4, 6, 8)) == digits[10]
        and check((3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)) == digits[11]
    )


class UpstreamVerdict(StrEnum):
    FOUND = "FOUND"
    NOT_FOUND = "NOT_FOUND"
    #: The upstream refused the data itself (``ERRORS``): asking again cannot help.
    REJECTED = "REJECTED"
    #: Captcha or HTTP 429: the upstream wants fewer calls; everything pauses.
    THROTTLED = "THROTTLED"
    #: 5xx, ``ERROR``, timeouts, garbage, an INN whose check digits fail: try again later.
    FAULT = "FAULT"
    #: No call was made: this process is waiting out a captcha pause another lookup met.
    #: Not an attempt; the lookup waits for the pause to end.
    PAUSED = "PAUSED"


@dataclass(frozen=True, slots=True)
class UpstreamAnswer:
    verdict: UpstreamVerdict
    inn: str | None = None
    #: Free of personal data: field names and fault kinds only.
    detail: str = ""

    def __post_init__(self) -> None:
        if self.verdict is UpstreamVerdict.FOUND and not (self.inn and inn_is_valid(self.inn)):
            raise ValueError("a FOUND answer needs an INN whose check digits hold")


class LookupStatus(StrEnum):
    PENDING = "PENDING"
    FOUND = "FOUND"
    NOT_FOUND = "NOT_FOUND"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class LookupPolicy:
    max_attempts: int = 5
    retry_delay: timedelta = timedelta(seconds=30)
    captcha_pause: timedelta = timedelta(seconds=60)
    found_ttl: timedelta = timedelta(days=30)
    not_found_ttl: timedelta = timedelta(days=1)

    def retry_after(self, attempts: int) -> timedelta:
        """Growing: the base delay times the number of attempts made so far."""
        return self.retry_delay * max(attempts, 1)


#: A lookup's ``details`` are at most this long (they are shown to callers and stored).
MAX_DETAILS_LENGTH = 300


def _bounded(details: str) -> str:
    if len(details) <= MAX_DETAILS_LENGTH:
        return details
    return details[: MAX_DETAILS_LENGTH - 1] + "…"


@dataclass(frozen=True, slots=True)
class JobDecision:
    """What to do with a person's pending lookup after an upstream answer."""

    status: LookupStatus  # PENDING: try again at ``next_attempt_time``
    inn: str | None
    details: str
    next_attempt_time: datetime | None = None
    #: Until when no upstream call may be made at all (a captcha was seen).
    pause_until: datetime | None = None
    #: How long the answer may be reused for the same person; None: not at all.
    cache_for: timedelta | None = None
    #: False when no upstream call was made: the claim's attempt is given back.
    attempted: bool = True


def decide(
    answer: UpstreamAnswer, *, attempts: int, now: datetime, policy: LookupPolicy
) -> JobDecision:
    """The lookup rules. ``attempts`` counts upstream calls made, this one included."""
    match answer.verdict:
        case UpstreamVerdict.FOUND:
            return JobDecision(LookupStatus.FOUND, answer.inn, "", cache_for=policy.found_ttl)
        case UpstreamVerdict.NOT_FOUND:
            return JobDecision(
                LookupStatus.NOT_FOUND,
                None,
                "no INN found for this person",
                cache_for=policy.not_found_ttl,
            )
        case UpstreamVerdict.REJECTED:
            return JobDecision(
                LookupStatus.FAILED,
                None,
                _bounded(f"rejected by service.nalog.ru: {answer.detail}"),
            )
        case UpstreamVerdict.PAUSED:
            # The pause itself is already recorded by the lookup that met the captcha.
            return JobDecision(
                LookupStatus.PENDING,
                None,
                "waiting out a captcha pause of service.nalog.ru",
                next_attempt_time=now + policy.captcha_pause,
                attempted=False,
            )
    pause_until = (
        now + policy.captcha_pause if answer.verdict is UpstreamVerdict.THROTTLED else None
    )
    if attempts >= policy.max_attempts:
        return JobDecision(
            LookupStatus.FAILED,
            None,
            _bounded(f"service.nalog.ru did not answer after {attempts} attempts: {answer.detail}"),
            pause_until=pause_until,
        )
    next_time = now + policy.retry_after(attempts)
    if pause_until is not None:
        next_time = max(next_time, pause_until)
    return JobDecision(
        LookupStatus.PENDING,
        None,
        _bounded(
            f"service.nalog.ru is busy ({answer.detail}); attempt {attempts + 1} of "
            f"{policy.max_attempts} at {next_time.isoformat(timespec='seconds')}"
        ),
        next_attempt_time=next_time,
        pause_until=pause_until,
    )


@dataclass(eq=False, slots=True)
class InnLookup:
    """One caller's lookup, named by its ``request_id``. It never holds personal data: the
    person is known only by a keyed hash, and the passport data waits in the person's job."""

    request_id: str
    person_key: bytes = field(repr=False)
    status: LookupStatus
    create_time: datetime
    inn: str | None = None
    cached: bool = False
    details: str = ""
    attempts: int = 0
    finish_time: datetime | None = None

    @classmethod
    def start(cls, request_id: str, person_key: bytes, now: datetime) -> InnLookup:
        return cls(
            request_id,
            person_key,
            LookupStatus.PENDING,
            now,
            details="waiting for service.nalog.ru",
        )

    @classmethod
    def from_stored_answer(
        cls,
        request_id: str,
        person_key: bytes,
        answer: StoredAnswer,
        now: datetime,
    ) -> InnLookup:
        return cls(
            request_id,
            person_key,
            answer.status,
            now,
            inn=answer.inn,
            cached=True,
            details=STORED_ANSWER_DETAILS[answer.status],
            finish_time=now,
        )

    def same_person(self, person_key: bytes) -> bool:
        return hmac.compare_digest(self.person_key, person_key)


#: What a lookup answered from a stored answer says, by the answer's status.
STORED_ANSWER_DETAILS = {
    LookupStatus.FOUND: "",
    LookupStatus.NOT_FOUND: "no INN found for this person",
}


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """A FOUND or NOT_FOUND answer kept for reuse until ``expire_time``."""

    status: LookupStatus
    inn: str | None
    expire_time: datetime

    def fresh(self, now: datetime) -> bool:
        return now < self.expire_time
