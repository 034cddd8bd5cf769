"""Malformed FindInn requests: INVALID_ARGUMENT, reason INVALID_REQUEST, one BadRequest
violation per bad field, nothing stored and nothing sent upstream; names are normalised."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import grpc
import pytest

from onboarding.inn.v1 import inn_pb2 as pb
from tests.conftest import RunningServer
from tests.e2e.helpers import ErrorDetails
from tests.e2e.test_inn_helpers import (
    FOUND,
    error_of,
    find,
    find_request,
    number,
    person,
    request_id,
)
from tests.fakes.nalog import found, valid_inn


def _today() -> date:
    return datetime.now(UTC).date()


def _in_days(days: int) -> str:
    return (_today() + timedelta(days=days)).isoformat()


# Dates relative to today are worked out when the test runs, not when it is collected: a run
# that crosses midnight would otherwise send yesterday's "today".
BAD_FIELDS: dict[str, tuple[str, str | Callable[[], str]]] = {
    "latin last name": ("last_name", "Ivanov"),
    "latin first name": ("first_name", "Ivan"),
    "mixed latin middle name": ("middle_name", "Иванoвич"),  # a Latin "o" inside
    "digits in last name": ("last_name", "Иванов2"),
    "digits in first name": ("first_name", "1ван"),
    "empty last name": ("last_name", ""),
    "blank first name": ("first_name", "   "),
    "punctuation in a name": ("last_name", "Иванов!"),
    "name too long": ("last_name", "Я" * 61),
    "30 February": ("birth_date", "1990-02-30"),
    "birth date not ISO": ("birth_date", "17.05.1990"),
    "empty birth date": ("birth_date", ""),
    "birth date in the future": ("birth_date", lambda: _in_days(30)),
    "birth date today": ("birth_date", lambda: _in_days(0)),
    "document date in the future": ("document_date", lambda: _in_days(1)),
    "document date not a date": ("document_date", "2010-13-01"),
    "serial with a letter": ("document_serial", "45A8"),
    "serial of 3 digits": ("document_serial", "450"),
    "serial of 5 digits": ("document_serial", "45081"),
    "number of 5 digits": ("document_number", "12345"),
    "number of 7 digits": ("document_number", "1234567"),
    "number with a letter": ("document_number", "12345Б"),
    "number of non-ASCII digits": ("document_number", "١٢٣٤٥٦"),
}


def _violations(error: ErrorDetails) -> list[tuple[str, str]]:
    assert error.bad_request is not None
    return [(v.field, v.description) for v in error.bad_request.field_violations]


async def _assert_one_violation(
    server: RunningServer, data: dict[str, str], rid: str, field: str
) -> None:
    doc = data["document_number"]
    error = await error_of(find(server, data, rid))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_REQUEST"
    violations = _violations(error)
    assert [f for f, _ in violations] == [field], violations
    assert all(description for _, description in violations)
    if len(doc) == 6 and doc.isdigit():
        assert doc not in error.message
    assert server.nalog.finds[doc[-6:]] == 0


@pytest.mark.parametrize("case", list(BAD_FIELDS), ids=list(BAD_FIELDS))
async def test_a_bad_field_is_one_violation_and_nothing_goes_upstream(
    server: RunningServer, case: str
) -> None:
    field, value = BAD_FIELDS[case]
    doc = number()
    data = person(doc, **{field: value() if callable(value) else value})

    await _assert_one_violation(server, data, request_id(), field)
    assert server.nalog.finds[doc] == 0


async def test_a_person_younger_than_14_on_the_document_date_is_refused(
    server: RunningServer,
) -> None:
    doc = number()
    data = person(doc, birth_date="2000-05-17", document_date="2014-05-16")

    await _assert_one_violation(server, data, request_id(), "document_date")


async def test_a_person_exactly_14_on_the_document_date_is_accepted(
    server: RunningServer,
) -> None:
    doc = number()
    server.nalog.script(doc, found(valid_inn()))

    lookup = await find(server, person(doc, birth_date="2000-05-17", document_date="2014-05-17"))

    assert lookup.status == FOUND


@pytest.mark.parametrize("rid", ["", "r" * 65], ids=["empty", "65 chars"])
async def test_a_bad_request_id_is_one_violation(server: RunningServer, rid: str) -> None:
    doc = number()

    await _assert_one_violation(server, person(doc), rid, "request_id")


async def test_a_request_id_of_64_chars_is_accepted(server: RunningServer) -> None:
    doc = number()
    server.nalog.script(doc, found(valid_inn()))
    rid = "r" * 60 + number()[:4]

    lookup = await find(server, person(doc), rid)

    assert (lookup.request_id, lookup.status) == (rid, FOUND)


async def test_several_bad_fields_give_that_many_violations(server: RunningServer) -> None:
    doc = number()
    data = person(
        doc,
        last_name="Ivanov",
        first_name="",
        birth_date="1990-02-30",
        document_serial="45A8",
        document_date=_in_days(1),
    )
    data["document_number"] = "12345"

    error = await error_of(find(server, data, ""))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_REQUEST"
    fields = sorted(f for f, _ in _violations(error))
    assert fields == sorted(
        [
            "request_id",
            "last_name",
            "first_name",
            "birth_date",
            "document_serial",
            "document_number",
            "document_date",
        ]
    )
    assert server.nalog.finds[doc] == 0


async def test_an_invalid_request_stores_no_lookup(server: RunningServer) -> None:
    rid = request_id()
    await error_of(find(server, person(number(), last_name="Ivanov"), rid))

    error = await error_of(server.inn.GetInnLookup(pb.GetInnLookupRequest(request_id=rid)))

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "LOOKUP_NOT_FOUND"


async def test_an_empty_middle_name_is_fine_and_sent_as_opt_otch(server: RunningServer) -> None:
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, found(inn))

    lookup = await find(server, person(doc, middle_name=""))

    assert (lookup.status, lookup.inn) == (FOUND, inn)
    (search,) = [r for r in server.nalog.requests if r.form.get("docno", "").endswith(doc)]
    assert search.form["otch"] == ""
    assert search.form["opt_otch"] == "1"
    assert server.nalog.protocol_errors == []


async def test_names_are_normalised_before_they_are_sent(server: RunningServer) -> None:
    doc = number()
    server.nalog.script(doc, found(valid_inn()))

    await find(
        server,
        person(
            doc,
            last_name="  иВАНОВА  -  петрова ",
            first_name="мАРИЯ",
            middle_name=" иВАНОВНА",
            document_serial="45 08",
        ),
    )

    (search,) = [r for r in server.nalog.requests if r.form.get("docno", "").endswith(doc)]
    assert (search.form["fam"], search.form["nam"], search.form["otch"]) == (
        "Иванова-Петрова",
        "Мария",
        "Ивановна",
    )
    assert search.form["docno"] == f"45 08 {doc}"
    assert server.nalog.protocol_errors == []


async def test_a_differently_written_name_matches_the_cache(server: RunningServer) -> None:
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, found(inn))
    await find(server, person(doc, last_name="Иванов"))

    again = await find(server, person(doc, last_name="  иВАНОВ "))

    assert (again.status, again.inn, again.cached) == (FOUND, inn, True)
    assert server.nalog.finds[doc] == 1


async def test_a_request_is_not_validated_by_the_upstream_first(server: RunningServer) -> None:
    """The request fields are all checked before anything is stored: the same request_id can
    be used again once the request is fixed."""
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, found(inn))
    rid = request_id()
    await error_of(server.inn.FindInn(find_request(rid, person(doc, birth_date="1990-02-30"))))

    lookup = await find(server, person(doc), rid)

    assert (lookup.request_id, lookup.status, lookup.inn) == (rid, FOUND, inn)
    assert server.nalog.finds[doc] == 1
