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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, assert_never

from consumer.domain.events import (
    BookingCancelled,
    BookingConfirmed,
    EmotionScored,
    EventKind,
    InputEvent,
    UserActivity,
)
from consumer.domain.model import Followup, Status
from consumer.domain.policy import Backoff, Policy
from consumer.domain.rules import decide
from consumer.service.ports import (
    BadValue,
    BatchKeys,
    BatchOutcome,
    Conflict,
    DeadLetter,
    DeadLetterSink,
    IngestStore,
    InRecord,
    Partition,
    ValueRefused,
)
from consumer.service.retry import retrying

log = logging.getLogger(__name__)

# A batch that conflicted with another instance's is simply run again, soon.
_CONFLICT_BACKOFF = Backoff(first=timedelta(milliseconds=50), cap=timedelta(seconds=1))
_CONFLICT_ATTEMPTS = 5


class EventDecoder(Protocol):
    """Bytes of one topic's value to a domain event (the codec and wire adapters)."""

    async def prepare(self, values: Sequence[bytes | None]) -> None:
        """Fetch what decoding these values needs (a schema registry's writer
        schemas); raises Unavailable when that cannot be had now."""
        ...

    def __call__(self, kind: EventKind, value: bytes | None) -> InputEvent:
        """The event, or BadValue; no I/O (whatever it needs was prepared)."""
        ...


@dataclass(frozen=True, slots=True)
class Decoded:
    record: InRecord
    event: InputEvent


@dataclass
class PreparedBatch:
    decoded: list[Decoded]
    dead: list[DeadLetter]
    offsets: dict[Partition, int]
    dead_letters_sent: bool = False

    def skip_applied(self, saved: Mapping[Partition, int]) -> None:
        self.decoded = [d for d in self.decoded if not _applied(d.record, saved)]
        self.dead = [d for d in self.dead if not _applied(d.record, saved)]


def _applied(record: InRecord, saved: Mapping[Partition, int]) -> bool:
    return record.offset < saved.get((record.topic, record.partition), 0)


class LaneTurns:
    """Whose turn it is, per lane, with two batches in flight (the runner's).

    Lane *i* of a batch is the same partitions in every batch (`_lanes`), so it
    waits only for lane *i* of the batch before it to commit, not for that
    batch's slowest lane: each partition's batches still commit in order, and
    the lanes stop starting together, all waiting for PostgreSQL at once.
    """

    def __init__(self, lanes: int, after: LaneTurns | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.lanes = lanes
        self._committed: list[asyncio.Future[bool]] = [loop.create_future() for _ in range(lanes)]
        # The futures of the batch before, not the batch itself: no chain of them all.
        self._after = None if after is None else after._committed

    async def before(self, lane: int) -> None:
        """Until lane `lane` of the batch before has committed (at once for the
        first); BatchAbandoned if it never will (that batch failed or stopped)."""
        # Shielded: a lane cancelled while it waits leaves the turn as it was.
        if self._after is not None and not await asyncio.shield(self._after[lane]):
            raise BatchAbandoned("the batch before this one was not applied")

    def committed(self, lane: int) -> None:
        """Lane `lane` of this batch committed (once; a retried batch says it again)."""
        if not self._committed[lane].done():
            self._committed[lane].set_result(True)

    def abandon(self) -> None:
        """The batch is over: its lanes that did not commit never will."""
        for turn in self._committed:
            if not turn.done():
                turn.set_result(False)


class BatchAbandoned(Exception):
    """The batch before this one, on the same partitions, was not applied (it failed
    or the service stopped): this one must not be applied before it."""


class Ingestor:
    def __init__(
        self,
        store: IngestStore,
        decoder: EventDecoder,
        policy: Policy,
        topic_kinds: Mapping[str, str],
        dead_letters: DeadLetterSink,
        clock: Callable[[], datetime],
        *,
        lanes: int = 1,
    ) -> None:
        self.store = store
        self.lanes = lanes
        self.decoder = decoder
        self.policy = policy
        self.topic_kinds = {t: EventKind(k) for t, k in topic_kinds.items()}
        self.dead_letters = dead_letters
        self.clock = clock

    def decode(self, records: Sequence[InRecord]) -> tuple[list[Decoded], list[DeadLetter]]:
        good: list[Decoded] = []
        dead: list[DeadLetter] = []
        for record in records:
            try:
                event = self.decoder(self.topic_kinds[record.topic], record.value)
            except BadValue as exc:
                dead.append(DeadLetter(record, exc.error_type, exc.message))
            else:
                good.append(Decoded(record, event))
        return good, dead

    async def prepare(
        self,
        records: Sequence[InRecord],
        *,
        save_offsets: bool = True,
        unreadable: Sequence[DeadLetter] = (),
    ) -> PreparedBatch:
        """Decode once; the batch may then be applied (retried) any number of times.

        Raises Unavailable when what decoding needs cannot be fetched (the schema
        registry is down): nothing is decided, the batch waits like any outage.
        `save_offsets=False` (replay) applies the events without moving the
        group's stored positions: the rules are idempotent, so that is safe.
        `unreadable`: records of the same fetch the Kafka adapter could not read
        at all, already dead letters; they go out with the batch's own and their
        offsets are committed with it, like any record's.
        """
        await self.decoder.prepare([r.value for r in records])
        decoded, dead = self.decode(records)
        offsets: dict[Partition, int] = {}
        for r in [*records, *(d.record for d in unreadable)] if save_offsets else ():
            key = (r.topic, r.partition)
            offsets[key] = max(offsets.get(key, 0), r.offset + 1)
        # Event time order inside the batch; per-partition order is kept for ties.
        decoded.sort(key=lambda d: d.event.occurred_at)
        return PreparedBatch(decoded, [*unreadable, *dead], offsets)

    async def process(
        self,
        records: Sequence[InRecord],
        *,
        save_offsets: bool = True,
        unreadable: Sequence[DeadLetter] = (),
    ) -> BatchOutcome:
        return await self.apply(
            await self.prepare(records, save_offsets=save_offsets, unreadable=unreadable)
        )

    async def apply(self, batch: PreparedBatch, turns: LaneTurns | None = None) -> BatchOutcome:
        """Apply a batch exactly once; raises only on infrastructure failures.

        With `turns` (the runner's, two batches in flight) each lane starts when the
        same lane of the batch before has committed, not when all of it has.
        """
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
            _log_dead(batch.dead)
        if turns is not None:
            lanes = _lanes(batch, turns.lanes, every=True)
            runs = [self._apply_in_turn(turns, i, d, o) for i, (d, o) in enumerate(lanes)]
        else:
            lanes = _lanes(batch, self.lanes)
            runs = [self._apply_lane(d, o) for d, o in lanes]
        if len(runs) == 1:
            outcome = await runs[0]
        else:
            # One transaction per lane, side by side: while one waits for PostgreSQL
            # the rules of another run. A lane is a set of partitions, so each
            # partition's events and offset still commit together, in order.
            results = await asyncio.gather(*runs, return_exceptions=True)
            outcome = BatchOutcome()
            for result in results:
                if isinstance(result, BaseException):
                    # The lanes that committed are skipped when the batch is retried
                    # (their offsets, read under lock, say so).
                    raise result
                outcome.add(result)
        for d in batch.dead:
            outcome.dead[(d.record.topic, d.error_type)] += 1
        outcome.seconds = time.perf_counter() - started
        return outcome

    async def _apply_in_turn(
        self,
        turns: LaneTurns,
        lane: int,
        decoded: Sequence[Decoded],
        offsets: Mapping[Partition, int],
    ) -> BatchOutcome:
        await turns.before(lane)
        outcome = await self._apply_lane(decoded, offsets) if decoded or offsets else BatchOutcome()
        turns.committed(lane)
        return outcome

    async def _apply_retrying(
        self, decoded: Sequence[Decoded], offsets: Mapping[Partition, int]
    ) -> BatchOutcome:
        return await retrying(
            lambda: self._apply(decoded, offsets),
            retry_on=Conflict,
            what="batch (conflict with another transaction)",
            backoff=_CONFLICT_BACKOFF,
            attempts=_CONFLICT_ATTEMPTS,
            outages=None,  # expected now and then with several instances; short-lived
        )

    async def _apply_lane(
        self, decoded: Sequence[Decoded], offsets: Mapping[Partition, int]
    ) -> BatchOutcome:
        try:
            return await self._apply_retrying(decoded, offsets)
        except ValueRefused:
            # Something in the lane the database refuses (a value it cannot store):
            # find it event by event, dead-letter it, keep the rest.
            return await self._apply_isolating(decoded, offsets)

    async def _apply_isolating(
        self, decoded: Sequence[Decoded], offsets: Mapping[Partition, int]
    ) -> BatchOutcome:
        total = BatchOutcome()
        refused: list[DeadLetter] = []
        for d in decoded:
            try:
                total.add(await self._apply_retrying([d], {}))
            except ValueRefused as exc:
                refused.append(DeadLetter(d.record, "storage_error", str(exc)[:1000]))
        if refused:
            await self.dead_letters.send(refused)
            _log_dead(refused)
            for r in refused:
                total.dead[(r.record.topic, r.error_type)] += 1
        await self._apply_retrying([], offsets)  # the positions, last
        return total

    async def _apply(
        self, decoded: Sequence[Decoded], offsets: Mapping[Partition, int]
    ) -> BatchOutcome:
        now = self.clock()
        outcome = BatchOutcome()
        async with self.store.transaction() as tx:
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


def _lanes(
    batch: PreparedBatch, lanes: int, *, every: bool = False
) -> list[tuple[list[Decoded], dict[Partition, int]]]:
    """The batch split by partition number: a key (the user id, by the contract) has
    the same partition number in every input topic, so a user's events stay in one
    lane and the lanes lock disjoint rows. Were a user's events in two lanes anyway,
    the row locks would make one wait for the other: slower, never wrong.

    `every`: one entry per lane number, empty ones included (for LaneTurns)."""
    if lanes == 1:
        return [(batch.decoded, batch.offsets)]
    split: dict[int, tuple[list[Decoded], dict[Partition, int]]] = {}
    if every:
        split = {i: ([], {}) for i in range(lanes)}
    for d in batch.decoded:
        split.setdefault(d.record.partition % lanes, ([], {}))[0].append(d)
    for (topic, partition), offset in batch.offsets.items():
        split.setdefault(partition % lanes, ([], {}))[1][(topic, partition)] = offset
    return list(split.values()) or [([], {})]


def _log_dead(dead: Sequence[DeadLetter]) -> None:
    for d in dead:
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
    booking_users: set[str] = set()
    dates: set[tuple[str, datetime]] = set()
    refs: set[tuple[str, str]] = set()
    for d in decoded:
        match d.event:
            case (
                BookingCancelled(user_id=user_id, booking_id=booking_id)
                | BookingConfirmed(user_id=user_id, booking_id=booking_id)
            ):
                # Not activity for a cancellation, but the user's follow-ups are
                # recomputed from their bookings: their row is locked.
                users.add(user_id)
                booking_users.add(user_id)
                bookings.add(booking_id)
                refs.add((user_id, booking_id))
                if isinstance(d.event, BookingConfirmed):
                    dates.add((user_id, d.event.event_date))
            case EmotionScored(user_id=user_id, conversation_id=conversation_id):
                users.add(user_id)
                conversations.add(conversation_id)
            case UserActivity(user_id=user_id):
                users.add(user_id)
            case _:
                assert_never(d.event)
    return BatchKeys(
        frozenset(users),
        frozenset(bookings),
        frozenset(conversations),
        frozenset(booking_users),
        frozenset(dates),
        frozenset(refs),
    )
