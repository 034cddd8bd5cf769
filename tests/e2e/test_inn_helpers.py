"""Helpers shared by the InnService end-to-end tests (this module holds no tests itself).

Every test person gets a fresh random document number: the session database is shared by all
tests of one database kind, and answers are cached per person.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

import grpc

from onboarding.inn.v1 import inn_pb2 as pb
from tests.conftest import RunningServer, eventually
from tests.e2e.helpers import ErrorDetails, details_of

FOUND = pb.INN_LOOKUP_STATUS_FOUND
NOT_FOUND = pb.INN_LOOKUP_STATUS_NOT_FOUND
PENDING = pb.INN_LOOKUP_STATUS_PENDING
FAILED = pb.INN_LOOKUP_STATUS_FAILED

_CYRILLIC = "абвгдежзиклмнопрстуфхцчшщэюя"


def number() -> str:
    """A random 6-digit passport number (the fake scripts people by it)."""
    return f"{secrets.randbelow(10**6):06d}"


def request_id() -> str:
    return str(uuid.uuid4())


def cyrillic_name(length: int = 9) -> str:
    """A random Cyrillic name that no other test (and no other table) holds."""
    letters = "".join(secrets.choice(_CYRILLIC) for _ in range(length))
    return letters.capitalize()


def person(doc: str | None = None, **overrides: str) -> dict[str, str]:
    """The personal fields of a FindInnRequest; ``doc`` is the document number."""
    fields = {
        "last_name": "Иванов",
        "first_name": "Иван",
        "middle_name": "Иванович",
        "birth_date": "1990-05-17",
        "document_serial": "4508",
        "document_number": doc if doc is not None else number(),
        "document_date": "2010-06-01",
    }
    fields.update(overrides)
    return fields


def find_request(rid: str, data: dict[str, str]) -> pb.FindInnRequest:
    return pb.FindInnRequest(request_id=rid, **data)


async def find(
    server: RunningServer,
    data: dict[str, str],
    rid: str | None = None,
    *,
    timeout: float | None = 30.0,
) -> pb.InnLookup:
    """FindInn through the real channel; the lookup it answers."""
    answer = await server.inn.FindInn(
        find_request(request_id() if rid is None else rid, data), timeout=timeout
    )
    return answer.lookup


async def get(server: RunningServer, rid: str) -> pb.InnLookup:
    answer = await server.inn.GetInnLookup(pb.GetInnLookupRequest(request_id=rid), timeout=10)
    return answer.lookup


async def wait_done(server: RunningServer, rid: str, timeout: float = 20.0) -> pb.InnLookup:
    """Polls GetInnLookup until the lookup is no longer PENDING; returns it."""
    last: list[pb.InnLookup] = []

    async def done() -> bool:
        last[:] = [await get(server, rid)]
        return last[0].status != PENDING

    await eventually(done, timeout=timeout)
    return last[0]


async def error_of(call: Any) -> ErrorDetails:
    """The rich details of the error a call must fail with."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return details_of(error)
    raise AssertionError("the call succeeded but must fail")


def finds_for(server: RunningServer, doc: str) -> list[float]:
    """The monotonic times at which the fake received a search for this document number."""
    return [
        r.received_at
        for r in server.nalog.requests
        if r.path == "/inn-new-proc.do" and r.form.get("docno", "").endswith(doc)
    ]


async def settle(seconds: float) -> None:
    await asyncio.sleep(seconds)
