"""`followup-consumer replay`: re-read the input topics into the projections.

Reads every partition of the input topics from the beginning (or from a time)
up to the end offsets seen at start, through the same ingest code as `run`, but
without a consumer group and without touching the group's stored offsets. The
rules are idempotent, so replaying what was already processed changes nothing;
follow-ups whose time is long past are stored `expired` and never sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from tqdm import tqdm

from consumer.adapters.kafka import fetch_records, input_partitions, make_reader
from consumer.bootstrap import build
from consumer.config import Settings
from consumer.service.ports import InRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplayReport:
    events: int
    dead_lettered: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def replay(
    settings: Settings,
    clock: Callable[[], datetime],
    since: datetime | None = None,
    *,
    progress: bool = True,
) -> ReplayReport:
    parts = build(settings, clock=clock)
    await parts.store.migrate()
    producer = parts.producer
    assert producer is not None
    consumer = make_reader(settings)
    await producer.start()
    await consumer.start()
    try:
        ingestor = parts.ingestor
        partitions = await input_partitions(settings)
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        start = await _start_offsets(consumer, partitions, end, since)
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        total = sum(max(0, end[tp] - start[tp]) for tp in partitions)
        remaining = {tp for tp in partitions if start[tp] < end[tp]}
        done = dead = 0
        started = time.perf_counter()
        with tqdm(total=total, unit="ev", disable=not progress, smoothing=0.1) as bar:
            while remaining:
                # getmany, but a record aiokafka cannot read comes out as a dead letter.
                fetched = await fetch_records(
                    consumer,
                    *remaining,
                    timeout_ms=500,
                    max_records=settings.ingest_batch_max_records,
                )
                records = [r for r in fetched.all_records() if r.offset < end[_tp(r)]]
                unreadable = [d for d in fetched.unreadable if d.record.offset < end[_tp(d.record)]]
                if records or unreadable:
                    outcome = await ingestor.process(
                        records, save_offsets=False, unreadable=unreadable
                    )
                    done += len(records) + len(unreadable)
                    dead += sum(outcome.dead.values())
                    bar.update(len(records) + len(unreadable))
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
        report = ReplayReport(done, dead, time.perf_counter() - started)
        log.info(
            "replay done",
            extra={"events": done, "dead": dead, "seconds": round(report.seconds, 2)},
        )
        return report
    finally:
        await consumer.stop()
        await producer.stop()
        if parts.registry is not None:
            await parts.registry.aclose()
        await parts.store.close()


def _tp(record: InRecord) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


async def _start_offsets(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    end: dict[TopicPartition, int],
    since: datetime | None,
) -> dict[TopicPartition, int]:
    """Explicit positions (seek_to_beginning is lazy and races with assignment)."""
    if since is None:
        return dict(await consumer.beginning_offsets(partitions))
    found = await consumer.offsets_for_times(
        {tp: int(since.timestamp() * 1000) for tp in partitions}
    )
    # Nothing at or after that time in a partition: nothing to read there.
    return {tp: (found[tp].offset if found.get(tp) else end[tp]) for tp in partitions}
