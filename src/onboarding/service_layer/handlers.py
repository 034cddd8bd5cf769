"""Handlers of the agreement commands and of the events they raise."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from onboarding.domain import errors, events
from onboarding.domain.agreement import Agreement, CodeHasher, OtpPolicy
from onboarding.service_layer import commands
from onboarding.service_layer.unit_of_work import OutgoingSms, UnitOfWork

Clock = Callable[[], datetime]
PhoneMac = Callable[[str], bytes]


class AgreementHandlers:
    def __init__(
        self,
        *,
        policy: OtpPolicy,
        hasher: CodeHasher,
        phone_mac: PhoneMac,
        message_template: str,
        clock: Clock,
    ) -> None:
        self._policy = policy
        self._hasher = hasher
        self._phone_mac = phone_mac
        self._template = message_template
        self._clock = clock

    async def create_agreement(self, cmd: commands.CreateAgreement, uow: UnitOfWork) -> Agreement:
        phone_mac = self._phone_mac(cmd.phone.e164)
        if cmd.request_id is not None:
            existing = await uow.agreements.get_by_request_id(cmd.request_id)
            if existing is not None:
                if not existing.same_request(cmd.id_hash, phone_mac):
                    raise errors.RequestIdConflict()
                return existing
        agreement = Agreement.create(
            id_hash=cmd.id_hash,
            phone=cmd.phone,
            phone_mac=phone_mac,
            request_id=cmd.request_id,
            now=self._clock(),
        )
        await uow.agreements.add(agreement)
        # The AgreementCreated handler issues the first code on this same object, in this
        # same transaction, before the bus commits and hands the agreement back.
        return agreement

    async def send_otp(self, cmd: commands.SendOtp, uow: UnitOfWork) -> Agreement:
        agreement = await self._locked(uow, cmd)
        await self._issue(agreement, uow)
        return agreement

    async def confirm_otp(self, cmd: commands.ConfirmOtp, uow: UnitOfWork) -> Agreement:
        # Format first: a malformed code is a bad request, not a try, and needs no lock.
        self._policy.check_code_format(cmd.code)
        agreement = await self._locked(uow, cmd)
        agreement.confirm(
            code=cmd.code, now=self._clock(), policy=self._policy, hasher=self._hasher
        )
        return agreement

    async def revoke_agreement(self, cmd: commands.RevokeAgreement, uow: UnitOfWork) -> Agreement:
        agreement = await self._locked(uow, cmd)
        agreement.revoke(now=self._clock())
        return agreement

    # -- events ----------------------------------------------------------------------------

    async def send_first_code(self, event: events.AgreementCreated, uow: UnitOfWork) -> None:
        agreement = await uow.agreements.get_for_update(event.reference)
        assert agreement is not None, "the agreement was added in this transaction"
        await self._issue(agreement, uow)

    async def enqueue_sms(self, event: events.OtpIssued, uow: UnitOfWork) -> None:
        if event.superseded_message_id is not None:
            # The relay hands an agreement's messages over in order: the old code's SMS goes
            # first, and now rather than after its backoff.
            await uow.outbox.expedite(event.superseded_message_id)
        await uow.outbox.add(
            OutgoingSms(
                message_id=event.message_id,
                agreement_reference=event.reference,
                phone_e164=event.phone_e164,
                text=self._template.format(code=event.code),
            )
        )

    # -- helpers ---------------------------------------------------------------------------

    async def _locked(
        self,
        uow: UnitOfWork,
        cmd: commands.SendOtp | commands.ConfirmOtp | commands.RevokeAgreement,
    ) -> Agreement:
        agreement = await uow.agreements.get_for_update(cmd.reference)
        if agreement is None:
            raise errors.AgreementNotFound()
        return agreement

    async def _issue(self, agreement: Agreement, uow: UnitOfWork) -> None:
        quota = await uow.phone_quotas.get_for_update(agreement.phone_mac)
        agreement.issue_otp(
            now=self._clock(), policy=self._policy, hasher=self._hasher, quota=quota
        )
