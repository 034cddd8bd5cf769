"""Production settings: auth tokens are parsed strictly, and a server without them says so
loudly when it starts."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from onboarding.config import Settings, parse_auth_tokens
from tests.conftest import SECRET_KEY, StartServer

SERVER_LOGGER = "onboarding.entrypoints.grpc.server"


def test_tokens_name_their_callers() -> None:
    parsed = parse_auth_tokens("billing:billing-token-0123456789, bare-token-abcdefghij")

    assert parsed == {"billing-token-0123456789": "billing", "bare-token-abcdefghij": "default"}


@pytest.mark.parametrize(
    "raw",
    ["", " , ", "billing:", "billing: ", "a:same-token-1234567,b:same-token-1234567"],
)
def test_settings_refuse_unusable_tokens(raw: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, secret_key=SECRET_KEY, auth_tokens=raw)  # type: ignore[call-arg]

    assert "ONBOARDING_AUTH_TOKENS" in str(caught.value)


def test_settings_never_show_the_tokens() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, secret_key=SECRET_KEY, auth_tokens="billing:billing-token-0123456789"
    )

    assert "billing-token-0123456789" not in repr(settings)
    assert settings.callers_by_token == {"billing-token-0123456789": "billing"}


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == SERVER_LOGGER and r.levelno >= logging.WARNING
    ]


async def test_a_server_without_tokens_warns_at_start(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=SERVER_LOGGER)

    await start_server()

    assert any("ONBOARDING_AUTH_TOKENS" in message for message in warnings_of(caplog))


async def test_a_server_with_tokens_does_not_warn_about_them(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=SERVER_LOGGER)

    await start_server(auth_tokens="billing:billing-token-0123456789")

    assert not any("ONBOARDING_AUTH_TOKENS" in message for message in warnings_of(caplog))
