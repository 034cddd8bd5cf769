"""The one entry point the transports call: commands go through the bus, queries to the reader,
and both answer with the read model."""

from __future__ import annotations

from uuid import UUID

from onboarding.domain.agreement import Agreement, OtpPolicy
from onboarding.domain.errors import AgreementNotFound
from onboarding.service_layer import commands
from onboarding.service_layer.messagebus import MessageBus
from onboarding.service_layer.views import AgreementPage, AgreementReader, AgreementView, PageCursor


class AgreementService:
    def __init__(self, bus: MessageBus, reader: AgreementReader, policy: OtpPolicy) -> None:
        self._bus = bus
        self._reader = reader
        self._policy = policy

    async def execute(self, command: commands.Command) -> AgreementView:
        agreement: Agreement = await self._bus.handle(command)
        return AgreementView.of(agreement, self._policy)

    async def get(self, reference: UUID) -> AgreementView:
        agreement = await self._reader.get(reference)
        if agreement is None:
            raise AgreementNotFound()
        return AgreementView.of(agreement, self._policy)

    async def list_by_client(
        self, id_hash: str, page_size: int, after: PageCursor | None
    ) -> AgreementPage:
        rows = await self._reader.list_by_client(id_hash, page_size + 1, after)
        page = rows[:page_size]
        next_cursor = None
        if len(rows) > page_size and page:
            next_cursor = PageCursor(page[-1].create_time, page[-1].reference)
        return AgreementPage([AgreementView.of(a, self._policy) for a in page], next_cursor)
