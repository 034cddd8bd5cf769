"""The load: client processes, each with a number of callers in a closed loop (a caller sends
its next call when the last one is answered), for a fixed time after a warm-up."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from onboarding.agreement.v1 import agreement_pb2 as apb
from onboarding.agreement.v1 import agreement_pb2_grpc as agrpc
from onboarding.inn.v1 import inn_pb2 as ipb
from onboarding.inn.v1 import inn_pb2_grpc as igrpc

PERSON = {
    "last_name": "Иванов",
    "first_name": "Иван",
    "middle_name": "Иванович",
    "birth_date": "1990-05-17",
    "document_serial": "4508",
    "document_number": "123456",
    "document_date": "2010-06-01",
}


@dataclass
class Plan:
    """What one client process does: which RPC, with what data."""

    address: str
    rpc: str
    callers: int
    warmup: float
    duration: float
    references: list[str]
    confirmations: list[tuple[str, str]]


def _call_factory(plan: Plan, channel: grpc.aio.Channel) -> Any:
    rng = random.Random()
    agreements = agrpc.AgreementServiceStub(channel)
    if plan.rpc == "Health/Check":
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        return lambda: stub.Check(request)
    if plan.rpc == "CreateAgreement":

        def create() -> Any:
            phone = f"+7916{rng.randrange(10**7):07d}"
            return agreements.CreateAgreement(
                apb.CreateAgreementRequest(id_hash=f"bench-{rng.randrange(10**6)}", phone=phone)
            )

        return create
    if plan.rpc == "GetAgreement":
        return lambda: agreements.GetAgreement(
            apb.GetAgreementRequest(reference=rng.choice(plan.references))
        )
    if plan.rpc == "ConfirmOtp":

        def confirm() -> Any:
            reference, code = rng.choice(plan.confirmations)
            return agreements.ConfirmOtp(apb.ConfirmOtpRequest(reference=reference, code=code))

        return confirm
    if plan.rpc == "FindInn (cached)":
        inn = igrpc.InnServiceStub(channel)
        return lambda: inn.FindInn(ipb.FindInnRequest(request_id=uuid.uuid4().hex, **PERSON))
    raise ValueError(plan.rpc)


async def _run(plan: Plan) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(plan.address) as channel:
        call = _call_factory(plan, channel)
        latencies: list[float] = []
        errors: dict[str, int] = {}
        answered = 0  # every call answered, warm-up included: what the server's CPU time paid for
        succeeded = 0  # of those, the ones answered OK
        loop = asyncio.get_running_loop()
        start = loop.time()
        measure_from = start + plan.warmup
        stop = measure_from + plan.duration

        async def caller() -> None:
            nonlocal answered, succeeded
            while True:
                began = time.perf_counter()
                now = loop.time()
                if now >= stop:
                    return
                try:
                    await call()
                    ok = True
                except grpc.aio.AioRpcError as error:
                    ok = False
                    if now >= measure_from:
                        errors[error.code().name] = errors.get(error.code().name, 0) + 1
                answered += 1
                succeeded += ok
                if ok and now >= measure_from and loop.time() <= stop:
                    latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(caller() for _ in range(plan.callers)))
    return {
        "latencies": latencies,
        "errors": errors,
        "duration": plan.duration,
        "answered": answered,
        "succeeded": succeeded,
    }


def run_plan(plan: Plan) -> dict[str, Any]:
    """Entry point of one client process."""
    return asyncio.run(_run(plan))
