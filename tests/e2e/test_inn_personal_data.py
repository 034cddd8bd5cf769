"""Passport data is kept only sealed, only while a lookup needs it, and never logged.

Each test here gets a database of its own (the module overrides ``database_url``), so that what
the checks look for cannot turn up by chance in other tests' rows (a 6-digit number in some
timestamp's microseconds, say)."""

from __future__ import annotations

import contextlib
import logging
import secrets
from pathlib import Path

import grpc
import pytest
from sqlalchemy import MetaData, select

from onboarding.adapters.db import migrate
from tests.conftest import Databases, RunningServer, StartServer, eventually
from tests.e2e.test_inn_helpers import (
    FAILED,
    FOUND,
    PENDING,
    cyrillic_name,
    find,
    get,
    number,
    person,
    request_id,
    wait_done,
)
from tests.fakes.nalog import (
    captcha,
    found,
    garbage,
    http_error,
    rejected,
    upstream_error,
    valid_inn,
)


@pytest.fixture
async def database_url(databases: Databases, db_kind: str) -> str:
    url = await databases.create(db_kind)
    await migrate.upgrade(url)
    return url


def _random_day(year: int) -> str:
    return f"{year}-{1 + secrets.randbelow(12):02d}-{1 + secrets.randbelow(28):02d}"


def _secret_person() -> dict[str, str]:
    """A person whose every field is unlikely to occur anywhere by chance."""
    year = 1940 + secrets.randbelow(50)
    return person(
        number(),
        last_name=cyrillic_name(),
        first_name=cyrillic_name(),
        middle_name=cyrillic_name(),
        birth_date=_random_day(year),
        document_serial=f"{1000 + secrets.randbelow(9000)}",
        document_date=_random_day(year + 20),
    )


def _forbidden(data: dict[str, str]) -> list[str]:
    serial, doc = data["document_serial"], data["document_number"]
    y, m, d = data["birth_date"].split("-")
    dy, dm, dd = data["document_date"].split("-")
    names = [data[f] for f in ("last_name", "first_name", "middle_name")]
    return [
        doc,
        f"{serial}{doc}",
        f"{serial} {doc}",
        f"{serial[:2]} {serial[2:]} {doc}",
        *names,
        *(n.upper() for n in names),
        *(n.lower() for n in names),
        data["birth_date"],
        f"{d}.{m}.{y}",
        data["document_date"],
        f"{dd}.{dm}.{dy}",
    ]


async def _all_rows(server: RunningServer) -> bytes:
    metadata = MetaData()
    dump: list[bytes] = []
    async with server.container.engine.connect() as conn:
        await conn.run_sync(metadata.reflect)
        for table in metadata.sorted_tables:
            for row in (await conn.execute(select(table))).all():
                for value in row:
                    dump.append(value if isinstance(value, bytes) else str(value).encode())
    return b"\n".join(dump)


async def _person_key(server: RunningServer, rid: str) -> bytes:
    metadata = MetaData()
    async with server.container.engine.connect() as conn:
        await conn.run_sync(metadata.reflect)
        lookups = metadata.tables["inn_lookups"]
        stmt = select(lookups.c.person_key).where(lookups.c.request_id == rid)
        return (await conn.execute(stmt)).scalar_one()


async def _jobs_of(server: RunningServer, person_key: bytes) -> int:
    metadata = MetaData()
    async with server.container.engine.connect() as conn:
        await conn.run_sync(metadata.reflect)
        jobs = metadata.tables["inn_jobs"]
        stmt = select(jobs.c.person_key).where(jobs.c.person_key == person_key)
        return len((await conn.execute(stmt)).all())


def _assert_absent(secrets_: list[str], blob: bytes) -> None:
    for secret in secrets_:
        assert secret.encode() not in blob, f"{secret!r} found in plain text"


async def _pending_after_a_captcha(
    start_server: StartServer,
) -> tuple[RunningServer, dict[str, str], str, str]:
    server = await start_server(inn_captcha_pause_seconds=1.0, inn_wait_seconds=0)
    data, inn = _secret_person(), valid_inn()
    server.nalog.script(data["document_number"], captcha(1, then=found(inn)))
    rid = request_id()
    assert (await find(server, data, rid)).status == PENDING

    async def captcha_seen() -> bool:
        return (await get(server, rid)).attempts == 1

    await eventually(captcha_seen)
    assert (await get(server, rid)).status == PENDING
    return server, data, rid, inn


async def test_database_rows_hold_no_personal_data_while_pending_or_after(
    start_server: StartServer,
) -> None:
    server, data, rid, inn = await _pending_after_a_captcha(start_server)
    person_key = await _person_key(server, rid)
    assert await _jobs_of(server, person_key) == 1  # the sealed data waits in the job

    _assert_absent(_forbidden(data), await _all_rows(server))

    done = await wait_done(server, rid)
    assert (done.status, done.inn) == (FOUND, inn)
    _assert_absent(_forbidden(data), await _all_rows(server))
    assert await _jobs_of(server, person_key) == 0  # and goes with the job


async def test_a_failed_lookup_leaves_no_job_behind(start_server: StartServer) -> None:
    server = await start_server()
    data = _secret_person()
    server.nalog.script(data["document_number"], rejected(["docno", "fam"]))
    rid = request_id()

    lookup = await find(server, data, rid)

    assert lookup.status == FAILED
    assert await _jobs_of(server, await _person_key(server, rid)) == 0
    _assert_absent(_forbidden(data), await _all_rows(server))


@pytest.mark.parametrize("db_kind", ["sqlite"])  # reads the database file itself
async def test_sqlite_file_and_wal_hold_no_personal_data(start_server: StartServer) -> None:
    server, data, rid, _ = await _pending_after_a_captcha(start_server)
    path = server.settings.sqlite_path
    assert path is not None

    def raw() -> bytes:
        return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())

    _assert_absent(_forbidden(data), raw())
    assert (await wait_done(server, rid)).status == FOUND
    _assert_absent(_forbidden(data), raw())


_STANDARD_RECORD_FIELDS = set(vars(logging.LogRecord("n", 0, "p", 0, "m", None, None))) | {
    "message",
    "asctime",
}


def _log_text(caplog: pytest.LogCaptureFixture, prefix: str = "") -> str:
    """Every message, its arguments and any extra fields of every record from loggers whose
    name starts with ``prefix`` (but not the record's own timestamps and ids, whose digits
    could match a document number by chance)."""
    records = [r for r in caplog.records if r.name.startswith(prefix)]
    parts = [caplog.text] if not prefix else []
    for record in records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        parts.append(record.exc_text or "")
        parts.extend(
            f"{k}={v!r}" for k, v in vars(record).items() if k not in _STANDARD_RECORD_FIELDS
        )
    return "\n".join(parts)


async def test_logs_hold_no_personal_data(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await start_server(inn_max_attempts=2, inn_captcha_pause_seconds=0.2)
    people = [_secret_person() for _ in range(5)]
    inns = [valid_inn() for _ in people]
    behaviours = [
        captcha(1, then=found(inns[0])),
        rejected(["docno", "fam", "nam", "otch", "bdate", "docdt"]),  # echoes the values
        http_error(1, then=upstream_error(1)),
        garbage(1, then=found(inns[3])),
        found(inns[4]),
    ]
    rids = []
    for data, behaviour in zip(people, behaviours, strict=True):
        server.nalog.script(data["document_number"], behaviour)
        rid = request_id()
        rids.append(rid)
        await find(server, data, rid, timeout=1.0)
    for rid in rids:
        await wait_done(server, rid)
    await find(server, people[4])  # a cached answer too
    # A conflict and an invalid request carry personal data in the request too.
    conflict = dict(people[0], document_number=number())
    for bad in (conflict, dict(people[1], document_serial="45A8")):
        with contextlib.suppress(grpc.aio.AioRpcError):  # only the logs matter here
            await find(server, bad, rids[0])

    assert caplog.records, "nothing was logged at DEBUG"
    text = _log_text(caplog)
    for data in (*people, conflict):
        for secret in _forbidden(data):
            assert secret not in text, f"{secret!r} is in the logs"
    # The service's own lines hold no INN either (a library logging SQL parameters at DEBUG,
    # like aiosqlite, does show the INN, which is stored in plain text by design).
    own = _log_text(caplog, prefix="onboarding")
    assert "service.nalog.ru answered" in own
    for inn in inns:
        assert inn not in own, "an INN is in the service's logs"
