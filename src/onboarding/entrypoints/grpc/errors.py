"""Exceptions to canonical gRPC statuses with rich details (google.rpc.Status in the
``grpc-status-details-bin`` trailer): ErrorInfo always, BadRequest, RetryInfo or QuotaFailure
where they fit. Messages never carry a code, a passport or a whole phone number."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from onboarding.domain import errors
from onboarding.entrypoints.request_context import request_id_var
from onboarding.service_layer.errors import BackendUnavailable, WriteConflict

log = logging.getLogger(__name__)

DOMAIN = "onboarding"
_DETAILS_KEY = "grpc-status-details-bin"


class RpcError(Exception):
    """A status ready to send: code, message, reason, and the extras that go with it."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str,
        *,
        metadata: dict[str, str] | None = None,
        details: tuple[Message, ...] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = metadata or {}
        self.details = details

    def trailers(self) -> tuple[tuple[str, str | bytes], ...]:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=DOMAIN, metadata=self.metadata
        )
        for detail in (info, *self.details):
            status.details.add().Pack(detail)
        return ((_DETAILS_KEY, status.SerializeToString()), *self.metadata.items())


def bad_request(violations: list[errors.FieldViolation]) -> RpcError:
    request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=v.field, description=v.description, reason="INVALID_REQUEST"
            )
            for v in violations
        ]
    )
    message = "invalid request: " + "; ".join(f"{v.field} {v.description}" for v in violations)
    return RpcError(
        grpc.StatusCode.INVALID_ARGUMENT, message, "INVALID_REQUEST", details=(request,)
    )


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(max(seconds, 0.0) * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def to_rpc_error(error: Exception) -> RpcError | None:
    """The status for an error of ours, or None for an unexpected one."""
    code = grpc.StatusCode
    match error:
        case RpcError():
            return error
        case errors.InvalidRequest():
            return bad_request(error.violations)
        case errors.AgreementNotFound() | errors.LookupNotFound():
            return RpcError(code.NOT_FOUND, error.message, error.reason)
        case errors.OtpInvalid():
            return RpcError(
                code.INVALID_ARGUMENT,
                error.message,
                error.reason,
                metadata={"attempts_remaining": str(error.attempts_remaining)},
            )
        case errors.OtpAttemptsExhausted() | errors.OtpExpired() | errors.OtpNotSent():
            return RpcError(code.FAILED_PRECONDITION, error.message, error.reason)
        case errors.AgreementNotPending():
            return RpcError(
                code.FAILED_PRECONDITION,
                error.message,
                error.reason,
                metadata={"status": f"AGREEMENT_STATUS_{error.status}"},
            )
        case errors.OtpResendTooEarly():
            seconds = error.retry_after.total_seconds()
            return RpcError(
                code.RESOURCE_EXHAUSTED,
                error.message,
                error.reason,
                metadata={"retry_after_seconds": f"{max(seconds, 0.0):.3f}"},
                details=(_retry_info(seconds),),
            )
        case errors.OtpSendLimit():
            quota = error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=error.subject, description=error.message
                    )
                ]
            )
            return RpcError(code.RESOURCE_EXHAUSTED, error.message, error.reason, details=(quota,))
        case errors.RequestIdConflict():
            return RpcError(code.ALREADY_EXISTS, error.message, error.reason)
        case BackendUnavailable():
            return RpcError(
                code.UNAVAILABLE, error.message, error.reason, details=(_retry_info(1.0),)
            )
        case WriteConflict():  # lost a race with other writes on every try; nothing was written
            return RpcError(
                code.UNAVAILABLE,
                "the database was busy with conflicting writes; nothing was changed",
                BackendUnavailable.reason,
                details=(_retry_info(0.1),),
            )
    return None


T = TypeVar("T")
Method = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[T]]


def translate_errors(method: Method[T]) -> Method[T]:
    """Turns errors raised by a servicer method into the contract's statuses."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await method(self, request, context)
        except Exception as error:
            rpc_error = to_rpc_error(error)
            if rpc_error is None:
                log.exception("unexpected error in %s", method.__name__)
                rpc_error = RpcError(grpc.StatusCode.INTERNAL, "internal error", "INTERNAL")
            await abort(context, rpc_error)
            raise AssertionError("unreachable") from None  # abort always raises

    return wrapper


async def abort(context: grpc.aio.ServicerContext, error: RpcError) -> None:
    """Ends the call with the error. Its trailers also carry the call's ``x-request-id`` (see
    the observer): an error is when a caller needs it to ask about the call."""
    request_id = request_id_var.get()
    trailers = error.trailers()
    if request_id:
        trailers = (*trailers, ("x-request-id", request_id))
    await context.abort(error.code, error.message, trailers)
