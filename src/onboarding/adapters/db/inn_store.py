"""The worker side of INN lookups: claim due jobs under a lease, and read lookups as they stand.

A claim is one statement. On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets workers in several
processes claim disjoint jobs. Nothing is claimed while the upstream is paused after a captcha.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import bindparam, exists, select
from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.db import direct
from onboarding.adapters.db.errors import database_errors
from onboarding.adapters.db.inn_repositories import lookup_from_row, open_person, pending_join
from onboarding.adapters.db.leases import LeasedStore, claim_statement
from onboarding.adapters.db.tables import inn_jobs, inn_lookups, upstream_pauses
from onboarding.domain.inn import LookupStatus, PersonData
from onboarding.service_layer.inn_views import JobProgress, LookupView

NALOG = "nalog"
# Nothing is claimed while the upstream is paused after a captcha.
_PAUSED = exists().where(
    upstream_pauses.c.upstream == NALOG, upstream_pauses.c.pause_until > bindparam("now")
)
_CLAIM = claim_statement(
    inn_jobs,
    inn_jobs.c.person_key,
    ~_PAUSED,
    returning=[inn_jobs.c.person_key, inn_jobs.c.attempts, inn_jobs.c.person_sealed],
)


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    person_key: bytes = field(repr=False)
    #: Upstream calls for this person, the one about to be made included.
    attempts: int
    #: None when the sealed data cannot be opened (the secret key changed).
    person: PersonData | None = field(repr=False)


class SqlInnJobStore(LeasedStore):
    async def claim(self, limit: int) -> list[ClaimedJob]:
        rows = await self._claim(_CLAIM, limit)
        claimed = []
        for row in rows:
            try:
                person = open_person(self._sealer, row.person_key, row.person_sealed)
            except (InvalidTag, ValueError, KeyError):
                person = None
            claimed.append(ClaimedJob(row.person_key, row.attempts, person))
        return claimed


_LOOKUP = direct.Statement(
    select(
        inn_lookups,
        inn_jobs.c.attempts.label("job_attempts"),
        inn_jobs.c.details.label("job_details"),
        inn_jobs.c.next_attempt_time,
    )
    .select_from(pending_join())
    .where(inn_lookups.c.request_id == bindparam("request_id"))
)


class SqlInnLookupReader:
    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._engine = engine

    async def get(self, request_id: str) -> LookupView | None:
        with database_errors():
            row: Any = await direct.read_one(self._engine, _LOOKUP, {"request_id": request_id})
        if row is None:
            return None
        lookup = lookup_from_row(row)
        progress = None
        if lookup.status is LookupStatus.PENDING:
            progress = JobProgress(
                attempts=row.job_attempts or 0,
                details=row.job_details or row.details,
                next_attempt_time=row.next_attempt_time,
            )
        return LookupView.of(lookup, self._clock(), progress)
