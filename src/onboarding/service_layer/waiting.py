"""Waiting for an event with a time limit, without ``asyncio.wait_for``.

On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that arrives just as the awaited
thing completes: a worker loop waiting on its wake-up event then never stops, and a server's
shutdown waits for it forever. ``asyncio.timeout`` has no such race.
"""

from __future__ import annotations

import asyncio


async def wait_or_timeout(event: asyncio.Event, seconds: float) -> bool:
    """True when the event was set, False when the time ran out first."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
