"""Logs on stderr: readable lines on a terminal, one JSON object per line elsewhere.

`LOG_FORMAT=auto` (the default) picks text when stderr is a terminal and JSON when
it is not (a file, a pipe, a container's log collector); `text` and `json` force
one. Call sites pass context with `extra={...}` (followup_id, user_id, topic,
partition, offset, ...): JSON keeps it as fields to filter on, text appends it as
key=value (except the fields named in `_said`, which the message already says).

What the libraries say is sorted before it reaches anyone: APScheduler's job
bookkeeping and uvicorn's access lines only at DEBUG; aiokafka's warnings and
errors kept, but the expected "coordinator not available yet" of a fresh broker
(and a new topic's "leader not available") lowered to DEBUG, and each of its
repeated complaints (one per reconnect attempt during an outage) shown at most
once a minute, with a count of those held back.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}
# uvicorn's copy of the message with terminal colours: never shown, never a field.
_DROPPED = frozenset({"color_message"})
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
REPEAT_SECONDS = 60.0
# Library loggers whose INFO lines are bookkeeping, not news (their warnings stay).
_BOOKKEEPING = ("apscheduler", "uvicorn.access")
# What a broker says while it is still creating the group coordinator's topic or a
# new topic's leaders (aiokafka retries; nothing for an operator to do).
_EXPECTED = re.compile(
    r"CoordinatorNotAvailable|CoordinatorLoadInProgress|NotCoordinator|"
    r"coordinator \(node \S+\) is either not started or not valid|"
    r"NotLeaderForPartition|LeaderNotAvailable"
)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and key not in _DROPPED and not key.startswith("_")
    }


def _message(record: logging.LogRecord) -> str:
    return _ANSI.sub("", record.getMessage())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _message(record),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`16:01:05.244 WARNING database unavailable: ...  key=value`; the logger's name
    only for the libraries' lines (ours speak for themselves)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        source = "" if record.name.startswith("consumer") else f"{record.name}: "
        said = getattr(record, "_said", ())
        extras = "".join(
            f"  {key}={_shown(value)}" for key, value in _fields(record).items() if key not in said
        )
        text = f"{stamp} {record.levelname:<7} {source}{_message(record)}{extras}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _shown(value: object) -> str:
    if isinstance(value, list | tuple | set | frozenset):
        text = ",".join(str(v) for v in value)
    else:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if not text or any(c.isspace() for c in text) else text


class Tidy(logging.Filter):
    """The libraries' expected chatter lowered, their repeats held back (see above)."""

    def __init__(self, level: int, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.level = level
        self.clock = clock
        self._last: dict[tuple[str, object], float] = {}
        self._held: dict[tuple[str, object], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka"):
            return True
        if _EXPECTED.search(record.getMessage()):
            return self.level <= logging.DEBUG
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.msg)
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < REPEAT_SECONDS:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            assert last is not None
            record.__dict__["held_back"] = f"{held} like it in the last {now - last:.0f} s"
        return True


class ConsoleHandler(logging.StreamHandler[TextIO]):
    """stderr, or `write` while something else owns the terminal's last line (the
    replay progress bar: `tqdm.write` prints above it)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.write: Callable[[str], None] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.write is None:
            super().emit(record)
            return
        try:
            self.write(self.format(record))
        except Exception:
            self.handleError(record)


def wants_text(fmt: str, stream: TextIO) -> bool:
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return bool(isatty and isatty())
    return fmt == "text"


def configure_logging(
    level: str = "INFO",
    fmt: str = "auto",
    *,
    stream: TextIO | None = None,
    at_least: int = logging.NOTSET,
) -> None:
    """Root logging to stderr. `at_least`: a floor over LOG_LEVEL (the operator
    commands log warnings and errors only, so that their output is theirs)."""
    out = stream if stream is not None else sys.stderr
    threshold = max(logging.getLevelName(level.upper()), at_least)
    handler = ConsoleHandler(out)
    handler.setFormatter(TextFormatter() if wants_text(fmt, out) else JsonFormatter())
    handler.addFilter(Tidy(threshold))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(threshold)
    for name in ("aiokafka", *_BOOKKEEPING):
        quiet = logging.DEBUG if threshold <= logging.DEBUG else logging.WARNING
        logging.getLogger(name).setLevel(max(quiet, threshold))
    # Alembic tells at INFO what it sets up on every run; of its lines only "Running
    # upgrade ..." and "Running downgrade ..." are news.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(logging.WARNING, threshold))
    logging.getLogger("alembic.runtime.migration").addFilter(_alembic_news)


def _alembic_news(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(("Context impl", "Will assume"))


@contextmanager
def above(write: Callable[[str], None]) -> Iterator[None]:
    """Log lines go through `write` in the block (tqdm.write, above a progress bar)."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, ConsoleHandler)]
    for h in handlers:
        h.write = write
    try:
        yield
    finally:
        for h in handlers:
            h.write = None
