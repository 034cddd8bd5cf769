"""Settings: defaults from the contract, and the combinations refused at start."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from onboarding.config import Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_contract_defaults() -> None:
    s = settings()
    assert s.database_url == "sqlite+aiosqlite:///./onboarding.db"
    assert s.grpc_port == 50051
    assert (s.otp_length, s.otp_ttl_seconds, s.otp_max_attempts) == (6, 600, 3)
    assert (s.otp_resend_interval_seconds, s.otp_max_sends_per_agreement) == (60, 5)
    assert s.otp_max_sends_per_phone_per_hour == 10
    assert s.otp_message_template == "Код подтверждения: {code}"
    assert (s.sms_retry_first_delay_seconds, s.sms_retry_max_delay_seconds) == (1, 300)
    assert s.sms_max_attempts == 10
    assert s.sms_sender_process is True
    assert s.work_lease_seconds == 30
    assert s.nalog_base_url == "https://service.nalog.ru"
    assert (s.inn_wait_seconds, s.inn_max_attempts, s.inn_retry_delay_seconds) == (20, 5, 30)
    assert (s.inn_captcha_pause_seconds, s.nalog_max_rps) == (60, 2)
    assert (s.inn_cache_ttl_seconds, s.inn_not_found_ttl_seconds) == (2_592_000, 86_400)
    assert (s.log_format, s.log_level) == ("console", "INFO")


def test_sqlite_commits_wait_for_company_five_milliseconds_at_most_by_default() -> None:
    assert settings().sqlite_commit_delay_seconds == 0.005
    assert settings(sqlite_commit_delay_seconds=0).sqlite_commit_delay_seconds == 0


@pytest.mark.parametrize(
    ("values", "mentions"),
    [
        ({"work_lease_seconds": 5}, "ONBOARDING_WORK_LEASE_SECONDS"),
        ({"work_lease_seconds": 9, "sms_timeout_seconds": 5}, "ONBOARDING_WORK_LEASE_SECONDS"),
        ({"workers": 2}, "PostgreSQL"),
        ({"database_url": "postgresql+asyncpg://x@h/db"}, "ONBOARDING_SECRET_KEY"),
        ({"secret_key": "short"}, "16"),
        ({"otp_message_template": "no code here"}, "{code}"),
        ({"otp_message_template": "{code} {other}"}, "{code}"),
        ({"database_url": "mysql://x"}, "sqlite+aiosqlite"),
        ({"phone_default_region": "XX"}, "region"),
        ({"phone_default_region": "RUS"}, "region"),
        ({"sms_gateway_url": "gateway.local/sms"}, "http://"),
        ({"sms_gateway_url": "ftp://gateway.local/sms"}, "http://"),
        ({"sms_gateway_url": "https://user:pw@gateway.local/sms"}, "ONBOARDING_SMS_GATEWAY_TOKEN"),
        ({"nalog_base_url": "service.nalog.ru"}, "http://"),
        ({"nalog_base_url": ""}, "http://"),
        ({"secret_key": "CHANGE-ME-to-at-least-16-random-characters"}, "CHANGE-ME"),
        ({"auth_tokens": "kyc-backend:CHANGE-ME-token-1"}, "ONBOARDING_AUTH_TOKENS"),
        ({"sms_gateway_token": "CHANGE-ME"}, "ONBOARDING_SMS_GATEWAY_TOKEN"),
        ({"sqlite_commit_delay_seconds": -0.001}, "sqlite_commit_delay_seconds"),
        ({"sqlite_commit_delay_seconds": 0.2}, "sqlite_commit_delay_seconds"),
    ],
)
def test_refused_combinations(values: dict[str, object], mentions: str) -> None:
    with pytest.raises(ValidationError) as raised:
        settings(**values)
    assert mentions in str(raised.value)


def test_a_lease_longer_than_a_delivery_is_accepted() -> None:
    assert settings(work_lease_seconds=3, sms_timeout_seconds=1.5, database_timeout_seconds=1)


def test_a_region_is_read_in_any_case() -> None:
    assert settings(phone_default_region=" kz ").phone_default_region == "KZ"


def test_gateway_and_upstream_urls_over_http_or_https_are_accepted() -> None:
    s = settings(sms_gateway_url="http://127.0.0.1:8080/sms", nalog_base_url="https://x.example")
    assert (s.sms_gateway_url, s.nalog_base_url) == (
        "http://127.0.0.1:8080/sms",
        "https://x.example",
    )
    assert settings(sms_gateway_url="").sms_gateway_url == ""  # empty: no gateway, the console


def test_every_setting_is_in_the_readme() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    missing = [n for n in Settings.model_fields if f"`ONBOARDING_{n.upper()}`" not in readme]
    assert not missing
