"""What a run left behind (canonical tables, published follow-up ids), compared
with the reference run, and the table of results."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from consumer.config import Settings
from harness.events import (
    CODEC,
)
from harness.state import snapshot

VOLATILE = frozenset(
    {
        "created_at",
        "updated_at",
        "executed_at",
        "lease_owner",
        "lease_until",
        "retry_count",
        "error_message",
        "due_at",
    }
)


async def read_all(s: Settings, topic: str) -> list[Any]:
    """Every record of a topic up to its end offsets now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap_servers, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        parts = None
        for _ in range(50):
            parts = consumer.partitions_for_topic(topic)
            if parts:
                break
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts or ())]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        pos = {tp: 0 for tp in tps}
        deadline = time.monotonic() + 120
        while any(pos[tp] < ends[tp] for tp in tps) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, rs in batch.items():
                out.extend(rs)
                if rs:
                    pos[tp] = rs[-1].offset + 1
        return out
    finally:
        await consumer.stop()


async def end_total(s: Settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def due_ids(s: Settings) -> Counter[str]:
    """event_id of every record of followup.due, with multiplicity."""
    out: Counter[str] = Counter()
    for r in await read_all(s, s.topic_followup_due):
        out[str(CODEC.decode("followup_due", r.value)["event_id"])] += 1
    return out


Canon = dict[str, dict[str, dict[str, Any]]]


async def canonical(s: Settings) -> Canon:
    snap = await snapshot(s)
    keys = {
        "scheduled_followups": "id",
        "user_projection": "user_id",
        "booking_projection": "booking_id",
        "conversation_emotions": "conversation_id",
    }
    return {
        table: {
            str(row[keys[table]]): {k: v for k, v in row.items() if k not in VOLATILE}
            for row in rows
        }
        for table, rows in snap.items()
    }


@dataclass
class Outcome:
    canon: Canon
    ids: Counter[str]

    @property
    def statuses(self) -> Counter[str]:
        return Counter(r["status"] for r in self.canon["scheduled_followups"].values())


async def outcome(s: Settings) -> Outcome:
    return Outcome(await canonical(s), await due_ids(s))


@dataclass
class Row:
    scenario: str
    events: int
    lost: int
    duplicated: int
    dead_lettered: str = "0"
    recovered: str = "-"
    notes: list[str] = field(default_factory=list)
    ok: bool = True


def compare(ref: Outcome, got: Outcome, row: Row, *, duplicates_allowed: bool) -> None:
    """Lost: reference rows missing or different, reference ids never published;
    duplicated: records whose event_id was already seen."""
    details: list[str] = []
    lost = 0
    for table, rows in ref.canon.items():
        mine = got.canon.get(table, {})
        for k, r in rows.items():
            if mine.get(k) != r:
                lost += 1
                if len(details) < 8:
                    other = mine.get(k)
                    diff = (
                        {c: (r.get(c), other.get(c)) for c in r if r.get(c) != other.get(c)}
                        if other
                        else "missing"
                    )
                    details.append(f"{table}[{k}]: {diff}")
        extra = sorted(set(mine) - set(rows))
        if extra:
            lost += len(extra)
            details.append(f"{table}: {len(extra)} rows not in the reference, e.g. {extra[:3]}")
    never = sorted(set(ref.ids) - set(got.ids))
    lost += len(never)
    if never:
        details.append(f"followup.due ids never published: {len(never)}, e.g. {never[:5]}")
    foreign = sorted(set(got.ids) - set(ref.ids))
    if foreign:
        details.append(f"followup.due ids not in the reference: {len(foreign)}, e.g. {foreign[:5]}")
        lost += len(foreign)
    dups = sum(c - 1 for c in got.ids.values() if c > 1)
    row.lost += lost
    row.duplicated += dups
    row.notes.extend(details)
    if dups:
        dup_ids = [i for i, c in got.ids.items() if c > 1]
        row.notes.append(f"{dups} duplicate publications of {len(dup_ids)} ids, e.g. {dup_ids[:3]}")
    if lost or (dups and not duplicates_allowed):
        row.ok = False
    row.notes.append(
        f"reference: {len(ref.ids)} published, statuses {dict(ref.statuses)}; "
        f"run: {len(got.ids)} distinct published"
    )


def table(rows: Sequence[Row]) -> str:
    head = ("scenario", "events", "lost", "duplicated", "dead-lettered", "recovered in (s)", "ok")
    body = [
        (
            r.scenario,
            f"{r.events:,}",
            str(r.lost),
            str(r.duplicated),
            r.dead_lettered,
            r.recovered,
            "yes" if r.ok else "NO",
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    lines = [
        " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in (head, *body)
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    out = "\n".join(lines)
    for r in rows:
        if r.notes:
            out += f"\n\n{r.scenario}:\n  " + "\n  ".join(r.notes)
    return out
