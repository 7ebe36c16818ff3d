"""Structured logs: one JSON object per line, extra fields included.

Call sites pass context with `extra={...}` (followup_id, user_id, topic,
partition, offset, ...) so lines can be filtered by field, not grepped.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka is chatty at INFO about every coordinator step.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    # Alembic tells at INFO what it sets up on every run; of its lines only "Running
    # upgrade ..." and "Running downgrade ..." are news.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("alembic.runtime.migration").addFilter(_alembic_news)


def _alembic_news(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(("Context impl", "Will assume"))
