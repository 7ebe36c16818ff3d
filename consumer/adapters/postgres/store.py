"""The PostgreSQL store: the only code that talks to the database (with `engine`,
which connects, and `schema`, which migrates it). Implements `service.ports.Store`.

Ingest: `PostgresUnitOfWork` locks and loads the rows a batch touches, then
writes back what changed and the consumer offsets, all in one transaction, with
set-based statements (arrays through `unnest`), never one round trip per event.

Dispatch: claims due follow-ups with `FOR UPDATE SKIP LOCKED` and a lease, and
records the outcome only while it still holds that lease.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consumer.adapters.postgres import rows, sql
from consumer.adapters.postgres.arrays import literal
from consumer.adapters.postgres.engine import create_engine
from consumer.adapters.postgres.errors import translated, translating
from consumer.adapters.postgres.schema import NotPermitted, SchemaAhead, migrate
from consumer.domain.model import (
    Booking,
    Followup,
    Status,
    TriggerType,
    post_event_id,
    reengagement_id,
)
from consumer.domain.rules import JOIN_WINDOW
from consumer.domain.template_text import StoredTemplate
from consumer.domain.working_set import WorkingSet
from consumer.service.ports import (
    BatchKeys,
    CancelResult,
    ClaimedFollowup,
    Executed,
    Figures,
    FiringFacts,
    FollowupView,
    Hold,
    Partition,
    SendGate,
)

log = logging.getLogger(__name__)

__all__ = ["PostgresStore", "PostgresUnitOfWork", "create_engine", "migrate", "upsert_followups"]


def _offset_params(group_id: str, partitions: Sequence[Partition]) -> dict[str, Any]:
    return {
        "group": group_id,
        "topics": [t for t, _ in partitions],
        "parts": [p for _, p in partitions],
    }


class PostgresUnitOfWork:
    """One batch: lock, load, save, offsets; commit or nothing."""

    def __init__(self, conn: AsyncConnection, group_id: str) -> None:
        self.conn = conn
        self.group_id = group_id
        self.now: datetime | None = None  # the batch's clock, from lock_and_load

    async def lock_and_load(self, keys: BatchKeys, now: datetime) -> WorkingSet:
        self.now = now
        # Every key gets a row to lock (`_lock_rows` creates the missing ones); locks
        # are taken in one order (users, conversations, bookings, each sorted, the
        # rows created in this batch after the others) so that instances do not
        # deadlock on them.
        #
        # The user's row is the lock on their bookings and post-event follow-ups:
        # every batch that changes a booking holds the row of the booking's user
        # (and of its previous user, when a confirmation moves it), so the
        # bookings loaded by user below cannot change under us.
        users = sorted(keys.user_ids | keys.booking_user_ids)
        user_rows = list(await self._lock_rows(sql.USERS, users))
        conv_rows = await self._lock_rows(sql.CONVERSATIONS, sorted(keys.conversation_ids))
        booking_rows = await self._lock_rows(sql.BOOKINGS, sorted(keys.booking_ids))
        owners = {r["user_id"] for r in booking_rows if r["user_id"] != ""}
        # Bookings whose stored user is not the one in the event (a producer's
        # mistake): their user's row too, out of order (a deadlock is retried).
        others = sorted(owners - set(users))
        if others:
            user_rows += await self._lock_rows(sql.USERS, others)
            users = sorted([*users, *others])
        bookings = {r["booking_id"]: rows.booking(r) for r in booking_rows if r["user_id"] != ""}
        scope: set[str] | None = None
        if keys.booking_user_ids or owners:
            for r in await self._touched_bookings(keys, bookings):
                bookings.setdefault(r["booking_id"], rows.booking(r))
            # The post-event rows of those chains: named after one of their bookings,
            # or linked from one (a sent one whose first booking moved since).
            scope = {post_event_id(b.user_id, b.booking_id) for b in bookings.values()}
            scope |= {b.followup_id for b in bookings.values() if b.followup_id}
        ws = WorkingSet.of(
            users=[rows.user(r) for r in user_rows],
            bookings=bookings.values(),
            conversations=[rows.conversation(r) for r in conv_rows if r["user_id"] != ""],
            post_event_scope=scope,
        )
        wanted = set(scope or ())
        wanted |= {c.checkin_id for c in ws.conversations.values() if c.checkin_id}
        wanted |= {
            reengagement_id(u.user_id, u.reengagement_cycle)
            for u in ws.users.values()
            if u.reengagement_cycle is not None
        }
        result = await self.conn.execute(
            sql.LOCK_FOLLOWUPS,
            {
                "users": literal(users),
                "convs": literal(sorted(keys.conversation_ids)),
                "ids": literal(sorted(wanted)),
            },
        )
        ws.add_loaded(rows.followup_from_row(row, now) for row in result.mappings())
        return ws

    async def _touched_bookings(
        self, keys: BatchKeys, named: Mapping[str, Booking]
    ) -> Sequence[Mapping[Any, Any]]:
        """The rows of the bookings the batch's booking events can change the
        follow-ups of: the chains within a day of their dates (`touched_chains`,
        computed by `sql.TOUCHED_BOOKINGS`). PostgreSQL still reads each such
        user's confirmed bookings (by index); Python gets only the chains'.

        Bookings not confirmed (cancelled before their confirmation came) are in no
        chain and never linked to a follow-up: the rules need only those the batch
        names, which are loaded by key. They are not few: a replay reads the
        cancellations (a third as many as the confirmations) ahead of them, and
        750,000 events into one of 2M, 16,655 bookings were cancelled and not yet
        confirmed, up to 15 of one user; each booking event loaded all of its user's."""
        dates: set[tuple[str, datetime]] = set(keys.booking_dates)
        for user_id, booking_id in keys.booking_refs:
            stored = named.get(booking_id)
            if stored is not None and stored.event_date is not None:
                # Where it is now: it leaves that chain (moved, or to another user).
                dates.add((user_id, stored.event_date))
                dates.add((stored.user_id, stored.event_date))
        if not dates:
            return []
        pairs = sorted(dates)
        result = await self.conn.execute(
            sql.TOUCHED_BOOKINGS,
            {
                "users": literal([u for u, _ in pairs]),
                "dates": [d for _, d in pairs],
                "window": JOIN_WINDOW,
            },
        )
        return list(result.mappings())

    async def _lock_rows(
        self, projection: sql.Projection, keys: list[str]
    ) -> Sequence[Mapping[Any, Any]]:
        """Lock the rows of `keys`, creating those not there yet.

        The rows there are locked first and only the missing ones are seeded: once
        a replay has seen its users, a batch creates none, and an `INSERT ... ON
        CONFLICT DO NOTHING` of every key cost PostgreSQL an index probe per key
        (the seed was 3-5% of a batch). The missing rows are locked after the
        others, out of the global order: two transactions can only meet there
        while a partition changes hands, and a deadlock is retried."""
        if not keys:
            return []
        lock = sql.LOCK[projection.table]
        found = list((await self.conn.execute(lock, {"keys": keys})).mappings())
        if len(found) == len(keys):
            return found
        have = {r[projection.key] for r in found}
        missing = [k for k in keys if k not in have]
        await self.conn.execute(sql.SEED[projection.table], {"keys": literal(missing)})
        found += (await self.conn.execute(lock, {"keys": missing})).mappings()
        return found

    async def lock_offsets(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        wanted = sorted(partitions)
        result = await self.conn.execute(sql.LOCK_OFFSETS, _offset_params(self.group_id, wanted))
        return {(r.topic, r.partition): r.next_offset for r in result}

    async def save(self, ws: WorkingSet, offsets: Mapping[Partition, int]) -> None:
        users, bookings, convs, followups = ws.changed()
        params = rows.write_back_params(users, bookings, convs)
        for name, changed in (("users", users), ("conversations", convs), ("bookings", bookings)):
            if changed:
                bound = sql.WRITE_BACK[name].bind(params[name])
                await self.conn.execute(sql.WRITE_BACK_SQL[name], bound)
        removed = ws.removed()
        if removed:
            await self.conn.execute(
                sql.DELETE_FOLLOWUPS, {"ids": [f.id for f in removed], "now": self.now}
            )
        if followups:
            await upsert_followups(self.conn, followups, self.now)
        if offsets:
            await self.conn.execute(
                sql.SAVE_OFFSETS,
                {**_offset_params(self.group_id, list(offsets)), "offs": list(offsets.values())},
            )


async def upsert_followups(
    conn: AsyncConnection, followups: Sequence[Followup], now: datetime | None = None
) -> None:
    """Insert new follow-ups and move/cancel open ones; closed rows are never reopened,
    nor rows under a lease still live at `now` (default: the database's clock)."""
    params = sql.bind(sql.FOLLOWUP_ARRAYS, rows.followup_params(followups))
    await conn.execute(sql.UPSERT_FOLLOWUPS, {**params, "now": now})


class PostgresStore:
    def __init__(self, engine: AsyncEngine, group_id: str) -> None:
        self.engine = engine
        self.group_id = group_id

    @classmethod
    def connect(cls, database_url: str, group_id: str, *, pool_size: int = 5) -> PostgresStore:
        return cls(create_engine(database_url, pool_size=pool_size), group_id)

    async def migrate(self) -> bool:
        """Bring the schema up to date; False when this role may not (least privilege).

        A schema a newer release migrated is left as it is: every revision keeps the
        previous release's code working (an instance restarting mid-roll, or the
        code rolled back before the schema)."""
        try:
            await migrate(self.engine)
        except NotPermitted:
            return False
        except SchemaAhead as exc:
            log.warning(
                "the schema is a newer release's; left as it is",
                extra={"revision": exc.current, "head": exc.head},
            )
        return True

    @translating
    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sql.PING)

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresUnitOfWork]:
        with translated():
            async with self.engine.begin() as conn:
                yield PostgresUnitOfWork(conn, self.group_id)

    @translating
    async def load_offsets(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        wanted = list(partitions)
        if not wanted:
            return {}
        async with self.engine.connect() as conn:
            result = await conn.execute(sql.LOAD_OFFSETS, _offset_params(self.group_id, wanted))
            return {(r.topic, r.partition): r.next_offset for r in result}

    # --- dispatch ---

    @translating
    async def claim_due(
        self, owner: str, now: datetime, lease: timedelta, limit: int
    ) -> list[ClaimedFollowup]:
        async with self.engine.begin() as conn:
            await conn.execute(sql.INDEX_WALKS_ONLY)
            result = await conn.execute(
                sql.CLAIM_DUE, {"now": now, "limit": limit, "owner": owner, "until": now + lease}
            )
            # Plain dicts from the tuples: a RowMapping's keys are looked up per access.
            names = list(result.keys())
            found = [dict(zip(names, row, strict=True)) for row in result]
        claimed = []
        for row in found:
            row["lease_until"] = None  # ours now: not in flight for the rules
            claimed.append(
                ClaimedFollowup(rows.followup_from_row(row, now), retry_count=row["retry_count"])
            )
        return claimed

    @translating
    async def firing_facts(self, followups: Sequence[Followup]) -> FiringFacts:
        conv_ids = sorted({f.conversation_id for f in followups if f.conversation_id})
        user_ids = sorted({f.user_id for f in followups})
        async with self.engine.connect() as conn:
            convs = await conn.execute(sql.FIRING_SCORES, {"ids": conv_ids})
            scores = {r.conversation_id: rows.history(r.history) for r in convs}
            users = list(await conn.execute(sql.FIRING_USERS, {"ids": user_ids}))
            activity = {r.user_id: r.last_activity_at for r in users if r.last_activity_at}
            zones = {r.user_id: r.timezone for r in users if r.timezone}
            locales = {r.user_id: r.locale for r in users if r.locale}
            live = await conn.execute(sql.FIRING_LIVE_BOOKINGS, {"ids": user_ids})
            with_booking = frozenset(r.user_id for r in live)
            # Read at every firing, never cached: an edit applies to the next round.
            found = await conn.execute(sql.CURRENT_TEMPLATES)
            templates = {(t.template_id, t.locale): t for t in map(rows.template, found)}
        return FiringFacts(scores, activity, zones, with_booking, locales, templates)

    @translating
    async def mark_executed(self, owner: str, done: Sequence[Executed], now: datetime) -> int:
        if not done:
            return 0
        values: dict[str, list[Any]] = {
            "id": [d.id for d in done],
            "template_id": [d.template_id for d in done],
            "message": [d.message for d in done],
            "locale": [d.locale for d in done],
            "version": [d.template_version for d in done],
        }
        async with self.engine.begin() as conn:
            await conn.execute(sql.INDEX_WALKS_ONLY)
            result = await conn.execute(
                sql.MARK_EXECUTED,
                {"now": now, "owner": owner, **sql.bind(sql.MARK_EXECUTED_ARRAYS, values)},
            )
            return int(result.rowcount)

    @translating
    async def mark_expired(self, owner: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        async with self.engine.begin() as conn:
            result = await conn.execute(sql.MARK_EXPIRED, {"ids": list(ids), "owner": owner})
            return int(result.rowcount)

    @translating
    async def mark_publish_failed(
        self, owner: str, id_: str, error: str, retry_at: datetime | None, *, counts: bool = True
    ) -> None:
        """Record a failed attempt: retry at `retry_at`, or give up (`failed`) when None.

        `counts=False` (the broker itself was unreachable) releases the claim
        without using up one of the follow-up's retries.
        """
        async with self.engine.begin() as conn:
            await conn.execute(
                sql.MARK_PUBLISH_FAILED,
                {
                    "id": id_,
                    "owner": owner,
                    "error": error[:2000],
                    "retry_at": retry_at,
                    "step": 1 if counts else 0,
                },
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
        """The users' rows locked (the lock ingest takes first, in the same order) for
        the whole decision: two dispatchers deciding for one user go one after the other."""
        users = sorted(set(user_ids))
        with translated():
            async with self.engine.begin() as conn:
                await conn.execute(sql.SEED["user_projection"], {"keys": literal(users)})
                locked = await conn.execute(sql.GATE_LOCK_USERS, {"keys": users})
                zones = {r.user_id: r.timezone for r in locked if r.timezone}
                sends: dict[str, list[datetime]] = {}
                if since is not None:
                    found = await conn.execute(
                        sql.GATE_SENDS,
                        {"users": users, "ids": list(ids), "now": now, "since": since},
                    )
                    for r in found:
                        sends.setdefault(r.user_id, []).append(r.at)

                async def approve(approved: Sequence[str], at: datetime) -> None:
                    if approved:
                        await conn.execute(
                            sql.GATE_APPROVE, {"ids": list(approved), "owner": owner, "now": at}
                        )

                async def hold(holds: Sequence[Hold]) -> None:
                    if holds:
                        values: dict[str, list[Any]] = {
                            "id": [h.id for h in holds],
                            "at": [h.due_at for h in holds],
                            "reason": [h.reason for h in holds],
                        }
                        # For the rest of the gate's transaction: hold is its last statement.
                        await conn.execute(sql.INDEX_WALKS_ONLY)
                        await conn.execute(
                            sql.GATE_HOLD,
                            {"owner": owner, **sql.bind(sql.GATE_HOLD_ARRAYS, values)},
                        )

                yield SendGate(zones, sends, approve, hold)

    @translating
    async def next_due_at(self, now: datetime) -> datetime | None:
        """When the earliest claimable follow-up falls due."""
        async with self.engine.connect() as conn:
            await conn.execute(sql.INDEX_WALKS_ONLY)
            value: datetime | None = (await conn.execute(sql.NEXT_DUE_AT, {"now": now})).scalar()
            return value

    # --- message templates ---

    @translating
    async def current_templates(self) -> list[StoredTemplate]:
        async with self.engine.connect() as conn:
            return [rows.template(r) for r in await conn.execute(sql.CURRENT_TEMPLATES)]

    @translating
    async def template_versions(self, template_id: str) -> list[StoredTemplate]:
        async with self.engine.connect() as conn:
            found = await conn.execute(sql.TEMPLATE_VERSIONS, {"id": template_id})
            return [rows.template(r) for r in found]

    @translating
    async def put_template(
        self, template_id: str, locale: str, body: str, now: datetime
    ) -> tuple[StoredTemplate, bool]:
        async with self.engine.begin() as conn:
            await conn.execute(sql.TEMPLATES_LOCK)
            key = {"id": template_id, "locale": locale}
            current = (await conn.execute(sql.CURRENT_TEMPLATE, key)).first()
            if current is not None and current.body == body:
                return rows.template(current), False
            added = await conn.execute(sql.INSERT_TEMPLATE, {**key, "body": body, "now": now})
            return rows.template(added.one()), True

    # --- periodic work ---

    @asynccontextmanager
    async def exclusive(self, job: str) -> AsyncIterator[bool]:
        """Yields True for the one instance that holds the job's advisory lock."""
        with translated():
            async with self.engine.connect() as conn:
                key = {"k": f"followup-consumer:{self.group_id}:{job}"}
                got = bool((await conn.execute(sql.TRY_ADVISORY_LOCK, key)).scalar())
                try:
                    yield got
                finally:
                    if got:
                        await conn.execute(sql.ADVISORY_UNLOCK, key)
                    await conn.commit()

    @translating
    async def inactive_without_reengagement(
        self, idle_since: datetime, after: str, limit: int
    ) -> list[str]:
        """Users idle since `idle_since` with no pending re-engagement and none sent
        for their latest activity: candidates for the daily sweep, by user id."""
        async with self.engine.connect() as conn:
            result = await conn.execute(
                sql.INACTIVE_WITHOUT_REENGAGEMENT,
                {"idle_since": idle_since, "after": after, "limit": limit},
            )
            return [r.user_id for r in result]

    @translating
    async def delete_executed_before(self, cutoff: datetime, chunk: int = 10_000) -> int:
        """Retention: executed follow-ups older than the cutoff, in short transactions."""
        total = 0
        while True:
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    sql.DELETE_EXECUTED_BEFORE, {"cutoff": cutoff, "chunk": chunk}
                )
            total += result.rowcount
            if result.rowcount < chunk:
                return total

    # --- operations ---

    @translating
    async def list_followups(
        self,
        *,
        user_id: str | None,
        status: Status | None,
        trigger_type: TriggerType | None,
        limit: int,
    ) -> list[FollowupView]:
        async with self.engine.connect() as conn:
            result = await conn.execute(
                sql.LIST_FOLLOWUPS,
                {
                    "user": user_id,
                    "status": status.value if status else None,
                    "trigger": trigger_type.value if trigger_type else None,
                    "limit": limit,
                },
            )
            return [rows.view(r) for r in result]

    @translating
    async def get_followup(self, id_: str) -> FollowupView | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sql.GET_FOLLOWUP, {"id": id_})).first()
            return rows.view(row) if row else None

    @translating
    async def cancel_followup(self, id_: str, now: datetime) -> CancelResult:
        async with self.engine.begin() as conn:
            result = await conn.execute(sql.CANCEL_FOLLOWUP, {"id": id_, "now": now})
            if result.first() is not None:
                return CancelResult.CANCELLED
            exists = await conn.execute(sql.FOLLOWUP_EXISTS, {"id": id_})
            return CancelResult.NOT_PENDING if exists.first() else CancelResult.NOT_FOUND

    @translating
    async def erase_user(self, user_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        async with self.engine.begin() as conn:
            for table, statement in sql.ERASE_USER.items():
                counts[table] = (await conn.execute(statement, {"user": user_id})).rowcount
        return counts

    @translating
    async def figures(self, midnight: datetime) -> Figures:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sql.FIGURES, {"midnight": midnight})).one()
            return Figures(int(row.pending), int(row.executed_today))
