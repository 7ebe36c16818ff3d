"""The state a service left in its database: queries, committed offsets, snapshots."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from consumer.config import Settings
from harness.endpoints import pg_dsn
from harness.topics import input_topics


def dsn(settings: Settings) -> str:
    return pg_dsn(settings.database_url)


async def query(settings: Settings, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn(settings))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def consumed(settings: Settings) -> int:
    """Records of the input topics whose effects are committed for this group:
    the sum of `next_offset` in `consumer_offsets` (0 before the schema exists)."""
    try:
        rows = await query(
            settings,
            "SELECT coalesce(sum(next_offset), 0) AS n FROM consumer_offsets "
            "WHERE group_id = $1 AND topic = ANY($2::text[])",
            settings.kafka_group_id,
            input_topics(settings),
        )
    except (asyncpg.UndefinedTableError, asyncpg.InvalidCatalogNameError):
        return 0
    return int(rows[0]["n"])


_VOLATILE = frozenset({"created_at", "updated_at"})
_SNAPSHOT_TABLES = {
    "scheduled_followups": "id",
    "user_projection": "user_id",
    "booking_projection": "booking_id",
    "conversation_emotions": "conversation_id",
}
_JSON_COLUMNS = frozenset({"trigger_data", "history"})

Snapshot = dict[str, list[dict[str, Any]]]


async def snapshot(settings: Settings) -> Snapshot:
    """Every row of the follow-up and projection tables, without the bookkeeping
    timestamps (created_at, updated_at), ordered by primary key: equal snapshots
    mean equal state."""
    out: Snapshot = {}
    conn = await asyncpg.connect(dsn(settings))
    try:
        for table, key in _SNAPSHOT_TABLES.items():
            rows = await conn.fetch(f"SELECT * FROM {table} ORDER BY {key}")
            out[table] = [
                {
                    k: (json.loads(v) if k in _JSON_COLUMNS and v is not None else v)
                    for k, v in r.items()
                    if k not in _VOLATILE
                }
                for r in rows
            ]
    finally:
        await conn.close()
    return out


def snapshot_diff(a: Snapshot, b: Snapshot, limit: int = 10) -> list[str]:
    """Human-readable differences (at most `limit`), empty when equal."""
    diffs: list[str] = []
    for table, key in _SNAPSHOT_TABLES.items():
        left = {r[key]: r for r in a.get(table, [])}
        right = {r[key]: r for r in b.get(table, [])}
        for k in sorted(left.keys() | right.keys()):
            if left.get(k) != right.get(k):
                if k not in right:
                    diffs.append(f"{table}[{k}] only in first: {left[k]}")
                elif k not in left:
                    diffs.append(f"{table}[{k}] only in second: {right[k]}")
                else:
                    cols = {
                        c: (left[k].get(c), right[k].get(c))
                        for c in left[k].keys() | right[k].keys()
                        if left[k].get(c) != right[k].get(c)
                    }
                    diffs.append(f"{table}[{k}] differs: {cols}")
                if len(diffs) >= limit:
                    return diffs
    return diffs
