"""The entry point for INN lookups: start or join, then wait a bounded time for the answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from onboarding.domain.errors import LookupNotFound
from onboarding.domain.inn import InnLookup, LookupStatus, PersonData
from onboarding.service_layer import commands
from onboarding.service_layer.inn_views import LookupView
from onboarding.service_layer.messagebus import MessageBus
from onboarding.service_layer.unit_of_work import AutocommitWork, UnitOfWork
from onboarding.service_layer.waiting import wait_or_timeout


class LookupReader(Protocol):
    async def get(self, request_id: str) -> LookupView | None: ...


class Waiters:
    """In-process wake-ups per person: the worker here finished their job. Lookups worked by
    another process are noticed by polling the database.

    Every waiter has an event of its own, so one waiter arming can never swallow a wake-up
    meant for another."""

    def __init__(self) -> None:
        self._events: dict[bytes, set[asyncio.Event]] = {}

    def wake(self, person_key: bytes) -> None:
        for event in self._events.get(person_key, ()):
            event.set()

    def wake_finished(self, uow: UnitOfWork) -> None:
        for person_key in uow.inn_lookups.finished_people:
            self.wake(person_key)

    def wake_all(self) -> None:
        for events in self._events.values():
            for event in events:
                event.set()

    def arm(self, person_key: bytes) -> asyncio.Event:
        event = asyncio.Event()
        self._events.setdefault(person_key, set()).add(event)
        return event

    def disarm(self, person_key: bytes, event: asyncio.Event) -> None:
        events = self._events.get(person_key)
        if events is not None:
            events.discard(event)
            if not events:
                del self._events[person_key]


class InnService:
    def __init__(
        self,
        *,
        bus: MessageBus,
        autocommit_work: Callable[[], AutocommitWork],
        reader: LookupReader,
        person_key: Callable[[PersonData], bytes],
        waiters: Waiters,
        wake_worker: Callable[[], None],
        clock: Callable[[], datetime],
        poll_seconds: float = 0.5,
        on_answer: Callable[[str, bool], None] = lambda _status, _cached: None,
    ) -> None:
        self._bus = bus
        self._autocommit_work = autocommit_work
        self._reader = reader
        self._person_key = person_key
        self._waiters = waiters
        self._wake_worker = wake_worker
        self._clock = clock
        self._poll_seconds = poll_seconds
        self._on_answer = on_answer
        self._stopping = False

    async def find(self, request_id: str, person: PersonData, wait_seconds: float) -> LookupView:
        person_key = self._person_key(person)
        lookup = await self._from_stored_answer(request_id, person_key)
        if lookup is None:
            lookup = await self._bus.handle(commands.StartInnLookup(request_id, person, person_key))
        if lookup.status is LookupStatus.PENDING:
            self._wake_worker()
            view = await self._wait(request_id, person_key, wait_seconds)
        else:
            view = LookupView.of(lookup, self._clock())
        self._on_answer(view.status.value, view.cached)
        return view

    async def _from_stored_answer(self, request_id: str, person_key: bytes) -> InnLookup | None:
        """A new lookup of a person whose answer is stored and fresh: the finished lookup,
        added in one statement that commits on its own (no transaction: it depends on no lock).
        None sends the call the full way (``start_lookup``), which answers a known request_id
        and orders a new lookup against the person's job."""
        async with self._autocommit_work() as work:
            return await work.inn_lookups.add_from_stored_answer(
                request_id, person_key, self._clock()
            )

    def stop_waiting(self) -> None:
        """The server is shutting down: every FindInn waiting for an answer answers with the
        lookup as it stands now (PENDING), within the shutdown's grace, and none waits again.
        The caller polls GetInnLookup, served by another process by then."""
        self._stopping = True
        self._waiters.wake_all()

    async def get(self, request_id: str) -> LookupView:
        view = await self._reader.get(request_id)
        if view is None:
            raise LookupNotFound()
        return view

    async def _wait(self, request_id: str, person_key: bytes, wait_seconds: float) -> LookupView:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait_seconds, 0.0)
        while True:
            # Armed before reading, so a wake-up between the read and the wait is kept.
            event = self._waiters.arm(person_key)
            try:
                view = await self.get(request_id)
                remaining = deadline - loop.time()
                if not view.pending or remaining <= 0 or self._stopping:
                    return view
                await wait_or_timeout(event, min(remaining, self._poll_seconds))
            finally:
                self._waiters.disarm(person_key, event)
