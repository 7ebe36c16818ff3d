"""The schema under Alembic, against the real PostgreSQL.

tests/fixtures/schema_shipped.sql is the schema.sql that shipped (git f6b9aa2,
consumer/sql/schema.sql), byte for byte; tests/fixtures/schema_last_unversioned.sql
the last schema.sql before Alembic took over (it added `cancelled_by`). Databases
made by either are adopted: recorded at the revision they match, then migrated,
every row kept.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.adapters.postgres import schema
from consumer.adapters.postgres.store import PostgresStore, create_engine
from consumer.config import Settings
from consumer.domain.model import Status
from tests.integration.conftest import REPO, Services, fresh_database
from tests.integration.test_cli import cli, messages

pytestmark = pytest.mark.integration

FIXTURES = REPO / "tests" / "fixtures"
SHIPPED = FIXTURES / "schema_shipped.sql"
LAST_UNVERSIONED = FIXTURES / "schema_last_unversioned.sql"
HEAD = schema.chain().head
T0 = datetime(2026, 4, 20, 9, 30, tzinfo=UTC)


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(_dsn(url))
    try:
        yield conn
    finally:
        await conn.close()


@asynccontextmanager
async def engine_on(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def run_file(url: str, path: Path) -> None:
    """What the old `migrate` did with schema.sql: the whole file, one transaction."""
    text = await asyncio.to_thread(path.read_text)
    async with connected(url) as conn, conn.transaction():
        await conn.execute(text)


async def recorded_revision(url: str) -> str | None:
    async with connected(url) as conn:
        exists = await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
        if not exists:
            return None
        rows = await conn.fetch("SELECT version_num FROM alembic_version")
    assert len(rows) <= 1
    return rows[0]["version_num"] if rows else None


# --- what a schema is: columns, constraints, indexes ------------------------------------------


@dataclass(frozen=True)
class Schema:
    columns: frozenset[tuple[Any, ...]]  # table, column, type, length, nullable, default
    order: tuple[tuple[str, tuple[str, ...]], ...]  # table, its columns in order
    constraints: frozenset[tuple[Any, ...]]  # table, name, type, definition
    indexes: frozenset[tuple[Any, ...]]  # table, name, definition

    def unordered(self) -> Schema:
        return replace(self, order=())


async def schema_of(url: str) -> Schema:
    """The service's tables (alembic_version left out: only Alembic's)."""
    async with connected(url) as conn:
        columns = await conn.fetch(
            "SELECT table_name, column_name, data_type, character_maximum_length, "
            "is_nullable, column_default FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name <> 'alembic_version' "
            "ORDER BY table_name, ordinal_position"
        )
        constraints = await conn.fetch(
            "SELECT c.relname, con.conname, con.contype, pg_get_constraintdef(con.oid) "
            "FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relname <> 'alembic_version'"
        )
        indexes = await conn.fetch(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = current_schema() AND tablename <> 'alembic_version'"
        )
    order: dict[str, list[str]] = {}
    for r in columns:
        order.setdefault(r["table_name"], []).append(r["column_name"])
    return Schema(
        columns=frozenset(tuple(r) for r in columns),
        order=tuple((t, tuple(cs)) for t, cs in sorted(order.items())),
        constraints=frozenset(tuple(r) for r in constraints),
        indexes=frozenset(tuple(r) for r in indexes),
    )


# --- rows a shipped database holds ---------------------------------------------------------


def _followup(id_: str, trigger: str, status: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": id_,
        "conversation_id": f"conv-{id_}",
        "user_id": "user-ada",
        "trigger_type": trigger,
        "trigger_data": {},
        "scheduled_at": T0,
        "due_at": T0,
        "status": status,
        "created_at": T0 - timedelta(days=2),
        "updated_at": T0 - timedelta(days=1),
    }
    row.update(fields)
    return row


def _bookings(*ids: str, active: tuple[str, ...]) -> dict[str, Any]:
    return {
        "booking_id": ids[0],
        "booking_ids": list(ids),
        "active_booking_ids": list(active),
        "booking_dates": {b: (T0 - timedelta(hours=24)).isoformat() for b in ids},
        "event_date": (T0 - timedelta(hours=24)).isoformat(),
    }


FOLLOWUPS = [
    _followup(
        "fu-pending", "post_event", "pending", trigger_data=_bookings("bk-1", active=("bk-1",)),
    ),
    _followup(
        "fu-leased", "post_event", "pending",
        trigger_data=_bookings("bk-2", "bk-3", active=("bk-2", "bk-3")),
        lease_owner="host-a:1234:9f2c", lease_until=T0 + timedelta(minutes=5),
    ),
    _followup(
        "fu-executed", "re_engagement", "executed",
        trigger_data={"last_activity": (T0 - timedelta(days=31)).isoformat()},
        executed_at=T0 + timedelta(seconds=3), template_id="reengagement_soft",
        message_content="fernet:gAAAAABmZ3Vlc3Nfd2hvX2lzX2JhY2s=",
    ),
    _followup(
        "fu-failed", "emotion_based", "failed", retry_count=5,
        error_message="KafkaTimeoutError: publish timed out after 30s",
        due_at=T0 + timedelta(minutes=30),
    ),
    _followup("fu-expired", "re_engagement", "expired", scheduled_at=T0 - timedelta(days=9)),
    # Cancelled by an operator (the rules never cancel these)...
    _followup(
        "fu-cancel-custom", "custom", "cancelled", cancelled_at=T0 - timedelta(hours=1),
        trigger_data={"custom_message": "Ready for your next trip? ✈"},
    ),
    _followup(
        "fu-cancel-live", "post_event", "cancelled", cancelled_at=T0 - timedelta(hours=2),
        trigger_data=_bookings("bk-4", active=("bk-4",)),
    ),
    # ... and by a rule: the booking was cancelled.
    _followup(
        "fu-cancel-rule", "post_event", "cancelled", cancelled_at=T0 - timedelta(hours=3),
        trigger_data=_bookings("bk-5", active=()),
    ),
]  # fmt: skip
OPERATOR_CANCELLED = {"fu-cancel-custom", "fu-cancel-live"}
OTHER_ROWS: dict[str, list[dict[str, Any]]] = {
    "user_projection": [
        {"user_id": "user-ada", "last_activity_at": T0 - timedelta(days=31),
         "timezone": "Europe/Paris", "timezone_at": T0 - timedelta(days=40),
         "reengagement_cycle": 2, "refused_followups": 1, "updated_at": T0},
        {"user_id": "user-bob", "last_activity_at": None, "timezone": None,
         "timezone_at": None, "reengagement_cycle": None, "refused_followups": 0,
         "updated_at": T0},
    ],
    "booking_projection": [
        {"booking_id": "bk-1", "user_id": "user-ada", "event_date": T0 - timedelta(hours=24),
         "conversation_id": "conv-fu-pending", "timezone": "Europe/Paris",
         "confirmed_at": T0 - timedelta(days=20), "confirm_event_id": "evt-confirm-1",
         "cancelled_at": None, "cancel_reason": None, "followup_id": "fu-pending",
         "updated_at": T0},
        {"booking_id": "bk-5", "user_id": "user-ada", "event_date": T0 - timedelta(hours=24),
         "conversation_id": None, "timezone": None, "confirmed_at": T0 - timedelta(days=20),
         "confirm_event_id": "evt-confirm-5", "cancelled_at": T0 - timedelta(hours=3),
         "cancel_reason": "customer request", "followup_id": "fu-cancel-rule",
         "updated_at": T0},
    ],
    "conversation_emotions": [
        {"conversation_id": "conv-fu-failed", "user_id": "user-ada",
         "history": [["msg-2", (T0 - timedelta(hours=1)).isoformat(), 0.12],
                     ["msg-1", (T0 - timedelta(hours=2)).isoformat(), 0.4]],
         "checkin_id": "fu-failed", "updated_at": T0},
        {"conversation_id": "conv-quiet", "user_id": "user-bob", "history": [],
         "checkin_id": None, "updated_at": T0},
    ],
    "consumer_offsets": [
        {"group_id": "followup-consumer", "topic": "booking.confirmed", "partition": p,
         "next_offset": 1000 + p, "updated_at": T0}
        for p in range(3)
    ] + [
        {"group_id": "followup-consumer", "topic": "message.emotion_scored", "partition": 0,
         "next_offset": 2**40, "updated_at": T0},
    ],
}  # fmt: skip
KEYS = {
    "scheduled_followups": "id",
    "user_projection": "user_id",
    "booking_projection": "booking_id",
    "conversation_emotions": "conversation_id",
    "consumer_offsets": "group_id, topic, partition",
}


async def fill(url: str) -> None:
    """Rows in every table, as the shipped release wrote them."""
    tables = {"scheduled_followups": FOLLOWUPS, **OTHER_ROWS}
    async with connected(url) as conn:
        for table, rows in tables.items():
            for row in rows:
                names = list(row)
                values = [json.dumps(v) if isinstance(v, dict | list) else v for v in row.values()]
                casts = [
                    f"${i}::jsonb" if isinstance(row[n], dict | list) else f"${i}"
                    for i, n in enumerate(names, 1)
                ]
                await conn.execute(
                    f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(casts)})",
                    *values,
                )


async def all_rows(url: str, columns: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Every row of the five tables (only `columns` of each, when given)."""
    out: dict[str, Any] = {}
    async with connected(url) as conn:
        for table, key in KEYS.items():
            wanted = ", ".join(columns[table]) if columns else "*"
            rows = await conn.fetch(f"SELECT {wanted} FROM {table} ORDER BY {key}")
            out[table] = [dict(r) for r in rows]
    return out


def column_names(rows: dict[str, Any]) -> dict[str, list[str]]:
    return {table: list(found[0]) for table, found in rows.items()}


# --- tests -----------------------------------------------------------------------------------


async def test_a_fresh_database_gets_the_shipped_schema_then_every_revision(
    services: Services, database_url: str
) -> None:
    async with engine_on(database_url) as engine:
        found = await schema.status(engine)
        assert (found.current, found.adoptable, found.at_head) == (None, None, False)
        done = await schema.migrate(engine)
        assert (done.before, done.adopted, done.after) == (None, None, HEAD)
        assert done.applied == schema.chain().revisions
        assert (await schema.status(engine)).at_head
        again = await schema.migrate(engine)
        assert (again.before, again.applied, again.undone) == (HEAD, (), ())
    assert await recorded_revision(database_url) == HEAD
    fresh = await schema_of(database_url)

    # The same as what the shipped schema.sql made, then adopted and migrated ...
    async with fresh_database(services) as shipped:
        await run_file(shipped, SHIPPED)
        async with engine_on(shipped) as engine:
            done = await schema.migrate(engine)
        assert (done.adopted, done.applied) == ("0001", schema.chain().between("0001", HEAD))
        assert await schema_of(shipped) == fresh
    # ... and as what the last schema.sql made (recorded at 0002: nothing runs twice).
    async with fresh_database(services) as last:
        await run_file(last, LAST_UNVERSIONED)
        async with engine_on(last) as engine:
            done = await schema.migrate(engine)
        assert done.adopted == "0002"
        assert await schema_of(last) == fresh


async def test_the_baseline_is_exactly_the_shipped_schema(
    services: Services, database_url: str
) -> None:
    async with engine_on(database_url) as engine:
        await schema.migrate(engine, "0001")
    async with fresh_database(services) as shipped:
        await run_file(shipped, SHIPPED)
        assert await schema_of(database_url) == await schema_of(shipped)


async def test_a_shipped_database_is_adopted_with_every_row(database_url: str) -> None:
    await run_file(database_url, SHIPPED)
    await fill(database_url)
    before = await all_rows(database_url)
    assert all(before.values())
    async with engine_on(database_url) as engine:
        found = await schema.status(engine)
        assert (found.current, found.adoptable) == (None, "0001")
        done = await schema.migrate(engine)
        assert (done.before, done.adopted, done.after) == (None, "0001", HEAD)

        after = await all_rows(database_url, column_names(before))
        assert after == before
        assert await recorded_revision(database_url) == HEAD
        async with connected(database_url) as conn:
            by = dict(await conn.fetch("SELECT id, cancelled_by FROM scheduled_followups"))
        assert by == {
            f["id"]: "operator" if f["id"] in OPERATOR_CANCELLED else None for f in FOLLOWUPS
        }

        # This release's code reads them (all of them, message and all).
        store = PostgresStore(engine, "followup-consumer")
        views = await store.list_followups(
            user_id="user-ada", status=None, trigger_type=None, limit=100
        )
        assert {v.id for v in views} == {f["id"] for f in FOLLOWUPS}
        cancelled = await store.list_followups(
            user_id=None, status=Status.CANCELLED, trigger_type=None, limit=100
        )
        assert len(cancelled) == 3
        # Adopting twice changes nothing.
        assert (await schema.migrate(engine)).applied == ()
    assert await all_rows(database_url, column_names(before)) == before


async def test_a_database_with_some_of_the_tables_is_refused_untouched(database_url: str) -> None:
    async with connected(database_url) as conn:
        await conn.execute("CREATE TABLE scheduled_followups (id varchar(64) PRIMARY KEY)")
        await conn.execute("INSERT INTO scheduled_followups VALUES ('kept')")
    async with engine_on(database_url) as engine:
        with pytest.raises(schema.SchemaUnrecognised, match=r"missing: scheduled_followups\."):
            await schema.migrate(engine)
        with pytest.raises(schema.SchemaUnrecognised):
            await schema.status(engine)
    assert await recorded_revision(database_url) is None
    async with connected(database_url) as conn:
        assert await conn.fetchval("SELECT id FROM scheduled_followups") == "kept"


async def test_down_to_the_baseline_and_up_again_keeps_the_rows(database_url: str) -> None:
    await run_file(database_url, SHIPPED)
    await fill(database_url)
    before = await all_rows(database_url)
    async with engine_on(database_url) as engine:
        await schema.migrate(engine)
        with pytest.raises(schema.DowngradeNotConfirmed, match="cancelled_by"):
            await schema.migrate(engine, "0001")
        assert await recorded_revision(database_url) == HEAD

        down = await schema.migrate(engine, "0001", allow_downgrade=True)
        assert (down.before, down.after) == (HEAD, "0001")
        assert down.undone == tuple(reversed(schema.chain().between("0001", HEAD)))
        assert await recorded_revision(database_url) == "0001"
        assert await all_rows(database_url) == before  # the shipped columns exactly
        assert (
            "cancelled_by" not in column_names(await all_rows(database_url))["scheduled_followups"]
        )

        up = await schema.migrate(engine)
        assert (up.before, up.after) == ("0001", HEAD)
    assert await all_rows(database_url, column_names(before)) == before


async def test_every_downgrade_undoes_its_upgrade(services: Services, database_url: str) -> None:
    """Walking up one revision at a time and down one at a time passes through the
    same schemas (column order aside: a column dropped and added again goes last)."""
    steps: list[str | None] = [None, *schema.chain().revisions]
    going_up: dict[str | None, Schema] = {}
    async with engine_on(database_url) as engine:
        for rev in steps:
            await schema.migrate(engine, rev or schema.BASE)
            going_up[rev] = await schema_of(database_url)
    assert going_up[None] == Schema(frozenset(), (), frozenset(), frozenset())
    async with fresh_database(services) as other, engine_on(other) as engine:
        await schema.migrate(engine)
        for rev in reversed(steps):
            await schema.migrate(engine, rev or schema.BASE, allow_downgrade=True)
            assert await recorded_revision(other) == rev
            assert (await schema_of(other)).unordered() == going_up[rev].unordered(), rev


@pytest.mark.parametrize("made_by", [None, SHIPPED])
async def test_instances_migrating_at_once(database_url: str, made_by: Path | None) -> None:
    if made_by is not None:
        await run_file(database_url, made_by)
        await fill(database_url)
    engines = [create_engine(database_url, pool_size=1) for _ in range(4)]
    try:
        done = await asyncio.gather(*(schema.migrate(e) for e in engines))
    finally:
        await asyncio.gather(*(e.dispose() for e in engines))
    worked = [d for d in done if d.applied]
    assert len(worked) == 1
    assert worked[0].adopted == ("0001" if made_by else None)
    assert all(d.before == HEAD and not d.applied for d in done if d is not worked[0])
    assert await recorded_revision(database_url) == HEAD


async def test_a_newer_release_s_schema_is_left_alone(database_url: str) -> None:
    async with engine_on(database_url) as engine:
        await schema.migrate(engine)
        async with connected(database_url) as conn:
            await conn.execute("UPDATE alembic_version SET version_num = '9999'")
        found = await schema.status(engine)
        assert (found.current, found.known, found.at_head) == ("9999", False, False)
        with pytest.raises(schema.SchemaAhead, match="9999"):
            await schema.migrate(engine)
        # The service's start-up goes on: that release keeps this code working.
        assert await PostgresStore(engine, "g").migrate()
    assert await recorded_revision(database_url) == "9999"


# --- the command line ------------------------------------------------------------------------


async def test_the_migrate_command(settings: Settings) -> None:
    url = settings.database_url
    await run_file(url, SHIPPED)
    await fill(url)

    shown = await cli(settings, "migrate", "--current")
    assert (shown.code, shown.out.strip()) == (1, (
        f"none recorded: the schema schema.sql made, which is 0001 (head is {HEAD}; "
        "`followup-consumer migrate` adopts it)"
    ))  # fmt: skip
    done = await cli(settings, "migrate")
    assert done.code == 0, done.err
    assert done.out.strip() == (
        f"recorded the schema schema.sql made as 0001; upgraded 0001 -> {HEAD} (head)"
    )
    again = await cli(settings, "migrate")
    assert (again.code, again.out.strip()) == (0, f"already at {HEAD} (head)")
    shown = await cli(settings, "migrate", "--current")
    assert (shown.code, shown.out.strip()) == (0, f"{HEAD} (head)")

    refused = await cli(settings, "migrate", "--to", "0001")
    assert refused.code == 2
    assert messages(refused.err) == [
        f"followup-consumer: going down from {HEAD} to 0001 undoes 0006: Drops nothing: "
        "the index on every row's conversation again; writes get slower; 0005: Drops nothing: "
        "recreates two indexes nothing reads, and the default fill factor; 0004: Drops "
        "message_templates (every edited version) and the locale columns; 0003: Drops "
        "scheduled_followups.held_reason and approved_at (why a follow-up is held); "
        "0002: Drops scheduled_followups.cancelled_by (which cancellations were an "
        "operator's); repeat with --yes to do it"
    ]
    assert await recorded_revision(url) == HEAD
    down = await cli(settings, "migrate", "--to", "0001", "--yes")
    assert (down.code, down.out.strip()) == (0, f"downgraded {HEAD} -> 0001 (head is {HEAD})")
    shown = await cli(settings, "migrate", "--current")
    assert (shown.code, shown.out.strip()) == (1, f"0001 (head is {HEAD})")
    up = await cli(settings, "migrate", "--to", "head")
    assert (up.code, up.out.strip()) == (0, f"upgraded 0001 -> {HEAD} (head)")

    unknown = await cli(settings, "migrate", "--to", "0042")
    assert unknown.code == 2
    assert messages(unknown.err) == [
        "followup-consumer: no revision '0042' in this release "
        "(it has 0001, 0002, 0003, 0004, 0005, 0006, and head, base)"
    ]
    async with connected(url) as conn:
        await conn.execute("UPDATE alembic_version SET version_num = '9999'")
    ahead = await cli(settings, "migrate")
    assert ahead.code == 9
    assert messages(ahead.err)[0].startswith("followup-consumer: the database is at revision 9999")
    shown = await cli(settings, "migrate", "--current")
    assert (shown.code, shown.out.strip()) == (
        9, f"9999: not a revision of this release (its head is {HEAD})"
    )  # fmt: skip


async def test_migrate_without_a_database(settings: Settings) -> None:
    gone = await cli(settings, "migrate", DATABASE_URL="postgresql+asyncpg://u@127.0.0.1:1/none")
    assert gone.code == 5
    [line] = messages(gone.err)
    assert line.startswith("followup-consumer: database error: ")
