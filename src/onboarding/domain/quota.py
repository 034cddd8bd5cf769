"""The per-phone send quota: a sliding window over the times codes were sent to one number."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from onboarding.domain import errors


@dataclass(eq=False, slots=True)
class PhoneSendQuota:
    phone_mac: bytes = field(repr=False)
    send_times: list[datetime] = field(default_factory=list)

    def take(self, now: datetime, limit: int, window: timedelta) -> None:
        recent = [t for t in self.send_times if t > now - window]
        if len(recent) >= limit:
            raise errors.OtpSendLimit(
                "phone", limit, f"at most {limit} codes per phone number in {window}"
            )
        recent.append(now)
        self.send_times = recent
