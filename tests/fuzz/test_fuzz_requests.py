"""Every RPC, fed requests built from random field values, ends in a status the contract allows
for it (never UNKNOWN or INTERNAL) with the rich error details it promises, and never echoes a
phone number; the server still serves afterwards (conftest's ``_still_serving``).

See properties.py for the checks and strategies.py for the values. ``FUZZ_MAX_EXAMPLES`` raises
the example count for a longer local run.
"""

from __future__ import annotations

import base64
import os
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.fuzz import strategies as fs
from tests.fuzz.conftest import FuzzServer
from tests.fuzz.properties import RPCS, exercise

#: FindInn deadlines (seconds): some end before the server's 0.25 s margin, some inside a
#: transaction, some after the wait.
FIND_INN_DEADLINES = [0.01, 0.05, 0.1, 0.2, 0.26, 0.3, 0.4, 0.6, 1.0, 2.0]

#: Requests stay under the server's 1 MiB message limit (what lies beyond is grpc's).
MESSAGE_LIMIT = 1_048_576 - 1024

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_MAX_EXAMPLES", "150")),
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays reproducible
    database=None,
    suppress_health_check=[
        # fuzz_server is module-scoped; the only function-scoped fixture is the after-test
        # check that the server still serves, which must not run per example.
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)


@pytest.mark.parametrize("name", list(RPCS))
@FUZZ
@given(data=st.data())
async def test_rpc_answers_within_the_contract(
    fuzz_server: FuzzServer, name: str, data: st.DataObject
) -> None:
    rpc = RPCS[name]
    request = rpc.request(**data.draw(fs.requests(fuzz_server, name), label="request"))
    assume(request.ByteSize() <= MESSAGE_LIMIT)
    timeout = None
    if name == "FindInn":  # shorter and longer than the server's wait (INN_WAIT_SECONDS)
        timeout = data.draw(st.sampled_from(FIND_INN_DEADLINES), label="deadline")
    await exercise(fuzz_server, rpc, request, timeout)


def _token(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


_REF = "12345678-1234-5678-9abc-123456789abc"
_HEX = uuid.UUID(_REF).hex
_ASTRAL = "\U0001f600"

#: Hand-picked values the strategies reach only by luck: the edges of what each parser takes.
EDGE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("CreateAgreement", {"id_hash": _ASTRAL * 128, "phone": "+79161234567"}),
    ("CreateAgreement", {"id_hash": "a", "phone": "+79161234567", "request_id": _ASTRAL * 64}),
    ("CreateAgreement", {"id_hash": "a\x00b", "phone": "+79161234567"}),
    ("CreateAgreement", {"id_hash": "a", "phone": "+7916123456\x007"}),
    ("CreateAgreement", {"id_hash": "a", "phone": "\u200f+79161234567"}),
    ("CreateAgreement", {"id_hash": "a", "phone": "+7 916 123 45 67" + " " * 100}),
    ("CreateAgreement", {"id_hash": "a", "phone": "\uff0b\uff17\uff19\uff11\uff16" + "1234567"}),
    ("CreateAgreement", {"id_hash": "a", "phone": "+٧٩١٦١٢٣٤٥٦٧"}),
    ("CreateAgreement", {"id_hash": "a", "phone": "+0"}),
    ("CreateAgreement", {"id_hash": "a", "phone": "+" + "9" * 31}),
    ("GetAgreement", {"reference": _HEX}),
    ("GetAgreement", {"reference": "{" + _REF + "}"}),
    ("GetAgreement", {"reference": "urn:uuid:" + _REF}),
    ("GetAgreement", {"reference": "+" + _HEX[1:]}),
    ("GetAgreement", {"reference": "٠" * 32}),
    ("GetAgreement", {"reference": _REF.replace("-", "_")}),
    ("GetAgreement", {"reference": _REF + "\x00"}),
    ("RevokeAgreement", {"reference": _HEX.upper()}),
    ("SendOtp", {"reference": "0" * 32}),
    ("ConfirmOtp", {"reference": _REF, "code": "١٢٣٤٥٦"}),
    ("ConfirmOtp", {"reference": _REF, "code": "12345\x00"}),
    ("ConfirmOtp", {"reference": _REF, "code": "9" * 100_000}),
    *(
        ("ListAgreements", {"id_hash": "a", "page_token": _token(raw)})
        for raw in (
            f"-62135596800000000:{_HEX}",  # 0001-01-01
            f"-62135596800000001:{_HEX}",  # before year 1
            f"253402300799999999:{_HEX}",  # 9999-12-31 23:59:59.999999
            f"253402300800000000:{_HEX}",  # year 10000
            f"{10**400}:{_HEX}",
            f"-{10**400}:{_HEX}",
            f"١٢٣:{_HEX}",  # int() reads non-ASCII digits
            f"1_000:{_HEX}",
            f" 1 :{_HEX}",
            f"0:{_REF}",
            f"0:urn:uuid:{_REF}",
            f"0:{{{_HEX}}}",
            "0:" + "0" * 32,
            f"nan:{_HEX}",
            ":",
            "",
        )
    ),
    ("ListAgreements", {"id_hash": "a", "page_token": "===="}),
    ("ListAgreements", {"id_hash": "a", "page_token": "\x00"}),
    ("ListAgreements", {"id_hash": "a", "page_token": _ASTRAL}),
    ("ListAgreements", {"id_hash": "a", "page_size": -(2**31)}),
    ("ListAgreements", {"id_hash": "a", "page_size": 2**31 - 1}),
    ("ListAgreements", {"id_hash": _ASTRAL * 128, "page_size": 1}),
    ("GetInnLookup", {"request_id": _ASTRAL * 64}),
    ("GetInnLookup", {"request_id": "a\x00"}),
    ("GetInnLookup", {"request_id": "\u200f"}),
    (
        "FindInn",
        {
            "request_id": _ASTRAL * 64,
            "last_name": "Иванов",
            "first_name": "Иван",
            "birth_date": "1980-05-17",
            "document_serial": "45 08",
            "document_number": "777777",
            "document_date": "2000-05-17",
        },
    ),
    (
        "FindInn",
        {
            "request_id": "edge-leap",
            "last_name": " иванова  -  петрова ",
            "first_name": "ёЖ",
            "middle_name": "   ",
            "birth_date": "2000-02-29",
            "document_serial": "4508",
            "document_number": "777778",
            "document_date": "2014-02-28",
        },
    ),
    (
        "FindInn",
        {
            "request_id": "edge-nul",
            "last_name": "Иван\x00ов",
            "first_name": "Иван",
            "birth_date": "1980-05-17\x00",
            "document_serial": "45\x0008",
            "document_number": "７７７７７７",
            "document_date": "2000-05-17",
        },
    ),
]


@pytest.mark.parametrize(("name", "values"), EDGE_CASES)
async def test_edge_case(fuzz_server: FuzzServer, name: str, values: dict[str, Any]) -> None:
    rpc = RPCS[name]
    await exercise(fuzz_server, rpc, rpc.request(**values))
