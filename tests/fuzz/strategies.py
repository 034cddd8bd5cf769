"""Field values for fuzzing: any Unicode (NUL, RTL marks, astral characters, strings up to
100k characters), empty values, and valid-looking values mixed with garbage."""

from __future__ import annotations

import base64
import itertools
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.conftest import SCRIPTED_DOCUMENTS, FuzzServer

#: Characters that tend to break things: NUL and other controls, bidi marks and overrides,
#: BOM, combining marks, non-ASCII digits and spaces, line separators, astral and noncharacters.
SPECIAL = (
    "\x00",
    "\x01",
    "\x7f",
    "\x85",
    "\t",
    "\r",
    "\n",
    " ",
    "\u00a0",
    "\u200b",
    "\u200e",
    "\u200f",
    "\u202e",
    "\u2066",
    "\u2028",
    "\ufeff",
    "\ufffd",
    "\uffff",
    "\u0301",
    "\u0660",  # ARABIC-INDIC DIGIT ZERO
    "\uff11",  # FULLWIDTH DIGIT ONE
    "\U0001d7d9",  # MATHEMATICAL DOUBLE-STRUCK DIGIT ONE
    "\U0001f600",
    "\U0010ffff",
    "Ё",
    "й",
    "%",
    "'",
    '"',
    "\\",
    ";",
    "{",
)

#: Any code point UTF-8 can carry (protobuf strings cannot hold surrogates).
any_char = st.one_of(st.characters(codec="utf-8"), st.sampled_from(SPECIAL))
short_text = st.text(any_char, max_size=80)


@st.composite
def long_text(draw: st.DrawFn, min_size: int = 129, max_size: int = 100_000) -> str:
    """A long string, cheaply: a short unit repeated to ``n`` code points."""
    unit = draw(st.text(any_char, min_size=1, max_size=5))
    n = draw(st.integers(min_size, max_size))
    return (unit * (n // len(unit) + 1))[:n]


# Generation must not depend on the server's state: Hypothesis replays choice sequences and
# stops with "flaky strategy" when the same choices lead to different draws. So values from
# the server (references, tokens…) are picked by a fixed-range index, positions in strings by
# a fraction of their length, and fresh ids have a fixed length.

_serial = itertools.count()
#: A request_id no other example used (Hypothesis's uuids() repeat the nil UUID a lot).
fresh_ids = st.builds(lambda: f"fuzz-{next(_serial):08d}-{uuid.uuid4().hex[:8]}")


def pool(seen: list[str]) -> st.SearchStrategy[str]:
    """One of ``seen``, a list that grows while the tests run."""
    return st.integers(0, 255).map(lambda i: seen[-1 - i % len(seen)])


def position(draw: st.DrawFn, length: int) -> int:
    """An index in ``0..length`` drawn the same way whatever ``length`` is."""
    return draw(st.integers(0, 1000)) * (length + 1) // 1001


garbage = st.one_of(st.just(""), short_text, short_text, long_text())


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A valid-looking value with one change: a character inserted, replaced or dropped,
    padding, or a garbage tail."""
    value = draw(base)
    where = position(draw, len(value))
    char = draw(any_char)
    match draw(st.sampled_from(["insert", "replace", "drop", "pad", "tail", "twice"])):
        case "insert":
            return value[:where] + char + value[where:]
        case "replace":
            return value[:where] + char + value[where + 1 :]
        case "drop":
            return value[:where] + value[where + 1 :]
        case "pad":
            space = draw(st.sampled_from([" ", "\t", "\u00a0", "\u3000", "\n", "\x00"]))
            return space + value + space
        case "tail":
            return value + draw(short_text)
        case _:
            return value + value


def mixed(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Valid values, the same mutated, and garbage."""
    return st.one_of(valid, mutated(valid), mutated(valid), garbage)


def broken_fields(names: list[str]) -> st.SearchStrategy[frozenset[str]]:
    """Which fields of a request get garbage: none, one, or any."""
    return st.one_of(
        st.just(frozenset()),
        st.sampled_from(names).map(lambda name: frozenset({name})),
        st.frozensets(st.sampled_from(names)),
    )


# -- agreements --------------------------------------------------------------------------


def _formatted_phone(number: int, style: int) -> str:
    d = f"{number:07d}"
    return [
        f"+7916{d}",
        f"8916{d}",
        f"+7 (916) {d[:3]}-{d[3:5]}-{d[5:]}",
        f"8 916 {d[:3]} {d[3:5]} {d[5:]}",
        f"916.{d[:3]}.{d[3:]}",
        f"+7 916 {d}",
        f"+1 650 253 {d[:4]}",
        f"+44 20 7946 {d[:4]}",
        f"+{d}",
        f"7916{d}",
    ][style]


def phones(seen: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(_formatted_phone, st.integers(0, 9_999_999), st.integers(0, 9)),
        pool(seen),  # used again and again: the per-phone quota runs out
    )


def id_hashes(seen: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        pool(seen),
        st.uuids().map(lambda u: u.hex),
        st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=128),
        st.text(any_char, min_size=1, max_size=128),
        long_text(min_size=120, max_size=140),
    )


def agreement_request_ids() -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(""),
        fresh_ids,
        st.sampled_from(["fuzz-1", "fuzz-2", "fuzz-3"]),  # reused: conflicts and replays
        st.uuids().map(str),
        st.text(any_char, max_size=64),
        long_text(min_size=60, max_size=70),
    )


def _uuid_notations(value: uuid.UUID, style: int) -> str:
    return [
        str(value),
        str(value).upper(),
        value.hex,
        "{" + str(value) + "}",
        "urn:uuid:" + str(value),
        str(value)[:-1],
        str(value) + "0",
    ][style]


def references(seen: list[str]) -> st.SearchStrategy[str]:
    known = pool(seen).map(uuid.UUID)
    return st.one_of(
        pool(seen),
        pool(seen),
        st.builds(_uuid_notations, st.one_of(known, st.uuids()), st.integers(0, 6)),
        st.just(str(uuid.UUID(int=0))),
        st.just("f" * 8 + "-" + "f" * 4 + "-" + "f" * 4 + "-" + "f" * 4 + "-" + "f" * 12),
        st.just("\u0660" * 32),  # int(..., 16) reads non-ASCII digits
    )


codes = st.one_of(
    st.text("0123456789", min_size=6, max_size=6),
    st.text("0123456789", max_size=12),
    st.text("\u0660\u0661\u0662\uff10\uff11\U0001d7d9", min_size=6, max_size=6),
    st.just("000000"),
)

page_sizes = st.one_of(
    st.integers(-(2**31), 2**31 - 1),
    st.sampled_from([0, 1, 2, -1, 50, 499, 500, 501, 2**31 - 1, -(2**31)]),
    st.integers(-3, 600),
)


def _token(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode("utf-8", "surrogatepass")).decode().rstrip("=")


def page_tokens(seen: list[str]) -> st.SearchStrategy[str]:
    micros = st.one_of(
        st.integers(-(10**20), 10**20),
        st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999),  # years 1..9999
        st.sampled_from(
            [
                0,
                -1,
                -62_135_596_800_000_000,
                -62_135_596_800_000_001,
                253_402_300_799_999_999,
                253_402_300_800_000_000,
            ]
        ),
    )
    crafted = st.builds(
        lambda m, ref, sep: _token(f"{m}{sep}{ref}"),
        st.one_of(micros.map(str), short_text),
        st.one_of(st.uuids().map(lambda u: u.hex), st.uuids().map(str), short_text),
        st.sampled_from([":", "::", ""]),
    )
    raw_b64 = st.binary(max_size=64).map(lambda b: base64.urlsafe_b64encode(b).decode())
    return st.one_of(pool(seen), crafted, crafted, raw_b64, st.just(""))


# -- INN -----------------------------------------------------------------------------------

_CYRILLIC = "АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯабвгдеёжзийклмнопрстуфхцчшщъыьэюя"


def _years_later(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


names = st.one_of(
    st.text(_CYRILLIC, min_size=1, max_size=20),
    st.text(_CYRILLIC + " -", min_size=1, max_size=60),
    st.sampled_from(["Иванов", "Иван", "Петрова", "Салтыков-Щедрин", "ибн Хаттаб", "ёжиков"]),
)
middle_names = st.one_of(st.just(""), names)
document_serials = st.one_of(
    st.text("0123456789", min_size=4, max_size=4),
    st.builds(
        lambda a, b: f"{a} {b}",
        st.text("0123456789", min_size=2, max_size=2),
        st.text("0123456789", min_size=2, max_size=2),
    ),
    st.just("4508"),
)
document_numbers = st.one_of(
    st.text("0123456789", min_size=6, max_size=6),
    st.sampled_from(list(SCRIPTED_DOCUMENTS)),  # found, slow, not found…
)


iso_dates = st.one_of(
    st.dates().map(lambda d: d.isoformat()),
    st.sampled_from(
        ["1980-05-17", "2005-06-01", "2000-02-29", "1900-01-01", "1899-12-31", "9999-12-31"]
    ),
)


@st.composite
def person_dates(draw: st.DrawFn, today: date) -> tuple[str, str]:
    """A birth date in the past and a passport issued at 14 or later, not in the future, or
    (now and then) any real dates."""
    if draw(st.integers(0, 4)) == 0:
        return draw(iso_dates), draw(iso_dates)
    born = draw(st.dates(min_value=date(1900, 1, 1), max_value=_years_later(today, -14)))
    issued = draw(st.dates(min_value=_years_later(born, 14), max_value=today))
    return born.isoformat(), issued.isoformat()


bad_dates = st.one_of(
    st.sampled_from(["2001-02-29", "0000-01-01", "2020-13-01", "20200101", "01.02.2003"]),
    st.builds(
        lambda y, m, d: f"{y:04d}-{m:02d}-{d:02d}",
        st.integers(0, 9999),
        st.integers(0, 99),
        st.integers(0, 99),
    ),
)


def inn_request_ids(seen: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        fresh_ids,
        pool(seen),
        st.sampled_from(["fz-1", "fz-2", "fz-3", "fz-4"]),  # reused: joins and conflicts
        st.uuids().map(lambda u: u.hex),
        st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=64),
        st.text(any_char, min_size=1, max_size=64),
        long_text(min_size=60, max_size=70),
    )


# -- whole requests ------------------------------------------------------------------------


def _broken_page_size(_valid: st.SearchStrategy[int]) -> st.SearchStrategy[int]:
    return st.integers(-(2**31), 2**31 - 1)


def _broken_date(_valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(bad_dates, mixed(iso_dates))


#: How a field is broken when ``mixed`` does not fit its type or misses its usual mistakes.
_BROKEN: dict[str, Callable[[st.SearchStrategy[Any]], st.SearchStrategy[Any]]] = {
    "page_size": _broken_page_size,
    "birth_date": _broken_date,
    "document_date": _broken_date,
}


def _valid_fields(fuzz: FuzzServer, name: str) -> dict[str, st.SearchStrategy[Any]]:
    match name:
        case "CreateAgreement":
            return {
                "id_hash": id_hashes(fuzz.id_hashes),
                "phone": phones(fuzz.phones),
                "request_id": agreement_request_ids(),
            }
        case "SendOtp" | "GetAgreement" | "RevokeAgreement":
            return {"reference": references(fuzz.references)}
        case "ConfirmOtp":
            return {"reference": references(fuzz.references), "code": codes}
        case "ListAgreements":
            return {
                "id_hash": id_hashes(fuzz.id_hashes),
                "page_size": page_sizes,
                "page_token": page_tokens(fuzz.page_tokens),
            }
        case "FindInn":
            return {
                "request_id": inn_request_ids(fuzz.inn_request_ids),
                "last_name": names,
                "first_name": names,
                "middle_name": middle_names,
                "birth_date": st.just("dates below"),
                "document_serial": document_serials,
                "document_number": document_numbers,
                "document_date": st.just("dates below"),
            }
        case "GetInnLookup":
            return {"request_id": inn_request_ids(fuzz.inn_request_ids)}
    raise AssertionError(name)


@st.composite
def requests(
    draw: st.DrawFn, fuzz: FuzzServer, name: str, *, broken: bool = True
) -> dict[str, Any]:
    """The fields of a request to RPC ``name``: valid-looking, except (with ``broken``) for
    the fields drawn as broken, which get garbage, a mutated valid value, or by chance a valid
    one after all."""
    today = datetime.now(UTC).date()
    valid = _valid_fields(fuzz, name)
    if name == "FindInn":
        born, issued = draw(person_dates(today))
        valid["birth_date"], valid["document_date"] = st.just(born), st.just(issued)
    bad = draw(broken_fields(sorted(valid))) if broken else frozenset()
    values = {
        field: draw(_BROKEN.get(field, mixed)(strategy) if field in bad else strategy)
        for field, strategy in valid.items()
    }
    if name == "ConfirmOtp" and draw(st.booleans()):
        # the code the fake gateway delivered last, so that confirming can succeed
        values["code"] = fuzz.delivered_code(values["reference"]) or values["code"]
    return values
