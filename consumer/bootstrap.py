"""The composition root: the one place that turns settings into wired objects.

`build` gives the running service's parts; any adapter can be passed in
instead (tests use the in-memory ones), so the use cases never build their
own collaborators.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer

from consumer.adapters.codec import Codec
from consumer.adapters.crypto import MessageCipher
from consumer.adapters.kafka import KafkaDeadLetters, KafkaDuePublisher, make_producer
from consumer.adapters.metrics import Metrics
from consumer.adapters.postgres.store import PostgresStore
from consumer.adapters.registry import ConfluentEncoder, RegistryClient, RegistrySchemas
from consumer.adapters.wire import WireDecoder
from consumer.config import Settings
from consumer.domain.policy import Policy, RetryPolicy
from consumer.service.dispatch import Dispatcher
from consumer.service.ingest import Ingestor
from consumer.service.operations import Operations
from consumer.service.periodic import PeriodicJobs
from consumer.service.ports import DeadLetterSink, DuePublisher, Store

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def policy_from_settings(s: Settings) -> Policy:
    return Policy(
        followup_delay=timedelta(hours=s.followup_delay_hours),
        checkin_delay=timedelta(hours=s.emotion_checkin_delay_hours),
        inactive_after=timedelta(days=s.reengagement_inactive_days),
        send_hour=s.reengagement_send_hour,
        default_timezone=s.timezone,
        history_limit=s.emotion_history_limit,
        max_pending_per_user=s.max_pending_followups_per_user,
        max_lateness=s.max_lateness,
        sending=s.sending_window,
        default_locale=s.default_locale,
    )


def retry_from_settings(s: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_retries=s.max_retries,
        base=timedelta(seconds=s.retry_backoff_seconds),
        cap=timedelta(seconds=s.retry_backoff_max_seconds),
    )


def cipher_from_settings(s: Settings) -> MessageCipher:
    key = s.followup_encryption_key
    return MessageCipher(key.get_secret_value() if key is not None else None)


def registry_from_settings(s: Settings) -> RegistryClient | None:
    """The schema registry client, when SCHEMA_REGISTRY_URL is set."""
    if s.schema_registry_url is None:
        return None
    password = s.schema_registry_password
    auth = (
        (s.schema_registry_username, password.get_secret_value())
        if s.schema_registry_username and password is not None
        else None
    )
    return RegistryClient(
        s.schema_registry_url, auth=auth, timeout=s.schema_registry_timeout_seconds
    )


def store_from_settings(s: Settings, *, pool_size: int = 5) -> PostgresStore:
    return PostgresStore.connect(s.database_url, s.kafka_group_id, pool_size=pool_size)


def build_operations(settings: Settings, store: Store, clock: Clock = utc_now) -> Operations:
    return Operations(store, policy_from_settings(settings), cipher_from_settings(settings), clock)


@dataclass
class Wired:
    """One instance's parts, built and connected, not started."""

    settings: Settings
    clock: Clock
    policy: Policy
    store: Store
    codec: Codec
    producer: AIOKafkaProducer | None  # None when both Kafka outputs were given
    metrics: Metrics
    ingestor: Ingestor
    dispatcher: Dispatcher
    periodic: PeriodicJobs
    operations: Operations
    registry: RegistryClient | None = None
    # FOLLOWUP_DUE_FORMAT=confluent: our schema, to register at start.
    due_encoder: ConfluentEncoder | None = None


def build(
    settings: Settings,
    *,
    store: Store | None = None,
    publisher: DuePublisher | None = None,
    dead_letters: DeadLetterSink | None = None,
    clock: Clock = utc_now,
) -> Wired:
    """Every part of one instance from the settings; pass any adapter to replace it."""
    s = settings
    policy = policy_from_settings(s)
    codec = Codec.load()
    metrics = Metrics()
    cipher = cipher_from_settings(s)
    db: Store = store if store is not None else store_from_settings(s)
    producer = make_producer(s) if publisher is None or dead_letters is None else None
    if dead_letters is None:
        assert producer is not None
        dead_letters = KafkaDeadLetters(producer, s.topic_dlq)
    registry = registry_from_settings(s)
    due_encoder = None
    if s.followup_due_format == "confluent" and registry is not None:
        # The topic-name strategy's subject, as confluent-kafka's serializers use it.
        subject = f"{s.topic_followup_due}-value"
        due_encoder = ConfluentEncoder(registry, codec, "followup_due", subject)
    if publisher is None:
        assert producer is not None
        publisher = KafkaDuePublisher(
            producer, s.topic_followup_due, codec, s.followup_due_format, due_encoder
        )
    decoder = WireDecoder(codec, RegistrySchemas(registry) if registry is not None else None)
    ingestor = Ingestor(
        db, decoder, policy, s.input_topics, dead_letters, clock, lanes=s.ingest_lanes
    )
    dispatcher = Dispatcher(
        db,
        publisher,
        policy,
        retry_from_settings(s),
        clock,
        batch_size=s.dispatch_batch_size,
        lanes=s.dispatch_lanes,
        lease=timedelta(seconds=s.dispatch_lease_seconds),
        poll=timedelta(seconds=s.dispatch_poll_seconds),
        telemetry=metrics,
        cipher=cipher,
    )
    periodic = PeriodicJobs(db, policy, timedelta(days=s.retention_days), clock)
    operations = Operations(db, policy, cipher, clock)
    return Wired(
        s,
        clock,
        policy,
        db,
        codec,
        producer,
        metrics,
        ingestor,
        dispatcher,
        periodic,
        operations,
        registry,
        due_encoder,
    )
