"""A fetch with more scores than INGEST_BATCH_MAX_SCORES is applied in parts: every
record in exactly one part, each partition's records in offset order across the
parts, and no part with more scores than the limit."""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from hypothesis import given
from hypothesis import strategies as st

from consumer.adapters.kafka import Fetched

SCORES = "message.emotion_scored"
TOPICS = [SCORES, "user.activity", "booking.confirmed"]


def record(tp: TopicPartition, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"u", b"{}", None, 1, 2, ())


fetches = st.dictionaries(
    st.tuples(st.sampled_from(TOPICS), st.integers(0, 5)).map(lambda t: TopicPartition(*t)),
    st.tuples(st.integers(0, 1000), st.integers(1, 40)),
    max_size=8,
).map(
    lambda spec: Fetched(
        {tp: [record(tp, start + i) for i in range(n)] for tp, (start, n) in spec.items()}
    )
)


@given(fetches, st.integers(1, 50))
def test_parts_hold_every_record_once_in_order_and_at_most_the_limit(
    fetched: Fetched, limit: int
) -> None:
    parts = fetched.split(SCORES, limit)
    scores = sum(len(rs) for tp, rs in fetched.records.items() if tp.topic == SCORES)
    if scores <= limit:
        assert parts == [fetched]
        return
    for tp, records in fetched.records.items():
        assert [r for p in parts for r in p.records.get(tp, [])] == records
    for part in parts:
        assert len(part) > 0
        assert sum(len(rs) for tp, rs in part.records.items() if tp.topic == SCORES) <= limit
    # Each part's positions move on from the one before; the last are the fetch's.
    seen: dict[TopicPartition, int] = {}
    for part in parts:
        for tp, offset in part.next_offsets().items():
            assert offset > seen.get(tp, -1)
            seen[tp] = offset
    assert seen == fetched.next_offsets()
    assert len(parts) == -(-scores // limit)  # as few as the limit allows
    # Dealt out in turn: in a part, the partitions with records left after it got
    # shares that differ by one at most (the ingest lanes stay evenly busy).
    left = {tp: len(rs) for tp, rs in fetched.records.items() if tp.topic == SCORES}
    for part in parts:
        for tp, rs in part.records.items():
            if tp.topic == SCORES:
                left[tp] -= len(rs)
        shares = [len(part.records.get(tp, [])) for tp, n in left.items() if n > 0]
        assert not shares or max(shares) - min(shares) <= 1
