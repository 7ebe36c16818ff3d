"""What an operator can do, shared by the HTTP admin API and the CLI."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, time
from enum import StrEnum
from typing import Any

from sqlalchemy import text

from consumer.crypto import MessageCipher
from consumer.model import Followup, Refused, Status, TriggerType
from consumer.rules import Policy, schedule_custom
from consumer.store import BatchKeys, Store

MESSAGE_MAX_CHARS = 4000


class CancelResult(StrEnum):
    CANCELLED = "cancelled"
    NOT_FOUND = "not_found"
    NOT_PENDING = "not_pending"


class LimitReached(Exception):
    """The user already has MAX_PENDING_FOLLOWUPS_PER_USER pending follow-ups."""


@dataclass(frozen=True)
class FollowupView:
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

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out


_VIEW_COLUMNS = (
    "id, user_id, conversation_id, trigger_type, status, scheduled_at, executed_at, "
    "cancelled_at, created_at, template_id, message_content, error_message, retry_count, "
    "trigger_data::text AS trigger_data"
)


class Operations:
    def __init__(
        self,
        store: Store,
        policy: Policy,
        cipher: MessageCipher,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.policy = policy
        self.cipher = cipher
        self.clock = clock

    def _view(self, row: Any) -> FollowupView:
        data = json.loads(row.trigger_data) if row.trigger_data else {}
        if "custom_message" in data:
            data["custom_message"] = self.cipher.open(data["custom_message"])
        message = row.message_content
        return FollowupView(
            id=row.id,
            user_id=row.user_id,
            conversation_id=row.conversation_id,
            trigger_type=row.trigger_type,
            status=row.status,
            scheduled_at=row.scheduled_at,
            executed_at=row.executed_at,
            cancelled_at=row.cancelled_at,
            created_at=row.created_at,
            template_id=row.template_id,
            message_content=self.cipher.open(message) if message is not None else None,
            error_message=row.error_message,
            retry_count=row.retry_count,
            trigger_data=data,
        )

    async def list_followups(
        self,
        *,
        user_id: str | None = None,
        status: Status | None = None,
        trigger_type: TriggerType | None = None,
        limit: int = 100,
    ) -> list[FollowupView]:
        async with self.store.engine.connect() as conn:
            result = await conn.execute(
                text(
                    f"SELECT {_VIEW_COLUMNS} FROM scheduled_followups "
                    "WHERE (CAST(:user AS varchar) IS NULL OR user_id = :user) "
                    "AND (CAST(:status AS varchar) IS NULL OR status = :status) "
                    "AND (CAST(:trigger AS varchar) IS NULL OR trigger_type = :trigger) "
                    "ORDER BY scheduled_at DESC, id LIMIT :limit"
                ),
                {
                    "user": user_id,
                    "status": status.value if status else None,
                    "trigger": trigger_type.value if trigger_type else None,
                    "limit": limit,
                },
            )
            return [self._view(r) for r in result]

    async def get_followup(self, id_: str) -> FollowupView | None:
        async with self.store.engine.connect() as conn:
            result = await conn.execute(
                text(f"SELECT {_VIEW_COLUMNS} FROM scheduled_followups WHERE id = :id"),
                {"id": id_},
            )
            row = result.first()
            return self._view(row) if row else None

    async def cancel_followup(self, id_: str) -> CancelResult:
        """Cancel a pending follow-up that no dispatcher is sending right now."""
        now = self.clock()
        async with self.store.engine.begin() as conn:
            result = await conn.execute(
                text(
                    "UPDATE scheduled_followups SET status = 'cancelled', cancelled_at = :now, "
                    "updated_at = now() WHERE id = :id AND status = 'pending' "
                    "AND (lease_until IS NULL OR lease_until < :now) RETURNING id"
                ),
                {"id": id_, "now": now},
            )
            if result.first() is not None:
                return CancelResult.CANCELLED
            exists = await conn.execute(
                text("SELECT 1 FROM scheduled_followups WHERE id = :id"), {"id": id_}
            )
            return CancelResult.NOT_PENDING if exists.first() else CancelResult.NOT_FOUND

    async def schedule_custom(
        self, *, user_id: str, conversation_id: str, message: str, at: datetime
    ) -> FollowupView:
        now = self.clock()
        followup = Followup(
            id=str(uuid.uuid4()),
            user_id=user_id,
            conversation_id=conversation_id,
            trigger_type=TriggerType.CUSTOM,
            scheduled_at=at,
            custom_message=self.cipher.seal(message),
        )
        async with self.store.ingest_transaction() as tx:
            # Same locks as ingest: the limit is checked against a stable count.
            ws = await tx.lock_and_load(
                BatchKeys(frozenset({user_id}), frozenset(), frozenset()), now
            )
            changes = schedule_custom(ws, followup, self.policy, now)
            ws.apply(changes)
            await tx.save(ws, {})
        if any(isinstance(c, Refused) for c in changes):
            raise LimitReached(
                f"user {user_id!r} already has {self.policy.max_pending_per_user} "
                "pending follow-ups"
            )
        view = await self.get_followup(followup.id)
        assert view is not None
        return view

    async def erase_user(self, user_id: str) -> dict[str, int]:
        """Right to be forgotten: every row about the user, in one transaction."""
        counts: dict[str, int] = {}
        async with self.store.engine.begin() as conn:
            for table in (
                "scheduled_followups",
                "booking_projection",
                "conversation_emotions",
                "user_projection",
            ):
                result = await conn.execute(
                    text(f"DELETE FROM {table} WHERE user_id = :user"), {"user": user_id}
                )
                counts[table] = result.rowcount
        return counts

    async def figures(self) -> dict[str, int]:
        """The old health figures: pending follow-ups, executed since local midnight."""
        tz = self.policy.default_timezone
        midnight = datetime.combine(self.clock().astimezone(tz).date(), time(0), tzinfo=tz)
        async with self.store.engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT count(*) FILTER (WHERE status = 'pending') AS pending, "
                    "count(*) FILTER (WHERE status = 'executed' AND executed_at >= :midnight) "
                    "AS executed_today FROM scheduled_followups "
                    "WHERE status = 'pending' OR (status = 'executed' AND executed_at >= :midnight)"
                ),
                {"midnight": midnight.astimezone(UTC)},
            )
            row = result.one()
            return {"pending_jobs": int(row.pending), "executed_today": int(row.executed_today)}
