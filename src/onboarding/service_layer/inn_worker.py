"""The INN worker: takes due jobs (one per person), asks the upstream, records the answer.

Jobs live in the database, so a restart, or another process, picks up what was pending. Each
claim is leased; a worker that dies mid-call leaves the lease to expire and the job to another.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from onboarding.domain.inn import PersonData, UpstreamAnswer, UpstreamVerdict
from onboarding.service_layer import commands
from onboarding.service_layer.messagebus import MessageBus
from onboarding.service_layer.waiting import wait_or_timeout

log = logging.getLogger(__name__)


class Claimed(Protocol):
    @property
    def person_key(self) -> bytes: ...
    @property
    def attempts(self) -> int: ...
    @property
    def person(self) -> PersonData | None: ...


class JobStore(Protocol):
    async def claim(self, limit: int) -> Sequence[Claimed]: ...


class Upstream(Protocol):
    async def find_inn(self, person: PersonData) -> UpstreamAnswer: ...


class InnWorker:
    def __init__(
        self,
        *,
        store: JobStore,
        upstream: Upstream,
        bus: MessageBus,
        concurrency: int,
        poll_seconds: float,
        attempt_timeout: float,
        max_attempts: int,
        on_answer: Callable[[str], None] = lambda _verdict: None,
    ) -> None:
        self._store = store
        self._upstream = upstream
        self._bus = bus
        self._concurrency = concurrency
        self._poll_seconds = poll_seconds
        self._attempt_timeout = attempt_timeout
        self._max_attempts = max_attempts
        self._on_answer = on_answer
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()

    def notify(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                free = self._concurrency - len(self._running)
                claimed: Sequence[Claimed] = []
                if free > 0:
                    try:
                        claimed = await self._store.claim(free)
                    except asyncio.CancelledError:
                        raise
                    except Exception as error:  # the database may be down: keep trying
                        log.warning("inn worker: claim failed: %s", type(error).__name__)
                for job in claimed:
                    task = asyncio.create_task(self._work(job))
                    self._running.add(task)
                    task.add_done_callback(self._done)
                if not claimed or len(self._running) >= self._concurrency:
                    await wait_or_timeout(self._wake, self._poll_seconds)
        finally:
            for task in self._running:
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()  # a slot is free

    async def _work(self, job: Claimed) -> None:
        if job.person is None:
            answer = UpstreamAnswer(UpstreamVerdict.REJECTED, detail="stored data unreadable")
        elif job.attempts > self._max_attempts:
            # Each claim counts an attempt. Claimed more often than attempts are allowed, the
            # job's answers were never recorded (see below): ask no more, end it.
            answer = UpstreamAnswer(UpstreamVerdict.FAULT, detail="answers could not be recorded")
        else:
            try:
                # Inside the lease: past it another worker may take the job and call again.
                async with asyncio.timeout(self._attempt_timeout):
                    answer = await self._upstream.find_inn(job.person)
            except TimeoutError:
                answer = UpstreamAnswer(UpstreamVerdict.FAULT, detail="attempt took too long")
        log.info("inn lookup: %s %s (attempt %d)", answer.verdict, answer.detail, job.attempts)
        self._on_answer(answer.verdict.value)
        try:
            await self._bus.handle(
                commands.RecordUpstreamAnswer(job.person_key, answer, job.attempts)
            )
        except Exception as error:
            # The lease runs out and the job is tried again; nothing is lost.
            log.warning("inn worker: could not record an answer: %s", type(error).__name__)
