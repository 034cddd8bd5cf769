"""ListAgreements: one client's agreements, newest first, a page at a time."""

from __future__ import annotations

import pytest

from onboarding.agreement.v1 import agreement_pb2 as pb
from tests.conftest import RunningServer, random_client, random_phone
from tests.e2e.test_agreement_support import code_for, create, delivery_becomes


async def _client_with_seven(server: RunningServer) -> tuple[str, list[str]]:
    """A client with seven agreements (others' agreements in between); their references,
    newest first."""
    client = random_client()
    references = []
    for _ in range(7):
        phone, others_phone = random_phone(), random_phone()
        references.append((await create(server, phone=phone, client=client)).reference)
        await create(server, phone=others_phone)  # another client's, created in between
        await code_for(server, phone)
        await code_for(server, others_phone)
    return client, references[::-1]


async def _list(
    server: RunningServer, client: str, page_size: int = 0, page_token: str = ""
) -> pb.ListAgreementsResponse:
    return await server.agreements.ListAgreements(
        pb.ListAgreementsRequest(id_hash=client, page_size=page_size, page_token=page_token)
    )


async def test_pages_of_three_hold_three_three_and_one_newest_first(
    server: RunningServer,
) -> None:
    client, newest_first = await _client_with_seven(server)

    pages, token = [], ""
    while True:
        page = await _list(server, client, page_size=3, page_token=token)
        pages.append([a.reference for a in page.agreements])
        token = page.next_page_token
        if not token:
            break
        assert len(pages) < 5, "pagination does not end"

    assert [len(p) for p in pages] == [3, 3, 1]
    assert [ref for p in pages for ref in p] == newest_first


@pytest.mark.parametrize("page_size", [0, 7, 10_000])
async def test_a_page_large_enough_holds_them_all_with_no_next_token(
    server: RunningServer, page_size: int
) -> None:
    client, newest_first = await _client_with_seven(server)

    page = await _list(server, client, page_size=page_size)

    assert [a.reference for a in page.agreements] == newest_first
    assert page.next_page_token == ""


async def test_listed_agreements_are_the_clients_own_and_newest_first(
    server: RunningServer,
) -> None:
    client, _ = await _client_with_seven(server)

    page = await _list(server, client)

    assert {a.id_hash for a in page.agreements} == {client}
    times = [a.create_time.ToDatetime() for a in page.agreements]
    assert times == sorted(times, reverse=True)


async def test_listing_shows_each_agreement_as_get_does(server: RunningServer) -> None:
    client, phone = random_client(), random_phone()
    created = await create(server, phone=phone, client=client)
    await code_for(server, phone)
    # The gateway has the code before the relay records SENT: wait until the agreement stands.
    await delivery_becomes(server, created.reference, pb.OTP_DELIVERY_STATUS_SENT)

    [listed] = (await _list(server, client)).agreements
    fetched = await server.agreements.GetAgreement(
        pb.GetAgreementRequest(reference=created.reference)
    )

    assert listed == fetched.agreement


async def test_a_client_with_no_agreements_gets_an_empty_page(server: RunningServer) -> None:
    page = await _list(server, random_client())

    assert list(page.agreements) == []
    assert page.next_page_token == ""
