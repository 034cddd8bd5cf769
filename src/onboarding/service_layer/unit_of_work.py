"""The unit of work and the repositories it offers, as the service layer sees them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Protocol
from uuid import UUID

from onboarding.domain.agreement import Agreement
from onboarding.domain.events import Event
from onboarding.domain.inn import InnLookup, LookupStatus, PersonData, StoredAnswer
from onboarding.domain.quota import PhoneSendQuota


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    message_id: UUID
    agreement_reference: UUID
    phone_e164: str = field(repr=False)
    text: str = field(repr=False)


class AgreementRepository(Protocol):
    async def add(self, agreement: Agreement) -> None: ...

    async def get_for_update(self, reference: UUID) -> Agreement | None: ...

    async def get_by_request_id(self, request_id: str) -> Agreement | None:
        """The agreement made with this request id, as committed, to answer a repeated
        CreateAgreement with: read without a lock, and not saved if changed (``get_for_update``
        is for changes). Two creates racing with one request id are settled by the database's
        unique key: the loser's unit of work fails with a write conflict, and runs again."""
        ...

    @property
    def seen(self) -> Iterator[Agreement]: ...


class PhoneQuotaRepository(Protocol):
    async def get_for_update(self, phone_mac: bytes) -> PhoneSendQuota: ...


class Outbox(Protocol):
    async def add(self, message: OutgoingSms) -> None: ...

    async def expedite(self, message_id: UUID) -> None:
        """Makes a queued message that waits for a retry due now; any other stays as it is."""
        ...

    @property
    def added(self) -> int: ...


class InnLookupRepository(Protocol):
    finished_people: set[bytes]

    async def get(self, request_id: str) -> InnLookup | None: ...

    async def add(self, lookup: InnLookup) -> None: ...

    async def add_from_stored_answer(
        self, request_id: str, person_key: bytes, now: datetime
    ) -> InnLookup | None:
        """In one statement: ``InnLookup.from_stored_answer`` of the person's stored answer,
        added, when that answer is fresh at ``now`` and the request_id is new; else None."""
        ...

    async def finish_pending(
        self,
        person_key: bytes,
        *,
        status: LookupStatus,
        inn: str | None,
        details: str,
        attempts: int,
        now: datetime,
    ) -> None: ...


class InnJobRepository(Protocol):
    started: int

    async def join_or_start(self, person_key: bytes, person: PersonData, now: datetime) -> None: ...

    async def reschedule(
        self, person_key: bytes, next_attempt_time: datetime, details: str, *, attempted: bool
    ) -> None:
        """Back in the queue; ``attempted`` False gives back the attempt its claim counted."""
        ...

    async def remove(self, person_key: bytes) -> None: ...


class InnResultRepository(Protocol):
    async def get(self, person_key: bytes) -> StoredAnswer | None: ...

    async def put(
        self,
        person_key: bytes,
        *,
        status: LookupStatus,
        inn: str | None,
        now: datetime,
        expire_time: datetime,
    ) -> None: ...


class UpstreamPauses(Protocol):
    async def pause(self, upstream: str, until: datetime) -> None: ...


class _ConnectionScope(Protocol):
    """Holds one connection from entering to leaving, and gives it back either way."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class UnitOfWork(_ConnectionScope, Protocol):
    """One transaction. Rolls back on leaving unless ``commit`` was called."""

    agreements: AgreementRepository
    phone_quotas: PhoneQuotaRepository
    outbox: Outbox
    inn_lookups: InnLookupRepository
    inn_jobs: InnJobRepository
    inn_results: InnResultRepository
    upstream_pauses: UpstreamPauses

    async def __aenter__(self) -> UnitOfWork: ...

    async def commit(self) -> None: ...


class AutocommitWork(_ConnectionScope, Protocol):
    """Repositories over one connection with no transaction: every call is one statement that
    commits on its own. Only for work whose statements stand alone (see InnService.find)."""

    inn_lookups: InnLookupRepository

    async def __aenter__(self) -> AutocommitWork: ...


def collect_new_events(uow: UnitOfWork) -> Iterator[Event]:
    for agreement in uow.agreements.seen:
        while agreement.events:
            yield agreement.events.pop(0)
