"""Logging: readable lines for people (``console``) or one JSON object a line (``json``)."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from json.encoder import c_make_encoder, encode_basestring

from onboarding.entrypoints.request_context import caller_var, request_id_var

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)
#: The C encoder behind ``_ENCODER``, made once: ``JSONEncoder.encode`` makes a new one for
#: every call, a third of the cost of a short line. (No check for cycles: a record's fields
#: are flat.)
_encode = (
    c_make_encoder(None, str, encode_basestring, None, ": ", ", ", False, False, True)
    if c_make_encoder is not None
    else lambda entry, _level: (_ENCODER.encode(entry),)
)


class RequestContext(logging.Filter):
    """Adds the running RPC's request id and caller to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = request_id_var.get()
        if request_id:
            record.request_id = request_id
            record.caller = caller_var.get()
        return True


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id:
            line += f" [request_id={request_id} caller={getattr(record, 'caller', '')}]"
        return line


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # One tuple, replaced whole: a thread never sees one second's number with another's text.
        self._second: tuple[int, str] = (-1, "")

    def _time(self, created: float) -> str:
        """ISO 8601 in UTC with microseconds; the whole second formatted once per second."""
        second = int(created)
        cached, text = self._second
        if second != cached:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{int((created - second) * 1e6):06d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return "".join(_encode(entry, 0))


def configure(log_format: str, level: str) -> None:
    # Neither format shows the source line, thread or process: not collecting them saves a
    # stack walk and some lookups on every record (the logging HOWTO's "Optimization").
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else ConsoleFormatter())
    handler.addFilter(RequestContext())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiosqlite", "asyncio", "sqlalchemy.engine", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class AccessLog:
    """Writes the line every RPC ends with, through ``logger``'s handlers like any other record.

    ``Logger.info`` spends more on making a record than the JSON formatter spends on writing
    it, and this line is written for every call. Here the record is a copy of a ``LogRecord``
    made once per thread, with this call's fields put in: it has every field this Python's
    records have, and filters, handlers and the level apply as to any record.
    """

    _MESSAGE = "%s %s %.1fms"
    _PER_CALL = ("msg", "args", "created", "msecs", "relativeCreated")

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._fixed: dict[int, dict[str, object]] = {}  # by thread: records name their thread

    def _fixed_fields(self) -> dict[str, object]:
        thread = threading.get_ident()
        fixed = self._fixed.get(thread)
        if fixed is None:
            logger = self._logger
            made = logger.makeRecord(logger.name, logging.INFO, "(unknown file)", 0, "", (), None)
            fixed = {k: v for k, v in made.__dict__.items() if k not in self._PER_CALL}
            self._fixed[thread] = fixed
        return fixed

    def __call__(
        self, method: str, code: str, seconds: float, caller: str, request_id: str
    ) -> None:
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        now = time.time()
        record = logging.LogRecord.__new__(logging.LogRecord)
        fields = record.__dict__
        fields.update(self._fixed_fields())
        fields["msg"] = self._MESSAGE
        fields["args"] = (method, code, seconds * 1000)
        fields["created"] = now
        fields["msecs"] = int((now - int(now)) * 1000) + 0.0
        fields["relativeCreated"] = (now - logging._startTime) * 1000  # type: ignore[attr-defined]
        fields["rpc_method"] = method
        fields["grpc_code"] = code
        fields["duration_ms"] = round(seconds * 1000, 3)
        fields["caller"] = caller
        fields["request_id"] = request_id
        logger.handle(record)
