"""The INN worker over the real job store, against the fake service.nalog.ru."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

from onboarding import bootstrap
from onboarding.adapters.db.inn_store import SqlInnJobStore
from onboarding.domain.inn import LookupStatus, PersonData
from tests.conftest import eventually
from tests.conftest import test_settings as settings_for
from tests.e2e.test_inn_helpers import number, person
from tests.fakes.clock import FakeClock
from tests.fakes.nalog import FakeNalog

LEASE = 30.0


async def test_a_job_claimed_more_often_than_attempts_allowed_is_ended_without_asking(
    fresh_database_url: str, nalog: FakeNalog
) -> None:
    # Each claim counts an attempt. A job whose answers never got recorded (the lease ran out
    # every time) comes back again and again; past the attempts allowed it must be ended, not
    # sent upstream once more, for ever.
    clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
    settings = settings_for(
        fresh_database_url,
        nalog_base_url=nalog.base_url,
        inn_max_attempts=2,
        inn_wait_seconds=0,
        work_lease_seconds=LEASE,
    )
    container = bootstrap.build(settings, clock=clock)
    doc = number()
    try:
        data = PersonData.parse(**person(doc), today=date(2030, 1, 1))
        started = await container.inn.find("stuck-1", data, 0)
        assert started.status is LookupStatus.PENDING
        store = SqlInnJobStore(
            container.engine, container.keyring.sealer, clock, timedelta(seconds=LEASE)
        )
        for attempt in (1, 2):  # claimed, and the lease ran out before anything was recorded
            [job] = await store.claim(5)
            assert job.attempts == attempt
            clock.advance(LEASE + 1)

        working = asyncio.create_task(container.inn_worker.run())
        try:

            async def ended() -> bool:
                return (await container.inn.get("stuck-1")).status is not LookupStatus.PENDING

            await eventually(ended)
        finally:
            working.cancel()
            await asyncio.gather(working, return_exceptions=True)

        lookup = await container.inn.get("stuck-1")
        assert (lookup.status, lookup.attempts) == (LookupStatus.FAILED, 3)
        assert "could not be recorded" in lookup.details
        assert nalog.finds[doc] == 0
    finally:
        await container.aclose()
