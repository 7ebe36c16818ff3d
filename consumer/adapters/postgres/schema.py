"""The database schema, owned by Alembic: the revisions in `migrations/versions/`,
run in one transaction under an advisory lock, so any number of instances may
migrate at once (the first does the work, the others then find nothing to do).

A database that the schema.sql of earlier releases created has the tables but no
`alembic_version`: it is recognised by its tables, columns and indexes, recorded
at the revision it matches (0001, or 0002 when it has `cancelled_by`) and then
migrated like any other. schema.sql never went past 0002, so that is where
recognition stops; anything else unversioned is refused, not guessed at.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.adapters.postgres import sql
from consumer.adapters.postgres.errors import INSUFFICIENT_PRIVILEGE, describe, sqlstate, translated

HEAD = "head"
BASE = "base"
MIGRATION_LOCK_KEY = 0x5F011_0C0

# What schema.sql (as shipped) made: revision 0001.
_BASELINE_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "scheduled_followups": (
        "id", "conversation_id", "user_id", "trigger_type", "trigger_data", "scheduled_at",
        "executed_at", "cancelled_at", "status", "template_id", "message_content",
        "created_at", "error_message", "retry_count", "due_at", "lease_owner",
        "lease_until", "updated_at",
    ),
    "user_projection": (
        "user_id", "last_activity_at", "timezone", "timezone_at", "reengagement_cycle",
        "refused_followups", "updated_at",
    ),
    "booking_projection": (
        "booking_id", "user_id", "event_date", "conversation_id", "timezone", "confirmed_at",
        "confirm_event_id", "cancelled_at", "cancel_reason", "followup_id", "updated_at",
    ),
    "conversation_emotions": ("conversation_id", "user_id", "history", "checkin_id", "updated_at"),
    "consumer_offsets": ("group_id", "topic", "partition", "next_offset", "updated_at"),
}  # fmt: skip
_BASELINE_INDEXES = frozenset(
    {
        "scheduled_followups_pkey",
        "idx_followups_status_scheduled",
        "idx_followups_user_status",
        "idx_followups_conversation",
        "idx_followups_pending_due",
        "idx_followups_executed_at",
        "user_projection_pkey",
        "idx_user_projection_last_activity",
        "booking_projection_pkey",
        "idx_booking_projection_user",
        "conversation_emotions_pkey",
        "idx_conversation_emotions_user",
        "consumer_offsets_pkey",
    }
)


class SchemaRefused(Exception):
    """`migrate` cannot or will not do what was asked; the message says why."""


class NotPermitted(SchemaRefused):
    """This database role may not change (or read the version of) the schema."""


class UnknownRevision(SchemaRefused):
    """The target is no revision of this release."""


class SchemaAhead(SchemaRefused):
    """The database is at a revision this release does not know: a newer one migrated it."""

    def __init__(self, current: str, head: str) -> None:
        super().__init__(
            f"the database is at revision {current}, which this release does not know "
            f"(its newest is {head}): a newer release migrated it; to go back, run that "
            f"release's `followup-consumer migrate --to {head}`"
        )
        self.current = current
        self.head = head


class SchemaUnrecognised(SchemaRefused):
    """Tables of the service without a version, and not as any schema.sql made them."""


class DowngradeNotConfirmed(SchemaRefused):
    """Going down loses what the revisions undone had added: asked for explicitly."""


@dataclass(frozen=True)
class Chain:
    """This release's revisions, oldest first, and what each one's downgrade loses."""

    revisions: tuple[str, ...]
    losses: Mapping[str, str]

    @property
    def head(self) -> str:
        return self.revisions[-1]

    def position(self, revision: str | None) -> int:
        return -1 if revision is None else self.revisions.index(revision)

    def resolve(self, target: str) -> str | None:
        """The revision `target` names (None: base, before the first)."""
        if target == HEAD:
            return self.head
        if target == BASE:
            return None
        if target not in self.revisions:
            raise UnknownRevision(
                f"no revision {target!r} in this release "
                f"(it has {', '.join(self.revisions)}, and head, base)"
            )
        return target

    def between(self, low: str | None, high: str | None) -> tuple[str, ...]:
        """The revisions above `low` up to and including `high`."""
        return self.revisions[self.position(low) + 1 : self.position(high) + 1]


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None  # None: no revision recorded (empty, or made by schema.sql)
    head: str
    adoptable: str | None  # made by schema.sql: the revision it matches
    known: bool  # False: a newer release's revision

    @property
    def at_head(self) -> bool:
        return self.current == self.head


@dataclass(frozen=True)
class Migration:
    before: str | None  # recorded before (None: none; see adopted)
    adopted: str | None  # made by schema.sql and recorded at this revision first
    after: str | None
    head: str
    applied: tuple[str, ...]  # upgrades run, in order
    undone: tuple[str, ...]  # downgrades run, in order


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    location = resources.files("consumer.adapters.postgres").joinpath("migrations")
    config.set_main_option("script_location", str(location).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


@functools.cache
def chain() -> Chain:
    """Read from migrations/versions/ once; one line of history, or Alembic raises."""
    script = ScriptDirectory.from_config(_config())
    script.get_current_head()  # raises when there are several heads
    scripts = list(reversed(list(script.walk_revisions())))
    losses = {}
    for s in scripts:
        downgrade = getattr(s.module, "downgrade", None)
        doc = ((downgrade.__doc__ if downgrade is not None else None) or "").strip()
        losses[s.revision] = doc.splitlines()[0].rstrip(".") if doc else "(not documented)"
    return Chain(tuple(s.revision for s in scripts), losses)


async def migrate(
    engine: AsyncEngine, target: str = HEAD, *, allow_downgrade: bool = False
) -> Migration:
    """Bring the schema to `target` (default: this release's newest revision)."""
    revisions = chain()
    goal = revisions.resolve(target)
    with _refusals():
        async with engine.begin() as conn:
            await conn.execute(sql.MIGRATION_LOCK, {"k": MIGRATION_LOCK_KEY})
            return await conn.run_sync(_migrate, revisions, goal, allow_downgrade)


async def status(engine: AsyncEngine) -> SchemaStatus:
    """Where the database is, against this release's revisions."""
    revisions = chain()
    with _refusals():
        async with engine.connect() as conn:
            return await conn.run_sync(_status, revisions)


@contextmanager
def _refusals() -> Iterator[None]:
    """Outages become the port's Unavailable; a role without rights NotPermitted."""
    try:
        with translated():
            yield
    except DBAPIError as exc:
        if sqlstate(exc) != INSUFFICIENT_PRIVILEGE:
            raise
        raise NotPermitted(
            f"this database role may not change the schema or read its revision "
            f"({describe(exc)}); "
            "run `followup-consumer migrate` as the schema's owner"
        ) from exc


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _status(conn: Connection, revisions: Chain) -> SchemaStatus:
    current = _current(conn)
    return SchemaStatus(
        current=current,
        head=revisions.head,
        adoptable=_recognise(conn) if current is None else None,
        known=current is None or current in revisions.revisions,
    )


def _migrate(
    conn: Connection, revisions: Chain, goal: str | None, allow_downgrade: bool
) -> Migration:
    before = _current(conn)
    adopted = None
    if before is None:
        adopted = _recognise(conn)
        if adopted is not None:
            command.stamp(_config(conn), adopted)
    start = before if adopted is None else adopted
    if start is not None and start not in revisions.revisions:
        raise SchemaAhead(start, revisions.head)
    applied: tuple[str, ...] = ()
    undone: tuple[str, ...] = ()
    if revisions.position(goal) > revisions.position(start):
        applied = revisions.between(start, goal)
        command.upgrade(_config(conn), goal or BASE)
    elif revisions.position(goal) < revisions.position(start):
        undone = tuple(reversed(revisions.between(goal, start)))
        if not allow_downgrade:
            raise DowngradeNotConfirmed(_downgrade_warning(revisions, start, goal, undone))
        command.downgrade(_config(conn), goal or BASE)
    return Migration(before, adopted, goal, revisions.head, applied, undone)


def _downgrade_warning(
    revisions: Chain, start: str | None, goal: str | None, undone: tuple[str, ...]
) -> str:
    lost = "; ".join(f"{r}: {revisions.losses[r]}" for r in undone)
    return f"going down from {start} to {goal or BASE} undoes {lost}"


def _recognise(conn: Connection) -> str | None:
    """For a database without a recorded revision: None when the service has no table
    in it yet, else the revision whose schema schema.sql made there."""
    tables = list(_BASELINE_COLUMNS)
    present: dict[str, set[str]] = {}
    for table, column in conn.execute(sql.SCHEMA_COLUMNS, {"tables": tables}):
        present.setdefault(table, set()).add(column)
    if not present:
        return None
    indexes = {name for (name,) in conn.execute(sql.SCHEMA_INDEXES, {"tables": tables})}
    missing = [
        f"{table}.{column}"
        for table, columns in _BASELINE_COLUMNS.items()
        for column in columns
        if column not in present.get(table, ())
    ] + [f"index {name}" for name in sorted(_BASELINE_INDEXES - indexes)]
    if missing:
        shown = ", ".join(missing[:6]) + (", ..." if len(missing) > 6 else "")
        raise SchemaUnrecognised(
            "the database has tables of the service but no recorded revision, and is not "
            f"the schema schema.sql made (missing: {shown}); nothing was changed"
        )
    return "0002" if "cancelled_by" in present["scheduled_followups"] else "0001"
