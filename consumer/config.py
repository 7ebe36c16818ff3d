"""Configuration from the environment (CONTRACT.md, "Configuration")."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumer.domain.limits import locale_problem
from consumer.domain.locales import canonical_locale
from consumer.domain.sending_window import QuietHours, SendingWindow

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(Exception):
    """An environment variable has a value the service cannot run with."""


class Settings(BaseSettings):
    """Every knob the service has; field name upper-cased is the variable name."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = "localhost:9092"
    database_url: str = "postgresql+asyncpg://postgres@localhost:5432/followups"
    kafka_group_id: str = "followup-consumer"

    scheduler_timezone: str = "UTC"
    scheduler_enabled: bool = True
    followup_delay_hours: float = Field(24, ge=0)
    reengagement_inactive_days: int = Field(30, ge=1)
    reengagement_send_hour: int = Field(9, ge=0, le=23)
    emotion_history_limit: int = Field(5, ge=1, le=1000)
    emotion_checkin_delay_hours: float = Field(24, ge=0)
    max_pending_followups_per_user: int = Field(10, ge=1)
    max_lateness_hours: float = Field(48, gt=0)
    # Local wall-clock window in each user's time zone ("21:00-08:00"); empty: off.
    quiet_hours: str = ""
    # Follow-ups sent per user per local calendar day; 0: no cap.
    max_sends_per_user_per_day: int = Field(0, ge=0)
    # The texts' locale for users whose own locale (and its language) has no text.
    default_locale: str = "en"
    retention_days: int = Field(90, ge=1)
    max_retries: int = Field(5, ge=0)

    topic_booking_confirmed: str = "booking.confirmed"
    topic_booking_cancelled: str = "booking.cancelled"
    topic_emotion_scored: str = "message.emotion_scored"
    topic_user_activity: str = "user.activity"
    topic_followup_due: str = "followup.due"
    topic_dlq: str = "followup.dlq"
    # Partitions for topics the service creates itself when they are missing.
    topic_partitions: int = Field(6, ge=1)
    # avro: single-object encoding; json; confluent: the Confluent wire format, the
    # schema registered in SCHEMA_REGISTRY_URL under "<TOPIC_FOLLOWUP_DUE>-value".
    followup_due_format: Literal["avro", "json", "confluent"] = "avro"

    # A Confluent-compatible schema registry (the Confluent API's base URL). Set, the
    # consumer also decodes values in the Confluent wire format (0x00, schema id, Avro).
    schema_registry_url: str | None = None
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None
    # Per request to the registry; a request is tried a few times before the batch
    # waits (an outage: retried until the registry answers).
    schema_registry_timeout_seconds: float = Field(5.0, gt=0, le=300)

    # `run` migrates first; a least-privilege role skips it (the owner migrates).
    migrate_on_start: bool = True
    # Processes `run` starts on this host (each a full instance in the group).
    workers: int = Field(1, ge=1, le=64)
    # Throughput knobs: bigger batches mean fewer transactions per event.
    ingest_batch_max_records: int = Field(10000, ge=1)
    # A score loads its conversation's whole history (up to 500 scores): memory
    # follows the scores in a transaction, so a fetch with more is applied in parts.
    ingest_batch_max_scores: int = Field(5000, ge=1)
    ingest_lanes: int = Field(3, ge=1, le=16)
    ingest_fetch_timeout_ms: int = Field(200, ge=1)
    dispatch_batch_size: int = Field(1000, ge=1)
    dispatch_lanes: int = Field(4, ge=1, le=16)
    dispatch_lease_seconds: float = Field(30, gt=0)
    dispatch_poll_seconds: float = Field(1.0, gt=0)
    publish_timeout_ms: int = Field(30000, ge=1000)
    retry_backoff_seconds: float = Field(2.0, gt=0)
    retry_backoff_max_seconds: float = Field(300.0, gt=0)

    log_level: str = "INFO"
    # auto: text on a terminal, JSON lines otherwise (a file, a pipe, a log collector).
    log_format: Literal["auto", "text", "json"] = "auto"

    # Operations: HTTP beside the consumer (health, metrics, admin API).
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)  # 0: no HTTP server
    # Bearer token of the admin endpoints; unset: they are disabled, not open.
    admin_token: SecretStr | None = None
    # Fernet key (urlsafe base64, 32 bytes): message_content encrypted at rest.
    followup_encryption_key: SecretStr | None = None

    # Kafka client security (see kafka_io.client_options).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_ssl_check_hostname: bool = True

    @field_validator("scheduler_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("default_locale")
    @classmethod
    def _locale(cls, value: str) -> str:
        problem = locale_problem(value.strip())
        if problem is not None:
            raise ValueError(problem)
        return canonical_locale(value.strip())

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str) -> str:
        QuietHours.parse(value)  # a ValueError names what is wrong
        return value.strip()

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)} (got {value!r})")
        return level

    @field_validator("database_url")
    @classmethod
    def _asyncpg_url(cls, value: str) -> str:
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError("must start with postgresql+asyncpg://")
        return value

    @field_validator("followup_encryption_key")
    @classmethod
    def _fernet_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from cryptography.fernet import Fernet

            try:
                Fernet(value.get_secret_value().encode())
            except (ValueError, TypeError) as exc:
                raise ValueError("must be a Fernet key: 32 url-safe base64-encoded bytes") from exc
        return value

    @field_validator("schema_registry_url")
    @classmethod
    def _registry_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _registry_needed(self) -> Settings:
        if self.followup_due_format == "confluent" and self.schema_registry_url is None:
            raise ValueError(
                "FOLLOWUP_DUE_FORMAT=confluent needs SCHEMA_REGISTRY_URL "
                "(the registry its schema is registered in)"
            )
        has_user = bool(self.schema_registry_username)
        has_password = self.schema_registry_password is not None
        if has_user != has_password:
            raise ValueError(
                "SCHEMA_REGISTRY_USERNAME and SCHEMA_REGISTRY_PASSWORD go together (basic auth)"
            )
        return self

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.scheduler_timezone)

    @property
    def sending_window(self) -> SendingWindow:
        return SendingWindow(QuietHours.parse(self.quiet_hours), self.max_sends_per_user_per_day)

    @property
    def database_location(self) -> str:
        """Where DATABASE_URL points, for messages: host:port/database, no credentials."""
        rest = self.database_url.split("://", 1)[-1]
        hosts, _, path = rest.rpartition("@")[2].partition("/")
        return f"{hosts or 'localhost'}/{path.split('?', 1)[0]}"

    @property
    def max_lateness(self) -> timedelta:
        return timedelta(hours=self.max_lateness_hours)

    @property
    def input_topics(self) -> dict[str, str]:
        """Topic name -> logical event kind (the schema name)."""
        return {
            self.topic_booking_confirmed: "booking_confirmed",
            self.topic_booking_cancelled: "booking_cancelled",
            self.topic_emotion_scored: "message_emotion_scored",
            self.topic_user_activity: "user_activity",
        }


def load_settings(**overrides: object) -> Settings:
    """Read the environment; a bad value raises ConfigError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_problem(err["loc"], err["msg"]) for err in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from exc


def _problem(loc: tuple[int | str, ...], msg: str) -> str:
    if not loc:  # a rule across variables: the message names them
        return msg.removeprefix("Value error, ")
    return f"{'.'.join(str(p) for p in loc).upper()}: {msg.removeprefix('Value error, ')}"
