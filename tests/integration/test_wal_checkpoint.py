"""The SQLite engine's checkpoint thread: it copies the log while the loop serves, the log stays
bounded under steady writes, and it stops with the engine."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from sqlalchemy import text

from onboarding.adapters.db.engine import WAL_RESTART_PAGES, create_engine
from onboarding.adapters.db.inline_sqlite import InlineEngine

PAGE = 4096


def checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sqlite-wal-checkpoint"]


async def write_rows(engine: InlineEngine, count: int, size: int = 2000) -> None:
    for start in range(0, count, 50):
        async with engine.begin() as conn:
            for n in range(start, min(count, start + 50)):
                await conn.execute(
                    text("INSERT INTO t (v) VALUES (:v)"), {"v": f"{n:08d}" * (size // 8)}
                )


async def engine_with_table(path: Path) -> InlineEngine:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    assert isinstance(engine, InlineEngine)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    return engine


async def test_the_thread_copies_the_log_into_the_database(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    engine = await engine_with_table(path)
    try:
        assert engine.checkpointer is not None and engine.checkpointer.running
        await write_rows(engine, 300)  # far below WAL_RESTART_PAGES: the loop never checkpoints
        await asyncio.sleep(0.6)  # a few rounds of the thread
        # Only a checkpoint puts rows into the database file itself.
        assert path.stat().st_size > 300 * 2000
    finally:
        await engine.dispose()


async def test_the_log_stays_bounded_under_steady_writes(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    engine = await engine_with_table(path)
    try:
        await write_rows(engine, 20_000)  # about 40 MB of pages written
    finally:
        await engine.dispose()
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size < 2 * WAL_RESTART_PAGES * PAGE


async def test_the_thread_stops_with_the_engine_and_starts_again_with_it(tmp_path: Path) -> None:
    engine = await engine_with_table(tmp_path / "s.db")
    assert checkpoint_threads()
    await engine.dispose()
    assert not checkpoint_threads()
    async with engine.connect() as conn:  # a disposed engine connects again on demand
        await conn.execute(text("SELECT 1"))
    assert engine.checkpointer is not None and engine.checkpointer.running
    await engine.dispose()
    assert not checkpoint_threads()


async def test_an_in_memory_database_has_no_checkpoint_thread() -> None:
    engine = create_engine("sqlite+aiosqlite:///:memory:")
    assert isinstance(engine, InlineEngine) and engine.checkpointer is None
    await engine.dispose()
