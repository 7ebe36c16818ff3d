"""The one place that talks to Kafka: clients, topics, dead letters, offsets on assignment."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
)
from aiokafka.helpers import create_ssl_context

from consumer.adapters.codec import AVRO_CONTENT_TYPE, JSON_CONTENT_TYPE, Codec
from consumer.config import Settings
from consumer.service.ports import DeadLetter, DueMessage, IngestStore, Unavailable
from consumer.service.retry import retrying

log = logging.getLogger(__name__)


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection options shared by every client (consumer, producer, admin).

    `KAFKA_SECURITY_PROTOCOL` selects the transport: SSL and SASL_SSL get an
    `ssl_context` (CA, optional client certificate and key, hostname check per
    `KAFKA_SSL_CHECK_HOSTNAME`); SASL_PLAINTEXT and SASL_SSL get the mechanism
    (PLAIN unless `KAFKA_SASL_MECHANISM` says otherwise) and the credentials,
    which aiokafka names `sasl_plain_*` for SCRAM too. A SASL protocol without
    credentials raises ValueError naming the missing variables.
    """
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": protocol,
    }
    if protocol in ("SSL", "SASL_SSL"):
        if settings.kafka_ssl_keyfile and not settings.kafka_ssl_certfile:
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={protocol}: KAFKA_SSL_KEYFILE is set but "
                "KAFKA_SSL_CERTFILE is not (the client key needs its certificate)"
            )
        context = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
        context.check_hostname = settings.kafka_ssl_check_hostname
        options["ssl_context"] = context
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        password = settings.kafka_sasl_password
        missing = [
            name
            for name, value in (
                ("KAFKA_SASL_USERNAME", settings.kafka_sasl_username),
                ("KAFKA_SASL_PASSWORD", password.get_secret_value() if password else None),
            )
            if not value
        ]
        if missing or password is None:
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs {' and '.join(missing)}")
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = password.get_secret_value()
    return options


async def ensure_topics(settings: Settings, names: Iterable[str]) -> None:
    """Create missing topics; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if missing:
            # Another instance may win the race to create them.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(n, settings.topic_partitions, 1) for n in missing]
                )
            log.info("created topics", extra={"topics": missing})
    finally:
        await admin.close()


def make_producer(settings: Settings) -> AIOKafkaProducer:
    # Idempotent producer: broker-side retries never duplicate a record.
    return AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        request_timeout_ms=settings.publish_timeout_ms,
    )


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **client_options(settings),
        group_id=settings.kafka_group_id,
        enable_auto_commit=False,  # positions live in PostgreSQL with the effects
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )


Headers = list[tuple[str, bytes | None]]
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)
_MAX_TRIM = 2


class KafkaDeadLetters:
    """Dead letters carry the record's key, value and headers untouched, plus
    `dlq.*` headers, whatever the record held:

    - neither key nor value (a keyless tombstone): `send()` refuses that, a
      batch of one does not;
    - a value that filled the producer's request on its own, so that with our
      headers it no longer fits: sent without the value (then without the key and
      the producer's headers), saying so in `dlq.omitted` and
      `dlq.original.value.bytes`; dlq.original.* tells where to read it.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def send(self, dead: Sequence[DeadLetter]) -> None:
        """Publish and wait for every one: only then may their offsets be committed."""
        try:
            in_flight = [await self._start(d, trim=0) for d in dead]
            for d, (trim, delivery) in zip(dead, in_flight, strict=True):
                while True:
                    try:
                        await delivery
                        break
                    except _TOO_LARGE:  # the broker's limit is lower than ours
                        if trim == _MAX_TRIM:
                            raise
                        trim, delivery = await self._start(d, trim=trim + 1)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise Unavailable(f"kafka: cannot publish dead letters: {exc!r}") from exc

    async def _start(self, d: DeadLetter, *, trim: int) -> tuple[int, asyncio.Future[Any]]:
        """Hand one letter to the producer, trimmed as far as it takes to fit."""
        while True:
            try:
                return trim, await self._send(*self._letter(d, trim))
            except _TOO_LARGE:
                if trim == _MAX_TRIM:
                    raise
                trim += 1

    @staticmethod
    def _letter(d: DeadLetter, trim: int) -> tuple[bytes | None, bytes | None, Headers]:
        key, value, headers = d.record.key, d.record.value, d.headers()
        if trim == 0:
            return key, value, headers
        if trim == _MAX_TRIM:  # even the key and the producer's headers are too much
            key, headers = None, [h for h in headers if h[0].startswith("dlq.")]
        return (
            key,
            None,
            [
                *headers,
                ("dlq.omitted", b"value" if trim == 1 else b"value,key,headers"),
                ("dlq.original.value.bytes", str(len(value or b"")).encode()),
            ],
        )

    async def _send(
        self, key: bytes | None, value: bytes | None, headers: Headers
    ) -> asyncio.Future[Any]:
        if key is None and value is None:
            return await self._send_keyless_tombstone(headers)
        delivery: asyncio.Future[Any] = await self.producer.send(
            self.topic, value=value, key=key, headers=headers
        )
        return delivery

    async def _send_keyless_tombstone(self, headers: Headers) -> asyncio.Future[Any]:
        batch = self.producer.create_batch()
        if batch.append(key=None, value=None, timestamp=None, headers=headers) is None:
            raise RecordTooLargeError("the headers alone do not fit in a batch")
        partitions = sorted(await self.producer.partitions_for(self.topic))
        delivery: asyncio.Future[Any] = await self.producer.send_batch(
            batch, self.topic, partition=random.choice(partitions)
        )
        return delivery


class OffsetsFromDatabase(ConsumerRebalanceListener):  # type: ignore[misc]
    """Positions come from PostgreSQL, where they were saved with their effects."""

    def __init__(
        self, consumer: AIOKafkaConsumer, store: IngestStore, batch_lock: asyncio.Lock
    ) -> None:
        self.consumer = consumer
        self.store = store
        self.batch_lock = batch_lock

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Let the batch in hand finish (and commit) before the partitions move on.
        async with self.batch_lock:
            log.info("partitions revoked", extra={"partitions": _names(revoked)})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        saved = await self._saved_offsets(assigned)
        fresh = []
        for tp in assigned:
            offset = saved.get((tp.topic, tp.partition))
            if offset is None:
                fresh.append(tp)
            else:
                self.consumer.seek(tp, offset)
        if fresh:
            # Never processed here: read the history (CONTRACT.md, Configuration).
            # Explicit offsets: seek_to_beginning is lazy and may lose to a reset.
            for tp, offset in (await self.consumer.beginning_offsets(fresh)).items():
                self.consumer.seek(tp, offset)
        log.info(
            "partitions assigned",
            extra={"partitions": _names(assigned), "from_database": len(saved)},
        )

    async def _saved_offsets(self, assigned: set[TopicPartition]) -> dict[tuple[str, int], int]:
        # Without them the consumer would start from Kafka's mirror or the beginning:
        # harmless (rules are idempotent) but slow, so wait for the database instead.
        return await retrying(
            lambda: self.store.load_offsets((tp.topic, tp.partition) for tp in assigned),
            retry_on=Exception,
            what="reading saved offsets",
        )


def _names(tps: Iterable[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in tps)


class KafkaDuePublisher:
    """Writes `followup.due` records (Avro single-object or JSON, per configuration)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, codec: Codec, fmt: str) -> None:
        self.producer = producer
        self.topic = topic
        self.codec = codec
        self.fmt = fmt

    def encode(self, record: Mapping[str, Any]) -> tuple[bytes, str]:
        if self.fmt == "json":
            return self.codec.encode_json("followup_due", record), JSON_CONTENT_TYPE
        return self.codec.encode_avro("followup_due", record), AVRO_CONTENT_TYPE

    async def _one(self, key: str, record: Mapping[str, Any]) -> None:
        value, content_type = self.encode(record)
        delivery = await self.producer.send(
            self.topic,
            value=value,
            key=key.encode(),
            headers=[("content-type", content_type.encode())],
        )
        await delivery

    async def broker_reachable(self) -> bool:
        try:
            return bool(
                await asyncio.wait_for(self.producer.client.force_metadata_update(), timeout=5)
            )
        except Exception:
            return False

    async def publish(self, messages: Sequence[DueMessage]) -> list[BaseException | None]:
        results = await asyncio.gather(
            *(self._one(m.key, m.record) for m in messages), return_exceptions=True
        )
        return [r if isinstance(r, BaseException) else None for r in results]


def make_reader(settings: Settings, **options: Any) -> AIOKafkaConsumer:
    """A consumer outside any group (replay, health, tail): assigned, not subscribed."""
    return AIOKafkaConsumer(
        **{**client_options(settings), **options}, group_id=None, enable_auto_commit=False
    )


async def input_partitions(settings: Settings) -> list[TopicPartition]:
    """Every partition of the input topics that exist."""
    return await partitions_of(settings, list(settings.input_topics))


async def partitions_of(settings: Settings, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of those of `topics` that exist."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    return sorted(
        TopicPartition(t["topic"], p["partition"])
        for t in described
        if t["error_code"] == 0
        for p in t["partitions"]
    )
