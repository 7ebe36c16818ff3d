"""Timed reads of every record: a bare consumer, or one running only the service's decode step."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer

from bench.lib.kafka import FETCH_OPTIONS
from bench.lib.names import INPUTS, Names
from consumer.adapters.codec import Codec


@dataclass
class Phase:
    """One timed read of all n events."""

    events: int
    seconds: float  # from the start of the consumer to the last event
    first_seconds: float | None  # from the start to the first event (or first commit)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def steady_rate(self) -> float:
        if self.first_seconds is None or self.seconds <= self.first_seconds:
            return 0.0
        return self.events / (self.seconds - self.first_seconds)


async def bare_consume(
    bootstrap: str,
    topics: Sequence[str],
    group: str,
    n: int,
    limit_s: float,
    handle: Callable[[Sequence[Any]], object] | None = None,
) -> Phase:
    """A consumer that reads every record and does nothing with it (or only `handle`)."""
    started = time.perf_counter()
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **FETCH_OPTIONS,
    )
    await consumer.start()
    seen = 0
    first: float | None = None
    try:
        while seen < n:
            if time.perf_counter() - started > limit_s:
                raise TimeoutError(f"bare consumer read {seen:,} of {n:,} in {limit_s:.0f} s")
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            got = sum(len(rs) for rs in batch.values())
            if handle is not None and got:
                handle([r for rs in batch.values() for r in rs])
            if got and first is None:
                first = time.perf_counter() - started
            seen += got
        return Phase(seen, time.perf_counter() - started, first)
    finally:
        await consumer.stop()


def decoder(names: Names) -> Callable[[Sequence[Any]], object]:
    """The service's own decode step (codec + validation), without any database work."""
    from consumer.adapters.wire import BadInput, parse_event
    from consumer.domain.events import EventKind

    codec = Codec.load()
    kinds = {
        topic: EventKind(kind) for topic, (kind, _, _) in zip(names.inputs, INPUTS, strict=True)
    }

    def decode(records: Sequence[Any]) -> object:
        bad = 0
        for r in records:
            try:
                parse_event(kinds[r.topic], r.value, codec)
            except BadInput:
                bad += 1
        return bad

    return decode
