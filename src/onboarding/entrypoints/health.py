"""Health as the contract wants it: SERVING only while the database answers, checked, not
assumed; ``liveness`` SERVING while the process runs. The check also wants the schema migrated
for this version, so a pod is not ready before its migration has run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

log = logging.getLogger(__name__)

LIVENESS = "liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthMonitor:
    def __init__(
        self,
        servicer: HealthServicer,
        ping: Callable[[], Awaitable[None]],
        services: Sequence[str],
        interval: float,
        timeout: float,
    ) -> None:
        self._servicer = servicer
        self._ping = ping
        self._names = ["", *services]
        self._interval = interval
        self._timeout = timeout
        self._serving: bool | None = None

    async def start(self) -> None:
        """Before the port opens: ``liveness`` SERVING, every other name NOT_SERVING until the
        first check (grpc's servicer starts with "" SERVING, which is not known yet)."""
        await self._servicer.set(LIVENESS, SERVING)
        for name in self._names:
            await self._servicer.set(name, NOT_SERVING)

    async def check(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                await self._ping()
            serving = True
        except Exception as error:
            serving = False
            if self._serving is not False:
                log.warning("database not ready (%s): NOT_SERVING", type(error).__name__)
        if serving and self._serving is False:
            log.info("database answers again: SERVING")
        self._serving = serving
        for name in self._names:
            await self._servicer.set(name, SERVING if serving else NOT_SERVING)
        return serving

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check()
