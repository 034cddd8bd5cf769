"""What every unary RPC goes through: who is calling, a request id, the caller's deadline, one log
line and the metrics.

Each method's handler is wrapped once, as the services register on the server
(:class:`ObservedServer`), rather than by a grpc interceptor: an interceptor is a coroutine
grpc runs on every call before it finds the handler, and a bare grpc.aio server with one that
only passes calls on answered 7% fewer calls a second (A/B, 2026-12-02).

- Authentication (when ``ONBOARDING_AUTH_TOKENS`` is set): ``authorization: Bearer <token>``
  on every RPC but health, compared in constant time with every known token; UNAUTHENTICATED
  with reason ``UNAUTHENTICATED`` otherwise.
- ``x-request-id``: the caller's (when it is sane) or a new one. It goes into every log line
  written while the RPC runs, and back in the trailing metadata of an error answer. Not of a
  successful one: one more trailer costs grpc about a tenth of a small RPC, and a success
  already names what a caller would ask about (the agreement's reference, the lookup's
  request_id). (Trailers, not headers: initial metadata sent on its own is one more batch
  through grpc's core.)
- Streaming RPCs (health Watch, reflection) are authenticated like the rest, but written to
  neither the access log nor the RPC metrics: they last as long as the client keeps them open,
  and health's Watch writes with ``context.write``, which a wrapping generator may not mix with.
- The deadline bounds all our work: the handler is cancelled when it passes, and whatever
  transaction it had open rolls back.
- At most ``ONBOARDING_MAX_CONCURRENT_RPCS`` RPCs run at once, open reflection streams
  included and health not counted; one more is refused at once with RESOURCE_EXHAUSTED, reason
  ``TOO_MANY_CONCURRENT_RPCS`` (a unary one is logged and counted like any other answer).
  grpc's own ``maximum_concurrent_rpcs`` refuses without an ErrorInfo, before any of this sees
  the call, and costs more a call than this counter.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.rpc import error_details_pb2

from onboarding.adapters import metrics
from onboarding.entrypoints.grpc.errors import RpcError, abort
from onboarding.entrypoints.logging import AccessLog
from onboarding.entrypoints.request_context import caller_var, request_id_var

log = logging.getLogger("onboarding.rpc")
_access_log = AccessLog(log)

#: Health needs no token and takes no place in the concurrency limit.
_HEALTH_PREFIX = "/grpc.health.v1.Health/"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_ANONYMOUS = "anonymous"
_UNAUTHENTICATED = RpcError(
    grpc.StatusCode.UNAUTHENTICATED,
    "a valid 'authorization: Bearer <token>' is required",
    "UNAUTHENTICATED",
)
_UNDECODABLE_TEXT = "the request is not a valid protobuf message of this method's type"
_UNDECODABLE_REQUEST = RpcError(
    grpc.StatusCode.INVALID_ARGUMENT,
    _UNDECODABLE_TEXT,
    "INVALID_REQUEST",
    # The contract's INVALID_REQUEST comes with a BadRequest; no one field is to blame here,
    # so its violation names the whole request (the empty path).
    details=(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field="", description=_UNDECODABLE_TEXT, reason="INVALID_REQUEST"
                )
            ]
        ),
    ),
)
_BUSY = RpcError(
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    "the server is running as many calls as it may; try again shortly",
    "TOO_MANY_CONCURRENT_RPCS",
)
_TOO_LATE = RpcError(
    grpc.StatusCode.DEADLINE_EXCEEDED,
    "the deadline passed before the work was done; nothing was changed",
    "DEADLINE_EXCEEDED",
)


class RpcObserver:
    def __init__(
        self, callers_by_token: dict[str, str] | None, max_concurrent_rpcs: int | None = None
    ) -> None:
        self._tokens = (
            [(token.encode(), caller) for token, caller in callers_by_token.items()]
            if callers_by_token
            else None
        )
        self._places = _Places(max_concurrent_rpcs)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler of ``method`` (``/package.Service/Method``), observed."""
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._observed(handler.unary_unary, method),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if method.startswith(_HEALTH_PREFIX):
            return handler  # health's Watch: no token, no place, like Check (see _observed)
        if self._tokens is None and self._places.limit is None:
            return handler
        return self._guarded(handler, method)

    def _caller(self, method: str, metadata: Any) -> str | None:
        """The caller's name; None when authentication is on and the token is wrong."""
        if self._tokens is None:
            return _ANONYMOUS
        if method.startswith(_HEALTH_PREFIX):
            return _ANONYMOUS
        presented = _bearer(metadata)
        found = None
        for token, caller in self._tokens:  # every token compared: no early exit
            if hmac.compare_digest(token, presented) and found is None:
                found = caller
        return found

    def _observed(
        self, behaviour: Callable[..., Awaitable[Any]], method: str
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        service, _, name = method.lstrip("/").rpartition("/")
        # Health takes no place and is never refused: a probe refused for being busy would have
        # Kubernetes restart (liveness) or unlist (readiness) a pod under load, and a client
        # watching health would mark it down.
        places = _NO_LIMIT if method.startswith(_HEALTH_PREFIX) else self._places

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            metadata = context.invocation_metadata() or ()
            caller = self._caller(method, metadata)
            rid = _request_id(metadata)
            request_id_var.set(rid)
            caller_var.set(caller or _ANONYMOUS)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                if caller is None:
                    await _abort(context, _UNAUTHENTICATED)
                if isinstance(request, _Undecodable):
                    await _abort(context, _UNDECODABLE_REQUEST)
                if not places.take():
                    await _abort(context, _BUSY)
                try:
                    remaining = context.time_remaining()
                    if remaining is None:
                        return await behaviour(request, context)
                    try:
                        async with asyncio.timeout(remaining):
                            return await behaviour(request, context)
                    except TimeoutError:
                        await _abort(context, _TOO_LATE)
                finally:
                    places.give_back()
            except asyncio.CancelledError:
                # grpc cancels the handler when the caller goes away, and also when the
                # caller's deadline passes (often before our own timeout above fires).
                remaining = context.time_remaining()
                late = remaining is not None and remaining <= 0
                code = grpc.StatusCode.DEADLINE_EXCEEDED if late else grpc.StatusCode.CANCELLED
                raise
            except BaseException:
                code = _code_of(context, grpc.StatusCode.UNKNOWN)
                raise
            finally:
                seconds = time.perf_counter() - started
                code_name = code.name
                metrics.record_rpc(service, name, code_name, caller or _ANONYMOUS, seconds)
                _access_log(method, code_name, seconds, caller or _ANONYMOUS, rid)

        return observed

    def _guarded(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """A streaming handler (reflection) that needs a valid token, when authentication is on,
        and holds one of the concurrency limit's places while it runs. grpc runs a stream
        handler by its kind (a coroutine writing with ``context.write``, or an async
        generator), so the wrapper is of the same kind."""
        places = self._places
        behaviour = handler.unary_stream or handler.stream_unary or handler.stream_stream

        async def admit(context: grpc.aio.ServicerContext) -> None:
            if self._caller(method, context.invocation_metadata() or ()) is None:
                await _abort(context, _UNAUTHENTICATED)
            if not places.take():
                await _abort(context, _BUSY)

        async def guarded_generator(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admit(context)
            try:
                async for response in behaviour(request, context):
                    yield response
            finally:
                places.give_back()

        async def guarded_coroutine(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admit(context)
            try:
                return await behaviour(request, context)
            finally:
                places.give_back()

        guarded = guarded_generator if inspect.isasyncgenfunction(behaviour) else guarded_coroutine
        return _with_behaviour(handler, guarded)


class ObservedServer:
    """The grpc server as the services register on it: the generated ``add_…_to_server``
    functions and reflection hand it their handlers, and each reaches the server observed.
    Registered methods (grpc finds them without asking Python) are wrapped here, once; the
    generic handlers grpc asks per call keep what they wrapped."""

    def __init__(self, server: grpc.aio.Server, observer: RpcObserver) -> None:
        self._server = server
        self._observer = observer

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(
            service,
            {name: self._observer.wrap(f"/{service}/{name}", h) for name, h in handlers.items()},
        )

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_ObservedGeneric(handler, self._observer) for handler in handlers)
        )


class _ObservedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, observer: RpcObserver) -> None:
        self._inner = inner
        self._observer = observer
        # By method: the handler the inner one gave and its observed wrapper. As many entries
        # as the inner handler has methods: it answers None for any other.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(details)
        if handler is None:
            return None
        known = self._wrapped.get(details.method)
        if known is None or known[0] is not handler:
            known = (handler, self._observer.wrap(details.method, handler))
            self._wrapped[details.method] = known
        return known[1]


class _Places:
    """The places of the concurrency limit (None: no limit). One event loop runs every RPC, so
    a plain counter holds."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.taken = 0

    def take(self) -> bool:
        if self.limit is not None and self.taken >= self.limit:
            return False
        self.taken += 1
        return True

    def give_back(self) -> None:
        self.taken -= 1


_NO_LIMIT = _Places(None)


class _Undecodable:
    """Stands in for a request whose bytes did not parse, so the handler can answer
    INVALID_ARGUMENT with details (grpc itself would answer UNKNOWN, or not at all)."""


_UNDECODABLE = _Undecodable()


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception:
            return _UNDECODABLE

    return parse


async def _abort(context: grpc.aio.ServicerContext, error: RpcError) -> None:
    await abort(context, error)


def _request_id(metadata: Any) -> str:
    for key, value in metadata:
        if key == "x-request-id":
            if isinstance(value, str) and _REQUEST_ID.fullmatch(value):
                return value
            break
    return uuid.uuid4().hex


def _code_of(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    try:
        code = context.code()
    except Exception:  # pragma: no cover - older grpcio without ServicerContext.code
        return default
    if isinstance(code, grpc.StatusCode):
        return code
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status
    return default


def _bearer(metadata: Any) -> bytes:
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip().encode()
    return b""


def _with_behaviour(
    handler: grpc.RpcMethodHandler, behaviour: Callable[..., Any]
) -> grpc.RpcMethodHandler:
    """A streaming handler of the same kind and (de)serializers that runs ``behaviour``."""
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(behaviour, **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(behaviour, **kwargs)
    return grpc.stream_stream_rpc_method_handler(behaviour, **kwargs)
