"""The Confluent wire format against the real schema registry of `scripts/services`.

Values come from confluent-kafka's own `AvroSerializer` (the ecosystem's client, not
ours), through a real broker, into the service running in this process; its
`followup.due` is read back with confluent-kafka's `AvroDeserializer`. An evolved
writer schema still decodes, an unknown schema id is dead-lettered, and a registry
that goes away mid-stream (a TCP proxy in front of it, taken down and brought back)
costs nothing: the batch waits and is then applied whole.

The registry's URL and confluent-kafka's client come from `ecosystem_registry`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiokafka import TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext

from consumer.adapters.codec import CONFLUENT_CONTENT_TYPE, confluent_frame, confluent_schema_id
from consumer.adapters.registry import RegistryRefused
from consumer.config import Settings
from consumer.entrypoints.runner import Service
from consumer.service.retry import OUTAGES
from tests.integration.conftest import REPO
from tests.integration.ecosystem_registry import (
    deserializer,
    registry_client,
    serializer,
)
from tests.integration.helpers import (
    CODEC,
    Raw,
    activity,
    confirmed,
    consumed_to_end,
    create_topics,
    headers_of,
    ms,
    new_id,
    nothing_due,
    produce_raw,
    query,
    read_to_end,
    running,
    scored,
    stored_offsets,
    wait_until,
)

pytestmark = pytest.mark.integration


def schema_text(name: str) -> str:
    return (REPO / "schemas" / f"{name}.avsc").read_text()


def evolved(name: str, field: str) -> str:
    """`name`'s schema with one more optional field: a producer a step ahead of us."""
    raw = json.loads(schema_text(name))
    raw["fields"].append({"name": field, "type": ["null", "string"], "default": None})
    return json.dumps(raw)


@pytest.fixture
def registry(registry_url: str, settings: Settings) -> Iterator[SchemaRegistryClient]:
    """confluent-kafka's client; the subjects of this test's topics deleted afterwards."""
    prefix = settings.kafka_group_id.removesuffix("-group")
    with registry_client(registry_url) as client:
        yield client
        for subject in client.get_subjects():
            if subject.startswith(prefix):
                with contextlib.suppress(Exception):
                    client.delete_subject(subject)
                    client.delete_subject(subject, permanent=True)


class Producer:
    """Values as a Confluent shop writes them: AvroSerializer, topic-name strategy."""

    def __init__(self, client: SchemaRegistryClient) -> None:
        self.client = client

    def value(self, topic: str, schema: str, record: dict[str, Any]) -> bytes:
        serialize = serializer(self.client, schema)
        data = serialize(record, SerializationContext(topic, MessageField.VALUE))
        assert isinstance(data, bytes)
        assert data[:1] == b"\x00"
        return data

    def event(self, topic: str, kind: str, record: dict[str, Any], schema: str = "") -> Raw:
        value = self.value(topic, schema or schema_text(kind), record)
        return (topic, str(record["user_id"]).encode(), value)


def confluent_settings(settings: Settings, url: str, **more: Any) -> Settings:
    return settings.model_copy(
        update={"schema_registry_url": url, "followup_due_format": "confluent", **more}
    )


async def test_the_ecosystems_values_are_applied_and_its_deserializer_reads_followup_due(
    settings: Settings, registry_url: str, registry: SchemaRegistryClient
) -> None:
    settings = confluent_settings(settings, registry_url)
    produce = Producer(registry)
    now = ms(datetime.now(UTC))
    user, booking, other = new_id("u"), new_id("bk"), new_id("u2")
    # Due a minute ago: event date + FOLLOWUP_DELAY_HOURS; sent at once.
    event_date = now - timedelta(hours=settings.followup_delay_hours, minutes=1)
    booked = confirmed(user, booking, event_date, now - timedelta(hours=2))
    scores = [
        scored(user, "conv-c", 0.9, now - timedelta(minutes=30 - i), message_id=f"m{i}")
        for i in range(3)
    ]
    messages: list[Raw] = [
        produce.event(settings.topic_booking_confirmed, booked.kind, booked.record),
        # The three formats on one topic: Confluent, single-object, JSON.
        produce.event(settings.topic_emotion_scored, scores[0].kind, scores[0].record),
        (settings.topic_emotion_scored, user.encode(), replace(scores[1], fmt="avro").value),
        (settings.topic_emotion_scored, user.encode(), scores[2].value),
        produce.event(settings.topic_user_activity, "user_activity", activity(other, now).record),
    ]

    await create_topics(settings)
    async with running(settings) as service:
        await produce_raw(settings, messages)
        await consumed_to_end(settings, service=service)
        executed = await wait_until(
            lambda: query(
                settings,
                "SELECT * FROM scheduled_followups WHERE user_id = $1 AND status = 'executed'",
                user,
            ),
            lambda rows: len(rows) == 1,
        )
        await nothing_due(settings)
        out = await read_to_end(settings, settings.topic_followup_due)

    (history,) = await query(
        settings,
        "SELECT history::text AS h FROM conversation_emotions WHERE conversation_id = $1",
        "conv-c",
    )
    assert sorted(m for m, _, _ in json.loads(history["h"])) == ["m0", "m1", "m2"]
    assert await query(settings, "SELECT 1 FROM user_projection WHERE user_id = $1", other)

    # Registered once, under the topic-name strategy's subject.
    subject = f"{settings.topic_followup_due}-value"
    latest = registry.get_latest_version(subject)
    assert registry.get_versions(subject) == [1]
    assert json.loads(latest.schema.schema_str or "") == json.loads(schema_text("followup_due"))

    [record] = out
    assert confluent_schema_id(record.value) == latest.schema_id
    assert headers_of(record)["content-type"] == CONFLUENT_CONTENT_TYPE.encode()
    assert record.key == user.encode()
    # A stock deserializer with a client of its own (nothing cached) reads it.
    with registry_client(registry_url) as fresh:
        due = deserializer(fresh)(
            record.value, SerializationContext(settings.topic_followup_due, MessageField.VALUE)
        )
    row = executed[0]
    assert due["event_id"] == due["followup_id"] == row["id"]
    assert (due["user_id"], due["booking_id"]) == (user, booking)
    assert due["conversation_id"] == f"booking_{booking}"
    assert due["template_id"] == row["template_id"]
    assert due["message"] == row["message_content"]
    assert due["scheduled_at"] == row["scheduled_at"]
    assert due["attempt"] == 1


async def test_a_registry_that_refuses_followup_dues_schema_stops_the_start(
    settings: Settings, registry_url: str, registry: SchemaRegistryClient
) -> None:
    settings = confluent_settings(settings, registry_url)
    # The subject already holds another record, and its rule wants compatibility.
    subject = f"{settings.topic_followup_due}-value"
    Producer(registry).value(
        settings.topic_followup_due,
        schema_text("user_activity"),
        {**activity("u", datetime.now(UTC)).record},
    )
    registry.set_compatibility(subject, "BACKWARD")

    service = Service(settings)
    with pytest.raises(RegistryRefused, match=f"{subject}.*409"):
        await asyncio.wait_for(service.run(), timeout=60)
    assert registry.get_versions(subject) == [1]


async def test_an_evolved_and_an_older_writer_schema_still_decode(
    settings: Settings, registry_url: str, registry: SchemaRegistryClient
) -> None:
    settings = settings.model_copy(update={"schema_registry_url": registry_url})
    produce = Producer(registry)
    now = ms(datetime.now(UTC))
    first, second, third = (new_id(p) for p in ("u1", "u2", "u3"))
    topic = settings.topic_user_activity
    plain = produce.event(topic, "user_activity", activity(first, now).record)
    ahead = produce.event(
        topic,
        "user_activity",
        {**activity(second, now).record, "device": "phone"},
        schema=evolved("user_activity", "device"),
    )
    # booking.confirmed as a producer still on v1 writes it (no conversation_id, timezone).
    booking = new_id("bk")
    v1 = {
        k: v
        for k, v in confirmed(third, booking, now + timedelta(days=3), now).record.items()
        if k not in ("conversation_id", "timezone")
    }
    behind = produce.event(
        settings.topic_booking_confirmed,
        "booking_confirmed",
        v1,
        schema=(REPO / "schemas/history/booking_confirmed.v1.avsc").read_text(),
    )
    ids = {confluent_schema_id(v) for _, _, v in (plain, ahead, behind)}
    assert len(ids) == 3  # three writer schemas, each fetched by the service

    await create_topics(settings)
    async with running(settings) as service:
        await produce_raw(settings, [plain, ahead, behind])
        await consumed_to_end(settings, service=service)

    users = await query(
        settings,
        "SELECT user_id FROM user_projection WHERE user_id = ANY($1::text[])",
        [first, second],
    )
    assert {r["user_id"] for r in users} == {first, second}
    (post_event,) = await query(
        settings,
        "SELECT conversation_id FROM scheduled_followups "
        "WHERE user_id = $1 AND trigger_type = 'post_event'",
        third,
    )
    assert post_event["conversation_id"] == f"booking_{booking}"  # the reader's default
    assert await read_to_end(settings, settings.topic_dlq) == []


async def test_an_unknown_schema_id_is_dead_lettered_and_the_rest_applied(
    settings: Settings, registry_url: str, registry: SchemaRegistryClient
) -> None:
    settings = settings.model_copy(update={"schema_registry_url": registry_url})
    produce = Producer(registry)
    now = ms(datetime.now(UTC))
    before, after, lost = new_id("ub"), new_id("ua"), new_id("ux")
    topic = settings.topic_user_activity
    good = produce.event(topic, "user_activity", activity(before, now).record)
    # A well-formed value naming a schema id this registry never handed out.
    unknown_id = 2_000_000_000
    body = CODEC.encode_avro("user_activity", activity(lost, now).record)[10:]
    unknown = (topic, lost.encode(), confluent_frame(unknown_id) + body)
    later = produce.event(topic, "user_activity", activity(after, now).record)

    await create_topics(settings)
    async with running(settings) as service:
        placed = await produce_raw(settings, [good, unknown, later])
        await consumed_to_end(settings, service=service)
        dead = await read_to_end(settings, settings.topic_dlq)

    [letter] = dead
    h = headers_of(letter)
    assert (letter.key, letter.value) == (unknown[1], unknown[2])
    assert int(h["dlq.original.offset"]) == placed[1].offset
    assert h["dlq.error.type"] == b"decode_error"
    assert f"schema id {unknown_id}" in h["dlq.error.message"].decode()
    users = await query(settings, "SELECT user_id FROM user_projection")
    assert {r["user_id"] for r in users} == {before, after}


# --- the registry going away mid-stream ------------------------------------------------


class RegistryProxy:
    """A TCP proxy in front of the registry: `up` forwards, `failing` answers every
    request with 503, `down` closes the port (connection refused) and cuts every
    open connection."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target_host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or 80
        self.path = parts.path
        self.port = 0
        self.mode = "down"
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    async def up(self, mode: str = "up") -> None:
        await self.down()
        self.mode = mode
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        self.mode = "down"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            if self.mode == "failing":
                await reader.read(65536)
                writer.write(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
            self._open.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._open.discard(writer)
            writer.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        finally:
            self._pipes.discard(task)
            self._open.discard(dst)
            dst.close()


@pytest.fixture
async def proxy(registry_url: str) -> AsyncIterator[RegistryProxy]:
    p = RegistryProxy(registry_url)
    await p.up()
    yield p
    await p.down()


class OutageWaits:
    """The ingest loop's failed tries that the registry caused, as the process's
    outage report counts them (its log says what changed only)."""

    def __init__(self) -> None:
        self.start = OUTAGES.tries.get("ingest", 0)

    @property
    def errors(self) -> list[str]:
        reason = OUTAGES.last_reason.get("ingest", "")
        tried = OUTAGES.tries.get("ingest", 0) - self.start
        return [reason] * tried if "schema registry" in reason else []


@pytest.fixture
def outage_waits() -> OutageWaits:
    return OutageWaits()


@pytest.mark.timeout(180)
async def test_the_registry_going_away_mid_stream_loses_nothing(
    settings: Settings,
    registry_url: str,
    registry: SchemaRegistryClient,
    proxy: RegistryProxy,
    outage_waits: OutageWaits,
) -> None:
    settings = settings.model_copy(
        update={"schema_registry_url": proxy.url, "scheduler_enabled": False}
    )
    produce = Producer(registry)  # straight to the registry, not the proxy
    now = ms(datetime.now(UTC))
    topic = settings.topic_user_activity
    first = [new_id("ua") for _ in range(5)]
    second = [new_id("ub") for _ in range(20)]

    before = [produce.event(topic, "user_activity", activity(u, now).record) for u in first]

    await create_topics(settings)
    async with running(settings) as service:
        await produce_raw(settings, before)
        await consumed_to_end(settings, service=service)
        applied_before = await stored_offsets(settings, [topic])

        await proxy.down()
        # A writer schema the service has not seen yet: it must ask the registry.
        schema = evolved("user_activity", "session")
        produced = [
            await asyncio.to_thread(
                produce.event,
                topic,
                "user_activity",
                {**activity(u, now).record, "session": u},
                schema,
            )
            for u in second
        ]
        assert len({confluent_schema_id(v) for _, _, v in produced}) == 1
        await produce_raw(settings, produced)

        # Connection refused: the batch is tried, fails, waits, is tried again...
        await wait_until(lambda: _count(outage_waits), lambda n: n >= 2)
        assert "ConnectError" in outage_waits.errors[-1]
        # ...and then the registry answers 503 for a while.
        await proxy.up("failing")
        seen = len(outage_waits.errors)
        await wait_until(lambda: _count(outage_waits), lambda n: n >= seen + 2)
        assert "503" in outage_waits.errors[-1]
        # Meanwhile nothing of the batch was applied, and nothing dead-lettered.
        assert await stored_offsets(settings, [topic]) == applied_before
        assert not service.stop.is_set()

        await proxy.up()
        await consumed_to_end(settings, service=service, timeout=90)
        dead = await read_to_end(settings, settings.topic_dlq)

    assert dead == []
    users = await query(settings, "SELECT user_id FROM user_projection")
    assert {r["user_id"] for r in users} == set(first) | set(second)
    offsets = await stored_offsets(settings, [topic])
    assert sum(offsets.values()) == len(first) + len(second)
    assert all(isinstance(tp, TopicPartition) for tp in offsets)


async def _count(waits: OutageWaits) -> int:
    return len(waits.errors)
