"""consumer.domain.rules, with consumer.domain.working_set.WorkingSet as the state it reads.

Every rule of CONTRACT.md ("What the consumer does with them") and the design
notes: deterministic ids, event time for scheduling, `now` only for lateness.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from itertools import permutations
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from consumer.domain.events import (
    BookingCancelled,
    BookingConfirmed,
    EmotionScored,
    InputEvent,
    UserActivity,
)
from consumer.domain.model import (
    Change,
    Followup,
    Refused,
    Removed,
    Score,
    Status,
    TriggerType,
    UserState,
    emotion_checkin_id,
    followup_id,
    post_event_id,
    reengagement_id,
)
from consumer.domain.policy import Policy
from consumer.domain.rules import decide, emotion_band, reengagement_due, status_for
from consumer.domain.working_set import WorkingSet

NY = ZoneInfo("America/New_York")
# A Monday, 08:00 UTC: activity then makes a re-engagement due at 09:00 UTC 30 days later.
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
NOW = T0
EVENT_DATE = datetime(2026, 3, 20, 18, 0, tzinfo=UTC)
POLICY = Policy()
MS = timedelta(milliseconds=1)
H = timedelta(hours=1)
D = timedelta(days=1)

POST = TriggerType.POST_EVENT
CHECKIN = TriggerType.EMOTION_BASED
REENGAGE = TriggerType.RE_ENGAGEMENT


# --- event factories ---------------------------------------------------------------


def confirmed(
    booking: str = "b1",
    event_date: datetime = EVENT_DATE,
    *,
    at: datetime = T0,
    user: str = "u1",
    tz: str | None = None,
    conv: str | None = None,
    eid: str | None = None,
) -> BookingConfirmed:
    return BookingConfirmed(
        event_id=eid or f"conf:{booking}:{at.isoformat()}:{event_date.isoformat()}:{tz}",
        occurred_at=at,
        user_id=user,
        booking_id=booking,
        event_date=event_date,
        conversation_id=conv or f"booking_{booking}",
        timezone=tz,
    )


def cancelled(
    booking: str = "b1",
    *,
    at: datetime = T0,
    user: str = "u1",
    reason: str | None = None,
    eid: str | None = None,
) -> BookingCancelled:
    return BookingCancelled(
        event_id=eid or f"cancel:{booking}:{at.isoformat()}",
        occurred_at=at,
        user_id=user,
        booking_id=booking,
        reason=reason,
    )


def scored(
    score: float,
    msg: str,
    *,
    at: datetime = T0,
    conv: str = "c1",
    user: str = "u1",
    eid: str | None = None,
) -> EmotionScored:
    return EmotionScored(
        event_id=eid or f"score:{conv}:{msg}:{at.isoformat()}:{score}",
        occurred_at=at,
        user_id=user,
        conversation_id=conv,
        message_id=msg,
        score=score,
        label=None,
    )


def activity(at: datetime = T0, *, user: str = "u1", eid: str | None = None) -> UserActivity:
    return UserActivity(
        event_id=eid or f"act:{user}:{at.isoformat()}",
        occurred_at=at,
        user_id=user,
        activity_type="login",
        conversation_id=None,
    )


# --- helpers -----------------------------------------------------------------------


def run(
    ws: WorkingSet, *events: InputEvent, now: datetime = NOW, policy: Policy = POLICY
) -> list[Change]:
    """Decide and apply each event in turn; all the changes, in order."""
    out: list[Change] = []
    for e in events:
        changes = decide(ws, e, policy, now)
        ws.apply(changes)
        out.extend(changes)
    return out


def fresh(*events: InputEvent, now: datetime = NOW, policy: Policy = POLICY) -> WorkingSet:
    ws = WorkingSet()
    run(ws, *events, now=now, policy=policy)
    return ws


def snapshot(ws: WorkingSet) -> tuple[dict[Any, Any], ...]:
    return (
        dict(ws.users),
        dict(ws.bookings),
        dict(ws.conversations),
        dict(ws.followups),
        dict(ws.refused),
    )


def of_type(
    ws: WorkingSet, trigger: TriggerType, *, status: Status | None = None
) -> list[Followup]:
    return [
        f
        for f in ws.followups.values()
        if f.trigger_type is trigger and (status is None or f.status is status)
    ]


def pending_of(ws: WorkingSet, user: str = "u1") -> list[Followup]:
    return [f for f in ws.followups.values() if f.user_id == user and f.status is Status.PENDING]


def post_event(ws: WorkingSet, booking: str = "b1") -> Followup:
    fid = ws.bookings[booking].followup_id
    assert fid is not None
    return ws.followups[fid]


def checkin(ws: WorkingSet, conv: str = "c1") -> Followup:
    fid = ws.conversations[conv].checkin_id
    assert fid is not None
    return ws.followups[fid]


def reengagement(ws: WorkingSet, user: str = "u1") -> Followup:
    cycle = ws.users[user].reengagement_cycle
    assert cycle is not None
    return ws.followups[reengagement_id(user, cycle)]


def mark(ws: WorkingSet, f: Followup, status: Status = Status.EXECUTED) -> None:
    """What the dispatcher (or an operator, for `cancelled`) does: the follow-up
    fired (or failed, was cancelled by hand, expired)."""
    ws.apply([replace(f, status=status, operator_cancelled=status is Status.CANCELLED)])


def pid(booking: str = "b1", user: str = "u1") -> str:
    """The post-event follow-up of the chain whose first booking is `booking`."""
    return post_event_id(user, booking)


def cid(message: str, conv: str = "c1") -> str:
    """The check-in caused by the score of `message`."""
    return emotion_checkin_id("u1", conv, message)


def custom(i: int, user: str = "u1") -> Followup:
    return Followup(
        id=f"custom-{i}",
        user_id=user,
        conversation_id="c0",
        trigger_type=TriggerType.CUSTOM,
        scheduled_at=T0 + 10 * D,
        custom_message="hello",
    )


# --- ids ---------------------------------------------------------------------------


def test_followup_id_is_deterministic_and_depends_on_every_part() -> None:
    assert followup_id("post_event", "e1") == followup_id("post_event", "e1")
    assert followup_id("post_event", "e1") != followup_id("post_event", "e2")
    assert followup_id("post_event", "e1") != followup_id("emotion_based", "e1")
    # Parts are separated, not concatenated.
    assert followup_id("ab", "c") != followup_id("a", "bc")


def test_reengagement_id_differs_per_user_and_cycle() -> None:
    ids = {reengagement_id(u, c) for u in ("u1", "u2") for c in (0, 1)}
    assert len(ids) == 4
    assert reengagement_id("u1", 0) == followup_id("re_engagement", "u1", "0")


# --- post-event --------------------------------------------------------------------


def test_confirmation_schedules_a_post_event_followup_at_event_date_plus_delay() -> None:
    ws = fresh(confirmed(conv="c9"))
    fid = pid("b1")
    assert fid == followup_id("post_event", "u1", "b1")
    assert ws.followups[fid] == Followup(
        id=fid,
        user_id="u1",
        conversation_id="c9",
        trigger_type=POST,
        scheduled_at=EVENT_DATE + 24 * H,
        status=Status.PENDING,
        booking_ids=("b1",),
        active_booking_ids=("b1",),
        booking_dates=(("b1", EVENT_DATE),),
        event_date=EVENT_DATE,
    )
    assert ws.bookings["b1"].followup_id == fid
    assert ws.bookings["b1"].is_live
    assert len(of_type(ws, POST)) == 1


def test_post_event_delay_comes_from_the_policy() -> None:
    ws = fresh(confirmed(), policy=Policy(followup_delay=2 * H))
    assert post_event(ws).scheduled_at == EVENT_DATE + 2 * H


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(confirmed(), id="booking"),
        pytest.param(scored(0.1, "m1"), id="emotion"),
        pytest.param(activity(), id="activity"),
    ],
)
@pytest.mark.parametrize("now", [T0 - 365 * D, T0 + 2 * D], ids=["now-early", "now-late"])
def test_scheduling_uses_event_time_not_now(event: InputEvent, now: datetime) -> None:
    assert snapshot(fresh(event, now=now)) == snapshot(fresh(event, now=T0))


def test_reconfirmation_with_another_event_date_moves_the_followup_keeping_its_id() -> None:
    ws = fresh(confirmed(), confirmed(event_date=EVENT_DATE + 5 * D, at=T0 + H))
    f = post_event(ws)
    assert f.id == pid("b1")
    assert f.event_date == EVENT_DATE + 5 * D
    assert f.scheduled_at == EVENT_DATE + 5 * D + 24 * H
    assert f.status is Status.PENDING
    assert len(of_type(ws, POST)) == 1


def test_reconfirmation_with_another_conversation_moves_the_followup_there() -> None:
    ws = fresh(confirmed(conv="c1"), confirmed(conv="c2", at=T0 + H))
    assert post_event(ws).conversation_id == "c2"


def test_older_confirmation_changes_nothing_about_the_booking() -> None:
    ws = fresh(confirmed(at=T0 + H, tz="Europe/Berlin"))
    before = snapshot(ws)
    run(ws, confirmed(event_date=EVENT_DATE + 5 * D, at=T0, tz="America/New_York", conv="cx"))
    assert snapshot(ws) == before


def test_older_confirmation_still_counts_for_the_users_timezone() -> None:
    # Changed with issue 10: the user's zone comes from every confirmation of theirs,
    # superseded ones included (the greatest (occurred_at, timezone) with a zone).
    # Before, a superseded confirmation was ignored only when it arrived second:
    # this order gave no zone, the other order New York.
    ws = fresh(confirmed(at=T0 + H))
    run(ws, confirmed(event_date=EVENT_DATE + 5 * D, at=T0, tz="America/New_York", conv="cx"))
    assert (ws.users["u1"].timezone, ws.users["u1"].timezone_at) == ("America/New_York", T0)
    assert ws.bookings["b1"].event_date == EVENT_DATE
    assert ws.bookings["b1"].timezone is None
    assert reengagement(ws).scheduled_at.astimezone(NY).time() == time(9)
    assert snapshot(ws) == snapshot(
        fresh(
            confirmed(event_date=EVENT_DATE + 5 * D, at=T0, tz="America/New_York", conv="cx"),
            confirmed(at=T0 + H),
        )
    )


def test_timezones_of_confirmations_at_the_same_time_tie_break_by_name() -> None:
    a = confirmed("b1", at=T0, tz="America/New_York")
    b = confirmed("b2", EVENT_DATE + 9 * D, at=T0, tz="Europe/Berlin")
    assert fresh(a, b).users["u1"].timezone == fresh(b, a).users["u1"].timezone == "Europe/Berlin"


def test_the_users_locale_is_the_newest_any_booking_or_activity_carried() -> None:
    """Projected like the zone: the greatest (occurred_at, locale) among the events
    that carried one, whatever order they came in; events without one change nothing."""
    events: list[InputEvent] = [
        replace(confirmed("b1", at=T0), locale="de"),
        replace(activity(T0 + H), locale="fr-CA"),
        replace(confirmed("b2", EVENT_DATE + 9 * D, at=T0 + 2 * H), locale=None),
        activity(T0 + 3 * H),
    ]
    results = {
        (ws.users["u1"].locale, ws.users["u1"].locale_at)
        for ws in (fresh(*order) for order in permutations(events))
    }
    assert results == {("fr-CA", T0 + H)}
    tie = [replace(activity(T0), locale="fr"), replace(activity(T0, eid="x"), locale="es")]
    assert fresh(*tie).users["u1"].locale == fresh(*tie[::-1]).users["u1"].locale == "fr"


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        pytest.param(
            confirmed(at=T0),
            confirmed(event_date=EVENT_DATE + 3 * D, at=T0 + MS),
            id="by-occurred_at",
        ),
        pytest.param(
            confirmed(eid="e-a"),
            confirmed(event_date=EVENT_DATE + 3 * D, eid="e-b"),
            id="tie-by-event_id",
        ),
    ],
)
@pytest.mark.parametrize("newer_first", [False, True])
def test_last_confirmation_wins_regardless_of_arrival_order(
    older: BookingConfirmed, newer: BookingConfirmed, newer_first: bool
) -> None:
    ws = fresh(*((newer, older) if newer_first else (older, newer)))
    booking = ws.bookings["b1"]
    assert (booking.confirmed_at, booking.confirm_event_id) == (newer.occurred_at, newer.event_id)
    assert booking.event_date == EVENT_DATE + 3 * D
    assert post_event(ws).scheduled_at == EVENT_DATE + 3 * D + 24 * H
    assert len(of_type(ws, POST)) == 1


def test_reconfirmation_after_the_followup_fired_schedules_nothing_new() -> None:
    ws = fresh(confirmed())
    mark(ws, post_event(ws))
    run(ws, confirmed(at=T0 + H))
    assert [f.status for f in of_type(ws, POST)] == [Status.EXECUTED]


def test_reconfirmation_moving_the_event_into_the_distant_past_expires_the_followup() -> None:
    ws = fresh(confirmed(), confirmed(event_date=T0 - 10 * D, at=T0 + H))
    assert post_event(ws).status is Status.EXPIRED


# --- joining -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "offset",
    [timedelta(0), D, -D, 23 * H, -D + MS],
    ids=["same", "+1d", "-1d", "+23h", "-1d+1ms"],
)
def test_booking_within_one_day_of_a_pending_post_event_joins_it(offset: timedelta) -> None:
    ws = fresh(confirmed("b1"), confirmed("b2", EVENT_DATE + offset, at=T0 + H))
    # Named after the chain's first booking by (event date, booking id); its
    # bookings listed in that order.
    in_order = ("b2", "b1") if offset < timedelta(0) else ("b1", "b2")
    f = ws.followups[pid(in_order[0])]
    assert f.booking_ids == in_order
    assert f.active_booking_ids == in_order
    # Due a day after the later of the two events, whichever booking came first.
    assert f.scheduled_at == max(EVENT_DATE, EVENT_DATE + offset) + 24 * H
    assert ws.bookings["b2"].followup_id == f.id
    assert len(of_type(ws, POST)) == 1


def test_shared_followup_time_does_not_depend_on_which_booking_came_first() -> None:
    a = confirmed("b1", EVENT_DATE, at=T0)
    b = confirmed("b2", EVENT_DATE + 20 * H, at=T0 + H)
    one, other = fresh(a, b), fresh(b, a)
    [f1], [f2] = of_type(one, POST), of_type(other, POST)
    assert f1.scheduled_at == f2.scheduled_at == EVENT_DATE + 20 * H + 24 * H
    cancel_first = fresh(a, b, cancelled("b1", at=T0 + 2 * H))
    assert post_event(cancel_first).scheduled_at == EVENT_DATE + 20 * H + 24 * H
    cancel_second = fresh(a, b, cancelled("b2", at=T0 + 2 * H))
    assert post_event(cancel_second).scheduled_at == EVENT_DATE + 24 * H


@pytest.mark.parametrize("offset", [D + MS, -(D + MS), 3 * D], ids=["+1d+1ms", "-1d-1ms", "+3d"])
def test_booking_more_than_one_day_away_gets_its_own_followup(offset: timedelta) -> None:
    ws = fresh(confirmed("b1"), confirmed("b2", EVENT_DATE + offset, at=T0 + H))
    assert post_event(ws, "b1").booking_ids == ("b1",)
    f2 = post_event(ws, "b2")
    assert f2.id == pid("b2")
    assert f2.booking_ids == ("b2",)
    assert f2.scheduled_at == EVENT_DATE + offset + 24 * H
    assert len(of_type(ws, POST, status=Status.PENDING)) == 2


@pytest.mark.parametrize("order", list(permutations(range(3))), ids=str)
def test_a_chain_of_bookings_each_within_a_day_of_the_next_shares_one_followup(
    order: tuple[int, ...],
) -> None:
    # Changed with issue 10. b1 and b2 are 36h apart; b3 lies 22h after b1 and 14h
    # before b2. Before, b3 joined the nearer follow-up (b2's) when b1 and b2 came
    # first, but all three shared b1's when b3 came second: the result depended on
    # the order. Now a chain (single linkage) is one follow-up, in any order.
    events = [
        confirmed("b1", EVENT_DATE),
        confirmed("b2", EVENT_DATE + 36 * H),
        confirmed("b3", EVENT_DATE + 22 * H, at=T0 + H),
    ]
    ws = fresh(*(events[i] for i in order))
    [f] = of_type(ws, POST)
    assert f.id == pid("b1")
    assert f.booking_ids == ("b1", "b3", "b2")
    assert f.scheduled_at == EVENT_DATE + 36 * H + 24 * H
    assert {ws.bookings[b].followup_id for b in ("b1", "b2", "b3")} == {f.id}


def test_cancelling_the_booking_in_the_middle_of_a_chain_does_not_split_it() -> None:
    ws = fresh(
        confirmed("b1", EVENT_DATE),
        confirmed("b2", EVENT_DATE + 36 * H),
        confirmed("b3", EVENT_DATE + 22 * H, at=T0 + H),
        cancelled("b3", at=T0 + 2 * H),
    )
    [f] = of_type(ws, POST)
    assert f.booking_ids == ("b1", "b3", "b2")
    assert f.active_booking_ids == ("b1", "b2")
    assert f.status is Status.PENDING


def test_an_earlier_booking_joining_renames_the_followup_and_removes_the_old_row() -> None:
    ws = fresh(confirmed("b2", EVENT_DATE))
    old = post_event(ws, "b2")
    changes = run(ws, confirmed("b1", EVENT_DATE - 12 * H, at=T0 + H))
    assert Removed(old) in changes
    assert old.id not in ws.followups
    assert old.id in ws.removed_followups
    [f] = of_type(ws, POST)
    assert f.id == pid("b1")
    assert f.booking_ids == ("b1", "b2")


def test_booking_of_another_user_does_not_join() -> None:
    ws = fresh(confirmed("b1", user="u1"), confirmed("b2", user="u2", at=T0 + H))
    assert post_event(ws, "b1").id != post_event(ws, "b2").id
    assert post_event(ws, "b2").user_id == "u2"


@pytest.mark.parametrize(
    "fact",
    [
        pytest.param(lambda f: replace(f, status=Status.EXECUTED), id="executed"),
        pytest.param(lambda f: replace(f, status=Status.FAILED), id="failed"),
        pytest.param(
            lambda f: replace(f, status=Status.CANCELLED, operator_cancelled=True),
            id="cancelled-by-an-operator",
        ),
        pytest.param(lambda f: replace(f, in_flight=True), id="being-sent"),
    ],
)
def test_booking_within_a_day_of_a_followup_already_sent_is_covered_by_it(fact: Any) -> None:
    # Changed with issue 10. Before, b2 got a follow-up of its own when it came
    # after b1's was sent, but shared b1's when it came before: two messages or
    # one, by arrival order. Now the chain's follow-up is the one sent, either way.
    ws = fresh(confirmed("b1"))
    sent = fact(post_event(ws, "b1"))
    ws.apply([sent])
    changes = run(ws, confirmed("b2", at=T0 + H))
    assert ws.followups[sent.id] == sent
    assert [f.id for f in of_type(ws, POST)] == [sent.id]
    assert ws.bookings["b2"].followup_id == sent.id
    assert not any(isinstance(c, Followup) and c.trigger_type is POST for c in changes)


def test_a_followup_expired_by_the_dispatcher_is_recomputed_like_any_unsent_one() -> None:
    # Expired is not a fact: it is what `now` makes of a time. A new booking in the
    # chain moves it, and a time in the future makes it pending again.
    ws = fresh(confirmed("b1"))
    mark(ws, post_event(ws, "b1"), Status.EXPIRED)
    run(ws, confirmed("b2", EVENT_DATE + 12 * H, at=T0 + H))
    [f] = of_type(ws, POST)
    assert f.id == pid("b1")
    assert f.booking_ids == ("b1", "b2")
    assert f.status is Status.PENDING
    assert f.scheduled_at == EVENT_DATE + 12 * H + 24 * H


def test_booking_more_than_a_day_from_a_followup_already_sent_gets_its_own() -> None:
    ws = fresh(confirmed("b1"))
    mark(ws, post_event(ws, "b1"))
    run(ws, confirmed("b2", EVENT_DATE + 3 * D, at=T0 + H))
    assert post_event(ws, "b2").id == pid("b2")
    assert post_event(ws, "b2").status is Status.PENDING


def test_joined_booking_reconfirmed_far_away_leaves_the_shared_followup() -> None:
    moved = confirmed("b2", EVENT_DATE + 5 * D, at=T0 + 2 * H)
    ws = fresh(confirmed("b1"), confirmed("b2", at=T0 + H), moved)
    shared = ws.followups[pid("b1")]
    assert shared.status is Status.PENDING
    assert shared.booking_ids == ("b1",)
    assert shared.active_booking_ids == ("b1",)
    own = post_event(ws, "b2")
    assert own.id == pid("b2")
    assert own.scheduled_at == EVENT_DATE + 5 * D + 24 * H


def test_joined_booking_reconfirmed_within_the_window_stays_on_the_shared_followup() -> None:
    ws = fresh(
        confirmed("b1"),
        confirmed("b2", at=T0 + H),
        confirmed("b2", EVENT_DATE + 12 * H, at=T0 + 2 * H),
    )
    shared = ws.followups[pid("b1")]
    assert shared.active_booking_ids == ("b1", "b2")
    assert shared.scheduled_at == EVENT_DATE + 12 * H + 24 * H  # the later event's
    assert len(of_type(ws, POST)) == 1


# --- cancellation ------------------------------------------------------------------


def test_cancellation_cancels_the_bookings_pending_followup() -> None:
    ws = fresh(confirmed(), cancelled(at=T0 + 2 * H, reason="ill"))
    f = post_event(ws)
    assert f.status is Status.CANCELLED
    assert f.cancelled_at == T0 + 2 * H
    assert f.active_booking_ids == ()
    booking = ws.bookings["b1"]
    assert booking.cancelled_at == T0 + 2 * H
    assert booking.cancel_reason == "ill"
    assert not booking.is_live


def test_shared_followup_is_cancelled_only_when_all_its_bookings_are() -> None:
    ws = fresh(confirmed("b1"), confirmed("b2", at=T0 + H), cancelled("b1", at=T0 + 2 * H))
    f = post_event(ws, "b2")
    assert f.status is Status.PENDING
    assert f.active_booking_ids == ("b2",)
    assert f.booking_ids == ("b1", "b2")
    run(ws, cancelled("b2", at=T0 + 3 * H))
    f = post_event(ws, "b2")
    assert f.status is Status.CANCELLED
    assert f.cancelled_at == T0 + 3 * H


def test_cancellation_before_confirmation_is_sticky() -> None:
    # Changed with issue 10: a booking cancelled before its confirmation has the same
    # `cancelled` follow-up as one cancelled after (before: none at all).
    ws = fresh(cancelled(at=T0), confirmed(at=T0 + H))
    [f] = of_type(ws, POST)
    assert f.status is Status.CANCELLED
    assert f.cancelled_at == T0
    booking = ws.bookings["b1"]
    assert booking.cancelled_at == T0
    assert booking.event_date == EVENT_DATE
    assert booking.followup_id == f.id
    assert not booking.is_live


@pytest.mark.parametrize("cancel_first", [True, False])
@pytest.mark.parametrize("now", [NOW, EVENT_DATE + 10 * D], ids=["future", "long-past"])
def test_cancel_and_confirm_in_either_order_give_the_same_cancelled_followup(
    cancel_first: bool, now: datetime
) -> None:
    # Changed with issue 10 (the 13,000 rows): absent, expired or cancelled
    # before, by order; now `cancelled` whatever the order, and however long ago.
    c, b = cancelled(at=T0 + H), confirmed(at=T0)
    ws = fresh(*((c, b) if cancel_first else (b, c)), now=now)
    [f] = of_type(ws, POST)
    assert (f.id, f.status, f.cancelled_at) == (pid("b1"), Status.CANCELLED, T0 + H)
    assert ws.bookings["b1"].cancelled_at == T0 + H
    assert not ws.bookings["b1"].is_live


@pytest.mark.parametrize("order", list(permutations(range(3))), ids=str)
def test_earliest_of_several_cancellations_wins(order: tuple[int, ...]) -> None:
    events = [
        cancelled(at=T0 + 2 * H, reason="late"),
        cancelled(at=T0 + H, reason="weather"),
        cancelled(at=T0 + H, reason="ill"),  # same time: the reason breaks the tie
    ]
    ws = fresh(confirmed(), *(events[i] for i in order))
    assert (ws.bookings["b1"].cancelled_at, ws.bookings["b1"].cancel_reason) == (T0 + H, "ill")
    assert post_event(ws).cancelled_at == T0 + H


def test_booking_cancelled_before_confirmation_is_part_of_the_chain() -> None:
    # Changed with issue 10: the same as when the cancellation comes after (before,
    # it stayed out of the shared follow-up only when cancelled first).
    ws = fresh(confirmed("b1"), cancelled("b2"), confirmed("b2", at=T0 + H))
    f = ws.followups[pid("b1")]
    assert f.booking_ids == ("b1", "b2")
    assert f.active_booking_ids == ("b1",)
    assert ws.bookings["b2"].followup_id == f.id


def test_cancellation_leaves_a_fired_followup_as_it_is() -> None:
    ws = fresh(confirmed())
    fired = replace(post_event(ws), status=Status.EXECUTED)
    ws.apply([fired])
    run(ws, cancelled(at=T0 + H))
    assert ws.followups[fired.id] == fired
    assert ws.bookings["b1"].cancelled_at == T0 + H


def test_followup_deleted_by_retention_counts_as_sent() -> None:
    # Retention deletes executed rows; a booking still pointing at a row that is
    # gone was followed up: no new row for it, whatever comes next.
    before = fresh(confirmed())
    gone = post_event(before)
    ws = WorkingSet.of(
        users=before.users.values(),
        bookings=before.bookings.values(),
        followups=[f for f in before.followups.values() if f.id != gone.id],
    )
    run(ws, confirmed("b1", EVENT_DATE + 12 * H, at=T0 + H), confirmed("b2", at=T0 + H))
    assert of_type(ws, POST) == []
    assert ws.bookings["b1"].followup_id == ws.bookings["b2"].followup_id == gone.id


def test_cancellation_is_not_activity() -> None:
    ws = fresh(activity(T0))
    run(ws, cancelled(at=T0 + 5 * D))
    assert ws.users["u1"].last_activity_at == T0


def test_reconfirmation_after_cancellation_does_not_revive_the_followup() -> None:
    ws = fresh(
        confirmed(), cancelled(at=T0 + H), confirmed("b1", EVENT_DATE + 2 * D, at=T0 + 2 * H)
    )
    assert [f.status for f in of_type(ws, POST)] == [Status.CANCELLED]


# --- emotion projection ------------------------------------------------------------


def window(ws: WorkingSet, conv: str = "c1", policy: Policy = POLICY) -> tuple[Score, ...]:
    return ws.conversations[conv].window(policy.history_limit)


def test_the_window_is_the_newest_scores_up_to_the_limit() -> None:
    ws = fresh(*(scored(0.5, f"m{i}", at=T0 + i * H) for i in range(7)))
    assert [s.message_id for s in window(ws)] == ["m6", "m5", "m4", "m3", "m2"]
    # The history behind it keeps them all (for the check-in timeline).
    assert [s.message_id for s in ws.conversations["c1"].scores] == [
        f"m{i}" for i in range(6, -1, -1)
    ]


def test_history_limit_comes_from_the_policy() -> None:
    policy = Policy(history_limit=2)
    ws = fresh(*(scored(0.5, f"m{i}", at=T0 + i * H) for i in range(4)), policy=policy)
    assert [s.message_id for s in window(ws, policy=policy)] == ["m3", "m2"]


def test_history_keeps_the_newest_up_to_its_cap() -> None:
    policy = Policy(score_history_cap=3)
    ws = fresh(*(scored(0.5, f"m{i}", at=T0 + i * H) for i in (4, 0, 3, 1, 2)), policy=policy)
    assert [s.message_id for s in ws.conversations["c1"].scores] == ["m4", "m3", "m2"]


WINDOW_EVENTS = [scored(0.1 * i, f"m{i}", at=T0 + i * H) for i in range(7)]


@pytest.mark.parametrize(
    "order",
    [
        tuple(range(7)),
        tuple(reversed(range(7))),
        (3, 6, 0, 5, 1, 4, 2),
        (6, 5, 0, 1, 2, 3, 4),
    ],
    ids=["in-order", "reversed", "shuffled", "newest-first-then-old"],
)
def test_emotion_window_does_not_depend_on_arrival_order(order: Any) -> None:
    ws = fresh(*(WINDOW_EVENTS[i] for i in order))
    assert window(ws) == tuple(Score(f"m{i}", T0 + i * H, 0.1 * i) for i in (6, 5, 4, 3, 2))
    assert snapshot(ws) == snapshot(fresh(*WINDOW_EVENTS))


def test_scores_at_the_same_time_are_ordered_by_message_id() -> None:
    ws = fresh(*(scored(0.5, f"m{i}") for i in (3, 1, 6, 2, 5, 4)))
    assert [s.message_id for s in window(ws)] == ["m6", "m5", "m4", "m3", "m2"]


def test_duplicate_message_id_changes_the_projection_not_at_all() -> None:
    ws = fresh(scored(0.9, "m1"))
    before = snapshot(ws)
    run(ws, scored(0.1, "m1", eid="another-event"))
    assert snapshot(ws) == before


@pytest.mark.parametrize("newest_first", [False, True])
def test_a_message_scored_twice_keeps_its_latest_score_in_any_order(newest_first: bool) -> None:
    # Changed with issue 10: before, the first copy to arrive stayed.
    old, new = scored(0.9, "m1", at=T0), scored(0.1, "m1", at=T0 + H)
    ws = fresh(*((new, old) if newest_first else (old, new)))
    assert ws.conversations["c1"].scores == (Score("m1", T0 + H, 0.1),)
    assert checkin(ws).id == cid("m1")


def test_score_older_than_the_whole_window_changes_neither_window_nor_followups() -> None:
    ws = fresh(*(scored(0.9, f"m{i}", at=T0 + i * H) for i in range(1, 6)))
    before = snapshot(ws)
    run(ws, scored(0.5, "m0", at=T0))
    assert window(ws) == before[2]["c1"].window(POLICY.history_limit)
    assert snapshot(ws)[3] == before[3]
    assert ws.conversations["c1"].scores[-1] == Score("m0", T0, 0.5)


# --- emotion check-in --------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "drop"),
    [
        pytest.param((), 0.1, id="from-no-scores"),
        pytest.param((0.5,), 0.2, id="from-neutral"),
        pytest.param((0.4,), 0.3, id="from-exactly-0.4"),
        pytest.param((0.9, 0.4, 0.4, 0.4, 0.4), 0.0, id="evicting-a-high-score"),
    ],
)
def test_average_falling_below_04_schedules_one_checkin(
    history: tuple[float, ...], drop: float
) -> None:
    ws = fresh(*(scored(v, f"h{i}", at=T0 + i * MS) for i, v in enumerate(history)))
    assert of_type(ws, CHECKIN) == []
    run(ws, scored(drop, "m-drop", at=T0 + H))
    fid = cid("m-drop")
    assert fid == followup_id("emotion_based", "u1", "c1", "m-drop")
    assert of_type(ws, CHECKIN) == [
        Followup(
            id=fid,
            user_id="u1",
            conversation_id="c1",
            trigger_type=CHECKIN,
            scheduled_at=T0 + H + 24 * H,
        )
    ]
    assert ws.conversations["c1"].checkin_id == fid


@pytest.mark.parametrize(
    "values",
    [(0.4,), (0.5, 0.3), (0.7, 0.1), (0.4, 0.4, 0.4), (0.8, 0.2, 0.2)],
    ids=lambda v: "+".join(map(str, v)),
)
def test_average_of_exactly_04_is_not_low(values: tuple[float, ...]) -> None:
    # Arriving in this order, the average is >= 0.4 at every step and ends at exactly 0.4.
    ws = fresh(*(scored(v, f"m{i}", at=T0 + i * H) for i, v in enumerate(values)))
    assert of_type(ws, CHECKIN) == []


def test_checkin_delay_comes_from_the_policy() -> None:
    ws = fresh(scored(0.1, "m1"), policy=Policy(checkin_delay=3 * H))
    assert checkin(ws).scheduled_at == T0 + 3 * H


def test_no_second_checkin_while_one_is_open() -> None:
    # Falls, stays low, partly recovers (still below 0.4), falls further: all
    # before the check-in's time.
    ws = fresh(
        scored(0.3, "m1"),
        scored(0.2, "m2", at=T0 + H),
        scored(0.45, "m3", at=T0 + 2 * H),
        scored(0.0, "m4", at=T0 + 3 * H),
    )
    assert emotion_band(window(ws)) == "low"
    assert [f.id for f in of_type(ws, CHECKIN)] == [cid("m1")]


def test_a_new_fall_after_the_checkins_time_schedules_another() -> None:
    # Changed with issue 10. A check-in is open until its time (then it is sent, or
    # expired). Before, "open" meant "still pending in the table", so whether a
    # second fall got a check-in depended on whether the dispatcher had run yet.
    ws = fresh(scored(0.3, "m1"))
    scheduled = checkin(ws).scheduled_at
    # Recovers too late to cancel it, then falls again after its time.
    run(
        ws,
        scored(0.9, "m2", at=scheduled),
        scored(0.1, "m3", at=scheduled + H),
        scored(0.0, "m4", at=scheduled + 2 * H),
    )
    assert emotion_band(window(ws)) == "low"
    assert [(f.id, f.status) for f in of_type(ws, CHECKIN)] == [
        (cid("m1"), Status.PENDING),
        (cid("m4"), Status.PENDING),
    ]
    assert ws.conversations["c1"].checkin_id == cid("m4")


def test_a_late_older_score_is_placed_in_the_timeline() -> None:
    # The recovery is known first; the fall before it arrives later: the same
    # cancelled check-in as when they come in order.
    fall, recovery = scored(0.1, "m1", at=T0), scored(0.9, "m2", at=T0 + H)
    ws = fresh(recovery, fall)
    assert snapshot(ws) == snapshot(fresh(fall, recovery))
    f = checkin(ws)
    assert (f.id, f.status, f.cancelled_at) == (cid("m1"), Status.CANCELLED, T0 + H)


def test_checkin_already_sent_stays_and_is_not_scheduled_twice() -> None:
    ws = fresh(scored(0.1, "m1"))
    sent = replace(checkin(ws), status=Status.EXECUTED)
    ws.apply([sent])
    # A late score before it says the average never fell there: the row sent stays.
    run(ws, scored(1.0, "m0", at=T0 - H))
    assert of_type(ws, CHECKIN) == [sent]


def test_staying_low_schedules_no_further_checkin() -> None:
    ws = fresh(scored(0.3, "m1"), scored(0.2, "m2", at=T0 + H))
    mark(ws, checkin(ws))
    run(ws, scored(0.1, "m3", at=T0 + 30 * H))
    assert len(of_type(ws, CHECKIN)) == 1


@pytest.mark.parametrize(
    ("score", "at"),
    [(0.9, T0 + H), (0.9, T0 + 24 * H - MS), (0.5, T0 + 2 * H)],
    ids=["early", "just-before-due", "back-to-exactly-0.4"],
)
def test_recovery_before_the_checkin_is_due_cancels_it(score: float, at: datetime) -> None:
    ws = fresh(scored(0.3, "m1"), scored(score, "m2", at=at))
    f = checkin(ws)
    assert f.status is Status.CANCELLED
    assert f.cancelled_at == at


@pytest.mark.parametrize("at", [T0 + 24 * H, T0 + 30 * H], ids=["exactly-due", "after-due"])
def test_recovery_at_or_after_the_checkin_time_does_not_cancel_it(at: datetime) -> None:
    ws = fresh(scored(0.3, "m1"), scored(0.9, "m2", at=at))
    assert checkin(ws).status is Status.PENDING


def test_partial_recovery_still_below_04_does_not_cancel() -> None:
    ws = fresh(scored(0.1, "m1"), scored(0.6, "m2", at=T0 + H))  # avg 0.35
    assert checkin(ws).status is Status.PENDING


def test_new_drop_after_a_cancelled_checkin_schedules_a_new_one() -> None:
    ws = fresh(
        scored(0.3, "m1"), scored(0.6, "m2", at=T0 + H), scored(0.0, "m3", at=T0 + 2 * H)
    )  # 0.3, 0.45, 0.3
    assert ws.followups[cid("m1")].status is Status.CANCELLED
    f = checkin(ws)
    assert f.id == cid("m3")
    assert f.status is Status.PENDING
    assert f.scheduled_at == T0 + 2 * H + 24 * H


def test_checkins_are_per_conversation() -> None:
    ws = fresh(scored(0.1, "m1", conv="c1"), scored(0.1, "m2", conv="c2", at=T0 + H))
    assert checkin(ws, "c1").id != checkin(ws, "c2").id
    assert checkin(ws, "c2").conversation_id == "c2"


# --- activity projection -----------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(activity(T0 + H), id="user.activity"),
        pytest.param(confirmed(at=T0 + H), id="booking.confirmed"),
        pytest.param(scored(0.5, "m1", at=T0 + H), id="message.emotion_scored"),
    ],
)
def test_each_activity_kind_records_last_activity(event: InputEvent) -> None:
    ws = fresh(event)
    assert ws.users["u1"].last_activity_at == T0 + H


ACTIVITY_MIX: list[InputEvent] = [
    activity(T0 + H),
    confirmed(at=T0 + 3 * H),
    scored(0.5, "m1", at=T0 + 2 * H),
]


@pytest.mark.parametrize("order", list(permutations(range(3))), ids=str)
def test_last_activity_is_the_newest_regardless_of_arrival_order(order: tuple[int, ...]) -> None:
    ws = fresh(*(ACTIVITY_MIX[i] for i in order))
    assert ws.users["u1"].last_activity_at == T0 + 3 * H
    f = reengagement(ws)
    assert f.id == reengagement_id("u1", 0)
    assert f.activity_basis == T0 + 3 * H
    assert f.scheduled_at == reengagement_due(T0 + 3 * H, ZoneInfo("UTC"), POLICY)


def test_older_activity_does_not_move_last_activity_back() -> None:
    ws = fresh(activity(T0 + H))
    before = reengagement(ws)
    run(ws, activity(T0), scored(0.5, "m1", at=T0), confirmed(at=T0))
    assert ws.users["u1"].last_activity_at == T0 + H
    assert reengagement(ws) == before


# --- re-engagement -----------------------------------------------------------------


def test_first_activity_schedules_a_reengagement_at_send_hour_30_days_later() -> None:
    ws = fresh(activity(T0))
    fid = reengagement_id("u1", 0)
    assert ws.followups[fid] == Followup(
        id=fid,
        user_id="u1",
        conversation_id="",
        trigger_type=REENGAGE,
        scheduled_at=datetime(2026, 4, 1, 9, 0, tzinfo=UTC),
        activity_basis=T0,
    )
    assert ws.users["u1"].reengagement_cycle == 0


@pytest.mark.parametrize(
    ("last", "due"),
    [
        (datetime(2026, 3, 2, 8, 59, 59, 999000, tzinfo=UTC), datetime(2026, 4, 1, 9, tzinfo=UTC)),
        (datetime(2026, 3, 2, 9, 0, tzinfo=UTC), datetime(2026, 4, 1, 9, tzinfo=UTC)),
        (datetime(2026, 3, 2, 9, 0, 0, 1000, tzinfo=UTC), datetime(2026, 4, 2, 9, tzinfo=UTC)),
        (datetime(2026, 3, 2, 23, 59, tzinfo=UTC), datetime(2026, 4, 2, 9, tzinfo=UTC)),
        (datetime(2026, 3, 2, 0, 0, tzinfo=UTC), datetime(2026, 4, 1, 9, tzinfo=UTC)),
    ],
    ids=["just-before-9", "exactly-9", "just-after-9", "late-evening", "midnight"],
)
def test_reengagement_is_due_at_the_first_send_hour_at_or_after_the_idle_period(
    last: datetime, due: datetime
) -> None:
    assert reengagement_due(last, ZoneInfo("UTC"), POLICY) == due


@pytest.mark.parametrize(
    ("tz", "last", "due"),
    [
        # Spring forward (US: 2026-03-08 02:00 local).
        pytest.param(
            NY,
            datetime(2026, 2, 5, 15, 0, tzinfo=UTC),  # 10:00 EST -> 03-07 10:00 EST: next day
            datetime(2026, 3, 8, 13, 0, tzinfo=UTC),  # 09:00 EDT on the switch day
            id="ny-next-day-is-the-spring-switch",
        ),
        pytest.param(
            NY,
            datetime(2026, 2, 10, 12, 0, tzinfo=UTC),  # 07:00 EST -> 08:00 EDT
            datetime(2026, 3, 12, 13, 0, tzinfo=UTC),
            id="ny-spring-same-day",
        ),
        pytest.param(
            NY,
            datetime(2026, 2, 10, 13, 30, tzinfo=UTC),  # 08:30 EST -> 09:30 EDT: after 9
            datetime(2026, 3, 13, 13, 0, tzinfo=UTC),
            id="ny-spring-crossing-pushes-past-9",
        ),
        # Fall back (US: 2026-11-01 02:00 local).
        pytest.param(
            NY,
            datetime(2026, 10, 2, 12, 0, tzinfo=UTC),  # 08:00 EDT -> 07:00 EST
            datetime(2026, 11, 1, 14, 0, tzinfo=UTC),
            id="ny-fall-switch-day",
        ),
        pytest.param(
            NY,
            datetime(2026, 10, 2, 13, 30, tzinfo=UTC),  # 09:30 EDT -> 08:30 EST: before 9
            datetime(2026, 11, 1, 14, 0, tzinfo=UTC),
            id="ny-fall-crossing-pulls-before-9",
        ),
        pytest.param(
            NY,
            datetime(2026, 10, 1, 14, 0, tzinfo=UTC),  # 10:00 EDT -> 10-31 10:00 EDT
            datetime(2026, 11, 1, 14, 0, tzinfo=UTC),  # 09:00 EST on the switch day
            id="ny-next-day-is-the-fall-switch",
        ),
        pytest.param(
            ZoneInfo("Asia/Kolkata"),
            datetime(2026, 3, 2, 3, 0, tzinfo=UTC),  # 08:30 IST
            datetime(2026, 4, 1, 3, 30, tzinfo=UTC),  # 09:00 IST
            id="half-hour-offset",
        ),
    ],
)
def test_reengagement_due_stays_at_send_hour_local_across_dst(
    tz: ZoneInfo, last: datetime, due: datetime
) -> None:
    got = reengagement_due(last, tz, POLICY)
    assert got == due
    assert got.astimezone(tz).time() == time(9)
    assert got >= last + 30 * D


def test_reengagement_uses_the_bookings_timezone_across_dst() -> None:
    last = datetime(2026, 2, 5, 15, 0, tzinfo=UTC)
    ws = fresh(confirmed(at=last, tz="America/New_York"), now=last)
    assert reengagement(ws).scheduled_at == datetime(2026, 3, 8, 13, 0, tzinfo=UTC)


def test_reengagement_without_a_booking_timezone_uses_the_policy_default() -> None:
    ws = fresh(activity(T0), policy=Policy(default_timezone=ZoneInfo("Europe/Berlin")))
    # T0 + 30d is 2026-04-01 10:00 CEST (UTC+2), past 09:00: the next day, 09:00 CEST.
    assert reengagement(ws).scheduled_at == datetime(2026, 4, 2, 7, 0, tzinfo=UTC)


def test_reengagement_interval_and_hour_come_from_the_policy() -> None:
    policy = Policy(inactive_after=7 * D, send_hour=18)
    ws = fresh(activity(T0), policy=policy)
    assert reengagement(ws).scheduled_at == datetime(2026, 3, 9, 18, 0, tzinfo=UTC)


def test_newer_activity_moves_the_pending_reengagement_keeping_its_id() -> None:
    ws = fresh(activity(T0), activity(T0 + 3 * D))
    f = reengagement(ws)
    assert f.id == reengagement_id("u1", 0)
    assert f.activity_basis == T0 + 3 * D
    assert f.scheduled_at == datetime(2026, 4, 4, 9, 0, tzinfo=UTC)
    assert f.status is Status.PENDING


def test_older_activity_leaves_the_reengagement_alone() -> None:
    ws = fresh(activity(T0 + 3 * D))
    before = reengagement(ws)
    run(ws, activity(T0))
    assert reengagement(ws) == before


def test_user_has_at_most_one_pending_reengagement() -> None:
    ws = fresh(
        activity(T0),
        confirmed(at=T0 + H, tz="Europe/Berlin"),
        scored(0.5, "m1", at=T0 + 2 * H),
        activity(T0 + D),
        confirmed("b2", EVENT_DATE + 9 * D, at=T0 + 2 * D, tz="America/New_York"),
    )
    assert len(of_type(ws, REENGAGE)) == 1
    assert reengagement(ws).activity_basis == T0 + 2 * D


def test_reengagements_are_per_user() -> None:
    ws = fresh(activity(T0, user="u1"), activity(T0, user="u2"))
    assert reengagement(ws, "u1").id != reengagement(ws, "u2").id


def test_timezone_comes_from_the_newest_booking_with_a_timezone() -> None:
    ws = fresh(
        confirmed("b1", at=T0 + H, tz="America/New_York"),
        confirmed("b2", EVENT_DATE + 9 * D, at=T0, tz="Europe/Berlin"),  # older
        confirmed("b3", EVENT_DATE + 20 * D, at=T0 + 2 * H),  # newer, no timezone
    )
    assert ws.users["u1"].timezone == "America/New_York"
    assert reengagement(ws).scheduled_at.astimezone(NY).time() == time(9)


def test_booking_that_changes_the_timezone_moves_the_reengagement() -> None:
    ws = fresh(activity(T0))
    before = reengagement(ws)
    # Older than the last activity, so only the timezone changes.
    run(ws, confirmed(at=T0 - D, tz="America/New_York"))
    after = reengagement(ws)
    assert after.id == before.id
    assert after.activity_basis == T0
    assert after.scheduled_at == datetime(2026, 4, 1, 13, 0, tzinfo=UTC)  # 09:00 EDT


@pytest.mark.parametrize("at", [T0 - D, T0], ids=["older", "equal"])
def test_after_it_fired_activity_not_newer_than_its_basis_schedules_nothing(
    at: datetime,
) -> None:
    ws = fresh(activity(T0))
    mark(ws, reengagement(ws))
    before = snapshot(ws)
    run(ws, activity(at, eid="another"), scored(0.5, "m1", at=at))
    assert of_type(ws, REENGAGE, status=Status.PENDING) == []
    assert ws.users["u1"].reengagement_cycle == 0
    assert snapshot(ws)[3] == before[3]


def test_after_it_fired_a_timezone_change_alone_schedules_nothing() -> None:
    ws = fresh(activity(T0))
    mark(ws, reengagement(ws))
    run(ws, confirmed(at=T0 - D, tz="America/New_York"))
    assert of_type(ws, REENGAGE, status=Status.PENDING) == []


@pytest.mark.parametrize("outcome", [Status.EXECUTED, Status.FAILED])
def test_after_it_fired_newer_activity_starts_the_next_cycle(outcome: Status) -> None:
    ws = fresh(activity(T0))
    old = reengagement(ws)
    mark(ws, old, outcome)
    run(ws, activity(T0 + 40 * D))
    new = reengagement(ws)
    assert ws.users["u1"].reengagement_cycle == 1
    assert new.id == reengagement_id("u1", 1) != old.id
    assert new.status is Status.PENDING
    assert new.activity_basis == T0 + 40 * D
    assert new.scheduled_at == reengagement_due(T0 + 40 * D, ZoneInfo("UTC"), POLICY)
    assert ws.followups[old.id].status is outcome


def test_expired_reengagement_is_superseded_in_place_by_newer_activity() -> None:
    ws = fresh(activity(T0), now=T0 + 60 * D)
    expired = reengagement(ws)
    assert expired.status is Status.EXPIRED
    run(ws, activity(T0 + 59 * D), now=T0 + 60 * D)
    f = reengagement(ws)
    assert f.id == expired.id
    assert f.status is Status.PENDING
    assert f.activity_basis == T0 + 59 * D
    assert ws.users["u1"].reengagement_cycle == 0


def test_reengagement_being_sent_is_not_moved() -> None:
    ws = fresh(activity(T0))
    claimed = replace(reengagement(ws), in_flight=True)
    ws.apply([claimed])
    run(ws, activity(T0 + 3 * D))
    assert ws.followups[claimed.id] == claimed
    assert len(of_type(ws, REENGAGE)) == 1
    assert ws.users["u1"].last_activity_at == T0 + 3 * D


@pytest.mark.parametrize("order", [(0, 1), (1, 0)], ids=["old-first", "new-first"])
def test_expired_then_newer_activity_ends_as_if_only_the_newer_came(
    order: tuple[int, int],
) -> None:
    events = [activity(T0), activity(T0 + 59 * D)]
    ws = fresh(*(events[i] for i in order), now=T0 + 60 * D)
    assert reengagement(ws) == Followup(
        id=reengagement_id("u1", 0),
        user_id="u1",
        conversation_id="",
        trigger_type=REENGAGE,
        scheduled_at=reengagement_due(T0 + 59 * D, ZoneInfo("UTC"), POLICY),
        activity_basis=T0 + 59 * D,
    )


# --- lateness ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("late_by", "status"),
    [
        (timedelta(0), Status.PENDING),
        (47 * H, Status.PENDING),
        (48 * H, Status.PENDING),
        (48 * H + MS, Status.EXPIRED),
        (400 * D, Status.EXPIRED),
    ],
    ids=["on-time", "47h", "exactly-48h", "48h+1ms", "ancient"],
)
def test_lateness_rule_at_its_limit(late_by: timedelta, status: Status) -> None:
    at = EVENT_DATE + 24 * H
    assert status_for(at, POLICY, at + late_by) is status
    assert post_event(fresh(confirmed(), now=at + late_by)).status is status
    check_at = T0 + 24 * H
    assert checkin(fresh(scored(0.1, "m1"), now=check_at + late_by)).status is status
    due = datetime(2026, 4, 1, 9, tzinfo=UTC)
    assert reengagement(fresh(activity(T0), now=due + late_by)).status is status


def test_max_lateness_comes_from_the_policy() -> None:
    at = EVENT_DATE + 24 * H
    ws = fresh(confirmed(), now=at + 2 * H, policy=Policy(max_lateness=H))
    assert post_event(ws).status is Status.EXPIRED


def test_expired_followup_still_gets_its_deterministic_id() -> None:
    ws = fresh(confirmed(), now=EVENT_DATE + 10 * D)
    assert post_event(ws).id == pid("b1")
    assert post_event(ws).status is Status.EXPIRED


# --- limit -------------------------------------------------------------------------

LIMIT = POLICY.max_pending_per_user


def at_limit(user: UserState | None = None) -> WorkingSet:
    """A user whose pending follow-ups (operator-made) fill the limit; active at T0 + 1d."""
    return WorkingSet.of(
        users=[user or UserState("u1", last_activity_at=T0 + D)],
        followups=[custom(i) for i in range(LIMIT)],
    )


@pytest.mark.parametrize(
    ("event", "trigger"),
    [
        pytest.param(confirmed(), POST, id="post_event"),
        pytest.param(scored(0.1, "m1"), CHECKIN, id="emotion_check_in"),
        pytest.param(activity(T0 + 2 * D), REENGAGE, id="re_engagement"),
    ],
)
def test_new_followup_beyond_the_limit_is_refused_and_counted(
    event: InputEvent, trigger: TriggerType
) -> None:
    ws = at_limit()
    changes = run(ws, event)  # no exception
    assert Refused("u1", trigger) in changes
    assert ws.users["u1"].refused_followups == 1
    assert ws.refused[trigger] == 1
    assert of_type(ws, trigger) == []
    assert len(pending_of(ws)) == LIMIT


def test_refused_post_event_leaves_the_booking_without_a_followup() -> None:
    ws = at_limit()
    run(ws, confirmed())
    assert ws.bookings["b1"].followup_id is None
    assert ws.bookings["b1"].is_live


def test_refused_reengagement_leaves_no_cycle() -> None:
    ws = at_limit()
    run(ws, activity(T0 + 2 * D))
    assert ws.users["u1"].reengagement_cycle is None
    assert ws.users["u1"].last_activity_at == T0 + 2 * D


def test_refusals_accumulate() -> None:
    ws = at_limit()
    run(ws, confirmed("b1"), confirmed("b2", EVENT_DATE + 5 * D))
    assert ws.users["u1"].refused_followups == 2


def test_limit_counts_only_pending_followups() -> None:
    ws = at_limit()
    mark(ws, ws.followups["custom-0"])
    run(ws, confirmed())
    assert post_event(ws).status is Status.PENDING
    assert ws.users["u1"].refused_followups == 0


def test_limit_is_per_user() -> None:
    ws = at_limit()
    run(ws, confirmed(user="u2"))
    assert post_event(ws).user_id == "u2"


def test_joining_at_the_limit_is_not_a_new_followup() -> None:
    ws = WorkingSet.of(
        users=[UserState("u1", last_activity_at=T0 + D)],
        followups=[custom(i) for i in range(LIMIT - 1)],
    )
    run(ws, confirmed("b1"))
    assert len(pending_of(ws)) == LIMIT
    run(ws, confirmed("b2"))
    assert ws.bookings["b2"].followup_id == ws.bookings["b1"].followup_id
    assert ws.users["u1"].refused_followups == 0


def test_moving_at_the_limit_is_not_a_new_followup() -> None:
    ws = fresh(activity(T0), confirmed())
    ws.add_loaded(custom(i) for i in range(LIMIT - 2))
    assert len(pending_of(ws)) == LIMIT
    run(ws, confirmed("b1", EVENT_DATE + 5 * D, at=T0 + H), activity(T0 + 2 * D))
    assert post_event(ws).scheduled_at == EVENT_DATE + 5 * D + 24 * H
    assert reengagement(ws).activity_basis == T0 + 2 * D
    assert ws.users["u1"].refused_followups == 0


def test_reviving_an_expired_reengagement_respects_the_limit() -> None:
    ws = fresh(activity(T0), now=T0 + 60 * D)
    assert reengagement(ws).status is Status.EXPIRED
    ws.add_loaded(custom(i) for i in range(LIMIT))
    run(ws, activity(T0 + 59 * D), now=T0 + 60 * D)
    assert len(pending_of(ws)) <= LIMIT
    assert reengagement(ws).status is Status.EXPIRED
    assert ws.users["u1"].refused_followups == 1


def test_the_limit_never_raises_even_far_beyond_it() -> None:
    ws = fresh(
        *(confirmed(f"b{i}", EVENT_DATE + 3 * i * D, at=T0 + i * H) for i in range(LIMIT + 5)),
    )
    assert len(pending_of(ws)) == LIMIT
    # LIMIT - 1 post-events fit beside the re-engagement; the rest were refused.
    assert ws.users["u1"].refused_followups == 6


def test_a_refused_chain_stays_refused_until_one_of_its_bookings_changes() -> None:
    # The documented exception: which follow-ups the limit keeps out depends on
    # arrival order. Room freed later is not handed to a chain refused before
    # (that too would depend on order); a change to one of its bookings retries it.
    ws = at_limit()
    run(ws, confirmed("b1"))
    assert ws.bookings["b1"].followup_id is None
    mark(ws, ws.followups["custom-0"])  # room for one
    run(ws, confirmed("b2", EVENT_DATE + 5 * D))
    assert ws.bookings["b1"].followup_id is None
    assert post_event(ws, "b2").status is Status.PENDING
    mark(ws, ws.followups["custom-1"])
    run(ws, confirmed("b1", EVENT_DATE + H, at=T0 + H))
    assert post_event(ws, "b1").status is Status.PENDING
    assert ws.users["u1"].refused_followups == 1


# --- replacing rows ------------------------------------------------------------------


def test_a_booking_confirmed_under_another_user_moves_to_them() -> None:
    ws = fresh(confirmed("b1", user="u1"), confirmed("b2", user="u1", at=T0 + H))
    run(ws, confirmed("b2", user="u2", at=T0 + 2 * H))
    assert ws.bookings["b2"].user_id == "u2"
    assert ws.followups[pid("b1", "u1")].booking_ids == ("b1",)
    assert ws.followups[pid("b2", "u2")].booking_ids == ("b2",)
    assert ws.bookings["b2"].followup_id == pid("b2", "u2")
    assert len(of_type(ws, POST)) == 2


def test_rows_of_the_previous_id_scheme_are_replaced_unless_sent() -> None:
    # A database written by the previous version: post-event ids from the first
    # confirmation's event id, check-in ids from the scoring event's id.
    legacy = fresh(confirmed("b1"), confirmed("b2", EVENT_DATE + 3 * D), scored(0.1, "m1"))

    def renamed(f: Followup, id_: str) -> Followup:
        return replace(f, id=id_)

    old_b1 = renamed(post_event(legacy, "b1"), followup_id("post_event", "conf-1"))
    old_b2 = renamed(post_event(legacy, "b2"), followup_id("post_event", "conf-2"))
    old_checkin = renamed(checkin(legacy), followup_id("emotion_based", "score-1"))
    ws = WorkingSet.of(
        users=legacy.users.values(),
        bookings=[
            replace(legacy.bookings["b1"], followup_id=old_b1.id),
            replace(legacy.bookings["b2"], followup_id=old_b2.id),
        ],
        conversations=[replace(legacy.conversations["c1"], checkin_id=old_checkin.id)],
        followups=[
            old_b1,
            replace(old_b2, status=Status.EXECUTED),
            old_checkin,
            reengagement(legacy),
        ],
    )
    # Replaying the same events changes nothing (they were applied already) ...
    before = snapshot(ws)
    run(ws, confirmed("b1"), confirmed("b2", EVENT_DATE + 3 * D), scored(0.1, "m1"))
    assert snapshot(ws) == before
    # ... the next change to the user's bookings (to the conversation's scores)
    # gives the unsent rows their new ids; the one sent stays and covers its booking.
    run(
        ws,
        confirmed("b1", at=T0 + H),
        confirmed("b2", EVENT_DATE + 3 * D, at=T0 + H),
        scored(0.1, "m2", at=T0 + H),
    )
    assert sorted(f.id for f in of_type(ws, POST)) == sorted([pid("b1"), old_b2.id])
    assert ws.bookings["b2"].followup_id == old_b2.id
    assert [f.id for f in of_type(ws, CHECKIN)] == [cid("m1")]
    assert set(ws.removed_followups) == {old_b1.id, old_checkin.id}


# --- idempotence -------------------------------------------------------------------

HISTORY: list[InputEvent] = [
    confirmed("b1", tz="America/New_York"),
    confirmed("b2", EVENT_DATE + 12 * H, at=T0 + MS),
    confirmed("b3", EVENT_DATE + 9 * D, at=T0 + 2 * MS),
    scored(0.9, "m1", at=T0 + H),
    scored(0.1, "m2", at=T0 + 2 * H),
    scored(0.0, "m3", at=T0 + 3 * H),
    activity(T0 + 4 * H),
    cancelled("b2", at=T0 + 5 * H),
    cancelled("b9", at=T0 + 5 * H),
]


@pytest.mark.parametrize(
    "event",
    [
        *HISTORY,
        confirmed("b1", EVENT_DATE + 3 * D, at=T0 + 6 * H),
        confirmed("b4", EVENT_DATE - 12 * H, at=T0 + 6 * H, tz="Europe/Berlin"),
        confirmed("b9", at=T0 + 6 * H),
        cancelled("b1", at=T0 + 6 * H),
        cancelled("b3", at=T0 + 6 * H),
        scored(0.9, "m4", at=T0 + 6 * H),
        scored(0.2, "m0", at=T0 - H),
        activity(T0 + 6 * H),
        activity(T0 - D),
    ],
    ids=lambda e: e.event_id,
)
def test_applying_an_event_twice_changes_nothing_the_second_time(event: InputEvent) -> None:
    ws = fresh(*HISTORY)
    run(ws, event)
    before = snapshot(ws)
    run(ws, event)
    assert snapshot(ws) == before


def test_replaying_the_whole_history_changes_nothing() -> None:
    ws = fresh(*HISTORY)
    before = snapshot(ws)
    run(ws, *HISTORY)
    assert snapshot(ws) == before


def test_replaying_a_refused_event_does_not_count_it_again() -> None:
    ws = at_limit()
    event = confirmed()
    run(ws, event)
    before = snapshot(ws)
    assert run(ws, event) == []
    assert snapshot(ws) == before


@pytest.mark.parametrize(
    "parts", [("post_event", "evt-1"), ("re_engagement", "user-1", "0"), ("x", "é∂\U0001f600")]
)
def test_followup_ids_are_rfc4122_uuid5_of_the_causes(parts: tuple[str, ...]) -> None:
    import uuid

    from consumer.domain.model import _ID_NAMESPACE

    assert followup_id(*parts) == str(uuid.uuid5(_ID_NAMESPACE, "\x1f".join(parts)))
