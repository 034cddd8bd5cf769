"""Requests as raw bytes, sent through a generic ``channel.unary_unary`` with no serializers.

* Serialized requests with unknown fields mixed in (any field number up to 2^29-1, any wire
  type, known numbers with the wrong wire type, repeated known fields) parse, and the server
  answers them as it answers the message they parse to.
* Random bytes and corrupted serializations: what the local parser accepts must be answered per
  the contract. What it refuses our server answers itself (the observer parses requests
  tolerantly): INVALID_ARGUMENT, reason INVALID_REQUEST, with a BadRequest whose one violation
  names the whole request (the empty path). Left to itself grpc's asyncio server would answer
  UNKNOWN, "Unexpected <class 'DecodeError'>…", without our details; the test still accepts
  that shape of answer, should a method ever be served without the observer, and checks
  that the server keeps serving.
"""

from __future__ import annotations

import os

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.e2e.helpers import details_of
from tests.fuzz import strategies as fs
from tests.fuzz.conftest import FuzzServer
from tests.fuzz.properties import RPCS, Rpc, call_raw, check_outcome, outcome_label, shown

S = grpc.StatusCode

#: The bytes reach the same handlers the typed requests do, which run on both databases in
#: test_fuzz_requests.py; here SQLite is enough.
pytestmark = pytest.mark.parametrize("fuzz_server", ["sqlite"], indirect=True)

WIRE = settings(
    max_examples=int(os.environ.get("FUZZ_WIRE_MAX_EXAMPLES", "50")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_MAX_FIELD_NUMBER = 2**29 - 1


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@st.composite
def wire_field(draw: st.DrawFn) -> bytes:
    """One field as the wire carries it: any number, any of the four usual wire types."""
    number = draw(
        st.one_of(
            st.integers(1, 20),  # mostly the message's own numbers, with other wire types
            st.integers(1, _MAX_FIELD_NUMBER),
            st.sampled_from([15, 16, 2047, 2048, 19000, 19999, 536_870_911]),
        )
    )
    wire_type = draw(st.sampled_from([0, 1, 2, 5]))
    tag = varint(number << 3 | wire_type)
    if wire_type == 0:
        return tag + varint(draw(st.integers(0, 2**64 - 1)))
    if wire_type == 1:
        return tag + draw(st.binary(min_size=8, max_size=8))
    if wire_type == 5:
        return tag + draw(st.binary(min_size=4, max_size=4))
    value = draw(st.one_of(st.binary(max_size=64), st.text(fs.any_char).map(str.encode)))
    return tag + varint(len(value)) + value


def chunks(rpc: Rpc, values: dict[str, object]) -> list[bytes]:
    """The serialized request, one field at a time (fields may come in any order)."""
    return [
        rpc.request(**{name: value}).SerializeToString()
        for name, value in values.items()
        if value not in ("", 0)
    ]


async def answer_bytes(fuzz: FuzzServer, rpc: Rpc, payload: bytes) -> None:
    """Sends ``payload``; the answer must be the contract's for what it parses to, or grpc's
    own refusal when it does not parse."""
    try:
        request = rpc.request.FromString(payload)
    except DecodeError:
        request = None
    raw, error = await call_raw(fuzz, rpc, payload)
    if request is not None:
        event(outcome_label(error))
        response = rpc.response.FromString(raw) if raw is not None else None
        check_outcome(rpc, request, response, error)
        return
    assert error is not None, f"{rpc.name}: undecodable {shown(payload)} answered OK"
    code = error.code()
    has_details = any(k == "grpc-status-details-bin" for k, _ in error.trailing_metadata() or ())
    event(f"undecodable: {code.name}{' with details' if has_details else ''}")
    where = f"{rpc.name}: undecodable {shown(payload)} -> {code.name} {error.details()!r}"
    if has_details:  # the server caught it itself: then it is a request error of ours
        assert code is S.INVALID_ARGUMENT, where
        details = details_of(error)
        assert details.reason == "INVALID_REQUEST", where
        assert details.bad_request is not None, f"no BadRequest: {where}"
        [violation] = details.bad_request.field_violations
        assert (violation.field, violation.reason) == ("", "INVALID_REQUEST"), where
    else:  # grpc's own answer (asyncio server: UNKNOWN; sync server: INTERNAL)
        assert code in (S.UNKNOWN, S.INTERNAL), where
        assert "DecodeError" in (error.details() or ""), where


@pytest.mark.parametrize("name", list(RPCS))
@WIRE
@given(data=st.data())
async def test_unknown_fields_are_ignored(
    fuzz_server: FuzzServer, name: str, data: st.DataObject
) -> None:
    rpc = RPCS[name]
    parts = chunks(rpc, data.draw(fs.requests(fuzz_server, name), label="request"))
    for extra in data.draw(st.lists(wire_field(), min_size=1, max_size=6), label="unknown"):
        parts.insert(data.draw(st.integers(0, 1000), label="at") * (len(parts) + 1) // 1001, extra)
    await answer_bytes(fuzz_server, rpc, b"".join(parts))


@st.composite
def corrupted(draw: st.DrawFn, fuzz: FuzzServer, rpc: Rpc) -> bytes:
    """A valid serialization, truncated, with bytes flipped or inserted, or pure noise."""
    kind = draw(st.sampled_from(["noise", "truncate", "flip", "insert"]))
    if kind == "noise":
        return draw(st.binary(max_size=512))
    values = draw(fs.requests(fuzz, rpc.name, broken=False))
    payload = bytearray(b"".join(chunks(rpc, values)) or b"\x00")
    where = fs.position(draw, len(payload) - 1)
    if kind == "truncate":
        return bytes(payload[:where])
    if kind == "flip":
        payload[where] ^= draw(st.integers(1, 255))
        return bytes(payload)
    return bytes(payload[:where]) + draw(st.binary(min_size=1, max_size=8)) + payload[where:]


@pytest.mark.parametrize("name", list(RPCS))
@WIRE
@given(data=st.data())
async def test_random_bytes(fuzz_server: FuzzServer, name: str, data: st.DataObject) -> None:
    rpc = RPCS[name]
    await answer_bytes(fuzz_server, rpc, data.draw(corrupted(fuzz_server, rpc), label="payload"))


async def test_message_over_the_limit_is_refused_by_grpc(fuzz_server: FuzzServer) -> None:
    """Past ONBOARDING_MAX_MESSAGE_BYTES (1 MiB) grpc itself refuses the call."""
    rpc = RPCS["CreateAgreement"]
    payload = rpc.request(id_hash="x" * (1_048_576 + 1), phone="+79161234567")
    _, error = await call_raw(fuzz_server, rpc, payload.SerializeToString())
    assert error is not None and error.code() is S.RESOURCE_EXHAUSTED, error
