"""The topics of one set of settings: which is which, creating them, producing raw
records to them, reading a record's headers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from consumer.adapters.kafka import ensure_topics
from consumer.config import Settings

INPUT_KINDS = ("booking_confirmed", "booking_cancelled", "message_emotion_scored", "user_activity")


def topic_of(settings: Settings, kind: str) -> str:
    """The topic a kind of input event is produced to, under these settings."""
    return {
        "booking_confirmed": settings.topic_booking_confirmed,
        "booking_cancelled": settings.topic_booking_cancelled,
        "message_emotion_scored": settings.topic_emotion_scored,
        "user_activity": settings.topic_user_activity,
    }[kind]


def input_topics(settings: Settings) -> list[str]:
    return [topic_of(settings, k) for k in INPUT_KINDS]


async def create_topics(settings: Settings) -> None:
    """Create the test's topics up front (as the service would), so that producing
    before the service starts never depends on the broker auto-creating them."""
    await ensure_topics(
        settings, [*input_topics(settings), settings.topic_followup_due, settings.topic_dlq]
    )


Raw = tuple[str, bytes | None, bytes | None]  # topic, key, value


async def produce_raw(
    settings: Settings,
    messages: Sequence[Raw],
    headers: Sequence[tuple[str, bytes]] | None = None,
) -> list[RecordMetadata]:
    """Produce in the given order (idempotent producer: no reordering on retry);
    returns where each record landed."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=v, key=k, headers=list(headers or []))
            for topic, k, v in messages
        ]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


def headers_of(record: Any) -> dict[str, bytes]:
    return {k: v for k, v in record.headers}
