"""KafkaDuePublisher.publish against a stand-in producer: each record's own outcome,
and a broker that does not answer costs one timeout, not one per record."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, NotLeaderForPartitionError

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
    """`send` answers per key: raise at once, or a delivery that fails or succeeds."""

    def __init__(self, raise_for: dict[bytes, Exception], nack_for: dict[bytes, Exception]):
        self.raise_for = raise_for
        self.nack_for = nack_for
        self.sent: list[bytes] = []

    async def send(self, topic: str, *, value: bytes, key: bytes, headers: Any) -> Any:
        self.sent.append(key)
        if key in self.raise_for:
            raise self.raise_for[key]
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if key in self.nack_for:
            delivery.set_exception(self.nack_for[key])
        else:
            delivery.set_result(None)
        return delivery


def publisher(producer: StandInProducer) -> KafkaDuePublisher:
    return KafkaDuePublisher(cast(AIOKafkaProducer, producer), "due", Codec.load(), "avro")


async def test_each_record_has_its_own_outcome() -> None:
    too_large = MessageSizeTooLargeError("too large")
    no_leader = NotLeaderForPartitionError()
    producer = StandInProducer({b"user-2": too_large}, {b"user-4": no_leader})
    results = await publisher(producer).publish([message(n) for n in range(1, 6)])
    assert results == [None, too_large, None, no_leader, None]
    assert producer.sent == [f"user-{n}".encode() for n in range(1, 6)]


async def test_a_record_that_cannot_be_encoded_fails_alone() -> None:
    bad = message(2)
    bad.record["attempt"] = "two"  # not an int: the codec refuses it
    results = await publisher(StandInProducer({}, {})).publish([message(1), bad, message(3)])
    assert [r is None for r in results] == [True, False, True]
    assert "attempt" in str(results[1])


async def test_a_broker_that_does_not_answer_fails_the_rest_without_waiting_again() -> None:
    timeout = KafkaTimeoutError()
    producer = StandInProducer({b"user-2": timeout}, {})
    results = await publisher(producer).publish([message(n) for n in range(1, 5)])
    assert results == [None, timeout, timeout, timeout]
    assert producer.sent == [b"user-1", b"user-2"]  # not tried: each would wait as long
