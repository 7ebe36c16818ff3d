"""Periodic work: the daily re-engagement sweep and retention.

Each job takes a cluster-wide lock, so however many instances run, only one
does a given job at a time; the others skip that round. When they run is the
scheduler's business (`consumer.entrypoints.scheduler`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from consumer.domain.policy import Policy
from consumer.domain.rules import sweep_reengagement
from consumer.service.ports import BatchKeys, Store

log = logging.getLogger(__name__)

SWEEP_PAGE = 2000


class PeriodicJobs:
    def __init__(
        self,
        store: Store,
        policy: Policy,
        retention: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.policy = policy
        self.retention = retention
        self.clock = clock

    async def reengagement_sweep(self) -> int:
        """Give every idle user without one a re-engagement (users loaded by backfill)."""
        async with self.store.exclusive("reengagement_sweep") as mine:
            if not mine:
                return 0
            now = self.clock()
            idle_since = now - self.policy.inactive_after
            scheduled = 0
            after = ""
            while True:
                page = await self.store.inactive_without_reengagement(idle_since, after, SWEEP_PAGE)
                if not page:
                    break
                after = page[-1]
                async with self.store.transaction() as tx:
                    ws = await tx.lock_and_load(BatchKeys(frozenset(page)), now)
                    for user_id in page:
                        ws.apply(sweep_reengagement(ws, user_id, self.policy, now))
                    await tx.save(ws, {})
                scheduled += len(ws.dirty_followups)
            log.info("re-engagement sweep done", extra={"scheduled": scheduled})
            return scheduled

    async def retention_cleanup(self) -> int:
        """Delete executed follow-ups older than RETENTION_DAYS."""
        async with self.store.exclusive("retention") as mine:
            if not mine:
                return 0
            deleted = await self.store.delete_executed_before(self.clock() - self.retention)
            log.info("retention done", extra={"deleted": deleted})
            return deleted
