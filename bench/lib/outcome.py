"""What a run left in PostgreSQL: follow-ups by status, projections, table counters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from harness.endpoints import Endpoints, pg_dsn


@dataclass
class Outcome:
    by_status: dict[str, int] = field(default_factory=dict)
    by_trigger: dict[tuple[str, str], int] = field(default_factory=dict)
    projections: dict[str, int] = field(default_factory=dict)
    tables: list[dict[str, Any]] = field(default_factory=list)
    database_mib: float = 0.0


TABLE_STATS = (
    "SELECT relname, seq_scan, seq_tup_read, idx_scan, n_tup_ins, n_tup_upd, n_tup_hot_upd, "
    "n_live_tup, n_dead_tup, autovacuum_count, autoanalyze_count, "
    "pg_total_relation_size(relid) AS bytes FROM pg_stat_user_tables ORDER BY relname"
)


async def outcome(endpoints: Endpoints, database: str) -> Outcome:
    conn = await asyncpg.connect(pg_dsn(endpoints.database(database)))
    try:
        out = Outcome()
        for row in await conn.fetch(
            "SELECT trigger_type, status, count(*) AS n FROM scheduled_followups GROUP BY 1, 2"
        ):
            out.by_trigger[(row["trigger_type"], row["status"])] = row["n"]
            out.by_status[row["status"]] = out.by_status.get(row["status"], 0) + row["n"]
        for table in ("user_projection", "booking_projection", "conversation_emotions"):
            out.projections[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
        out.projections["of which bookings cancelled"] = await conn.fetchval(
            "SELECT count(*) FROM booking_projection WHERE cancelled_at IS NOT NULL"
        )
        await asyncio.sleep(0.6)  # the statistics collector flushes every 500 ms
        out.tables = [dict(r) for r in await conn.fetch(TABLE_STATS)]
        out.database_mib = (
            await conn.fetchval("SELECT pg_database_size(current_database())") / 2**20
        )
        return out
    finally:
        await conn.close()
