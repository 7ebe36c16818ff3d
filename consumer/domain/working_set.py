"""The projections a batch touches, held in memory while its events are decided.

Implements `rules.State` and records which rows changed (and which follow-ups
went), so the batch is written back with a handful of set-based statements
instead of one round trip per event.

What the store loads into it, the rules may rely on being complete: every
booking and post-event follow-up of the chains a booking event in the batch can
change (`rules.touched_chains`; a store may load all of the user's), every
check-in of a conversation with a score in the batch, and every pending
follow-up of the batch's users. `post_event_scope`, when the store loaded only
some chains: the post-event rows loaded as theirs; other post-event rows loaded
(pending ones, for the per-user limit) are not the rules' to reconcile.
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
    Removed,
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
    # Follow-ups the rules removed (never sent): deleted on save.
    removed_followups: dict[str, Followup] = field(default_factory=dict)
    refused: Counter[TriggerType] = field(default_factory=Counter)
    post_event_scope: set[str] | None = None
    # Indexes: user -> pending follow-ups, user -> post-event follow-ups,
    # conversation -> check-ins, user -> booking ids.
    _pending: dict[str, dict[str, Followup]] = field(default_factory=dict)
    _post_event: dict[str, dict[str, Followup]] = field(default_factory=dict)
    _checkins: dict[str, dict[str, Followup]] = field(default_factory=dict)
    _user_bookings: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        users: Iterable[UserState] = (),
        bookings: Iterable[Booking] = (),
        conversations: Iterable[Conversation] = (),
        followups: Iterable[Followup] = (),
        post_event_scope: set[str] | None = None,
    ) -> WorkingSet:
        ws = cls(
            users={u.user_id: u for u in users},
            conversations={c.conversation_id: c for c in conversations},
            post_event_scope=post_event_scope,
        )
        for b in bookings:
            ws._set_booking(b)
        ws.add_loaded(followups)
        return ws

    def add_loaded(self, followups: Iterable[Followup]) -> None:
        """Rows read from the store: known, not changed."""
        scope = self.post_event_scope
        for f in followups:
            self._set_followup(
                f,
                chain=scope is None
                or f.trigger_type is not TriggerType.POST_EVENT
                or f.id in scope,
            )

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

    def bookings_of(self, user_id: str) -> Iterable[Booking]:
        return (self.bookings[b] for b in self._user_bookings.get(user_id, ()))

    def post_event_followups(self, user_id: str) -> Iterable[Followup]:
        return self._post_event.get(user_id, {}).values()

    def checkins(self, conversation_id: str) -> Iterable[Followup]:
        return self._checkins.get(conversation_id, {}).values()

    def apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            if isinstance(change, Followup):
                self._set_followup(change)
                self.dirty_followups.add(change.id)
                self.removed_followups.pop(change.id, None)
            elif isinstance(change, Removed):
                self._unset_followup(change.followup.id)
                self.dirty_followups.discard(change.followup.id)
                self.removed_followups[change.followup.id] = change.followup
            elif isinstance(change, UserState):
                self.users[change.user_id] = change
                self.dirty_users.add(change.user_id)
            elif isinstance(change, Booking):
                self._set_booking(change)
                self.dirty_bookings.add(change.booking_id)
            elif isinstance(change, Conversation):
                self.conversations[change.conversation_id] = change
                self.dirty_conversations.add(change.conversation_id)
            elif isinstance(change, Refused):
                self.refused[change.trigger_type] += 1

    def _set_booking(self, b: Booking) -> None:
        old = self.bookings.get(b.booking_id)
        if old is not None and old.user_id != b.user_id:
            self._user_bookings.get(old.user_id, set()).discard(b.booking_id)
        self.bookings[b.booking_id] = b
        self._user_bookings.setdefault(b.user_id, set()).add(b.booking_id)

    def _set_followup(self, f: Followup, *, chain: bool = True) -> None:
        self._unset_followup(f.id)
        self.followups[f.id] = f
        if f.status is Status.PENDING:
            self._pending.setdefault(f.user_id, {})[f.id] = f
        if f.trigger_type is TriggerType.POST_EVENT:
            if not chain:
                return  # of a chain the batch cannot change: not the rules' to reconcile
            self._post_event.setdefault(f.user_id, {})[f.id] = f
        elif f.trigger_type is TriggerType.EMOTION_BASED:
            self._checkins.setdefault(f.conversation_id, {})[f.id] = f

    def _unset_followup(self, id_: str) -> None:
        old = self.followups.pop(id_, None)
        if old is None:
            return
        self._pending.get(old.user_id, {}).pop(id_, None)
        self._post_event.get(old.user_id, {}).pop(id_, None)
        self._checkins.get(old.conversation_id, {}).pop(id_, None)

    def changed(self) -> tuple[list[UserState], list[Booking], list[Conversation], list[Followup]]:
        return (
            [self.users[k] for k in sorted(self.dirty_users)],
            [self.bookings[k] for k in sorted(self.dirty_bookings)],
            [self.conversations[k] for k in sorted(self.dirty_conversations)],
            [self.followups[k] for k in sorted(self.dirty_followups)],
        )

    def removed(self) -> list[Followup]:
        """Follow-ups to delete (only those that are not `is_fixed`), by id."""
        return [self.removed_followups[k] for k in sorted(self.removed_followups)]
