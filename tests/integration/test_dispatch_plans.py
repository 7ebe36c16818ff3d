"""Dispatch's statements touch the rows of the batch, not the backlog, whatever
PostgreSQL's statistics say: none (a new table), taken when nothing was pending,
or taken during the backlog. Checked on the plans PostgreSQL runs (EXPLAIN
ANALYZE): no step of a claim or a mark handles many more rows than the batch.

Before, a claim sorted every pending row, a mark hashed them, and after an
ANALYZE taken with nothing leased a mark compared each row of the batch with
each other: 2 s for 2,000 rows, growing with the square of the batch."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.adapters.postgres import sql
from consumer.adapters.postgres.store import PostgresStore
from consumer.config import Settings
from consumer.service.ports import Executed
from tests.integration.conftest import _dsn

pytestmark = pytest.mark.integration

BACKLOG = 20_000
BATCH = 500
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


async def _copy_pending(dsn: str, count: int, due: datetime) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "scheduled_followups",
            records=[
                (
                    str(uuid.uuid4()),
                    f"user-{i % 5000}",
                    "custom",
                    json.dumps({"custom_message": f"message {i}"}),
                    due,
                    due,
                    "pending",
                )
                for i in range(count)
            ],
            columns=(
                "id",
                "user_id",
                "trigger_type",
                "trigger_data",
                "scheduled_at",
                "due_at",
                "status",
            ),
        )
    finally:
        await conn.close()


async def _analyze(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE scheduled_followups")
    finally:
        await conn.close()


async def _plan(engine: AsyncEngine, statement: TextClause, params: dict[str, Any]) -> Any:
    """The plan the store's transaction runs, executed (and rolled back)."""
    async with engine.connect() as conn:
        await conn.execute(sql.INDEX_WALKS_ONLY)
        explained = text("EXPLAIN (ANALYZE, FORMAT JSON) " + statement.text)
        found: Any = (await conn.execute(explained, params)).scalar_one()
        await conn.rollback()
    return (json.loads(found) if isinstance(found, str) else found)[0]["Plan"]


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _rows_handled(node: dict[str, Any]) -> float:
    # EXPLAIN gives rows and rows removed per loop.
    per_loop = (
        node.get("Actual Rows", 0)
        + node.get("Rows Removed by Filter", 0)
        + node.get("Rows Removed by Join Filter", 0)
    )
    return float(per_loop * node.get("Actual Loops", 1))


@pytest.mark.parametrize(
    "statistics", ["none", "taken with nothing pending", "taken in the backlog"]
)
async def test_claims_and_marks_handle_the_batch_not_the_backlog(
    postgres_store: PostgresStore, settings: Settings, statistics: str
) -> None:
    store = postgres_store
    dsn = _dsn(settings.database_url)
    if statistics == "taken with nothing pending":
        await _copy_pending(dsn, BACKLOG, NOW - timedelta(days=2))
        async with store.engine.begin() as conn:
            await conn.execute(text("UPDATE scheduled_followups SET status = 'executed'"))
        await _analyze(dsn)
    await _copy_pending(dsn, BACKLOG, NOW - timedelta(minutes=1))
    if statistics == "taken in the backlog":
        await _analyze(dsn)

    # Mid-burst: one batch sent, two leased by other dispatchers.
    sent = await store.claim_due("a", NOW, LEASE, BATCH)
    done = [Executed(c.followup.id, "custom", "hi", "en", 1) for c in sent]
    assert await store.mark_executed("a", done, NOW) == BATCH
    for owner in ("b", "c"):
        assert len(await store.claim_due(owner, NOW, LEASE, BATCH)) == BATCH
    elsewhere = 2 * BATCH

    claim = await _plan(
        store.engine,
        sql.CLAIM_DUE,
        {"now": NOW, "limit": BATCH, "owner": "d", "until": NOW + LEASE},
    )
    assert claim["Actual Rows"] == BATCH
    # Its index walk passes the rows leased elsewhere, and nothing else.
    assert max(map(_rows_handled, _nodes(claim))) <= BATCH + elsewhere

    mine = [c.followup.id for c in await store.claim_due("d", NOW, LEASE, BATCH)]
    values: dict[str, list[Any]] = {
        "id": mine,
        "template_id": ["custom"] * BATCH,
        "message": ["hi"] * BATCH,
        "locale": ["en"] * BATCH,
        "version": [1] * BATCH,
    }
    mark = await _plan(
        store.engine,
        sql.MARK_EXECUTED,
        {"now": NOW, "owner": "d", **sql.bind(sql.MARK_EXECUTED_ARRAYS, values)},
    )
    assert max(map(_rows_handled, _nodes(mark))) <= BATCH
    # A mark still takes only what its owner holds: a lease of another is left alone.
    assert await store.mark_executed("b", [Executed(mine[0], "custom", "hi")], NOW) == 0
