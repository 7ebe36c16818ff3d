"""Quiet hours and the daily cap as pure rules: properties over zones with and
without DST, then the explicit cases (midnight, spring forward, fall back, a user
whose zone changes, the cap, expiry)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.domain.sending_window import (
    HoldReason,
    QuietHours,
    SendingWindow,
    Verdict,
    end_of_quiet,
    next_send_moment,
    plan_send,
    sends_per_day,
    start_of_next_day,
)

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",  # DST until 2019, transitions at midnight
    "America/Havana",  # transitions at midnight / 01:00
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Asia/Kolkata",
    "Pacific/Chatham",
    "Pacific/Apia",  # skipped a whole day (2011-12-30)
]
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
S = timedelta(seconds=1)

instants = st.datetimes(
    min_value=datetime(2009, 1, 1), max_value=datetime(2031, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))
zones = st.sampled_from(ZONES).map(ZoneInfo)
walls = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45, 59]))
windows = st.tuples(walls, walls).filter(lambda w: w[0] != w[1]).map(lambda w: QuietHours(*w))


def utc(zone: ZoneInfo, y: int, mo: int, d: int, h: int, mi: int = 0, *, fold: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=zone, fold=fold).astimezone(UTC)


# --- properties -----------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(instants, zones, windows)
def test_the_end_of_quiet_hours_is_never_inside_never_before_due_and_the_first_such(
    due: datetime, zone: ZoneInfo, quiet: QuietHours
) -> None:
    at = end_of_quiet(due, zone, quiet)
    assert at >= due
    assert not quiet.contains(at, zone)
    # The first one: a second earlier it was still quiet (or it is `due` itself).
    assert at == due or quiet.contains(at - S, zone)
    assert at - due <= timedelta(hours=26)


@settings(max_examples=300, deadline=None)
@given(instants, instants, zones, windows)
def test_holding_is_monotone(a: datetime, b: datetime, zone: ZoneInfo, quiet: QuietHours) -> None:
    a, b = min(a, b), max(a, b)
    assert end_of_quiet(a, zone, quiet) <= end_of_quiet(b, zone, quiet)


@settings(max_examples=300, deadline=None)
@given(
    instants,
    zones,
    st.one_of(st.none(), windows),
    st.integers(1, 3),
    st.lists(st.integers(0, 5), max_size=4),
)
def test_the_cap_moves_to_a_day_with_room_outside_quiet_hours(
    due: datetime, zone: ZoneInfo, quiet: QuietHours | None, cap: int, counts: list[int]
) -> None:
    today = due.astimezone(zone).date()
    per_day = {today + timedelta(days=i): n for i, n in enumerate(counts)}
    moment = next_send_moment(due, zone, SendingWindow(quiet, cap), per_day)
    assert moment.at >= due
    assert per_day.get(moment.at.astimezone(zone).date(), 0) < cap
    if quiet is not None:
        assert not quiet.contains(moment.at, zone)
    if moment.reason is None:
        assert moment.at == due
    # Full on the day quiet hours alone would send it: the cap is why it waits.
    unquiet = end_of_quiet(due, zone, quiet)
    if per_day.get(unquiet.astimezone(zone).date(), 0) >= cap:
        assert moment.reason is HoldReason.DAILY_CAP


@settings(max_examples=200, deadline=None)
@given(
    instants, instants, zones, windows, st.integers(1, 2), st.lists(st.integers(0, 3), max_size=3)
)
def test_the_cap_and_quiet_hours_together_are_monotone(
    a: datetime,
    b: datetime,
    zone: ZoneInfo,
    quiet: QuietHours,
    cap: int,
    counts: list[int],
) -> None:
    a, b = min(a, b), max(a, b)
    first = a.astimezone(zone).date()
    per_day = {first + timedelta(days=i): n for i, n in enumerate(counts)}
    window = SendingWindow(quiet, cap)
    assert (
        next_send_moment(a, zone, window, per_day).at
        <= next_send_moment(b, zone, window, per_day).at
    )


@settings(max_examples=200, deadline=None)
@given(instants, zones)
def test_the_next_day_starts_after_and_on_the_next_date(at: datetime, zone: ZoneInfo) -> None:
    nxt = start_of_next_day(at, zone)
    assert nxt > at
    assert nxt.astimezone(zone).date() > at.astimezone(zone).date()
    assert nxt - at <= timedelta(hours=49)


# --- explicit cases ---------------------------------------------------------------------------

NIGHT = QuietHours(time(21), time(8))


def test_parse() -> None:
    assert QuietHours.parse("") is None
    assert QuietHours.parse(" 21:00-08:00 ") == NIGHT
    assert str(NIGHT) == "21:00-08:00"
    for bad in ("21:00", "24:00-08:00", "9:00-10:00", "08:00-08:00", "a-b", "21:00-08:00-09:00"):
        with pytest.raises(ValueError, match=r"HH:MM|different times"):
            QuietHours.parse(bad)


def test_a_window_crossing_midnight_holds_to_its_end_the_next_morning() -> None:
    assert NIGHT.crosses_midnight
    # 03:00 in New York: held to 08:00 the same date.
    due = utc(NEW_YORK, 2026, 3, 2, 3)
    assert end_of_quiet(due, NEW_YORK, NIGHT) == utc(NEW_YORK, 2026, 3, 2, 8)
    # 22:30: to 08:00 the next date.
    due = utc(NEW_YORK, 2026, 3, 2, 22, 30)
    assert end_of_quiet(due, NEW_YORK, NIGHT) == utc(NEW_YORK, 2026, 3, 3, 8)
    # 21:00 is quiet, 08:00 is not, 20:59 is not.
    assert NIGHT.contains(utc(NEW_YORK, 2026, 3, 2, 21), NEW_YORK)
    for free in (utc(NEW_YORK, 2026, 3, 2, 8), utc(NEW_YORK, 2026, 3, 2, 20, 59)):
        assert end_of_quiet(free, NEW_YORK, NIGHT) == free


def test_a_window_ending_in_a_spring_forward_gap_ends_at_the_transition() -> None:
    # Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:30 never happens.
    quiet = QuietHours(time(22), time(2, 30))
    due = utc(BERLIN, 2026, 3, 29, 1, 15)
    assert end_of_quiet(due, BERLIN, quiet) == datetime(2026, 3, 29, 1, tzinfo=UTC)


def test_a_window_ending_in_a_fall_back_overlap_ends_at_the_first_occurrence_not_before_due() -> (
    None
):
    # Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:00-03:00 happens twice.
    quiet = QuietHours(time(1), time(2, 30))
    first = utc(BERLIN, 2026, 10, 25, 2, 10, fold=0)
    assert end_of_quiet(first, BERLIN, quiet) == utc(BERLIN, 2026, 10, 25, 2, 30, fold=0)
    second = utc(BERLIN, 2026, 10, 25, 2, 10, fold=1)
    assert end_of_quiet(second, BERLIN, quiet) == utc(BERLIN, 2026, 10, 25, 2, 30, fold=1)


def test_quiet_hours_across_a_dst_night_end_at_local_eight() -> None:
    due = utc(NEW_YORK, 2026, 3, 7, 23)  # the night before the spring-forward
    assert end_of_quiet(due, NEW_YORK, NIGHT) == utc(NEW_YORK, 2026, 3, 8, 8)
    assert end_of_quiet(due, NEW_YORK, NIGHT) - due == timedelta(hours=8)


def test_a_user_whose_zone_changes_is_held_by_their_zone_now() -> None:
    due = datetime(2026, 3, 2, 7, tzinfo=UTC)  # 08:00 in Berlin, 02:00 in New York
    assert end_of_quiet(due, BERLIN, NIGHT) == due
    assert end_of_quiet(due, NEW_YORK, NIGHT) == utc(NEW_YORK, 2026, 3, 2, 8)
    # Their sends are counted per day of the zone they are in now.
    sends = [datetime(2026, 3, 2, 3, tzinfo=UTC)]  # 04:00 Berlin on the 2nd, 22:00 NY the 1st
    assert sends_per_day(sends, BERLIN) == Counter({date(2026, 3, 2): 1})
    assert sends_per_day(sends, NEW_YORK) == Counter({date(2026, 3, 1): 1})


def test_over_the_cap_it_goes_to_the_next_local_day_after_quiet_hours() -> None:
    window = SendingWindow(NIGHT, 2)
    now = utc(NEW_YORK, 2026, 3, 2, 12)
    moment = next_send_moment(now, NEW_YORK, window, {date(2026, 3, 2): 2})
    assert moment == next_send_moment(now, NEW_YORK, window, {date(2026, 3, 2): 3})
    assert moment.at == utc(NEW_YORK, 2026, 3, 3, 8)
    assert moment.reason is HoldReason.DAILY_CAP
    # Under the cap: now.
    assert next_send_moment(now, NEW_YORK, window, {date(2026, 3, 2): 1}).reason is None
    # Without quiet hours: local midnight.
    bare = next_send_moment(now, NEW_YORK, SendingWindow(None, 2), {date(2026, 3, 2): 2})
    assert bare.at == utc(NEW_YORK, 2026, 3, 3, 0)


def test_an_operator_may_opt_out_of_quiet_hours_but_not_the_cap() -> None:
    now = utc(NEW_YORK, 2026, 3, 2, 3)
    window = SendingWindow(NIGHT, 1)
    assert next_send_moment(now, NEW_YORK, window, {}, quiet_applies=False).reason is None
    capped = next_send_moment(now, NEW_YORK, window, {date(2026, 3, 2): 1}, quiet_applies=False)
    assert capped.at == utc(NEW_YORK, 2026, 3, 3, 0)


def test_a_hold_past_max_lateness_expires() -> None:
    window = SendingWindow(NIGHT, 1)
    now = utc(NEW_YORK, 2026, 3, 2, 12)
    full = {date(2026, 3, 2): 1}
    held = plan_send(now, now, NEW_YORK, window, full, timedelta(hours=48))
    assert held.verdict is Verdict.HOLD
    gone = plan_send(now, now, NEW_YORK, window, full, timedelta(hours=12))
    assert gone.verdict is Verdict.EXPIRE
    assert gone.moment.reason is HoldReason.DAILY_CAP
    assert plan_send(now, now, NEW_YORK, window, {}, timedelta(hours=1)).verdict is Verdict.SEND
