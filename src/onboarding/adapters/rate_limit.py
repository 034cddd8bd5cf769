"""A process-wide cap on calls per second, for an upstream that must not be flooded.

:class:`RateLimiter` hands out evenly spaced slots: at a rate of 2 per second one caller may go
every 0.5 s. The first acquisition after a quiet spell goes at once; no burst is ever allowed.
Callers are served first come, first served (``asyncio.Lock`` wakes its waiters in order), and
a caller cancelled while it waits takes no slot away from the others.

    limiter = RateLimiter(settings.nalog_max_rps)
    await limiter.acquire()  # now one upstream call may be made
"""

from __future__ import annotations

import asyncio


class RateLimiter:
    """At most ``rate_per_second`` acquisitions per second in this process, evenly spaced."""

    def __init__(self, rate_per_second: float) -> None:
        if not rate_per_second > 0:
            raise ValueError("rate_per_second must be positive")
        self._interval = 1.0 / rate_per_second
        self._next_slot = float("-inf")  # loop time at which the next caller may go
        self._lock = asyncio.Lock()

    @property
    def rate_per_second(self) -> float:
        return 1.0 / self._interval

    async def acquire(self) -> None:
        """Wait for the next free slot and take it.

        The lock is held while waiting, so later callers queue behind in order. The slot is
        only booked once the wait is over: cancelling the wait books nothing, and the next
        caller in line may go at the slot this one would have had.
        """
        async with self._lock:
            loop = asyncio.get_running_loop()
            delay = self._next_slot - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            # Counted from the slot itself even if the sleep ended a hair early.
            self._next_slot = max(loop.time(), self._next_slot) + self._interval
