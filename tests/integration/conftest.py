"""Fixtures of the integration tests: engines on real databases of both kinds, a clock to move,
and agreements made by the domain itself."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.crypto import Keyring
from onboarding.adapters.db import direct, migrate
from onboarding.adapters.db.engine import create_engine
from onboarding.adapters.db.unit_of_work import SqlUnitOfWork
from onboarding.domain.agreement import Agreement, OtpPolicy
from onboarding.domain.events import OtpIssued
from onboarding.domain.phone import PhoneNumber
from onboarding.domain.quota import PhoneSendQuota
from tests.conftest import SECRET_KEY, Databases, random_client, random_phone

KEYRING = Keyring(SECRET_KEY.encode())
POLICY = OtpPolicy()
#: An instant with microseconds (odd ones, so rounding would show), far from the real clock.
T0 = datetime(2031, 5, 6, 7, 8, 9, 123457, tzinfo=UTC)


class MutableClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> MutableClock:
    return MutableClock()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the session's migrated database of the kind under test."""
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def fresh_database_url(databases: Databases, db_kind: str) -> str:
    """A migrated database of the test's own. Tests that write outbox rows use one: in the
    shared database the relays of the end-to-end servers would pick those rows up (and send
    them to their gateway), and rows of other tests would be claimed here."""
    url = await databases.create(db_kind)
    await migrate.upgrade(url)
    return url


@pytest.fixture
async def fresh_engine(fresh_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(fresh_database_url)
    yield engine
    await engine.dispose()


def unit_of_work(
    engine: AsyncEngine, clock: Any = None, keyring: Keyring = KEYRING
) -> SqlUnitOfWork:
    return SqlUnitOfWork(engine, keyring.sealer, clock or MutableClock())


def new_agreement(
    now: datetime = T0,
    *,
    id_hash: str | None = None,
    request_id: str | None = None,
    with_otp: bool = True,
) -> Agreement:
    """A pending agreement for a fresh phone, made by ``Agreement.create`` (+ ``issue_otp``)."""
    phone = PhoneNumber.parse(random_phone())
    phone_mac = KEYRING.phones(phone.e164.encode())
    agreement = Agreement.create(
        id_hash=id_hash or random_client(),
        phone=phone,
        phone_mac=phone_mac,
        request_id=request_id,
        now=now,
    )
    if with_otp:
        agreement.issue_otp(
            now=now,
            policy=POLICY,
            hasher=KEYRING.codes,
            quota=PhoneSendQuota(phone_mac=phone_mac),
        )
    return agreement


def issued(agreement: Agreement) -> OtpIssued:
    """The last code the agreement issued (the code itself lives only in this event)."""
    return [e for e in agreement.events if isinstance(e, OtpIssued)][-1]


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """Collects the SQL text of every statement the engine sends while inside: through
    SQLAlchemy, and run by the driver directly (see ``direct``)."""

    def record(
        _conn: Any, _cursor: Any, statement: str, _params: Any, _ctx: Any, _many: bool
    ) -> None:
        seen.append(statement)

    with direct.watch(engine) as seen:
        event.listen(engine.sync_engine, "before_cursor_execute", record)
        try:
            yield seen
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", record)


def updates(seen: list[str]) -> list[str]:
    return [s for s in seen if s.lstrip().upper().startswith("UPDATE")]
