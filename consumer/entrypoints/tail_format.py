"""`tail`'s output: one record of `followup.due` or `followup.dlq` as a few lines of
text, or as one JSON line.

Everything printed comes from the record, that is from whoever wrote it: every
string goes through `printable` (control characters shown escaped, never acted
on) and is cut to a bounded length; a value that is not UTF-8 is shown in hex.
"""

from __future__ import annotations

import base64
import heapq
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from consumer.adapters.codec import AVRO_MAGIC, Codec, CodecError
from consumer.entrypoints.terminal import printable

TEXT_MAX = 200  # characters of one shown string
MESSAGE_LINES_MAX = 6
HEX_MAX = 32  # bytes of a binary value shown
INDENT = " " * 4
DUE_SCHEMA = "followup_due"


@dataclass(frozen=True, slots=True)
class Record:
    """One record as read from Kafka (a copy, so that formatting needs no client)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    def header(self, name: str) -> str | None:
        """The last header of that name, as text (undecodable bytes replaced)."""
        for key, value in reversed(self.headers):
            if key == name:
                return None if value is None else value.decode("utf-8", "replace")
        return None

    @property
    def time(self) -> datetime | None:
        if self.timestamp_ms is None or self.timestamp_ms < 0:
            return None
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)


# --- safe text ------------------------------------------------------------------------


def cut(text: str, limit: int = TEXT_MAX) -> str:
    """`text` made printable, then cut to `limit` characters (… marks a cut)."""
    shown = printable(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def quoted(text: str | None, limit: int = TEXT_MAX) -> str:
    return "-" if text is None else f"'{cut(text, limit)}'"


def show_bytes(value: bytes | None, limit: int = TEXT_MAX) -> str:
    """A key or value of unknown content: text if it is UTF-8, else hex; with its size."""
    if value is None:
        return "none"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        shown = value[:HEX_MAX].hex(" ")
        more = "…" if len(value) > HEX_MAX else ""
        return f"({len(value)} bytes, not text) {shown}{more}"
    return f"({len(value)} bytes) {quoted(text, limit)}"


def local_time(when: datetime | None, local: tzinfo | None) -> str:
    if when is None:
        return "(no time)"
    return f"{when.astimezone(local):%Y-%m-%d %H:%M:%S %Z}".rstrip()


def _where(r: Record) -> str:
    return f"{cut(r.topic, 80)} [partition {r.partition}, offset {r.offset}]"


# --- followup.due ---------------------------------------------------------------------


def decode_due(codec: Codec, r: Record) -> tuple[dict[str, Any] | None, str | None]:
    """The record's event, or why it cannot be read.

    The value says what it is by its first bytes (Avro single-object or JSON); the
    `content-type` header, which says the same, only explains a value that the
    codec cannot read."""
    if r.value is None:
        return None, "no value (a tombstone)"
    try:
        return codec.decode(DUE_SCHEMA, r.value), None
    except CodecError as exc:
        declared = r.header("content-type")
        if r.value.startswith(b"\x00") and not r.value.startswith(AVRO_MAGIC):
            return None, "Confluent wire format (schema registry): not decoded here"
        suffix = f" (content-type {declared})" if declared else ""
        return None, f"{exc}{suffix}"


def format_due(
    r: Record, event: Mapping[str, Any] | None, problem: str | None, local: tzinfo | None
) -> str:
    """A follow-up that fell due: whom, why, which template, the message, the times."""
    head = f"{local_time(r.time, local)}  {_where(r)}"
    if event is None:
        return _block(
            [
                f"{head}  cannot be decoded: {cut(problem or 'unknown')}",
                f"{INDENT}key {show_bytes(r.key)}",
                f"{INDENT}value {show_bytes(r.value)}",
            ]
        )

    def field(name: str, limit: int = 80) -> str:
        value = event.get(name)
        return "-" if value is None else cut(str(value), limit)

    # Which text: its locale and version, from releases that say (followup.due v2).
    version = ""
    if event.get("locale") is not None or event.get("template_version") is not None:
        version = f" {field('locale', 35)} v{field('template_version', 12)}"
    lines = [
        f"{head}  {field('trigger_type', 40)} for {field('user_id')} "
        f"({field('template_id', 60)}{version}, attempt {field('attempt', 12)})",
        *(INDENT + line for line in message_lines(str(event.get("message", "")))),
        INDENT + _times(event, local),
        f"{INDENT}conversation {field('conversation_id')}, booking {field('booking_id')}, "
        f"follow-up {field('followup_id')}",
    ]
    return _block(lines)


def message_lines(message: str) -> list[str]:
    """The message as it will read, line by line (blank lines dropped), each line
    printable and cut; at most MESSAGE_LINES_MAX lines."""
    lines = [line for line in message.splitlines() if line.strip()]
    shown = [f"| {cut(line)}" for line in lines[:MESSAGE_LINES_MAX]]
    if len(lines) > MESSAGE_LINES_MAX:
        shown.append(f"| … ({len(lines) - MESSAGE_LINES_MAX} more lines)")
    return shown or ["| (empty message)"]


def _times(event: Mapping[str, Any], local: tzinfo | None) -> str:
    scheduled, emitted = event.get("scheduled_at"), event.get("emitted_at")
    if not isinstance(scheduled, datetime) or not isinstance(emitted, datetime):
        return "due ?, published ?"
    late = (emitted - scheduled).total_seconds()
    when = f"{abs(late):.1f} s {'later' if late >= 0 else 'early'}"
    return f"due {local_time(scheduled, local)}, published {when}"


# --- followup.dlq ---------------------------------------------------------------------


def format_dead(r: Record, local: tzinfo | None) -> str:
    """A dead letter: where the record came from, why it was refused, what it held."""
    origin = (
        f"{cut(r.header('dlq.original.topic') or '?', 80)} "
        f"[partition {cut(r.header('dlq.original.partition') or '?', 12)}, "
        f"offset {cut(r.header('dlq.original.offset') or '?', 20)}]"
    )
    error = (
        f"{cut(r.header('dlq.error.type') or 'unknown error', 60)}: "
        f"{cut(r.header('dlq.error.message') or '', 300)}"
    )
    lines = [
        f"{local_time(r.time, local)}  {_where(r)}",
        f"{INDENT}from {origin}",
        f"{INDENT}{error}",
        f"{INDENT}key {show_bytes(r.key, 80)}",
        f"{INDENT}value {show_bytes(r.value)}",
    ]
    omitted = r.header("dlq.omitted")
    if omitted is not None:
        size = r.header("dlq.original.value.bytes") or "?"
        lines.append(
            f"{INDENT}(too large for the dead-letter topic: {cut(omitted, 40)} left out; "
            f"the value had {cut(size, 20)} bytes: read it at its origin)"
        )
    return _block(lines)


def _block(lines: Sequence[str]) -> str:
    """Lines of one record, and a blank line after it to tell records apart."""
    return "".join(line + "\n" for line in lines) + "\n"


# --- --json ---------------------------------------------------------------------------


def _bytes_json(value: bytes | None) -> str | dict[str, str] | None:
    """Text when it is UTF-8 (JSON escapes whatever it holds), else {"base64": ...}."""
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode("ascii")}


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def record_json(
    r: Record,
    event: Mapping[str, Any] | None = None,
    problem: str | None = None,
    *,
    dead_letter: bool = False,
) -> str:
    """One line of JSON: where the record is, its headers, and the decoded event
    (followup.due) or its key and value (text, or base64 when not UTF-8); for a dead
    letter also where it came from and why, from its `dlq.*` headers."""
    out: dict[str, Any] = {
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": _jsonable(r.time),
        "headers": {k: _bytes_json(v) for k, v in r.headers},
    }
    if dead_letter:
        out["origin"] = {
            "topic": r.header("dlq.original.topic"),
            "partition": _int_or_none(r.header("dlq.original.partition")),
            "offset": _int_or_none(r.header("dlq.original.offset")),
        }
        out["error"] = {
            "type": r.header("dlq.error.type"),
            "message": r.header("dlq.error.message"),
        }
    if event is not None:
        out["event"] = {k: _jsonable(v) for k, v in event.items()}
    else:
        out["key"] = _bytes_json(r.key)
        out["value"] = _bytes_json(r.value)
        if problem is not None:
            out["error"] = problem
    # ensure_ascii: every control character escaped, so the line is safe anywhere.
    return json.dumps(out, ensure_ascii=True, separators=(",", ":")) + "\n"


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def in_order(batches: Iterable[Sequence[Record]]) -> list[Record]:
    """Records of several partitions (each list in offset order) merged by time,
    each partition's own order kept."""
    return list(heapq.merge(*batches, key=lambda r: r.timestamp_ms or 0))
