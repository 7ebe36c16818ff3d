"""Ingest: a batch of records in, their effects and offsets committed together.

decode -> dead letters out -> lock and load the rows the batch touches ->
`rules.decide` per event in memory -> write back what changed, with the offsets,
in one transaction. A crash anywhere before the commit leaves nothing applied;
the batch is read again from the saved offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.exc import DBAPIError

from consumer.codec import Codec
from consumer.events import (
    BookingCancelled,
    BookingConfirmed,
    EmotionScored,
    EventKind,
    InputEvent,
)
from consumer.kafka_io import DeadLetter, InRecord
from consumer.model import Followup, Status, TriggerType
from consumer.rules import Policy, decide
from consumer.store import BatchKeys, Store
from consumer.wire import BadInput, parse_event

log = logging.getLogger(__name__)

# Deadlock and serialization failures: the batch is simply run again.
_RETRYABLE_SQLSTATES = {"40P01", "40001"}
# Data exceptions and integrity violations: a value, not the database, is at fault.
_DATA_ERRORS = ("22", "23")


def _sqlstate(exc: DBAPIError) -> str:
    return str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or "")


class DeadLetterSink(Protocol):
    async def send(self, dead: Sequence[DeadLetter]) -> None: ...


@dataclass
class BatchOutcome:
    applied: Counter[str] = field(default_factory=Counter)  # by topic
    dead: Counter[tuple[str, str]] = field(default_factory=Counter)  # (topic, error type)
    refused: Counter[TriggerType] = field(default_factory=Counter)
    scheduled: Counter[TriggerType] = field(default_factory=Counter)
    cancelled: Counter[TriggerType] = field(default_factory=Counter)
    expired: Counter[TriggerType] = field(default_factory=Counter)
    earliest_due: datetime | None = None
    seconds: float = 0.0

    def add(self, other: BatchOutcome) -> None:
        self.applied.update(other.applied)
        self.dead.update(other.dead)
        for mine, theirs in (
            (self.refused, other.refused),
            (self.scheduled, other.scheduled),
            (self.cancelled, other.cancelled),
            (self.expired, other.expired),
        ):
            mine.update(theirs)
        if other.earliest_due and (not self.earliest_due or other.earliest_due < self.earliest_due):
            self.earliest_due = other.earliest_due


@dataclass(frozen=True, slots=True)
class Decoded:
    record: InRecord
    event: InputEvent


@dataclass
class PreparedBatch:
    decoded: list[Decoded]
    dead: list[DeadLetter]
    offsets: dict[tuple[str, int], int]
    dead_letters_sent: bool = False

    def skip_applied(self, saved: Mapping[tuple[str, int], int]) -> None:
        self.decoded = [d for d in self.decoded if not _applied(d.record, saved)]
        self.dead = [d for d in self.dead if not _applied(d.record, saved)]


def _applied(record: InRecord, saved: Mapping[tuple[str, int], int]) -> bool:
    return record.offset < saved.get((record.topic, record.partition), 0)


class Ingestor:
    def __init__(
        self,
        store: Store,
        codec: Codec,
        policy: Policy,
        topic_kinds: Mapping[str, str],
        dead_letters: DeadLetterSink,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.codec = codec
        self.policy = policy
        self.topic_kinds = {t: EventKind(k) for t, k in topic_kinds.items()}
        self.dead_letters = dead_letters
        self.clock = clock

    def decode(self, records: Sequence[InRecord]) -> tuple[list[Decoded], list[DeadLetter]]:
        good: list[Decoded] = []
        dead: list[DeadLetter] = []
        for record in records:
            try:
                event = parse_event(self.topic_kinds[record.topic], record.value, self.codec)
            except BadInput as exc:
                dead.append(DeadLetter(record, exc.error_type, exc.message))
            else:
                good.append(Decoded(record, event))
        return good, dead

    def prepare(self, records: Sequence[InRecord], *, save_offsets: bool = True) -> PreparedBatch:
        """Decode once; the batch may then be applied (retried) any number of times.

        `save_offsets=False` (replay) applies the events without moving the
        group's stored positions: the rules are idempotent, so that is safe.
        """
        decoded, dead = self.decode(records)
        offsets: dict[tuple[str, int], int] = {}
        for r in records if save_offsets else ():
            key = (r.topic, r.partition)
            offsets[key] = max(offsets.get(key, 0), r.offset + 1)
        # Event time order inside the batch; per-partition order is kept for ties.
        decoded.sort(key=lambda d: d.event.occurred_at)
        return PreparedBatch(decoded, dead, offsets)

    async def process(
        self, records: Sequence[InRecord], *, save_offsets: bool = True
    ) -> BatchOutcome:
        return await self.apply(self.prepare(records, save_offsets=save_offsets))

    async def apply(self, batch: PreparedBatch) -> BatchOutcome:
        """Apply a batch exactly once; raises only on infrastructure failures."""
        started = time.perf_counter()
        if batch.offsets and not batch.dead_letters_sent:
            # Records below the saved positions were applied already (by us before a
            # crash, or by another instance before a rebalance): skip them, and
            # their dead letters with them.
            batch.skip_applied(await self.store.load_offsets(batch.offsets))
        if batch.dead and not batch.dead_letters_sent:
            # Published before the offsets are committed: a dead letter is never lost
            # (a crash in between may publish it twice; a retried batch does not).
            await self.dead_letters.send(batch.dead)
            batch.dead_letters_sent = True
            for d in batch.dead:
                log.warning(
                    "dead-lettered",
                    extra={
                        "topic": d.record.topic,
                        "partition": d.record.partition,
                        "offset": d.record.offset,
                        "error_type": d.error_type,
                        "error": d.message,
                    },
                )
        try:
            outcome = await self._apply_retrying(batch.decoded, batch.offsets)
        except DBAPIError as exc:
            if not _sqlstate(exc).startswith(_DATA_ERRORS):
                raise
            # Something in the batch the database refuses (a value it cannot store):
            # find it event by event, dead-letter it, keep the rest.
            outcome = await self._apply_isolating(batch)
        for d in batch.dead:
            outcome.dead[(d.record.topic, d.error_type)] += 1
        outcome.seconds = time.perf_counter() - started
        return outcome

    async def _apply_retrying(
        self, decoded: Sequence[Decoded], offsets: Mapping[tuple[str, int], int]
    ) -> BatchOutcome:
        for attempt in range(1, 6):
            try:
                return await self._apply(decoded, offsets)
            except DBAPIError as exc:
                code = _sqlstate(exc)
                if code not in _RETRYABLE_SQLSTATES or attempt == 5:
                    raise
                log.info("batch conflicted, running it again", extra={"sqlstate": code})
                await asyncio.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    async def _apply_isolating(self, batch: PreparedBatch) -> BatchOutcome:
        total = BatchOutcome()
        refused: list[DeadLetter] = []
        for d in batch.decoded:
            try:
                total.add(await self._apply_retrying([d], {}))
            except DBAPIError as exc:
                if not _sqlstate(exc).startswith(_DATA_ERRORS):
                    raise
                refused.append(DeadLetter(d.record, "storage_error", str(exc.orig)[:1000]))
        if refused:
            await self.dead_letters.send(refused)
            for r in refused:
                total.dead[(r.record.topic, r.error_type)] += 1
                log.warning(
                    "dead-lettered",
                    extra={
                        "topic": r.record.topic,
                        "partition": r.record.partition,
                        "offset": r.record.offset,
                        "error_type": r.error_type,
                        "error": r.message,
                    },
                )
        await self._apply_retrying([], batch.offsets)  # the positions, last
        return total

    async def _apply(
        self, decoded: Sequence[Decoded], offsets: Mapping[tuple[str, int], int]
    ) -> BatchOutcome:
        now = self.clock()
        outcome = BatchOutcome()
        async with self.store.ingest_transaction() as tx:
            if offsets:
                # Again under lock: another instance may have moved them meanwhile.
                saved = await tx.lock_offsets(offsets)
                decoded = [d for d in decoded if not _applied(d.record, saved)]
            ws = await tx.lock_and_load(_keys(decoded), now)
            before = dict(ws.followups)
            for d in decoded:
                ws.apply(decide(ws, d.event, self.policy, now))
                outcome.applied[d.record.topic] += 1
            await tx.save(ws, offsets)
        outcome.refused = ws.refused
        for id_ in ws.dirty_followups:
            _count_transition(outcome, before.get(id_), ws.followups[id_])
        return outcome


def _count_transition(outcome: BatchOutcome, old: Followup | None, new: Followup) -> None:
    kind = new.trigger_type
    if new.status is Status.PENDING:
        if old is None or old.status is not Status.PENDING:
            outcome.scheduled[kind] += 1
        if outcome.earliest_due is None or new.scheduled_at < outcome.earliest_due:
            outcome.earliest_due = new.scheduled_at
    elif new.status is Status.CANCELLED and (old is None or old.status is not Status.CANCELLED):
        outcome.cancelled[kind] += 1
    elif new.status is Status.EXPIRED and (old is None or old.status is not Status.EXPIRED):
        outcome.expired[kind] += 1


def _keys(decoded: Sequence[Decoded]) -> BatchKeys:
    users: set[str] = set()
    bookings: set[str] = set()
    conversations: set[str] = set()
    for d in decoded:
        e = d.event
        if isinstance(e, BookingCancelled):
            bookings.add(e.booking_id)
            continue  # a cancellation is not activity: it needs no user row
        users.add(e.user_id)
        if isinstance(e, BookingConfirmed):
            bookings.add(e.booking_id)
        elif isinstance(e, EmotionScored):
            conversations.add(e.conversation_id)
    return BatchKeys(frozenset(users), frozenset(bookings), frozenset(conversations))
