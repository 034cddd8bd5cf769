"""A call whose caller's deadline passes while it waits is stopped there, and counted and
logged as DEADLINE_EXCEEDED, not as a caller that went away."""

from __future__ import annotations

import logging
from uuid import UUID

import grpc
import pytest
from sqlalchemy import text

from onboarding.agreement.v1 import agreement_pb2 as pb
from tests.conftest import RunningServer, eventually, random_phone
from tests.e2e.test_agreement_support import code_for, create, other_code


# A row lock held by another connection makes the call wait; SQLite's lock would stop the loop.
@pytest.mark.parametrize("db_kind", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_call_that_outlives_its_deadline_is_logged_as_deadline_exceeded(
    server: RunningServer, db_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="onboarding.rpc")
    phone = random_phone()
    agreement = await create(server, phone=phone)
    wrong = other_code(await code_for(server, phone))
    async with server.container.engine.begin() as holder:
        await holder.execute(
            text("SELECT 1 FROM agreements WHERE reference = :r FOR UPDATE"),
            {"r": UUID(agreement.reference)},
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await server.agreements.ConfirmOtp(
                pb.ConfirmOtpRequest(reference=agreement.reference, code=wrong), timeout=0.5
            )

        def logged() -> list[str]:
            return [
                getattr(r, "grpc_code", "")
                for r in caplog.records
                if getattr(r, "rpc_method", "").endswith("/ConfirmOtp")
            ]

        async def logged_once() -> bool:
            return len(logged()) == 1

        # Still holding the lock: the call must end by itself, not when the lock goes.
        await eventually(logged_once)
    after = await server.agreements.GetAgreement(
        pb.GetAgreementRequest(reference=agreement.reference), timeout=5
    )

    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert logged() == ["DEADLINE_EXCEEDED"]
    # Its wrong code never reached the rule: no try was used after the deadline.
    assert after.agreement.otp_attempts_remaining == agreement.otp_attempts_remaining
