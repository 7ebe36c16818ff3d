"""In-memory adapters of the service's ports, for tests: `MemoryStore` (the whole
`Store`), `MemoryDuePublisher`, `MemoryDeadLetters` and `Tally` (telemetry).

`MemoryStore` mirrors `consumer.adapters.postgres` statement by statement (see
`postgres/sql.py`), including its subtleties: `due_at` (when the dispatcher may
next try) apart from `scheduled_at`; a lease is claimable once `lease_until <
now`, while a loaded follow-up is in flight while `lease_until > now`; the
follow-up upsert and delete touch only rows the rules may change (pending,
expired, or cancelled by a rule rather than an operator; not under a live
lease); ingest loads every booking and post-event row of its booking users and
every check-in of its conversations;
offsets never move backwards; values PostgreSQL would refuse (too long for
their column, NUL, lone surrogates) raise `ValueRefused`, as a test-chosen
predicate can too. Rows are kept in the shapes `postgres/rows.py` maps, so both
stores show operators the same follow-ups.

Atomicity: every write works on a copy of the tables that replaces them only
when it succeeds, so an exception inside `async with store.transaction()`
leaves nothing behind. Writes are serialized by one lock (PostgreSQL's row
locks, coarser); reads see what was last committed. `checked_out()` counts
the transactions and "connections" open right now.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from consumer.adapters.postgres.rows import OPERATOR, followup_from_row, trigger_data, view
from consumer.domain.limits import text_problem
from consumer.domain.model import (
    Booking,
    Conversation,
    Followup,
    Status,
    TriggerType,
    UserState,
    reengagement_id,
)
from consumer.domain.template_text import StoredTemplate
from consumer.domain.templates import seeded_book
from consumer.domain.working_set import WorkingSet
from consumer.service.ports import (
    BatchKeys,
    BatchOutcome,
    CancelResult,
    ClaimedFollowup,
    DeadLetter,
    DueMessage,
    Executed,
    Figures,
    FiringFacts,
    FollowupView,
    Hold,
    Partition,
    SendGate,
    Unavailable,
    ValueRefused,
)

__all__ = [
    "BrokerUnreachable",
    "FollowupRow",
    "MemoryDeadLetters",
    "MemoryDuePublisher",
    "MemoryStore",
    "MemoryUnitOfWork",
    "PublishRefused",
    "Tally",
]

_OPEN_STATUSES = frozenset({Status.PENDING.value, Status.EXPIRED.value})
_CLOSED_FOR_SWEEP = frozenset({Status.EXECUTED.value, Status.FAILED.value, Status.CANCELLED.value})
_STATUSES = frozenset(s.value for s in Status)
_TRIGGERS = frozenset(t.value for t in TriggerType)


def _utc(value: datetime | None) -> datetime | None:
    """A timestamptz as PostgreSQL gives it back: in UTC (naive ones taken as UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _utc_required(value: datetime) -> datetime:
    out = _utc(value)
    assert out is not None
    return out


@dataclass(frozen=True, slots=True)
class FollowupRow:
    """One row of `scheduled_followups` (its columns: `postgres/migrations/versions/`)."""

    id: str
    user_id: str
    conversation_id: str
    trigger_type: str
    trigger_data: str  # JSON text, as `trigger_data::text` reads it
    scheduled_at: datetime
    due_at: datetime
    status: str
    created_at: datetime
    executed_at: datetime | None = None
    cancelled_at: datetime | None = None
    template_id: str | None = None
    message_content: str | None = None
    error_message: str | None = None
    retry_count: int = 0
    lease_owner: str | None = None
    lease_until: datetime | None = None
    cancelled_by: str | None = None  # OPERATOR, or None: a rule cancelled it
    held_reason: str | None = None  # quiet_hours, daily_cap: why due_at is later
    approved_at: datetime | None = None  # a dispatcher's go-ahead (the daily cap)
    locale: str | None = None  # executed: of the template version rendered
    template_version: int | None = None

    def claimable(self, now: datetime) -> bool:
        """`lease_until IS NULL OR lease_until < now` (CLAIM_DUE, NEXT_DUE_AT, CANCEL)."""
        return self.lease_until is None or self.lease_until < now

    def followup(self, now: datetime) -> Followup:
        """As LOCK_FOLLOWUPS and CLAIM_DUE load it: in flight while `lease_until > now`."""
        return followup_from_row(
            {
                "id": self.id,
                "user_id": self.user_id,
                "conversation_id": self.conversation_id,
                "trigger_type": self.trigger_type,
                "scheduled_at": self.scheduled_at,
                "status": self.status,
                "trigger_data": self.trigger_data,
                "cancelled_at": self.cancelled_at,
                "lease_until": self.lease_until,
                "cancelled_by": self.cancelled_by,
            },
            now,
        )

    def rules_may_change(self, cutoff: datetime) -> bool:
        """sql._NOT_FIXED: never sent, not cancelled by an operator, not under a
        lease still live at `cutoff`."""
        changeable = self.status in _OPEN_STATUSES or (
            self.status == Status.CANCELLED.value and self.cancelled_by is None
        )
        return changeable and (
            self.lease_owner is None
            or (self.lease_until is not None and self.lease_until <= cutoff)
        )


@dataclass
class _Tables:
    followups: dict[str, FollowupRow] = field(default_factory=dict)
    users: dict[str, UserState] = field(default_factory=dict)
    # Placeholder rows (seeded for a lock, never written back) have user_id "".
    bookings: dict[str, Booking] = field(default_factory=dict)
    conversations: dict[str, Conversation] = field(default_factory=dict)
    offsets: dict[Partition, int] = field(default_factory=dict)
    # message_templates: every version, by (template id, locale), oldest first;
    # seeded as migration 0004 seeds it.
    templates: dict[tuple[str, str], list[StoredTemplate]] = field(
        default_factory=lambda: {k: [t] for k, t in seeded_book().items()}
    )

    def copy(self) -> _Tables:
        # Rows are frozen and replaced, never mutated: copying the dicts is enough.
        return _Tables(
            dict(self.followups),
            dict(self.users),
            dict(self.bookings),
            dict(self.conversations),
            dict(self.offsets),
            {k: list(v) for k, v in self.templates.items()},
        )


class MemoryUnitOfWork:
    """One transaction of a `MemoryStore`: works on the store's staged tables."""

    def __init__(self, store: MemoryStore, tables: _Tables, started: datetime) -> None:
        self._store = store
        self._tables = tables
        self._started = started  # PostgreSQL's now(): the transaction's start
        self._now: datetime | None = None  # the batch's clock, from lock_and_load
        self._over = False

    def _open(self) -> _Tables:
        if self._over:
            raise RuntimeError("this transaction is over; open another one")
        return self._tables

    async def lock_offsets(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        t = self._open()
        return {p: t.offsets[p] for p in sorted(set(partitions)) if p in t.offsets}

    async def lock_and_load(self, keys: BatchKeys, now: datetime) -> WorkingSet:
        self._now = now
        t = self._open()
        check = self._store._check_text
        users = sorted(keys.user_ids | keys.booking_user_ids)
        convs = sorted(keys.conversation_ids)
        bookings = sorted(keys.booking_ids)
        # SEED: every key gets a row to lock ('' marks "not seen yet" where required).
        for c in convs:
            check("conversation_emotions.conversation_id", c)
            t.conversations.setdefault(c, Conversation(c, ""))
        for b in bookings:
            check("booking_projection.booking_id", b, 255)
            t.bookings.setdefault(b, Booking(b, ""))
        # The users of the batch's bookings as stored, too (a booking named under
        # another user in an event).
        owners = {t.bookings[b].user_id for b in bookings} - {""}
        users = sorted(set(users) | owners)
        for u in users:
            check("user_projection.user_id", u, 255)
            t.users.setdefault(u, UserState(u))
        # LOAD_USER_BOOKINGS: every booking of the booking users.
        booking_users = keys.booking_user_ids | owners
        loaded = {k: t.bookings[k] for k in bookings if t.bookings[k].user_id != ""}
        for row in t.bookings.values():
            if row.user_id in booking_users:
                loaded.setdefault(row.booking_id, row)
        ws = WorkingSet.of(
            users=[t.users[u] for u in users],
            bookings=loaded.values(),
            conversations=[t.conversations[c] for c in convs if t.conversations[c].user_id != ""],
        )
        wanted = {b.followup_id for b in ws.bookings.values() if b.followup_id}
        wanted |= {c.checkin_id for c in ws.conversations.values() if c.checkin_id}
        wanted |= {
            reengagement_id(u.user_id, u.reengagement_cycle)
            for u in ws.users.values()
            if u.reengagement_cycle is not None
        }
        # LOCK_FOLLOWUPS: the users' pending follow-ups, every post-event row of the
        # booking users, every check-in of the conversations, and the wanted ids
        # whatever their status, ordered by id.
        user_set, conv_set = set(users), set(convs)
        ids = {
            row.id
            for row in t.followups.values()
            if (row.user_id in user_set and row.status == Status.PENDING.value)
            or (row.user_id in booking_users and row.trigger_type == TriggerType.POST_EVENT)
            or (row.conversation_id in conv_set and row.trigger_type == TriggerType.EMOTION_BASED)
        }
        ids |= {i for i in wanted if i in t.followups}
        ws.add_loaded(t.followups[i].followup(now) for i in sorted(ids))
        return ws

    async def save(self, ws: WorkingSet, offsets: Mapping[Partition, int]) -> None:
        t = self._open()
        users, bookings, convs, followups = ws.changed()
        # WRITE_BACK: UPDATE ... WHERE key = key, so only rows that exist change.
        for u in users:
            self._store._check_user(u)
            if u.user_id in t.users:
                t.users[u.user_id] = replace(
                    u,
                    last_activity_at=_utc(u.last_activity_at),
                    timezone_at=_utc(u.timezone_at),
                    locale_at=_utc(u.locale_at),
                )
        for c in convs:
            self._store._check_conversation(c)
            if c.conversation_id in t.conversations:
                t.conversations[c.conversation_id] = c
        for b in bookings:
            self._store._check_booking(b)
            if b.booking_id in t.bookings:
                t.bookings[b.booking_id] = replace(
                    b,
                    event_date=_utc(b.event_date),
                    confirmed_at=_utc(b.confirmed_at),
                    cancelled_at=_utc(b.cancelled_at),
                )
        cutoff = self._now if self._now is not None else self._started
        for f in ws.removed():
            # DELETE_FOLLOWUPS, with the upsert's guard.
            row = t.followups.get(f.id)
            if row is not None and row.rules_may_change(cutoff):
                del t.followups[f.id]
        if followups:
            self._store._upsert_followups(t, followups, self._started, self._now)
        for (topic, partition), offset in offsets.items():
            self._store._check_text("consumer_offsets.topic", topic, 255)
            key = (topic, partition)
            # SAVE_OFFSETS: GREATEST(stored, new).
            t.offsets[key] = max(t.offsets.get(key, offset), offset)


class MemoryStore:
    """The whole `service.ports.Store`, in memory, with PostgresStore's semantics."""

    def __init__(
        self,
        group_id: str = "memory",
        *,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        refuse: Callable[[str], bool] | None = None,
    ) -> None:
        """`wall_clock` stands for the database server's now() (`created_at`);
        `refuse(value)` True makes any text column holding `value` refused."""
        self.group_id = group_id
        self.wall_clock = wall_clock
        self.refuse = refuse
        self._tables = _Tables()
        self._lock = asyncio.Lock()
        self._writer: asyncio.Task[Any] | None = None
        self._checked_out = 0
        self._exclusive: set[str] = set()
        self._faults: list[tuple[str | None, BaseException]] = []
        self.commits = 0  # writes that succeeded (transactions, claims, marks...)

    # --- test controls ---

    def checked_out(self) -> int:
        """Transactions and "connections" open right now (0 when all were released)."""
        return self._checked_out

    def fail_next_writes(self, *errors: BaseException, op: str | None = None) -> None:
        """The next writes fail with these, in order, at commit time: nothing of
        theirs is kept. `op` names the one kind of write to fail (a Store method,
        e.g. "mark_executed", or "transaction"); None: whichever comes next."""
        self._faults.extend((op, e) for e in errors)

    def followup_row(self, id_: str) -> FollowupRow | None:
        """The stored row, lease and due_at included (what SQL would show)."""
        return self._tables.followups.get(id_)

    def offsets(self) -> dict[Partition, int]:
        return dict(self._tables.offsets)

    # --- plumbing ---

    @contextmanager
    def _connection(self) -> Iterator[None]:
        self._checked_out += 1
        try:
            yield
        finally:
            self._checked_out -= 1

    @asynccontextmanager
    async def _write(self, op: str) -> AsyncIterator[_Tables]:
        """A copy of the tables that replaces them when the block succeeds."""
        me = asyncio.current_task()
        if me is not None and self._writer is me:
            raise RuntimeError(
                "a write while this task's own transaction is open would wait for itself "
                "(with PostgreSQL too, on the same rows): finish the transaction first"
            )
        with self._connection():
            await asyncio.sleep(0)  # a round trip: let others run
            async with self._lock:
                self._writer = me
                try:
                    staged = self._tables.copy()
                    yield staged
                    for i, (only, error) in enumerate(self._faults):
                        if only is None or only == op:
                            del self._faults[i]
                            raise error
                    self._tables = staged
                    self.commits += 1
                finally:
                    self._writer = None

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[_Tables]:
        with self._connection():
            await asyncio.sleep(0)
            yield self._tables

    def _check_text(self, column: str, value: str | None, limit: int | None = None) -> None:
        if value is None:
            return
        if limit is not None and len(value) > limit:
            raise ValueRefused(f"value too long for type character varying({limit}) ({column})")
        problem = text_problem(value)
        if problem is not None:
            raise ValueRefused(f"{column} {problem}")
        if self.refuse is not None and self.refuse(value):
            raise ValueRefused(f"{column}: refused ({value[:50]!r})")

    def _check_json(self, column: str, value: Any) -> None:
        if isinstance(value, str):
            self._check_text(column, value)
        elif isinstance(value, dict):
            for k, v in value.items():
                self._check_json(column, k)
                self._check_json(column, v)
        elif isinstance(value, list | tuple):
            for v in value:
                self._check_json(column, v)

    def _check_user(self, u: UserState) -> None:
        self._check_text("user_projection.user_id", u.user_id, 255)
        self._check_text("user_projection.timezone", u.timezone, 64)
        self._check_text("user_projection.locale", u.locale, 35)

    def _check_conversation(self, c: Conversation) -> None:
        self._check_text("conversation_emotions.conversation_id", c.conversation_id)
        self._check_text("conversation_emotions.user_id", c.user_id, 255)
        self._check_text("conversation_emotions.checkin_id", c.checkin_id, 64)
        for s in c.scores:
            self._check_text("conversation_emotions.history", s.message_id)

    def _check_booking(self, b: Booking) -> None:
        for column, value, limit in (
            ("booking_id", b.booking_id, 255),
            ("user_id", b.user_id, 255),
            ("conversation_id", b.conversation_id, None),
            ("timezone", b.timezone, 64),
            ("confirm_event_id", b.confirm_event_id, 255),
            ("cancel_reason", b.cancel_reason, None),
            ("followup_id", b.followup_id, 64),
        ):
            self._check_text(f"booking_projection.{column}", value, limit)

    def _upsert_followups(
        self, t: _Tables, followups: Sequence[Followup], started: datetime, now: datetime | None
    ) -> None:
        """UPSERT_FOLLOWUPS: insert new ones; change those the rules may change
        (pending, expired or cancelled by a rule, not under a live lease: none, or
        one that ran out by `now`, which is released); leave every other row as it is."""
        cutoff = now if now is not None else started
        staged: list[tuple[Followup, str]] = []
        for f in followups:
            data = trigger_data(f)
            self._check_text("scheduled_followups.id", f.id, 64)
            self._check_text("scheduled_followups.user_id", f.user_id, 255)
            self._check_text("scheduled_followups.conversation_id", f.conversation_id)
            self._check_text("scheduled_followups.trigger_type", f.trigger_type.value, 32)
            self._check_json("scheduled_followups.trigger_data", data)
            if f.status.value not in _STATUSES or f.trigger_type.value not in _TRIGGERS:
                raise ValueRefused(f"a check constraint refuses follow-up {f.id}")
            staged.append((f, json.dumps(data)))
        for f, data_json in staged:
            at = _utc_required(f.scheduled_at)
            existing = t.followups.get(f.id)
            if existing is None:
                t.followups[f.id] = FollowupRow(
                    id=f.id,
                    user_id=f.user_id,
                    conversation_id=f.conversation_id,
                    trigger_type=f.trigger_type.value,
                    trigger_data=data_json,
                    scheduled_at=at,
                    due_at=at,
                    status=f.status.value,
                    created_at=started,
                    cancelled_at=_utc(f.cancelled_at),
                )
            elif existing.rules_may_change(cutoff):
                # user_id and trigger_type are not among the updated columns.
                t.followups[f.id] = replace(
                    existing,
                    lease_owner=None,
                    lease_until=None,
                    conversation_id=f.conversation_id,
                    trigger_data=data_json,
                    scheduled_at=at,
                    due_at=at,
                    status=f.status.value,
                    cancelled_at=_utc(f.cancelled_at),
                    held_reason=None,
                )

    # --- service.ports.Store ---

    async def migrate(self) -> bool:
        return True

    async def ping(self) -> None:
        await asyncio.sleep(0)

    async def close(self) -> None:
        pass

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryUnitOfWork]:
        async with self._write("transaction") as staged:
            uow = MemoryUnitOfWork(self, staged, _utc_required(self.wall_clock()))
            try:
                yield uow
            finally:
                uow._over = True

    async def load_offsets(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        wanted = list(partitions)
        if not wanted:
            return {}
        async with self._read() as t:
            return {p: t.offsets[p] for p in wanted if p in t.offsets}

    # --- dispatch ---

    async def claim_due(
        self, owner: str, now: datetime, lease: timedelta, limit: int
    ) -> list[ClaimedFollowup]:
        self._check_text("scheduled_followups.lease_owner", owner, 128)
        async with self._write("claim_due") as t:
            due = sorted(
                (
                    row
                    for row in t.followups.values()
                    if row.status == Status.PENDING.value
                    and row.due_at <= now
                    and row.claimable(now)
                ),
                key=lambda row: (row.due_at, row.id),
            )[: max(limit, 0)]
            until = _utc_required(now + lease)
            claimed = []
            for row in due:
                t.followups[row.id] = replace(row, lease_owner=owner, lease_until=until)
                # As store.claim_due reads it: not "in flight" to the one who holds it.
                claimed.append(
                    ClaimedFollowup(
                        followup=replace(row, lease_until=None).followup(now),
                        retry_count=row.retry_count,
                    )
                )
        return claimed

    async def firing_facts(self, followups: Sequence[Followup]) -> FiringFacts:
        conv_ids = {f.conversation_id for f in followups if f.conversation_id}
        user_ids = {f.user_id for f in followups}
        async with self._read() as t:
            scores = {c: t.conversations[c].scores for c in conv_ids if c in t.conversations}
            users = [t.users[u] for u in user_ids if u in t.users]
            live = frozenset(
                b.user_id
                for b in t.bookings.values()
                if b.user_id in user_ids and b.confirmed_at is not None and b.cancelled_at is None
            )
            templates = {k: versions[-1] for k, versions in t.templates.items()}
        activity = {u.user_id: u.last_activity_at for u in users if u.last_activity_at}
        zones = {u.user_id: u.timezone for u in users if u.timezone}
        locales = {u.user_id: u.locale for u in users if u.locale}
        return FiringFacts(scores, activity, zones, live, locales, templates)

    async def mark_executed(self, owner: str, done: Sequence[Executed], now: datetime) -> int:
        if not done:
            return 0
        for d in done:
            self._check_text("scheduled_followups.template_id", d.template_id, 64)
            self._check_text("scheduled_followups.message_content", d.message)
            self._check_text("scheduled_followups.locale", d.locale, 35)
        marked: set[str] = set()
        async with self._write("mark_executed") as t:
            for d in done:
                row = t.followups.get(d.id)
                if row is None or d.id in marked:
                    continue
                if row.lease_owner == owner and row.status == Status.PENDING.value:
                    t.followups[d.id] = replace(
                        row,
                        status=Status.EXECUTED.value,
                        executed_at=_utc(now),
                        template_id=d.template_id,
                        message_content=d.message,
                        locale=d.locale,
                        template_version=d.template_version,
                        lease_owner=None,
                        lease_until=None,
                    )
                    marked.add(d.id)
        return len(marked)

    async def mark_expired(self, owner: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        n = 0
        async with self._write("mark_expired") as t:
            for id_ in dict.fromkeys(ids):
                row = t.followups.get(id_)
                if (
                    row is not None
                    and row.lease_owner == owner
                    and row.status == Status.PENDING.value
                ):
                    t.followups[id_] = replace(
                        row, status=Status.EXPIRED.value, lease_owner=None, lease_until=None
                    )
                    n += 1
        return n

    async def mark_publish_failed(
        self, owner: str, id_: str, error: str, retry_at: datetime | None, *, counts: bool = True
    ) -> None:
        error = error[:2000]
        self._check_text("scheduled_followups.error_message", error)
        async with self._write("mark_publish_failed") as t:
            row = t.followups.get(id_)
            if row is None or row.lease_owner != owner or row.status != Status.PENDING.value:
                return
            t.followups[id_] = replace(
                row,
                # Retries given, not attempts: the last failure (given up) adds none.
                retry_count=row.retry_count + (1 if counts and retry_at is not None else 0),
                error_message=error,
                lease_owner=None,
                lease_until=None,
                status=Status.FAILED.value if retry_at is None else row.status,
                due_at=row.due_at if retry_at is None else _utc_required(retry_at),
            )

    @asynccontextmanager
    async def send_gate(
        self,
        owner: str,
        user_ids: Sequence[str],
        ids: Sequence[str],
        now: datetime,
        since: datetime | None,
    ) -> AsyncIterator[SendGate]:
        """GATE_LOCK_USERS (seeding missing rows), GATE_SENDS, GATE_APPROVE, GATE_HOLD
        in one write: serialized with every other write, as the row locks serialize
        gates on the same users."""
        async with self._write("send_gate") as t:
            users = sorted(set(user_ids))
            for u in users:
                self._check_text("user_projection.user_id", u, 255)
                t.users.setdefault(u, UserState(u))
            zones = {u: tz for u in users if (tz := t.users[u].timezone)}
            sends: dict[str, list[datetime]] = {}
            if since is not None:
                _count_sends(t, set(users), set(ids), now, since, sends)

            async def approve(approved: Sequence[str], at: datetime) -> None:
                for id_ in approved:
                    row = t.followups.get(id_)
                    if row and row.lease_owner == owner and row.status == Status.PENDING.value:
                        t.followups[id_] = replace(row, approved_at=_utc(at), held_reason=None)

            async def hold(holds: Sequence[Hold]) -> None:
                for h in holds:
                    row = t.followups.get(h.id)
                    if row and row.lease_owner == owner and row.status == Status.PENDING.value:
                        t.followups[h.id] = replace(
                            row,
                            due_at=_utc_required(h.due_at),
                            held_reason=h.reason,
                            lease_owner=None,
                            lease_until=None,
                        )

            yield SendGate(zones, sends, approve, hold)

    async def next_due_at(self, now: datetime) -> datetime | None:
        async with self._read() as t:
            return min(
                (
                    row.due_at
                    for row in t.followups.values()
                    if row.status == Status.PENDING.value and row.claimable(now)
                ),
                default=None,
            )

    # --- periodic work ---

    @asynccontextmanager
    async def exclusive(self, job: str) -> AsyncIterator[bool]:
        """True for the one holder of the job's lock (an advisory lock per group and job)."""
        with self._connection():
            got = job not in self._exclusive
            if got:
                self._exclusive.add(job)
            try:
                yield got
            finally:
                if got:
                    self._exclusive.discard(job)

    async def inactive_without_reengagement(
        self, idle_since: datetime, after: str, limit: int
    ) -> list[str]:
        async with self._read() as t:
            covered: dict[str, list[FollowupRow]] = {}
            for row in t.followups.values():
                if row.trigger_type == TriggerType.RE_ENGAGEMENT.value:
                    covered.setdefault(row.user_id, []).append(row)
            found = [
                u.user_id
                for u in t.users.values()
                if u.last_activity_at is not None
                and u.last_activity_at <= idle_since
                and u.user_id > after
                and not any(
                    _blocks_sweep(f, u.last_activity_at) for f in covered.get(u.user_id, [])
                )
            ]
        return sorted(found)[: max(limit, 0)]

    async def delete_executed_before(self, cutoff: datetime, chunk: int = 10_000) -> int:
        async with self._write("delete_executed_before") as t:
            gone = [
                row.id
                for row in t.followups.values()
                if row.status == Status.EXECUTED.value
                and row.executed_at is not None
                and row.executed_at < cutoff
            ]
            for id_ in gone:
                del t.followups[id_]
        return len(gone)

    # --- message templates ---

    async def current_templates(self) -> list[StoredTemplate]:
        async with self._read() as t:
            return [t.templates[k][-1] for k in sorted(t.templates)]

    async def template_versions(self, template_id: str) -> list[StoredTemplate]:
        async with self._read() as t:
            return [
                v
                for key in sorted(k for k in t.templates if k[0] == template_id)
                for v in reversed(t.templates[key])
            ]

    async def put_template(
        self, template_id: str, locale: str, body: str, now: datetime
    ) -> tuple[StoredTemplate, bool]:
        self._check_text("message_templates.template_id", template_id, 64)
        self._check_text("message_templates.locale", locale, 35)
        self._check_text("message_templates.body", body)
        async with self._write("put_template") as t:
            versions = t.templates.setdefault((template_id, locale), [])
            if versions and versions[-1].body == body:
                return versions[-1], False
            added = StoredTemplate(template_id, locale, len(versions) + 1, body, _utc_required(now))
            versions.append(added)
            return added, True

    # --- operations ---

    async def list_followups(
        self,
        *,
        user_id: str | None,
        status: Status | None,
        trigger_type: TriggerType | None,
        limit: int,
    ) -> list[FollowupView]:
        async with self._read() as t:
            found = [
                row
                for row in t.followups.values()
                if (user_id is None or row.user_id == user_id)
                and (status is None or row.status == status.value)
                and (trigger_type is None or row.trigger_type == trigger_type.value)
            ]
        # ORDER BY created_at DESC, id: newest first
        found.sort(key=lambda row: row.id)
        found.sort(key=lambda row: row.created_at, reverse=True)
        return [view(row) for row in found[: max(limit, 0)]]

    async def get_followup(self, id_: str) -> FollowupView | None:
        async with self._read() as t:
            row = t.followups.get(id_)
        return view(row) if row is not None else None

    async def cancel_followup(self, id_: str, now: datetime) -> CancelResult:
        async with self._write("cancel_followup") as t:
            row = t.followups.get(id_)
            if row is None:
                return CancelResult.NOT_FOUND
            if row.status != Status.PENDING.value or not row.claimable(now):
                return CancelResult.NOT_PENDING
            # The lease owner, if any, stays: only the status and cancelled_at change.
            t.followups[id_] = replace(
                row, status=Status.CANCELLED.value, cancelled_at=_utc(now), cancelled_by=OPERATOR
            )
            return CancelResult.CANCELLED

    async def erase_user(self, user_id: str) -> dict[str, int]:
        async with self._write("erase_user") as t:
            # ERASE_USER, table by table in this order.
            return {
                "scheduled_followups": _delete_where_user(t.followups, user_id),
                "booking_projection": _delete_where_user(t.bookings, user_id),
                "conversation_emotions": _delete_where_user(t.conversations, user_id),
                "user_projection": _delete_where_user(t.users, user_id),
            }

    async def figures(self, midnight: datetime) -> Figures:
        async with self._read() as t:
            pending = sum(row.status == Status.PENDING.value for row in t.followups.values())
            today = sum(
                row.status == Status.EXECUTED.value
                and row.executed_at is not None
                and row.executed_at >= midnight
                for row in t.followups.values()
            )
        return Figures(pending, today)


class _HasUser(Protocol):
    @property
    def user_id(self) -> str: ...


_Row = TypeVar("_Row", bound=_HasUser)


def _delete_where_user(rows: MutableMapping[str, _Row], user_id: str) -> int:
    gone = [k for k, row in rows.items() if row.user_id == user_id]
    for k in gone:
        del rows[k]
    return len(gone)


def _count_sends(
    t: _Tables,
    users: set[str],
    ids: set[str],
    now: datetime,
    since: datetime,
    into: dict[str, list[datetime]],
) -> None:
    """GATE_SENDS: executed since `since`, and approved under a live lease (not `ids`)."""
    for row in t.followups.values():
        if row.user_id not in users:
            continue
        at: datetime | None = None
        if row.status == Status.EXECUTED.value:
            at = row.executed_at
        elif (
            row.status == Status.PENDING.value
            and row.lease_until is not None
            and row.lease_until > now
            and row.id not in ids
        ):
            at = row.approved_at
        if at is not None and at >= since:
            into.setdefault(row.user_id, []).append(at)


def _blocks_sweep(f: FollowupRow, last_activity: datetime) -> bool:
    """INACTIVE_WITHOUT_REENGAGEMENT's NOT EXISTS: a pending re-engagement, or a
    closed one sent (or given up) for this activity or a later one."""
    if f.status == Status.PENDING.value:
        return True
    if f.status not in _CLOSED_FOR_SWEEP:
        return False
    basis = json.loads(f.trigger_data).get("last_activity")
    return basis is not None and datetime.fromisoformat(basis) >= last_activity


# --- Kafka stand-ins ----------------------------------------------------------------------


class PublishRefused(Exception):
    """The pretend broker answered and refused this one message."""


class BrokerUnreachable(ConnectionError):
    """The pretend broker does not answer at all."""


class MemoryDuePublisher:
    """Records what it published (`published`) and every attempt (`attempts`).

    `fail(followup_id, times)` refuses one follow-up's messages (`times` attempts,
    or always); `reachable = False` fails everything, as an outage would, and
    `broker_reachable()` says so. With `gate` set, each publish waits for it
    (`waiting` tells when one is blocked there), to hold a dispatcher mid-send.
    """

    def __init__(self) -> None:
        self.published: list[DueMessage] = []
        self.attempts: list[DueMessage] = []
        self.reachable = True
        self.gate: asyncio.Event | None = None
        self.waiting = asyncio.Event()
        self._failing: dict[str, int | None] = {}

    def fail(self, followup_id: str, times: int | None = None) -> None:
        self._failing[followup_id] = times

    def heal(self, followup_id: str) -> None:
        self._failing.pop(followup_id, None)

    @property
    def published_ids(self) -> list[str]:
        return [str(m.record["followup_id"]) for m in self.published]

    def _refused(self, followup_id: str) -> bool:
        if followup_id not in self._failing:
            return False
        left = self._failing[followup_id]
        if left is not None:
            if left <= 1:
                del self._failing[followup_id]
            else:
                self._failing[followup_id] = left - 1
        return True

    async def publish(self, messages: Sequence[DueMessage]) -> list[BaseException | None]:
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        await asyncio.sleep(0)
        results: list[BaseException | None] = []
        for m in messages:
            self.attempts.append(m)
            fid = str(m.record["followup_id"])
            if not self.reachable:
                results.append(BrokerUnreachable("no broker answers"))
            elif self._refused(fid):
                results.append(PublishRefused(f"refused {fid}"))
            else:
                self.published.append(m)
                results.append(None)
        return results

    async def broker_reachable(self) -> bool:
        return self.reachable


class MemoryDeadLetters:
    """Records dead letters (`sent`); `reachable = False` makes `send` raise Unavailable."""

    def __init__(self) -> None:
        self.sent: list[DeadLetter] = []
        self.reachable = True

    async def send(self, dead: Sequence[DeadLetter]) -> None:
        await asyncio.sleep(0)
        if not self.reachable:
            raise Unavailable("the dead-letter topic is unreachable (memory)", resource="kafka")
        self.sent.extend(dead)


@dataclass
class Tally:
    """Telemetry that counts, for assertions."""

    batches: int = 0
    events: int = 0
    outcome: BatchOutcome = field(default_factory=BatchOutcome)
    expirations: Counter[TriggerType] = field(default_factory=Counter)
    executions: Counter[tuple[TriggerType, str]] = field(default_factory=Counter)
    lateness: list[float] = field(default_factory=list)
    publish_errors: Counter[TriggerType] = field(default_factory=Counter)
    gave_up: Counter[TriggerType] = field(default_factory=Counter)
    holds: Counter[str] = field(default_factory=Counter)  # by reason
    held_expirations: Counter[str] = field(default_factory=Counter)

    def batch_applied(self, outcome: BatchOutcome, events: int) -> None:
        self.batches += 1
        self.events += events
        self.outcome.add(outcome)

    def expired(self, trigger: TriggerType) -> None:
        self.expirations[trigger] += 1

    def executed(self, trigger: TriggerType, template_id: str, lateness: float) -> None:
        self.executions[(trigger, template_id)] += 1
        self.lateness.append(lateness)

    def held(self, trigger: TriggerType, reason: str, *, expired: bool) -> None:
        if expired:
            self.held_expirations[reason] += 1
            self.expirations[trigger] += 1
        else:
            self.holds[reason] += 1

    def publish_error(self, trigger: TriggerType, *, gave_up: bool) -> None:
        self.publish_errors[trigger] += 1
        if gave_up:
            self.gave_up[trigger] += 1
