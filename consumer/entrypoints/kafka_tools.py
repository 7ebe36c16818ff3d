"""`produce-sample` and `tail`: seeing the service work, from a second terminal.

This module is their I/O (Kafka, the terminal, signals); what they send and how
they print it are pure functions in `sample` and `tail_format`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiokafka.errors import KafkaConnectionError, KafkaError

from consumer.adapters.codec import AVRO_CONTENT_TYPE, JSON_CONTENT_TYPE, Codec
from consumer.adapters.kafka import ensure_topics, make_producer, make_reader, partitions_of
from consumer.config import Settings
from consumer.entrypoints.exit_codes import (
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
)
from consumer.entrypoints.sample import Sent, Story, build_story, format_sent
from consumer.entrypoints.tail_format import (
    Record,
    decode_due,
    format_dead,
    format_due,
    in_order,
    record_json,
)
from consumer.entrypoints.terminal import printable

Clock = Callable[[], datetime]
# Connecting (and creating missing topics) takes a second on a live broker; an
# address where nothing answers should not keep a person waiting much longer.
CONNECT_SECONDS = 15.0
FETCH_MS = 200


def execute(args: argparse.Namespace, settings: Settings, clock: Clock) -> int:
    """Run `produce-sample` or `tail`; returns the exit code."""
    if logging.getLogger().level >= logging.INFO:
        # Its complaints about connections are the one line this command prints itself.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        if args.command == "produce-sample":
            return asyncio.run(
                _interruptible(
                    produce_sample(
                        settings,
                        user_id=args.user,
                        due_in=args.due_in,
                        value_format=args.format,
                        clock=clock,
                        locale=args.locale,
                    ),
                    on_signal=EXIT_INTERRUPTED,
                )
            )
        return asyncio.run(
            _interruptible(
                tail(
                    settings,
                    dead_letters=args.topic == "followup.dlq",
                    from_beginning=args.from_beginning,
                    as_json=args.json,
                    max_records=args.max,
                    stop_after=args.timeout,
                ),
                on_signal=EXIT_OK,
            )
        )
    except BrokenPipeError:
        # `tail | head`: the reader has all it wants. Point stdout at /dev/null so that
        # flushing it at exit does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (KafkaError, OSError, TimeoutError) as exc:
        _error(f"Kafka at {settings.kafka_bootstrap_servers}: {_described(exc)}")
        return EXIT_UNAVAILABLE


async def _interruptible(body: Coroutine[Any, Any, int], *, on_signal: int) -> int:
    """`body`, unless SIGINT or SIGTERM comes first: then it is cancelled (its
    `finally` blocks close the Kafka clients) and the exit code is `on_signal`,
    without a traceback."""
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signalled.set)
    task = asyncio.create_task(body)
    waiter = asyncio.create_task(signalled.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return on_signal
    finally:
        waiter.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# --- produce-sample ---------------------------------------------------------------------


async def produce_sample(
    settings: Settings,
    *,
    user_id: str | None,
    due_in: timedelta,
    value_format: str,
    clock: Clock,
    locale: str | None = None,
) -> int:
    suffix = uuid.uuid4().hex[:6]
    now = clock()
    story = build_story(
        now=now,
        user_id=user_id or f"user-{suffix}",
        due_in=due_in,
        followup_delay=timedelta(hours=settings.followup_delay_hours),
        suffix=suffix,
        locale=locale,
    )
    sent = await send_story(settings, story, value_format)
    _write(
        format_sent(
            story,
            sent,
            now=clock(),
            local=None,
            bootstrap=settings.kafka_bootstrap_servers,
            value_format=value_format.upper(),
            delay_hours=settings.followup_delay_hours,
            due_topic=settings.topic_followup_due,
        )
    )
    return EXIT_OK


async def send_story(settings: Settings, story: Story, value_format: str) -> list[Sent]:
    """Every event of the story to its topic, keyed by user id, one after the other,
    each acknowledged by the broker (acks=all) before the next."""
    codec = Codec.load()
    topic_of = {kind: topic for topic, kind in settings.input_topics.items()}
    content_type = (AVRO_CONTENT_TYPE if value_format == "avro" else JSON_CONTENT_TYPE).encode()
    producer = make_producer(settings)
    try:
        async with asyncio.timeout(CONNECT_SECONDS):
            # As `run` would create them (TOPIC_PARTITIONS), not as the broker would.
            await ensure_topics(settings, settings.input_topics)
            await producer.start()
        sent = []
        for event in story.events:
            topic = topic_of[event.kind]
            as_json = codec.encode_json(event.kind, event.record)
            value = (
                as_json if value_format == "json" else codec.encode_avro(event.kind, event.record)
            )
            meta = await producer.send_and_wait(
                topic,
                value=value,
                key=event.key.encode(),
                headers=[("content-type", content_type)],
            )
            sent.append(Sent(topic, meta.partition, meta.offset, event.key, as_json.decode()))
        return sent
    finally:
        await producer.stop()


# --- tail -------------------------------------------------------------------------------


@dataclass
class _Count:
    printed: int = 0


async def tail(
    settings: Settings,
    *,
    dead_letters: bool,
    from_beginning: bool,
    as_json: bool,
    max_records: int | None,
    stop_after: float | None,
) -> int:
    """Print the records of followup.due (or followup.dlq) until --max records, the
    --timeout, a signal, or the reader of stdout goes away."""
    count = _Count()
    bound = asyncio.timeout(stop_after)
    try:
        async with bound:
            await _follow(settings, dead_letters, from_beginning, as_json, max_records, count)
    except TimeoutError:
        if not bound.expired():
            raise
        if max_records is not None:
            _note(f"tail: {count.printed} of {max_records} records within {stop_after:g} s")
            return EXIT_INCOMPLETE
    return EXIT_OK


async def _follow(
    settings: Settings,
    dead_letters: bool,
    from_beginning: bool,
    as_json: bool,
    max_records: int | None,
    count: _Count,
) -> None:
    topic = settings.topic_dlq if dead_letters else settings.topic_followup_due
    codec = Codec.load()
    reader = make_reader(settings)
    try:
        async with asyncio.timeout(CONNECT_SECONDS):
            # As `run` would create it; before the service ever ran there is none yet.
            await ensure_topics(settings, [topic])
            partitions = await partitions_of(settings, [topic])
            await reader.start()
            reader.assign(partitions)
            # Explicit offsets, so that "from the end" means the end as of now.
            starts = await (
                reader.beginning_offsets(partitions)
                if from_beginning
                else reader.end_offsets(partitions)
            )
            for tp, offset in starts.items():
                reader.seek(tp, offset)
        _note(
            f"tail: {printable(topic)} at {printable(settings.kafka_bootstrap_servers)}, "
            f"{'from the beginning' if from_beginning else 'new records only'} "
            "(Ctrl-C to stop)"
        )
        while max_records is None or count.printed < max_records:
            batch = await reader.getmany(timeout_ms=FETCH_MS)
            for raw in in_order([[_record(r) for r in rs] for rs in batch.values()]):
                _write(_shown(codec, raw, dead_letters=dead_letters, as_json=as_json))
                count.printed += 1
                if max_records is not None and count.printed >= max_records:
                    return
    finally:
        await reader.stop()


def _record(r: Any) -> Record:
    return Record(
        topic=r.topic,
        partition=r.partition,
        offset=r.offset,
        timestamp_ms=r.timestamp,
        key=r.key,
        value=r.value,
        headers=tuple((str(k), v) for k, v in r.headers),
    )


def _shown(codec: Codec, r: Record, *, dead_letters: bool, as_json: bool) -> str:
    if dead_letters:
        return record_json(r, dead_letter=True) if as_json else format_dead(r, None)
    event, problem = decode_due(codec, r)
    return record_json(r, event, problem) if as_json else format_due(r, event, problem, None)


# --- the terminal -----------------------------------------------------------------------


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _note(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _error(message: str) -> None:
    _note(f"followup-consumer: {message}")


def _described(exc: BaseException) -> str:
    if isinstance(exc, KafkaConnectionError):
        return "no broker answers there (are the services up? `scripts/services status`)"
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"no answer within {CONNECT_SECONDS:g} s"
    name, text = type(exc).__name__, str(exc)
    return text if text.startswith(name) else f"{name}: {text}" if text else name
