"""The drivers' own errors, raised by the statements they run directly, become the service
layer's: a lost race is a WriteConflict (run again by the bus), a server that cannot take work
is BackendUnavailable; anything else is left alone (a defect, answered INTERNAL)."""

from __future__ import annotations

import sqlite3

import grpc
import pytest
from asyncpg import exceptions as pg

from onboarding.adapters.db.errors import translate
from onboarding.entrypoints.grpc.errors import to_rpc_error
from onboarding.service_layer.errors import BackendUnavailable, WriteConflict


@pytest.mark.parametrize(
    "error",
    [
        pg.UniqueViolationError("duplicate key value violates unique constraint"),
        pg.DeadlockDetectedError("deadlock detected"),
        pg.SerializationError("could not serialize access"),
        sqlite3.IntegrityError("UNIQUE constraint failed: agreements.request_id"),
    ],
)
def test_a_lost_race_is_a_write_conflict(error: Exception) -> None:
    assert isinstance(translate(error), WriteConflict)


@pytest.mark.parametrize(
    "error",
    [
        pg.TooManyConnectionsError("sorry, too many clients already"),
        pg.CannotConnectNowError("the database system is starting up"),
        pg.QueryCanceledError("canceling statement due to statement timeout"),
        pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        sqlite3.OperationalError("database is locked"),
        ConnectionRefusedError(),
        TimeoutError(),
    ],
)
def test_a_server_that_cannot_take_work_is_unavailable(error: Exception) -> None:
    assert isinstance(translate(error), BackendUnavailable)


@pytest.mark.parametrize(
    "error",
    [
        pg.NotNullViolationError("null value in column"),
        pg.UndefinedColumnError("column does not exist"),
        sqlite3.IntegrityError("NOT NULL constraint failed: agreements.status"),
        ValueError("not a database error"),
    ],
)
def test_anything_else_is_left_alone(error: Exception) -> None:
    assert translate(error) is None


def test_a_conflict_that_outlasted_every_try_is_answered_unavailable_with_a_retry() -> None:
    rpc = to_rpc_error(WriteConflict("DeadlockDetectedError"))
    assert rpc is not None
    assert rpc.code == grpc.StatusCode.UNAVAILABLE
    assert rpc.reason == "BACKEND_UNAVAILABLE"
    assert rpc.details and rpc.details[0].DESCRIPTOR.name == "RetryInfo"
