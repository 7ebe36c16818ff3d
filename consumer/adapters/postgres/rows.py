"""Rows <-> domain values. Pure: no connection, no SQL."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from consumer.domain.model import (
    Booking,
    Conversation,
    Followup,
    Score,
    Status,
    TriggerType,
    UserState,
)
from consumer.domain.template_text import StoredTemplate
from consumer.service.ports import FollowupView

# `scheduled_followups.cancelled_by` of a row an operator cancelled (NULL: a rule did).
OPERATOR = "operator"
# Enum members by stored value: a dict lookup, not an Enum call, per loaded row.
_TRIGGERS = {t.value: t for t in TriggerType}
_STATUSES = {s.value: s for s in Status}
_NO_DATA: Mapping[str, Any] = {}


def _loads(raw: str) -> Any:
    # orjson: a loaded row's JSON is parsed in a quarter of the time (every row a
    # batch locks is parsed; see docs/ingest-per-core.md).
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)  # what orjson refuses and the stdlib reads (none known)


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        # A lone surrogate: the stdlib escapes it, and PostgreSQL refuses the row
        # (a storage_error dead letter), as it always did.
        return json.dumps(value, default=_isoformat)


def _isoformat(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dt(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def trigger_data(f: Followup) -> dict[str, Any]:
    """The JSONB `trigger_data` column: what caused the follow-up."""
    data: dict[str, Any] = {}
    if f.booking_ids:
        data["booking_id"] = f.booking_ids[0]
        data["booking_ids"] = list(f.booking_ids)
        data["active_booking_ids"] = list(f.active_booking_ids)
        data["booking_dates"] = {k: d.isoformat() for k, d in f.booking_dates}
    if f.event_date is not None:
        data["event_date"] = f.event_date.isoformat()
    if f.activity_basis is not None:
        data["last_activity"] = f.activity_basis.isoformat()
    if f.custom_message is not None:
        data["custom_message"] = f.custom_message
    if f.ignore_quiet_hours:
        data["ignore_quiet_hours"] = True
    return data


def followup_from_row(row: Mapping[Any, Any], now: datetime) -> Followup:
    """A stored follow-up as the rules see it: in flight while its lease runs at
    `now` (one that ran out was abandoned; the upsert releases it)."""
    # Every row a batch locks and every claimed row comes through here: positional
    # arguments, and nothing parsed or sorted that the row does not have.
    raw = row["trigger_data"]
    data = _loads(raw) if raw and raw != "{}" else _NO_DATA
    lease_until = row["lease_until"]
    dates = data.get("booking_dates")
    return Followup(
        row["id"],
        row["user_id"],
        row["conversation_id"],
        _TRIGGERS[row["trigger_type"]],
        row["scheduled_at"],
        _STATUSES[row["status"]],
        tuple(data.get("booking_ids", ())),
        tuple(data.get("active_booking_ids", ())),
        tuple(sorted((k, datetime.fromisoformat(v)) for k, v in dates.items())) if dates else (),
        _dt(data.get("event_date")),
        _dt(data.get("last_activity")),
        data.get("custom_message"),
        row["cancelled_at"],
        lease_until is not None and lease_until > now,
        row.get("cancelled_by") == OPERATOR,
        bool(data.get("ignore_quiet_hours", False)),
    )


def followup_params(followups: Sequence[Followup]) -> dict[str, list[Any]]:
    return {
        "ids": [f.id for f in followups],
        "users": [f.user_id for f in followups],
        "convs": [f.conversation_id for f in followups],
        "types": [f.trigger_type.value for f in followups],
        "data": [_dumps(trigger_data(f)) for f in followups],
        "at": [f.scheduled_at for f in followups],
        "status": [f.status.value for f in followups],
        "cancelled": [f.cancelled_at for f in followups],
    }


def history(raw: str | None) -> tuple[Score, ...]:
    if not raw:
        return ()
    return tuple(Score(m, datetime.fromisoformat(t), float(v)) for m, t, v in _loads(raw))


def history_json(scores: Sequence[Score]) -> str:
    # orjson writes the datetimes itself, five times faster than `isoformat` a score
    # (a changed history is written whole: up to 500 scores). The same text: every
    # instant is UTC from the edges on (`wire`), and orjson differs from
    # `isoformat` only on offsets with seconds.
    return _dumps([[s.message_id, s.scored_at, s.value] for s in scores])


def user(row: Mapping[Any, Any]) -> UserState:
    return UserState(
        user_id=row["user_id"],
        last_activity_at=row["last_activity_at"],
        timezone=row["timezone"],
        timezone_at=row["timezone_at"],
        reengagement_cycle=row["reengagement_cycle"],
        refused_followups=row["refused_followups"],
        locale=row["locale"],
        locale_at=row["locale_at"],
    )


def booking(row: Mapping[Any, Any]) -> Booking:
    return Booking(
        booking_id=row["booking_id"],
        user_id=row["user_id"],
        event_date=row["event_date"],
        conversation_id=row["conversation_id"],
        timezone=row["timezone"],
        confirmed_at=row["confirmed_at"],
        confirm_event_id=row["confirm_event_id"],
        cancelled_at=row["cancelled_at"],
        cancel_reason=row["cancel_reason"],
        followup_id=row["followup_id"],
    )


def conversation(row: Mapping[Any, Any]) -> Conversation:
    return Conversation(
        conversation_id=row["conversation_id"],
        user_id=row["user_id"],
        scores=history(row["history"]),
        checkin_id=row["checkin_id"],
    )


def write_back_params(
    users: Sequence[UserState], bookings: Sequence[Booking], convs: Sequence[Conversation]
) -> dict[str, dict[str, list[Any]]]:
    """The arrays of each projection's write-back, by column (see sql.WRITE_BACK)."""
    return {
        "users": {
            "user_id": [u.user_id for u in users],
            "last_activity_at": [u.last_activity_at for u in users],
            "timezone": [u.timezone for u in users],
            "timezone_at": [u.timezone_at for u in users],
            "reengagement_cycle": [u.reengagement_cycle for u in users],
            "refused_followups": [u.refused_followups for u in users],
            "locale": [u.locale for u in users],
            "locale_at": [u.locale_at for u in users],
        },
        "conversations": {
            "conversation_id": [c.conversation_id for c in convs],
            "user_id": [c.user_id for c in convs],
            "history": [history_json(c.scores) for c in convs],
            "checkin_id": [c.checkin_id for c in convs],
        },
        "bookings": {
            "booking_id": [b.booking_id for b in bookings],
            "user_id": [b.user_id for b in bookings],
            "event_date": [b.event_date for b in bookings],
            "conversation_id": [b.conversation_id for b in bookings],
            "timezone": [b.timezone for b in bookings],
            "confirmed_at": [b.confirmed_at for b in bookings],
            "confirm_event_id": [b.confirm_event_id for b in bookings],
            "cancelled_at": [b.cancelled_at for b in bookings],
            "cancel_reason": [b.cancel_reason for b in bookings],
            "followup_id": [b.followup_id for b in bookings],
        },
    }


def view(row: Any) -> FollowupView:
    return FollowupView(
        id=row.id,
        user_id=row.user_id,
        conversation_id=row.conversation_id,
        trigger_type=row.trigger_type,
        status=row.status,
        scheduled_at=row.scheduled_at,
        executed_at=row.executed_at,
        cancelled_at=row.cancelled_at,
        created_at=row.created_at,
        template_id=row.template_id,
        message_content=row.message_content,
        error_message=row.error_message,
        retry_count=row.retry_count,
        trigger_data=json.loads(row.trigger_data) if row.trigger_data else {},
        # When it will go out: its due_at (a hold or a retry moves it), while pending.
        sends_at=row.due_at if row.status == Status.PENDING.value else None,
        held_reason=row.held_reason if row.status == Status.PENDING.value else None,
        locale=row.locale,
        template_version=row.template_version,
    )


def template(row: Any) -> StoredTemplate:
    return StoredTemplate(row.template_id, row.locale, row.version, row.body, row.created_at)
