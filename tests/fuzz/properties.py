"""What every answer of the service must look like, whatever the request (the contract's
Errors table), and how to call any RPC by name."""

from __future__ import annotations

import re
import sys
import uuid
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2
from hypothesis import event
from hypothesis.control import currently_in_test_context

from onboarding.agreement.v1 import agreement_pb2 as apb
from onboarding.domain.inn import inn_is_valid
from onboarding.domain.phone import PhoneNumber
from onboarding.inn.v1 import inn_pb2 as ipb
from tests.e2e.helpers import details_of
from tests.fuzz.conftest import FIND_INN_TIMEOUT, FuzzServer

S = grpc.StatusCode

#: Long enough for any RPC but FindInn on a loaded CI box; hitting it means a hang.
CALL_TIMEOUT = 20.0


@dataclass(frozen=True)
class Rpc:
    service: str
    name: str
    request: type[Message]
    allowed: frozenset[grpc.StatusCode]

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def response(self) -> type[Message]:
        """FooRequest's sibling FooResponse."""
        module = sys.modules[self.request.__module__]
        return getattr(module, self.request.__name__.replace("Request", "Response"))

    @property
    def timeout(self) -> float:
        return FIND_INN_TIMEOUT if self.name == "FindInn" else CALL_TIMEOUT


_AGREEMENTS = "onboarding.agreement.v1.AgreementService"
_INN = "onboarding.inn.v1.InnService"

RPCS = {
    rpc.name: rpc
    for rpc in (
        Rpc(
            _AGREEMENTS,
            "CreateAgreement",
            apb.CreateAgreementRequest,
            # RESOURCE_EXHAUSTED: the per-phone send quota of a phone used often.
            frozenset({S.OK, S.INVALID_ARGUMENT, S.RESOURCE_EXHAUSTED, S.ALREADY_EXISTS}),
        ),
        Rpc(
            _AGREEMENTS,
            "SendOtp",
            apb.SendOtpRequest,
            frozenset(
                {
                    S.OK,
                    S.INVALID_ARGUMENT,
                    S.NOT_FOUND,
                    S.FAILED_PRECONDITION,
                    S.RESOURCE_EXHAUSTED,
                }
            ),
        ),
        Rpc(
            _AGREEMENTS,
            "ConfirmOtp",
            apb.ConfirmOtpRequest,
            frozenset({S.OK, S.INVALID_ARGUMENT, S.NOT_FOUND, S.FAILED_PRECONDITION}),
        ),
        Rpc(
            _AGREEMENTS,
            "GetAgreement",
            apb.GetAgreementRequest,
            frozenset({S.OK, S.INVALID_ARGUMENT, S.NOT_FOUND}),
        ),
        Rpc(
            _AGREEMENTS,
            "ListAgreements",
            apb.ListAgreementsRequest,
            frozenset({S.OK, S.INVALID_ARGUMENT}),
        ),
        Rpc(
            _AGREEMENTS,
            "RevokeAgreement",
            apb.RevokeAgreementRequest,
            frozenset({S.OK, S.INVALID_ARGUMENT, S.NOT_FOUND}),
        ),
        Rpc(
            _INN,
            "FindInn",
            ipb.FindInnRequest,
            # DEADLINE_EXCEEDED only here: the call has a short deadline on purpose.
            frozenset({S.OK, S.INVALID_ARGUMENT, S.ALREADY_EXISTS, S.DEADLINE_EXCEEDED}),
        ),
        Rpc(
            _INN,
            "GetInnLookup",
            ipb.GetInnLookupRequest,
            frozenset({S.OK, S.INVALID_ARGUMENT, S.NOT_FOUND}),
        ),
    )
}

#: The contract's Errors table: each reason with its status.
REASON_CODES = {
    "INVALID_REQUEST": S.INVALID_ARGUMENT,
    "AGREEMENT_NOT_FOUND": S.NOT_FOUND,
    "LOOKUP_NOT_FOUND": S.NOT_FOUND,
    "OTP_INVALID": S.INVALID_ARGUMENT,
    "OTP_ATTEMPTS_EXHAUSTED": S.FAILED_PRECONDITION,
    "OTP_EXPIRED": S.FAILED_PRECONDITION,
    "OTP_NOT_SENT": S.FAILED_PRECONDITION,
    "AGREEMENT_NOT_PENDING": S.FAILED_PRECONDITION,
    "OTP_RESEND_TOO_EARLY": S.RESOURCE_EXHAUSTED,
    "OTP_SEND_LIMIT": S.RESOURCE_EXHAUSTED,
    "REQUEST_ID_CONFLICT": S.ALREADY_EXISTS,
    "UNAUTHENTICATED": S.UNAUTHENTICATED,
    "BACKEND_UNAVAILABLE": S.UNAVAILABLE,
}

_MAX_SHOWN = 300


def shown(value: object) -> str:
    """A request for an assertion message, cut short: fuzzed strings can be 100k long."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else f"{text[:_MAX_SHOWN]}… ({len(text)} chars)"


async def call(
    fuzz: FuzzServer, rpc: Rpc, request: Message, timeout: float | None = None
) -> tuple[Message | None, grpc.aio.AioRpcError | None]:
    stub = fuzz.inn if rpc.service == _INN else fuzz.agreements
    try:
        return await getattr(stub, rpc.name)(request, timeout=timeout or rpc.timeout), None
    except grpc.aio.AioRpcError as error:
        return None, error


async def call_raw(
    fuzz: FuzzServer, rpc: Rpc, payload: bytes
) -> tuple[bytes | None, grpc.aio.AioRpcError | None]:
    """Sends ``payload`` as the serialized request, as is."""
    method = fuzz.channel.unary_unary(rpc.path)  # no serializers: bytes in, bytes out
    try:
        return await method(payload, timeout=rpc.timeout), None
    except grpc.aio.AioRpcError as error:
        return None, error


def _digits(text: str) -> str:
    return re.sub(r"[^0-9]", "", text)


def _echoes_phone(blob: str, phone: str) -> bool:
    """Whether ``blob`` shows the number (7+ digits), in any notation."""
    digits = _digits(phone)
    if len(digits) < 7:  # too short to be a number worth hiding
        return False
    return digits in re.sub(r"[\s()\-.+]", "", blob)


def check_error(rpc: Rpc, request: Message, error: grpc.aio.AioRpcError) -> None:
    """The status is one the contract allows for this RPC, with the rich details it promises."""
    code = error.code()
    where = f"{rpc.name}({shown(request)}) -> {code.name}: {shown(error.details())}"
    assert code not in (S.UNKNOWN, S.INTERNAL), where
    assert code in rpc.allowed, where
    trailing = error.trailing_metadata() or ()
    if code is S.DEADLINE_EXCEEDED:
        return  # the client's own deadline: no trailers of ours to expect
    assert any(k == "grpc-status-details-bin" for k, _ in trailing), f"no details: {where}"
    details = details_of(error)  # asserts the ErrorInfo's domain is "onboarding"
    assert details.reason, f"no ErrorInfo: {where}"
    assert REASON_CODES.get(details.reason) is code, f"reason {details.reason}: {where}"
    if details.reason == "INVALID_REQUEST":
        assert details.bad_request is not None, f"no BadRequest: {where}"
        assert details.bad_request.field_violations, f"empty BadRequest: {where}"
        names = set(request.DESCRIPTOR.fields_by_name)
        for violation in details.bad_request.field_violations:
            assert violation.field in names, f"field {violation.field!r} unknown: {where}"
    if details.reason == "OTP_INVALID":
        assert details.metadata.get("attempts_remaining", "").isdigit(), where
    if details.reason == "OTP_RESEND_TOO_EARLY":
        assert details.retry_info is not None, where
    if details.reason == "OTP_SEND_LIMIT":
        assert details.quota_failure is not None, where
    status = status_pb2.Status.FromString(
        next(v for k, v in trailing if k == "grpc-status-details-bin")
    )
    blob = " ".join(
        [
            error.details() or "",
            status.message,
            *(v for k, v in trailing if isinstance(v, str)),
            *(
                f"{v.field} {v.description}"
                for v in (details.bad_request.field_violations if details.bad_request else ())
            ),
            *(
                f"{v.subject} {v.description}"
                for v in (details.quota_failure.violations if details.quota_failure else ())
            ),
        ]
    )
    phone = getattr(request, "phone", "")
    assert not _echoes_phone(blob, phone), f"the error echoes the phone: {where}"


def check_response(rpc: Rpc, request: Message, response: Message) -> None:
    """An OK answer is consistent with its request."""
    where = f"{rpc.name}({shown(request)}) -> OK {shown(response)}"
    if rpc.name == "CreateAgreement":
        agreement = response.agreement
        assert agreement.id_hash == request.id_hash, where
        assert agreement.status in (
            apb.AGREEMENT_STATUS_PENDING,
            apb.AGREEMENT_STATUS_CONFIRMED,
            apb.AGREEMENT_STATUS_REVOKED,
        ), where
        assert "*" in agreement.phone_masked, where
        digits = _digits(request.phone)
        assert len(digits) < 7 or digits[-7:] not in agreement.phone_masked, where
    elif rpc.name == "ListAgreements":
        size = request.page_size or 50
        assert len(response.agreements) <= min(size, 500), where
        assert all(a.id_hash == request.id_hash for a in response.agreements), where
    elif rpc.name == "FindInn" or rpc.name == "GetInnLookup":
        lookup = response.lookup
        assert lookup.request_id == request.request_id, where
        assert lookup.status != ipb.INN_LOOKUP_STATUS_UNSPECIFIED, where
        if lookup.status == ipb.INN_LOOKUP_STATUS_FOUND:
            assert inn_is_valid(lookup.inn), where
        else:
            assert lookup.inn == "", where
    elif rpc.name in ("SendOtp", "ConfirmOtp", "GetAgreement", "RevokeAgreement"):
        # the agreement asked for, whatever notation of its UUID the request used
        reference = response.agreement.reference
        assert reference == str(uuid.UUID(reference)), where
        assert uuid.UUID(reference) == uuid.UUID(request.reference), where
        assert "*" in response.agreement.phone_masked, where
        if rpc.name == "ConfirmOtp":
            assert response.agreement.status == apb.AGREEMENT_STATUS_CONFIRMED, where
        if rpc.name == "RevokeAgreement":
            assert response.agreement.status == apb.AGREEMENT_STATUS_REVOKED, where


async def exercise(
    fuzz: FuzzServer, rpc: Rpc, request: Message, timeout: float | None = None
) -> None:
    """Sends ``request`` and checks the answer; remembers what it created for later examples
    (SendOtp, ConfirmOtp, GetInnLookup… pick from those too)."""
    response, error = await call(fuzz, rpc, request, timeout)
    if currently_in_test_context():  # not in the hand-picked cases
        event(outcome_label(error))
    check_outcome(rpc, request, response, error)
    if error is None and rpc.name == "CreateAgreement":
        fuzz.remember(response.agreement.reference, PhoneNumber.parse(request.phone).e164)
    if error is None and rpc.name == "FindInn" and request.request_id not in fuzz.inn_request_ids:
        fuzz.inn_request_ids.append(request.request_id)


def check_outcome(
    rpc: Rpc,
    request: Message,
    response: Message | None,
    error: grpc.aio.AioRpcError | None,
) -> None:
    if error is not None:
        check_error(rpc, request, error)
    else:
        assert response is not None
        check_response(rpc, request, response)


def outcome_label(error: grpc.aio.AioRpcError | None) -> str:
    """``OK`` or ``CODE/REASON``, for Hypothesis's statistics (--hypothesis-show-statistics)."""
    if error is None:
        return "OK"
    trailing = error.trailing_metadata() or ()
    if not any(k == "grpc-status-details-bin" for k, _ in trailing):
        return f"{error.code().name}/-"
    return f"{error.code().name}/{details_of(error).reason}"
