"""Reading the rich error details the server sends."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2, status_pb2


@dataclass
class ErrorDetails:
    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str]
    trailers: dict[str, str] = field(default_factory=dict)
    bad_request: error_details_pb2.BadRequest | None = None
    retry_info: error_details_pb2.RetryInfo | None = None
    quota_failure: error_details_pb2.QuotaFailure | None = None


def details_of(error: grpc.aio.AioRpcError) -> ErrorDetails:
    trailing = error.trailing_metadata() or ()
    raw = next(v for k, v in trailing if k == "grpc-status-details-bin")
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    result = ErrorDetails(
        code=error.code(),
        message=error.details() or "",
        reason="",
        metadata={},
        trailers={k: v for k, v in trailing if not k.endswith("-bin")},
    )
    for any_detail in status.details:
        for kind, attr in (
            (error_details_pb2.ErrorInfo, None),
            (error_details_pb2.BadRequest, "bad_request"),
            (error_details_pb2.RetryInfo, "retry_info"),
            (error_details_pb2.QuotaFailure, "quota_failure"),
        ):
            if any_detail.Is(kind.DESCRIPTOR):
                message = kind()
                any_detail.Unpack(message)
                if attr is None:
                    assert message.domain == "onboarding"
                    result.reason = message.reason
                    result.metadata = dict(message.metadata)
                else:
                    setattr(result, attr, message)
    return result
