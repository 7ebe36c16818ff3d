"""The generated stream: a year of a booking business, pre-encoded, in event-time order,
in one piece (`harness.booking_stream.chunks` builds it chunk by chunk)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from bench.lib.names import INPUTS
from consumer.adapters.codec import Codec
from harness.booking_stream import SCHEMAS, chunks

# A record's kind indexes both the generator's schemas and the run's input topics.
if tuple(name for name, _, _ in INPUTS) != SCHEMAS:
    raise ImportError(f"bench.lib.names.INPUTS is not in the order of {SCHEMAS}")


@dataclass
class Stream:
    """Pre-encoded records in event-time order: (input index, key, value)."""

    records: list[tuple[int, bytes, bytes]]
    counts: list[int]
    formats: Counter[str]
    value_bytes: int
    seconds: float


def generate(n: int, users: int, fmt: str, seed: int, codec: Codec, now: datetime) -> Stream:
    """A year of a booking business, compressed into n events, oldest first."""
    started = time.perf_counter()
    stream = Stream([], [0, 0, 0, 0], Counter(), 0, 0.0)
    for chunk in chunks(n, users, fmt, seed, codec, now, size=max(n, 1)):
        stream.records = chunk.records  # one chunk: the whole stream
        stream.counts = chunk.counts
        stream.formats = chunk.formats
        stream.value_bytes = chunk.value_bytes
    stream.seconds = time.perf_counter() - started
    return stream
