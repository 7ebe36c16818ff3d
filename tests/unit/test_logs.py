"""Logs: text on a terminal, JSON elsewhere; no terminal colours and no uvicorn
duplicates in JSON; the libraries' expected chatter lowered, their repeats held back."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from consumer.logs import REPEAT_SECONDS, Tidy, above, configure_logging, wants_text


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("aiokafka", "apscheduler", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    assert wants_text("auto", Terminal())
    assert not wants_text("auto", io.StringIO())
    assert wants_text("text", io.StringIO())
    assert not wants_text("json", Terminal())


def test_json_has_no_colours_and_no_uvicorn_duplicate() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]",
        42,
        extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"},
    )
    logging.getLogger("consumer.x").warning("a \x1b[31mred\x1b[0m word", extra={"topic": "t"})
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["msg"] == "Started server process [42]"
    assert "color_message" not in first
    assert second["msg"] == "a red word"
    assert second["topic"] == "t"
    assert "\x1b" not in out.getvalue()


def test_text_is_one_readable_line_with_the_fields() -> None:
    out = Terminal()
    configure_logging("INFO", "auto", stream=out)
    logging.getLogger("consumer.x").warning(
        "database unavailable: refused; retrying in 0.5 s",
        extra={"outage": "database", "retry_in": 0.5, "_said": ("outage", "retry_in")},
    )
    logging.getLogger("consumer.x").info("partitions assigned", extra={"partitions": ["a[0]"]})
    first, second = out.getvalue().splitlines()
    assert first.endswith(" WARNING database unavailable: refused; retrying in 0.5 s")
    assert second.endswith(" INFO    partitions assigned  partitions=a[0]")


def test_bookkeeping_of_the_libraries_stays_out_unless_debugging() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    logging.getLogger("apscheduler.scheduler").info("Adding job tentatively -- ...")
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET /health HTTP/1.1" 200')
    logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed")
    assert [json.loads(line)["msg"] for line in out.getvalue().splitlines()] == [
        "Run time of job was missed"
    ]


def test_the_operator_commands_log_warnings_only() -> None:
    out = io.StringIO()
    configure_logging("DEBUG", "json", stream=out, at_least=logging.WARNING)
    logging.getLogger("consumer.x").info("follow-up cancelled by an operator")
    assert out.getvalue() == ""


def record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_expected_broker_chatter_is_lowered_and_repeats_are_held_back() -> None:
    now = [0.0]
    tidy = Tidy(logging.INFO, clock=lambda: now[0])
    coordinator = "aiokafka.consumer.group_coordinator"
    fresh = record(
        coordinator,
        logging.ERROR,
        "Group Coordinator Request failed: %s",
        "[Error 15] CoordinatorNotAvailableError",
    )
    assert not tidy.filter(fresh)
    assert Tidy(logging.DEBUG).filter(fresh)

    unable = "Unable connect to node with id %s: %s"
    assert tidy.filter(record("aiokafka", logging.ERROR, unable, 1, "refused"))
    for _ in range(50):
        now[0] += 1
        assert not tidy.filter(record("aiokafka", logging.ERROR, unable, 1, "refused"))
    now[0] += REPEAT_SECONDS
    again = record("aiokafka", logging.ERROR, unable, 1, "refused")
    assert tidy.filter(again)
    assert again.__dict__["held_back"] == "50 like it in the last 110 s"
    # Our own lines are never held back.
    assert tidy.filter(record("consumer.x", logging.WARNING, "same"))
    assert tidy.filter(record("consumer.x", logging.WARNING, "same"))


def test_above_routes_lines_through_the_writer_while_a_bar_is_shown() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    written: list[str] = []
    with above(written.append):
        logging.getLogger("consumer.x").warning("during")
    logging.getLogger("consumer.x").warning("after")
    assert [json.loads(line)["msg"] for line in written] == ["during"]
    assert [json.loads(line)["msg"] for line in out.getvalue().splitlines()] == ["after"]


def test_partition_lists_are_short() -> None:
    from aiokafka import TopicPartition

    from consumer.adapters.kafka import _names

    assigned = [TopicPartition("a", p) for p in (6, 0, 1, 2, 4, 7)] + [TopicPartition("b", 3)]
    assert _names(assigned) == ["a[0-2,4,6-7]", "b[3]"]
