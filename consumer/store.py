"""The one place that talks to PostgreSQL.

Ingest: `IngestTransaction` locks and loads the rows a batch touches, then writes
back what changed and the consumer offsets, all in one transaction, with
set-based statements (arrays through `unnest`), never one round trip per event.

Dispatch: claims due follow-ups with `FOR UPDATE SKIP LOCKED` and a lease, and
records the outcome only while it still holds that lease.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from consumer.model import (
    Booking,
    Conversation,
    Followup,
    Score,
    Status,
    TriggerType,
    UserState,
    reengagement_id,
)
from consumer.working_set import WorkingSet

_MIGRATION_LOCK = 0x5F011_0C0


def create_engine(database_url: str, *, pool_size: int = 5) -> AsyncEngine:
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # Fail fast instead of hanging a batch when the server is gone.
        connect_args={"timeout": 10, "command_timeout": 60},
    )


async def migrate(engine: AsyncEngine) -> None:
    """Create or update the schema; safe to run any number of times, concurrently."""
    ddl = resources.files("consumer").joinpath("sql/schema.sql").read_text()
    statements = [s.strip() for s in _strip_comments(ddl).split(";") if s.strip()]
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        for statement in statements:
            await conn.exec_driver_sql(statement)


def _strip_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())


# --- row <-> value ------------------------------------------------------------------


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def _dt(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def trigger_data(f: Followup) -> dict[str, Any]:
    """The JSONB `trigger_data` column: what caused the follow-up."""
    data: dict[str, Any] = {}
    if f.booking_ids:
        data["booking_id"] = f.booking_ids[0]
        data["booking_ids"] = list(f.booking_ids)
        data["active_booking_ids"] = list(f.active_booking_ids)
        data["booking_dates"] = {k: d.isoformat() for k, d in f.booking_dates}
    if f.event_date is not None:
        data["event_date"] = f.event_date.isoformat()
    if f.activity_basis is not None:
        data["last_activity"] = f.activity_basis.isoformat()
    if f.custom_message is not None:
        data["custom_message"] = f.custom_message
    return data


FOLLOWUP_COLUMNS = (
    "id, user_id, conversation_id, trigger_type, scheduled_at, status, "
    "trigger_data::text AS trigger_data, cancelled_at, lease_until, retry_count"
)


def followup_from_row(row: Mapping[Any, Any], now: datetime) -> Followup:
    data = json.loads(row["trigger_data"]) if row["trigger_data"] else {}
    lease_until = row["lease_until"]
    return Followup(
        id=row["id"],
        user_id=row["user_id"],
        conversation_id=row["conversation_id"],
        trigger_type=TriggerType(row["trigger_type"]),
        scheduled_at=row["scheduled_at"],
        status=Status(row["status"]),
        booking_ids=tuple(data.get("booking_ids", ())),
        active_booking_ids=tuple(data.get("active_booking_ids", ())),
        booking_dates=tuple(
            sorted((k, datetime.fromisoformat(v)) for k, v in data.get("booking_dates", {}).items())
        ),
        event_date=_dt(data.get("event_date")),
        activity_basis=_dt(data.get("last_activity")),
        custom_message=data.get("custom_message"),
        cancelled_at=row["cancelled_at"],
        in_flight=lease_until is not None and lease_until > now,
    )


def _history(raw: str | None) -> tuple[Score, ...]:
    if not raw:
        return ()
    return tuple(Score(m, datetime.fromisoformat(t), float(v)) for m, t, v in json.loads(raw))


def _history_json(scores: Sequence[Score]) -> str:
    return json.dumps([[s.message_id, s.scored_at.isoformat(), s.value] for s in scores])


# --- ingest -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchKeys:
    """The natural keys one batch of events touches."""

    user_ids: frozenset[str]
    booking_ids: frozenset[str]
    conversation_ids: frozenset[str]


class IngestTransaction:
    """One batch: lock, load, save, offsets; commit or nothing."""

    def __init__(self, conn: AsyncConnection, group_id: str) -> None:
        self.conn = conn
        self.group_id = group_id

    async def lock_and_load(self, keys: BatchKeys, now: datetime) -> WorkingSet:
        # Rows are created first so that every key has a row to lock; locks are
        # taken in one global order (users, conversations, bookings, each sorted)
        # so concurrent instances cannot deadlock on them.
        users = sorted(keys.user_ids)
        convs = sorted(keys.conversation_ids)
        bookings = sorted(keys.booking_ids)
        user_rows = await self._lock_rows(
            "user_projection",
            "user_id",
            users,
            "user_id, last_activity_at, timezone, timezone_at, reengagement_cycle, "
            "refused_followups",
        )
        conv_rows = await self._lock_rows(
            "conversation_emotions",
            "conversation_id",
            convs,
            "conversation_id, user_id, history::text AS history, checkin_id",
            seed_user=True,
        )
        booking_rows = await self._lock_rows(
            "booking_projection",
            "booking_id",
            bookings,
            "booking_id, user_id, event_date, conversation_id, timezone, confirmed_at, "
            "confirm_event_id, cancelled_at, cancel_reason, followup_id",
            seed_user=True,
        )
        ws = WorkingSet.of(
            users=[_user(r) for r in user_rows],
            bookings=[_booking(r) for r in booking_rows if r["user_id"] != ""],
            conversations=[_conversation(r) for r in conv_rows if r["user_id"] != ""],
        )
        wanted = {b.followup_id for b in ws.bookings.values() if b.followup_id}
        wanted |= {c.checkin_id for c in ws.conversations.values() if c.checkin_id}
        wanted |= {
            reengagement_id(u.user_id, u.reengagement_cycle)
            for u in ws.users.values()
            if u.reengagement_cycle is not None
        }
        result = await self.conn.execute(
            text(
                # Written as a join through unnest: `user_id = ANY(...) OR id = ANY(...)`
                # flips to a generic plan that scans every pending row per user.
                f"SELECT {FOLLOWUP_COLUMNS} FROM scheduled_followups WHERE id IN ("
                "  SELECT p.id FROM unnest(CAST(:users AS varchar[])) AS u(user_id) "
                "  JOIN scheduled_followups AS p "
                "    ON p.user_id = u.user_id AND p.status = 'pending' "
                "  UNION SELECT unnest(CAST(:ids AS varchar[]))) "
                "ORDER BY id FOR UPDATE"
            ),
            {"users": users, "ids": sorted(wanted)},
        )
        ws.add_loaded(followup_from_row(row, now) for row in result.mappings())
        return ws

    async def _lock_rows(
        self, table: str, key: str, keys: list[str], columns: str, *, seed_user: bool = False
    ) -> Sequence[Mapping[Any, Any]]:
        if not keys:
            return []
        # Placeholder rows; a user_id of '' marks "not seen yet" where one is required.
        extra_col, extra_val = (", user_id", ", ''") if seed_user else ("", "")
        await self.conn.execute(
            text(
                f"INSERT INTO {table} ({key}{extra_col}) "
                f"SELECT k{extra_val} FROM unnest(CAST(:keys AS varchar[])) AS k ORDER BY k "
                "ON CONFLICT DO NOTHING"
            ),
            {"keys": keys},
        )
        result = await self.conn.execute(
            text(
                f"SELECT {columns} FROM {table} WHERE {key} = ANY(CAST(:keys AS varchar[])) "
                f"ORDER BY {key} FOR UPDATE"
            ),
            {"keys": keys},
        )
        return list(result.mappings())

    async def lock_offsets(
        self, partitions: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        wanted = sorted(partitions)
        result = await self.conn.execute(
            text(
                "SELECT topic, partition, next_offset FROM consumer_offsets "
                "WHERE group_id = :group AND (topic, partition) IN (SELECT * FROM "
                "unnest(CAST(:topics AS varchar[]), CAST(:parts AS integer[]))) "
                "ORDER BY topic, partition FOR UPDATE"
            ),
            {
                "group": self.group_id,
                "topics": [t for t, _ in wanted],
                "parts": [p for _, p in wanted],
            },
        )
        return {(r.topic, r.partition): r.next_offset for r in result}

    async def save(self, ws: WorkingSet, offsets: Mapping[tuple[str, int], int]) -> None:
        users, bookings, convs, followups = ws.changed()
        if users:
            await self.conn.execute(
                text(
                    "UPDATE user_projection AS u SET last_activity_at = v.last_activity_at, "
                    "timezone = v.timezone, timezone_at = v.timezone_at, "
                    "reengagement_cycle = v.cycle, refused_followups = v.refused, "
                    "updated_at = now() "
                    "FROM unnest(CAST(:ids AS varchar[]), CAST(:act AS timestamptz[]), "
                    "CAST(:tz AS varchar[]), CAST(:tz_at AS timestamptz[]), "
                    "CAST(:cycle AS integer[]), CAST(:refused AS integer[])) "
                    "AS v(user_id, last_activity_at, timezone, timezone_at, cycle, refused) "
                    "WHERE u.user_id = v.user_id"
                ),
                {
                    "ids": [u.user_id for u in users],
                    "act": [u.last_activity_at for u in users],
                    "tz": [u.timezone for u in users],
                    "tz_at": [u.timezone_at for u in users],
                    "cycle": [u.reengagement_cycle for u in users],
                    "refused": [u.refused_followups for u in users],
                },
            )
        if convs:
            await self.conn.execute(
                text(
                    "UPDATE conversation_emotions AS c SET user_id = v.user_id, "
                    "history = v.history::jsonb, checkin_id = v.checkin_id, updated_at = now() "
                    "FROM unnest(CAST(:ids AS varchar[]), CAST(:users AS varchar[]), "
                    "CAST(:history AS text[]), CAST(:checkin AS varchar[])) "
                    "AS v(conversation_id, user_id, history, checkin_id) "
                    "WHERE c.conversation_id = v.conversation_id"
                ),
                {
                    "ids": [c.conversation_id for c in convs],
                    "users": [c.user_id for c in convs],
                    "history": [_history_json(c.scores) for c in convs],
                    "checkin": [c.checkin_id for c in convs],
                },
            )
        if bookings:
            await self.conn.execute(
                text(
                    "UPDATE booking_projection AS b SET user_id = v.user_id, "
                    "event_date = v.event_date, conversation_id = v.conversation_id, "
                    "timezone = v.timezone, confirmed_at = v.confirmed_at, "
                    "confirm_event_id = v.confirm_event_id, cancelled_at = v.cancelled_at, "
                    "cancel_reason = v.cancel_reason, followup_id = v.followup_id, "
                    "updated_at = now() "
                    "FROM unnest(CAST(:ids AS varchar[]), CAST(:users AS varchar[]), "
                    "CAST(:event_date AS timestamptz[]), CAST(:conv AS varchar[]), "
                    "CAST(:tz AS varchar[]), CAST(:confirmed AS timestamptz[]), "
                    "CAST(:confirm_event AS varchar[]), CAST(:cancelled AS timestamptz[]), "
                    "CAST(:reason AS text[]), CAST(:followup AS varchar[])) "
                    "AS v(booking_id, user_id, event_date, conversation_id, timezone, "
                    "confirmed_at, confirm_event_id, cancelled_at, cancel_reason, followup_id) "
                    "WHERE b.booking_id = v.booking_id"
                ),
                {
                    "ids": [b.booking_id for b in bookings],
                    "users": [b.user_id for b in bookings],
                    "event_date": [b.event_date for b in bookings],
                    "conv": [b.conversation_id for b in bookings],
                    "tz": [b.timezone for b in bookings],
                    "confirmed": [b.confirmed_at for b in bookings],
                    "confirm_event": [b.confirm_event_id for b in bookings],
                    "cancelled": [b.cancelled_at for b in bookings],
                    "reason": [b.cancel_reason for b in bookings],
                    "followup": [b.followup_id for b in bookings],
                },
            )
        if followups:
            await upsert_followups(self.conn, followups)
        if offsets:
            await self.conn.execute(
                text(
                    "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) "
                    "SELECT :group, t, p, o FROM unnest(CAST(:topics AS varchar[]), "
                    "CAST(:parts AS integer[]), CAST(:offs AS bigint[])) AS v(t, p, o) "
                    "ON CONFLICT (group_id, topic, partition) DO UPDATE SET "
                    "next_offset = GREATEST(consumer_offsets.next_offset, "
                    "EXCLUDED.next_offset), updated_at = now()"
                ),
                {
                    "group": self.group_id,
                    "topics": [t for t, _ in offsets],
                    "parts": [p for _, p in offsets],
                    "offs": list(offsets.values()),
                },
            )


async def upsert_followups(conn: AsyncConnection, followups: Sequence[Followup]) -> None:
    """Insert new follow-ups and move/cancel open ones; closed rows are never reopened.

    The WHERE guard keeps an executed (or failed, cancelled) row as it is even if
    a stale decision reaches it: only pending and expired rows change here.
    """
    await conn.execute(
        text(
            "INSERT INTO scheduled_followups (id, user_id, conversation_id, trigger_type, "
            "trigger_data, scheduled_at, due_at, status, cancelled_at) "
            "SELECT id, user_id, conversation_id, trigger_type, data::jsonb, at, at, status, "
            "cancelled_at FROM unnest(CAST(:ids AS varchar[]), CAST(:users AS varchar[]), "
            "CAST(:convs AS varchar[]), CAST(:types AS varchar[]), CAST(:data AS text[]), "
            "CAST(:at AS timestamptz[]), CAST(:status AS varchar[]), "
            "CAST(:cancelled AS timestamptz[])) "
            "AS v(id, user_id, conversation_id, trigger_type, data, at, status, cancelled_at) "
            "ON CONFLICT (id) DO UPDATE SET conversation_id = EXCLUDED.conversation_id, "
            "trigger_data = EXCLUDED.trigger_data, scheduled_at = EXCLUDED.scheduled_at, "
            "due_at = EXCLUDED.due_at, status = EXCLUDED.status, "
            "cancelled_at = EXCLUDED.cancelled_at, updated_at = now() "
            "WHERE scheduled_followups.status IN ('pending', 'expired') "
            "AND scheduled_followups.lease_owner IS NULL"
        ),
        {
            "ids": [f.id for f in followups],
            "users": [f.user_id for f in followups],
            "convs": [f.conversation_id for f in followups],
            "types": [f.trigger_type.value for f in followups],
            "data": [json.dumps(trigger_data(f)) for f in followups],
            "at": [f.scheduled_at for f in followups],
            "status": [f.status.value for f in followups],
            "cancelled": [f.cancelled_at for f in followups],
        },
    )


def _user(row: Mapping[Any, Any]) -> UserState:
    return UserState(
        user_id=row["user_id"],
        last_activity_at=row["last_activity_at"],
        timezone=row["timezone"],
        timezone_at=row["timezone_at"],
        reengagement_cycle=row["reengagement_cycle"],
        refused_followups=row["refused_followups"],
    )


def _booking(row: Mapping[Any, Any]) -> Booking:
    return Booking(
        booking_id=row["booking_id"],
        user_id=row["user_id"],
        event_date=row["event_date"],
        conversation_id=row["conversation_id"],
        timezone=row["timezone"],
        confirmed_at=row["confirmed_at"],
        confirm_event_id=row["confirm_event_id"],
        cancelled_at=row["cancelled_at"],
        cancel_reason=row["cancel_reason"],
        followup_id=row["followup_id"],
    )


def _conversation(row: Mapping[Any, Any]) -> Conversation:
    return Conversation(
        conversation_id=row["conversation_id"],
        user_id=row["user_id"],
        scores=_history(row["history"]),
        checkin_id=row["checkin_id"],
    )


# --- the store ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimedFollowup:
    followup: Followup
    retry_count: int


@dataclass(frozen=True, slots=True)
class FiringFacts:
    """Projections a batch of due follow-ups needs to choose and fill templates."""

    scores: Mapping[str, tuple[Score, ...]]
    last_activity: Mapping[str, datetime]
    timezones: Mapping[str, str]
    users_with_live_booking: frozenset[str]


@dataclass(frozen=True, slots=True)
class Executed:
    id: str
    template_id: str
    message: str


class Store:
    def __init__(self, engine: AsyncEngine, group_id: str) -> None:
        self.engine = engine
        self.group_id = group_id

    @asynccontextmanager
    async def ingest_transaction(self) -> AsyncIterator[IngestTransaction]:
        async with self.engine.begin() as conn:
            yield IngestTransaction(conn, self.group_id)

    async def load_offsets(
        self, partitions: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        wanted = list(partitions)
        if not wanted:
            return {}
        async with self.engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT topic, partition, next_offset FROM consumer_offsets "
                    "WHERE group_id = :group AND (topic, partition) IN "
                    "(SELECT * FROM unnest(CAST(:topics AS varchar[]), CAST(:parts AS integer[])))"
                ),
                {
                    "group": self.group_id,
                    "topics": [t for t, _ in wanted],
                    "parts": [p for _, p in wanted],
                },
            )
            return {(r.topic, r.partition): r.next_offset for r in result}

    # --- dispatch ---

    async def claim_due(
        self, owner: str, now: datetime, lease: timedelta, limit: int
    ) -> list[ClaimedFollowup]:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                text(
                    "WITH due AS (SELECT id FROM scheduled_followups "
                    "  WHERE status = 'pending' AND due_at <= :now "
                    "  AND (lease_until IS NULL OR lease_until < :now) "
                    "  ORDER BY due_at LIMIT :limit FOR UPDATE SKIP LOCKED) "
                    "UPDATE scheduled_followups AS f SET lease_owner = :owner, "
                    "lease_until = :until FROM due WHERE f.id = due.id "
                    f"RETURNING {', '.join('f.' + c.strip() for c in FOLLOWUP_COLUMNS.split(','))}"
                ),
                {"now": now, "limit": limit, "owner": owner, "until": now + lease},
            )
            rows = list(result.mappings())
        return [
            ClaimedFollowup(
                followup=followup_from_row({**row, "lease_until": None}, now),
                retry_count=row["retry_count"],
            )
            for row in rows
        ]

    async def firing_facts(self, followups: Sequence[Followup]) -> FiringFacts:
        conv_ids = sorted({f.conversation_id for f in followups if f.conversation_id})
        user_ids = sorted({f.user_id for f in followups})
        async with self.engine.connect() as conn:
            convs = await conn.execute(
                text(
                    "SELECT conversation_id, history::text AS history FROM conversation_emotions "
                    "WHERE conversation_id = ANY(CAST(:ids AS varchar[]))"
                ),
                {"ids": conv_ids},
            )
            scores = {r.conversation_id: _history(r.history) for r in convs}
            users = await conn.execute(
                text(
                    "SELECT user_id, last_activity_at, timezone FROM user_projection "
                    "WHERE user_id = ANY(CAST(:ids AS varchar[]))"
                ),
                {"ids": user_ids},
            )
            rows = list(users)
            activity = {r.user_id: r.last_activity_at for r in rows if r.last_activity_at}
            zones = {r.user_id: r.timezone for r in rows if r.timezone}
            live = await conn.execute(
                text(
                    "SELECT DISTINCT user_id FROM booking_projection "
                    "WHERE user_id = ANY(CAST(:ids AS varchar[])) "
                    "AND confirmed_at IS NOT NULL AND cancelled_at IS NULL"
                ),
                {"ids": user_ids},
            )
            with_booking = frozenset(r.user_id for r in live)
        return FiringFacts(scores, activity, zones, with_booking)

    async def mark_executed(self, owner: str, done: Sequence[Executed], now: datetime) -> int:
        if not done:
            return 0
        async with self.engine.begin() as conn:
            result = await conn.execute(
                text(
                    "UPDATE scheduled_followups AS f SET status = 'executed', executed_at = :now, "
                    "template_id = v.template_id, message_content = v.message, "
                    "lease_owner = NULL, lease_until = NULL, updated_at = now() "
                    "FROM unnest(CAST(:ids AS varchar[]), CAST(:templates AS varchar[]), "
                    "CAST(:messages AS text[])) AS v(id, template_id, message) "
                    "WHERE f.id = v.id AND f.lease_owner = :owner AND f.status = 'pending'"
                ),
                {
                    "now": now,
                    "owner": owner,
                    "ids": [d.id for d in done],
                    "templates": [d.template_id for d in done],
                    "messages": [d.message for d in done],
                },
            )
            return int(result.rowcount)

    async def mark_expired(self, owner: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        async with self.engine.begin() as conn:
            result = await conn.execute(
                text(
                    "UPDATE scheduled_followups SET status = 'expired', lease_owner = NULL, "
                    "lease_until = NULL, updated_at = now() "
                    "WHERE id = ANY(CAST(:ids AS varchar[])) AND lease_owner = :owner "
                    "AND status = 'pending'"
                ),
                {"ids": list(ids), "owner": owner},
            )
            return int(result.rowcount)

    async def mark_publish_failed(
        self, owner: str, id_: str, error: str, retry_at: datetime | None, *, counts: bool = True
    ) -> None:
        """Record a failed attempt: retry at `retry_at`, or give up (`failed`) when None.

        `counts=False` (the broker itself was unreachable) releases the claim
        without using up one of the follow-up's retries.
        """
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE scheduled_followups SET "
                    "retry_count = retry_count + CAST(:step AS integer), "
                    "error_message = :error, lease_owner = NULL, lease_until = NULL, "
                    "status = CASE WHEN CAST(:retry_at AS timestamptz) IS NULL "
                    "  THEN 'failed' ELSE status END, "
                    "due_at = COALESCE(CAST(:retry_at AS timestamptz), due_at), "
                    "updated_at = now() "
                    "WHERE id = :id AND lease_owner = :owner AND status = 'pending'"
                ),
                {
                    "id": id_,
                    "owner": owner,
                    "error": error[:2000],
                    "retry_at": retry_at,
                    "step": 1 if counts else 0,
                },
            )

    async def next_due_at(self, now: datetime) -> datetime | None:
        """When the earliest claimable follow-up falls due (walks the partial index)."""
        async with self.engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT due_at FROM scheduled_followups WHERE status = 'pending' "
                    "AND (lease_until IS NULL OR lease_until < :now) ORDER BY due_at LIMIT 1"
                ),
                {"now": now},
            )
            value: datetime | None = result.scalar()
            return value


# --- periodic work ---------------------------------------------------------------------


class PeriodicQueries:
    """SQL of the periodic jobs (sweep, retention) and their cluster-wide lock."""

    def __init__(self, engine: AsyncEngine, group_id: str) -> None:
        self.engine = engine
        self.group_id = group_id

    @asynccontextmanager
    async def exclusive(self, job: str) -> AsyncIterator[bool]:
        """Yields True for the one instance that holds the job's advisory lock."""
        async with self.engine.connect() as conn:
            key = {"k": f"followup-consumer:{self.group_id}:{job}"}
            got = bool(
                (
                    await conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"), key)
                ).scalar()
            )
            try:
                yield got
            finally:
                if got:
                    await conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), key)
                await conn.commit()

    async def inactive_without_reengagement(
        self, idle_since: datetime, after: str, limit: int
    ) -> list[str]:
        """Users idle since `idle_since` with no pending re-engagement and none sent
        for their latest activity: candidates for the daily sweep, by user id."""
        async with self.engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT u.user_id FROM user_projection u "
                    "WHERE u.last_activity_at <= :idle_since AND u.user_id > :after "
                    "AND NOT EXISTS (SELECT 1 FROM scheduled_followups f "
                    "  WHERE f.user_id = u.user_id AND f.trigger_type = 're_engagement' "
                    "  AND (f.status = 'pending' OR (f.status IN ('executed', 'failed', "
                    "  'cancelled') AND (f.trigger_data->>'last_activity')::timestamptz "
                    "  >= u.last_activity_at))) "
                    "ORDER BY u.user_id LIMIT :limit"
                ),
                {"idle_since": idle_since, "after": after, "limit": limit},
            )
            return [r.user_id for r in result]

    async def delete_executed_before(self, cutoff: datetime, chunk: int = 10_000) -> int:
        """Retention: executed follow-ups older than the cutoff, in short transactions."""
        total = 0
        while True:
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    text(
                        "DELETE FROM scheduled_followups WHERE id IN ("
                        "SELECT id FROM scheduled_followups WHERE status = 'executed' "
                        "AND executed_at < :cutoff LIMIT :chunk)"
                    ),
                    {"cutoff": cutoff, "chunk": chunk},
                )
            total += result.rowcount
            if result.rowcount < chunk:
                return total
