"""The tunable numbers of the contract and the decisions made from them alone:
lateness (when a follow-up is too old to send) and retry backoff.

Built from the settings by `consumer.bootstrap`; nothing here reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from consumer.domain.model import Status
from consumer.domain.sending_window import SendingWindow


@dataclass(frozen=True, slots=True)
class Policy:
    """The rules' parameters, as durations."""

    followup_delay: timedelta = timedelta(hours=24)
    checkin_delay: timedelta = timedelta(hours=24)
    inactive_after: timedelta = timedelta(days=30)
    send_hour: int = 9
    default_timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    history_limit: int = 5
    # Scores kept per conversation for the check-in timeline (newest first).
    # Up to this many, check-ins do not depend on the order scores arrive in.
    score_history_cap: int = 500
    max_pending_per_user: int = 10
    max_lateness: timedelta = timedelta(hours=48)
    # QUIET_HOURS and MAX_SENDS_PER_USER_PER_DAY, in each user's local time.
    sending: SendingWindow = field(default_factory=SendingWindow)
    # DEFAULT_LOCALE: the texts' locale for users whose own has none (BCP 47).
    default_locale: str = "en"

    def too_late(self, scheduled_at: datetime, now: datetime) -> bool:
        """Older than MAX_LATENESS (backfill, long outage): never worth sending."""
        return scheduled_at < now - self.max_lateness

    def status_for(self, scheduled_at: datetime, now: datetime) -> Status:
        """The status a follow-up is stored with: too late ones are `expired`."""
        return Status.EXPIRED if self.too_late(scheduled_at, now) else Status.PENDING


@dataclass(frozen=True, slots=True)
class Backoff:
    """Doubling delays, capped: `first`, twice that, four times... up to `cap`."""

    first: timedelta = timedelta(seconds=0.5)
    cap: timedelta = timedelta(seconds=30)

    def delay(self, failures_so_far: int) -> timedelta:
        # In float seconds: a timedelta doubled 48 times from half a second is out
        # of its range (OverflowError after a long outage); floats go to inf, and
        # past the cap the doubling changes nothing anyway.
        seconds = self.first.total_seconds() * 2.0 ** min(failures_so_far, 1000)
        return min(timedelta(seconds=min(seconds, self.cap.total_seconds())), self.cap)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Publish retries of one follow-up: MAX_RETRIES, then `failed`."""

    max_retries: int = 5
    base: timedelta = timedelta(seconds=2)
    cap: timedelta = timedelta(minutes=5)

    def next_attempt(self, retries_so_far: int, now: datetime) -> datetime | None:
        """When to try again after a failed attempt; None: give up (`failed`)."""
        if retries_so_far >= self.max_retries:
            return None
        return now + Backoff(self.base, self.cap).delay(retries_so_far)
