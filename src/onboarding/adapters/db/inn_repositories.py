"""Repositories of the INN lookup, over the unit of work's connection.

The person's job row is the lock that orders everything about one person: starting a lookup
upserts it (which locks it) and recording an answer updates or deletes it first. So a lookup
that joins a job is either committed before the answer is recorded (and receives it) or sees
the job gone and its answer stored.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, insert, literal_column, select, true, update
from sqlalchemy.dialects import postgresql, sqlite

from onboarding.adapters.crypto import Sealer
from onboarding.adapters.db.direct import Connection, Statement
from onboarding.adapters.db.tables import (
    inn_jobs,
    inn_lookups,
    inn_results,
    pending,
    upstream_pauses,
)
from onboarding.adapters.db.types import UtcDateTime
from onboarding.domain.inn import (
    STORED_ANSWER_DETAILS,
    InnLookup,
    LookupStatus,
    PersonData,
    StoredAnswer,
)

# Built once; values bound at execution (see ``direct``).
_LOOKUP = Statement(select(inn_lookups).where(inn_lookups.c.request_id == bindparam("request_id")))
_INSERT_LOOKUP = Statement(insert(inn_lookups))
_STORED = Statement(
    select(inn_results.c.status, inn_results.c.inn, inn_results.c.expire_time).where(
        inn_results.c.person_key == bindparam("person_key")
    )
)
_FINISH_PENDING = Statement(
    update(inn_lookups)
    .where(inn_lookups.c.person_key == bindparam("key"), pending(inn_lookups))
    .values(
        status=bindparam("status"),
        inn=bindparam("inn"),
        details=bindparam("details"),
        attempts=bindparam("attempts"),
        finish_time=bindparam("now"),
    )
)
_RESCHEDULE_JOB = Statement(
    update(inn_jobs)
    .where(inn_jobs.c.person_key == bindparam("key"))
    .values(
        next_attempt_time=bindparam("at"),
        lease_expire_time=None,
        details=bindparam("details"),
        # 0 or 1: the attempt the claim counted, given back when no call was made.
        attempts=inn_jobs.c.attempts - bindparam("uncounted"),
    )
)
_REMOVE_JOB = Statement(delete(inn_jobs).where(inn_jobs.c.person_key == bindparam("key")))


def _per_dialect(build: Any) -> dict[str, Statement]:
    """A statement written with each dialect's INSERT (for ON CONFLICT)."""
    return {
        "postgresql": Statement(build(postgresql.insert)),
        "sqlite": Statement(build(sqlite.insert)),
    }


def _job_upsert(dialect_insert: Any) -> Any:
    """The person's job, made if missing and locked either way, in one statement."""
    stmt = dialect_insert(inn_jobs).values(
        person_key=bindparam("person_key"),
        person_sealed=bindparam("person_sealed"),
        attempts=0,
        details="waiting for service.nalog.ru",
        next_attempt_time=bindparam("now"),
        create_time=bindparam("now"),
    )
    return stmt.on_conflict_do_update(
        index_elements=[inn_jobs.c.person_key],
        set_={"person_key": stmt.excluded.person_key},
    )


def _result_upsert(dialect_insert: Any) -> Any:
    values = {
        "status": bindparam("status"),
        "inn": bindparam("inn"),
        "fetch_time": bindparam("now"),
        "expire_time": bindparam("expire_time"),
    }
    stmt = dialect_insert(inn_results).values(person_key=bindparam("person_key"), **values)
    return stmt.on_conflict_do_update(index_elements=[inn_results.c.person_key], set_=values)


def _pause_upsert(dialect_insert: Any) -> Any:
    """Pauses an upstream until a time, never shortening a longer pause."""
    stmt = dialect_insert(upstream_pauses).values(
        upstream=bindparam("upstream"), pause_until=bindparam("until")
    )
    return stmt.on_conflict_do_update(
        index_elements=[upstream_pauses.c.upstream],
        set_={"pause_until": stmt.excluded.pause_until},
        where=upstream_pauses.c.pause_until < stmt.excluded.pause_until,
    )


def _lookup_from_stored_answer(dialect_insert: Any) -> Any:
    """``InnLookup.from_stored_answer`` as one statement: the finished lookup is copied from the
    person's stored answer when that is fresh (``StoredAnswer.fresh``), unless the request_id is
    taken. The details come as values, from the domain's STORED_ANSWER_DETAILS."""
    now = bindparam("now", type_=UtcDateTime)
    text = inn_lookups.c.details.type
    stored = inn_results.c
    fresh_answer = select(
        bindparam("request_id", type_=inn_lookups.c.request_id.type),
        stored.person_key,
        stored.status,
        stored.inn,
        true(),
        case(
            (stored.status == LookupStatus.FOUND.value, bindparam("found_details", type_=text)),
            else_=bindparam("not_found_details", type_=text),
        ),
        literal_column("0"),
        now,
        now,
    ).where(stored.person_key == bindparam("person_key"), now < stored.expire_time)
    columns = ["request_id", "person_key", "status", "inn", "cached", "details", "attempts"]
    return (
        dialect_insert(inn_lookups)
        .from_select([*columns, "create_time", "finish_time"], fresh_answer)
        .on_conflict_do_nothing(index_elements=[inn_lookups.c.request_id])
        .returning(*inn_lookups.c)
    )


_ADD_FROM_STORED_ANSWER = _per_dialect(_lookup_from_stored_answer)
_STORED_ANSWER_DETAILS = {
    "found_details": STORED_ANSWER_DETAILS[LookupStatus.FOUND],
    "not_found_details": STORED_ANSWER_DETAILS[LookupStatus.NOT_FOUND],
}
_UPSERT_JOB = _per_dialect(_job_upsert)
_UPSERT_RESULT = _per_dialect(_result_upsert)
_UPSERT_PAUSE = _per_dialect(_pause_upsert)


def lookup_from_row(row: Any) -> InnLookup:
    return InnLookup(
        request_id=row.request_id,
        person_key=row.person_key,
        status=LookupStatus(row.status),
        create_time=row.create_time,
        inn=row.inn,
        cached=row.cached,
        details=row.details,
        attempts=row.attempts,
        finish_time=row.finish_time,
    )


def seal_person(sealer: Sealer, person_key: bytes, person: PersonData) -> bytes:
    fields = {
        "last_name": person.last_name,
        "first_name": person.first_name,
        "middle_name": person.middle_name,
        "birth_date": person.birth_date.isoformat(),
        "document_serial": person.document_serial,
        "document_number": person.document_number,
        "document_date": person.document_date.isoformat(),
    }
    return sealer.seal(json.dumps(fields, ensure_ascii=False).encode(), person_key)


def open_person(sealer: Sealer, person_key: bytes, sealed: bytes) -> PersonData:
    fields = json.loads(sealer.open(sealed, person_key))
    return PersonData(
        last_name=fields["last_name"],
        first_name=fields["first_name"],
        middle_name=fields["middle_name"],
        birth_date=date.fromisoformat(fields["birth_date"]),
        document_serial=fields["document_serial"],
        document_number=fields["document_number"],
        document_date=date.fromisoformat(fields["document_date"]),
    )


def _lookup_row(lookup: InnLookup) -> dict[str, Any]:
    return {
        "request_id": lookup.request_id,
        "person_key": lookup.person_key,
        "status": lookup.status.value,
        "inn": lookup.inn,
        "cached": lookup.cached,
        "details": lookup.details,
        "attempts": lookup.attempts,
        "create_time": lookup.create_time,
        "finish_time": lookup.finish_time,
    }


class SqlInnLookupRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        #: People whose lookups this transaction finished: their waiters are woken on commit.
        self.finished_people: set[bytes] = set()

    async def get(self, request_id: str) -> InnLookup | None:
        row = await self._conn.fetch_one(_LOOKUP, {"request_id": request_id})
        return lookup_from_row(row) if row is not None else None

    async def add(self, lookup: InnLookup) -> None:
        await self._conn.execute(_INSERT_LOOKUP, _lookup_row(lookup))

    async def add_from_stored_answer(
        self, request_id: str, person_key: bytes, now: datetime
    ) -> InnLookup | None:
        row = await self._conn.fetch_one(
            _ADD_FROM_STORED_ANSWER[self._conn.dialect_name],
            {
                "request_id": request_id,
                "person_key": person_key,
                "now": now,
                **_STORED_ANSWER_DETAILS,
            },
        )
        return lookup_from_row(row) if row is not None else None

    async def finish_pending(
        self,
        person_key: bytes,
        *,
        status: LookupStatus,
        inn: str | None,
        details: str,
        attempts: int,
        now: datetime,
    ) -> None:
        await self._conn.execute(
            _FINISH_PENDING,
            {
                "key": person_key,
                "status": status.value,
                "inn": inn,
                "details": details,
                "attempts": attempts,
                "now": now,
            },
        )
        self.finished_people.add(person_key)


class SqlInnJobRepository:
    def __init__(self, conn: Connection, sealer: Sealer) -> None:
        self._conn = conn
        self._sealer = sealer
        self.started = 0

    async def join_or_start(self, person_key: bytes, person: PersonData, now: datetime) -> None:
        """The person's job, made if missing and locked either way, in one statement."""
        await self._conn.execute(
            _UPSERT_JOB[self._conn.dialect_name],
            {
                "person_key": person_key,
                "person_sealed": seal_person(self._sealer, person_key, person),
                "now": now,
            },
        )
        self.started += 1

    async def reschedule(
        self, person_key: bytes, next_attempt_time: datetime, details: str, *, attempted: bool
    ) -> None:
        await self._conn.execute(
            _RESCHEDULE_JOB,
            {
                "key": person_key,
                "at": next_attempt_time,
                "details": details,
                "uncounted": 0 if attempted else 1,
            },
        )

    async def remove(self, person_key: bytes) -> None:
        """Ends the job, and with it the only stored copy of the passport data."""
        await self._conn.execute(_REMOVE_JOB, {"key": person_key})


class SqlInnResultRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def get(self, person_key: bytes) -> StoredAnswer | None:
        row = await self._conn.fetch_one(_STORED, {"person_key": person_key})
        if row is None:
            return None
        return StoredAnswer(LookupStatus(row.status), row.inn, row.expire_time)

    async def put(
        self,
        person_key: bytes,
        *,
        status: LookupStatus,
        inn: str | None,
        now: datetime,
        expire_time: datetime,
    ) -> None:
        await self._conn.execute(
            _UPSERT_RESULT[self._conn.dialect_name],
            {
                "person_key": person_key,
                "status": status.value,
                "inn": inn,
                "now": now,
                "expire_time": expire_time,
            },
        )


class SqlUpstreamPauses:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def pause(self, upstream: str, until: datetime) -> None:
        """Pauses calls to ``upstream`` until ``until`` (never shortens a longer pause)."""
        await self._conn.execute(
            _UPSERT_PAUSE[self._conn.dialect_name], {"upstream": upstream, "until": until}
        )


def pending_join() -> Any:
    """lookups LEFT JOIN their person's job, for the progress of a pending lookup."""
    return inn_lookups.outerjoin(
        inn_jobs,
        and_(inn_jobs.c.person_key == inn_lookups.c.person_key, pending(inn_lookups)),
    )
