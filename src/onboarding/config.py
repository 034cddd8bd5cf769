"""Settings, read from ONBOARDING_* environment variables and a .env file in the working dir."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import phonenumbers
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from onboarding.domain.agreement import OtpPolicy
from onboarding.domain.inn import LookupPolicy

PositiveSeconds = Annotated[float, Field(gt=0)]
NonNegativeSeconds = Annotated[float, Field(ge=0)]
PositiveInt = Annotated[int, Field(gt=0)]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./onboarding.db"
#: What the deploy example's secret values hold until someone replaces them.
_PLACEHOLDER = "CHANGE-ME"


def parse_auth_tokens(raw: str) -> dict[str, str]:
    """``"billing:s3cret, kyc:t0ken, bare"`` → ``{"s3cret": "billing", "t0ken": "kyc",
    "bare": "default"}``."""
    callers: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        caller, sep, token = item.partition(":")
        if not sep:
            caller, token = "default", caller
        caller, token = caller.strip() or "default", token.strip()
        if not token:
            raise ValueError(f"caller {caller!r} in ONBOARDING_AUTH_TOKENS has an empty token")
        if token in callers:
            raise ValueError("a token appears twice in ONBOARDING_AUTH_TOKENS")
        callers[token] = caller
    if not callers:
        raise ValueError("ONBOARDING_AUTH_TOKENS is set but holds no token")
    return callers


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ONBOARDING_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = DEFAULT_DATABASE_URL
    #: How long one database operation (connect, pool wait, statement) may take before the
    #: RPC answers UNAVAILABLE.
    database_timeout_seconds: PositiveSeconds = 5.0
    database_pool_size: PositiveInt = 10
    #: SQLite: while writes come closer together than this, each COMMIT waits this long for
    #: the writes after it and commits them too (see ``inline_sqlite``); 0 commits each at once.
    sqlite_commit_delay_seconds: Annotated[float, Field(ge=0, le=0.1)] = 0.005
    grpc_port: Annotated[int, Field(ge=0, le=65535)] = 50051
    #: Server processes sharing the port (``serve --workers``); more than one needs PostgreSQL.
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    #: Time in-flight RPCs get to finish after SIGTERM.
    shutdown_grace_seconds: NonNegativeSeconds = 10.0
    secret_key: SecretStr | None = None

    otp_length: Annotated[int, Field(ge=4, le=10)] = 6
    otp_ttl_seconds: PositiveSeconds = 600
    otp_max_attempts: PositiveInt = 3
    otp_resend_interval_seconds: NonNegativeSeconds = 60
    otp_max_sends_per_agreement: PositiveInt = 5
    otp_max_sends_per_phone_per_hour: PositiveInt = 10
    otp_message_template: str = "Код подтверждения: {code}"
    #: Region assumed for phone numbers written without a country code.
    phone_default_region: str = "RU"

    sms_gateway_url: str | None = None
    sms_gateway_token: SecretStr | None = None
    sms_timeout_seconds: PositiveSeconds = 5.0
    sms_retry_first_delay_seconds: PositiveSeconds = 1.0
    sms_retry_max_delay_seconds: PositiveSeconds = 300.0
    sms_max_attempts: PositiveInt = 10
    #: Hand SMS to the gateway from a helper process (off the gRPC event loop), or inline.
    sms_sender_process: bool = True
    #: How often the outbox relay looks for due messages it was not told about.
    outbox_poll_seconds: PositiveSeconds = 1.0
    work_lease_seconds: PositiveSeconds = 30.0

    nalog_base_url: str = "https://service.nalog.ru"
    nalog_max_rps: Annotated[float, Field(gt=0)] = 2.0
    #: One HTTP call to service.nalog.ru, in total.
    nalog_timeout_seconds: PositiveSeconds = 10.0
    #: Pause between two asks for a result that is not ready, and how many asks at most.
    nalog_poll_interval_seconds: NonNegativeSeconds = 1.0
    nalog_max_polls: PositiveInt = 10
    inn_wait_seconds: NonNegativeSeconds = 20.0
    inn_max_attempts: PositiveInt = 5
    inn_retry_delay_seconds: NonNegativeSeconds = 30.0
    inn_captcha_pause_seconds: NonNegativeSeconds = 60.0
    inn_cache_ttl_seconds: NonNegativeSeconds = 2_592_000
    inn_not_found_ttl_seconds: NonNegativeSeconds = 86_400
    #: How many people's lookups one process works on at once (each still obeys the RPS cap).
    inn_worker_concurrency: PositiveInt = 4

    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9464
    #: ``caller:token`` pairs, comma-separated (a bare token is allowed, as caller "default").
    auth_tokens: SecretStr | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    max_concurrent_rpcs: PositiveInt = 1000
    #: The largest request message accepted, in bytes.
    max_message_bytes: PositiveInt = 1_048_576

    #: How often the health checker asks the database whether it answers.
    health_check_interval_seconds: PositiveSeconds = 2.0

    log_format: Literal["console", "json"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @field_validator("phone_default_region", mode="before")
    @classmethod
    def _known_region(cls, value: object) -> object:
        # A region phonenumbers does not know would refuse every number written without a
        # country code, at request time; better at start.
        if isinstance(value, str):
            value = value.strip().upper()
            if value not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError("must be a two-letter region phonenumbers knows, e.g. RU")
        return value

    @field_validator("sms_gateway_url", "nalog_base_url")
    @classmethod
    def _http_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value and info.field_name == "sms_gateway_url":
            return value  # no gateway: codes go to the console
        parts = urlsplit(value or "")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL with a host")
        if info.field_name == "sms_gateway_url" and (parts.username or parts.password):
            # The gateway's client sends no credentials from its URL.
            raise ValueError("must not hold credentials: set ONBOARDING_SMS_GATEWAY_TOKEN")
        return value

    @field_validator("otp_message_template")
    @classmethod
    def _template_has_code(cls, value: str) -> str:
        try:
            rendered = value.format(code="0")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"must be a format string with only {{code}}: {exc}") from None
        if rendered == value:
            raise ValueError("must contain {code}")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("auth_tokens")
    @classmethod
    def _tokens_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_auth_tokens(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("ONBOARDING_TLS_CERT_FILE and ONBOARDING_TLS_KEY_FILE go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("ONBOARDING_TLS_CLIENT_CA_FILE needs ONBOARDING_TLS_CERT_FILE")
        for path in (self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        return self

    @property
    def callers_by_token(self) -> dict[str, str] | None:
        """Token → caller name, or None when authentication is off."""
        if self.auth_tokens is None:
            return None
        return parse_auth_tokens(self.auth_tokens.get_secret_value())

    @model_validator(mode="after")
    def _lease_outlasts_a_delivery(self) -> Settings:
        # A relay holds an outbox claim while it sends (up to the SMS timeout) and records the
        # outcome (up to the database timeout). A lease shorter than that would let another
        # process take over a message whose relay is alive, and send the code twice.
        if self.work_lease_seconds <= self.sms_timeout_seconds + self.database_timeout_seconds:
            raise ValueError(
                "ONBOARDING_WORK_LEASE_SECONDS must be longer than ONBOARDING_SMS_TIMEOUT_SECONDS "
                "+ ONBOARDING_DATABASE_TIMEOUT_SECONDS"
            )
        return self

    @model_validator(mode="after")
    def _single_process_sqlite(self) -> Settings:
        if self.workers > 1 and self.is_sqlite:
            raise ValueError(
                "ONBOARDING_WORKERS > 1 needs PostgreSQL: SQLite is the single-process default"
            )
        return self

    @model_validator(mode="after")
    def _secret_required_off_sqlite(self) -> Settings:
        if self.secret_key is None and not self.is_sqlite:
            raise ValueError("ONBOARDING_SECRET_KEY is required with a PostgreSQL database")
        if self.secret_key is not None and len(self.secret_key.get_secret_value()) < 16:
            raise ValueError("ONBOARDING_SECRET_KEY must be at least 16 characters")
        return self

    @model_validator(mode="after")
    def _no_example_placeholders(self) -> Settings:
        # The deploy example's values are public: a server started with them would accept
        # anyone holding the example's tokens, and seal data under a key anyone can read.
        for name, value in (
            ("ONBOARDING_SECRET_KEY", self.secret_key),
            ("ONBOARDING_AUTH_TOKENS", self.auth_tokens),
            ("ONBOARDING_SMS_GATEWAY_TOKEN", self.sms_gateway_token),
        ):
            if value is not None and _PLACEHOLDER in value.get_secret_value():
                raise ValueError(f"{name} still holds the example's {_PLACEHOLDER}: replace it")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        """The database file, or None for PostgreSQL and in-memory SQLite."""
        if not self.is_sqlite:
            return None
        path = self.database_url.split(":///", 1)[1] if ":///" in self.database_url else ""
        path = path.split("?", 1)[0]
        return Path(path) if path and path != ":memory:" else None

    @property
    def otp_policy(self) -> OtpPolicy:
        return OtpPolicy(
            length=self.otp_length,
            ttl=timedelta(seconds=self.otp_ttl_seconds),
            max_attempts=self.otp_max_attempts,
            resend_interval=timedelta(seconds=self.otp_resend_interval_seconds),
            max_sends_per_agreement=self.otp_max_sends_per_agreement,
            max_sends_per_phone=self.otp_max_sends_per_phone_per_hour,
        )

    @property
    def lookup_policy(self) -> LookupPolicy:
        return LookupPolicy(
            max_attempts=self.inn_max_attempts,
            retry_delay=timedelta(seconds=self.inn_retry_delay_seconds),
            captcha_pause=timedelta(seconds=self.inn_captcha_pause_seconds),
            found_ttl=timedelta(seconds=self.inn_cache_ttl_seconds),
            not_found_ttl=timedelta(seconds=self.inn_not_found_ttl_seconds),
        )
