"""The service's database role (consumer/adapters/postgres/sql/least_privilege.sql): data access to
the service's six tables, nothing else, and enough for the real ingest, dispatch
and periodic SQL."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL, make_url

from consumer.adapters.postgres import schema
from consumer.adapters.postgres.store import PostgresStore, create_engine, migrate
from consumer.adapters.wire import WireDecoder
from consumer.config import Settings
from consumer.domain.model import Status, TriggerType
from consumer.domain.policy import Policy, RetryPolicy
from consumer.service.dispatch import Dispatcher
from consumer.service.ingest import Ingestor
from consumer.service.ports import DeadLetter, DueMessage
from tests.integration.helpers import (
    CODEC,
    activity,
    confirmed,
    create_topics,
    produce_events,
    query,
    running,
    scored,
    wait_consumed,
    wait_until,
)
from tests.integration.test_cli import cli, messages

pytestmark = pytest.mark.integration

SCRIPT = (
    Path(__file__).resolve().parents[2]
    / "consumer"
    / "adapters"
    / "postgres"
    / "sql"
    / "least_privilege.sql"
)
TABLES = frozenset(
    {
        "scheduled_followups",
        "user_projection",
        "booking_projection",
        "conversation_emotions",
        "consumer_offsets",
        "message_templates",
    }
)
DATA_ACCESS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})


def _dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _run_script(admin: URL, variables: dict[str, str]) -> subprocess.CompletedProcess[str]:
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("the psql client is not installed")
    env = {**os.environ}
    if admin.password:
        env["PGPASSWORD"] = str(admin.password)
    command = [psql, "-X", "-q", "-h", admin.host or "127.0.0.1", "-p", str(admin.port or 5432)]
    command += ["-U", admin.username or "postgres", "-d", admin.database or "postgres"]
    for name, value in variables.items():
        command += ["-v", f"{name}={value}"]
    command += ["-f", str(SCRIPT)]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=60)


async def apply_script(admin: URL, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run the script with psql as the admin user of `admin`, on its database."""
    return await asyncio.to_thread(_run_script, admin, variables)


@dataclass
class AppRole:
    name: str
    password: str
    admin: URL  # the superuser, on the test's database
    url: URL  # the role, on the test's database

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(_dsn(self.url))


@pytest.fixture
async def app_role(database_url: str) -> AsyncIterator[AppRole]:
    """Schema migrated by the owner, then the script applied for a fresh role."""
    owner = create_engine(database_url)
    try:
        await migrate(owner)
    finally:
        await owner.dispose()
    admin = make_url(database_url)
    name = f"followups_app_{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    done = await apply_script(admin, role=name, password=password)
    assert done.returncode == 0, done.stderr
    role = AppRole(name, password, admin, admin.set(username=name, password=password))
    try:
        yield role
    finally:
        conn = await asyncpg.connect(_dsn(admin))
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", name
            )
            await conn.execute(f'REASSIGN OWNED BY "{name}" TO CURRENT_USER')
            await conn.execute(f'DROP OWNED BY "{name}"')
            await conn.execute(f'DROP ROLE "{name}"')
        finally:
            await conn.close()


async def _grants(admin: URL, role: str) -> set[tuple[str, str]]:
    conn = await asyncpg.connect(_dsn(admin))
    try:
        rows = await conn.fetch(
            "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
            "WHERE grantee = $1",
            role,
        )
    finally:
        await conn.close()
    return {(r["table_name"], r["privilege_type"]) for r in rows}


async def test_role_is_a_plain_login_with_data_access_to_the_six_tables(
    app_role: AppRole,
) -> None:
    assert await _grants(app_role.admin, app_role.name) == {
        (t, p) for t in TABLES for p in DATA_ACCESS
    }
    conn = await asyncpg.connect(_dsn(app_role.admin))
    try:
        row = await conn.fetchrow(
            "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, "
            "rolbypassrls, rolpassword IS NOT NULL AS has_password, "
            "has_schema_privilege(rolname, 'public', 'CREATE') AS create_in_public, "
            "has_schema_privilege(rolname, 'public', 'USAGE') AS usage_of_public, "
            "has_database_privilege(rolname, current_database(), 'CREATE') AS create_in_db, "
            "has_database_privilege(rolname, current_database(), 'CONNECT') AS connect "
            "FROM pg_authid WHERE rolname = $1",
            app_role.name,
        )
        owned = await conn.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
            "WHERE r.rolname = $1",
            app_role.name,
        )
    finally:
        await conn.close()
    assert row is not None
    assert dict(row) == {
        "rolcanlogin": True,
        "rolsuper": False,
        "rolcreatedb": False,
        "rolcreaterole": False,
        "rolreplication": False,
        "rolbypassrls": False,
        "has_password": True,
        "create_in_public": False,
        "usage_of_public": True,
        "create_in_db": False,
        "connect": True,
    }
    assert owned == 0


async def test_role_reads_and_writes_data_but_changes_no_schema(app_role: AppRole) -> None:
    conn = await app_role.connect()
    try:
        assert await conn.fetchval("SELECT current_user") == app_role.name
        now = datetime.now(UTC)
        await conn.execute(
            "INSERT INTO scheduled_followups (id, user_id, trigger_type, scheduled_at, due_at) "
            "VALUES ('lp-1', 'user-1', 'custom', $1, $1)",
            now,
        )
        assert await conn.fetchval("SELECT user_id FROM scheduled_followups WHERE id = 'lp-1'") == (
            "user-1"
        )
        status = await conn.fetchval(
            "UPDATE scheduled_followups SET status = 'cancelled' WHERE id = 'lp-1' RETURNING status"
        )
        assert status == "cancelled"
        assert await conn.execute("DELETE FROM scheduled_followups WHERE id = 'lp-1'") == "DELETE 1"

        refused = [
            "CREATE TABLE sneaky (id int)",
            "CREATE TABLE public.sneaky (id int)",
            "DROP TABLE scheduled_followups",
            "TRUNCATE scheduled_followups",
            "ALTER TABLE scheduled_followups ADD COLUMN sneaky int",
            "CREATE INDEX sneaky ON scheduled_followups (user_id)",
            "SELECT * FROM pg_authid",
            "CREATE SCHEMA sneaky",
            "CREATE ROLE sneaky",
        ]
        for statement in refused:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()
    # Nothing of the above left a trace.
    assert await _grants(app_role.admin, app_role.name) == {
        (t, p) for t in TABLES for p in DATA_ACCESS
    }


async def test_script_converges_and_refuses_superusers(app_role: AppRole) -> None:
    admin = await asyncpg.connect(_dsn(app_role.admin))
    try:
        # A grant from elsewhere on another table: a re-run takes it back.
        await admin.execute("CREATE TABLE not_the_service (id int)")
        await admin.execute(f'GRANT SELECT ON not_the_service TO "{app_role.name}"')
        await admin.execute(f'GRANT TRUNCATE ON scheduled_followups TO "{app_role.name}"')
    finally:
        await admin.close()
    done = await apply_script(app_role.admin, role=app_role.name, password=app_role.password)
    assert done.returncode == 0, done.stderr
    assert await _grants(app_role.admin, app_role.name) == {
        (t, p) for t in TABLES for p in DATA_ACCESS
    }
    conn = await app_role.connect()
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM not_the_service")
    finally:
        await conn.close()

    superuser = app_role.admin.username or "postgres"
    refused = await apply_script(app_role.admin, role=superuser, password="never-set")
    assert refused.returncode != 0
    assert "superuser" in refused.stderr

    missing = await apply_script(app_role.admin, password="no role given")
    assert missing.returncode != 0
    assert '"role" is not set' in missing.stderr


async def test_migrate_under_the_role_is_refused_before_it_changes_anything(
    app_role: AppRole, settings: Settings
) -> None:
    role_url = app_role.url.render_as_string(hide_password=False)
    engine = create_engine(role_url)
    try:
        assert await PostgresStore(engine, "lp-group").migrate() is False
        with pytest.raises(schema.NotPermitted, match="as the schema's owner"):
            await schema.migrate(engine, "0001", allow_downgrade=True)
        with pytest.raises(schema.NotPermitted):
            await schema.status(engine)
    finally:
        await engine.dispose()
    as_role = settings.model_copy(update={"database_url": role_url})
    for argv in (["migrate"], ["migrate", "--to", "base", "--yes"], ["migrate", "--current"]):
        refused = await cli(as_role, *argv)
        assert refused.code == 2, refused
        [line] = messages(refused.err)
        assert line.startswith("followup-consumer: this database role may not change the schema")
    owner = create_engine(app_role.admin.render_as_string(hide_password=False))
    try:
        found = await schema.status(owner)
    finally:
        await owner.dispose()
    assert found.at_head
    assert await _grants(app_role.admin, app_role.name) == {
        (t, p) for t in TABLES for p in DATA_ACCESS
    }


@dataclass(frozen=True)
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass
class _Publisher:
    sent: list[DueMessage] = field(default_factory=list)

    async def publish(self, messages: Sequence[DueMessage]) -> list[BaseException | None]:
        self.sent.extend(messages)
        return [None] * len(messages)

    async def broker_reachable(self) -> bool:
        return True


@dataclass
class _DeadLetters:
    sent: list[DeadLetter] = field(default_factory=list)

    async def send(self, dead: Sequence[DeadLetter]) -> None:
        self.sent.extend(dead)


async def test_ingest_dispatch_and_periodic_sql_work_under_the_role(app_role: AppRole) -> None:
    """The service's own code paths, with an engine that logs in as the role."""
    now = datetime.now(UTC).replace(microsecond=0)
    topics = {
        "in.confirmed": "booking_confirmed",
        "in.scored": "message_emotion_scored",
        "in.activity": "user_activity",
    }
    user = f"user-{uuid.uuid4().hex[:6]}"
    events = [
        # Booked long ago for yesterday: its post-event follow-up fell due an hour ago.
        # Idle for 40 days: its re-engagement is long past (expired), and the user is
        # a candidate for the daily sweep.
        (
            "in.confirmed",
            confirmed(user, "bk-1", now - timedelta(hours=25), now - timedelta(days=40)),
        ),
        ("in.scored", scored(user, "conv-1", 0.9, now - timedelta(days=40))),
        ("in.activity", activity(user, now - timedelta(days=40))),
    ]
    records = [
        _Record(topic, 0, offset, e.key, e.value) for offset, (topic, e) in enumerate(events)
    ]
    records.append(_Record("in.scored", 1, 0, b"k", b"{ not json"))

    engine = create_engine(app_role.url.render_as_string(hide_password=False))
    try:
        store = PostgresStore(engine, "lp-group")
        dead = _DeadLetters()
        ingestor = Ingestor(store, WireDecoder(CODEC), Policy(), topics, dead, clock=lambda: now)
        outcome = await ingestor.process(records)
        assert sum(outcome.applied.values()) == len(events)
        assert len(dead.sent) == 1
        assert outcome.scheduled[TriggerType.POST_EVENT] == 1
        assert outcome.expired[TriggerType.RE_ENGAGEMENT] == 1
        assert await store.load_offsets([("in.activity", 0), ("in.scored", 1)]) == {
            ("in.activity", 0): 3,
            ("in.scored", 1): 1,
        }
        # The same records again: skipped under the stored offsets.
        again = await ingestor.process(records)
        assert sum(again.applied.values()) == 0

        publisher = _Publisher()
        dispatcher = Dispatcher(store, publisher, Policy(), RetryPolicy(), clock=lambda: now)
        assert await dispatcher.dispatch_due() == 1
        assert [m.record["trigger_type"] for m in publisher.sent] == ["post_event"]
        assert await store.next_due_at(now) is None

        periodic = store
        async with periodic.exclusive("reengagement-sweep") as got:
            assert got
            idle = await periodic.inactive_without_reengagement(now - timedelta(days=30), "", 100)
        assert idle == [user]
        assert await periodic.delete_executed_before(now + timedelta(days=1)) == 1
    finally:
        await engine.dispose()

    conn = await app_role.connect()
    try:
        statuses = await conn.fetch(
            "SELECT status FROM scheduled_followups WHERE user_id = $1", user
        )
    finally:
        await conn.close()
    assert Status.EXECUTED.value not in {r["status"] for r in statuses}


async def test_the_service_runs_as_the_role(app_role: AppRole, settings: Settings) -> None:
    """`run` under the role: its start-up migration is refused (the owner migrated),
    then it consumes, schedules and dispatches as usual."""
    as_role = settings.model_copy(
        update={"database_url": app_role.url.render_as_string(hide_password=False)}
    )
    await create_topics(settings)
    now = datetime.now(UTC)
    user = f"user-{uuid.uuid4().hex[:6]}"
    events = [
        confirmed(user, "bk-due", now - timedelta(hours=24), now - timedelta(days=2)),
        confirmed(user, "bk-later", now + timedelta(days=5), now - timedelta(days=1)),
        activity(user, now),
    ]
    await produce_events(settings, events)
    async with running(as_role) as service:
        await wait_consumed(settings, len(events), service=service)
        await wait_until(
            lambda: query(
                settings,
                "SELECT count(*) AS n FROM scheduled_followups "
                "WHERE user_id = $1 AND status = 'executed'",
                user,
            ),
            lambda rows: rows[0]["n"] == 1,
            timeout=30,
        )
    rows = await query(
        settings,
        "SELECT status, count(*) AS n FROM scheduled_followups WHERE user_id = $1 "
        "GROUP BY status ORDER BY status",
        user,
    )
    assert {r["status"]: r["n"] for r in rows} == {"executed": 1, "pending": 2}
    # Still nothing but data access.
    assert await _grants(app_role.admin, app_role.name) == {
        (t, p) for t in TABLES for p in DATA_ACCESS
    }
