"""The periodic jobs on their clocks: APScheduler 3.11 cron triggers in SCHEDULER_TIMEZONE."""

from __future__ import annotations

from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from consumer.domain.policy import Policy
from consumer.service.periodic import PeriodicJobs


def build_scheduler(jobs: PeriodicJobs, policy: Policy) -> AsyncIOScheduler:
    """The periodic jobs on their clocks, in SCHEDULER_TIMEZONE."""
    tz = policy.default_timezone
    scheduler = AsyncIOScheduler(timezone=tz)
    common: dict[str, Any] = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}
    scheduler.add_job(
        jobs.reengagement_sweep,
        CronTrigger(hour=policy.send_hour, minute=0, timezone=tz),
        id="reengagement_sweep",
        name="daily re-engagement sweep",
        **common,
    )
    scheduler.add_job(
        jobs.retention_cleanup,
        CronTrigger(hour=3, minute=30, timezone=tz),
        id="retention",
        name="delete executed follow-ups past retention",
        **common,
    )
    return scheduler
