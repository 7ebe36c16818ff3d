"""The one place that talks to Kafka: clients, topics, dead letters, offsets on assignment."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import random
import struct
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka import codec as codecs
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CorruptRecordException,
    IllegalOperation,
    IllegalStateError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
    UnsupportedCodecError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import decode_varint
from aiokafka.structs import ConsumerRecord

from consumer.adapters.codec import (
    AVRO_CONTENT_TYPE,
    CONFLUENT_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    Codec,
)
from consumer.adapters.registry import ConfluentEncoder
from consumer.config import Settings
from consumer.service.batch_gate import BatchGate
from consumer.service.ports import DeadLetter, DueMessage, IngestStore, Unavailable
from consumer.service.retry import retrying

log = logging.getLogger(__name__)


class KafkaConfigError(ValueError):
    """The KAFKA_* security settings do not make a usable client (names the variables)."""


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection options shared by every client (consumer, producer, admin).

    `KAFKA_SECURITY_PROTOCOL` selects the transport: SSL and SASL_SSL get an
    `ssl_context` (CA, optional client certificate and key, hostname check per
    `KAFKA_SSL_CHECK_HOSTNAME`); SASL_PLAINTEXT and SASL_SSL get the mechanism
    (PLAIN unless `KAFKA_SASL_MECHANISM` says otherwise) and the credentials,
    which aiokafka names `sasl_plain_*` for SCRAM too. A SASL protocol without
    credentials raises KafkaConfigError naming the missing variables.
    """
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": protocol,
    }
    if protocol in ("SSL", "SASL_SSL"):
        if settings.kafka_ssl_keyfile and not settings.kafka_ssl_certfile:
            raise KafkaConfigError(
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
            raise KafkaConfigError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} needs {' and '.join(missing)}"
            )
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = password.get_secret_value()
    return options


async def ensure_topics(settings: Settings, names: Iterable[str]) -> None:
    """Create missing topics; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    try:
        await admin.start()
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


# What aiokafka buffers ahead of getmany is memory held while a batch is applied:
# 1 MiB a partition is some 10,000 records of this service's size, more than a
# batch needs (a larger record still comes: the broker returns at least one).
_PARTITION_FETCH_BYTES = 1024 * 1024
_FETCH_BYTES = 16 * 1024 * 1024


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **client_options(settings),
        group_id=settings.kafka_group_id,
        enable_auto_commit=False,  # positions live in PostgreSQL with the effects
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=_PARTITION_FETCH_BYTES,
        fetch_max_bytes=_FETCH_BYTES,
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
            raise Unavailable(f"cannot publish dead letters: {exc!r}", resource="kafka") from exc

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

    def __init__(self, consumer: AIOKafkaConsumer, store: IngestStore, gate: BatchGate) -> None:
        self.consumer = consumer
        self.store = store
        self.gate = gate

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Let the batches in flight finish (and commit) before the partitions move on.
        async with self.gate.paused():
            if revoked:  # (none on the first join)
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
    """One entry per topic, runs of partitions shortened: `booking.confirmed[0-5]`."""
    by_topic: dict[str, list[int]] = defaultdict(list)
    for tp in tps:
        by_topic[tp.topic].append(tp.partition)
    return [f"{topic}[{_runs(sorted(ps))}]" for topic, ps in sorted(by_topic.items())]


def _runs(numbers: Sequence[int]) -> str:
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ",".join(parts)


class KafkaDuePublisher:
    """Writes `followup.due` records: Avro single-object, JSON, or the Confluent wire
    format (with `confluent`, the schema registered under the topic's subject)."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        codec: Codec,
        fmt: str,
        confluent: ConfluentEncoder | None = None,
    ) -> None:
        if fmt == "confluent" and confluent is None:
            raise ValueError("FOLLOWUP_DUE_FORMAT=confluent needs a schema registry")
        self.producer = producer
        self.topic = topic
        self.codec = codec
        self.fmt = fmt
        self.confluent = confluent

    def encode(self, record: Mapping[str, Any]) -> tuple[bytes, str]:
        if self.fmt == "json":
            return self.codec.encode_json("followup_due", record), JSON_CONTENT_TYPE
        if self.fmt == "confluent" and self.confluent is not None:
            return self.confluent.encode(record), CONFLUENT_CONTENT_TYPE
        return self.codec.encode_avro("followup_due", record), AVRO_CONTENT_TYPE

    async def broker_reachable(self) -> bool:
        try:
            return bool(
                await asyncio.wait_for(self.producer.client.force_metadata_update(), timeout=5)
            )
        except Exception:
            return False

    async def publish(self, messages: Sequence[DueMessage]) -> list[BaseException | None]:
        if self.fmt == "confluent" and self.confluent is not None:
            # Registered at start; if the registry was away then, now. Raises while it
            # still is: the dispatch round is retried, no follow-up uses up a retry.
            await self.confluent.register()
        results: list[BaseException | None] = [None] * len(messages)
        try:
            partitions = sorted(await self.producer.partitions_for(self.topic))
        except KafkaTimeoutError as exc:  # no metadata: the broker is not answering
            return [exc] * len(messages)
        # Batches we fill ourselves, one partition at a time (the key's partition, as
        # the producer's own partitioner picks it): `send` per record, with its
        # future, metadata check and partitioner, cost more than encoding the record.
        deliveries: list[tuple[list[int], asyncio.Future[Any]]] = []
        try:
            for partition, queue in self._encoded(messages, len(partitions), results).items():
                for batch, indexes in self._batches(queue):
                    future = await self.producer.send_batch(
                        batch, self.topic, partition=partitions[partition]
                    )
                    deliveries.append((indexes, future))
        except KafkaTimeoutError as exc:
            # No room in the producer's queue within the timeout: the broker is not
            # answering, and each further batch would wait as long again.
            queued = {i for indexes, _ in deliveries for i in indexes}
            for i, result in enumerate(results):
                if i not in queued and result is None:
                    results[i] = exc
        acks = await asyncio.gather(*(f for _, f in deliveries), return_exceptions=True)
        for (indexes, _), ack in zip(deliveries, acks, strict=True):
            if isinstance(ack, BaseException):
                for i in indexes:
                    results[i] = ack
        return results

    def _encoded(
        self, messages: Sequence[DueMessage], partitions: int, results: list[BaseException | None]
    ) -> dict[int, list[tuple[int, bytes, bytes, str]]]:
        """(index, key, value, content type) by partition index, in order; a record
        that cannot be encoded gets its error in `results` and is left out."""
        queues: dict[int, list[tuple[int, bytes, bytes, str]]] = defaultdict(list)
        for i, m in enumerate(messages):
            try:
                value, content_type = self.encode(m.record)
            except Exception as exc:  # this record only
                results[i] = exc
                continue
            key = m.key.encode()
            queues[_partition_of(key, partitions)].append((i, key, value, content_type))
        return queues

    def _batches(
        self, queue: Sequence[tuple[int, bytes, bytes, str]]
    ) -> Iterator[tuple[Any, list[int]]]:
        """One partition's records in order, as full producer batches, each with the
        indexes of its records."""
        batch, indexes = self.producer.create_batch(), list[int]()
        for i, key, value, content_type in queue:
            headers = [("content-type", content_type.encode())]
            if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                yield batch, indexes  # full: the record starts the next one
                batch, indexes = self.producer.create_batch(), []
                # An empty batch takes any record; one the broker finds too large
                # is then alone in its batch, and fails alone.
                batch.append(timestamp=None, key=key, value=value, headers=headers)
            indexes.append(i)
        if indexes:
            yield batch, indexes


@functools.lru_cache(maxsize=1 << 14)
def _partition_of(key: bytes, count: int) -> int:
    """The partition index the producer's default partitioner gives `key` (murmur2,
    like the Java client): a user's follow-ups stay in one partition, in order."""
    return int(murmur2(key) & 0x7FFFFFFF) % count


def make_reader(settings: Settings, **options: Any) -> AIOKafkaConsumer:
    """A consumer outside any group (replay, health, tail): assigned, not subscribed."""
    return AIOKafkaConsumer(
        **{**client_options(settings), **options}, group_id=None, enable_auto_commit=False
    )


@dataclass(frozen=True, slots=True)
class GroupState:
    """The consumer group as the broker's coordinator sees it."""

    state: str  # Stable, PreparingRebalance, CompletingRebalance, Empty, Dead
    members: int


async def group_state(settings: Settings) -> GroupState:
    """How many members KAFKA_GROUP_ID has right now (none: no instance is running)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    try:
        await admin.start()
        responses = await admin.describe_consumer_groups([settings.kafka_group_id])
    finally:
        await admin.close()
    for response in responses:
        for error_code, group, state, _type, _protocol, members, *_ in response.groups:
            if group == settings.kafka_group_id:
                if error_code:
                    raise KafkaError(f"describing group {group!r}: error code {error_code}")
                return GroupState(str(state), len(members))
    return GroupState("Dead", 0)


async def input_partitions(settings: Settings) -> list[TopicPartition]:
    """Every partition of the input topics that exist."""
    return await partitions_of(settings, list(settings.input_topics))


async def partitions_of(settings: Settings, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of those of `topics` that exist."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    try:
        await admin.start()
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    return sorted(
        TopicPartition(t["topic"], p["partition"])
        for t in described
        if t["error_code"] == 0
        for p in t["partitions"]
    )


# --- fetching: records aiokafka cannot read --------------------------------------------------
# aiokafka decodes every header key as UTF-8 while it iterates a fetch (its C reader raises
# UnicodeDecodeError, its pure-Python one CorruptRecordException from it). Kafka does not
# require UTF-8 there and librdkafka writes any bytes, so one such record fails every
# `getmany` that reaches it, for all partitions at once, and its position never moves.
# `fetch_records` reads the batch holding it here instead, from the raw bytes.

_LOG_OVERHEAD = 12  # base offset (int64) and batch length (int32) before every batch
_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")  # a v2 record batch's header, 61 bytes
_CODECS = {
    0x01: (codecs.has_gzip, codecs.gzip_decode),
    0x02: (codecs.has_snappy, codecs.snappy_decode),
    0x03: (codecs.has_lz4, codecs.lz4_decode),
    0x04: (codecs.has_zstd, codecs.zstd_decode),
}
_READ_UNCOMMITTED = 0
_NOTHING_FOUND_PAUSE = 1.0
RAW_HEADER_KEY = "dlq.original.header.key"
RAW_HEADER_VALUE = "dlq.original.header.value"


@dataclass(slots=True)
class Fetched:
    """One fetch: the records read, per partition in offset order, and the records
    that could not be read at all, already dead letters (`unreadable`)."""

    records: dict[TopicPartition, list[ConsumerRecord]] = field(default_factory=dict)
    unreadable: list[DeadLetter] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(rs) for rs in self.records.values()) + len(self.unreadable)

    def all_records(self) -> list[ConsumerRecord]:
        return [r for rs in self.records.values() for r in rs]

    def split(self, topic: str, limit: int) -> list[Fetched]:
        """The fetch as consecutive parts holding at most `limit` records of `topic`
        each (the other topics' records in the first). The partitions of `topic` are
        dealt out in turn, so that every part still spreads over the ingest lanes;
        applied in order, each partition's records still go in offset order."""
        heavy = [[(tp, r) for r in rs] for tp, rs in self.records.items() if tp.topic == topic]
        if self.unreadable or sum(map(len, heavy)) <= limit:
            return [self]
        dealt = [pair for turn in itertools.zip_longest(*heavy) for pair in turn if pair]
        parts = [Fetched() for _ in range(0, len(dealt), limit)]
        parts[0].records = {tp: rs for tp, rs in self.records.items() if tp.topic != topic}
        for k, part in enumerate(parts):
            for tp, r in dealt[k * limit : (k + 1) * limit]:
                part.records.setdefault(tp, []).append(r)
        return parts

    def next_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last record fetched, read or not."""
        out: dict[TopicPartition, int] = {}
        for r in [*self.all_records(), *(d.record for d in self.unreadable)]:
            tp = TopicPartition(r.topic, r.partition)
            out[tp] = max(out.get(tp, 0), r.offset + 1)
        return out


async def fetch_records(
    consumer: AIOKafkaConsumer, *partitions: TopicPartition, timeout_ms: int, max_records: int
) -> Fetched:
    """`consumer.getmany`, except that a record aiokafka cannot read (a header key
    that is not UTF-8) does not stop the reading.

    When `getmany` fails on one, every partition goes back to where it was before the
    call (aiokafka moved some without returning their records), the partitions are
    read once here, raw, and each batch parsed by aiokafka's own reader; the batch it
    cannot read is parsed here, its readable records returned, each other one turned
    into a dead letter (`decode_error`; the header dropped, its raw key and value kept
    in `dlq.original.header.key` / `dlq.original.header.value`). Only partitions
    holding such a batch are returned, up to and including it, and their positions
    move past it: the rest is read as usual by the next call.
    """
    before = await _positions(consumer, partitions or tuple(consumer.assignment()))
    try:
        got = await consumer.getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
    except (UnicodeDecodeError, CorruptRecordException) as exc:
        if not _cannot_decode(exc):
            raise
        log.warning(
            "a record aiokafka cannot read; reading its batch here", extra={"error": str(exc)}
        )
        return await _read_around(consumer, partitions, before, max_records)
    return Fetched(got)


def _cannot_decode(exc: BaseException) -> bool:
    """aiokafka's failure on a header key that is not UTF-8, from either of its readers."""
    return isinstance(exc, UnicodeDecodeError) or (
        isinstance(exc, CorruptRecordException) and isinstance(exc.__cause__, UnicodeDecodeError)
    )


async def _positions(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    out: dict[TopicPartition, int] = {}
    for tp in partitions:
        with contextlib.suppress(IllegalStateError):  # no longer assigned
            out[tp] = await consumer.position(tp)
    return out


async def _read_around(
    consumer: AIOKafkaConsumer,
    partitions: Sequence[TopicPartition],
    before: Mapping[TopicPartition, int],
    max_records: int,
) -> Fetched:
    assigned = consumer.assignment()
    positions: dict[TopicPartition, int] = {}
    for tp in partitions or tuple(assigned):
        if tp in assigned:
            positions[tp] = before[tp] if tp in before else await _rewound(consumer, tp)
            # aiokafka moved the partitions it drained before failing, and dropped
            # their records with the exception: back to where they were.
            consumer.seek(tp, positions[tp])
    raw = await _fetch_raw(consumer, positions)
    # All read before any position moves: a batch that fails here moves nothing.
    found = {
        tp: batches
        for tp, data in raw.items()
        if (batches := read_partition(tp, positions[tp], data)) is not None
    }
    if not found:
        # Gone from the assignment (a rebalance), or the broker did not answer:
        # the next call finds out, without spinning.
        log.warning("the record aiokafka could not read was not found again")
        await asyncio.sleep(_NOTHING_FOUND_PAUSE)
    out = Fetched()
    remaining = max_records
    for tp, batches in found.items():
        end = positions[tp]
        for i, batch in enumerate(batches):
            if i and remaining <= 0:
                break  # at least one batch each: the position always moves
            if batch.records:
                out.records.setdefault(tp, []).extend(batch.records)
            out.unreadable.extend(batch.unreadable)
            remaining -= len(batch.records) + len(batch.unreadable)
            end = batch.next_offset
        if tp in consumer.assignment():
            consumer.seek(tp, end)
    return out


async def _rewound(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int:
    """A position for a partition assigned during the failed call, when its position
    at the start is unknown: the group's committed offset (never past what was
    applied), else the beginning. Records read again are skipped by their offsets."""
    with contextlib.suppress(IllegalOperation, KafkaError):  # IllegalOperation: no group
        committed = await consumer.committed(tp)
        if committed is not None:
            return int(committed)
    return int((await consumer.beginning_offsets([tp]))[tp])


async def _fetch_raw(
    consumer: AIOKafkaConsumer, positions: Mapping[TopicPartition, int]
) -> dict[TopicPartition, bytes]:
    """The partitions' record batches from `positions`, as bytes (one FetchRequest per
    leader, read uncommitted as our consumers do); a partition that fails is left out."""
    client = consumer._client  # aiokafka offers no raw fetch: its connection, not ours
    by_node: dict[int, dict[str, list[tuple[int, int, int]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for tp, offset in positions.items():
        node = client.cluster.leader_for_partition(tp)
        if node is not None and node >= 0:
            by_node[node][tp.topic].append((tp.partition, offset, _PARTITION_FETCH_BYTES))
    out: dict[TopicPartition, bytes] = {}
    for node, topics in by_node.items():
        request = FetchRequest(0, 0, _FETCH_BYTES, _READ_UNCOMMITTED, list(topics.items()))
        try:
            response = await client.send(node, request)
        except KafkaError as exc:
            log.warning("raw fetch failed", extra={"node": node, "error": repr(exc)})
            continue
        for topic, answered in response.topics:
            for partition, error_code, _highwater, *data in answered:
                if error_code == 0 and data[-1]:
                    out[TopicPartition(topic, partition)] = bytes(data[-1])
    return out


@dataclass(frozen=True, slots=True)
class ReadBatch:
    records: list[ConsumerRecord]
    unreadable: list[DeadLetter]
    next_offset: int


def read_partition(tp: TopicPartition, position: int, data: bytes) -> list[ReadBatch] | None:
    """The record batches of one partition's fetched `data`, from `position` up to
    and including the first one aiokafka cannot read; None when there is none.

    Every batch is read by aiokafka's own reader (control batches skipped, CRC
    checked); only one it fails on with a header key that is not UTF-8 is parsed
    here. A batch cut short at the end of `data` is left for the next fetch.
    """
    out: list[ReadBatch] = []
    for raw in _split_batches(data):
        batch = MemoryRecords(raw).next_batch()
        if batch is None:
            break
        if not batch.validate_crc():
            raise CorruptRecordException(f"Invalid CRC - {tp}")
        if batch.is_control_batch:
            out.append(ReadBatch([], [], batch.next_offset))
            continue
        try:
            records = [_consumer_record(tp, r) for r in batch if r.offset >= position]
        except (UnicodeDecodeError, CorruptRecordException) as exc:
            if not _cannot_decode(exc):
                raise
            out.append(_read_leniently(tp, position, raw))
            return out
        out.append(ReadBatch(records, [], batch.next_offset))
    return None


def _split_batches(data: bytes) -> Iterator[bytes]:
    pos = 0
    while len(data) - pos >= _LOG_OVERHEAD:
        (length,) = struct.unpack_from(">i", data, pos + 8)
        end = pos + _LOG_OVERHEAD + length
        if length < 0 or end > len(data):
            return  # cut short by the fetch size (the broker may do that)
        yield data[pos:end]
        pos = end


def _consumer_record(tp: TopicPartition, r: Any) -> ConsumerRecord:
    return ConsumerRecord(
        tp.topic,
        tp.partition,
        r.offset,
        r.timestamp,
        r.timestamp_type,
        r.key,
        r.value,
        r.checksum,
        len(r.key) if r.key is not None else -1,
        len(r.value) if r.value is not None else -1,
        tuple(r.headers),
    )


def _read_leniently(tp: TopicPartition, position: int, raw: bytes) -> ReadBatch:
    """A v2 record batch, header keys kept as bytes: a record whose keys are all
    UTF-8 is read as aiokafka would have read it, any other is a dead letter."""
    header = _BATCH_HEADER.unpack_from(raw)
    base_offset, magic, attributes, last_delta, first_ts, max_ts = (
        header[0],
        header[3],
        header[5],
        header[6],
        header[7],
        header[8],
    )
    if magic != 2:  # older formats have no headers: aiokafka failed for another reason
        raise CorruptRecordException(f"magic {magic} batch aiokafka cannot read - {tp}")
    log_append_time = bool(attributes & 0x08)
    buffer = bytearray(_decompressed(attributes & 0x07, raw[_BATCH_HEADER.size :]))
    records: list[ConsumerRecord] = []
    unreadable: list[DeadLetter] = []
    pos = 0
    try:
        for _ in range(header[12]):
            (ts_delta, offset_delta, key, value, headers), pos = _read_record(buffer, pos)
            offset = base_offset + offset_delta
            if offset < position:
                continue
            timestamp = max_ts if log_append_time else first_ts + ts_delta
            made = _record_or_dead_letter(
                tp, offset, timestamp, int(log_append_time), key, value, headers
            )
            (unreadable if isinstance(made, DeadLetter) else records).append(made)
    except (ValueError, IndexError) as exc:
        raise CorruptRecordException(f"Found invalid record structure: {exc!r}") from exc
    if pos != len(buffer):
        raise CorruptRecordException(f"{len(buffer) - pos} unconsumed bytes after all records")
    return ReadBatch(records, unreadable, base_offset + last_delta + 1)


def _decompressed(codec: int, data: bytes) -> bytes:
    if codec == 0:
        return data
    available, decode = _CODECS.get(codec, (None, None))
    if available is None or decode is None or not available():
        raise UnsupportedCodecError(f"compression codec {codec:#04x} not available")
    return bytes(decode(data))


RawRecord = tuple[int, int, bytes | None, bytes | None, list[tuple[bytes, bytes | None]]]


def _read_record(buffer: bytearray, pos: int) -> tuple[RawRecord, int]:
    """One record (KIP-98 layout): length, attributes, timestamp delta, offset delta,
    key, value, headers; header keys as bytes."""
    length, pos = decode_varint(buffer, pos)
    start = pos
    _attributes, pos = decode_varint(buffer, pos)
    ts_delta, pos = decode_varint(buffer, pos)
    offset_delta, pos = decode_varint(buffer, pos)
    key, pos = _nullable_bytes(buffer, pos)
    value, pos = _nullable_bytes(buffer, pos)
    count, pos = decode_varint(buffer, pos)
    if count < 0:
        raise ValueError(f"invalid number of record headers {count}")
    headers: list[tuple[bytes, bytes | None]] = []
    for _ in range(count):
        h_key, pos = _nullable_bytes(buffer, pos)
        if h_key is None:
            raise ValueError("a header key is null")
        h_value, pos = _nullable_bytes(buffer, pos)
        headers.append((h_key, h_value))
    if pos - start != length:
        raise ValueError(f"record of {length} bytes, read {pos - start}")
    return (ts_delta, offset_delta, key, value, headers), pos


def _nullable_bytes(buffer: bytearray, pos: int) -> tuple[bytes | None, int]:
    size, pos = decode_varint(buffer, pos)
    if size < 0:
        return None, pos
    if pos + size > len(buffer):
        raise ValueError("a field runs past the end of the batch")
    return bytes(buffer[pos : pos + size]), pos + size


def _record_or_dead_letter(
    tp: TopicPartition,
    offset: int,
    timestamp: int,
    timestamp_type: int,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[bytes, bytes | None]],
) -> ConsumerRecord | DeadLetter:
    readable: list[tuple[str, bytes | None]] = []
    raw: list[tuple[str, bytes | None]] = []
    problems: list[str] = []
    for i, (h_key, h_value) in enumerate(headers):
        try:
            readable.append((h_key.decode("utf-8"), h_value))
        except UnicodeDecodeError:
            raw += [(RAW_HEADER_KEY, h_key), (RAW_HEADER_VALUE, h_value)]
            problems.append(f"header {i} key {_escaped(h_key)}")
    record = ConsumerRecord(
        tp.topic,
        tp.partition,
        offset,
        timestamp,
        timestamp_type,
        key,
        value,
        None,
        len(key) if key is not None else -1,
        len(value) if value is not None else -1,
        tuple(readable),
    )
    if not problems:
        return record
    return DeadLetter(
        record,
        "decode_error",
        f"header key not UTF-8 ({'; '.join(problems)}): the record cannot be read; "
        f"such headers are left out of these headers, their raw key and value follow "
        f"as {RAW_HEADER_KEY} and {RAW_HEADER_VALUE}",
        tuple(raw),
    )


def _escaped(raw: bytes, limit: int = 100) -> str:
    return repr(raw[:limit]) + ("..." if len(raw) > limit else "")
