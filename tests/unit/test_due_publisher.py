"""KafkaDuePublisher.publish against a stand-in broker: records in their key's
partition, in order, each once; each record's own outcome; a broker that does not
answer costs one timeout, not one per record."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from consumer.adapters.codec import Codec
from consumer.adapters.kafka import KafkaDuePublisher
from consumer.service.ports import DueMessage

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def message(n: int, text: str = "hello") -> DueMessage:
    return DueMessage(
        f"user-{n}",
        {
            "event_id": f"f-{n}",
            "followup_id": f"f-{n}",
            "user_id": f"user-{n}",
            "conversation_id": f"conv-{n}",
            "trigger_type": "custom",
            "template_id": "custom",
            "message": text,
            "scheduled_at": T0,
            "emitted_at": T0,
            "booking_id": None,
            "attempt": 1,
            "locale": "en",
            "template_version": 1,
        },
    )


class StandInProducer:
    """Real producer batches (aiokafka's BatchBuilder), a stand-in for the broker:
    `send_batch` raises at once for the calls in `raise_on` (by number), and a
    batch to a partition in `nack` is delivered with that partition's error."""

    def __init__(
        self,
        nack: dict[int, Exception] | None = None,
        *,
        raise_on: dict[int, Exception] | None = None,
        partitions: int = 6,
        batch_size: int = 256 * 1024,
        metadata: Exception | None = None,
    ) -> None:
        self.nack = nack or {}
        self.raise_on = raise_on or {}
        self.partitions = partitions
        self.batch_size = batch_size
        self.metadata = metadata
        self.calls = 0
        self.sent: list[tuple[int, list[bytes]]] = []  # (partition, keys) per batch

    async def partitions_for(self, topic: str) -> set[int]:
        if self.metadata is not None:
            raise self.metadata
        return set(range(self.partitions))

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0, is_transactional=False)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        self.calls += 1
        if self.calls in self.raise_on:
            raise self.raise_on[self.calls]
        keys = [r.key for r in DefaultRecordBatch(bytearray(batch._build()))]
        self.sent.append((partition, keys))
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if partition in self.nack:
            delivery.set_exception(self.nack[partition])
        else:
            delivery.set_result(None)
        return delivery


def publisher(producer: StandInProducer) -> KafkaDuePublisher:
    return KafkaDuePublisher(cast(AIOKafkaProducer, producer), "due", Codec.load(), "avro")


def partition_of(n: int, partitions: int = 6) -> int:
    """Where the producer's own partitioner puts user-n's records."""
    every = list(range(partitions))
    return int(DefaultPartitioner()(f"user-{n}".encode(), every, every))


async def test_records_go_to_their_keys_partition_in_order_each_once() -> None:
    producer = StandInProducer(batch_size=2000)  # a few records a batch
    results = await publisher(producer).publish([message(n % 40) for n in range(400)])
    assert results == [None] * 400
    assert len(producer.sent) > 6  # full batches were sent and new ones started
    by_partition: dict[int, list[bytes]] = {}
    for partition, keys in producer.sent:
        assert {partition_of(int(k.decode()[5:])) for k in keys} == {partition}
        by_partition.setdefault(partition, []).extend(keys)
    for partition, keys in by_partition.items():
        expected = [f"user-{n % 40}".encode() for n in range(400)]
        assert keys == [k for k in expected if partition_of(int(k.decode()[5:])) == partition]


async def test_a_batch_the_broker_refuses_fails_its_records_only() -> None:
    no_leader = NotLeaderForPartitionError()
    refused = partition_of(4)
    producer = StandInProducer({refused: no_leader})
    results = await publisher(producer).publish([message(n) for n in range(1, 30)])
    assert results == [no_leader if partition_of(n) == refused else None for n in range(1, 30)]
    assert any(r is None for r in results)


async def test_a_record_that_cannot_be_encoded_fails_alone() -> None:
    bad = message(2)
    bad.record["attempt"] = "two"  # not an int: the codec refuses it
    producer = StandInProducer()
    results = await publisher(producer).publish([message(1), bad, message(3)])
    assert [r is None for r in results] == [True, False, True]
    assert "attempt" in str(results[1])
    assert sorted(k for _, keys in producer.sent for k in keys) == [b"user-1", b"user-3"]


async def test_a_broker_that_does_not_answer_fails_the_rest_without_waiting_again() -> None:
    timeout = KafkaTimeoutError()
    producer = StandInProducer(raise_on={2: timeout})
    messages = [message(n) for n in range(1, 40)]
    results = await publisher(producer).publish(messages)
    [(first, keys)] = producer.sent
    assert producer.calls == 2  # not tried again: each would wait as long
    assert results == [None if partition_of(n) == first else timeout for n in range(1, 40)]
    assert len(keys) == results.count(None)


async def test_no_metadata_fails_every_record() -> None:
    timeout = KafkaTimeoutError()
    producer = StandInProducer(metadata=timeout)
    assert await publisher(producer).publish([message(1), message(2)]) == [timeout, timeout]
    assert producer.calls == 0
