"""Faults around delivery, against real `onboarding serve` processes on PostgreSQL: several
relays on one database, a server killed with SIGKILL, a gateway that fails for a while, a
database that goes away (refusing, or hanging) and comes back, and an INN lookup whose worker
dies mid-call.

What must hold: a code acknowledged by CreateAgreement reaches the phone at least once, and
exactly once while the gateway answers; an unreachable database answers UNAVAILABLE
(BACKEND_UNAVAILABLE) in bounded time and the server recovers by itself; no acknowledged write
is lost; leased work left by a dead process is taken over by another.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import grpc
import pytest

from onboarding.agreement.v1 import agreement_pb2 as pb
from onboarding.agreement.v1 import agreement_pb2_grpc
from onboarding.inn.v1 import inn_pb2
from tests.conftest import POSTGRES_ADMIN_URL, eventually, random_client
from tests.e2e.helpers import details_of
from tests.fakes.nalog import FakeNalog, found, slow, valid_inn
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.fakes.tcp_proxy import TcpProxy
from tests.faults.conftest import (
    NOT_SERVING,
    SERVING,
    ServerProcess,
    Servers,
    child_pids,
    outbox_statuses,
    target_of,
    through,
    unique_phones,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

T = TypeVar("T")
AgreementStub = agreement_pb2_grpc.AgreementServiceStub

#: An RPC against an unreachable database must answer within this (the database timeout is 1 s).
UNAVAILABLE_BOUND_SECONDS = 5.0


async def create(stub: AgreementStub, phone: str, timeout: float = 10.0) -> pb.Agreement:
    request = pb.CreateAgreementRequest(id_hash=random_client(), phone=phone)
    return (await stub.CreateAgreement(request, timeout=timeout)).agreement


async def get(stub: AgreementStub, reference: str, timeout: float = 10.0) -> pb.Agreement:
    request = pb.GetAgreementRequest(reference=reference)
    return (await stub.GetAgreement(request, timeout=timeout)).agreement


async def bounded(limit: int, calls: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    """Runs the calls with at most ``limit`` in flight; their results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))


async def create_all(
    stubs: list[AgreementStub], phones: list[str], in_flight: int = 20
) -> list[pb.Agreement]:
    """One agreement per phone, the stubs taking turns, at most ``in_flight`` at once."""
    calls = [
        functools.partial(create, stubs[i % len(stubs)], phone) for i, phone in enumerate(phones)
    ]
    return await bounded(in_flight, calls)


async def outbox_drained(database_url: str, total: int, timeout: float = 30.0) -> None:
    """Until all ``total`` outbox messages are SENT: nothing is left to send or retry."""
    last: dict[str, int] = {}

    async def drained() -> bool:
        nonlocal last
        last = await outbox_statuses(database_url)
        return last.get("SENT", 0) == total and sum(last.values()) == total

    try:
        await eventually(drained, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"outbox not drained: {last}, expected {total} SENT") from None


def assert_each_delivered_once(gateway: FakeSmsGateway, phones: list[str]) -> None:
    """Exactly one SMS per phone, every message_id delivered exactly once, nothing else."""
    by_id = gateway.by_message_id()
    assert gateway.duplicate_message_ids() == []
    assert set(by_id.values()) == {1}, Counter(by_id.values())
    assert len(by_id) == len(phones)
    per_phone = Counter(sms.phone for sms in gateway.delivered)
    assert set(per_phone) == set(phones)
    assert [p for p, n in per_phone.items() if n != 1] == []
    assert all(len(gateway.codes_for(phone)) == 1 for phone in phones)


# -- several relays on one database ------------------------------------------------------------


async def test_two_servers_on_one_database_deliver_500_codes_exactly_once(
    servers: Servers, gateway: FakeSmsGateway, fault_database: str
) -> None:
    a = await servers.start(fault_database, name="a")
    b = await servers.start(fault_database, name="b")
    stubs = [a.agreements, b.agreements]
    phones = unique_phones(500)

    created = await create_all(stubs, phones)
    assert len({agreement.reference for agreement in created}) == 500

    await gateway.wait_for(500, timeout=30)
    await outbox_drained(fault_database, 500)
    await asyncio.sleep(0.5)  # longer than the poll: a late duplicate would show up now
    assert_each_delivered_once(gateway, phones)

    await a.stop()
    await b.stop()


async def test_serve_with_two_workers_delivers_each_code_exactly_once(
    servers: Servers, gateway: FakeSmsGateway, fault_database: str
) -> None:
    supervisor = await servers.start(fault_database, name="workers", workers=2)
    # Several connections, so that the kernel spreads them over both workers.
    stubs = [AgreementStub(supervisor.new_channel()) for _ in range(8)]
    phones = unique_phones(100)

    await create_all(stubs, phones)

    await gateway.wait_for(100, timeout=20)
    await outbox_drained(fault_database, 100)
    await asyncio.sleep(0.5)
    assert_each_delivered_once(gateway, phones)

    await supervisor.stop()


async def test_a_worker_of_serve_workers_killed_is_restarted_and_its_codes_still_go(
    servers: Servers, gateway: FakeSmsGateway, fault_database: str
) -> None:
    gateway.delay_next(100_000, 1.0)  # messages stay in flight for a second
    supervisor = await servers.start(fault_database, name="workers", workers=2)

    async def two_workers_serving() -> bool:
        # SERVING means one worker is up; a worker killed while still starting would never
        # have logged "serving on port", and the count below would stop one short.
        return (
            len(child_pids(supervisor.process.pid)) == 2
            and supervisor.log().count("serving on port") == 2
        )

    await eventually(two_workers_serving, timeout=10)
    stubs = [AgreementStub(supervisor.new_channel()) for _ in range(8)]
    phones = unique_phones(60)
    await create_all(stubs, phones)
    await gateway.wait_for_requests(1, timeout=5)
    victim = child_pids(supervisor.process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    assert [phone for phone in phones if not gateway.codes_for(phone)], "nothing was in flight"
    gateway.reset()

    async def replaced() -> bool:
        children = child_pids(supervisor.process.pid)
        return len(children) == 2 and victim not in children

    await eventually(replaced, timeout=10)

    async def replacement_serving() -> bool:
        return supervisor.log().count("serving on port") == 3

    await eventually(replacement_serving, timeout=15)
    assert supervisor.running

    async def all_delivered() -> bool:
        return all(gateway.codes_for(phone) for phone in phones)

    await eventually(all_delivered, timeout=20)
    for phone in phones:
        assert len({sms.message_id for sms in gateway.delivered if sms.phone == phone}) == 1
    await supervisor.stop()


async def test_sigterm_while_the_workers_are_starting_still_exits_zero(
    servers: Servers, fault_database: str
) -> None:
    supervisor = await servers.start(fault_database, name="workers", workers=2, wait=False)

    async def both_forked() -> bool:
        return "worker 1 started" in supervisor.log()

    await eventually(both_forked, timeout=20)
    assert "serving on port" not in supervisor.log()  # the workers are still starting
    code = await supervisor.terminate()
    assert code == 0, supervisor.log_tail()


# -- a server killed under load ------------------------------------------------------------------


async def test_kill_9_under_load_then_a_restart_delivers_every_acknowledged_code(
    servers: Servers, gateway: FakeSmsGateway, fault_database: str
) -> None:
    # Every SMS takes the gateway a second: at the kill, messages are in flight and queued.
    gateway.delay_next(100_000, 1.0)
    a = await servers.start(fault_database, name="a")
    acknowledged: list[str] = []
    stopping = asyncio.Event()
    fresh_phones = unique_phones(5000)

    async def drive() -> None:
        while not stopping.is_set():
            phone = fresh_phones.pop()
            try:
                await create(a.agreements, phone, timeout=5)
            except grpc.aio.AioRpcError:
                if stopping.is_set():
                    return
                raise
            acknowledged.append(phone)

    drivers = [asyncio.create_task(drive()) for _ in range(10)]
    try:

        async def loaded() -> bool:
            return len(acknowledged) >= 80 and len(gateway.requests) >= 10

        await eventually(loaded, timeout=20)
        stopping.set()  # calls in flight now are cut by the kill; their errors are expected
        await a.kill()
    finally:
        stopping.set()
        await asyncio.gather(*drivers)

    assert a.process.returncode == -9
    ok = set(acknowledged)
    undelivered = {phone for phone in ok if not gateway.codes_for(phone)}
    assert undelivered, "the kill came too late: every code had been delivered"

    gateway.reset()  # answers at once from now on
    b = await servers.start(fault_database, name="b")

    async def all_delivered() -> bool:
        return all(gateway.codes_for(phone) for phone in ok)

    try:
        await eventually(all_delivered, timeout=20)
    except AssertionError:
        missing = sorted(phone for phone in ok if not gateway.codes_for(phone))
        raise AssertionError(f"{len(missing)} acknowledged phones never got a code") from None

    # At least once: a phone may get its one code twice, never two different codes.
    for phone in ok:
        assert len({sms.message_id for sms in gateway.delivered if sms.phone == phone}) == 1
    await b.stop()


# -- the gateway failing for a while -------------------------------------------------------------


async def test_a_slow_gateway_inside_the_sms_timeout_gets_each_code_once(
    servers: Servers, gateway: FakeSmsGateway, fault_database: str
) -> None:
    # The gateway answers (200) in 1.2 s, inside the SMS timeout (1.5 s). Two relays compete
    # for the message; the one sending it keeps its lease (4 s) until it has recorded SENT, so
    # the other never takes it over while it is alive.
    gateway.delay_next(1, 1.2)
    a = await servers.start(fault_database, name="a")
    await servers.start(fault_database, name="b")
    phone = unique_phones(1)[0]
    await create(a.agreements, phone)

    await gateway.wait_for(1, timeout=10)
    await outbox_drained(fault_database, 1)
    await asyncio.sleep(4.5)  # past the lease: a takeover, if any, would have sent it again
    assert gateway.duplicate_message_ids() == []
    assert len(gateway.codes_for(phone)) == 1


async def test_gateway_503_for_a_while_then_every_code_goes_exactly_once(
    servers: Servers, gateway: FakeSmsGateway, fault_database: str
) -> None:
    gateway.reject_all(503)
    server = await servers.start(fault_database, sms_max_attempts=1000)
    phones = unique_phones(50)
    created = await create_all([server.agreements], phones)

    async def all_refused_twice() -> bool:
        refused = Counter(sms.message_id for sms in gateway.requests if sms.status == 503)
        return len(refused) == 50 and min(refused.values()) >= 2

    await eventually(all_refused_twice, timeout=15)
    assert gateway.delivered == []
    queued = await get(server.agreements, created[0].reference)
    assert queued.otp_delivery_status == pb.OTP_DELIVERY_STATUS_QUEUED

    gateway.reset()
    await gateway.wait_for(50, timeout=15)
    await outbox_drained(fault_database, 50)
    await asyncio.sleep(0.5)
    assert_each_delivered_once(gateway, phones)
    for agreement in created:
        now = await get(server.agreements, agreement.reference)
        assert now.otp_delivery_status == pb.OTP_DELIVERY_STATUS_SENT
    await server.stop()


# -- the database going away ---------------------------------------------------------------------


async def assert_unavailable_in_time(call: Awaitable[object], what: str) -> float:
    """The call fails UNAVAILABLE / BACKEND_UNAVAILABLE before the bound; how long it took."""
    started = time.monotonic()
    try:
        await call
    except grpc.aio.AioRpcError as error:
        elapsed = time.monotonic() - started
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise AssertionError(f"{what} hung: no answer within the client deadline") from None
        assert error.code() == grpc.StatusCode.UNAVAILABLE, (what, error.code(), error.details())
        assert details_of(error).reason == "BACKEND_UNAVAILABLE", what
    else:
        raise AssertionError(f"{what} succeeded with the database unreachable")
    assert elapsed < UNAVAILABLE_BOUND_SECONDS, f"{what} took {elapsed:.1f}s"
    return elapsed


async def wait_health(server: ServerProcess, status: int, timeout: float) -> None:
    async def reached() -> bool:
        try:
            return await server.health(timeout=1.0) == status
        except grpc.aio.AioRpcError:
            return False

    await eventually(reached, timeout=timeout)


async def database_outage_and_recovery(
    servers: Servers,
    gateway: FakeSmsGateway,
    fault_database: str,
    cut: Callable[[TcpProxy], Awaitable[None]],
) -> None:
    async with TcpProxy(*target_of(POSTGRES_ADMIN_URL)) as proxy:
        server = await servers.start(
            through(fault_database, proxy.port),
            database_timeout_seconds=1,
            health_check_interval_seconds=0.3,
        )
        stub = server.agreements
        acknowledged: dict[str, str] = {}  # reference -> phone
        for phone in unique_phones(5):
            acknowledged[(await create(stub, phone)).reference] = phone
        some_reference = next(iter(acknowledged))

        await cut(proxy)
        # Each call a few times: the first ones meet pooled connections, later ones new ones.
        # The client deadline is far past the bound, so a hang shows as a hang.
        for round_ in range(2):
            await assert_unavailable_in_time(
                create(stub, unique_phones(1)[0], timeout=30), f"CreateAgreement #{round_}"
            )
            await assert_unavailable_in_time(
                get(stub, some_reference, timeout=30), f"GetAgreement #{round_}"
            )
        # More calls at once than the pool has connections: each still answers in time.
        burst = [create(stub, phone, timeout=30) for phone in unique_phones(15)]
        burst += [get(stub, some_reference, timeout=30) for _ in range(15)]
        elapsed = await asyncio.gather(
            *(assert_unavailable_in_time(c, f"call {i} of a burst") for i, c in enumerate(burst))
        )
        assert len(elapsed) == 30
        await wait_health(server, NOT_SERVING, timeout=UNAVAILABLE_BOUND_SECONDS)
        assert await server.health("liveness") == SERVING
        assert server.running

        await proxy.up()
        await wait_health(server, SERVING, timeout=10)
        for phone in unique_phones(5):
            acknowledged[(await create(stub, phone)).reference] = phone
        for reference, phone in acknowledged.items():
            agreement = await get(stub, reference)
            assert agreement.status == pb.AGREEMENT_STATUS_PENDING
            assert agreement.phone_masked.endswith(phone[-2:])

        async def all_delivered() -> bool:
            return all(gateway.codes_for(phone) for phone in acknowledged.values())

        await eventually(all_delivered, timeout=10)
        await server.stop()


async def test_database_down_answers_unavailable_quickly_and_the_server_recovers(
    servers: Servers, gateway: FakeSmsGateway, fault_database: str
) -> None:
    async def down(proxy: TcpProxy) -> None:
        await proxy.down()

    await database_outage_and_recovery(servers, gateway, fault_database, down)


async def test_database_blackholed_answers_unavailable_rather_than_hang(
    servers: Servers, gateway: FakeSmsGateway, fault_database: str
) -> None:
    async def blackhole(proxy: TcpProxy) -> None:
        await proxy.blackhole()

    await database_outage_and_recovery(servers, gateway, fault_database, blackhole)


# -- an INN lookup whose worker dies -----------------------------------------------------------


def person_request(request_id: str, document_number: str) -> inn_pb2.FindInnRequest:
    return inn_pb2.FindInnRequest(
        request_id=request_id,
        last_name="Петров",
        first_name="Пётр",
        middle_name="Петрович",
        birth_date="1985-03-14",
        document_serial="4510",
        document_number=document_number,
        document_date="2005-04-01",
    )


async def test_a_pending_inn_lookup_survives_the_death_of_its_worker(
    servers: Servers, fault_database: str
) -> None:
    # One fake per server, so the test knows which process holds the job.
    async with FakeNalog() as nalog_a, FakeNalog() as nalog_b:
        doc = f"{secrets.randbelow(10**6):06d}"
        inn = valid_inn()
        for fake in (nalog_a, nalog_b):
            fake.script(doc, slow(10, then=found(inn)))
        settings = {"inn_wait_seconds": 0.3, "nalog_timeout_seconds": 15}
        a = await servers.start(
            fault_database, name="a", nalog_base_url=nalog_a.base_url, **settings
        )
        b = await servers.start(
            fault_database, name="b", nalog_base_url=nalog_b.base_url, **settings
        )
        fakes = {a.name: nalog_a, b.name: nalog_b}
        request_id = str(uuid.uuid4())

        answer = await a.inn.FindInn(person_request(request_id, doc), timeout=5)
        assert answer.lookup.status == inn_pb2.INN_LOOKUP_STATUS_PENDING

        async def called() -> bool:
            return nalog_a.finds[doc] + nalog_b.finds[doc] >= 1

        await eventually(called, timeout=3)
        # A is woken by its own FindInn and almost always claims first; should B's poll have
        # won, the roles swap. Either way the holder is mid-call (slow) when it dies.
        holder, survivor = (a, b) if nalog_a.finds[doc] else (b, a)
        fakes[survivor.name].script(doc, found(inn))  # the survivor's call answers at once
        await holder.kill()
        killed = time.monotonic()

        async def finished() -> bool:
            lookup = await survivor.inn.GetInnLookup(
                inn_pb2.GetInnLookupRequest(request_id=request_id), timeout=5
            )
            return lookup.lookup.status != inn_pb2.INN_LOOKUP_STATUS_PENDING

        await eventually(finished, timeout=15)
        lookup = (
            await survivor.inn.GetInnLookup(
                inn_pb2.GetInnLookupRequest(request_id=request_id), timeout=5
            )
        ).lookup
        assert lookup.status == inn_pb2.INN_LOOKUP_STATUS_FOUND, lookup
        assert lookup.inn == inn
        assert time.monotonic() - killed < 10
        assert fakes[holder.name].finds[doc] == 1
        assert fakes[survivor.name].finds[doc] == 1
        assert nalog_a.protocol_errors == [] and nalog_b.protocol_errors == []
        await survivor.stop()
