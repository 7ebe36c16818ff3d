"""harness.booking_stream: the benchmarks' stream, built chunk by chunk, is the same stream
whatever the chunk size, and the same as before it was chunked.

The digests were taken from `bench.lib.stream.generate` as it was before it was built on
`chunks` (one pass, all records in one list); they must stay as they are unless the
stream is meant to change (every benchmark figure measured on it would move).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.adapters.codec import Codec
from harness.booking_stream import Chunk, chunks

CODEC = Codec.load()
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

PINNED = {
    (3000, 100, "mixed", 42): "70772498719bd3c70199733cfe02026c788fdf7106cfee6eae1b39ef9a3d8289",
    (3000, 100, "avro", 7): "4937ff742221e0b5f7e84ecae840bc7ff927385c5ff20a97dd7bd7f9fbab6f07",
    (500, 20, "json", 1): "1a5c253b99515a1a8f7286c31c141feaf4f8c8c2862fd95daeb895a3a4eeed24",
}


def digest(parts: Iterable[Chunk]) -> str:
    h = hashlib.sha256()
    for part in parts:
        for kind, key, value in part.records:
            h.update(bytes([kind]) + key + b"\0" + value + b"\n")
    return h.hexdigest()


@pytest.mark.parametrize(("args", "expected"), sorted(PINNED.items()))
@pytest.mark.parametrize("size", [1_000_000, 1000, 97])
def test_the_stream_of_a_seed_is_pinned(
    args: tuple[int, int, str, int], expected: str, size: int
) -> None:
    n, users, fmt, seed = args
    assert digest(chunks(n, users, fmt, seed, CODEC, NOW, size=size)) == expected


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 400),
    users=st.integers(1, 40),
    fmt=st.sampled_from(["avro", "json", "mixed"]),
    seed=st.integers(0, 2**32),
    size=st.integers(1, 450),
)
def test_chunks_of_any_size_are_the_stream_in_one_piece(
    n: int, users: int, fmt: str, seed: int, size: int
) -> None:
    (whole,) = chunks(n, users, fmt, seed, CODEC, NOW, size=n + 1)
    parts = list(chunks(n, users, fmt, seed, CODEC, NOW, size=size))

    assert [len(p.records) for p in parts[:-1]] == [size] * (len(parts) - 1)
    assert [r for p in parts for r in p.records] == whole.records
    assert [sum(c) for c in zip(*(p.counts for p in parts), strict=True)] == whole.counts
    assert sum((p.formats for p in parts), Counter()) == whole.formats
    assert (
        sum(p.value_bytes for p in parts)
        == whole.value_bytes
        == sum(len(v) for _, _, v in whole.records)
    )


def test_no_events_no_chunk() -> None:
    assert list(chunks(0, 5, "avro", 1, CODEC, NOW)) == []


def test_a_chunk_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        next(chunks(10, 5, "avro", 1, CODEC, NOW, size=0))
