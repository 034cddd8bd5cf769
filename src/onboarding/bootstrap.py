"""The one place that wires the service: settings in, a running set of parts out."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters import metrics
from onboarding.adapters.crypto import Keyring
from onboarding.adapters.db.engine import create_engine
from onboarding.adapters.db.inn_store import SqlInnJobStore, SqlInnLookupReader
from onboarding.adapters.db.outbox_store import SqlOutboxStore
from onboarding.adapters.db.reader import SqlAgreementReader
from onboarding.adapters.db.unit_of_work import SqlAutocommitWork, SqlUnitOfWork
from onboarding.adapters.nalog import NalogClient
from onboarding.adapters.rate_limit import RateLimiter
from onboarding.adapters.sms import ConsoleSmsBackend, HttpSmsGateway, SmsBackend
from onboarding.adapters.sms_process import SmsSenderProcess
from onboarding.config import Settings
from onboarding.domain import events
from onboarding.domain.retry import RetryPolicy
from onboarding.service_layer import commands
from onboarding.service_layer.agreement_service import AgreementService
from onboarding.service_layer.handlers import AgreementHandlers
from onboarding.service_layer.inn_handlers import InnHandlers
from onboarding.service_layer.inn_service import InnService, Waiters
from onboarding.service_layer.inn_worker import InnWorker
from onboarding.service_layer.messagebus import MessageBus
from onboarding.service_layer.outbox_relay import OutboxRelay
from onboarding.service_layer.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Container:
    settings: Settings
    clock: Clock
    engine: AsyncEngine
    keyring: Keyring
    agreements: AgreementService
    reader: SqlAgreementReader
    relay: OutboxRelay
    outbox: SqlOutboxStore
    sms: SmsBackend
    inn: InnService
    inn_worker: InnWorker
    nalog: NalogClient
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start_background(self) -> None:
        """Start the workers that live in the server process: the outbox relay and the INN
        worker."""
        self._tasks.append(asyncio.create_task(self.relay.run(), name="outbox-relay"))
        self._tasks.append(asyncio.create_task(self.inn_worker.run(), name="inn-worker"))
        self._tasks.append(asyncio.create_task(self._observe_backlog(), name="outbox-backlog"))

    async def _observe_backlog(self, every: float = 5.0) -> None:
        while True:
            try:
                count, oldest = await self.outbox.backlog()
                metrics.record_backlog(count, oldest, self.clock())
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: S110 - the database may be down; health says so
                pass
            await asyncio.sleep(every)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.sms.close()
        await self.nalog.close()
        await self.engine.dispose()


def build(
    settings: Settings, *, clock: Clock = utc_now, sms: SmsBackend | None = None
) -> Container:
    keyring = Keyring(resolve_secret(settings))
    engine = create_engine(
        settings.database_url,
        timeout=settings.database_timeout_seconds,
        pool_size=settings.database_pool_size,
        sqlite_commit_delay=settings.sqlite_commit_delay_seconds,
    )
    policy = settings.otp_policy
    sms = sms or sms_backend(settings)
    outbox = SqlOutboxStore(
        engine, keyring.sealer, clock, timedelta(seconds=settings.work_lease_seconds)
    )
    relay = OutboxRelay(
        store=outbox,
        sender=sms,
        retry=RetryPolicy(
            first_delay=timedelta(seconds=settings.sms_retry_first_delay_seconds),
            max_delay=timedelta(seconds=settings.sms_retry_max_delay_seconds),
            max_attempts=settings.sms_max_attempts,
        ),
        clock=clock,
        poll_seconds=settings.outbox_poll_seconds,
        on_outcome=metrics.record_sms,
    )
    handlers = AgreementHandlers(
        policy=policy,
        hasher=keyring.codes,
        phone_mac=lambda e164: keyring.phones(e164.encode()),
        message_template=settings.otp_message_template,
        clock=clock,
    )

    def uow_factory() -> UnitOfWork:
        return SqlUnitOfWork(engine, keyring.sealer, clock)

    def wake_relay(uow: UnitOfWork) -> None:
        if uow.outbox.added:
            relay.notify()

    inn_handlers = InnHandlers(policy=settings.lookup_policy, clock=clock)
    waiters = Waiters()
    bus = MessageBus(
        uow_factory,
        command_handlers={
            commands.CreateAgreement: handlers.create_agreement,
            commands.SendOtp: handlers.send_otp,
            commands.ConfirmOtp: handlers.confirm_otp,
            commands.RevokeAgreement: handlers.revoke_agreement,
            commands.StartInnLookup: inn_handlers.start_lookup,
            commands.RecordUpstreamAnswer: inn_handlers.record_answer,
        },
        event_handlers={
            events.AgreementCreated: [handlers.send_first_code],
            events.OtpIssued: [handlers.enqueue_sms],
        },
        after_commit=[wake_relay, waiters.wake_finished],
    )
    reader = SqlAgreementReader(engine)
    nalog = NalogClient(
        settings.nalog_base_url,
        limiter=RateLimiter(settings.nalog_max_rps),
        timeout_seconds=settings.nalog_timeout_seconds,
        poll_interval_seconds=settings.nalog_poll_interval_seconds,
        max_polls=settings.nalog_max_polls,
        captcha_pause_seconds=settings.inn_captcha_pause_seconds,
    )
    inn_worker = InnWorker(
        store=SqlInnJobStore(
            engine, keyring.sealer, clock, timedelta(seconds=settings.work_lease_seconds)
        ),
        upstream=nalog,
        bus=bus,
        concurrency=settings.inn_worker_concurrency,
        poll_seconds=settings.outbox_poll_seconds,
        attempt_timeout=settings.work_lease_seconds * 0.8,
        max_attempts=settings.lookup_policy.max_attempts,
        on_answer=metrics.record_nalog_call,
    )
    inn = InnService(
        bus=bus,
        autocommit_work=lambda: SqlAutocommitWork(engine),
        reader=SqlInnLookupReader(engine, clock),
        person_key=lambda person: keyring.persons(*person.key_material()),
        waiters=waiters,
        wake_worker=inn_worker.notify,
        clock=clock,
        on_answer=metrics.record_lookup,
    )
    return Container(
        settings=settings,
        clock=clock,
        engine=engine,
        keyring=keyring,
        agreements=AgreementService(bus, reader, policy),
        reader=reader,
        relay=relay,
        outbox=outbox,
        sms=sms,
        inn=inn,
        inn_worker=inn_worker,
        nalog=nalog,
    )


def sms_backend(settings: Settings) -> SmsBackend:
    if settings.sms_gateway_url:
        token = settings.sms_gateway_token
        secret = token.get_secret_value() if token else None
        if settings.sms_sender_process:
            return SmsSenderProcess(
                settings.sms_gateway_url,
                secret,
                timeout_seconds=settings.sms_timeout_seconds,
                log_format=settings.log_format,
                log_level=settings.log_level,
                on_start=metrics.record_sms_sender_start,
            )
        return HttpSmsGateway(
            settings.sms_gateway_url, secret, timeout_seconds=settings.sms_timeout_seconds
        )
    log.warning("ONBOARDING_SMS_GATEWAY_URL is not set: codes are printed to stdout (dev only)")
    return ConsoleSmsBackend()


def resolve_secret(settings: Settings) -> bytes:
    """The configured secret; without one (allowed only on SQLite), a development key kept in a
    file beside the database, so codes and sealed data survive a restart."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    log.warning(
        "!!! ONBOARDING_SECRET_KEY is not set: using a development key. "
        "Never run like this with real clients' data. !!!"
    )
    database = settings.sqlite_path
    if database is None:
        return secrets.token_bytes(32)
    key_file = database.with_name(database.name + ".secret")
    return _read_or_create_key(key_file)


def _read_or_create_key(path: Path) -> bytes:
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(key.hex())
    return key
