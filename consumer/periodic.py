"""Periodic work on APScheduler 3.11: the daily re-engagement sweep and retention.

Each job takes a cluster-wide advisory lock, so however many instances run,
only one does a given job at a time; the others skip that round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from consumer.rules import Policy, sweep_reengagement
from consumer.store import BatchKeys, PeriodicQueries, Store

log = logging.getLogger(__name__)

SWEEP_PAGE = 2000


class PeriodicJobs:
    def __init__(
        self,
        store: Store,
        queries: PeriodicQueries,
        policy: Policy,
        retention: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.queries = queries
        self.policy = policy
        self.retention = retention
        self.clock = clock

    async def reengagement_sweep(self) -> int:
        """Give every idle user without one a re-engagement (users loaded by backfill)."""
        async with self.queries.exclusive("reengagement_sweep") as mine:
            if not mine:
                return 0
            now = self.clock()
            idle_since = now - self.policy.inactive_after
            scheduled = 0
            after = ""
            while True:
                page = await self.queries.inactive_without_reengagement(
                    idle_since, after, SWEEP_PAGE
                )
                if not page:
                    break
                after = page[-1]
                async with self.store.ingest_transaction() as tx:
                    ws = await tx.lock_and_load(
                        BatchKeys(frozenset(page), frozenset(), frozenset()), now
                    )
                    for user_id in page:
                        ws.apply(sweep_reengagement(ws, user_id, self.policy, now))
                    await tx.save(ws, {})
                scheduled += len(ws.dirty_followups)
            log.info("re-engagement sweep done", extra={"scheduled": scheduled})
            return scheduled

    async def retention_cleanup(self) -> int:
        """Delete executed follow-ups older than RETENTION_DAYS."""
        async with self.queries.exclusive("retention") as mine:
            if not mine:
                return 0
            deleted = await self.queries.delete_executed_before(self.clock() - self.retention)
            log.info("retention done", extra={"deleted": deleted})
            return deleted


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
