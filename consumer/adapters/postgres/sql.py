"""Every SQL statement of the service, by name. Nothing else builds SQL.

The four `UPDATE ... FROM unnest(...)` write-backs of ingest are generated from
one table of columns (`WRITE_BACK`), so a new projection column is one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import TextClause, text

from consumer.adapters.postgres import arrays

_ID = "varchar"
_TS = "timestamptz"


def unnested(name: str, sql_type: str) -> str:
    """The array parameter `name` of an `unnest(...)`: text and integers arrive as one
    array literal (see `arrays`), timestamps as a binary array. `bound` makes its value."""
    if sql_type == _TS:
        return f"CAST(:{name} AS {sql_type}[])"
    return f"CAST(CAST(:{name} AS text) AS {sql_type}[])"


def bound(values: list[Any], sql_type: str) -> Any:
    """The value of an `unnested` parameter of `sql_type`."""
    return values if sql_type == _TS else arrays.literal(values)


def bind(columns: Iterable[tuple[str, str]], values: Mapping[str, list[Any]]) -> dict[str, Any]:
    """The `unnested` parameters (name, SQL type) `columns` from their values."""
    return {name: bound(values[name], sql_type) for name, sql_type in columns}


# --- row shapes -------------------------------------------------------------------------

FOLLOWUP_COLUMNS = (
    "id",
    "user_id",
    "conversation_id",
    "trigger_type",
    "scheduled_at",
    "status",
    "trigger_data::text AS trigger_data",
    "cancelled_at",
    "lease_until",
    "retry_count",
    "cancelled_by",
)
_FOLLOWUP = ", ".join(FOLLOWUP_COLUMNS)
_FOLLOWUP_F = ", ".join(f"f.{c}" for c in FOLLOWUP_COLUMNS)

VIEW_COLUMNS = (
    "id, user_id, conversation_id, trigger_type, status, scheduled_at, executed_at, "
    "cancelled_at, created_at, template_id, message_content, error_message, retry_count, "
    "trigger_data::text AS trigger_data, due_at, held_reason, locale, template_version"
)

# --- ingest: lock, load, write back -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Projection:
    """A projection table: its key, the columns loaded, whether a placeholder row
    needs a user id ('' marks "not seen yet" where the column is required)."""

    table: str
    key: str
    columns: str
    seed_user: bool


USERS = Projection(
    "user_projection",
    "user_id",
    "user_id, last_activity_at, timezone, timezone_at, reengagement_cycle, refused_followups, "
    "locale, locale_at",
    seed_user=False,
)
CONVERSATIONS = Projection(
    "conversation_emotions",
    "conversation_id",
    "conversation_id, user_id, history::text AS history, checkin_id",
    seed_user=True,
)
BOOKINGS = Projection(
    "booking_projection",
    "booking_id",
    "booking_id, user_id, event_date, conversation_id, timezone, confirmed_at, "
    "confirm_event_id, cancelled_at, cancel_reason, followup_id",
    seed_user=True,
)
PROJECTIONS = (USERS, CONVERSATIONS, BOOKINGS)


def _seed(p: Projection) -> TextClause:
    extra_col, extra_val = (", user_id", ", ''") if p.seed_user else ("", "")
    return text(
        f"INSERT INTO {p.table} ({p.key}{extra_col}) "
        f"SELECT k{extra_val} FROM unnest({unnested('keys', _ID)}) AS k ORDER BY k "
        "ON CONFLICT DO NOTHING"
    )


def _lock(p: Projection) -> TextClause:
    return text(
        f"SELECT {p.columns} FROM {p.table} WHERE {p.key} = ANY(CAST(:keys AS varchar[])) "
        f"ORDER BY {p.key} FOR UPDATE"
    )


SEED = {p.table: _seed(p) for p in PROJECTIONS}
LOCK = {p.table: _lock(p) for p in PROJECTIONS}

LOCK_FOLLOWUPS = text(
    # Written as joins through unnest: `user_id = ANY(...) OR id = ANY(...)`
    # flips to a generic plan that scans every pending row per user.
    # The pending rows of the batch's users (the per-user limit), every check-in of
    # its conversations (the rules recompute that set as a whole), and the rows
    # named by id (the post-event rows of the chains the batch can change among them).
    f"SELECT {_FOLLOWUP} FROM scheduled_followups WHERE id IN ("
    f"  SELECT p.id FROM unnest({unnested('users', _ID)}) AS u(user_id) "
    "  JOIN scheduled_followups AS p "
    "    ON p.user_id = u.user_id AND p.status = 'pending' "
    f"  UNION SELECT p.id FROM unnest({unnested('convs', 'text')}) AS c(conversation_id) "
    "  JOIN scheduled_followups AS p "
    "    ON p.conversation_id = c.conversation_id AND p.trigger_type = 'emotion_based' "
    f"  UNION SELECT unnest({unnested('ids', _ID)})) "
    "ORDER BY id FOR UPDATE"
)
# The bookings of the chains (`rules.chains`) that a batch's booking events can
# change (`rules.touched_chains`), found here so that what a batch reads into Python
# does not grow with its users' histories. The users' confirmed, dated bookings and
# the batch's :dates are cut together into runs, in (date, id) order, wherever two
# neighbours are more than :window apart; a run with one of the dates in it is a
# run of chains each within :window of that date: its bookings are the ones wanted.
# (A date links only bookings within :window of it, and any point of a chain's span
# is within :window of one of its bookings.) Window functions over one sort: no
# join between the intermediate results, so no plan that is quadratic in them.
# Not locked: each transaction that changes a booking holds the lock on its user's
# row (see PostgresUnitOfWork.lock_and_load).
TOUCHED_BOOKINGS = text(
    f"WITH w AS (SELECT * FROM unnest({unnested('users', _ID)}, {unnested('dates', _TS)}) "
    "    AS w(user_id, d)), "
    "dated AS ("
    "  SELECT b.booking_id, b.user_id, b.event_date "
    "  FROM (SELECT DISTINCT user_id FROM w) AS u "
    "  JOIN booking_projection AS b ON b.user_id = u.user_id "
    "  WHERE b.confirmed_at IS NOT NULL AND b.event_date IS NOT NULL "
    "  UNION ALL SELECT NULL, user_id, d FROM w), "
    "cut AS (SELECT booking_id, user_id, event_date, "
    "    CASE WHEN event_date - lag(event_date) OVER o <= :window THEN 0 ELSE 1 END AS c "
    "  FROM dated WINDOW o AS (PARTITION BY user_id ORDER BY event_date, booking_id)), "
    "runs AS (SELECT booking_id, user_id, "
    "    sum(c) OVER (PARTITION BY user_id ORDER BY event_date, booking_id) AS run FROM cut), "
    "hit AS (SELECT booking_id, "
    "    bool_or(booking_id IS NULL) OVER (PARTITION BY user_id, run) AS wanted FROM runs) "
    f"SELECT {BOOKINGS.columns} FROM booking_projection WHERE booking_id IN ("
    "  SELECT booking_id FROM hit WHERE wanted AND booking_id IS NOT NULL)"
)

LOCK_OFFSETS = text(
    "SELECT topic, partition, next_offset FROM consumer_offsets "
    "WHERE group_id = :group AND (topic, partition) IN (SELECT * FROM "
    "unnest(CAST(:topics AS varchar[]), CAST(:parts AS integer[]))) "
    "ORDER BY topic, partition FOR UPDATE"
)
LOAD_OFFSETS = text(
    "SELECT topic, partition, next_offset FROM consumer_offsets "
    "WHERE group_id = :group AND (topic, partition) IN "
    "(SELECT * FROM unnest(CAST(:topics AS varchar[]), CAST(:parts AS integer[])))"
)
SAVE_OFFSETS = text(
    "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) "
    "SELECT :group, t, p, o FROM unnest(CAST(:topics AS varchar[]), "
    "CAST(:parts AS integer[]), CAST(:offs AS bigint[])) AS v(t, p, o) "
    "ON CONFLICT (group_id, topic, partition) DO UPDATE SET "
    "next_offset = GREATEST(consumer_offsets.next_offset, "
    "EXCLUDED.next_offset), updated_at = now()"
)


@dataclass(frozen=True, slots=True)
class Column:
    """One column written back: its name, SQL type, and how the text is cast."""

    name: str
    sql_type: str
    cast: str = ""  # e.g. "::jsonb" when sent as text


@dataclass(frozen=True, slots=True)
class WriteBack:
    table: str
    key: str
    columns: tuple[Column, ...]

    def statement(self) -> TextClause:
        """UPDATE table SET each column FROM unnest(one array per column)."""
        arrays = ", ".join(unnested(c.name, c.sql_type) for c in self.columns)
        names = ", ".join(c.name for c in self.columns)
        sets = ", ".join(
            f"{c.name} = v.{c.name}{c.cast}" for c in self.columns if c.name != self.key
        )
        return text(
            f"UPDATE {self.table} AS t SET {sets}, updated_at = now() "
            f"FROM unnest({arrays}) AS v({names}) WHERE t.{self.key} = v.{self.key}"
        )

    def bind(self, values: Mapping[str, list[Any]]) -> dict[str, Any]:
        """The statement's parameters from each column's values."""
        return bind(((c.name, c.sql_type) for c in self.columns), values)


WRITE_BACK = {
    "users": WriteBack(
        "user_projection",
        "user_id",
        (
            Column("user_id", _ID),
            Column("last_activity_at", _TS),
            Column("timezone", _ID),
            Column("timezone_at", _TS),
            Column("reengagement_cycle", "integer"),
            Column("refused_followups", "integer"),
            Column("locale", _ID),
            Column("locale_at", _TS),
        ),
    ),
    "conversations": WriteBack(
        "conversation_emotions",
        "conversation_id",
        (
            Column("conversation_id", _ID),
            Column("user_id", _ID),
            Column("history", "text", "::jsonb"),
            Column("checkin_id", _ID),
        ),
    ),
    "bookings": WriteBack(
        "booking_projection",
        "booking_id",
        (
            Column("booking_id", _ID),
            Column("user_id", _ID),
            Column("event_date", _TS),
            Column("conversation_id", _ID),
            Column("timezone", _ID),
            Column("confirmed_at", _TS),
            Column("confirm_event_id", _ID),
            Column("cancelled_at", _TS),
            Column("cancel_reason", "text"),
            Column("followup_id", _ID),
        ),
    ),
}
WRITE_BACK_SQL = {name: wb.statement() for name, wb in WRITE_BACK.items()}

# Rows the rules may change or remove (domain.model.Followup.is_fixed is the same
# test): never sent, not cancelled by an operator, not under a live lease. A
# lease that ran out (its dispatcher died, or is too slow) is released: ingest
# loaded the row as not in flight, by the same `now`.
_NOT_FIXED = (
    "({t}.status IN ('pending', 'expired') "
    "OR ({t}.status = 'cancelled' AND {t}.cancelled_by IS NULL)) "
    "AND ({t}.lease_owner IS NULL "
    "  OR {t}.lease_until <= COALESCE(CAST(:now AS timestamptz), now()))"
)
# The arrays of UPSERT_FOLLOWUPS, in order.
FOLLOWUP_ARRAYS = (
    ("ids", _ID),
    ("users", _ID),
    ("convs", _ID),
    ("types", _ID),
    ("data", "text"),
    ("at", _TS),
    ("status", _ID),
    ("cancelled", _TS),
)
UPSERT_FOLLOWUPS = text(
    # The WHERE guard keeps an executed (or failed, operator-cancelled, leased)
    # row as it is even if a stale decision reaches it.
    "INSERT INTO scheduled_followups (id, user_id, conversation_id, trigger_type, "
    "trigger_data, scheduled_at, due_at, status, cancelled_at) "
    "SELECT id, user_id, conversation_id, trigger_type, data::jsonb, at, at, status, "
    f"cancelled_at FROM unnest({', '.join(unnested(n, t) for n, t in FOLLOWUP_ARRAYS)}) "
    "AS v(id, user_id, conversation_id, trigger_type, data, at, status, cancelled_at) "
    "ON CONFLICT (id) DO UPDATE SET conversation_id = EXCLUDED.conversation_id, "
    "trigger_data = EXCLUDED.trigger_data, scheduled_at = EXCLUDED.scheduled_at, "
    "due_at = EXCLUDED.due_at, status = EXCLUDED.status, "
    "cancelled_at = EXCLUDED.cancelled_at, lease_owner = NULL, lease_until = NULL, "
    "held_reason = NULL, updated_at = now() "
    "WHERE " + _NOT_FIXED.format(t="scheduled_followups")
)
DELETE_FOLLOWUPS = text(
    # Follow-ups the events no longer call for; the guard as for the upsert.
    "DELETE FROM scheduled_followups AS f WHERE f.id = ANY(CAST(:ids AS varchar[])) "
    "AND " + _NOT_FIXED.format(t="f")
)

# --- dispatch ------------------------------------------------------------------------------

# Dispatch touches a few thousand rows of a table that may hold millions, a backlog
# of them pending. Left to statistics (none on a new table; taken when few rows were
# pending or leased), the planner sorted or hashed every pending row for each batch
# of a burst, or looped over the batch once per pending row: 2 s to mark 2,000 rows
# after an ANALYZE. In the transactions that run `INDEX_WALKS_ONLY` first it may
# only walk indexes and nest loops: the claim in `due_at` order, the marks by key.
INDEX_WALKS_ONLY = text(
    "SELECT set_config('enable_seqscan', 'off', true), "
    "set_config('enable_bitmapscan', 'off', true), set_config('enable_sort', 'off', true), "
    "set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"
)


def _update_leased(assignments: str, columns: Iterable[tuple[str, str]]) -> TextClause:
    """UPDATE the follow-ups leased to `:owner` and still pending: `assignments` from
    `v`, one row per element of the `unnested` arrays `columns` (the first: ids).

    Each id is looked up by primary key in a fenced subquery (`OFFSET 0`), so that
    the lease is checked on the row found: as a filter on the table, its estimate
    (one row, from statistics where hardly any row is leased) made the planner scan
    the table and loop over the batch for every row."""
    arrays = ", ".join(unnested(n, t) for n, t in columns)
    names = ", ".join(n for n, _ in columns)
    return text(
        f"UPDATE scheduled_followups AS f SET {assignments} "
        f"FROM unnest({arrays}) AS v({names}) "
        "CROSS JOIN LATERAL (SELECT s.id, s.lease_owner, s.status FROM scheduled_followups "
        "AS s WHERE s.id = v.id OFFSET 0) AS mine "
        "WHERE f.id = mine.id AND mine.lease_owner = :owner AND mine.status = 'pending'"
    )


CLAIM_DUE = text(
    "WITH due AS (SELECT id FROM scheduled_followups "
    "  WHERE status = 'pending' AND due_at <= :now "
    "  AND (lease_until IS NULL OR lease_until < :now) "
    "  ORDER BY due_at LIMIT :limit FOR UPDATE SKIP LOCKED) "
    "UPDATE scheduled_followups AS f SET lease_owner = :owner, "
    f"lease_until = :until FROM due WHERE f.id = due.id RETURNING {_FOLLOWUP_F}"
)
# The send gate (QUIET_HOURS, MAX_SENDS_PER_USER_PER_DAY): one transaction holding
# the claimed follow-ups' users' rows (the lock ingest takes first too, in the same
# order), so that two dispatchers never both count a day's last allowed send.
GATE_LOCK_USERS = text(
    "SELECT user_id, timezone FROM user_projection "
    "WHERE user_id = ANY(CAST(:keys AS varchar[])) ORDER BY user_id FOR UPDATE"
)
GATE_SENDS = text(
    # What counts: sent (executed), and approved by a dispatcher whose lease is live
    # (being published right now), except the follow-ups being decided.
    "SELECT f.user_id, f.executed_at AS at FROM unnest(CAST(:users AS varchar[])) AS u(user_id) "
    "JOIN scheduled_followups AS f ON f.user_id = u.user_id AND f.status = 'executed' "
    "WHERE f.executed_at >= :since "
    "UNION ALL SELECT f.user_id, f.approved_at FROM unnest(CAST(:users AS varchar[])) "
    "AS u(user_id) JOIN scheduled_followups AS f ON f.user_id = u.user_id "
    "AND f.status = 'pending' WHERE f.lease_until > :now AND f.approved_at >= :since "
    "AND NOT (f.id = ANY(CAST(:ids AS varchar[])))"
)
GATE_APPROVE = text(
    "UPDATE scheduled_followups SET approved_at = :now, held_reason = NULL, "
    "updated_at = now() WHERE id = ANY(CAST(:ids AS varchar[])) "
    "AND lease_owner = :owner AND status = 'pending'"
)
GATE_HOLD_ARRAYS = (("id", _ID), ("at", _TS), ("reason", _ID))
GATE_HOLD = _update_leased(
    # Released with a later due_at; scheduled_at stays the original.
    "due_at = v.at, held_reason = v.reason, lease_owner = NULL, lease_until = NULL, "
    "updated_at = now()",
    GATE_HOLD_ARRAYS,
)
FIRING_SCORES = text(
    "SELECT conversation_id, history::text AS history FROM conversation_emotions "
    "WHERE conversation_id = ANY(CAST(:ids AS varchar[]))"
)
FIRING_USERS = text(
    "SELECT user_id, last_activity_at, timezone, locale FROM user_projection "
    "WHERE user_id = ANY(CAST(:ids AS varchar[]))"
)
FIRING_LIVE_BOOKINGS = text(
    "SELECT DISTINCT user_id FROM booking_projection "
    "WHERE user_id = ANY(CAST(:ids AS varchar[])) "
    "AND confirmed_at IS NOT NULL AND cancelled_at IS NULL"
)
MARK_EXECUTED_ARRAYS = (
    ("id", _ID),
    ("template_id", _ID),
    ("message", "text"),
    ("locale", _ID),
    ("version", "integer"),
)
MARK_EXECUTED = _update_leased(
    "status = 'executed', executed_at = :now, template_id = v.template_id, "
    "message_content = v.message, locale = v.locale, template_version = v.version, "
    "lease_owner = NULL, lease_until = NULL, updated_at = now()",
    MARK_EXECUTED_ARRAYS,
)
MARK_EXPIRED = text(
    "UPDATE scheduled_followups SET status = 'expired', lease_owner = NULL, "
    "lease_until = NULL, updated_at = now() "
    "WHERE id = ANY(CAST(:ids AS varchar[])) AND lease_owner = :owner "
    "AND status = 'pending'"
)
MARK_PUBLISH_FAILED = text(
    # retry_count counts retries given: a failure followed by a retry adds `step`
    # (0 when the broker was unreachable), the last one (given up: failed) adds none.
    "UPDATE scheduled_followups SET "
    "retry_count = retry_count + CASE WHEN CAST(:retry_at AS timestamptz) IS NULL "
    "  THEN 0 ELSE CAST(:step AS integer) END, "
    "error_message = :error, lease_owner = NULL, lease_until = NULL, "
    "status = CASE WHEN CAST(:retry_at AS timestamptz) IS NULL "
    "  THEN 'failed' ELSE status END, "
    "due_at = COALESCE(CAST(:retry_at AS timestamptz), due_at), "
    "updated_at = now() "
    "WHERE id = :id AND lease_owner = :owner AND status = 'pending'"
)
NEXT_DUE_AT = text(
    # Walks the partial index of pending rows.
    "SELECT due_at FROM scheduled_followups WHERE status = 'pending' "
    "AND (lease_until IS NULL OR lease_until < :now) ORDER BY due_at LIMIT 1"
)

# --- periodic work ---------------------------------------------------------------------------

PING = text("SELECT 1")
TRY_ADVISORY_LOCK = text("SELECT pg_try_advisory_lock(hashtext(:k))")
ADVISORY_UNLOCK = text("SELECT pg_advisory_unlock(hashtext(:k))")
INACTIVE_WITHOUT_REENGAGEMENT = text(
    # A pre-filter only: `rules.sweep_reengagement` decides, under lock, for each
    # user returned. It must never leave out a user the rule would pick.
    "SELECT u.user_id FROM user_projection u "
    "WHERE u.last_activity_at <= :idle_since AND u.user_id > :after "
    "AND NOT EXISTS (SELECT 1 FROM scheduled_followups f "
    "  WHERE f.user_id = u.user_id AND f.trigger_type = 're_engagement' "
    "  AND (f.status = 'pending' OR (f.status IN ('executed', 'failed', "
    "  'cancelled') AND (f.trigger_data->>'last_activity')::timestamptz "
    "  >= u.last_activity_at))) "
    "ORDER BY u.user_id LIMIT :limit"
)
DELETE_EXECUTED_BEFORE = text(
    "DELETE FROM scheduled_followups WHERE id IN ("
    "SELECT id FROM scheduled_followups WHERE status = 'executed' "
    "AND executed_at < :cutoff LIMIT :chunk)"
)

# --- operations ------------------------------------------------------------------------------

LIST_FOLLOWUPS = text(
    f"SELECT {VIEW_COLUMNS} FROM scheduled_followups "
    "WHERE (CAST(:user AS varchar) IS NULL OR user_id = :user) "
    "AND (CAST(:status AS varchar) IS NULL OR status = :status) "
    "AND (CAST(:trigger AS varchar) IS NULL OR trigger_type = :trigger) "
    "ORDER BY created_at DESC, id LIMIT :limit"  # newest first
)
GET_FOLLOWUP = text(f"SELECT {VIEW_COLUMNS} FROM scheduled_followups WHERE id = :id")
CANCEL_FOLLOWUP = text(
    "UPDATE scheduled_followups SET status = 'cancelled', cancelled_at = :now, "
    "cancelled_by = 'operator', updated_at = now() WHERE id = :id AND status = 'pending' "
    "AND (lease_until IS NULL OR lease_until < :now) RETURNING id"
)
FOLLOWUP_EXISTS = text("SELECT 1 FROM scheduled_followups WHERE id = :id")
ERASE_USER = {
    table: text(f"DELETE FROM {table} WHERE user_id = :user")
    for table in (
        "scheduled_followups",
        "booking_projection",
        "conversation_emotions",
        "user_projection",
    )
}
FIGURES = text(
    "SELECT count(*) FILTER (WHERE status = 'pending') AS pending, "
    "count(*) FILTER (WHERE status = 'executed' AND executed_at >= :midnight) "
    "AS executed_today FROM scheduled_followups "
    "WHERE status = 'pending' OR (status = 'executed' AND executed_at >= :midnight)"
)

# --- message templates ------------------------------------------------------------------------

_TEMPLATE = "template_id, locale, version, body, created_at"
CURRENT_TEMPLATES = text(
    # A few rows per template: the newest per (template, locale) by the primary key.
    f"SELECT DISTINCT ON (template_id, locale) {_TEMPLATE} FROM message_templates "
    "ORDER BY template_id, locale, version DESC"
)
TEMPLATE_VERSIONS = text(
    f"SELECT {_TEMPLATE} FROM message_templates WHERE template_id = :id "
    "ORDER BY locale, version DESC"
)
CURRENT_TEMPLATE = text(
    f"SELECT {_TEMPLATE} FROM message_templates WHERE template_id = :id AND locale = :locale "
    "ORDER BY version DESC LIMIT 1"
)
# Edits of templates one at a time: two at once would both take the same next number.
TEMPLATES_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('followup-consumer:templates'))")
INSERT_TEMPLATE = text(
    "INSERT INTO message_templates (template_id, locale, version, body, created_at) "
    "SELECT CAST(:id AS varchar), CAST(:locale AS varchar), COALESCE(max(version), 0) + 1, "
    "CAST(:body AS text), CAST(:now AS timestamptz) FROM message_templates "
    f"WHERE template_id = CAST(:id AS varchar) AND locale = CAST(:locale AS varchar) "
    f"RETURNING {_TEMPLATE}"
)

# --- schema migrations (schema.py) ---------------------------------------------------------

MIGRATION_LOCK = text("SELECT pg_advisory_xact_lock(:k)")
# What a database without a recorded revision has of the service's tables.
SCHEMA_COLUMNS = text(
    "SELECT c.relname, a.attname FROM pg_attribute a "
    "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname = ANY(:tables) "
    "AND a.attnum > 0 AND NOT a.attisdropped"
)
SCHEMA_INDEXES = text(
    "SELECT indexname FROM pg_indexes "
    "WHERE schemaname = current_schema() AND tablename = ANY(:tables)"
)
