"""Handlers are observed from registration on: the registered ones are wrapped once, a generic
handler's answer is wrapped the first time grpc asks for a method and reused after."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import grpc

from onboarding.entrypoints.grpc.observer import ObservedServer, RpcObserver

Details = namedtuple("Details", ["method", "invocation_metadata"])


class Recorder:
    """Stands in for grpc's server: keeps what the services register on it."""

    def __init__(self) -> None:
        self.registered: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        self.generic: list[grpc.GenericRpcHandler] = []

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        self.registered[service] = handlers

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)


async def _unary(request: bytes, _context: Any) -> bytes:
    return request


async def _stream(_request: bytes, _context: Any) -> Any:
    yield b"x"


def _handlers() -> dict[str, grpc.RpcMethodHandler]:
    return {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
    }


def test_registered_unary_handlers_are_wrapped_once_at_registration() -> None:
    recorder = Recorder()
    handlers = _handlers()
    ObservedServer(recorder, RpcObserver(None)).add_registered_method_handlers("t.S", handlers)  # type: ignore[arg-type]
    registered = recorder.registered["t.S"]
    assert set(registered) == {"Unary", "Stream"}
    assert registered["Unary"].unary_unary is not _unary
    # A stream with neither tokens nor a limit to hold is served as it is.
    assert registered["Stream"] is handlers["Stream"]


def test_streams_are_guarded_when_there_is_a_token_or_a_limit() -> None:
    for observer in (RpcObserver({"token-0123456789": "billing"}), RpcObserver(None, 5)):
        recorder = Recorder()
        ObservedServer(recorder, observer).add_registered_method_handlers("t.S", _handlers())  # type: ignore[arg-type]
        assert recorder.registered["t.S"]["Stream"].unary_stream is not _stream


def test_a_generic_handlers_answer_is_wrapped_once_per_method() -> None:
    recorder = Recorder()
    inner = grpc.method_handlers_generic_handler("t.S", _handlers())
    ObservedServer(recorder, RpcObserver(None)).add_generic_rpc_handlers((inner,))  # type: ignore[arg-type]
    [observed] = recorder.generic
    first = observed.service(Details("/t.S/Unary", ()))
    assert first is not None and first.unary_unary is not _unary
    assert observed.service(Details("/t.S/Unary", ())) is first
    assert observed.service(Details("/t.S/Other", ())) is None
