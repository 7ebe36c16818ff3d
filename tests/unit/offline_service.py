"""A `Service` wired to in-memory ports and to a broker and database that are not
there: for unit tests of the runner's own logic (nothing is started)."""

from __future__ import annotations

from consumer.adapters.memory import MemoryDeadLetters, MemoryDuePublisher, MemoryStore
from consumer.bootstrap import build
from consumer.config import Settings
from consumer.entrypoints.runner import Service


def offline_service() -> Service:
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:9",
        database_url="postgresql+asyncpg://nobody@127.0.0.1:9/none",
        http_port=0,
    )
    wired = build(
        settings,
        store=MemoryStore(),
        publisher=MemoryDuePublisher(),
        dead_letters=MemoryDeadLetters(),
    )
    return Service(settings, wired=wired)
