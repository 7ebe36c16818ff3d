"""Connecting to PostgreSQL (the schema is `schema`'s: Alembic revisions)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def create_engine(database_url: str, *, pool_size: int = 5) -> AsyncEngine:
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # Fail fast instead of hanging a batch when the server is gone.
        connect_args={"timeout": 10, "command_timeout": 60},
    )
