"""The message bus: runs a command's handler in one unit of work, then the handlers of the
events the domain raised, in the same transaction, then commits.

Handling events before the commit is what makes the outbox sound: the agreement change and the
SMS it asks for are written together or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from onboarding.domain.errors import DomainError
from onboarding.domain.events import Event
from onboarding.service_layer.commands import Command
from onboarding.service_layer.errors import WriteConflict
from onboarding.service_layer.unit_of_work import UnitOfWork, collect_new_events

log = logging.getLogger(__name__)

CommandHandler = Callable[[Any, UnitOfWork], Awaitable[Any]]
EventHandler = Callable[[Any, UnitOfWork], Awaitable[None]]
AfterCommit = Callable[[UnitOfWork], None]

#: A command whose transaction lost a race on a unique key is run again this many times.
_MAX_TRIES = 3


class MessageBus:
    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        command_handlers: Mapping[type[Command], CommandHandler],
        event_handlers: Mapping[type[Event], Sequence[EventHandler]],
        after_commit: Sequence[AfterCommit] = (),
    ) -> None:
        self._uow_factory = uow_factory
        self._command_handlers = command_handlers
        self._event_handlers = event_handlers
        self._after_commit = after_commit

    async def handle(self, command: Command) -> Any:
        handler = self._command_handlers[type(command)]
        for attempt in range(1, _MAX_TRIES + 1):
            try:
                return await self._run(handler, command)
            except WriteConflict:
                if attempt == _MAX_TRIES:
                    raise
                log.info("write conflict on %s, retrying", type(command).__name__)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run(self, handler: CommandHandler, command: Command) -> Any:
        async with self._uow_factory() as uow:
            try:
                result = await handler(command, uow)
            except DomainError as error:
                if error.persists:
                    await self._finish(uow)
                raise
            await self._finish(uow)
        return result

    async def _finish(self, uow: UnitOfWork) -> None:
        pending = list(collect_new_events(uow))
        while pending:
            event = pending.pop(0)
            for event_handler in self._event_handlers.get(type(event), ()):
                await event_handler(event, uow)
            pending.extend(collect_new_events(uow))
        await uow.commit()
        for callback in self._after_commit:
            callback(uow)
