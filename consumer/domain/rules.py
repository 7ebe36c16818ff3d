"""Every rule of CONTRACT.md, as pure functions of (state, event, now).

Nothing here reads a clock, a database or Kafka. `decide` returns the new
versions of whatever an event changes; the caller applies them to its working
set and persists them. All rules are idempotent and keyed on natural ids, so a
redelivered or replayed event changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Literal, Protocol, assert_never
from zoneinfo import ZoneInfo

from consumer.domain.events import (
    BookingCancelled,
    BookingConfirmed,
    EmotionScored,
    InputEvent,
    UserActivity,
)
from consumer.domain.model import (
    Booking,
    Change,
    Conversation,
    Followup,
    Refused,
    Score,
    Status,
    TriggerType,
    UserState,
    default_conversation_id,
    followup_id,
    reengagement_id,
)
from consumer.domain.policy import Policy

LOW_EMOTION = 0.4
HIGH_EMOTION = 0.7
JOIN_WINDOW = timedelta(days=1)

EmotionBand = Literal["high", "neutral", "low"]


class State(Protocol):
    """What the rules may read: the projections as they stand mid-batch."""

    def user(self, user_id: str) -> UserState | None: ...
    def booking(self, booking_id: str) -> Booking | None: ...
    def conversation(self, conversation_id: str) -> Conversation | None: ...
    def followup(self, id_: str) -> Followup | None: ...
    def pending_followups(self, user_id: str) -> Iterable[Followup]: ...


# --- pure helpers ---------------------------------------------------------------


def average(scores: Sequence[Score]) -> float | None:
    """The mean of the scores as written: 0.7 and 0.1 average to 0.4, not 0.39999999999999997.

    Binary float sums would put averages that are exactly on a threshold in the wrong band.
    """
    if not scores:
        return None
    return float(sum((Decimal(repr(s.value)) for s in scores), Decimal(0)) / len(scores))


def emotion_band(scores: Sequence[Score]) -> EmotionBand:
    """>= 0.7 high, 0.4 <= avg < 0.7 neutral, < 0.4 low; no scores: neutral."""
    avg = average(scores)
    if avg is None:
        return "neutral"
    if avg >= HIGH_EMOTION:
        return "high"
    return "neutral" if avg >= LOW_EMOTION else "low"


def reengagement_due(last_activity: datetime, tz: ZoneInfo, policy: Policy) -> datetime:
    """The first SEND_HOUR:00 local time at or after last activity + the idle period."""
    threshold = (last_activity + policy.inactive_after).astimezone(tz)
    day = threshold.date()
    due = datetime.combine(day, time(policy.send_hour), tzinfo=tz)
    if due < threshold:
        due = datetime.combine(day + timedelta(days=1), time(policy.send_hour), tzinfo=tz)
    return due.astimezone(UTC)


def status_for(scheduled_at: datetime, policy: Policy, now: datetime) -> Status:
    """Too late to be worth sending (backfill, long outage): expired, never sent."""
    return policy.status_for(scheduled_at, now)


def user_timezone(user: UserState | None, policy: Policy) -> ZoneInfo:
    if user is not None and user.timezone:
        return ZoneInfo(user.timezone)
    return policy.default_timezone


def _distance(f: Followup, date: datetime) -> timedelta:
    assert f.event_date is not None
    return abs(f.event_date - date)


# --- decide -----------------------------------------------------------------------


def decide(state: State, event: InputEvent, policy: Policy, now: datetime) -> list[Change]:
    """The changes one input event causes."""
    d = _Decision(state, policy, now)
    match event:
        case BookingConfirmed():
            return d.booking_confirmed(event)
        case BookingCancelled():
            return d.booking_cancelled(event)
        case EmotionScored():
            return d.emotion_scored(event)
        case UserActivity():
            return d.user_activity(event)
        case _:
            assert_never(event)


class _Decision:
    """Collects the changes of one event so later steps see earlier ones."""

    def __init__(self, state: State, policy: Policy, now: datetime) -> None:
        self.state = state
        self.policy = policy
        self.now = now
        self.changes: list[Change] = []
        self._followups: dict[str, Followup] = {}

    # reads that see this decision's own changes first
    def _followup(self, id_: str | None) -> Followup | None:
        if id_ is None:
            return None
        return self._followups.get(id_) or self.state.followup(id_)

    def _pending(self, user_id: str) -> list[Followup]:
        seen = {f.id: f for f in self.state.pending_followups(user_id)}
        seen.update({k: f for k, f in self._followups.items() if f.user_id == user_id})
        return [f for f in seen.values() if f.status is Status.PENDING]

    def _put(self, change: Change) -> None:
        if isinstance(change, Followup):
            self._followups[change.id] = change
        self.changes.append(change)

    def _room_for_one_more(self, user: UserState, trigger: TriggerType) -> tuple[bool, UserState]:
        if len(self._pending(user.user_id)) < self.policy.max_pending_per_user:
            return True, user
        self._put(Refused(user.user_id, trigger))
        return False, replace(user, refused_followups=user.refused_followups + 1)

    # --- the four topics ------------------------------------------------------------

    def booking_confirmed(self, e: BookingConfirmed) -> list[Change]:
        user = self.state.user(e.user_id) or UserState(e.user_id)
        booking = self.state.booking(e.booking_id) or Booking(e.booking_id, e.user_id)
        newer = booking.confirmed_at is None or (e.occurred_at, e.event_id) > (
            booking.confirmed_at,
            booking.confirm_event_id or "",
        )
        tz_changed = False
        if newer:
            if e.timezone and (user.timezone_at is None or e.occurred_at >= user.timezone_at):
                tz_changed = e.timezone != user.timezone
                user = replace(user, timezone=e.timezone, timezone_at=e.occurred_at)
            previous_date = booking.event_date
            booking = replace(
                booking,
                user_id=e.user_id,
                event_date=e.event_date,
                conversation_id=e.conversation_id,
                timezone=e.timezone,
                confirmed_at=e.occurred_at,
                confirm_event_id=e.event_id,
            )
            if booking.cancelled_at is None:
                booking, user = self._place_post_event(booking, user, previous_date, e.event_id)
            self._put(booking)
        self._touch(user, e.occurred_at, tz_changed=tz_changed)
        return self.changes

    def booking_cancelled(self, e: BookingCancelled) -> list[Change]:
        booking = self.state.booking(e.booking_id) or Booking(e.booking_id, e.user_id)
        if booking.cancelled_at is not None:
            return self.changes
        # Sticky: a cancellation that arrives before its confirmation still wins.
        self._put(replace(booking, cancelled_at=e.occurred_at, cancel_reason=e.reason))
        current = self._followup(booking.followup_id)
        if current is not None and current.is_open:
            active = tuple(b for b in current.active_booking_ids if b != e.booking_id)
            self._put(self._regroup(current, active, dict(current.booking_dates), e.occurred_at))
        return self.changes

    def emotion_scored(self, e: EmotionScored) -> list[Change]:
        user = self.state.user(e.user_id) or UserState(e.user_id)
        conv = self.state.conversation(e.conversation_id) or Conversation(
            e.conversation_id, e.user_id
        )
        if all(s.message_id != e.message_id for s in conv.scores):
            user = self._score(conv, user, e)
        self._touch(user, e.occurred_at)
        return self.changes

    def user_activity(self, e: UserActivity) -> list[Change]:
        user = self.state.user(e.user_id) or UserState(e.user_id)
        self._touch(user, e.occurred_at)
        return self.changes

    # --- post-event ---------------------------------------------------------------

    def _place_post_event(
        self, booking: Booking, user: UserState, previous_date: datetime | None, event_id: str
    ) -> tuple[Booking, UserState]:
        assert booking.event_date is not None
        date = booking.event_date
        b = booking.booking_id
        current = self._followup(booking.followup_id)
        if current is not None and not current.is_open and previous_date == date:
            return booking, user  # nothing moved; it already fired or was closed
        if current is not None and current.is_open:
            dates = {**dict(current.booking_dates), b: date}
            others = [d for k, d in dates.items() if k != b and k in current.active_booking_ids]
            if all(abs(d - date) <= JOIN_WINDOW for d in others):
                # Alone on it, or still within a day of the others: it moves along.
                moved = self._regroup(current, current.active_booking_ids, dates, self.now)
                if booking.conversation_id and current.active_booking_ids == (b,):
                    moved = replace(moved, conversation_id=booking.conversation_id)
                self._put(moved)
                return booking, user
            self._detach(current, b, booking.confirmed_at or self.now)
        joinable = [
            f
            for f in self._pending(booking.user_id)
            if f.is_open
            and f.trigger_type is TriggerType.POST_EVENT
            and f.event_date is not None
            and abs(f.event_date - date) <= JOIN_WINDOW
        ]
        if joinable:
            target = min(joinable, key=lambda f: (_distance(f, date), f.id))
            self._put(
                replace(
                    self._regroup(
                        target,
                        (*target.active_booking_ids, b),
                        {**dict(target.booking_dates), b: date},
                        self.now,
                    ),
                    booking_ids=(*target.booking_ids, b),
                )
            )
            return replace(booking, followup_id=target.id), user
        ok, user = self._room_for_one_more(user, TriggerType.POST_EVENT)
        if not ok:
            return replace(booking, followup_id=None), user
        at = date + self.policy.followup_delay
        created = Followup(
            id=followup_id(TriggerType.POST_EVENT, event_id),
            user_id=booking.user_id,
            conversation_id=booking.conversation_id or default_conversation_id(b),
            trigger_type=TriggerType.POST_EVENT,
            scheduled_at=at,
            status=status_for(at, self.policy, self.now),
            booking_ids=(b,),
            active_booking_ids=(b,),
            booking_dates=((b, date),),
            event_date=date,
        )
        self._put(created)
        return replace(booking, followup_id=created.id), user

    def _regroup(
        self,
        f: Followup,
        active: tuple[str, ...],
        dates: dict[str, datetime],
        closed_at: datetime,
    ) -> Followup:
        """A post-event follow-up after its set of bookings changed.

        Due a delay after the latest active booking's event, so the same bookings
        give the same time whatever order they arrived in; none left: cancelled.
        """
        kept = tuple(sorted((k, d) for k, d in dates.items() if k in f.booking_ids or k in active))
        if not active:
            return replace(
                f,
                active_booking_ids=(),
                booking_dates=kept,
                status=Status.CANCELLED,
                cancelled_at=closed_at,
            )
        known = dict(kept)
        event_date = max(known.get(k) or f.event_date or self.now for k in active)
        at = event_date + self.policy.followup_delay
        return replace(
            f,
            active_booking_ids=active,
            booking_dates=kept,
            event_date=event_date,
            scheduled_at=at,
            status=status_for(at, self.policy, self.now),
        )

    def _detach(self, shared: Followup, booking_id: str, at: datetime) -> None:
        """Take a booking off a shared follow-up; with none left it is cancelled."""
        rest = replace(shared, booking_ids=tuple(b for b in shared.booking_ids if b != booking_id))
        active = tuple(b for b in shared.active_booking_ids if b != booking_id)
        dates = {k: d for k, d in shared.booking_dates if k != booking_id}
        self._put(self._regroup(rest, active, dates, at))

    # --- emotion ------------------------------------------------------------------

    def _score(self, conv: Conversation, user: UserState, e: EmotionScored) -> UserState:
        merged = sorted(
            (*conv.scores, Score(e.message_id, e.occurred_at, e.score)),
            key=lambda s: (s.scored_at, s.message_id),
            reverse=True,
        )[: self.policy.history_limit]
        scores = tuple(merged)
        if scores == conv.scores:
            return user  # an old score that falls outside the window
        before, after = average(conv.scores), average(scores)
        was_low = before is not None and before < LOW_EMOTION
        is_low = after is not None and after < LOW_EMOTION
        conv = replace(conv, scores=scores)
        checkin = self._followup(conv.checkin_id)
        if is_low and not was_low and not (checkin is not None and checkin.is_open):
            ok, user = self._room_for_one_more(user, TriggerType.EMOTION_BASED)
            if ok:
                at = e.occurred_at + self.policy.checkin_delay
                created = Followup(
                    id=followup_id(TriggerType.EMOTION_BASED, e.event_id),
                    user_id=e.user_id,
                    conversation_id=e.conversation_id,
                    trigger_type=TriggerType.EMOTION_BASED,
                    scheduled_at=at,
                    status=status_for(at, self.policy, self.now),
                )
                self._put(created)
                conv = replace(conv, checkin_id=created.id)
        elif (
            was_low
            and not is_low
            and checkin is not None
            and checkin.is_open
            and e.occurred_at < checkin.scheduled_at
        ):
            self._put(replace(checkin, status=Status.CANCELLED, cancelled_at=e.occurred_at))
        self._put(conv)
        return user

    # --- activity and re-engagement ---------------------------------------------------

    def _touch(self, user: UserState, at: datetime, *, tz_changed: bool = False) -> None:
        """Record activity (never backwards) and keep the re-engagement in step."""
        newer = user.last_activity_at is None or at > user.last_activity_at
        if newer:
            user = replace(user, last_activity_at=at)
        if newer or tz_changed:
            user = self._reengage(user, new_activity=newer)
        if user != self.state.user(user.user_id):
            self._put(user)

    def _reengage(
        self, user: UserState, *, new_activity: bool, not_before: datetime | None = None
    ) -> UserState:
        last = user.last_activity_at
        assert last is not None
        due = reengagement_due(last, user_timezone(user, self.policy), self.policy)
        if not_before is not None and due < not_before:
            due = not_before
        status = status_for(due, self.policy, self.now)
        cycle = user.reengagement_cycle
        current = None if cycle is None else self._followup(reengagement_id(user.user_id, cycle))
        if current is not None and (
            current.is_open or (current.status is Status.EXPIRED and not current.in_flight)
        ):
            if current.status is Status.EXPIRED and status is Status.PENDING:
                # Reviving one that was never sent makes it pending again: that is
                # one more pending follow-up, so the per-user limit applies.
                ok, user = self._room_for_one_more(user, TriggerType.RE_ENGAGEMENT)
                if not ok:
                    return user
            # Newer activity moves it (an expired one is superseded in place).
            self._put(
                replace(
                    current, scheduled_at=due, activity_basis=user.last_activity_at, status=status
                )
            )
            return user
        if current is not None and (current.in_flight or not new_activity):
            return user  # being sent now, or nothing new since it was sent
        if cycle is not None and current is None and not new_activity:
            return user
        if (
            current is not None
            and current.activity_basis is not None
            and last <= current.activity_basis
        ):
            return user  # one was already sent for this activity
        ok, user = self._room_for_one_more(user, TriggerType.RE_ENGAGEMENT)
        if not ok:
            return user
        next_cycle = 0 if cycle is None else cycle + 1
        self._put(
            Followup(
                id=reengagement_id(user.user_id, next_cycle),
                user_id=user.user_id,
                conversation_id="",
                trigger_type=TriggerType.RE_ENGAGEMENT,
                scheduled_at=due,
                status=status,
                activity_basis=user.last_activity_at,
            )
        )
        return replace(user, reengagement_cycle=next_cycle)

    # --- an operator's follow-up ---------------------------------------------------------

    def custom(self, followup: Followup) -> list[Change]:
        user = self.state.user(followup.user_id) or UserState(followup.user_id)
        ok, user = self._room_for_one_more(user, TriggerType.CUSTOM)
        if ok:
            self._put(followup)
        elif user != self.state.user(user.user_id):
            self._put(user)
        return self.changes

    # --- the daily sweep ------------------------------------------------------------------

    def sweep(self, user_id: str) -> list[Change]:
        user = self.state.user(user_id)
        if user is None or user.last_activity_at is None:
            return self.changes
        if user.last_activity_at > self.now - self.policy.inactive_after:
            return self.changes  # not idle yet: ingest keeps its re-engagement in step
        soonest = next_send_time(self.now, user_timezone(user, self.policy), self.policy)
        user = self._reengage(user, new_activity=True, not_before=soonest)
        if user != self.state.user(user_id):
            self._put(user)
        return self.changes


def next_send_time(now: datetime, tz: ZoneInfo, policy: Policy) -> datetime:
    """The first SEND_HOUR:00 local time at or after `now`."""
    local = now.astimezone(tz)
    due = datetime.combine(local.date(), time(policy.send_hour), tzinfo=tz)
    if due < local:
        due = datetime.combine(local.date() + timedelta(days=1), time(policy.send_hour), tzinfo=tz)
    return due.astimezone(UTC)


def sweep_reengagement(state: State, user_id: str, policy: Policy, now: datetime) -> list[Change]:
    """The daily safety net: an idle user with no re-engagement pending and none
    sent for their latest activity gets one at the next send hour (never one in
    the past: users loaded by backfill would otherwise only get expired ones)."""
    return _Decision(state, policy, now).sweep(user_id)


def schedule_custom(
    state: State,
    followup: Followup,
    policy: Policy,
    now: datetime,
) -> list[Change]:
    """An operator's custom follow-up, within the per-user limit (Refused beyond it)."""
    return _Decision(state, policy, now).custom(followup)
