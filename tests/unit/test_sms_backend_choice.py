"""Which SMS backend the settings wire in."""

import pytest

from onboarding.adapters.sms import ConsoleSmsBackend, HttpSmsGateway
from onboarding.adapters.sms_process import SmsSenderProcess
from onboarding.bootstrap import sms_backend
from onboarding.config import Settings

GATEWAY = "http://127.0.0.1:9/sms"


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_a_gateway_is_called_from_the_helper_process_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ONBOARDING_SMS_SENDER_PROCESS", raising=False)

    assert isinstance(sms_backend(settings(sms_gateway_url=GATEWAY)), SmsSenderProcess)


def test_the_helper_can_be_turned_off_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ONBOARDING_SMS_SENDER_PROCESS", "false")
    monkeypatch.setenv("ONBOARDING_SMS_GATEWAY_URL", GATEWAY)

    assert isinstance(sms_backend(settings()), HttpSmsGateway)


def test_without_a_gateway_the_console_prints_the_sms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONBOARDING_SMS_GATEWAY_URL", raising=False)

    assert isinstance(sms_backend(settings()), ConsoleSmsBackend)
