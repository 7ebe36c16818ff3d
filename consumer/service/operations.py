"""What an operator can do, shared by the HTTP admin API and the CLI."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

from consumer.domain.limits import MESSAGE_MAX_CHARS
from consumer.domain.model import Followup, Refused, Status, TriggerType
from consumer.domain.policy import Policy
from consumer.domain.rules import schedule_custom
from consumer.service.ports import (
    BatchKeys,
    CancelResult,
    Cipher,
    Figures,
    FollowupView,
    Store,
)
from consumer.service.template_operations import TemplateOperations

__all__ = [
    "MESSAGE_MAX_CHARS",
    "CancelResult",
    "FollowupView",
    "LimitReached",
    "Operations",
    "TooLate",
]


class LimitReached(Exception):
    """The user already has MAX_PENDING_FOLLOWUPS_PER_USER pending follow-ups."""


class TooLate(Exception):
    """The time asked for is past MAX_LATENESS_HOURS: it would be stored expired, never sent."""

    def __init__(self, at: datetime, max_lateness: timedelta) -> None:
        hours = max_lateness.total_seconds() / 3600
        super().__init__(
            f"{at.isoformat()} is more than {hours:g} h ago (MAX_LATENESS_HOURS): "
            "a follow-up that late is never sent"
        )
        self.at = at


class Operations:
    def __init__(
        self,
        store: Store,
        policy: Policy,
        cipher: Cipher,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.policy = policy
        self.cipher = cipher
        self.clock = clock
        self.templates = TemplateOperations(store, policy, clock)

    def _opened(self, view: FollowupView) -> FollowupView:
        """Messages are stored sealed when a key is set; operators read them in clear."""
        data = dict(view.trigger_data)
        if "custom_message" in data:
            data["custom_message"] = self.cipher.open(data["custom_message"])
        message = view.message_content
        return replace(
            view,
            trigger_data=data,
            message_content=self.cipher.open(message) if message is not None else None,
        )

    async def list_followups(
        self,
        *,
        user_id: str | None = None,
        status: Status | None = None,
        trigger_type: TriggerType | None = None,
        limit: int = 100,
    ) -> list[FollowupView]:
        found = await self.store.list_followups(
            user_id=user_id, status=status, trigger_type=trigger_type, limit=limit
        )
        return [self._opened(v) for v in found]

    async def get_followup(self, id_: str) -> FollowupView | None:
        view = await self.store.get_followup(id_)
        return self._opened(view) if view is not None else None

    async def cancel_followup(self, id_: str) -> CancelResult:
        """Cancel a pending follow-up that no dispatcher is sending right now."""
        return await self.store.cancel_followup(id_, self.clock())

    async def schedule_custom(
        self,
        *,
        user_id: str,
        conversation_id: str,
        message: str,
        at: datetime,
        ignore_quiet_hours: bool = False,
    ) -> FollowupView:
        """`ignore_quiet_hours`: send it at `at` even inside the user's quiet hours
        (the daily cap still applies)."""
        now = self.clock()
        if self.policy.too_late(at, now):
            raise TooLate(at, self.policy.max_lateness)
        followup = Followup(
            id=str(uuid.uuid4()),
            user_id=user_id,
            conversation_id=conversation_id,
            trigger_type=TriggerType.CUSTOM,
            scheduled_at=at,
            custom_message=self.cipher.seal(message),
            ignore_quiet_hours=ignore_quiet_hours,
        )
        async with self.store.transaction() as tx:
            # Same locks as ingest: the limit is checked against a stable count.
            ws = await tx.lock_and_load(BatchKeys(frozenset({user_id})), now)
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
        return await self.store.erase_user(user_id)

    async def figures(self) -> dict[str, int]:
        """The old health figures: pending follow-ups, executed since local midnight."""
        tz = self.policy.default_timezone
        midnight = datetime.combine(self.clock().astimezone(tz).date(), time(0), tzinfo=tz)
        found: Figures = await self.store.figures(midnight.astimezone(UTC))
        return {"pending_jobs": found.pending_jobs, "executed_today": found.executed_today}
