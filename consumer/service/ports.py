"""What the use cases need from the outside world, as Protocols, and the records
that cross those boundaries.

The adapters implement these: `consumer.adapters.postgres` and
`consumer.adapters.kafka` for real, `consumer.adapters.memory` for tests. The
service layer imports nothing else from outside the domain.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from consumer.domain.model import Followup, Score, Status, TriggerType
from consumer.domain.template_text import StoredTemplate
from consumer.domain.working_set import WorkingSet

Headers = Sequence[tuple[str, bytes | None]]  # Kafka header values may be null
Partition = tuple[str, int]  # (topic, partition)


# --- failures the adapters translate theirs into ---------------------------------------


class Unavailable(Exception):
    """The database or the broker did not answer: wait and try again; nothing is lost.

    `resource` names what did not answer ("database", "kafka") when the adapter
    knows; the message is then "<resource>: <reason>".
    """

    def __init__(self, reason: str, *, resource: str | None = None) -> None:
        super().__init__(f"{resource}: {reason}" if resource else reason)
        self.resource = resource
        self.reason = reason


class Conflict(Exception):
    """A concurrent transaction got in the way (deadlock, serialization): run it again."""


class ValueRefused(Exception):
    """The store refused a value (the input's fault, not the store's): isolate it."""


class BadValue(Exception):
    """A value that can never become an event: it goes to the dead-letter topic.

    `error_type` is machine-readable (a DLQ header), `message` names the field.
    """

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


# --- records ----------------------------------------------------------------------------


class InRecord(Protocol):
    """What ingest needs of a consumed record (aiokafka's ConsumerRecord fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Headers: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: InRecord
    error_type: str
    message: str
    # More `dlq.*` headers, after ours: what the record held that its headers cannot
    # carry as they came (a header key that is not UTF-8, kept as a header value).
    extra: Headers = ()

    def headers(self) -> list[tuple[str, bytes | None]]:
        kept = [(k, v) for k, v in self.record.headers if not k.startswith("dlq.")]
        return [
            *kept,
            ("dlq.original.topic", self.record.topic.encode()),
            ("dlq.original.partition", str(self.record.partition).encode()),
            ("dlq.original.offset", str(self.record.offset).encode()),
            ("dlq.error.type", self.error_type.encode()),
            ("dlq.error.message", self.message.encode("utf-8", "replace")[:4000]),
            *self.extra,
        ]


@dataclass(frozen=True, slots=True)
class DueMessage:
    key: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BatchKeys:
    """The natural keys one batch of events touches.

    `booking_user_ids`: users with a booking event in the batch; the store loads
    their bookings and post-event follow-ups (and those of the users the batch's
    bookings belong to), which the rules recompute chain by chain: at least every
    chain within a day of `booking_dates` (user, event date of a confirmation) or
    of the stored date of a booking in `booking_refs` (user, booking id).
    """

    user_ids: frozenset[str]
    booking_ids: frozenset[str] = frozenset()
    conversation_ids: frozenset[str] = frozenset()
    booking_user_ids: frozenset[str] = frozenset()
    booking_dates: frozenset[tuple[str, datetime]] = frozenset()
    booking_refs: frozenset[tuple[str, str]] = frozenset()


@dataclass
class BatchOutcome:
    """What one ingest batch did, for metrics and the dispatcher's wake-up."""

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
class ClaimedFollowup:
    followup: Followup
    retry_count: int


@dataclass(frozen=True, slots=True)
class FiringFacts:
    """Projections a batch of due follow-ups needs to choose and fill templates."""

    scores: Mapping[str, tuple[Score, ...]]  # by conversation: its history, newest first
    last_activity: Mapping[str, datetime]
    timezones: Mapping[str, str]
    users_with_live_booking: frozenset[str]
    locales: Mapping[str, str] = field(default_factory=dict)
    # The current version of every (template id, locale), read with the rest: an
    # edit committed before this read is what these follow-ups get.
    templates: Mapping[tuple[str, str], StoredTemplate] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Executed:
    id: str
    template_id: str
    message: str
    locale: str | None = None  # of the template version rendered
    template_version: int | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """A claimed follow-up released to go out later (quiet hours, daily cap)."""

    id: str
    due_at: datetime
    reason: str


@dataclass
class SendGate:
    """The send gate's transaction: the users' rows locked, their zones, and the
    sends that count against the daily cap (since the `since` given)."""

    zones: Mapping[str, str]
    sends: Mapping[str, Sequence[datetime]]
    approve: Callable[[Sequence[str], datetime], Awaitable[None]]
    hold: Callable[[Sequence[Hold]], Awaitable[None]]


@dataclass(frozen=True)
class FollowupView:
    """A stored follow-up as an operator sees it."""

    id: str
    user_id: str
    conversation_id: str
    trigger_type: str
    status: str
    scheduled_at: datetime
    executed_at: datetime | None
    cancelled_at: datetime | None
    created_at: datetime
    template_id: str | None
    message_content: str | None
    error_message: str | None
    retry_count: int
    trigger_data: dict[str, Any]
    # Pending: when the dispatcher will next try it (scheduled_at, or later: held by
    # quiet hours or the daily cap, or a retry); `held_reason` says which hold.
    sends_at: datetime | None = None
    held_reason: str | None = None
    # Executed: the locale and version of the template its message came from.
    locale: str | None = None
    template_version: int | None = None

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out


class CancelResult(StrEnum):
    CANCELLED = "cancelled"
    NOT_FOUND = "not_found"
    NOT_PENDING = "not_pending"


@dataclass(frozen=True, slots=True)
class Figures:
    """The old scheduler's health figures."""

    pending_jobs: int
    executed_today: int


# --- the store --------------------------------------------------------------------------


class UnitOfWork(Protocol):
    """One transaction over the projections: lock, load, decide in memory, save.

    `lock_and_load` loads what `domain.working_set` says the rules rely on, and
    serializes batches that touch the same users; `save` writes back what the
    working set changed and deletes the follow-ups it removed (never one that is
    `Followup.is_fixed`).
    """

    async def lock_offsets(self, partitions: Iterable[Partition]) -> dict[Partition, int]: ...
    async def lock_and_load(self, keys: BatchKeys, now: datetime) -> WorkingSet: ...
    async def save(self, ws: WorkingSet, offsets: Mapping[Partition, int]) -> None: ...


class IngestStore(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[UnitOfWork]: ...
    async def load_offsets(self, partitions: Iterable[Partition]) -> dict[Partition, int]: ...


class DispatchStore(Protocol):
    async def claim_due(
        self, owner: str, now: datetime, lease: timedelta, limit: int
    ) -> list[ClaimedFollowup]: ...
    async def firing_facts(self, followups: Sequence[Followup]) -> FiringFacts: ...
    async def mark_executed(self, owner: str, done: Sequence[Executed], now: datetime) -> int: ...
    async def mark_expired(self, owner: str, ids: Sequence[str]) -> int: ...
    async def mark_publish_failed(
        self, owner: str, id_: str, error: str, retry_at: datetime | None, *, counts: bool = True
    ) -> None: ...
    async def next_due_at(self, now: datetime) -> datetime | None: ...
    def send_gate(
        self,
        owner: str,
        user_ids: Sequence[str],
        ids: Sequence[str],
        now: datetime,
        since: datetime | None,
    ) -> AbstractAsyncContextManager[SendGate]:
        """One transaction: lock the users' rows (created if missing), read their
        zones and, unless `since` is None, the sends counted against the cap
        (executed since `since`, and approved under a live lease, except `ids`).
        `approve` marks our claimed follow-ups as being sent (they count from now
        on), `hold` releases ours with a later `due_at` and the reason."""
        ...


class PeriodicStore(Protocol):
    def exclusive(self, job: str) -> AbstractAsyncContextManager[bool]: ...
    async def inactive_without_reengagement(
        self, idle_since: datetime, after: str, limit: int
    ) -> list[str]: ...
    async def delete_executed_before(self, cutoff: datetime) -> int: ...


class OperationsStore(Protocol):
    async def list_followups(
        self,
        *,
        user_id: str | None,
        status: Status | None,
        trigger_type: TriggerType | None,
        limit: int,
    ) -> list[FollowupView]: ...
    async def get_followup(self, id_: str) -> FollowupView | None: ...
    async def cancel_followup(self, id_: str, now: datetime) -> CancelResult: ...
    async def erase_user(self, user_id: str) -> dict[str, int]: ...
    async def figures(self, midnight: datetime) -> Figures: ...


class TemplateStore(Protocol):
    """The message templates: versions per (template id, locale), never updated."""

    async def current_templates(self) -> list[StoredTemplate]:
        """The newest version of every (template id, locale), by id then locale."""
        ...

    async def template_versions(self, template_id: str) -> list[StoredTemplate]:
        """Every version of one template, by locale, newest first."""
        ...

    async def put_template(
        self, template_id: str, locale: str, body: str, now: datetime
    ) -> tuple[StoredTemplate, bool]:
        """Add a version (the next number for that locale) unless the current one has
        this body already; then that one. True when a version was added."""
        ...


class Store(IngestStore, DispatchStore, PeriodicStore, OperationsStore, TemplateStore, Protocol):
    """Everything the service keeps: one PostgreSQL database (or memory, in tests)."""

    async def migrate(self) -> bool:
        """Bring the schema up to date; False when not permitted (someone else's job)."""
        ...

    async def ping(self) -> None:
        """Raises Unavailable unless the database answers (the schema may be missing)."""
        ...

    async def close(self) -> None: ...


# --- Kafka and the rest -------------------------------------------------------------------


class DeadLetterSink(Protocol):
    async def send(self, dead: Sequence[DeadLetter]) -> None:
        """Publish and wait for every one; raises Unavailable when the broker is away."""
        ...


class DuePublisher(Protocol):
    async def publish(self, messages: Sequence[DueMessage]) -> list[BaseException | None]:
        """Publish all; per message, None when the broker acknowledged it."""
        ...

    async def broker_reachable(self) -> bool:
        """Whether the cluster answers at all (an outage is not the follow-up's fault)."""
        ...


class Cipher(Protocol):
    """Messages at rest: sealed when a key is configured, plain otherwise."""

    def seal(self, text: str) -> str: ...
    def open(self, stored: str) -> str: ...


class Telemetry(Protocol):
    """What the loops count (Prometheus in production, nothing or a tally in tests)."""

    def batch_applied(self, outcome: BatchOutcome, events: int) -> None: ...
    def expired(self, trigger: TriggerType) -> None: ...
    def executed(self, trigger: TriggerType, template_id: str, lateness: float) -> None: ...
    def publish_error(self, trigger: TriggerType, *, gave_up: bool) -> None: ...
    def held(self, trigger: TriggerType, reason: str, *, expired: bool) -> None: ...


class NoTelemetry:
    """Counts nothing."""

    def batch_applied(self, outcome: BatchOutcome, events: int) -> None:
        pass

    def expired(self, trigger: TriggerType) -> None:
        pass

    def executed(self, trigger: TriggerType, template_id: str, lateness: float) -> None:
        pass

    def publish_error(self, trigger: TriggerType, *, gave_up: bool) -> None:
        pass

    def held(self, trigger: TriggerType, reason: str, *, expired: bool) -> None:
        pass
