"""The SMS helper process of a real `onboarding serve`: it ends with its server, however the
server ends, and one killed under a code in flight is replaced without losing the code."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from onboarding.adapters.db import migrate
from onboarding.agreement.v1 import agreement_pb2 as pb
from tests.conftest import Databases, eventually, random_client
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.faults.conftest import ServerProcess, Servers, child_pids, unique_phones

pytestmark = pytest.mark.slow

HELPER = "onboarding.entrypoints.sms_sender"
DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def helpers_of(server: ServerProcess) -> list[int]:
    helpers = []
    for pid in child_pids(server.process.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if HELPER.encode() in argv:
            helpers.append(pid)
    return helpers


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # exited; its parent, killed too, can no longer reap it


async def serve_and_send_one(
    servers: Servers, gateway: FakeSmsGateway, databases: Databases, kind: str, **settings: object
) -> tuple[ServerProcess, pb.Agreement]:
    url = await databases.create(kind)
    await migrate.upgrade(url)
    server = await servers.start(url, **settings)
    request = pb.CreateAgreementRequest(id_hash=random_client(), phone=unique_phones(1)[0])
    agreement = (await server.agreements.CreateAgreement(request, timeout=10)).agreement
    return server, agreement


@pytest.mark.parametrize("kind", DATABASES)
async def test_sigterm_ends_the_server_and_then_its_helper(
    servers: Servers, gateway: FakeSmsGateway, databases: Databases, kind: str
) -> None:
    server, _ = await serve_and_send_one(servers, gateway, databases, kind)
    await gateway.wait_for(1, timeout=10)
    [helper] = helpers_of(server)

    await server.stop()  # exits 0, after closing its helper

    assert gone(helper)
    assert "exited with" not in server.log()


async def test_a_server_killed_outright_leaves_no_helper_behind(
    servers: Servers, gateway: FakeSmsGateway, databases: Databases
) -> None:
    server, _ = await serve_and_send_one(servers, gateway, databases, "sqlite")
    await gateway.wait_for(1, timeout=10)
    [helper] = helpers_of(server)

    await server.kill()

    async def helper_gone() -> bool:
        return gone(helper)

    await eventually(helper_gone, timeout=10)


@pytest.mark.parametrize("kind", DATABASES)
async def test_a_helper_killed_with_a_code_in_flight_is_replaced_and_the_code_goes(
    servers: Servers, gateway: FakeSmsGateway, databases: Databases, kind: str
) -> None:
    gateway.delay_next(1, 1.0)  # the first hand-over hangs while its helper is killed
    server, agreement = await serve_and_send_one(
        servers, gateway, databases, kind, sms_max_attempts=100
    )
    await gateway.wait_for_requests(1, timeout=10)
    [helper] = helpers_of(server)

    os.kill(helper, signal.SIGKILL)

    async def sent() -> bool:
        got = await server.agreements.GetAgreement(
            pb.GetAgreementRequest(reference=agreement.reference), timeout=5
        )
        return got.agreement.otp_delivery_status == pb.OTP_DELIVERY_STATUS_SENT

    await eventually(sent, timeout=15)
    [replacement] = helpers_of(server)
    assert replacement != helper
    # The same message went again, with its message_id: at least once.
    [(message_id, tries)] = gateway.by_message_id(all_requests=True).items()
    assert tries >= 2
    assert all(sms.message_id == message_id for sms in gateway.requests)
    assert f"sms sender process {helper} exited with -9" in server.log()
