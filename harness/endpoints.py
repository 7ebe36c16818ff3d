"""Where the local broker and PostgreSQL are, and fresh databases on that server."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

import asyncpg

from harness.paths import REPO


@dataclass(frozen=True)
class Endpoints:
    bootstrap: str
    database_url: str  # postgresql+asyncpg://... of the admin database

    @property
    def admin_dsn(self) -> str:
        return pg_dsn(self.database_url)

    def database(self, name: str) -> str:
        base, _, _ = self.database_url.rpartition("/")
        return f"{base}/{name}"


def pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def endpoints() -> Endpoints:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database_url = os.environ.get("DATABASE_URL")
    if not (bootstrap and database_url):
        out = subprocess.run(
            [str(REPO / "scripts" / "services"), "env"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        found = dict(re.findall(r"export (\w+)=(\S+)", out))
        bootstrap = bootstrap or found["KAFKA_BOOTSTRAP_SERVERS"]
        database_url = database_url or found["DATABASE_URL"]
    return Endpoints(bootstrap, database_url)


async def create_database(endpoints: Endpoints, name: str) -> None:
    admin = await asyncpg.connect(endpoints.admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def drop_database(endpoints: Endpoints, name: str) -> None:
    admin = await asyncpg.connect(endpoints.admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
