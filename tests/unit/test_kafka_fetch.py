"""consumer.adapters.kafka.fetch_records and read_partition: a record aiokafka cannot
read (a header key that is not UTF-8) becomes a dead letter; nothing around it is
lost, whether in its batch, after it, or in a partition aiokafka drained before it failed."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.codec import gzip_encode
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

from consumer.adapters.kafka import (
    RAW_HEADER_KEY,
    RAW_HEADER_VALUE,
    fetch_records,
    read_partition,
)

TP = TopicPartition("in", 0)
OTHER = TopicPartition("in", 1)
BAD_KEY = b"\xff\xfe\xfd\xfc"
T = 1_767_225_600_000  # ms

Headers = list[tuple[str, bytes | None]]


def batch(base_offset: int, *records: tuple[bytes | None, bytes | None, Headers]) -> bytes:
    """A v2 record batch as the broker stores it; a header key `MARK` becomes BAD_KEY."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i, (key, value, headers) in enumerate(records):
        builder.append(i, timestamp=T + i, key=key, value=value, headers=headers)
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base_offset)
    while (at := data.find(b"MARK")) >= 0:
        data[at : at + 4] = BAD_KEY
    return _with_crc(data)


def gzipped(raw: bytes) -> bytes:
    """The same batch, its records compressed as a producer with gzip sends them."""
    data = bytearray(raw[:61]) + gzip_encode(raw[61:])
    struct.pack_into(">h", data, 21, struct.unpack_from(">h", data, 21)[0] | 0x01)
    struct.pack_into(">i", data, 8, len(data) - 12)
    return _with_crc(data)


def _with_crc(data: bytearray) -> bytes:
    struct.pack_into(">I", data, 17, calc_crc32c(bytes(data[21:])))
    return bytes(data)


def good(n: int) -> tuple[bytes, bytes, Headers]:
    return b"k%d" % n, b"v%d" % n, [("h", b"%d" % n)]


def bad(n: int) -> tuple[bytes, bytes, Headers]:
    return b"k%d" % n, b"v%d" % n, [("traceparent", b"t"), ("MARK", b"x"), ("h", None)]


def offsets(records: list[Any]) -> list[int]:
    return [r.offset for r in records]


# --- read_partition --------------------------------------------------------------------


def test_the_batch_aiokafka_cannot_read_is_read_here_and_reading_stops_after_it() -> None:
    data = (
        batch(0, good(0), good(1))
        + batch(2, good(2), bad(3), good(4))
        + batch(5, bad(5))  # the next call's
    )
    read = read_partition(TP, 0, data)
    assert read is not None
    first, second = read
    assert (offsets(first.records), first.unreadable, first.next_offset) == ([0, 1], [], 2)
    assert offsets(second.records) == [2, 4]
    assert second.next_offset == 5
    # The readable records of that batch are as aiokafka reads them.
    assert [(r.key, r.value, r.headers, r.timestamp) for r in second.records] == [
        (b"k2", b"v2", (("h", b"2"),), T),
        (b"k4", b"v4", (("h", b"4"),), T + 2),
    ]
    [dead] = second.unreadable
    record: Any = dead.record  # an aiokafka ConsumerRecord
    assert (record.offset, record.key, record.value, record.timestamp) == (3, b"k3", b"v3", T + 1)
    assert dead.error_type == "decode_error"
    assert "header 1 key b'\\xff\\xfe\\xfd\\xfc'" in dead.message
    sent = dead.headers()
    assert sent[:2] == [("traceparent", b"t"), ("h", None)]
    assert sent[-2:] == [(RAW_HEADER_KEY, BAD_KEY), (RAW_HEADER_VALUE, b"x")]
    assert [k for k, _ in sent[2:-2]] == [
        "dlq.original.topic",
        "dlq.original.partition",
        "dlq.original.offset",
        "dlq.error.type",
        "dlq.error.message",
    ]


def test_records_before_the_position_are_left_out() -> None:
    data = batch(0, good(0), good(1)) + batch(2, good(2), bad(3), good(4))
    read = read_partition(TP, 4, data)
    assert read is not None
    assert [(offsets(b.records), b.next_offset) for b in read] == [([], 2), ([4], 5)]
    assert read[1].unreadable == []  # offset 3 was applied already


def test_a_compressed_batch_is_read_too() -> None:
    read = read_partition(TP, 0, gzipped(batch(7, good(7), bad(8), bad(9))))
    assert read is not None
    [only] = read
    assert offsets(only.records) == [7]
    assert [d.record.offset for d in only.unreadable] == [8, 9]
    assert only.next_offset == 10


def test_nothing_to_do_without_such_a_record_or_when_its_batch_is_cut_short() -> None:
    assert read_partition(TP, 0, batch(0, good(0)) + batch(1, good(1))) is None
    cut = batch(0, good(0)) + batch(1, bad(1))[:-3]
    assert read_partition(TP, 0, cut) is None


def test_a_corrupt_batch_is_not_taken_for_one() -> None:
    data = bytearray(batch(0, bad(0)))
    data[-1] ^= 0xFF
    with pytest.raises(CorruptRecordException, match="CRC"):
        read_partition(TP, 0, bytes(data))


# --- fetch_records --------------------------------------------------------------------


@dataclass
class Cluster:
    def leader_for_partition(self, tp: TopicPartition) -> int:
        return 1


@dataclass
class Response:
    topics: list[tuple[str, list[tuple[Any, ...]]]]


@dataclass
class Client:
    log: dict[TopicPartition, bytes]  # each partition's batches, from offset 0
    cluster: Cluster = field(default_factory=Cluster)
    asked: list[dict[TopicPartition, int]] = field(default_factory=list)

    async def send(self, node: int, request: Any) -> Response:
        asked = {
            TopicPartition(topic, p): offset
            for topic, parts in request.topics
            for p, offset, _ in parts
        }
        self.asked.append(asked)
        topics: dict[str, list[tuple[Any, ...]]] = {}
        for tp, offset in asked.items():
            data = self.log.get(tp, b"")
            # The broker answers from the batch holding the offset.
            start = _batch_start(data, offset)
            topics.setdefault(tp.topic, []).append((tp.partition, 0, 99, 0, 0, [], data[start:]))
        return Response(list(topics.items()))


def _batch_start(data: bytes, offset: int) -> int:
    pos = 0
    while pos < len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        last = base + struct.unpack_from(">i", data, pos + 23)[0]
        if last >= offset:
            return pos
        pos += 12 + length
    return pos


class FakeConsumer:
    """AIOKafkaConsumer as fetch_records uses it. Its `getmany` does what aiokafka
    does on such a record: it drains OTHER first (moving its position, its records
    lost with the exception), then fails on TP."""

    def __init__(self, log: dict[TopicPartition, bytes], error: BaseException) -> None:
        self._client = Client(log)
        self.positions = {TP: 0, OTHER: 0}
        self.error = error
        self.seeks: list[tuple[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.positions[tp] = offset

    async def getmany(self, *partitions: TopicPartition, **options: Any) -> dict[Any, Any]:
        self.positions[OTHER] += 2
        raise self.error


def decode_error() -> UnicodeDecodeError:
    try:
        BAD_KEY.decode()
    except UnicodeDecodeError as exc:
        return exc
    raise AssertionError


LOG = {
    TP: batch(0, good(0)) + batch(1, good(1), bad(2)) + batch(3, good(3)),
    OTHER: batch(0, good(10), good(11)),
}


async def test_fetch_records_returns_the_batch_and_moves_past_it_only() -> None:
    consumer = FakeConsumer(LOG, decode_error())
    fetched = await fetch_records(consumer, timeout_ms=10, max_records=100)
    assert {tp: offsets(rs) for tp, rs in fetched.records.items()} == {TP: [0, 1]}
    assert [d.record.offset for d in fetched.unreadable] == [2]
    assert fetched.next_offsets() == {TP: 3}
    assert len(fetched) == 3
    # OTHER went back to where it was (aiokafka had moved it); TP past the batch.
    assert consumer._client.asked == [{TP: 0, OTHER: 0}]
    assert consumer.positions == {TP: 3, OTHER: 0}


async def test_fetch_records_respects_max_records_but_always_moves() -> None:
    consumer = FakeConsumer(LOG, decode_error())
    fetched = await fetch_records(consumer, timeout_ms=10, max_records=1)
    assert offsets(fetched.all_records()) == [0]
    assert (fetched.unreadable, consumer.positions) == ([], {TP: 1, OTHER: 0})


async def test_the_pure_python_reader_fails_the_same_way() -> None:
    error = CorruptRecordException("Found invalid record structure")
    error.__cause__ = decode_error()
    consumer = FakeConsumer(LOG, error)
    fetched = await fetch_records(consumer, TP, OTHER, timeout_ms=10, max_records=100)
    assert [d.record.offset for d in fetched.unreadable] == [2]


async def test_other_failures_are_not_taken_for_it() -> None:
    consumer = FakeConsumer(LOG, CorruptRecordException("Invalid CRC"))
    with pytest.raises(CorruptRecordException, match="CRC"):
        await fetch_records(consumer, timeout_ms=10, max_records=100)
    assert consumer.seeks == []


async def test_a_corrupt_batch_elsewhere_moves_nothing_forward() -> None:
    corrupt = bytearray(batch(0, good(10)))
    corrupt[-1] ^= 0xFF
    consumer = FakeConsumer({**LOG, OTHER: bytes(corrupt)}, decode_error())
    with pytest.raises(CorruptRecordException, match="CRC"):
        await fetch_records(consumer, timeout_ms=10, max_records=100)
    assert consumer.positions == {TP: 0, OTHER: 0}  # read again next time, nothing lost
