"""How a batch is split into lanes: by partition number, every event in exactly one
lane and in its order, each partition's offset in the lane of its events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from consumer.domain.events import UserActivity
from consumer.service.ingest import Decoded, PreparedBatch, _lanes
from tests.service.conftest import Rec

T0 = datetime(2026, 3, 2, tzinfo=UTC)
TOPICS = ("a", "b")

records = st.lists(st.tuples(st.sampled_from(TOPICS), st.integers(0, 11)), min_size=0, max_size=60)


def batch(spec: list[tuple[str, int]]) -> PreparedBatch:
    decoded = [
        Decoded(
            Rec(topic, partition, i, b""),
            UserActivity(f"e{i}", T0 + timedelta(seconds=i), f"user-{partition}", "login", None),
        )
        for i, (topic, partition) in enumerate(spec)
    ]
    offsets = {(topic, partition): 1000 + partition for topic, partition in spec}
    return PreparedBatch(decoded, [], offsets)


@given(records, st.integers(1, 5))
def test_every_event_in_one_lane_in_order_with_its_partitions_offset(
    spec: list[tuple[str, int]], lanes: int
) -> None:
    b = batch(spec)
    split = _lanes(b, lanes)
    assert 1 <= len(split) <= lanes
    seen = [d for decoded, _ in split for d in decoded]
    assert sorted(d.record.offset for d in seen) == list(range(len(spec)))
    merged: dict[tuple[str, int], int] = {}
    partitions_of_lane = []
    for decoded, offsets in split:
        assert [d.record.offset for d in decoded] == sorted(d.record.offset for d in decoded)
        mine = {d.record.partition for d in decoded} | {p for _, p in offsets}
        partitions_of_lane.append(mine)
        assert {(d.record.topic, d.record.partition) for d in decoded} <= offsets.keys()
        merged.update(offsets)
    assert merged == b.offsets
    for i, a in enumerate(partitions_of_lane):
        for other in partitions_of_lane[i + 1 :]:
            assert not a & other  # a partition number in one lane only
