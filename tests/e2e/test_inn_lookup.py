"""FindInn and GetInnLookup when service.nalog.ru answers: FOUND and NOT_FOUND, the cache of
answers per person, request_id as the name of one lookup, and the protocol the fake checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc

from onboarding.inn.v1 import inn_pb2 as pb
from tests.conftest import RunningServer, StartServer
from tests.e2e.test_inn_helpers import (
    FOUND,
    NOT_FOUND,
    error_of,
    find,
    get,
    number,
    person,
    request_id,
)
from tests.fakes.nalog import empty_inn, found, not_found, not_ready, valid_inn

# -- FOUND -----------------------------------------------------------------------------------


async def test_found_answers_the_inn_from_one_upstream_lookup(server: RunningServer) -> None:
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, found(inn))
    rid = request_id()

    lookup = await find(server, person(doc), rid)

    assert lookup.request_id == rid
    assert lookup.status == FOUND
    assert lookup.inn == inn
    assert lookup.cached is False
    assert lookup.attempts == 1
    assert lookup.elapsed_time >= 0
    assert lookup.details == ""
    assert lookup.HasField("create_time") and lookup.HasField("finish_time")
    assert lookup.finish_time.ToDatetime() >= lookup.create_time.ToDatetime()
    assert not lookup.HasField("next_attempt_time")
    assert server.nalog.finds[doc] == 1
    assert server.nalog.gets[doc] == 1
    assert server.nalog.protocol_errors == []


async def test_the_upstream_sees_the_contract_form(server: RunningServer) -> None:
    doc = number()
    server.nalog.script(doc, found(valid_inn()))

    await find(server, person(doc, birth_date="1990-05-07", document_date="2010-06-01"))

    (search,) = [r for r in server.nalog.requests if r.form.get("docno", "").endswith(doc)]
    assert search.path == "/inn-new-proc.do"
    assert search.form["c"] == "find"
    assert search.form["fam"] == "Иванов"
    assert search.form["nam"] == "Иван"
    assert search.form["otch"] == "Иванович"
    assert search.form["opt_otch"] == ""
    assert search.form["bdate"] == "07.05.1990"
    assert search.form["docdt"] == "01.06.2010"
    assert search.form["docno"] == f"45 08 {doc}"
    assert search.form["doctype"] == "21"
    assert server.nalog.protocol_errors == []


async def test_second_ask_with_a_new_request_id_is_cached_without_an_upstream_call(
    server: RunningServer,
) -> None:
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, found(inn))
    await find(server, person(doc))

    again = await find(server, person(doc))

    assert again.status == FOUND
    assert again.inn == inn
    assert again.cached is True
    assert again.attempts == 0
    assert again.elapsed_time >= 0
    assert again.HasField("finish_time")
    assert server.nalog.finds[doc] == 1
    assert server.nalog.protocol_errors == []


async def test_a_cached_answer_is_also_what_get_inn_lookup_shows(server: RunningServer) -> None:
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, found(inn))
    await find(server, person(doc))
    rid = request_id()
    await find(server, person(doc), rid)

    got = await get(server, rid)

    assert (got.status, got.inn, got.cached, got.attempts) == (FOUND, inn, True, 0)
    assert server.nalog.finds[doc] == 1


async def test_found_answers_expire_after_the_cache_ttl(start_server: StartServer) -> None:
    offset = [timedelta(0)]
    server = await start_server(clock=lambda: datetime.now(UTC) + offset[0])
    doc, first_inn, second_inn = number(), valid_inn(), valid_inn()
    server.nalog.script(doc, found(first_inn))
    assert (await find(server, person(doc))).inn == first_inn

    offset[0] = timedelta(seconds=server.settings.inn_cache_ttl_seconds + 60)
    server.nalog.script(doc, found(second_inn))
    later = await find(server, person(doc))

    assert (later.status, later.inn, later.cached, later.attempts) == (
        FOUND,
        second_inn,
        False,
        1,
    )
    assert server.nalog.finds[doc] == 2


# -- NOT_FOUND -------------------------------------------------------------------------------


async def test_not_found_is_answered_and_cached(server: RunningServer) -> None:
    doc = number()
    server.nalog.script(doc, not_found())

    first = await find(server, person(doc))
    second = await find(server, person(doc))

    assert (first.status, first.inn, first.cached, first.attempts) == (NOT_FOUND, "", False, 1)
    assert first.details != ""
    assert first.HasField("finish_time")
    assert (second.status, second.inn, second.cached, second.attempts) == (
        NOT_FOUND,
        "",
        True,
        0,
    )
    assert second.details != ""
    assert server.nalog.finds[doc] == 1
    assert server.nalog.protocol_errors == []


async def test_an_empty_inn_means_not_found(server: RunningServer) -> None:
    doc = number()
    server.nalog.script(doc, empty_inn())

    lookup = await find(server, person(doc))

    assert (lookup.status, lookup.inn, lookup.cached, lookup.attempts) == (
        NOT_FOUND,
        "",
        False,
        1,
    )
    assert (await find(server, person(doc))).cached is True
    assert server.nalog.finds[doc] == 1
    assert server.nalog.protocol_errors == []


async def test_not_found_answers_expire_after_their_own_ttl(start_server: StartServer) -> None:
    server = await start_server(inn_not_found_ttl_seconds=0)
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, not_found())
    assert (await find(server, person(doc))).status == NOT_FOUND

    server.nalog.script(doc, found(inn))
    later = await find(server, person(doc))

    assert (later.status, later.inn, later.cached) == (FOUND, inn, False)
    assert server.nalog.finds[doc] == 2


async def test_a_result_not_ready_at_first_is_polled_within_one_attempt(
    server: RunningServer,
) -> None:
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, not_ready(3, then=found(inn)))

    lookup = await find(server, person(doc))

    assert (lookup.status, lookup.inn, lookup.attempts) == (FOUND, inn, 1)
    assert server.nalog.finds[doc] == 1
    assert server.nalog.gets[doc] == 4
    assert server.nalog.protocol_errors == []


async def test_a_result_never_ready_is_retried_with_a_new_search(
    start_server: StartServer,
) -> None:
    server = await start_server(nalog_max_polls=2)
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, not_ready(5, then=found(inn)))

    lookup = await find(server, person(doc))

    assert (lookup.status, lookup.inn, lookup.attempts) == (FOUND, inn, 2)
    assert server.nalog.finds[doc] == 2
    assert server.nalog.protocol_errors == []


async def test_each_lookup_uses_a_fresh_upstream_session(server: RunningServer) -> None:
    docs = [number(), number()]
    for doc in docs:
        server.nalog.script(doc, found(valid_inn()))
        await find(server, person(doc))

    sessions = [
        r.cookies["JSESSIONID"]
        for r in server.nalog.requests
        if r.path == "/inn-new-proc.do" and r.form["docno"][-6:] in docs
    ]
    assert len(sessions) == 2 and sessions[0] != sessions[1]
    assert server.nalog.protocol_errors == []


# -- request_id ------------------------------------------------------------------------------


async def test_the_same_request_id_names_the_same_lookup(server: RunningServer) -> None:
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, found(inn))
    rid = request_id()
    first = await find(server, person(doc), rid)

    again = await find(server, person(doc), rid)

    assert again.request_id == rid
    assert (again.status, again.inn, again.cached, again.attempts) == (FOUND, inn, False, 1)
    assert again.create_time == first.create_time
    assert again.finish_time == first.finish_time
    assert server.nalog.finds[doc] == 1


async def test_the_same_request_id_with_other_personal_data_is_a_conflict(
    server: RunningServer,
) -> None:
    doc = number()
    server.nalog.script(doc, found(valid_inn()))
    rid = request_id()
    await find(server, person(doc), rid)
    other_doc = number()

    for other in (
        person(other_doc),
        person(doc, first_name="Пётр"),
        person(doc, middle_name=""),
        person(doc, birth_date="1990-05-18"),
        person(doc, document_serial="4509"),
        person(doc, document_date="2010-06-02"),
    ):
        error = await error_of(find(server, other, rid))
        assert error.code == grpc.StatusCode.ALREADY_EXISTS
        assert error.reason == "REQUEST_ID_CONFLICT"
        assert doc not in error.message and other_doc not in error.message
    assert server.nalog.finds[doc] == 1
    assert server.nalog.finds[other_doc] == 0


async def test_the_same_request_id_with_the_same_person_differently_written_joins(
    server: RunningServer,
) -> None:
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, found(inn))
    rid = request_id()
    await find(server, person(doc), rid)

    again = await find(server, person(doc, last_name="  иВАНОВ ", document_serial="45 08"), rid)

    assert (again.request_id, again.status, again.inn) == (rid, FOUND, inn)
    assert server.nalog.finds[doc] == 1


async def test_get_inn_lookup_of_an_unknown_request_id_is_not_found(
    server: RunningServer,
) -> None:
    error = await error_of(server.inn.GetInnLookup(pb.GetInnLookupRequest(request_id=request_id())))

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "LOOKUP_NOT_FOUND"


async def test_get_inn_lookup_returns_a_finished_lookup(server: RunningServer) -> None:
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, found(inn))
    rid = request_id()
    found_lookup = await find(server, person(doc), rid)

    got = await get(server, rid)

    assert got.request_id == rid
    assert (got.status, got.inn, got.cached, got.attempts) == (FOUND, inn, False, 1)
    assert got.create_time == found_lookup.create_time
    assert got.finish_time == found_lookup.finish_time
    assert got.elapsed_time == found_lookup.elapsed_time
    assert not got.HasField("next_attempt_time")
    assert server.nalog.finds[doc] == 1


async def test_get_inn_lookup_with_an_empty_request_id_is_invalid(
    server: RunningServer,
) -> None:
    error = await error_of(server.inn.GetInnLookup(pb.GetInnLookupRequest(request_id="")))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_REQUEST"
    assert error.bad_request is not None
    assert [v.field for v in error.bad_request.field_violations] == ["request_id"]
