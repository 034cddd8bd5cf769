"""The log's two formats and the access line every RPC ends with: what operators' log
pipelines parse, so each field is checked as written, not only that a line appears."""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime

import pytest

from onboarding.entrypoints.logging import AccessLog, ConsoleFormatter, JsonFormatter
from onboarding.entrypoints.request_context import caller_var, request_id_var

METHOD = "/onboarding.inn.v1.InnService/FindInn"


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logger() -> logging.Logger:
    logger = logging.getLogger(f"test.access.{id(object())}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


@pytest.fixture
def collected(logger: logging.Logger) -> Collect:
    handler = Collect()
    logger.addHandler(handler)
    return handler


def _record(created: float, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("onboarding.x", logging.WARNING, "", 0, "привет %s", ("мир",), None)
    record.created = created
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize("created", [1764676800.0, 1764676800.000001, 1764676801.999999])
def test_json_time_is_utc_with_six_digits_of_microseconds(created: float) -> None:
    line = json.loads(JsonFormatter().format(_record(created)))
    assert len(line["time"]) == len("2025-12-02T12:00:00.000000+00:00")
    parsed = datetime.fromisoformat(line["time"])
    assert parsed.tzinfo is not None and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert abs(parsed.timestamp() - created) < 1e-6


def test_json_time_follows_each_record_across_seconds() -> None:
    formatter = JsonFormatter()
    for created in (1764676800.5, 1764676801.25, 1764676800.75, 1764763200.0):
        parsed = datetime.fromisoformat(json.loads(formatter.format(_record(created)))["time"])
        assert parsed == datetime.fromtimestamp(created, UTC)


def test_json_line_holds_the_message_the_extras_and_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record(1764676800.0, request_id="r-1", when=datetime(2031, 1, 1, tzinfo=UTC))
        record.exc_info = sys.exc_info()
    text = JsonFormatter().format(record)
    assert "\n" not in text and "привет мир" in text  # one line, Unicode kept as itself
    line = json.loads(text)
    assert line["level"] == "warning" and line["logger"] == "onboarding.x"
    assert line["message"] == "привет мир"
    assert line["request_id"] == "r-1"
    assert line["when"] == "2031-01-01 00:00:00+00:00"  # what JSON cannot hold, as its str()
    assert "ValueError: boom" in line["exception"]


def test_access_line_is_written_through_the_handlers(
    logger: logging.Logger, collected: Collect
) -> None:
    AccessLog(logger)(METHOD, "OK", 0.0012345, "billing", "req-1")
    [record] = collected.records
    assert record.getMessage() == f"{METHOD} OK 1.2ms"
    assert record.levelno == logging.INFO and record.name == logger.name
    fields = record.__dict__
    assert fields["rpc_method"] == METHOD and fields["grpc_code"] == "OK"
    assert fields["duration_ms"] == round(0.0012345 * 1000, 3)
    assert fields["caller"] == "billing" and fields["request_id"] == "req-1"


def test_access_record_has_every_field_a_logged_record_has(
    logger: logging.Logger, collected: Collect
) -> None:
    logger.info("made by the logger")
    AccessLog(logger)(METHOD, "OK", 0.001, "billing", "req-1")
    made, ours = collected.records
    extras = {"rpc_method", "grpc_code", "duration_ms", "caller", "request_id"}
    assert set(ours.__dict__) == set(made.__dict__) | extras
    assert made.created <= ours.created
    assert ours.thread == made.thread and ours.threadName == made.threadName


def test_access_record_names_the_thread_it_was_written_on(
    logger: logging.Logger, collected: Collect
) -> None:
    access = AccessLog(logger)
    access(METHOD, "OK", 0.001, "billing", "main")
    worker = threading.Thread(target=access, args=(METHOD, "OK", 0.001, "b", "other"), name="w")
    worker.start()
    worker.join()
    main, other = collected.records
    assert (main.thread, other.thread) == (threading.get_ident(), worker.ident)
    assert other.threadName == "w"


def test_access_line_follows_the_level(logger: logging.Logger, collected: Collect) -> None:
    logger.setLevel(logging.WARNING)
    AccessLog(logger)(METHOD, "OK", 0.001, "billing", "req-1")
    assert collected.records == []


def test_access_line_goes_through_filters_and_both_formats(logger: logging.Logger) -> None:
    from onboarding.entrypoints.logging import RequestContext

    collected = Collect()
    collected.addFilter(RequestContext())
    logger.addHandler(collected)
    token = request_id_var.set("req-ctx"), caller_var.set("billing")
    try:
        AccessLog(logger)(METHOD, "NOT_FOUND", 0.0005, "billing", "req-ctx")
    finally:
        request_id_var.reset(token[0])
        caller_var.reset(token[1])
    [record] = collected.records
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == f"{METHOD} NOT_FOUND 0.5ms"
    assert line["grpc_code"] == "NOT_FOUND" and line["request_id"] == "req-ctx"
    console = ConsoleFormatter().format(record)
    assert f"{METHOD} NOT_FOUND 0.5ms" in console and "request_id=req-ctx" in console
