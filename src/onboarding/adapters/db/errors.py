"""Database exceptions translated into what the service layer understands."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from asyncpg import exceptions as pg_exc
from sqlalchemy import exc as sa_exc

from onboarding.adapters.db.direct import StaleRead
from onboarding.service_layer.errors import BackendUnavailable, WriteConflict

_UNIQUE_MARKERS = ("unique", "duplicate key")


def translate(error: BaseException) -> BaseException | None:
    """The service-layer error for a database failure, or None when it is not one of ours."""
    if isinstance(error, sa_exc.IntegrityError) and any(
        marker in str(error.orig).lower() for marker in _UNIQUE_MARKERS
    ):
        return WriteConflict(type(error.orig).__name__)
    # The drivers' own, from the statements they run directly (see ``direct``).
    # A deadlock or serialization failure, or a row changed since it was read without a lock
    # (see ``direct.StaleRead``), is a lost race too: the bus runs the command again.
    if isinstance(
        error, pg_exc.UniqueViolationError | pg_exc.TransactionRollbackError | StaleRead
    ) or (isinstance(error, sqlite3.IntegrityError) and "unique" in str(error).lower()):
        return WriteConflict(type(error).__name__)
    if isinstance(
        error,
        sa_exc.OperationalError
        | sa_exc.InterfaceError
        | sa_exc.TimeoutError
        | TimeoutError
        | ConnectionError
        | OSError
        # Raised by the drivers themselves, on the statements they run directly (see
        # ``direct``): a database file that cannot be opened or is locked; and from asyncpg
        # a lost connection (InternalClientError when the loss is seen mid-call), a server
        # shutting down or a cancelled statement.
        | sqlite3.OperationalError
        | pg_exc.InterfaceError
        | pg_exc.InternalClientError
        | pg_exc.PostgresConnectionError
        | pg_exc.OperatorInterventionError
        # Too many connections, out of memory, disk full: the server cannot take work now.
        | pg_exc.InsufficientResourcesError,
    ):
        return BackendUnavailable()
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return BackendUnavailable()
    return None


@contextmanager
def database_errors() -> Iterator[None]:
    """Raises the service-layer error for a database failure inside the block."""
    try:
        yield
    except Exception as error:
        translated = translate(error)
        if translated is None:
            raise
        raise translated from error
