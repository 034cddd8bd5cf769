"""PostgreSQL connections of the direct path, kept between uses instead of going back to the pool.

SQLAlchemy's pool checks a connection out and in through its events, its reset and a greenlet
each way. Under bench load that came to about 180 µs of server CPU per call: more than the
statement itself. So the direct path keeps up to ``keep`` of the connections it used, idle,
and takes those first: a list pop. They stay checked out of SQLAlchemy's pool, which still
opens, sets up and counts every connection, so the pool's limits hold:

- a connection that failed mid-call is invalidated in the pool, as before, and never kept;
- an idle one whose server closed it (a restart, a failover, a terminated session) is
  invalidated in the pool instead of being handed out; asyncpg notices such a close at once.
  The pool pings what it hands out, and a failed ping invalidates all it holds;
- one older than the pool's recycle time goes back, so the pool replaces it;
- beyond ``keep``, connections go back to the pool, which other users share;
- when the engine is disposed, the idle ones are closed with it, and one in use then goes
  back to the pool (now disposed) when it is done.
"""

from __future__ import annotations

import time
from weakref import WeakKeyDictionary

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

#: In the pool's ``info`` of a connection, which lasts as long as its driver connection.
_BORN = "onboarding.kept_connections.born"


class KeptConnections:
    # It holds no reference to its engine: the registry below maps the engine to it weakly,
    # and a reference back would keep both alive for good.
    def __init__(self, engine: AsyncEngine, *, keep: int, recycle_seconds: float) -> None:
        self._keep = keep
        self._recycle_seconds = recycle_seconds
        self._idle: list[PoolProxiedConnection] = []
        #: Counts disposals: a connection taken before one is not kept after it.
        self._generation = 0
        event.listen(engine.sync_engine, "engine_disposed", self._drop_idle)

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def take(self, engine: AsyncEngine) -> tuple[PoolProxiedConnection, int]:
        """A connection of ``engine`` (this keeper's), and the generation to give it back with."""
        while self._idle:
            pooled = self._idle.pop()
            if self._fresh(pooled):
                return pooled, self._generation
            await self._discard(pooled)
        # Read before the pool connects: a disposal meanwhile must not be missed.
        generation = self._generation
        # Straight from the pool: an AsyncConnection around it would cost three greenlet hops
        # and about 70 µs more per checkout.
        pooled = await engine.raw_connection()
        pooled.info.setdefault(_BORN, time.monotonic())
        return pooled, generation

    async def give_back(
        self, pooled: PoolProxiedConnection, generation: int, *, broken: bool
    ) -> None:
        if broken:
            # Through SQLAlchemy's greenlet: closing a connection awaits the driver.
            await greenlet_spawn(pooled.invalidate)
        elif (
            generation == self._generation and len(self._idle) < self._keep and self._fresh(pooled)
        ):
            self._idle.append(pooled)
            return
        await greenlet_spawn(pooled.close)

    def _fresh(self, pooled: PoolProxiedConnection) -> bool:
        """Open, as far as the driver knows, and younger than the recycle time."""
        age = time.monotonic() - pooled.info.get(_BORN, 0.0)
        return age < self._recycle_seconds and not _lost(pooled)

    async def _discard(self, pooled: PoolProxiedConnection) -> None:
        if _lost(pooled):  # closed by the server
            await greenlet_spawn(pooled.invalidate)
        else:  # only old: back, marked for the pool to replace on its next checkout
            pooled.invalidate(soft=True)
            await greenlet_spawn(pooled.close)

    def _drop_idle(self, _engine: Engine) -> None:
        self._generation += 1
        idle, self._idle = self._idle, []
        for pooled in idle:
            try:
                # Disposal runs in SQLAlchemy's greenlet, where closing can await the driver.
                pooled.invalidate()
            except Exception:
                pooled.driver_connection.terminate()  # type: ignore[union-attr]


def _lost(pooled: PoolProxiedConnection) -> bool:
    """Whether the driver saw the server close the connection (asyncpg notices at once)."""
    driver = pooled.driver_connection
    return driver is None or bool(driver.is_closed())


_KEPT: WeakKeyDictionary[Engine, KeptConnections] = WeakKeyDictionary()


def keep_connections(engine: AsyncEngine, *, keep: int, recycle_seconds: float) -> None:
    """From now on the direct path keeps up to ``keep`` of this engine's connections."""
    _KEPT[engine.sync_engine] = KeptConnections(engine, keep=keep, recycle_seconds=recycle_seconds)


def kept_by(engine: AsyncEngine) -> KeptConnections:
    kept = _KEPT.get(engine.sync_engine)
    if kept is None:  # an engine made without ``keep_connections``: nothing is kept
        kept = _KEPT[engine.sync_engine] = KeptConnections(engine, keep=0, recycle_seconds=0)
    return kept
