"""The use cases with the real publishers: follow-ups and dead letters through
the Kafka adapters to the broker, state in PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumer.adapters.codec import Codec
from consumer.adapters.kafka import (
    KafkaDeadLetters,
    KafkaDuePublisher,
    client_options,
    ensure_topics,
    make_producer,
)
from consumer.adapters.postgres.store import PostgresStore
from consumer.config import Settings
from consumer.domain.policy import Policy, RetryPolicy
from consumer.service.dispatch import Dispatcher
from consumer.service.ports import DuePublisher, FollowupView
from tests.integration.helpers import activity, read_to_end
from tests.service.conftest import ACTIVITY, T0, FixedClock, Rec, custom, ingestor, recs, seed

pytestmark = pytest.mark.integration

CODEC = Codec.load()
S = timedelta(seconds=1)


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    await ensure_topics(settings, [settings.topic_followup_due, settings.topic_dlq])
    p = make_producer(settings.model_copy(update={"publish_timeout_ms": 5000}))
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


def dispatcher(store: PostgresStore, publisher: DuePublisher, clock: FixedClock) -> Dispatcher:
    return Dispatcher(
        store, publisher, Policy(), RetryPolicy(base=2 * S), clock, owner="kafka-test"
    )


async def view_of(store: PostgresStore, id_: str) -> FollowupView:
    view = await store.get_followup(id_)
    assert view is not None, id_
    return view


async def test_due_followups_reach_the_topic_once(
    postgres_store: PostgresStore,
    settings: Settings,
    producer: AIOKafkaProducer,
    clock: FixedClock,
) -> None:
    ids = await seed(postgres_store, [custom(n, T0 - n * S) for n in range(1, 4)], T0)
    [later] = await seed(postgres_store, [custom(9, T0 + S)], T0)
    publisher = KafkaDuePublisher(producer, settings.topic_followup_due, CODEC, "avro")
    d = dispatcher(postgres_store, publisher, clock)
    assert await d.dispatch_due() == 3
    assert await d.dispatch_due() == 0
    out = await read_to_end(settings, settings.topic_followup_due)
    records = [CODEC.decode("followup_due", r.value) for r in out]
    assert sorted(r["event_id"] for r in records) == sorted(ids)
    assert {r["message"] for r in records} == {"message 1", "message 2", "message 3"}
    assert {r.key for r in out} == {b"user-1", b"user-2", b"user-3"}
    for id_ in ids:
        assert (await view_of(postgres_store, id_)).status == "executed"
    assert (await view_of(postgres_store, later)).status == "pending"


async def test_a_record_the_broker_refuses_is_a_failed_attempt(
    postgres_store: PostgresStore,
    settings: Settings,
    producer: AIOKafkaProducer,
    clock: FixedClock,
) -> None:
    small = f"{settings.topic_followup_due}.small"
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(small, 1, 1, topic_configs={"max.message.bytes": "600"})]
        )
    finally:
        await admin.close()
    big = replace(custom(1, T0), custom_message="x" * 2000)
    [fid] = await seed(postgres_store, [big], T0)
    publisher = KafkaDuePublisher(producer, small, CODEC, "json")
    assert await publisher.broker_reachable()
    assert await dispatcher(postgres_store, publisher, clock).dispatch_due() == 1
    view = await view_of(postgres_store, fid)
    assert (view.status, view.retry_count) == ("pending", 1)
    assert view.error_message is not None
    assert "TooLarge" in view.error_message
    assert await postgres_store.next_due_at(clock()) == T0 + 2 * S


async def test_dead_letters_reach_the_topic_with_their_headers(
    postgres_store: PostgresStore,
    settings: Settings,
    producer: AIOKafkaProducer,
    clock: FixedClock,
) -> None:
    records = [
        Rec(ACTIVITY, 1, 4, b"not a value", b"u1", [("traceparent", b"00-abc-01")]),
        *recs([activity("u1", T0 - S)], partition=1, start=5),
    ]
    sink = KafkaDeadLetters(producer, settings.topic_dlq)
    outcome = await ingestor(postgres_store, sink, clock).process(records)
    assert outcome.dead == {(ACTIVITY, "decode_error"): 1}
    [dead] = await read_to_end(settings, settings.topic_dlq)
    assert (dead.key, dead.value) == (b"u1", b"not a value")
    headers = dict(dead.headers)
    assert headers["traceparent"] == b"00-abc-01"
    assert headers["dlq.original.topic"] == ACTIVITY.encode()
    assert (headers["dlq.original.partition"], headers["dlq.original.offset"]) == (b"1", b"4")
    assert headers["dlq.error.type"] == b"decode_error"
    assert await postgres_store.load_offsets([(ACTIVITY, 1)]) == {(ACTIVITY, 1): 6}
