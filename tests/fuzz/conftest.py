"""One real server per test module and database kind, for property-based fuzzing.

Hypothesis runs many examples inside one test function, so the server cannot be a
function-scoped fixture: ``fuzz_server`` is module-scoped (on the session event loop, like every
async test here) and runs on a fresh, migrated database of its own, so a run depends only on
Hypothesis's (derandomized) choices. It is seeded with agreements in every state, a client with
several pages of agreements, and finished INN lookups, so the strategies can mix real
references, page tokens and request ids with garbage.

After every test, ``_still_serving`` checks that the server still answers health SERVING and a
valid CreateAgreement.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from onboarding import bootstrap
from onboarding.adapters.db import migrate
from onboarding.agreement.v1 import agreement_pb2 as apb
from onboarding.agreement.v1 import agreement_pb2_grpc
from onboarding.entrypoints.grpc.server import OnboardingServer
from onboarding.inn.v1 import inn_pb2 as ipb
from onboarding.inn.v1 import inn_pb2_grpc
from tests.conftest import (
    Databases,
    RunningServer,
    eventually,
    random_client,
    random_phone,
    test_settings,
)
from tests.fakes.nalog import (
    VALID_INN,
    FakeNalog,
    bad_check_digits,
    found,
    not_found,
    not_ready,
    rejected,
    slow,
    upstream_error,
)
from tests.fakes.sms_gateway import FakeSmsGateway

FUZZ_DB_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

#: FindInn: the server waits this long before answering PENDING; the client's deadline.
INN_WAIT_SECONDS = 0.3
FIND_INN_TIMEOUT = 2.0

#: Document numbers the fake nalog.ru has scripts for (others get its default, NOT_FOUND).
FOUND_DOCUMENT = "654321"
SCRIPTED_DOCUMENTS = {
    FOUND_DOCUMENT: found(VALID_INN),
    "222222": slow(1.0, then=found(VALID_INN)),  # once: a lookup left PENDING
    "333333": rejected(("docno",)),  # FAILED, the upstream's message echoes the value
    "444444": not_ready(3, then=found(VALID_INN)),
    "555555": bad_check_digits(),  # an upstream fault: retried, then FAILED
    "666666": upstream_error(2, then=not_found()),
}

SEED_PERSON = {
    "last_name": "Иванов",
    "first_name": "Иван",
    "middle_name": "Иванович",
    "birth_date": "1980-05-17",
    "document_serial": "4508",
    "document_number": FOUND_DOCUMENT,
    "document_date": "2005-06-01",
}


@dataclass
class FuzzServer:
    running: RunningServer
    kind: str
    references: list[str] = field(default_factory=list)  # every state: pending, confirmed…
    phones: list[str] = field(default_factory=list)  # valid phones the seeds used
    id_hashes: list[str] = field(default_factory=list)  # clients with agreements
    page_tokens: list[str] = field(default_factory=list)  # real next_page_tokens
    inn_request_ids: list[str] = field(default_factory=list)  # finished lookups
    #: The E.164 phone of each agreement created (by the seeds or the fuzzing), to find the
    #: codes the fake gateway delivered.
    phone_by_reference: dict[str, str] = field(default_factory=dict)

    def remember(self, reference: str, e164: str) -> None:
        if reference not in self.phone_by_reference:
            self.phone_by_reference[reference] = e164
            self.references.append(reference)

    def delivered_code(self, reference: str) -> str | None:
        phone = self.phone_by_reference.get(reference)
        codes = self.running.gateway.codes_for(phone) if phone else []
        return codes[-1] if codes else None

    def __repr__(self) -> str:  # shown in every falsifying example: keep it short
        return f"FuzzServer({self.kind})"

    @property
    def channel(self) -> grpc.aio.Channel:
        return self.running.channel

    @property
    def agreements(self) -> agreement_pb2_grpc.AgreementServiceStub:
        return self.running.agreements

    @property
    def inn(self) -> inn_pb2_grpc.InnServiceStub:
        return self.running.inn


async def _code_for(gateway: FakeSmsGateway, phone: str) -> str:
    async def delivered() -> bool:
        return bool(gateway.codes_for(phone))

    await eventually(delivered, timeout=10)
    return gateway.codes_for(phone)[-1]


async def _seed(fuzz: FuzzServer, gateway: FakeSmsGateway) -> None:
    stub = fuzz.agreements
    client = random_client()
    fuzz.id_hashes.append(client)
    # pending, with a code sent
    for _ in range(3):
        phone = random_phone()
        fuzz.phones.append(phone)
        created = await stub.CreateAgreement(
            apb.CreateAgreementRequest(id_hash=client, phone=phone, request_id=uuid.uuid4().hex)
        )
        fuzz.remember(created.agreement.reference, phone)
    # confirmed
    phone = random_phone()
    fuzz.phones.append(phone)
    created = await stub.CreateAgreement(apb.CreateAgreementRequest(id_hash=client, phone=phone))
    reference = created.agreement.reference
    code = await _code_for(gateway, phone)
    await stub.ConfirmOtp(apb.ConfirmOtpRequest(reference=reference, code=code))
    fuzz.remember(reference, phone)
    # revoked
    phone = random_phone()
    fuzz.phones.append(phone)
    created = await stub.CreateAgreement(apb.CreateAgreementRequest(id_hash=client, phone=phone))
    await stub.RevokeAgreement(apb.RevokeAgreementRequest(reference=created.agreement.reference))
    fuzz.remember(created.agreement.reference, phone)
    # page tokens of that client
    token = ""
    while True:
        page = await stub.ListAgreements(
            apb.ListAgreementsRequest(id_hash=client, page_size=2, page_token=token)
        )
        if not page.next_page_token:
            break
        token = page.next_page_token
        fuzz.page_tokens.append(token)
    # finished INN lookups: one FOUND, one NOT_FOUND
    for number, behaviour in SCRIPTED_DOCUMENTS.items():
        fuzz.running.nalog.script(number, behaviour)
    for request_id, number in (("seed-found", FOUND_DOCUMENT), ("seed-not-found", "111111")):
        answer = await fuzz.inn.FindInn(
            ipb.FindInnRequest(request_id=request_id, **{**SEED_PERSON, "document_number": number}),
            timeout=10,
        )
        assert answer.lookup.status in (
            ipb.INN_LOOKUP_STATUS_FOUND,
            ipb.INN_LOOKUP_STATUS_NOT_FOUND,
        ), answer
        fuzz.inn_request_ids.append(request_id)


@pytest_asyncio.fixture(scope="module", params=FUZZ_DB_KINDS)
async def fuzz_server(
    request: pytest.FixtureRequest, databases: Databases
) -> AsyncIterator[FuzzServer]:
    kind: str = request.param
    url = await databases.create(kind)
    await migrate.upgrade(url)
    async with FakeSmsGateway(token="gateway-token") as gateway, FakeNalog() as nalog:
        nalog.set_default(not_found())
        settings = test_settings(
            url,
            sms_gateway_url=gateway.url,
            sms_gateway_token="gateway-token",
            nalog_base_url=nalog.base_url,
            inn_wait_seconds=INN_WAIT_SECONDS,
            health_check_interval_seconds=0.5,
        )
        container = bootstrap.build(settings)
        server = OnboardingServer(container)
        port = await server.start()
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}",
            options=[
                ("grpc.max_send_message_length", 8 * 1024 * 1024),
                ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            ],
        )
        running = RunningServer(
            server,
            channel,
            agreement_pb2_grpc.AgreementServiceStub(channel),
            inn_pb2_grpc.InnServiceStub(channel),
            gateway,
            nalog,
            settings,
        )
        fuzz = FuzzServer(running, kind)
        try:
            await _seed(fuzz, gateway)
            yield fuzz
        finally:
            await channel.close()
            await server.stop(grace=0.5)


async def assert_still_serving(fuzz: FuzzServer) -> None:
    """Health SERVING for every name, and a valid CreateAgreement answers OK."""
    health = health_pb2_grpc.HealthStub(fuzz.channel)
    for service in (
        "",
        "onboarding.agreement.v1.AgreementService",
        "onboarding.inn.v1.InnService",
    ):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
    created = await fuzz.agreements.CreateAgreement(
        apb.CreateAgreementRequest(id_hash=random_client(), phone=random_phone()), timeout=10
    )
    assert created.agreement.status == apb.AGREEMENT_STATUS_PENDING


@pytest_asyncio.fixture(autouse=True)
async def _still_serving(fuzz_server: FuzzServer) -> AsyncIterator[None]:
    """Runs once per test (not per example): the server must outlive the fuzzing."""
    yield
    await assert_still_serving(fuzz_server)
