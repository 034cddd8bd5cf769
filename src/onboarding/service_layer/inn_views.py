"""What callers see of an INN lookup."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from onboarding.domain.inn import InnLookup, LookupStatus


@dataclass(frozen=True, slots=True)
class LookupView:
    request_id: str
    status: LookupStatus
    inn: str | None
    cached: bool
    details: str
    elapsed_seconds: float
    attempts: int
    next_attempt_time: datetime | None
    create_time: datetime
    finish_time: datetime | None

    @property
    def pending(self) -> bool:
        return self.status is LookupStatus.PENDING

    @classmethod
    def of(
        cls, lookup: InnLookup, now: datetime, progress: JobProgress | None = None
    ) -> LookupView:
        """The lookup as it stands; a pending one shows its person's job's ``progress``."""
        end = lookup.finish_time or now
        return cls(
            request_id=lookup.request_id,
            status=lookup.status,
            inn=lookup.inn,
            cached=lookup.cached,
            details=progress.details if progress else lookup.details,
            elapsed_seconds=max((end - lookup.create_time).total_seconds(), 0.0),
            attempts=progress.attempts if progress else lookup.attempts,
            next_attempt_time=progress.next_attempt_time if progress else None,
            create_time=lookup.create_time,
            finish_time=lookup.finish_time,
        )


@dataclass(frozen=True, slots=True)
class JobProgress:
    """Where the upstream work for a pending lookup's person stands."""

    attempts: int
    details: str
    next_attempt_time: datetime | None
