"""Connecting to PostgreSQL (the schema is `schema`'s: Alembic revisions)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def create_engine(database_url: str, *, pool_size: int = 5) -> AsyncEngine:
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={
            # Fail fast instead of hanging a batch when the server is gone.
            "timeout": 10,
            "command_timeout": 60,
            # Every statement planned for its own arrays: a prepared statement's
            # generic plan assumes 10 keys an array, and once it took over it
            # joined a batch's thousands of keys by walking the pending follow-ups
            # once per key, 7-11 s a batch instead of a tenth (docs/ingest-per-core.md).
            #
            # Index probes priced as what they are once the tables are cached (the
            # default 4 is for spinning disks): 1.57M follow-ups into a 10M replay,
            # the batch's follow-ups were otherwise locked through a sequential scan
            # of the table, over a second a batch, 335 times. JIT compilation only
            # adds time to statements of a few thousand rows like these.
            "server_settings": {
                "plan_cache_mode": "force_custom_plan",
                "random_page_cost": "1.1",
                "jit": "off",
            },
        },
    )
