"""Kafka for the benchmarks: topics by name, producing a stream fast, counting records."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.lib.stream import Stream

FETCH_OPTIONS: dict[str, Any] = {
    # As the service's consumer (consumer/kafka_io.py make_consumer), for a fair comparison.
    "max_partition_fetch_bytes": 4 * 1024 * 1024,
    "fetch_max_bytes": 64 * 1024 * 1024,
}


def _compression() -> str | None:
    try:
        import lz4  # type: ignore[import-not-found,import-untyped,unused-ignore]  # noqa: F401
    except ImportError:
        return None
    return "lz4"


COMPRESSION = _compression()


async def create_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, topics: Sequence[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(topics))
    finally:
        await admin.close()


async def produce(bootstrap: str, topics: Sequence[str], stream: Stream, chunk: int) -> float:
    """Send everything; returns seconds from the first send to the last acknowledgement."""
    return await produce_parts(bootstrap, topics, [stream.records], chunk)


async def produce_parts(
    bootstrap: str,
    topics: Sequence[str],
    parts: Iterable[Sequence[tuple[int, bytes, bytes]]],
    chunk: int,
) -> float:
    """Send the records of each part in turn, with one producer; a part is taken from
    `parts` only once the previous one is sent, so a generator of parts keeps memory
    bounded. Returns seconds from the first send to the last acknowledgement (including
    the time `parts` takes to make them)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=20,
        max_batch_size=512 * 1024,
        max_request_size=2 * 1024 * 1024,
        compression_type=COMPRESSION,
    )
    await producer.start()
    try:
        started = time.perf_counter()
        in_flight: list[asyncio.Future[Any]] = []
        for records in parts:
            for lo in range(0, len(records), chunk):
                # send() only appends to a batch; the futures resolve on the broker's ack.
                sent = [
                    await producer.send(topics[kind], value=value, key=key)
                    for kind, key, value in records[lo : lo + chunk]
                ]
                # Keep one chunk in flight while the next is being appended.
                await asyncio.gather(*in_flight)
                in_flight = sent
        await asyncio.gather(*in_flight)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[str, int]:
    """Records per topic (sum of end offsets; nothing is ever compacted here)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in await _partitions(consumer, t)]
        ends = await consumer.end_offsets(tps)
        out = dict.fromkeys(topics, 0)
        for tp, offset in ends.items():
            out[tp.topic] += offset
        return out
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    for _ in range(50):
        found = consumer.partitions_for_topic(topic)
        if found:
            return sorted(found)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic} has no partitions")
