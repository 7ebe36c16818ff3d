"""Bad input goes to the dead-letter topic, untouched and explained; nothing valid
around it is lost and the consumer keeps going (CONTRACT.md, "Bad input")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from consumer.adapters.codec import AVRO_MAGIC
from consumer.adapters.kafka import OffsetsFromDatabase
from consumer.adapters.postgres.store import PostgresStore
from consumer.config import Settings
from tests.integration.helpers import (
    CODEC,
    Event,
    Raw,
    activity,
    cancelled,
    confirmed,
    consumed_to_end,
    create_topics,
    headers_of,
    ms,
    new_id,
    partitions_of,
    produce_raw,
    query,
    read_to_end,
    running,
    scored,
    topic_of,
    wait_consumed,
    wait_until,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Bad:
    name: str
    kind: str  # the topic's event kind
    key: bytes | None
    value: bytes | None
    error_type: str  # dlq.error.type, as documented in consumer/wire.py (BadInput)
    mentions: str  # what dlq.error.message must name (usually the field)


def as_json(record: dict[str, Any]) -> bytes:
    def default(v: Any) -> str:
        assert isinstance(v, datetime)
        return v.isoformat()

    return json.dumps(record, default=default).encode()


def avro_v1_booking(record: dict[str, Any]) -> bytes:
    """booking.confirmed written with the *older* v1 schema (no conversation_id/timezone)."""
    raw = json.loads((REPO / "schemas/history/booking_confirmed.v1.avsc").read_text())
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"))
    out = BytesIO()
    out.write(AVRO_MAGIC + fp)
    schemaless_writer(out, parse_schema(raw, {}), record)
    return out.getvalue()


def bad_inputs(now: datetime) -> list[Bad]:
    user = b"u-bad"
    base_conf = confirmed("u-bad", "bk-bad", now + timedelta(days=3), now).record
    base_score = scored("u-bad", "conv-bad", 0.5, now, message_id="m-bad").record
    base_act = activity("u-bad", now).record
    base_cancel = cancelled("u-bad", "bk-bad", now).record
    good_avro = CODEC.encode_avro("booking_confirmed", base_conf)
    other_schema = CODEC.encode_avro("user_activity", base_act)
    no_booking = {k: v for k, v in base_conf.items() if k != "booking_id"}
    return [
        Bad(
            "garbage",
            "booking_confirmed",
            user,
            b"\xff\x00 neither json nor avro",
            "decode_error",
            "JSON",
        ),
        Bad("truncated avro", "booking_confirmed", user, good_avro[:-6], "decode_error", "Avro"),
        Bad(
            "unknown fingerprint",
            "booking_confirmed",
            None,  # no key at all: the dead letter keeps that too
            AVRO_MAGIC + b"\x01" * 8 + good_avro[10:],
            "decode_error",
            "fingerprint",
        ),
        Bad("json array", "user_activity", user, b'[{"event_id": "x"}]', "decode_error", "object"),
        Bad(
            "missing field",
            "booking_confirmed",
            user,
            as_json(no_booking),
            "schema_error",
            "booking_id",
        ),
        Bad(
            "string score",
            "message_emotion_scored",
            user,
            as_json({**base_score, "score": "0.5"}),
            "schema_error",
            "score",
        ),
        Bad(
            "score above 1",
            "message_emotion_scored",
            user,
            CODEC.encode_avro("message_emotion_scored", {**base_score, "score": 1.5}),
            "rule_violation",
            "score",
        ),
        Bad(
            "negative score",
            "message_emotion_scored",
            user,
            as_json({**base_score, "score": -0.01}),
            "rule_violation",
            "score",
        ),
        Bad(
            "naive timestamp",
            "user_activity",
            user,
            as_json({**base_act, "occurred_at": "2025-03-01T10:00:00"}),
            "schema_error",
            "occurred_at",
        ),
        Bad(
            "year 1900",
            "booking_confirmed",
            user,
            CODEC.encode_avro(
                "booking_confirmed", {**base_conf, "event_date": datetime(1900, 6, 1, tzinfo=UTC)}
            ),
            "rule_violation",
            "event_date",
        ),
        Bad(
            "year 2500",
            "user_activity",
            user,
            as_json({**base_act, "occurred_at": "2500-01-01T00:00:00Z"}),
            "rule_violation",
            "occurred_at",
        ),
        Bad(
            "blank user id",
            "booking_cancelled",
            user,
            as_json({**base_cancel, "user_id": "   "}),
            "rule_violation",
            "user_id",
        ),
        Bad(
            "empty booking id",
            "booking_cancelled",
            user,
            CODEC.encode_avro("booking_cancelled", {**base_cancel, "booking_id": ""}),
            "rule_violation",
            "booking_id",
        ),
        Bad(
            "unknown time zone",
            "booking_confirmed",
            user,
            as_json({**base_conf, "timezone": "Mars/Olympus_Mons"}),
            "rule_violation",
            "timezone",
        ),
        Bad("tombstone", "booking_cancelled", user, None, "decode_error", "null"),
        Bad(
            "another topic's schema",
            "message_emotion_scored",
            user,
            other_schema,
            "schema_error",
            "user_activity",
        ),
        Bad(
            "NUL in an id",
            "user_activity",
            user,
            as_json({**base_act, "event_id": "ev\x00il"}),
            "rule_violation",
            "event_id",
        ),
        Bad("empty value", "user_activity", user, b"", "decode_error", "empty"),
        Bad(
            "id of 256 characters",
            "booking_confirmed",
            user,
            as_json({**base_conf, "booking_id": "b" * 256}),
            "rule_violation",
            "booking_id",
        ),
    ]


async def test_bad_values_are_dead_lettered_and_valid_ones_around_them_applied(
    settings: Settings,
) -> None:
    now = ms(datetime.now(UTC))
    bad = bad_inputs(now)
    # Valid events of every topic, in both formats, one between each pair of bad ones.
    ua, ub, uc, ud = (new_id(p) for p in ("ua", "ub", "uc", "ud"))
    # The longest ids allowed (255 characters, two UTF-8 bytes each) are not bad input.
    long_user = "ü" * 255
    long_booking, long_event = "ß" * 255, "é" * 255
    booking_a, booking_c, booking_d = new_id("bka"), new_id("bkc"), new_id("bkd")
    date = now + timedelta(days=4)
    valid: list[Event] = [
        confirmed(ua, booking_a, date, now - timedelta(hours=1)),
        scored(ub, "conv-b", 0.8, now - timedelta(minutes=50), message_id="mb1", fmt="avro"),
        activity(uc, now - timedelta(minutes=40), fmt="avro"),
        cancelled(uc, booking_c, now - timedelta(minutes=30)),
        scored(ub, "conv-b", 0.6, now - timedelta(minutes=20), message_id="mb2"),
        confirmed(
            ua, new_id("bka2"), date + timedelta(days=5), now - timedelta(minutes=10), fmt="avro"
        ),
        confirmed(long_user, long_booking, date, now - timedelta(minutes=7), event_id=long_event),
    ]
    v1_record = {
        "event_id": new_id("evc"),
        "occurred_at": now - timedelta(minutes=5),
        "user_id": ud,
        "booking_id": booking_d,
        "event_date": date,
    }
    messages: list[Raw] = []
    is_bad: list[Bad | None] = []
    for i, b in enumerate(bad):
        messages.append((topic_of(settings, b.kind), b.key, b.value))
        is_bad.append(b)
        if i < len(valid):
            e = valid[i]
            messages.append((topic_of(settings, e.kind), e.key, e.value))
            is_bad.append(None)
    # An older writer schema is not bad input: it is resolved into the current one.
    messages.append((settings.topic_booking_confirmed, ud.encode(), avro_v1_booking(v1_record)))
    is_bad.append(None)

    await create_topics(settings)
    async with running(settings) as service:
        placed = await produce_raw(settings, messages)
        await wait_consumed(settings, len(messages), service=service)
        # Dead letters are published before their offsets are stored: all there.
        dead = await read_to_end(settings, settings.topic_dlq)

        # Still consuming: a valid event produced after all the bad ones is applied.
        last_user = new_id("ue")
        after = confirmed(last_user, new_id("bke"), date, now)
        await produce_raw(settings, [(settings.topic_booking_confirmed, after.key, after.value)])
        await wait_consumed(settings, len(messages) + 1, service=service)
        applied_after = await query(
            settings, "SELECT status FROM scheduled_followups WHERE user_id = $1", last_user
        )
    assert sorted(r["status"] for r in applied_after) == ["pending", "pending"]

    where = {
        (m.topic, m.partition, m.offset): b
        for m, b in zip(placed, is_bad, strict=True)
        if b is not None
    }
    assert len(where) == len(bad)
    # No crash here, so each bad record is dead-lettered exactly once.
    assert len(dead) == len(bad), [headers_of(r).get("dlq.error.message") for r in dead]
    seen: set[tuple[str, int, int]] = set()
    for record in dead:
        h = headers_of(record)
        position = (
            h["dlq.original.topic"].decode(),
            int(h["dlq.original.partition"]),
            int(h["dlq.original.offset"]),
        )
        assert position in where, f"dead letter for a record that was not bad: {position}"
        seen.add(position)
        b = where[position]
        assert record.key == b.key, b.name
        assert record.value == b.value, b.name
        assert h["dlq.error.type"].decode() == b.error_type, (b.name, h["dlq.error.message"])
        message = h["dlq.error.message"].decode()
        assert message.strip(), b.name
        assert b.mentions in message, (b.name, message)
    assert seen == set(where), [b.name for p, b in where.items() if p not in seen]

    # Every valid event around them was applied.
    post_events = await query(
        settings,
        "SELECT user_id, trigger_data->>'booking_id' AS booking, conversation_id, status "
        "FROM scheduled_followups WHERE trigger_type = 'post_event' ORDER BY user_id, scheduled_at",
    )
    assert sorted((r["user_id"], r["status"]) for r in post_events) == sorted(
        [
            (ua, "pending"),
            (ua, "pending"),
            (ud, "pending"),
            (last_user, "pending"),
            (long_user, "pending"),
        ]
    )
    (from_long,) = [r for r in post_events if r["user_id"] == long_user]
    assert from_long["booking"] == long_booking
    (from_v1,) = [r for r in post_events if r["user_id"] == ud]
    assert from_v1["booking"] == booking_d
    assert from_v1["conversation_id"] == f"booking_{booking_d}"
    (conv,) = await query(
        settings,
        "SELECT history::text AS h FROM conversation_emotions WHERE conversation_id = 'conv-b'",
    )
    assert [m for m, _, _ in json.loads(conv["h"])] == ["mb2", "mb1"]
    (cancel_row,) = await query(
        settings, "SELECT cancelled_at FROM booking_projection WHERE booking_id = $1", booking_c
    )
    assert cancel_row["cancelled_at"] == now - timedelta(minutes=30)
    activity_rows = await query(
        settings, "SELECT user_id, last_activity_at FROM user_projection ORDER BY user_id"
    )
    assert {r["user_id"]: r["last_activity_at"] for r in activity_rows} == {
        ua: now - timedelta(minutes=10),
        ub: now - timedelta(minutes=20),
        uc: now - timedelta(minutes=40),
        ud: now - timedelta(minutes=5),
        last_user: now,
        long_user: now - timedelta(minutes=7),
    }


async def test_lone_surrogate_in_json_string_is_dead_lettered_not_fatal(
    settings: Settings,
) -> None:
    now = ms(datetime.now(UTC))
    poisoned = (
        b'{"event_id": "ev-surrogate", "occurred_at": "'
        + now.isoformat().encode()
        + b'", "user_id": "u\\ud800x", "activity_type": "login"}'
    )
    fine_user = new_id("u")
    fine = activity(fine_user, now)
    await create_topics(settings)
    async with running(settings) as service:
        await produce_raw(
            settings,
            [
                (settings.topic_user_activity, b"u", poisoned),
                (settings.topic_user_activity, fine.key, fine.value),
            ],
        )
        await wait_consumed(settings, 2, timeout=20, service=service)
        dead = await read_to_end(settings, settings.topic_dlq)
        rows = await query(settings, "SELECT user_id FROM user_projection")
    assert [r["user_id"] for r in rows] == [fine_user]
    assert len(dead) == 1
    assert dead[0].value == poisoned
    assert headers_of(dead[0])["dlq.error.type"] in (b"schema_error", b"rule_violation")


async def test_no_record_is_processed_twice_when_reading_saved_offsets_is_slow(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = PostgresStore.load_offsets
    original_assigned = OffsetsFromDatabase.on_partitions_assigned
    assigning = 0  # partition assignments under way (each reads the saved offsets, then seeks)

    async def slow_load_offsets(
        self: PostgresStore, partitions: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        saved = await original(self, partitions)
        await asyncio.sleep(1.0)  # the answer takes a while to arrive, as under load
        return saved

    async def counted_assigned(self: OffsetsFromDatabase, assigned: set[TopicPartition]) -> None:
        nonlocal assigning
        assigning += 1
        try:
            await original_assigned(self, assigned)
        finally:
            assigning -= 1

    async def under_way() -> int:
        return assigning

    monkeypatch.setattr(PostgresStore, "load_offsets", slow_load_offsets)
    monkeypatch.setattr(OffsetsFromDatabase, "on_partitions_assigned", counted_assigned)
    bad = [
        (settings.topic_user_activity, f"k{i}".encode(), f"not json {i}".encode()) for i in range(3)
    ]
    await create_topics(settings)
    placed = await produce_raw(settings, bad)
    async with running(settings) as service:
        await wait_consumed(settings, len(bad), service=service)
        # A record is read again only after a seek back, made by an assignment whose
        # (slow) read of the saved offsets began before the records were committed.
        # Once none is under way, every such seek has been made; an assignment begun
        # later reads offsets past the bad records.
        await wait_until(under_way, lambda n: n == 0)
        # Behind the bad records, a valid one in every partition: once the service has
        # consumed to the end, whatever a seek back made it read again was read too.
        after = [activity(new_id("u-after"), ms(datetime.now(UTC))) for _ in range(3)]
        partitions = await partitions_of(settings, [settings.topic_user_activity])
        assert len(partitions) == len(after)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
        await producer.start()
        try:
            for tp, e in zip(partitions, after, strict=True):
                await producer.send_and_wait(
                    tp.topic, value=e.value, key=e.key, partition=tp.partition
                )
        finally:
            await producer.stop()
        await consumed_to_end(settings, service=service)
        dead = await read_to_end(settings, settings.topic_dlq)
        applied = await query(settings, "SELECT user_id FROM user_projection")
    assert sorted(r["user_id"] for r in applied) == sorted(e.record["user_id"] for e in after)
    positions = sorted(
        (headers_of(r)["dlq.original.topic"].decode(), int(headers_of(r)["dlq.original.offset"]))
        for r in dead
    )
    assert positions == sorted((m.topic, m.offset) for m in placed)
