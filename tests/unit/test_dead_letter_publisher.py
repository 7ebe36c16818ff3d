"""consumer.adapters.kafka.KafkaDeadLetters against a fake producer: records the
broker accepted but a plain producer cannot republish with our headers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from consumer.adapters.kafka import KafkaDeadLetters
from consumer.service.ports import DeadLetter, Unavailable

LIMIT = 10_000


@dataclass(frozen=True)
class Record:
    topic: str = "in"
    partition: int = 2
    offset: int = 7
    key: bytes | None = b"k"
    value: bytes | None = b"v"
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


def _size(key: bytes | None, value: bytes | None, headers: list[Any]) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v or b"") for k, v in headers)


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[tuple[Any, Any, Any]] = []

    def append(self, *, key: Any, value: Any, timestamp: Any, headers: Any) -> object:
        self.records.append((key, value, list(headers)))
        return object()


class FakeProducer:
    """aiokafka's AIOKafkaProducer as far as dead letters use it. `broker_limit`
    below LIMIT makes the broker refuse what the client let through."""

    def __init__(self, broker_limit: int = LIMIT, down: bool = False) -> None:
        self.broker_limit = broker_limit
        self.down = down
        self.sent: list[tuple[Any, Any, list[Any]]] = []

    def _delivered(self, key: Any, value: Any, headers: list[Any]) -> asyncio.Future[Any]:
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.down:
            delivery.set_exception(KafkaConnectionError())
        elif _size(key, value, headers) > self.broker_limit:
            delivery.set_exception(MessageSizeTooLargeError())
        else:
            self.sent.append((key, value, headers))
            delivery.set_result(None)
        return delivery

    async def send(self, topic: str, *, value: Any, key: Any, headers: Any) -> Any:
        assert not (value is None and key is None), "Need at least one: key or value"
        if _size(key, value, headers) > LIMIT:
            raise MessageSizeTooLargeError("larger than max_request_size")
        return self._delivered(key, value, list(headers))

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        [(key, value, headers)] = batch.records
        return self._delivered(key, value, headers)


def letter(**record: Any) -> DeadLetter:
    return DeadLetter(cast(Any, Record(**record)), "decode_error", "not JSON")


def publish(producer: FakeProducer, *dead: DeadLetter) -> None:
    asyncio.run(KafkaDeadLetters(cast(Any, producer), "dlq").send(dead))


def test_ordinary_letters_are_sent_untouched() -> None:
    producer = FakeProducer()
    publish(producer, letter(headers=[("a", b"\xff"), ("a", None)]))
    [(key, value, headers)] = producer.sent
    assert (key, value) == (b"k", b"v")
    assert headers[:2] == [("a", b"\xff"), ("a", None)]
    assert dict(headers)["dlq.error.type"] == b"decode_error"


def test_a_keyless_tombstone_is_sent_as_one() -> None:
    producer = FakeProducer()
    publish(producer, letter(key=None, value=None))
    [(key, value, headers)] = producer.sent
    assert (key, value) == (None, None)
    assert dict(headers)["dlq.original.offset"] == b"7"


@pytest.mark.parametrize("broker_limit", [LIMIT, LIMIT - 500], ids=["client", "broker"])
def test_a_value_too_large_to_republish_is_left_out_and_said_so(broker_limit: int) -> None:
    producer = FakeProducer(broker_limit)
    value = b"x" * (LIMIT - 10)  # fits alone, not with the dlq.* headers
    publish(producer, letter(value=value, headers=[("h", b"1")]), letter(value=b"small"))
    [(key, value_sent, headers), small] = producer.sent
    assert (key, value_sent) == (b"k", None)
    h = dict(headers)
    assert h["h"] == b"1"
    assert h["dlq.omitted"] == b"value"
    assert h["dlq.original.value.bytes"] == str(LIMIT - 10).encode()
    assert small[1] == b"small"


def test_then_the_key_and_headers_too() -> None:
    producer = FakeProducer()
    publish(producer, letter(key=b"k" * LIMIT, value=b"v", headers=[("h", b"x" * LIMIT)]))
    [(key, value, headers)] = producer.sent
    assert (key, value) == (None, None)
    h = dict(headers)
    assert "h" not in h
    assert h["dlq.omitted"] == b"value,key,headers"
    assert h["dlq.error.type"] == b"decode_error"


def test_a_broker_away_is_unavailable_not_a_reason_to_trim() -> None:
    producer = FakeProducer(down=True)
    with pytest.raises(Unavailable):
        publish(producer, letter())
