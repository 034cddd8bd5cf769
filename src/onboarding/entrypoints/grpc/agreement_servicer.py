"""AgreementService over gRPC: requests to commands, views to messages. No rules live here."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta
from functools import partial
from uuid import UUID

import grpc

from onboarding.agreement.v1 import agreement_pb2 as pb
from onboarding.agreement.v1 import agreement_pb2_grpc as pb_grpc
from onboarding.domain.agreement import AgreementStatus, DeliveryStatus
from onboarding.domain.errors import InvalidValue
from onboarding.domain.phone import PhoneNumber
from onboarding.entrypoints.grpc import validation as v
from onboarding.entrypoints.grpc.convert import timestamp
from onboarding.entrypoints.grpc.errors import translate_errors
from onboarding.service_layer import commands
from onboarding.service_layer.agreement_service import AgreementService
from onboarding.service_layer.views import AgreementView, PageCursor

_PAGE_TOKEN = re.compile(r"([0-9]{1,17}):([0-9a-f]{32})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

_STATUS = {
    AgreementStatus.PENDING: pb.AGREEMENT_STATUS_PENDING,
    AgreementStatus.CONFIRMED: pb.AGREEMENT_STATUS_CONFIRMED,
    AgreementStatus.REVOKED: pb.AGREEMENT_STATUS_REVOKED,
}
_DELIVERY = {
    None: pb.OTP_DELIVERY_STATUS_UNSPECIFIED,
    DeliveryStatus.QUEUED: pb.OTP_DELIVERY_STATUS_QUEUED,
    DeliveryStatus.SENT: pb.OTP_DELIVERY_STATUS_SENT,
    DeliveryStatus.FAILED: pb.OTP_DELIVERY_STATUS_FAILED,
}

_id_hash = v.text(min_length=1, max_length=128)
_request_id = v.optional_text(max_length=64)


class AgreementServicer(pb_grpc.AgreementServiceServicer):
    def __init__(self, service: AgreementService, phone_region: str) -> None:
        self._service = service
        self._parse_phone = partial(PhoneNumber.parse, default_region=phone_region)

    @translate_errors
    async def CreateAgreement(
        self, request: pb.CreateAgreementRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateAgreementResponse:
        fields = v.Fields()
        command = commands.CreateAgreement(
            id_hash=fields.field("id_hash", _id_hash, request.id_hash),
            phone=fields.field("phone", self._parse_phone, request.phone),
            request_id=fields.field("request_id", _request_id, request.request_id),
        )
        fields.check()
        view = await self._service.execute(command)
        return pb.CreateAgreementResponse(agreement=to_message(view))

    @translate_errors
    async def SendOtp(
        self, request: pb.SendOtpRequest, context: grpc.aio.ServicerContext
    ) -> pb.SendOtpResponse:
        view = await self._service.execute(commands.SendOtp(_reference(request.reference)))
        return pb.SendOtpResponse(agreement=to_message(view))

    @translate_errors
    async def ConfirmOtp(
        self, request: pb.ConfirmOtpRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConfirmOtpResponse:
        command = commands.ConfirmOtp(_reference(request.reference), request.code)
        view = await self._service.execute(command)
        return pb.ConfirmOtpResponse(agreement=to_message(view))

    @translate_errors
    async def GetAgreement(
        self, request: pb.GetAgreementRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAgreementResponse:
        view = await self._service.get(_reference(request.reference))
        return pb.GetAgreementResponse(agreement=to_message(view))

    @translate_errors
    async def ListAgreements(
        self, request: pb.ListAgreementsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAgreementsResponse:
        fields = v.Fields()
        id_hash = fields.field("id_hash", _id_hash, request.id_hash)
        page_size = fields.field("page_size", _page_size, str(request.page_size))
        cursor = fields.field("page_token", decode_page_token, request.page_token)
        fields.check()
        page = await self._service.list_by_client(id_hash, page_size, cursor)
        return pb.ListAgreementsResponse(
            agreements=[to_message(view) for view in page.agreements],
            next_page_token=encode_page_token(page.next_cursor) if page.next_cursor else "",
        )

    @translate_errors
    async def RevokeAgreement(
        self, request: pb.RevokeAgreementRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeAgreementResponse:
        view = await self._service.execute(commands.RevokeAgreement(_reference(request.reference)))
        return pb.RevokeAgreementResponse(agreement=to_message(view))


def _reference(raw: str) -> UUID:
    fields = v.Fields()
    reference = fields.field("reference", v.uuid, raw)
    fields.check()
    return reference


def _page_size(raw: str) -> int:
    size = int(raw)
    if size < 0:
        raise InvalidValue("must not be negative")
    return min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(cursor: PageCursor) -> str:
    micros = (cursor.create_time - _EPOCH) // timedelta(microseconds=1)
    raw = f"{micros}:{cursor.reference.hex}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> PageCursor | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        found = _PAGE_TOKEN.fullmatch(raw)
        if found is None:
            raise ValueError(raw)
        micros, reference = found.groups()
        moment = _EPOCH + timedelta(microseconds=int(micros))
        return PageCursor(moment, UUID(hex=reference))
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError, OSError):
        raise InvalidValue("is not a token this service issued") from None


def to_message(view: AgreementView) -> pb.Agreement:
    return pb.Agreement(
        reference=str(view.reference),
        id_hash=view.id_hash,
        phone_masked=view.phone_masked,
        status=_STATUS[view.status],
        create_time=timestamp(view.create_time),
        confirm_time=timestamp(view.confirm_time),
        revoke_time=timestamp(view.revoke_time),
        otp_send_time=timestamp(view.otp_send_time),
        otp_expire_time=timestamp(view.otp_expire_time),
        otp_attempts_remaining=view.otp_attempts_remaining,
        otp_resend_time=timestamp(view.otp_resend_time),
        otp_delivery_status=_DELIVERY[view.otp_delivery_status],
        otp_sends_remaining=view.otp_sends_remaining,
    )
