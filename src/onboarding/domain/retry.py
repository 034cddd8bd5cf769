"""Exponential backoff with jitter, for work retried in the background."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first_delay: timedelta
    max_delay: timedelta
    max_attempts: int

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    def delay(self, attempts: int, rng: random.Random | None = None) -> timedelta:
        """The pause after the ``attempts``-th failed try: doubling from the first delay up to
        the cap, then drawn from its upper half so that retries of many messages spread out."""
        ceiling = min(
            self.first_delay.total_seconds() * 2 ** max(attempts - 1, 0),
            self.max_delay.total_seconds(),
        )
        draw = (rng or random).uniform(0.5, 1.0)
        return timedelta(seconds=ceiling * draw)
