"""When a due follow-up may go out, in the recipient's own clock: quiet hours and
a daily cap per user, counted per local calendar day.

Pure functions of (due, zone, window, sends already counted). Times are aware
instants; the window is wall-clock time in the user's zone, so that DST is
handled by what the zone says the wall clock shows:

- an instant is *inside* the window when its local wall time is in
  `[start, end)` (or, for a window crossing midnight, `>= start` or `< end`);
- a follow-up due inside is held to the first instant at or after it whose wall
  time is outside: the end of the window. When that wall time does not exist (a
  spring-forward gap, e.g. a window ending at 02:30 on the night 02:00 jumps to
  03:00), that is the transition itself; when it exists twice (fall back), the
  first occurrence not before the due time;
- over the cap, the follow-up moves to the start of the next local day, then out
  of quiet hours, until it lands on a day with room.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class HoldReason(StrEnum):
    QUIET_HOURS = "quiet_hours"
    DAILY_CAP = "daily_cap"


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window of local wall-clock time, `[start, end)`; may cross midnight."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ValueError("quiet hours must start and end at different times")

    @classmethod
    def parse(cls, text: str) -> QuietHours | None:
        """`"21:00-08:00"`; empty: None (no quiet hours). Raises ValueError otherwise."""
        text = text.strip()
        if not text:
            return None
        parts = [p.strip() for p in text.split("-")]
        if len(parts) != 2:
            raise ValueError(f"expected HH:MM-HH:MM (e.g. 21:00-08:00), got {text!r}")
        times = []
        for p in parts:
            m = _HHMM.match(p)
            if m is None:
                raise ValueError(f"{p!r} is not a time of day HH:MM (00:00 to 23:59)")
            times.append(time(int(m.group(1)), int(m.group(2))))
        if times[0] == times[1]:
            raise ValueError(f"{text!r}: quiet hours must start and end at different times")
        return cls(times[0], times[1])

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start

    def contains_wall(self, wall: time) -> bool:
        wall = wall.replace(tzinfo=None, fold=0)
        if self.crosses_midnight:
            return wall >= self.start or wall < self.end
        return self.start <= wall < self.end

    def contains(self, at: datetime, zone: ZoneInfo) -> bool:
        """Whether the instant `at` is inside the window in `zone`."""
        return self.contains_wall(at.astimezone(zone).time())

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def earliest_at_wall(wall: datetime, zone: ZoneInfo, not_before: datetime) -> datetime:
    """The first instant `>= not_before` (approximately: the earliest occurrence not
    before it) at which the clock in `zone` shows `wall` (naive), or, when `wall`
    does not exist there (a DST gap), the transition that skips it."""
    for fold in (0, 1):
        candidate = wall.replace(tzinfo=zone, fold=fold)
        instant = candidate.astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) != wall:
            return _transition_in_gap(wall, zone)
        if instant >= not_before:
            return instant
    return instant


def _transition_in_gap(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant the clock jumped over `wall`: bisect between the instants the
    offsets before and after the jump give (whole seconds, as zone data has)."""
    after = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    lo, hi = min(before, after), max(before, after)
    late_offset = hi.astimezone(zone).utcoffset()
    # Invariant: hi has the later offset, lo does not.
    while hi - lo > timedelta(seconds=1):
        mid = lo + timedelta(seconds=int((hi - lo).total_seconds()) // 2)
        if mid.astimezone(zone).utcoffset() == late_offset:
            hi = mid
        else:
            lo = mid
    return hi


def end_of_quiet(at: datetime, zone: ZoneInfo, quiet: QuietHours | None) -> datetime:
    """`at` itself when outside the window, else the first instant after it outside."""
    if quiet is None:
        return at
    # A few rounds cover pathological windows (almost a whole day) whose end falls
    # in a DST gap that lands back inside the next window.
    for _ in range(4):
        local = at.astimezone(zone)
        if not quiet.contains_wall(local.time()):
            return at
        day = local.date()
        if quiet.crosses_midnight and local.time().replace(tzinfo=None, fold=0) >= quiet.start:
            day += timedelta(days=1)
        at = earliest_at_wall(datetime.combine(day, quiet.end), zone, at)
    return at


def start_of_next_day(at: datetime, zone: ZoneInfo) -> datetime:
    """The first instant of the local day after `at`'s (its midnight, or the DST
    transition that skips midnight)."""
    day = at.astimezone(zone).date() + timedelta(days=1)
    return earliest_at_wall(datetime.combine(day, time(0)), zone, at)


def sends_per_day(sends: Iterable[datetime], zone: ZoneInfo) -> Counter[date]:
    """The user's sends counted per local calendar day in `zone` (their zone now)."""
    return Counter(s.astimezone(zone).date() for s in sends)


@dataclass(frozen=True, slots=True)
class SendingWindow:
    """QUIET_HOURS and MAX_SENDS_PER_USER_PER_DAY (0: no cap)."""

    quiet_hours: QuietHours | None = None
    daily_cap: int = 0

    @property
    def active(self) -> bool:
        return self.quiet_hours is not None or self.daily_cap > 0


@dataclass(frozen=True, slots=True)
class Moment:
    """When a follow-up may go out, and why not at once (None: it may now)."""

    at: datetime
    reason: HoldReason | None


def next_send_moment(
    due: datetime,
    zone: ZoneInfo,
    window: SendingWindow,
    per_day: Mapping[date, int],
    *,
    quiet_applies: bool = True,
) -> Moment:
    """The first moment at or after `due` outside quiet hours (unless
    `quiet_applies` is False: an operator opted out) on a local day with fewer
    than `daily_cap` sends counted in `per_day`."""
    quiet = window.quiet_hours if quiet_applies else None
    at = end_of_quiet(due, zone, quiet)
    reason = HoldReason.QUIET_HOURS if at != due else None
    if window.daily_cap <= 0:
        return Moment(at, reason)
    # Terminates: only days in `per_day` can be full, and each round moves to a later day.
    for _ in range(len(per_day) + 2):
        if per_day.get(at.astimezone(zone).date(), 0) < window.daily_cap:
            return Moment(at, reason)
        at = end_of_quiet(start_of_next_day(at, zone), zone, quiet)
        reason = HoldReason.DAILY_CAP
    return Moment(at, reason)


class Verdict(StrEnum):
    SEND = "send"
    HOLD = "hold"
    EXPIRE = "expire"


@dataclass(frozen=True, slots=True)
class SendPlan:
    verdict: Verdict
    moment: Moment


def plan_send(
    now: datetime,
    scheduled_at: datetime,
    zone: ZoneInfo,
    window: SendingWindow,
    per_day: Mapping[date, int],
    max_lateness: timedelta,
    *,
    quiet_applies: bool = True,
) -> SendPlan:
    """Send now, hold to `moment.at`, or expire: when the moment it may go out is
    past `scheduled_at + max_lateness`, it would arrive too late to be worth it."""
    moment = next_send_moment(now, zone, window, per_day, quiet_applies=quiet_applies)
    if moment.reason is None:
        return SendPlan(Verdict.SEND, moment)
    if moment.at > scheduled_at + max_lateness:
        return SendPlan(Verdict.EXPIRE, moment)
    return SendPlan(Verdict.HOLD, moment)
