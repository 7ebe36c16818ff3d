"""The projections a batch touches, held in memory while its events are decided.

Implements `rules.State` and records which rows changed, so the batch is written
back with a handful of set-based statements instead of one round trip per event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from consumer.domain.model import (
    Booking,
    Change,
    Conversation,
    Followup,
    Refused,
    Status,
    TriggerType,
    UserState,
)


@dataclass
class WorkingSet:
    users: dict[str, UserState] = field(default_factory=dict)
    bookings: dict[str, Booking] = field(default_factory=dict)
    conversations: dict[str, Conversation] = field(default_factory=dict)
    followups: dict[str, Followup] = field(default_factory=dict)
    dirty_users: set[str] = field(default_factory=set)
    dirty_bookings: set[str] = field(default_factory=set)
    dirty_conversations: set[str] = field(default_factory=set)
    dirty_followups: set[str] = field(default_factory=set)
    refused: Counter[TriggerType] = field(default_factory=Counter)
    _pending: dict[str, dict[str, Followup]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        users: Iterable[UserState] = (),
        bookings: Iterable[Booking] = (),
        conversations: Iterable[Conversation] = (),
        followups: Iterable[Followup] = (),
    ) -> WorkingSet:
        ws = cls(
            users={u.user_id: u for u in users},
            bookings={b.booking_id: b for b in bookings},
            conversations={c.conversation_id: c for c in conversations},
        )
        ws.add_loaded(followups)
        return ws

    def add_loaded(self, followups: Iterable[Followup]) -> None:
        """Rows read from the store: known, not changed."""
        for f in followups:
            self._set_followup(f)

    # rules.State
    def user(self, user_id: str) -> UserState | None:
        return self.users.get(user_id)

    def booking(self, booking_id: str) -> Booking | None:
        return self.bookings.get(booking_id)

    def conversation(self, conversation_id: str) -> Conversation | None:
        return self.conversations.get(conversation_id)

    def followup(self, id_: str) -> Followup | None:
        return self.followups.get(id_)

    def pending_followups(self, user_id: str) -> Iterable[Followup]:
        return self._pending.get(user_id, {}).values()

    def apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            if isinstance(change, Followup):
                self._set_followup(change)
                self.dirty_followups.add(change.id)
            elif isinstance(change, UserState):
                self.users[change.user_id] = change
                self.dirty_users.add(change.user_id)
            elif isinstance(change, Booking):
                self.bookings[change.booking_id] = change
                self.dirty_bookings.add(change.booking_id)
            elif isinstance(change, Conversation):
                self.conversations[change.conversation_id] = change
                self.dirty_conversations.add(change.conversation_id)
            elif isinstance(change, Refused):
                self.refused[change.trigger_type] += 1

    def _set_followup(self, f: Followup) -> None:
        self.followups[f.id] = f
        pending = self._pending.setdefault(f.user_id, {})
        if f.status is Status.PENDING:
            pending[f.id] = f
        else:
            pending.pop(f.id, None)

    def changed(self) -> tuple[list[UserState], list[Booking], list[Conversation], list[Followup]]:
        return (
            [self.users[k] for k in sorted(self.dirty_users)],
            [self.bookings[k] for k in sorted(self.dirty_bookings)],
            [self.conversations[k] for k in sorted(self.dirty_conversations)],
            [self.followups[k] for k in sorted(self.dirty_followups)],
        )
