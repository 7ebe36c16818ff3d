"""Real Kafka and PostgreSQL for integration tests.

Where they come from, in order: KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL from the
environment; else testcontainers when a Docker engine answers; else the local
services of `scripts/services up` (the path CI takes on machines without Docker).
Every test gets its own database and its own topic names.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from sqlalchemy.pool import QueuePool

from consumer.adapters.postgres.store import PostgresStore
from consumer.config import Settings, load_settings
from tests.integration.ecosystem_registry import registry_client

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Services:
    bootstrap: str
    database_url: str  # postgresql+asyncpg://... of the admin database


def _docker_answers() -> bool:
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        # No engine to ask (and the docker client leaks its socket when none answers).
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    env_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    env_db = os.environ.get("DATABASE_URL")
    if env_kafka and env_db:
        yield Services(env_kafka, env_db)
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.postgres import PostgresContainer

        with (
            KafkaContainer("apache/kafka:4.3.1").with_kraft() as kafka,
            PostgresContainer("postgres:16", driver="asyncpg") as pg,
        ):
            yield Services(kafka.get_bootstrap_server(), pg.get_connection_url())
        return
    out = subprocess.run(
        [str(REPO / "scripts" / "services"), "up"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    found = dict(re.findall(r"export (\w+)=(\S+)", out))
    yield Services(found["KAFKA_BOOTSTRAP_SERVERS"], found["DATABASE_URL"])


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@asynccontextmanager
async def fresh_database(services: Services) -> AsyncIterator[str]:
    """A fresh, empty database (its postgresql+asyncpg URL), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_dsn(services.database_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = services.database_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(_dsn(services.database_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def database_url(services: Services) -> AsyncIterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    async with fresh_database(services) as url:
        yield url


@pytest.fixture
def settings(services: Services, database_url: str) -> Settings:
    """Settings of one test: its own topics, group and database."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return load_settings(
        kafka_bootstrap_servers=services.bootstrap,
        database_url=database_url,
        kafka_group_id=f"{prefix}-group",
        topic_booking_confirmed=f"{prefix}.booking.confirmed",
        topic_booking_cancelled=f"{prefix}.booking.cancelled",
        topic_emotion_scored=f"{prefix}.message.emotion_scored",
        topic_user_activity=f"{prefix}.user.activity",
        topic_followup_due=f"{prefix}.followup.due",
        topic_dlq=f"{prefix}.followup.dlq",
        topic_partitions=3,
        dispatch_poll_seconds=0.2,
        http_port=0,  # tests that want HTTP pick a free port
        ingest_fetch_timeout_ms=100,
    )


@pytest.fixture
async def postgres_store(settings: Settings) -> AsyncIterator[PostgresStore]:
    """The store on the test's fresh database, migrated; no connection may be left
    checked out at the end."""
    store = PostgresStore.connect(settings.database_url, settings.kafka_group_id)
    try:
        assert await store.migrate()
        yield store
        pool = store.engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.checkedout() == 0, "a connection was left checked out"
    finally:
        await store.close()


# The schema registry of `scripts/services` (scripts/test exports SCHEMA_REGISTRY_URL):
# unset, its tests skip on a developer's machine and fail under CI (CI=true), where a
# missing registry is a broken setup, not a reason to test less.
@pytest.fixture(scope="module")
def registry_url() -> str:
    url = os.environ.get("SCHEMA_REGISTRY_URL", "")
    if not url:
        reason = (
            "SCHEMA_REGISTRY_URL is not set: start the registry with "
            '`eval "$(scripts/services up)"` (scripts/test does)'
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; under CI the registry is part of the setup")
        pytest.skip(reason)
    return url


@pytest.fixture
def client(registry_url: str) -> Iterator[SchemaRegistryClient]:
    with registry_client(registry_url) as c:
        yield c
