"""The operator commands of the CLI: follow-ups list/show/cancel/schedule, erase-user,
health. The same operations as the admin HTTP API (consumer.service.operations.Operations).

Results go to stdout (a text table or JSON), messages about failures to stderr as
one line of plain text, and nothing else: these commands log warnings and errors
only (consumer.entrypoints.cli). The `_write*` functions and `execute` are the only
places that write to the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from consumer.adapters.crypto import CipherError
from consumer.adapters.kafka import GroupState, group_state, input_partitions, make_reader
from consumer.bootstrap import build_operations, store_from_settings
from consumer.config import Settings
from consumer.domain.model import Status, TriggerType
from consumer.entrypoints.exit_codes import (
    EXIT_LIMIT_REACHED,
    EXIT_NOT_FOUND,
    EXIT_NOT_PENDING,
    EXIT_OK,
    EXIT_TOO_LATE,
    EXIT_UNAVAILABLE,
    EXIT_UNHEALTHY,
    EXIT_USAGE,
)
from consumer.entrypoints.terminal import printable
from consumer.service.health import HealthReport, lag_of
from consumer.service.operations import (
    CancelResult,
    FollowupView,
    LimitReached,
    Operations,
    TooLate,
)
from consumer.service.ports import Unavailable

log = logging.getLogger("consumer.entrypoints.cli")

Clock = Callable[[], datetime]
HEALTH_TIMEOUT_SECONDS = 5.0


class Failed(Exception):
    """A command that cannot complete: its message for stderr and its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# --- entry point --------------------------------------------------------------------


def execute(args: argparse.Namespace, settings: Settings, clock: Clock) -> int:
    """Run one operator command; returns the exit code."""
    try:
        if args.command == "health":
            return asyncio.run(_health(settings, clock, as_json=args.json))
        return asyncio.run(_with_operations(settings, clock, _command(args)))
    except Failed as exc:
        _write_error(str(exc))
        return exc.code


OperationsCommand = Callable[[Operations], Coroutine[Any, Any, int]]


def _command(args: argparse.Namespace) -> OperationsCommand:
    if args.command == "erase-user":
        return lambda ops: _erase_user(ops, args.user, as_json=args.json)
    action: str = args.action
    if action == "list":
        return lambda ops: _list(
            ops,
            user_id=args.user,
            status=Status(args.status) if args.status else None,
            trigger_type=TriggerType(args.trigger) if args.trigger else None,
            limit=args.limit,
            as_json=args.json,
        )
    if action == "show":
        return lambda ops: _show(ops, args.id, as_json=args.json)
    if action == "cancel":
        return lambda ops: _cancel(ops, args.id, as_json=args.json)
    if action == "schedule":
        return lambda ops: _schedule(
            ops,
            user_id=args.user,
            conversation_id=args.conversation,
            message=args.message,
            at=args.at,
            ignore_quiet_hours=args.ignore_quiet_hours,
            as_json=args.json,
        )
    raise AssertionError(f"unknown followups action {action!r}")


async def _with_operations(settings: Settings, clock: Clock, command: OperationsCommand) -> int:
    store = store_from_settings(settings, pool_size=1)
    try:
        return await command(build_operations(settings, store, clock))
    except CipherError as exc:
        raise Failed(
            f"cannot read a stored message: {exc} (set FOLLOWUP_ENCRYPTION_KEY to the key "
            "the messages were written with)",
            EXIT_USAGE,
        ) from exc
    except Unavailable as exc:
        raise Failed(f"database error: {_without_prefix(exc)}", EXIT_UNAVAILABLE) from exc
    finally:
        await store.close()


def _without_prefix(exc: Unavailable) -> str:
    return str(exc).removeprefix("database: ")


# --- follow-ups ---------------------------------------------------------------------


async def _list(
    ops: Operations,
    *,
    user_id: str | None,
    status: Status | None,
    trigger_type: TriggerType | None,
    limit: int,
    as_json: bool,
) -> int:
    views = await ops.list_followups(
        user_id=user_id, status=status, trigger_type=trigger_type, limit=limit
    )
    if as_json:
        _write_json([v.as_json() for v in views])
    elif not views:
        _write("no follow-ups\n")
    else:
        _write(format_table(views))
    return EXIT_OK


async def _show(ops: Operations, id_: str, *, as_json: bool) -> int:
    view = await ops.get_followup(id_)
    if view is None:
        raise Failed(f"no follow-up with id {id_!r}", EXIT_NOT_FOUND)
    if as_json:
        _write_json(view.as_json())
    else:
        _write(format_followup(view))
    return EXIT_OK


async def _cancel(ops: Operations, id_: str, *, as_json: bool) -> int:
    result = await ops.cancel_followup(id_)
    if as_json:
        _write_json({"id": id_, "result": result.value})
    elif result is CancelResult.CANCELLED:
        _write("cancelled\n")
    if result is CancelResult.CANCELLED:
        log.info("follow-up cancelled by an operator", extra={"followup_id": id_})
        return EXIT_OK
    if result is CancelResult.NOT_FOUND:
        _write_error(f"no follow-up with id {id_!r}")
        return EXIT_NOT_FOUND
    _write_error(f"follow-up {id_!r} was not cancelled: {await _why_not_pending(ops, id_)}")
    return EXIT_NOT_PENDING


async def _why_not_pending(ops: Operations, id_: str) -> str:
    view = await ops.get_followup(id_)
    if view is None:
        return "it was deleted meanwhile"
    if view.status == Status.PENDING:
        return "a dispatcher is sending it right now; try again in a few seconds"
    return f"it is {view.status}, only pending follow-ups can be cancelled"


async def _schedule(
    ops: Operations,
    *,
    user_id: str,
    conversation_id: str,
    message: str,
    at: datetime,
    as_json: bool,
    ignore_quiet_hours: bool = False,
) -> int:
    try:
        view = await ops.schedule_custom(
            user_id=user_id,
            conversation_id=conversation_id,
            message=message,
            at=at,
            ignore_quiet_hours=ignore_quiet_hours,
        )
    except LimitReached as exc:
        raise Failed(f"not scheduled: {exc}", EXIT_LIMIT_REACHED) from exc
    except TooLate as exc:
        raise Failed(f"not scheduled: {exc}", EXIT_TOO_LATE) from exc
    log.info(
        "custom follow-up scheduled by an operator",
        extra={"followup_id": view.id, "user_id": user_id},
    )
    if as_json:
        _write_json(view.as_json())
    else:
        _write(format_followup(view))
    return EXIT_OK


async def _erase_user(ops: Operations, user_id: str, *, as_json: bool) -> int:
    counts = await ops.erase_user(user_id)
    log.info("user erased by an operator", extra={"user_id": user_id, "deleted": counts})
    if as_json:
        _write_json({"user_id": user_id, "deleted": counts})
    else:
        _write(format_counts(counts))
    return EXIT_OK


# --- health -------------------------------------------------------------------------


async def check_health(
    settings: Settings, clock: Clock, each_seconds: float = HEALTH_TIMEOUT_SECONDS
) -> HealthReport:
    """Database and Kafka looked at side by side, each within `each_seconds`."""
    store = store_from_settings(settings, pool_size=1)
    try:
        ops = build_operations(settings, store, clock)
        (figures, db_error), (ends, kafka_error), group = await asyncio.gather(
            _figures(ops, each_seconds),
            _end_offsets(settings, each_seconds),
            _group(settings, each_seconds),
        )
        stored: dict[tuple[str, int], int] | None = None
        if db_error is None and ends:
            try:
                async with asyncio.timeout(each_seconds):
                    stored = await store.load_offsets(ends)
            except (Unavailable, TimeoutError) as exc:
                db_error = _problem(exc, each_seconds)
        return HealthReport(
            settings.kafka_group_id,
            db_error,
            kafka_error,
            figures,
            lag_of(dict(ends), stored),
            members=group.members if group is not None else None,
            group_state=group.state if group is not None else None,
        )
    finally:
        await store.close()


async def _figures(
    ops: Operations, each_seconds: float
) -> tuple[dict[str, int] | None, str | None]:
    try:
        async with asyncio.timeout(each_seconds):
            return await ops.figures(), None
    except (Unavailable, TimeoutError) as exc:
        return None, _problem(exc, each_seconds)


async def _end_offsets(
    settings: Settings, each_seconds: float
) -> tuple[dict[tuple[str, int], int], str | None]:
    consumer = make_reader(settings, request_timeout_ms=int(each_seconds * 1000))
    try:
        async with asyncio.timeout(each_seconds):
            partitions = await input_partitions(settings)
            await consumer.start()
            ends = await consumer.end_offsets(partitions) if partitions else {}
        return {(tp.topic, tp.partition): int(o) for tp, o in ends.items()}, None
    except Exception as exc:  # aiokafka raises its own errors, OSError, timeouts
        return {}, _problem(exc, each_seconds)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


async def _group(settings: Settings, each_seconds: float) -> GroupState | None:
    """The group's members; None when Kafka did not say (its error is reported by
    `_end_offsets`, which asks the same brokers)."""
    try:
        async with asyncio.timeout(each_seconds):
            return await group_state(settings)
    except Exception:  # aiokafka raises its own errors, OSError, timeouts
        return None


def _problem(exc: BaseException, each_seconds: float) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"no answer within {each_seconds:g} s"
    if isinstance(exc, Unavailable):
        return _without_prefix(exc)
    return _described(exc)


def _described(exc: BaseException) -> str:
    name, text = type(exc).__name__, str(exc)
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


async def _health(settings: Settings, clock: Clock, *, as_json: bool) -> int:
    health = await check_health(settings, clock)
    if as_json:
        _write_json(health.as_json())
    else:
        _write(format_health(health))
    # The report says why; nothing after it.
    return EXIT_OK if health.healthy else EXIT_UNHEALTHY


# --- formatting (pure, no I/O) --------------------------------------------------------

TABLE_COLUMNS = ("id", "user", "trigger", "status", "scheduled_at", "sends_at", "held", "template")


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns, as wide as their widest cell, two spaces apart."""
    cells = [list(header), *([printable(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "".join(line.rstrip() + "\n" for line in lines)


def format_table(views: Sequence[FollowupView]) -> str:
    return table(
        TABLE_COLUMNS,
        (
            (
                v.id,
                v.user_id,
                v.trigger_type,
                v.status,
                v.scheduled_at,
                v.sends_at,
                v.held_reason,
                v.template_id,
            )
            for v in views
        ),
    )


def format_followup(view: FollowupView) -> str:
    """Every field, one per line; trigger data one line per key."""
    fields: list[tuple[str, object]] = [
        (name, value) for name, value in view.as_json().items() if name != "trigger_data"
    ]
    for key, value in sorted(view.trigger_data.items()):
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        fields.append((f"trigger_data.{key}", shown))
    width = max(len(name) for name, _ in fields) + 1
    return "".join(f"{name + ':':<{width}} {printable(value)}\n" for name, value in fields)


def format_counts(counts: Mapping[str, int]) -> str:
    return table(("table", "deleted"), sorted(counts.items()))


def format_health(health: HealthReport) -> str:
    def reach(error: str | None) -> str:
        return "reachable" if error is None else f"UNREACHABLE ({error})"

    figures = health.figures or {}
    lines = [
        f"status:         {health.status}",
        f"database:       {printable(reach(health.database_error))}",
        f"kafka:          {printable(reach(health.kafka_error))}",
        f"consumers:      {printable(_members(health))}",
        f"pending_jobs:   {printable(figures.get('pending_jobs'))}",
        f"executed_today: {printable(figures.get('executed_today'))}",
        f"consumer lag:   {printable(health.total_lag)}",
    ]
    out = "".join(line + "\n" for line in lines)
    if health.partitions:
        out += table(
            ("topic", "partition", "end_offset", "next_offset", "lag"),
            ((p.topic, p.partition, p.end_offset, p.next_offset, p.lag) for p in health.partitions),
        )
    return out


def _members(health: HealthReport) -> str:
    if health.members is None:
        return "unknown"
    if health.members == 0:
        return f"NONE running in group {health.group} (is `followup-consumer run` up?)"
    return f"{health.members} in group {health.group} ({health.group_state})"


# --- the terminal -------------------------------------------------------------------


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _write_json(value: object) -> None:
    _write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def _write_error(message: str) -> None:
    sys.stderr.write(f"followup-consumer: {message}\n")
    sys.stderr.flush()
