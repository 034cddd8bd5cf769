"""InnService over gRPC: requests to domain values, lookups to messages. No rules live here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import grpc

from onboarding.domain.errors import InvalidRequest
from onboarding.domain.inn import LookupStatus, PersonData
from onboarding.entrypoints.grpc import validation as v
from onboarding.entrypoints.grpc.convert import timestamp
from onboarding.entrypoints.grpc.errors import translate_errors
from onboarding.inn.v1 import inn_pb2 as pb
from onboarding.inn.v1 import inn_pb2_grpc as pb_grpc
from onboarding.service_layer.inn_service import InnService
from onboarding.service_layer.inn_views import LookupView

#: Of the caller's deadline, this much is kept to send the answer back.
DEADLINE_MARGIN_SECONDS = 0.25

_STATUS = {
    LookupStatus.FOUND: pb.INN_LOOKUP_STATUS_FOUND,
    LookupStatus.NOT_FOUND: pb.INN_LOOKUP_STATUS_NOT_FOUND,
    LookupStatus.PENDING: pb.INN_LOOKUP_STATUS_PENDING,
    LookupStatus.FAILED: pb.INN_LOOKUP_STATUS_FAILED,
}
_request_id = v.text(min_length=1, max_length=64)


class InnServicer(pb_grpc.InnServiceServicer):
    def __init__(self, service: InnService, wait_seconds: float, today: Callable[[], date]) -> None:
        self._service = service
        self._wait_seconds = wait_seconds
        self._today = today

    @translate_errors
    async def FindInn(
        self, request: pb.FindInnRequest, context: grpc.aio.ServicerContext
    ) -> pb.FindInnResponse:
        fields = v.Fields()
        request_id = fields.field("request_id", _request_id, request.request_id)
        try:
            person = PersonData.parse(
                last_name=request.last_name,
                first_name=request.first_name,
                middle_name=request.middle_name,
                birth_date=request.birth_date,
                document_serial=request.document_serial,
                document_number=request.document_number,
                document_date=request.document_date,
                today=self._today(),
            )
        except InvalidRequest as error:
            fields.violations.extend(error.violations)
        fields.check()  # raises with every bad field, of the request id and of the person
        view = await self._service.find(request_id, person, self._wait_for(context))
        return pb.FindInnResponse(lookup=to_message(view))

    @translate_errors
    async def GetInnLookup(
        self, request: pb.GetInnLookupRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetInnLookupResponse:
        fields = v.Fields()
        request_id = fields.field("request_id", _request_id, request.request_id)
        fields.check()
        return pb.GetInnLookupResponse(lookup=to_message(await self._service.get(request_id)))

    def _wait_for(self, context: grpc.aio.ServicerContext) -> float:
        """The configured wait, cut short so the answer still beats the caller's deadline."""
        remaining = context.time_remaining()
        if remaining is None:
            return self._wait_seconds
        return max(0.0, min(self._wait_seconds, remaining - DEADLINE_MARGIN_SECONDS))


def to_message(view: LookupView) -> pb.InnLookup:
    return pb.InnLookup(
        request_id=view.request_id,
        status=_STATUS[view.status],
        inn=view.inn or "",
        cached=view.cached,
        details=view.details,
        elapsed_time=view.elapsed_seconds,
        attempts=view.attempts,
        next_attempt_time=timestamp(view.next_attempt_time),
        create_time=timestamp(view.create_time),
        finish_time=timestamp(view.finish_time),
    )
