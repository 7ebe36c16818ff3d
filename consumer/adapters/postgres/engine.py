"""Connecting to PostgreSQL and creating its schema."""

from __future__ import annotations

from importlib import resources

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from consumer.adapters.postgres import sql

_MIGRATION_LOCK = 0x5F011_0C0


def create_engine(database_url: str, *, pool_size: int = 5) -> AsyncEngine:
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # Fail fast instead of hanging a batch when the server is gone.
        connect_args={"timeout": 10, "command_timeout": 60},
    )


async def migrate(engine: AsyncEngine) -> None:
    """Create or update the schema; safe to run any number of times, concurrently."""
    ddl = resources.files("consumer.adapters.postgres").joinpath("sql/schema.sql").read_text()
    statements = [s.strip() for s in _strip_comments(ddl).split(";") if s.strip()]
    async with engine.begin() as conn:
        await conn.execute(sql.MIGRATION_LOCK, {"k": _MIGRATION_LOCK})
        for statement in statements:
            await conn.exec_driver_sql(statement)


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())
