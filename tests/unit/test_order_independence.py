"""Order does not matter (CONTRACT.md): the state after a set of events is the same
whatever order they arrive in, however they are batched, once or twice.

Property tests on the pure rules (`rules.decide` on a `WorkingSet`): small
generated histories of a few users on all four topics (bookings whose dates
cluster so that chains form, confirmations re-sent with other dates,
cancellations before and after, repeated cancellations, scores with repeated
message ids and equal times, activity, exact duplicates, now and then a booking
or conversation under another user) are applied in random
permutations and random batchings, each batch in event-time order as
`ingest.prepare` sorts it, with the same `now`; the final projections and
follow-ups (ids, statuses, times, booking sets, and the template that would be
chosen at firing) must equal those of the history applied one event at a time
in event-time order.

Between batches the working set goes through the PostgreSQL row mapping
(`adapters.postgres.rows`), as it does in the service, so state that would not
survive a round trip through the database shows up here too.

The per-user limit is the documented exception (README, "Order does not
matter"): these histories stay below it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from consumer.adapters.postgres import rows
from consumer.domain import rules
from consumer.domain.events import (
    BookingCancelled,
    BookingConfirmed,
    EmotionScored,
    InputEvent,
    UserActivity,
)
from consumer.domain.model import Score, default_conversation_id
from consumer.domain.policy import Policy
from consumer.domain.rules import decide
from consumer.domain.templates import FiringContext, choose_template
from consumer.domain.working_set import WorkingSet

BASE = datetime(2026, 3, 2, tzinfo=UTC)
NOW = BASE + timedelta(days=3)  # follow-ups due before BASE + 1 day are expired
POLICY = Policy(max_pending_per_user=1000)
H = timedelta(hours=1)

# Few distinct values, so that ties, duplicates and chains are common.
OCCURRED = [BASE + h * H for h in (-30, -2, 0, 1, 2, 5, 12, 20, 23, 24, 25, 30, 47, 48, 60)]
EVENT_DATES = [BASE + h * H for h in (-120, -24, 0, 12, 20, 24, 30, 36, 48, 60, 96, 100, 124)]
ZONES = [None, "Europe/Berlin", "America/New_York"]
LOCALES = [None, "fr", "fr-CA", "de"]
SCORES = [0.0, 0.1, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9, 1.0]
REASONS = [None, "ill", "weather"]


@st.composite
def histories(draw: st.DrawFn, max_users: int = 3) -> list[InputEvent]:
    serial = iter(range(10**6))

    def eid(kind: str) -> str:
        return f"{kind}{next(serial)}"

    events: list[InputEvent] = []
    for u in range(draw(st.integers(1, max_users))):
        user = f"u{u}"
        convs = [f"{user}-c0", f"{user}-c1"]
        for b in range(draw(st.integers(0, 4))):
            booking = f"{user}-b{b}"
            for _ in range(draw(st.integers(0, 3))):
                events.append(
                    BookingConfirmed(
                        event_id=eid("conf"),
                        occurred_at=draw(st.sampled_from(OCCURRED)),
                        user_id=user,
                        booking_id=booking,
                        event_date=draw(st.sampled_from(EVENT_DATES)),
                        conversation_id=draw(
                            st.sampled_from([default_conversation_id(booking), *convs])
                        ),
                        timezone=draw(st.sampled_from(ZONES)),
                        locale=draw(st.sampled_from(LOCALES)),
                    )
                )
            for _ in range(draw(st.integers(0, 2))):
                events.append(
                    BookingCancelled(
                        event_id=eid("cancel"),
                        occurred_at=draw(st.sampled_from(OCCURRED)),
                        user_id=user,
                        booking_id=booking,
                        reason=draw(st.sampled_from(REASONS)),
                    )
                )
        for conv in convs:
            for _ in range(draw(st.integers(0, 7))):
                events.append(
                    EmotionScored(
                        event_id=eid("score"),
                        occurred_at=draw(st.sampled_from(OCCURRED)),
                        user_id=user,
                        conversation_id=conv,
                        # A small pool: the same message scored again, at another time.
                        message_id=f"{conv}-m{draw(st.integers(0, 5))}",
                        score=draw(st.sampled_from(SCORES)),
                        label=None,
                    )
                )
        for _ in range(draw(st.integers(0, 3))):
            events.append(
                UserActivity(
                    event_id=eid("act"),
                    occurred_at=draw(st.sampled_from(OCCURRED)),
                    user_id=user,
                    activity_type="login",
                    conversation_id=None,
                    locale=draw(st.sampled_from(LOCALES)),
                )
            )
    # A producer's mistake, now and then: a booking or conversation named under
    # another user (the booking moves to the latest confirmation's user).
    users = sorted({e.user_id for e in events})
    events = [
        replace(e, user_id=draw(st.sampled_from(users)))
        if not isinstance(e, UserActivity) and draw(st.integers(0, 29)) == 0
        else e
        for e in events
    ]
    # Exact duplicates: redelivered or replayed records.
    if events:
        events += draw(st.lists(st.sampled_from(events), max_size=4))
    return events


# --- applying them ---------------------------------------------------------------------


def event_time(e: InputEvent) -> tuple[datetime, str]:
    return (e.occurred_at, e.event_id)


def reloaded(ws: WorkingSet) -> WorkingSet:
    """The working set as the next batch would load it: through the row mapping."""

    followups = [
        rows.followup_from_row(
            {
                "id": f.id,
                "user_id": f.user_id,
                "conversation_id": f.conversation_id,
                "trigger_type": f.trigger_type.value,
                "scheduled_at": f.scheduled_at,
                "status": f.status.value,
                "trigger_data": json.dumps(rows.trigger_data(f)),
                "cancelled_at": f.cancelled_at,
                "lease_until": None,
                "cancelled_by": None,
            },
            NOW,
        )
        for f in ws.followups.values()
    ]
    conversations = [
        rows.conversation(
            {
                "conversation_id": c.conversation_id,
                "user_id": c.user_id,
                "history": rows.history_json(c.scores),
                "checkin_id": c.checkin_id,
            }
        )
        for c in ws.conversations.values()
    ]
    return WorkingSet.of(
        users=ws.users.values(),
        bookings=ws.bookings.values(),
        conversations=conversations,
        followups=followups,
    )


def apply_batches(batches: Sequence[Sequence[InputEvent]], policy: Policy = POLICY) -> WorkingSet:
    ws = WorkingSet()
    for batch in batches:
        ws = reloaded(ws)
        # As ingest.prepare: a stable sort by occurred_at, arrival order for ties.
        for e in sorted(batch, key=lambda e: e.occurred_at):
            ws.apply(decide(ws, e, policy, NOW))
    return reloaded(ws)


def one_by_one_in_event_time(events: Sequence[InputEvent]) -> WorkingSet:
    """The reference: each event once, in (occurred_at, event_id) order."""
    return apply_batches([sorted(set(events), key=event_time)])


@dataclass(frozen=True)
class Outcome:
    users: dict[str, Any]
    bookings: dict[str, Any]
    conversations: dict[str, Any]
    followups: dict[str, Any]
    templates: dict[str, str]


def differences(got: Outcome, expected: Outcome) -> str:
    """What differs, row by row (for the failure message)."""
    lines = []
    for part in fields(Outcome):
        left, right = getattr(got, part.name), getattr(expected, part.name)
        for key in sorted(left.keys() | right.keys()):
            if left.get(key) != right.get(key):
                lines.append(f"{part.name}[{key}]:\n  got      {left.get(key)}")
                lines.append(f"  expected {right.get(key)}")
    return "\n".join(lines)


def outcome(ws: WorkingSet) -> Outcome:
    """Everything the state says, plus the template each follow-up would fire with."""
    live = {b.user_id for b in ws.bookings.values() if b.is_live}
    templates = {}
    for f in ws.followups.values():
        user = ws.users.get(f.user_id)
        conv = ws.conversations.get(f.conversation_id)
        ctx = FiringContext(
            scores=conv.scores[: POLICY.history_limit] if conv else (),
            has_live_booking=f.user_id in live,
            last_activity_at=user.last_activity_at if user else None,
            timezone=ZoneInfo(user.timezone) if user and user.timezone else None,
        )
        templates[f.id] = choose_template(f, ctx).value
    return Outcome(
        users=dict(ws.users),
        bookings=dict(ws.bookings),
        conversations=dict(ws.conversations),
        followups=dict(ws.followups),
        templates=templates,
    )


@st.composite
def arrivals(draw: st.DrawFn, events: list[InputEvent]) -> list[list[InputEvent]]:
    """A random order, cut into random batches."""
    order = draw(st.permutations(events))
    cuts = sorted(draw(st.sets(st.integers(1, max(len(order) - 1, 1)), max_size=6)))
    bounds = [0, *(c for c in cuts if c < len(order)), len(order)]
    return [order[a:b] for a, b in pairwise(bounds) if b > a]


# A few seconds; ORDER_EXAMPLES=5000 (a few minutes) searches deeper.
EXAMPLES = int(os.environ.get("ORDER_EXAMPLES", "150"))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_any_order_and_batching_gives_the_state_of_event_time_order(data: st.DataObject) -> None:
    events = data.draw(histories(), label="history")
    expected = outcome(one_by_one_in_event_time(events))
    batches = data.draw(arrivals(events), label="arrival")
    got = outcome(apply_batches(batches))
    assert got == expected, differences(got, expected)


@settings(
    max_examples=EXAMPLES // 3,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_applying_everything_twice_changes_nothing(data: st.DataObject) -> None:
    events = data.draw(histories(), label="history")
    batches = data.draw(arrivals(events), label="arrival")
    once = apply_batches(batches)
    again = apply_batches([*batches, *data.draw(arrivals(events), label="replay")])
    assert outcome(again) == outcome(once), differences(outcome(again), outcome(once))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(0, 1),
            st.sampled_from(SCORES),
            st.integers(0, 100).map(lambda i: i / 100),
        ),
        min_size=1,
        max_size=7,
    )
)
def test_the_timelines_integer_averages_agree_with_average(values: list[float]) -> None:
    # The check-in timeline sums windows in whole 1e-20s; `average` (templates)
    # sums Decimals. On the 0.4 threshold they must never disagree.
    scaled = [rules._scaled(v) for v in values]
    assume(None not in scaled)
    scores = [Score(f"m{i}", BASE, v) for i, v in enumerate(values)]
    avg = rules.average(scores)
    assert avg is not None
    assert rules._is_low(sum(s or 0 for s in scaled), len(values)) == (avg < rules.LOW_EMOTION)
