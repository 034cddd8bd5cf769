"""RevokeAgreement end to end: pending and confirmed agreements, repeats, what REVOKED forbids."""

from __future__ import annotations

import grpc

from onboarding.agreement.v1 import agreement_pb2 as pb
from tests.conftest import RunningServer, random_phone
from tests.e2e.test_agreement_support import (
    assert_error,
    code_for,
    confirm,
    create,
    error_of,
    get,
    revoke,
    send_otp,
)


async def _pending(server: RunningServer) -> tuple[pb.Agreement, str]:
    """A pending agreement whose first code has been delivered, and that code."""
    phone = random_phone()
    agreement = await create(server, phone=phone)
    return agreement, await code_for(server, phone)


async def test_revoking_a_pending_agreement_makes_it_revoked(server: RunningServer) -> None:
    agreement, _ = await _pending(server)

    revoked = await revoke(server, agreement.reference)

    assert revoked.status == pb.AGREEMENT_STATUS_REVOKED
    assert revoked.HasField("revoke_time")
    assert not revoked.HasField("confirm_time")
    assert revoked.revoke_time.ToDatetime() >= agreement.create_time.ToDatetime()
    assert revoked.otp_sends_remaining == 0
    assert not revoked.HasField("otp_resend_time")
    fetched = await get(server, agreement.reference)
    assert fetched.status == pb.AGREEMENT_STATUS_REVOKED
    assert fetched.revoke_time == revoked.revoke_time


async def test_revoking_again_answers_ok_and_changes_nothing(server: RunningServer) -> None:
    agreement, _ = await _pending(server)
    first = await revoke(server, agreement.reference)

    again = await revoke(server, agreement.reference)

    assert again == first


async def test_the_right_code_on_a_revoked_agreement_is_refused_as_not_pending(
    server: RunningServer,
) -> None:
    agreement, code = await _pending(server)
    await revoke(server, agreement.reference)

    error = await error_of(confirm(server, agreement.reference, code))

    assert_error(error, grpc.StatusCode.FAILED_PRECONDITION, "AGREEMENT_NOT_PENDING")
    assert error.metadata["status"] == "AGREEMENT_STATUS_REVOKED"
    assert error.trailers["status"] == "AGREEMENT_STATUS_REVOKED"
    assert (await get(server, agreement.reference)).status == pb.AGREEMENT_STATUS_REVOKED


async def test_send_otp_on_a_revoked_agreement_is_refused_as_not_pending(
    server: RunningServer,
) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)
    await code_for(server, phone)
    await revoke(server, agreement.reference)

    error = await error_of(send_otp(server, agreement.reference))

    assert_error(error, grpc.StatusCode.FAILED_PRECONDITION, "AGREEMENT_NOT_PENDING")
    assert error.metadata["status"] == "AGREEMENT_STATUS_REVOKED"
    assert len(server.gateway.codes_for(phone)) == 1


async def test_revoking_a_confirmed_agreement_keeps_its_confirm_time(
    server: RunningServer,
) -> None:
    agreement, code = await _pending(server)
    confirmed = await confirm(server, agreement.reference, code)

    revoked = await revoke(server, agreement.reference)

    assert revoked.status == pb.AGREEMENT_STATUS_REVOKED
    assert revoked.confirm_time == confirmed.confirm_time
    assert revoked.HasField("revoke_time")
    assert revoked.revoke_time.ToDatetime() >= confirmed.confirm_time.ToDatetime()
    assert (await get(server, agreement.reference)).confirm_time == confirmed.confirm_time


async def test_the_code_that_confirmed_is_refused_after_revocation(
    server: RunningServer,
) -> None:
    agreement, code = await _pending(server)
    await confirm(server, agreement.reference, code)
    await revoke(server, agreement.reference)

    error = await error_of(confirm(server, agreement.reference, code))

    assert_error(error, grpc.StatusCode.FAILED_PRECONDITION, "AGREEMENT_NOT_PENDING")
    assert error.metadata["status"] == "AGREEMENT_STATUS_REVOKED"
