"""No code and no whole phone number is stored or logged in plain text."""

import logging
import re
from pathlib import Path

import pytest
from sqlalchemy import MetaData, select

from onboarding.agreement.v1 import agreement_pb2 as pb
from tests.conftest import RunningServer, eventually, random_client, random_phone


async def _walk_through(server: RunningServer) -> tuple[str, list[str]]:
    """A confirmed agreement and a pending one; returns the phone and every code sent."""
    phone = random_phone()
    first = await server.agreements.CreateAgreement(
        pb.CreateAgreementRequest(id_hash=random_client(), phone=phone)
    )
    await server.gateway.wait_for(1)
    await server.agreements.ConfirmOtp(
        pb.ConfirmOtpRequest(
            reference=first.agreement.reference, code=server.gateway.codes_for(phone)[0]
        )
    )
    second = await server.agreements.CreateAgreement(
        pb.CreateAgreementRequest(id_hash=random_client(), phone=phone)
    )
    await server.gateway.wait_for(2)

    async def delivered() -> bool:
        got = await server.agreements.GetAgreement(
            pb.GetAgreementRequest(reference=second.agreement.reference)
        )
        return got.agreement.otp_delivery_status == pb.OTP_DELIVERY_STATUS_SENT

    await eventually(delivered)
    return phone, server.gateway.codes_for(phone)


async def test_database_rows_hold_no_code_and_no_phone(server: RunningServer) -> None:
    phone, codes = await _walk_through(server)
    metadata = MetaData()
    async with server.container.engine.connect() as conn:
        await conn.run_sync(metadata.reflect)
        dump = []
        for table in metadata.sorted_tables:
            for row in (await conn.execute(select(table))).all():
                for value in row:
                    dump.append(value if isinstance(value, bytes) else str(value).encode())
    blob = b"\n".join(dump)
    assert phone.encode() not in blob and phone[2:].encode() not in blob
    for code in codes:  # hex ids and timestamps' fractions hold 6-digit runs by chance
        assert not _stands_alone_in(blob, code.encode()), code


@pytest.mark.parametrize("db_kind", ["sqlite"])  # reads the database file itself
async def test_sqlite_file_holds_no_code_and_no_phone(server: RunningServer) -> None:
    path = server.settings.sqlite_path
    assert path is not None
    phone, codes = await _walk_through(server)
    raw = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    assert phone.encode() not in raw and phone[2:].encode() not in raw
    # No SMS text at all: the template's words would be there if one were stored in the clear.
    words = server.settings.otp_message_template.split("{code}")[0].strip()
    assert words and words.encode() not in raw
    for code in codes:
        assert not _stands_alone_in(raw, code.encode()), code


def _stands_alone_in(raw: bytes, code: bytes) -> bool:
    """Whether the code is in the file as itself. The session's file holds thousands of UUIDs as
    hex text and of timestamps with 6-digit fractions, where a 6-digit code turns up by chance
    (CI saw it once): those runs of hex digits, or a fraction after its dot, do not count."""
    alone = rb"(?<![0-9a-fA-F.])" + re.escape(code) + rb"(?![0-9a-fA-F])"
    return re.search(alone, raw) is not None


async def test_logs_hold_no_code_and_no_phone(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.gateway.fail_next(1, status=503)  # a retry logs too
    phone, codes = await _walk_through(server)
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert phone not in text and phone[2:] not in text
    for code in codes:  # request ids and timestamps hold 6-digit runs by chance
        assert not _stands_alone_in(text.encode(), code.encode()), code
