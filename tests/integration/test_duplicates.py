"""Replaying what was already processed changes nothing (CONTRACT.md, "Backfill").

A realistic stream of about 300 mixed events is consumed; the database is
snapshotted; then the same events arrive again (redelivered as they were, read
once more by a new consumer group as an operator's backfill would, and
duplicated in a shuffled order), and every snapshot must equal the first.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from consumer.config import Settings
from tests.integration.helpers import (
    create_topics,
    mixed_stream,
    produce_events,
    running,
    snapshot,
    snapshot_diff,
    wait_consumed,
)

pytestmark = pytest.mark.integration


async def test_the_same_events_again_change_nothing(settings: Settings) -> None:
    # Dispatch off and every follow-up in the future: nothing but ingest moves rows.
    settings = settings.model_copy(update={"scheduler_enabled": False})
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    phase1, phase2 = mixed_stream(seed=11, users=15, base=base)
    events = phase1 + phase2
    n = len(events)
    assert 250 <= n <= 400
    await create_topics(settings)
    async with running(settings) as service:
        await produce_events(settings, events)
        await wait_consumed(settings, n, service=service)
        first = await snapshot(settings)

        # The same events, in the same order, a second time.
        await produce_events(settings, events)
        await wait_consumed(settings, 2 * n, service=service)
        second = await snapshot(settings)
    assert snapshot_diff(first, second) == []

    # The state is not trivial: every table, trigger type and the statuses ingest sets.
    assert all(first[table] for table in first)
    followups = first["scheduled_followups"]
    assert {r["trigger_type"] for r in followups} == {
        "post_event",
        "re_engagement",
        "emotion_based",
    }
    statuses = Counter(r["status"] for r in followups)
    assert statuses["pending"] > 0
    assert statuses["cancelled"] > 0
    assert statuses["expired"] > 0
    assert any(len(r["trigger_data"].get("booking_ids", ())) > 1 for r in followups)

    # An operator's backfill: a new consumer group reads both copies from the beginning.
    backfill = settings.model_copy(update={"kafka_group_id": f"{settings.kafka_group_id}-backfill"})
    async with running(backfill) as service:
        await wait_consumed(backfill, 2 * n, service=service)
        third = await snapshot(settings)

        # Duplicates again, this time in a shuffled order.
        shuffled = events[:]
        random.Random(3).shuffle(shuffled)
        await produce_events(backfill, shuffled)
        await wait_consumed(backfill, 3 * n, service=service)
        fourth = await snapshot(settings)
    assert snapshot_diff(first, third) == []
    assert snapshot_diff(first, fourth) == []
