"""JSON logs (ONBOARDING_LOG_FORMAT=json) of a real `onboarding serve` at DEBUG, through a whole
flow (create, a wrong code, the right code, an INN found) and a SIGTERM: one JSON object a line,
RPC lines that say what was called, by whom, how it ended and which request it was, and no
personal data anywhere."""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from onboarding.agreement.v1 import agreement_pb2 as pb
from onboarding.inn.v1 import inn_pb2
from tests.conftest import random_client, random_phone
from tests.e2e.test_agreement_support import national_notation, other_code
from tests.e2e.test_inn_helpers import FOUND, cyrillic_name, number
from tests.fakes.nalog import FakeNalog, found, valid_inn
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.production.conftest import LocalServer, start_local_server

pytestmark = pytest.mark.slow

TOKEN = "billing-token-0123456789"
AUTH = ("authorization", f"Bearer {TOKEN}")
RPC_LOGGER = "onboarding.rpc"
GIVEN_REQUEST_ID = f"billing-{uuid.uuid4().hex[:12]}"


@dataclass
class Flow:
    """What the test did and saw; the server's output."""

    exit_code: int = -1
    stderr: str = ""
    stdout: str = ""
    #: (full method, x-request-id the client sent or else received, grpc code name), in
    #: call order; "" when it neither sent one nor received one (a success).
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def rpc_records(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("logger") == RPC_LOGGER]


async def _call(
    flow: Flow, method: str, call: grpc.aio.UnaryUnaryCall, sent_request_id: str = ""
) -> Any:
    """Awaits the call; records its method, its request id and its code. An error answer
    carries its x-request-id; a successful one carries none."""
    answer, code = None, "OK"
    try:
        answer = await call
    except grpc.aio.AioRpcError as error:
        code = error.code().name
    metadata = await call.trailing_metadata() or ()
    received = [v for k, v in metadata if k == "x-request-id"]
    assert len(received) == (0 if code == "OK" else 1), (method, code, received)
    flow.calls.append((method, sent_request_id or next(iter(received), ""), code))
    return answer


def _birth_date() -> str:
    """A birth date of someone at least 14 on the flow's document date (2011-07-19)."""
    return f"{1960 + secrets.randbelow(35)}-{1 + secrets.randbelow(12):02d}-" + (
        f"{1 + secrets.randbelow(28):02d}"
    )


async def _run_flow(server: LocalServer, gateway: FakeSmsGateway, nalog: FakeNalog) -> Flow:
    flow = Flow()
    phone, client = random_phone(), random_client()
    created = await _call(
        flow,
        "/onboarding.agreement.v1.AgreementService/CreateAgreement",
        server.agreements.CreateAgreement(
            pb.CreateAgreementRequest(id_hash=client, phone=phone),
            metadata=(AUTH, ("x-request-id", GIVEN_REQUEST_ID)),
            timeout=10,
        ),
        sent_request_id=GIVEN_REQUEST_ID,
    )
    reference = created.agreement.reference
    await gateway.wait_for(1, timeout=10)
    code = gateway.codes_for(phone)[-1]
    wrong = other_code(code)
    for attempt in (wrong, code):
        await _call(
            flow,
            "/onboarding.agreement.v1.AgreementService/ConfirmOtp",
            server.agreements.ConfirmOtp(
                pb.ConfirmOtpRequest(reference=reference, code=attempt),
                metadata=(AUTH,),
                timeout=10,
            ),
        )
    person = {
        "last_name": cyrillic_name(),
        "first_name": cyrillic_name(),
        "middle_name": cyrillic_name(),
        "birth_date": _birth_date(),
        "document_serial": f"{1000 + secrets.randbelow(9000)}",
        "document_number": number(),
        "document_date": "2011-07-19",
    }
    nalog.script(person["document_number"], found(valid_inn()))
    lookup = await _call(
        flow,
        "/onboarding.inn.v1.InnService/FindInn",
        server.inn.FindInn(
            inn_pb2.FindInnRequest(request_id=str(uuid.uuid4()), **person),
            metadata=(AUTH,),
            timeout=15,
        ),
    )
    assert lookup.lookup.status == FOUND
    flow.secrets = {"code": code, "wrong code": wrong, "phone": phone, **person}
    return flow


@pytest.fixture(scope="module")
async def flow(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Flow]:
    async with FakeSmsGateway(token="gateway-token") as gateway, FakeNalog() as nalog:
        server = await start_local_server(
            tmp_path_factory.mktemp("json-logs") / "server",
            log_format="json",
            log_level="DEBUG",
            auth_tokens=f"billing:{TOKEN}",
            sms_gateway_url=gateway.url,
            sms_gateway_token="gateway-token",
            nalog_base_url=nalog.base_url,
        )
        try:
            result = await _run_flow(server, gateway, nalog)
            result.exit_code = await server.terminate()
        finally:
            await server.close()
        result.stderr, result.stdout = server.stderr(), server.stdout()
        yield result


def test_the_calls_answered_as_expected(flow: Flow) -> None:
    assert [code for _, _, code in flow.calls] == ["OK", "INVALID_ARGUMENT", "OK", "OK"]
    assert flow.calls[0][1] == GIVEN_REQUEST_ID
    assert flow.calls[1][1], "the wrong code's answer carried no x-request-id"


def test_the_server_exits_0_on_sigterm(flow: Flow) -> None:
    assert flow.exit_code == 0


def test_every_stderr_line_is_one_json_object(flow: Flow) -> None:
    assert flow.lines, "the server wrote nothing"
    for line in flow.lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not JSON: {line!r}")
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= record.keys(), line


def test_the_log_level_setting_is_honoured(flow: Flow) -> None:
    assert {"debug", "info"} <= {r["level"] for r in flow.records()}


def test_rpc_lines_name_method_code_and_duration(flow: Flow) -> None:
    rpc = flow.rpc_records()
    for method, _, code in flow.calls:
        matching = [r for r in rpc if r.get("rpc_method") == method and r.get("grpc_code") == code]
        assert matching, f"no RPC line for {method} {code}"
    for record in rpc:
        assert isinstance(record.get("duration_ms"), int | float), record
        assert record["duration_ms"] >= 0


def test_rpc_lines_name_the_caller_and_the_request_id(flow: Flow) -> None:
    for record in flow.rpc_records():
        if record["rpc_method"].startswith("/grpc.health"):
            continue
        assert record.get("caller") == "billing", record
        assert record.get("request_id"), record


def test_the_logged_request_id_is_the_one_the_client_sent_or_received(flow: Flow) -> None:
    by_request_id = {r.get("request_id"): r for r in flow.rpc_records()}
    for method, rid, code in flow.calls:
        if not rid:
            continue
        record = by_request_id.get(rid)
        assert record is not None, f"no RPC line with request_id {rid}"
        assert (record["rpc_method"], record["grpc_code"]) == (method, code)


def _output_without_times(flow: Flow) -> list[str]:
    """Every line of stderr (times dropped: their microseconds are digits too) and stdout."""
    texts = []
    for record in flow.records():
        record.pop("time", None)
        texts.append(json.dumps(record, ensure_ascii=False))
    texts.extend(flow.stdout.splitlines())
    return texts


def _shown(needle: str, texts: list[str]) -> list[str]:
    """The texts holding ``needle`` (digits not part of a longer number)."""
    pattern = re.compile(rf"(?<![0-9]){re.escape(needle)}(?![0-9])")
    return [text for text in texts if pattern.search(text)]


def test_no_line_shows_the_codes(flow: Flow) -> None:
    texts = _output_without_times(flow)

    assert _shown(flow.secrets["code"], texts) == []
    assert _shown(flow.secrets["wrong code"], texts) == []


def test_no_line_shows_the_phone(flow: Flow) -> None:
    phone = flow.secrets["phone"]
    texts = _output_without_times(flow)

    for form in (phone, phone.lstrip("+"), phone.removeprefix("+7"), national_notation(phone)):
        assert _shown(form, texts) == [], form


def test_no_line_shows_the_passport(flow: Flow) -> None:
    serial, number_ = flow.secrets["document_serial"], flow.secrets["document_number"]
    texts = _output_without_times(flow)

    for form in (serial, number_, f"{serial[:2]} {serial[2:]} {number_}", serial + number_):
        assert _shown(form, texts) == [], form


def test_no_line_shows_names_or_dates(flow: Flow) -> None:
    texts = _output_without_times(flow)
    birth = flow.secrets["birth_date"]
    year, month, day = birth.split("-")

    for name in ("last_name", "first_name", "middle_name"):
        assert not [t for t in texts if flow.secrets[name].lower() in t.lower()], name
    for form in (birth, f"{day}.{month}.{year}", "2011-07-19", "19.07.2011"):
        assert _shown(form, texts) == [], form
