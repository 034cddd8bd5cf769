"""Prometheus metrics. With several workers (``serve --workers N``) every process writes its
samples to PROMETHEUS_MULTIPROC_DIR and the supervisor serves the sum, so every process counts.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

RPCS = Counter(
    "onboarding_rpc_requests_total",
    "RPCs handled, by service, method, status code and caller.",
    ["service", "method", "code", "caller"],
)
RPC_LATENCY = Histogram(
    "onboarding_rpc_duration_seconds",
    "Time to answer an RPC, by service and method.",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SMS = Counter(
    "onboarding_sms_deliveries_total",
    "Hand-overs of codes to the SMS gateway, by outcome (sent, retry, failed).",
    ["outcome"],
)
SMS_SENDER_STARTS = Counter(
    "onboarding_sms_sender_starts_total",
    "Starts of the SMS helper process, by result (started, failed); more than one started per "
    "server process means helpers died or hung and were replaced.",
    ["result"],
)
OUTBOX_BACKLOG = Gauge(
    "onboarding_outbox_backlog",
    "SMS waiting in the outbox.",
    multiprocess_mode="mostrecent",
)
OUTBOX_OLDEST_AGE = Gauge(
    "onboarding_outbox_oldest_age_seconds",
    "Age of the oldest SMS waiting in the outbox (0 when none waits).",
    multiprocess_mode="mostrecent",
)
NALOG_CALLS = Counter(
    "onboarding_nalog_calls_total",
    "Lookups sent to service.nalog.ru, by outcome (found, not_found, rejected, throttled, fault).",
    ["outcome"],
)
LOOKUPS = Counter(
    "onboarding_inn_lookups_total",
    "FindInn answers, by lookup status and whether they came from stored results.",
    ["status", "cached"],
)


#: Labelled series, looked up once each: the label values are few (methods x codes x callers,
#: outcomes, statuses) and ``labels()`` costs a lock and a hash per call.
_SERIES: dict[tuple[Any, ...], Any] = {}


def _series(metric: Any, *values: str) -> Any:
    key = (metric, *values)
    series = _SERIES.get(key)
    if series is None:
        series = _SERIES[key] = metric.labels(*values)
    return series


#: Both series of an RPC under one key: every RPC passes here.
_RPC_SERIES: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}


def record_rpc(service: str, method: str, code: str, caller: str, seconds: float) -> None:
    key = (service, method, code, caller)
    series = _RPC_SERIES.get(key)
    if series is None:
        series = _RPC_SERIES[key] = (RPCS.labels(*key), RPC_LATENCY.labels(service, method))
    series[0].inc()
    series[1].observe(seconds)


def record_sms(outcome: str) -> None:
    _series(SMS, outcome.lower()).inc()


def record_sms_sender_start(result: str) -> None:
    _series(SMS_SENDER_STARTS, result).inc()


def record_nalog_call(verdict: str) -> None:
    _series(NALOG_CALLS, verdict.lower()).inc()


def record_lookup(status: str, cached: bool) -> None:
    _series(LOOKUPS, status.lower(), "true" if cached else "false").inc()


def record_backlog(count: int, oldest: datetime | None, now: datetime) -> None:
    OUTBOX_BACKLOG.set(count)
    OUTBOX_OLDEST_AGE.set(max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)


def serve(port: int) -> None:
    """``/metrics`` on ``port`` (all interfaces), in a daemon thread; in multiprocess mode the
    sum over every worker's samples."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(port, registry=registry)
    else:
        start_http_server(port)


def forget_process(pid: int) -> None:
    """A worker died: drop its live-only samples."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)
