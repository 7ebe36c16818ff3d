"""`followup-consumer replay`: re-read the input topics into the projections.

Reads every partition of the input topics from the beginning (or from a time)
up to the end offsets seen at start, through the same ingest code as `run`, but
without a consumer group and without touching the group's stored offsets. The
rules are idempotent, so replaying what was already processed changes nothing;
follow-ups whose time is long past are stored `expired` and never sent.

Replay publishes nothing: no `followup.due` (it does not dispatch) and no dead
letters. `run` dead-letters each bad record once, when the group first consumes
it: a record below the group's stored offsets already has its dead letter, one
above them gets it when `run` reaches it. Replay counts them, tells which is
which, and logs each one.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from tqdm import tqdm

from consumer.adapters.kafka import fetch_records, input_partitions, make_reader
from consumer.bootstrap import build
from consumer.config import Settings
from consumer.entrypoints.startup import database_ready, kafka_step
from consumer.logs import above
from consumer.service.ingest import Ingestor
from consumer.service.ports import BatchOutcome, DeadLetter, DueMessage, InRecord, Partition

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplayReport:
    events: int  # records read (every one up to the end offsets seen at start)
    applied: int  # events that went through the rules
    dead_lettered: int  # bad records: none published again (see the module's doc)
    already_dead_lettered: int  # ... of which below the group's stored offsets
    expired: int  # follow-ups stored `expired` (their time was long past)
    seconds: float

    def with_already(self, already: int) -> ReplayReport:
        return replace(self, already_dead_lettered=already)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        later = self.dead_lettered - self.already_dead_lettered
        lines = [
            ("events", f"{self.events} ({self.rate:.0f}/s)"),
            ("applied", str(self.applied)),
            (
                "dead-lettered",
                f"{self.dead_lettered} (none published by replay: {self.already_dead_lettered} "
                f"already in the dead-letter topic, {later} left for `run`)",
            ),
            ("expired", str(self.expired)),
            ("seconds", f"{self.seconds:.1f}"),
        ]
        return "replay done\n" + "\n".join(f"{name + ':':<15}{value}" for name, value in lines)


class Withheld:
    """The dead-letter sink of a replay: counts and logs, publishes nothing."""

    def __init__(self, stored: Mapping[Partition, int]) -> None:
        self.stored = stored
        self.already = 0

    async def send(self, dead: Sequence[DeadLetter]) -> None:
        for d in dead:
            r = d.record
            done = r.offset < self.stored.get((r.topic, r.partition), 0)
            self.already += done
            log.warning(
                "bad record (dead-lettered by `run`, not again)"
                if done
                else "bad record (`run` dead-letters it when the group reaches it)",
                extra={
                    "topic": r.topic,
                    "partition": r.partition,
                    "offset": r.offset,
                    "error_type": d.error_type,
                    "error": d.message,
                },
            )


class NothingPublished:
    """Replay does not dispatch: nothing is ever handed to this publisher."""

    async def publish(self, messages: Sequence[DueMessage]) -> list[BaseException | None]:
        raise AssertionError("replay does not publish follow-ups")

    async def broker_reachable(self) -> bool:
        return True


@contextlib.contextmanager
def _ingest_quiet() -> Iterator[None]:
    """Ingest's own "dead-lettered" lines would be untrue here: Withheld says it."""
    ingest = logging.getLogger("consumer.service.ingest")
    level = ingest.level
    ingest.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        ingest.setLevel(level)


async def replay(
    settings: Settings,
    clock: Callable[[], datetime],
    since: datetime | None = None,
    *,
    progress: bool = True,
) -> ReplayReport:
    """StartupFailed (one line, an exit code) when PostgreSQL or Kafka is not there."""
    with kafka_step(settings):
        consumer = make_reader(settings)
    sink = Withheld({})
    parts = build(settings, clock=clock, dead_letters=sink, publisher=NothingPublished())
    try:
        await database_ready(parts.store, settings)
        with kafka_step(settings):
            await consumer.start()
            partitions = await input_partitions(settings)
        sink.stored = await parts.store.load_offsets((tp.topic, tp.partition) for tp in partitions)
        with _ingest_quiet():
            read = await _read_all(settings, parts.ingestor, consumer, partitions, since, progress)
        return read.with_already(sink.already)
    finally:
        await consumer.stop()
        if parts.registry is not None:
            await parts.registry.aclose()
        await parts.store.close()


async def _read_all(
    settings: Settings,
    ingestor: Ingestor,
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    since: datetime | None,
    progress: bool,
) -> ReplayReport:
    consumer.assign(partitions)
    end = await consumer.end_offsets(partitions)
    start = await _start_offsets(consumer, partitions, end, since)
    for tp, offset in start.items():
        consumer.seek(tp, offset)
    total = sum(max(0, end[tp] - start[tp]) for tp in partitions)
    remaining = {tp for tp in partitions if start[tp] < end[tp]}
    tally = _Tally()
    started = time.perf_counter()
    bar = tqdm(total=total, unit="ev", disable=not progress, smoothing=0.1, file=sys.stderr)
    # Log lines are written above the bar, never into it.
    with bar, above(lambda line: tqdm.write(line, file=sys.stderr)):
        while remaining:
            # getmany, but a record aiokafka cannot read comes out as a dead letter.
            fetched = await fetch_records(
                consumer, *remaining, timeout_ms=500, max_records=settings.ingest_batch_max_records
            )
            # At most INGEST_BATCH_MAX_SCORES histories loaded at a time, as in `run`.
            for part in fetched.split(
                settings.topic_emotion_scored, settings.ingest_batch_max_scores
            ):
                records = [r for r in part.all_records() if r.offset < end[_tp(r)]]
                unreadable = [d for d in part.unreadable if d.record.offset < end[_tp(d.record)]]
                if records or unreadable:
                    outcome = await ingestor.process(
                        records, save_offsets=False, unreadable=unreadable
                    )
                    tally.add(len(records) + len(unreadable), outcome)
                    bar.update(len(records) + len(unreadable))
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    return tally.report(time.perf_counter() - started)


class _Tally:
    def __init__(self) -> None:
        self.events = self.applied = self.dead = self.expired = 0

    def add(self, events: int, outcome: BatchOutcome) -> None:
        self.events += events
        self.applied += sum(outcome.applied.values())
        self.dead += sum(outcome.dead.values())
        self.expired += sum(outcome.expired.values())

    def report(self, seconds: float) -> ReplayReport:
        return ReplayReport(self.events, self.applied, self.dead, 0, self.expired, seconds)


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
