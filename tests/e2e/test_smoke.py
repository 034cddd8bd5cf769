from onboarding.agreement.v1 import agreement_pb2 as pb
from tests.conftest import RunningServer, random_client, random_phone


async def test_create_then_confirm_with_the_code_the_gateway_received(
    server: RunningServer,
) -> None:
    phone = random_phone()
    created = await server.agreements.CreateAgreement(
        pb.CreateAgreementRequest(id_hash=random_client(), phone=phone)
    )
    [sms] = await server.gateway.wait_for(1)
    confirmed = await server.agreements.ConfirmOtp(
        pb.ConfirmOtpRequest(
            reference=created.agreement.reference, code=server.gateway.codes_for(phone)[0]
        )
    )
    assert confirmed.agreement.status == pb.AGREEMENT_STATUS_CONFIRMED
    assert sms.phone == phone
