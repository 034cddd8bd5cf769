"""Errors of the service layer itself (not rules of the domain)."""

from __future__ import annotations


class BackendUnavailable(Exception):
    """The database could not be reached or did not answer in time."""

    reason = "BACKEND_UNAVAILABLE"

    def __init__(self, message: str = "the database is unavailable") -> None:
        super().__init__(message)
        self.message = message


class WriteConflict(Exception):
    """A concurrent transaction wrote the same unique key first; the command may be retried."""
