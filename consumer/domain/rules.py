"""Every rule of CONTRACT.md, as pure functions of (state, event, now).

Nothing here reads a clock, a database or Kafka. `decide` returns the new
versions of whatever an event changes; the caller applies them to its working
set and persists them.

Order does not matter: the projections merge events with order-independent
operations (the latest confirmation, the earliest cancellation, the newest
activity, a score history deduplicated by message), and the follow-ups of
bookings and of emotions are recomputed from those projections as a whole
(`_reconcile_post_event`, `_reconcile_checkins`), so the same set of events
gives the same rows whatever order and batches they came in. Only facts of the
real world stay as they are: a follow-up sent, failed, being sent or cancelled
by an operator (`Followup.is_fixed`), and `now` (pending or expired). The
per-user limit is the one rule that still depends on arrival order (README,
"Order does not matter").
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
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
    Removed,
    Score,
    Status,
    TriggerType,
    UserState,
    default_conversation_id,
    emotion_checkin_id,
    evolve,
    post_event_id,
    reengagement_id,
)
from consumer.domain.policy import Policy

LOW_EMOTION = 0.4
HIGH_EMOTION = 0.7
# Bookings whose event dates are at most this far apart share a follow-up; so do
# chains of them, each within this of the next (single linkage).
JOIN_WINDOW = timedelta(days=1)

EmotionBand = Literal["high", "neutral", "low"]


class State(Protocol):
    """What the rules may read: the projections as they stand mid-batch."""

    def user(self, user_id: str) -> UserState | None: ...
    def booking(self, booking_id: str) -> Booking | None: ...
    def conversation(self, conversation_id: str) -> Conversation | None: ...
    def followup(self, id_: str) -> Followup | None: ...
    def pending_followups(self, user_id: str) -> Iterable[Followup]: ...
    def bookings_of(self, user_id: str) -> Iterable[Booking]: ...
    def post_event_followups(self, user_id: str) -> Iterable[Followup]: ...
    def checkins(self, conversation_id: str) -> Iterable[Followup]: ...


# --- pure helpers ---------------------------------------------------------------


@lru_cache(maxsize=1 << 14)
def _decimal(value: float) -> Decimal:
    return Decimal(repr(value))


# Scores as whole numbers of 1e-20 (exact for any score written with at most 20
# decimals): window sums in integers give the same averages as `average`.
_SCALE = 20


@lru_cache(maxsize=1 << 14)
def _scaled(value: float) -> int | None:
    exponent = _decimal(value).as_tuple().exponent
    if not isinstance(exponent, int) or exponent < -_SCALE:
        return None
    return int(_decimal(value).scaleb(_SCALE))


@lru_cache(maxsize=1 << 14)
def _is_low(total: int, count: int) -> bool:
    """`average(window) < LOW_EMOTION` for a window of `count` scaled scores summing
    to `total` (exactly the same Decimal arithmetic: both sums are exact)."""
    return float(Decimal(total).scaleb(-_SCALE) / count) < LOW_EMOTION


@lru_cache(maxsize=1 << 12)
def _low_below(count: int) -> int:
    """The least window sum (scaled) of `count` scores that is not low: `_is_low`
    is monotonic in the sum, so a comparison with this is `_is_low` exactly."""
    lo, hi = 0, count * 10**_SCALE  # low at 0; an average of 1 is not
    while lo < hi:
        mid = (lo + hi) // 2
        if _is_low(mid, count):
            lo = mid + 1
        else:
            hi = mid
    return lo


def window_lows(ordered: Sequence[Score], limit: int) -> list[bool]:
    """For each score, oldest first: is the average of the window ending there
    (the last `limit` scores) below LOW_EMOTION? Integer comparisons of window
    sums, one a score (the check-in timeline walks a whole history per score)."""
    scaled = [_scaled(s.value) for s in ordered]
    if None in scaled:  # a score with more than 20 decimals: the slow way
        return [
            (avg := average(ordered[max(0, i + 1 - limit) : i + 1])) is not None
            and avg < LOW_EMOTION
            for i in range(len(ordered))
        ]
    sums = [0, *itertools.accumulate(v or 0 for v in scaled)]
    head = min(len(ordered), limit)
    lows = [sums[k] < _low_below(k) for k in range(1, head + 1)]
    full = _low_below(limit)
    lows += [sums[k] - sums[k - limit] < full for k in range(limit + 1, len(sums))]
    return lows


def _changes(lows: Sequence[bool]) -> list[int]:
    """The positions where the band changes (the first one too, if low)."""
    return [i for i in range(len(lows)) if lows[i] != (lows[i - 1] if i else False)]


def average(scores: Sequence[Score]) -> float | None:
    """The mean of the scores as written: 0.7 and 0.1 average to 0.4, not 0.39999999999999997.

    Binary float sums would put averages that are exactly on a threshold in the wrong band.
    """
    if not scores:
        return None
    return float(sum((_decimal(s.value) for s in scores), Decimal(0)) / len(scores))


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
        return zone(user.timezone)
    return policy.default_timezone


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """ZoneInfo(name), without its lookup on every event (ZoneInfo caches the
    object, but finding it again costs more than the rest of a re-engagement)."""
    return ZoneInfo(name)


def _score_order(s: Score) -> tuple[datetime, str]:
    return (s.scored_at, s.message_id)


def merge_score(scores: tuple[Score, ...], new: Score, cap: int) -> tuple[Score, ...]:
    """The history (newest first) with one more score: one per message (the
    greatest by (scored_at, value) when a message is scored twice), the newest
    `cap` by (scored_at, message_id). Associative and commutative: the history
    of a set of scores does not depend on the order they were merged in."""
    kept = [s for s in scores if s.message_id != new.message_id]
    if len(kept) < len(scores):
        old = next(s for s in scores if s.message_id == new.message_id)
        if (old.scored_at, old.value) >= (new.scored_at, new.value):
            return scores
    kept.append(new)
    kept.sort(key=_score_order, reverse=True)
    return tuple(kept[:cap])


def chains(bookings: Iterable[Booking]) -> list[list[Booking]]:
    """Confirmed bookings in (event_date, booking_id) order, cut wherever two
    neighbours are more than JOIN_WINDOW apart: each part shares one follow-up.

    Single linkage is what "joins a follow-up within ±1 day" becomes when the
    result may not depend on which booking came first: a run of bookings each
    within a day of the next is one follow-up, however long the run.
    """
    by_id = {b.booking_id: b for b in bookings}
    dated = [
        (b.event_date, b.booking_id)
        for b in by_id.values()
        if b.confirmed_at is not None and b.event_date is not None
    ]
    return [[by_id[k] for _, k in run] for run in _runs(dated)]


def _runs(dated: Iterable[tuple[datetime, str]]) -> list[list[tuple[datetime, str]]]:
    """(event_date, booking_id) pairs in order, cut where neighbours are more than
    JOIN_WINDOW apart: the chains, on dates and ids alone."""
    out: list[list[tuple[datetime, str]]] = []
    for pair in sorted(dated):
        if out and pair[0] - out[-1][-1][0] <= JOIN_WINDOW:
            out[-1].append(pair)
        else:
            out.append([pair])
    return out


def touched_chains(dated: Iterable[tuple[datetime, str]], dates: Iterable[datetime]) -> set[str]:
    """The booking ids of the chains (of one user's confirmed, dated bookings, as
    (event_date, booking_id)) that a booking event at any of `dates` can change: a
    booking dated there joins, or leaves, only a chain that reaches within
    JOIN_WINDOW of it. The other chains, and their follow-ups, stay as they are:
    the store need not load them (a long history is not read on every booking).
    The PostgreSQL store finds the same set in SQL (`TOUCHED_BOOKINGS`); its
    integration tests hold the two equal."""
    wanted = sorted(dates)
    out: set[str] = set()
    for run in _runs(dated):
        low, high = run[0][0] - JOIN_WINDOW, run[-1][0] + JOIN_WINDOW
        i = bisect.bisect_left(wanted, low)
        if i < len(wanted) and wanted[i] <= high:
            out.update(k for _, k in run)
    return out


def _cancel_order(at: datetime, reason: str | None) -> tuple[datetime, bool, str]:
    return (at, reason is not None, reason or "")


# --- decide -----------------------------------------------------------------------


def decide(state: State, event: InputEvent, policy: Policy, now: datetime) -> list[Change]:
    """The changes one input event causes."""
    d = _Decision(state, policy, now)
    match event:
        case BookingConfirmed():
            d.booking_confirmed(event)
        case BookingCancelled():
            d.booking_cancelled(event)
        case EmotionScored():
            d.emotion_scored(event)
        case UserActivity():
            d.user_activity(event)
        case _:
            assert_never(event)
    return d.finish()


class _Decision:
    """Collects the changes of one event so later steps see earlier ones."""

    def __init__(self, state: State, policy: Policy, now: datetime) -> None:
        self.state = state
        self.policy = policy
        self.now = now
        self.changes: list[Change] = []
        self._followups: dict[str, Followup] = {}
        self._removed: set[str] = set()
        self._bookings: dict[str, Booking] = {}
        self._users: dict[str, UserState] = {}

    # --- reads that see this decision's own changes first ----------------------------

    def _followup(self, id_: str | None) -> Followup | None:
        if id_ is None or id_ in self._removed:
            return None
        return self._followups.get(id_) or self.state.followup(id_)

    def _overlaid(self, loaded: Iterable[Followup], mine: Iterable[str]) -> list[Followup]:
        """Loaded rows as this decision left them, plus this decision's rows `mine`;
        the caller filters (a row may have changed user or status here)."""
        if not self._followups and not self._removed:
            return list(loaded)  # nothing of ours yet: the common case
        seen = {f.id: self._followups.get(f.id, f) for f in loaded}
        seen.update({k: self._followups[k] for k in mine})
        return [f for k, f in seen.items() if k not in self._removed]

    def _pending(self, user_id: str) -> list[Followup]:
        rows = self._overlaid(self.state.pending_followups(user_id), self._followups)
        return [f for f in rows if f.status is Status.PENDING and f.user_id == user_id]

    def _post_event_rows(self, user_id: str) -> list[Followup]:
        rows = self._overlaid(self.state.post_event_followups(user_id), self._followups)
        return [
            f for f in rows if f.user_id == user_id and f.trigger_type is TriggerType.POST_EVENT
        ]

    def _checkin_rows(self, conversation_id: str) -> list[Followup]:
        rows = self._overlaid(self.state.checkins(conversation_id), self._followups)
        return [
            f
            for f in rows
            if f.conversation_id == conversation_id and f.trigger_type is TriggerType.EMOTION_BASED
        ]

    def _booking(self, booking_id: str) -> Booking | None:
        return self._bookings.get(booking_id) or self.state.booking(booking_id)

    def _bookings_of(self, user_id: str) -> list[Booking]:
        seen = {b.booking_id: b for b in self.state.bookings_of(user_id)}
        seen.update(self._bookings)
        return [b for b in seen.values() if b.user_id == user_id]

    def _user(self, user_id: str) -> UserState:
        return self._users.get(user_id) or self.state.user(user_id) or UserState(user_id)

    # --- writes ------------------------------------------------------------------------

    def _put(self, change: Followup | Booking | Conversation) -> None:
        if isinstance(change, Followup):
            self._followups[change.id] = change
            self._removed.discard(change.id)
        elif isinstance(change, Booking):
            self._bookings[change.booking_id] = change
        self.changes.append(change)

    def _remove(self, f: Followup) -> None:
        assert not f.is_fixed
        self._followups.pop(f.id, None)
        self._removed.add(f.id)
        self.changes.append(Removed(f))

    def _set_user(self, user: UserState) -> None:
        self._users[user.user_id] = user

    def finish(self) -> list[Change]:
        """The changes, with each user's final state once (if it changed)."""
        for user_id, user in self._users.items():
            if user != self.state.user(user_id):
                self.changes.append(user)
        return self.changes

    def _room_for_one_more(self, user_id: str, trigger: TriggerType, *, count: bool = True) -> bool:
        """Whether the user may have one more pending follow-up; when not, the
        refusal is counted (unless `count` is False: a retry that was counted when
        it was first refused)."""
        if len(self._pending(user_id)) < self.policy.max_pending_per_user:
            return True
        if count:
            self.changes.append(Refused(user_id, trigger))
            user = self._user(user_id)
            self._set_user(evolve(user, refused_followups=user.refused_followups + 1))
        return False

    # --- the four topics ------------------------------------------------------------

    def booking_confirmed(self, e: BookingConfirmed) -> None:
        user = self._user(e.user_id)
        tz_changed = False
        # The user's zone: from the confirmation with the greatest (occurred_at,
        # timezone) among all of theirs, superseded ones included.
        if e.timezone and (
            user.timezone_at is None
            or (e.occurred_at, e.timezone) > (user.timezone_at, user.timezone or "")
        ):
            tz_changed = e.timezone != user.timezone
            self._set_user(evolve(user, timezone=e.timezone, timezone_at=e.occurred_at))
        old = self.state.booking(e.booking_id)
        booking = old or Booking(e.booking_id, e.user_id)
        # The latest confirmation wins, by (occurred_at, event_id).
        if booking.confirmed_at is None or (e.occurred_at, e.event_id) > (
            booking.confirmed_at,
            booking.confirm_event_id or "",
        ):
            booking = evolve(
                booking,
                user_id=e.user_id,
                event_date=e.event_date,
                conversation_id=e.conversation_id,
                timezone=e.timezone,
                confirmed_at=e.occurred_at,
                confirm_event_id=e.event_id,
            )
        if booking != old:
            self._put(booking)
            # The new owner first: it takes the booking over before the previous
            # owner's follow-up of it goes (see `_reconcile_post_event`).
            self._reconcile_post_event(booking.user_id, {e.booking_id})
            if old is not None and old.confirmed_at is not None and old.user_id != booking.user_id:
                self._reconcile_post_event(old.user_id, {e.booking_id})
        self._touch(e.user_id, e.occurred_at, tz_changed=tz_changed)
        self._project_locale(e.user_id, e.locale, e.occurred_at)

    def booking_cancelled(self, e: BookingCancelled) -> None:
        old = self.state.booking(e.booking_id)
        booking = old or Booking(e.booking_id, e.user_id)
        # Sticky, and the earliest cancellation wins (then the reason, for ties).
        # Not confirmed yet, it belongs to the user of that cancellation (the
        # smallest user id, for a tie).
        ours = _cancel_order(e.occurred_at, e.reason)
        theirs = (
            None
            if booking.cancelled_at is None
            else _cancel_order(booking.cancelled_at, booking.cancel_reason)
        )
        if theirs is None or ours < theirs:
            booking = evolve(booking, cancelled_at=e.occurred_at, cancel_reason=e.reason)
            if booking.confirmed_at is None:
                booking = evolve(booking, user_id=e.user_id)
        elif ours == theirs and booking.confirmed_at is None and e.user_id < booking.user_id:
            booking = evolve(booking, user_id=e.user_id)
        if booking != old:
            self._put(booking)
            if booking.confirmed_at is not None:
                self._reconcile_post_event(booking.user_id, {e.booking_id})

    def emotion_scored(self, e: EmotionScored) -> None:
        conv = self.state.conversation(e.conversation_id)
        base = conv or Conversation(e.conversation_id, e.user_id)
        scores = merge_score(
            base.scores,
            Score(e.message_id, e.occurred_at, e.score),
            self.policy.score_history_cap,
        )
        # A conversation scored under several user ids (a producer's mistake)
        # belongs to the smallest: any choice that does not depend on order would do.
        owner = min(base.user_id, e.user_id) if base.user_id else e.user_id
        if conv is None or scores != base.scores or owner != base.user_id:
            updated = Conversation(e.conversation_id, owner, scores, base.checkin_id)
            self._put(self._reconcile_checkins(updated, e.message_id))
        self._touch(e.user_id, e.occurred_at)

    def user_activity(self, e: UserActivity) -> None:
        self._touch(e.user_id, e.occurred_at)
        self._project_locale(e.user_id, e.locale, e.occurred_at)

    def _project_locale(self, user_id: str, locale: str | None, occurred_at: datetime) -> None:
        """The user's locale, like their zone: from the event with the greatest
        (occurred_at, locale) that carried one, whatever order they came in."""
        user = self._user(user_id)
        if locale and (
            user.locale_at is None or (occurred_at, locale) > (user.locale_at, user.locale or "")
        ):
            self._set_user(evolve(user, locale=locale, locale_at=occurred_at))

    # --- post-event ---------------------------------------------------------------

    def _reconcile_post_event(self, user_id: str, changed: set[str]) -> None:
        """Make the user's post-event follow-ups what their bookings call for.

        One follow-up per chain of confirmed bookings (see `chains`), cancelled
        ones included so that a cancellation never splits a chain; named after the
        chain's first booking; due FOLLOWUP_DELAY after the latest event among its
        uncancelled bookings; `cancelled` when all of them are, at the latest
        cancellation. A chain with a booking whose follow-up was already sent (or
        is being sent, failed, was cancelled by an operator) is covered by that
        follow-up. Rows no chain calls for, never sent, are removed.
        """
        bookings = self._bookings_of(user_id)
        rows = {f.id: f for f in self._post_event_rows(user_id)}
        fixed = {k for k, f in rows.items() if f.is_fixed}
        covered_by = self._covered_by(bookings, rows, fixed)
        links: dict[str, str | None] = {}
        wanted = self._wanted(user_id, bookings, covered_by, fixed, links)
        wanted_ids = {f.id for f, _ in wanted}
        for k, f in rows.items():
            if k not in fixed and k not in wanted_ids:
                self._remove(f)
        new: list[tuple[Followup, list[Booking]]] = []
        for f, chain in wanted:
            existing = rows.get(f.id)
            if existing is None:
                new.append((f, chain))
                continue
            if f != existing:
                self._put(f)
            for b in chain:
                links[b.booking_id] = f.id
        self._admit_new(user_id, new, changed, links)
        for b in bookings:
            link = links.get(b.booking_id) if b.confirmed_at is not None else None
            if link != b.followup_id:
                self._put(evolve(b, followup_id=link))

    def _wanted(
        self,
        user_id: str,
        bookings: list[Booking],
        covered_by: dict[str, str],
        fixed: set[str],
        links: dict[str, str | None],
    ) -> list[tuple[Followup, list[Booking]]]:
        """The rows the user's chains call for; the bookings of covered chains
        linked to the follow-up that covers them."""
        wanted: list[tuple[Followup, list[Booking]]] = []
        for chain in chains(bookings):
            sent = [covered_by[b.booking_id] for b in chain if b.booking_id in covered_by]
            if sent:
                for b in chain:
                    links[b.booking_id] = covered_by.get(b.booking_id, sent[0])
                continue
            f = self._chain_followup(user_id, chain)
            if f.id in fixed:
                for b in chain:
                    links[b.booking_id] = f.id
                continue
            wanted.append((f, chain))
        return wanted

    def _covered_by(
        self, bookings: list[Booking], rows: dict[str, Followup], fixed: set[str]
    ) -> dict[str, str]:
        """Booking -> the follow-up, sent or otherwise out of the rules' hands,
        that covers it."""
        covered_by: dict[str, str] = {}
        for k in sorted(fixed):
            for booking_id in rows[k].booking_ids:
                covered_by.setdefault(booking_id, k)
        for b in bookings:
            ref = b.followup_id
            if (
                ref is not None
                and b.booking_id not in covered_by
                and ref not in self._removed
                and self._followup(ref) is None
            ):
                # Its follow-up is gone while it still points at it: deleted by
                # retention, which only deletes executed ones. It was sent.
                covered_by[b.booking_id] = ref
        return covered_by

    def _admit_new(
        self,
        user_id: str,
        new: list[tuple[Followup, list[Booking]]],
        changed: set[str],
        links: dict[str, str | None],
    ) -> None:
        """Write the chains' new rows, within the per-user limit (order-sensitive
        by nature): those of chains this event changed first, then by time."""

        def affected(chain: list[Booking]) -> bool:
            return any(b.booking_id in changed for b in chain)

        new.sort(key=lambda item: (not affected(item[1]), item[0].scheduled_at, item[0].id))
        for f, chain in new:
            hit = affected(chain)
            if not hit and all(b.followup_id is None for b in chain):
                # Refused by the limit before, and nothing about it changed since:
                # it stays refused (a retry here would depend on arrival order).
                ok = False
            elif f.status is Status.PENDING:
                ok = self._room_for_one_more(user_id, TriggerType.POST_EVENT, count=hit)
            else:
                ok = True  # expired or cancelled: not one more pending follow-up
            if ok:
                self._put(f)
            for b in chain:
                links[b.booking_id] = f.id if ok else None

    def _chain_followup(self, user_id: str, chain: list[Booking]) -> Followup:
        if len(chain) == 1:  # most of them: the same, quicker
            b = chain[0]
            assert b.event_date is not None
            at = b.event_date + self.policy.followup_delay
            live = b.cancelled_at is None
            return Followup(
                id=post_event_id(user_id, b.booking_id),
                user_id=user_id,
                conversation_id=b.conversation_id or default_conversation_id(b.booking_id),
                trigger_type=TriggerType.POST_EVENT,
                scheduled_at=at,
                status=status_for(at, self.policy, self.now) if live else Status.CANCELLED,
                booking_ids=(b.booking_id,),
                active_booking_ids=(b.booking_id,) if live else (),
                booking_dates=((b.booking_id, b.event_date),),
                event_date=b.event_date,
                cancelled_at=b.cancelled_at,
            )
        active = [b for b in chain if b.cancelled_at is None]
        lead = (active or chain)[0]
        dates = [b.event_date for b in (active or chain) if b.event_date is not None]
        event_date = max(dates)
        at = event_date + self.policy.followup_delay
        cancelled = [b.cancelled_at for b in chain if b.cancelled_at is not None]
        return Followup(
            id=post_event_id(user_id, chain[0].booking_id),
            user_id=user_id,
            conversation_id=lead.conversation_id or default_conversation_id(lead.booking_id),
            trigger_type=TriggerType.POST_EVENT,
            scheduled_at=at,
            status=status_for(at, self.policy, self.now) if active else Status.CANCELLED,
            booking_ids=tuple(b.booking_id for b in chain),
            active_booking_ids=tuple(b.booking_id for b in active),
            booking_dates=tuple(
                sorted((b.booking_id, b.event_date) for b in chain if b.event_date is not None)
            ),
            event_date=event_date,
            cancelled_at=None if active else max(cancelled),
        )

    # --- emotion ------------------------------------------------------------------

    def checkin_timeline(self, conv: Conversation) -> list[Followup]:
        """The check-ins the conversation's scores call for, walking them in
        (scored_at, message_id) order with the rolling window: a check-in when the
        average falls below 0.4 (none while one is open, i.e. before its time),
        cancelled when it recovers to 0.4 or more before that time."""
        ordered = list(reversed(conv.scores))
        lows = window_lows(ordered, self.policy.history_limit)
        found: list[tuple[Score, datetime | None]] = []  # (the fall, cancelled at)
        open_due: datetime | None = None  # the last one found, while cancellable
        delay = self.policy.checkin_delay
        # Only where the window's band changes can anything happen; whether the
        # open one's time came is checked there (scored_at never decreases).
        for i in _changes(lows):
            s = ordered[i]
            if open_due is not None and s.scored_at >= open_due:
                open_due = None  # its time came: sent (or expired), no longer cancellable
            if lows[i] and open_due is None:
                found.append((s, None))
                open_due = s.scored_at + delay
            elif not lows[i] and open_due is not None:
                found[-1] = (found[-1][0], s.scored_at)
                open_due = None
        out = []
        for fall, cancelled_at in found:
            at = fall.scored_at + delay
            out.append(
                Followup(
                    id=emotion_checkin_id(conv.user_id, conv.conversation_id, fall.message_id),
                    user_id=conv.user_id,
                    conversation_id=conv.conversation_id,
                    trigger_type=TriggerType.EMOTION_BASED,
                    scheduled_at=at,
                    status=Status.CANCELLED
                    if cancelled_at is not None
                    else status_for(at, self.policy, self.now),
                    cancelled_at=cancelled_at,
                )
            )
        return out

    def _reconcile_checkins(self, conv: Conversation, new_message: str) -> Conversation:
        """Make the conversation's check-ins what its score history calls for;
        check-ins already sent (or being sent...) stay, and one due at the same
        time as such a row is that row. Rows no longer called for are removed."""
        rows = {f.id: f for f in self._checkin_rows(conv.conversation_id)}
        fixed_at = {f.scheduled_at: f.id for f in rows.values() if f.is_fixed}
        plan: list[tuple[Followup, str | None]] = []  # (wanted, the fixed row it is)
        for f in self.checkin_timeline(conv):
            existing = rows.get(f.id)
            if existing is not None and existing.is_fixed:
                plan.append((f, f.id))
            else:
                plan.append((f, fixed_at.get(f.scheduled_at)))
        wanted = {f.id for f, fixed in plan if fixed is None}
        for f in rows.values():
            if not f.is_fixed and f.id not in wanted:
                self._remove(f)
        latest: str | None = None
        for f, fixed in plan:
            if fixed is not None:
                latest = fixed
                continue
            existing = rows.get(f.id)
            if existing is None and f.status is Status.PENDING:
                # The per-user limit; counted when this score is the drop itself.
                caused = f.id == emotion_checkin_id(conv.user_id, conv.conversation_id, new_message)
                if not self._room_for_one_more(
                    conv.user_id, TriggerType.EMOTION_BASED, count=caused
                ):
                    continue
            if f != existing:
                self._put(f)
            latest = f.id
        if latest == conv.checkin_id:
            return conv
        return Conversation(conv.conversation_id, conv.user_id, conv.scores, latest)

    # --- activity and re-engagement ---------------------------------------------------

    def _touch(self, user_id: str, at: datetime, *, tz_changed: bool = False) -> None:
        """Record activity (never backwards) and keep the re-engagement in step."""
        user = self._user(user_id)
        newer = user.last_activity_at is None or at > user.last_activity_at
        if newer:
            user = evolve(user, last_activity_at=at)
            self._set_user(user)
        if newer or tz_changed:
            self._reengage(user_id, new_activity=newer)

    def _reengage(
        self, user_id: str, *, new_activity: bool, not_before: datetime | None = None
    ) -> None:
        user = self._user(user_id)
        last = user.last_activity_at
        assert last is not None
        due = reengagement_due(last, user_timezone(user, self.policy), self.policy)
        if not_before is not None and due < not_before:
            due = not_before
        status = status_for(due, self.policy, self.now)
        cycle = user.reengagement_cycle
        current = None if cycle is None else self._followup(reengagement_id(user_id, cycle))
        if current is not None and (
            current.is_open or (current.status is Status.EXPIRED and not current.in_flight)
        ):
            if (
                current.status is Status.EXPIRED
                and status is Status.PENDING
                and not self._room_for_one_more(user_id, TriggerType.RE_ENGAGEMENT)
            ):
                # Reviving one that was never sent makes it pending again: that is
                # one more pending follow-up, so the per-user limit applies.
                return
            # Newer activity moves it (an expired one is superseded in place).
            self._put(evolve(current, scheduled_at=due, activity_basis=last, status=status))
            return
        if current is not None and (current.in_flight or not new_activity):
            return  # being sent now, or nothing new since it was sent
        if cycle is not None and current is None and not new_activity:
            return
        if (
            current is not None
            and current.activity_basis is not None
            and last <= current.activity_basis
        ):
            return  # one was already sent for this activity
        if not self._room_for_one_more(user_id, TriggerType.RE_ENGAGEMENT):
            return
        next_cycle = 0 if cycle is None else cycle + 1
        self._put(
            Followup(
                id=reengagement_id(user_id, next_cycle),
                user_id=user_id,
                conversation_id="",
                trigger_type=TriggerType.RE_ENGAGEMENT,
                scheduled_at=due,
                status=status,
                activity_basis=last,
            )
        )
        self._set_user(evolve(self._user(user_id), reengagement_cycle=next_cycle))

    # --- an operator's follow-up ---------------------------------------------------------

    def custom(self, followup: Followup) -> list[Change]:
        if self._room_for_one_more(followup.user_id, TriggerType.CUSTOM):
            self._put(followup)
        return self.finish()

    # --- the daily sweep ------------------------------------------------------------------

    def sweep(self, user_id: str) -> list[Change]:
        user = self.state.user(user_id)
        if user is None or user.last_activity_at is None:
            return self.finish()
        if user.last_activity_at > self.now - self.policy.inactive_after:
            return self.finish()  # not idle yet: ingest keeps its re-engagement in step
        soonest = next_send_time(self.now, user_timezone(user, self.policy), self.policy)
        self._reengage(user_id, new_activity=True, not_before=soonest)
        return self.finish()


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
