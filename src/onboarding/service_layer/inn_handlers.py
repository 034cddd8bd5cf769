"""Handlers of the INN lookup commands."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from onboarding.domain import errors
from onboarding.domain.inn import InnLookup, LookupPolicy, LookupStatus, decide
from onboarding.service_layer import commands
from onboarding.service_layer.unit_of_work import UnitOfWork

NALOG = "nalog"


class InnHandlers:
    def __init__(self, *, policy: LookupPolicy, clock: Callable[[], datetime]) -> None:
        self._policy = policy
        self._clock = clock

    async def start_lookup(self, cmd: commands.StartInnLookup, uow: UnitOfWork) -> InnLookup:
        """Joins the lookup named by the request_id, answers from a stored result, or starts
        (or joins) the person's job, whose one upstream call serves every lookup of them."""
        existing = await uow.inn_lookups.get(cmd.request_id)
        if existing is not None:
            if not existing.same_person(cmd.person_key):
                raise errors.RequestIdConflict()
            return existing
        now = self._clock()
        stored = await uow.inn_results.get(cmd.person_key)
        if stored is None or not stored.fresh(now):
            await uow.inn_jobs.join_or_start(cmd.person_key, cmd.person, now)
            # The upsert waits while another transaction records the person's answer; once it
            # has, the answer is stored and the job we hold was made just now, for nothing.
            stored = await uow.inn_results.get(cmd.person_key)
            if stored is not None and stored.fresh(now):
                await uow.inn_jobs.remove(cmd.person_key)
        if stored is not None and stored.fresh(now):
            lookup = InnLookup.from_stored_answer(cmd.request_id, cmd.person_key, stored, now)
        else:
            lookup = InnLookup.start(cmd.request_id, cmd.person_key, now)
        await uow.inn_lookups.add(lookup)
        return lookup

    async def record_answer(self, cmd: commands.RecordUpstreamAnswer, uow: UnitOfWork) -> None:
        now = self._clock()
        decision = decide(cmd.answer, attempts=cmd.attempts, now=now, policy=self._policy)
        # The job row goes first: it is the lock that orders this against joining lookups.
        if decision.status is LookupStatus.PENDING:
            assert decision.next_attempt_time is not None
            await uow.inn_jobs.reschedule(
                cmd.person_key,
                decision.next_attempt_time,
                decision.details,
                attempted=decision.attempted,
            )
        else:
            await uow.inn_jobs.remove(cmd.person_key)
            await uow.inn_lookups.finish_pending(
                cmd.person_key,
                status=decision.status,
                inn=decision.inn,
                details=decision.details,
                attempts=cmd.attempts,
                now=now,
            )
            if decision.cache_for is not None:
                await uow.inn_results.put(
                    cmd.person_key,
                    status=decision.status,
                    inn=decision.inn,
                    now=now,
                    expire_time=now + decision.cache_for,
                )
        if decision.pause_until is not None:
            await uow.upstream_pauses.pause(NALOG, decision.pause_until)
