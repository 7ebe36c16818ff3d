"""CLI argument parsing and validation (entrypoints.cli), formatting (cli_ops): no services."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from consumer.entrypoints import cli, cli_ops
from consumer.service.health import HealthReport, lag_of
from consumer.service.operations import FollowupView

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def parse(*argv: str) -> argparse.Namespace:
    return cli._parser().parse_args(list(argv))


def rejected(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """argparse's usage error (exit 2); returns what it wrote to stderr."""
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def view(**overrides: Any) -> FollowupView:
    fields: dict[str, Any] = {
        "id": "f-1",
        "user_id": "u1",
        "conversation_id": "c1",
        "trigger_type": "custom",
        "status": "pending",
        "scheduled_at": T0,
        "executed_at": None,
        "cancelled_at": None,
        "created_at": T0 - timedelta(days=1),
        "template_id": None,
        "message_content": None,
        "error_message": None,
        "retry_count": 0,
        "trigger_data": {"custom_message": "hello"},
    }
    fields.update(overrides)
    return FollowupView(**fields)


# --- the existing commands keep parsing as before --------------------------------------


def test_run_migrate_replay_unchanged() -> None:
    assert parse("run").command == "run"
    assert parse("migrate").command == "migrate"
    args = parse("replay", "--since", "2026-01-01T00:00:00Z", "--no-progress")
    assert args.since == datetime(2026, 1, 1, tzinfo=UTC)
    assert args.no_progress is True


def test_replay_since_needs_an_offset(capsys: pytest.CaptureFixture[str]) -> None:
    assert "needs an offset" in rejected(capsys, "replay", "--since", "2026-01-01T00:00:00")


# --- followups list ----------------------------------------------------------------


def test_list_defaults() -> None:
    args = parse("followups", "list")
    assert (args.command, args.action) == ("followups", "list")
    assert args.user is None
    assert args.status is None
    assert args.trigger is None
    assert args.limit == 100
    assert args.json is False


def test_list_filters() -> None:
    args = parse(
        "followups", "list", "--user", "u1", "--status", "failed", "--trigger",
        "re_engagement", "--limit", "1000", "--json",
    )  # fmt: skip
    assert (args.user, args.status, args.trigger, args.limit, args.json) == (
        "u1", "failed", "re_engagement", 1000, True,
    )  # fmt: skip


def test_bad_status_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    err = rejected(capsys, "followups", "list", "--status", "done")
    assert "invalid choice: 'done'" in err
    assert "pending" in err
    assert "expired" in err


def test_bad_trigger_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    assert "invalid choice" in rejected(capsys, "followups", "list", "--trigger", "birthday")


@pytest.mark.parametrize("limit", ["0", "1001", "-5", "ten", "1.5"])
def test_limit_out_of_range_rejected(capsys: pytest.CaptureFixture[str], limit: str) -> None:
    assert "--limit" in rejected(capsys, "followups", "list", "--limit", limit)


def test_user_id_too_long_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    parse("followups", "list", "--user", "u" * 255)
    assert "at most 255 characters" in rejected(capsys, "followups", "list", "--user", "u" * 256)


# --- show / cancel -----------------------------------------------------------------


def test_show_and_cancel_take_an_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse("followups", "show", "f-1").id == "f-1"
    args = parse("followups", "cancel", "f-1", "--json")
    assert (args.action, args.id, args.json) == ("cancel", "f-1", True)
    rejected(capsys, "followups", "cancel")
    assert "at most 255 characters" in rejected(capsys, "followups", "show", "x" * 256)
    assert "must not be empty" in rejected(capsys, "followups", "show", "")
    assert "NUL" in rejected(capsys, "followups", "cancel", "a\x00b")
    # Bytes that are not UTF-8 reach argv as lone surrogates.
    assert "not valid UTF-8" in rejected(capsys, "followups", "show", "\udcff")


# --- schedule ----------------------------------------------------------------------

SCHEDULE = ("followups", "schedule", "--user", "u1", "--conversation", "c1")


def test_schedule_parses_an_aware_time() -> None:
    args = parse(*SCHEDULE, "--message", "Hi there", "--at", "2026-05-01T11:00:00+02:00")
    assert args.at == T0
    assert args.at.utcoffset() == timedelta(hours=2)
    assert args.message == "Hi there"


def test_schedule_naive_time_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    err = rejected(capsys, *SCHEDULE, "--message", "hi", "--at", "2026-05-01T09:00:00")
    assert "needs an offset" in err


def test_schedule_garbage_time_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    assert "not an ISO-8601 time" in rejected(
        capsys, *SCHEDULE, "--message", "hi", "--at", "tomorrow"
    )


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("a\x00b", "NUL"),
        ("caf\udce9", "not valid UTF-8"),
        ("x" * 4001, "at most 4000 characters"),
    ],
)
def test_schedule_bad_message_rejected(
    capsys: pytest.CaptureFixture[str], message: str, why: str
) -> None:
    err = rejected(capsys, *SCHEDULE, "--message", message, "--at", "2026-05-01T09:00:00Z")
    assert why in err


def test_schedule_longest_message_accepted() -> None:
    args = parse(*SCHEDULE, "--message", "x" * 4000, "--at", "2026-05-01T09:00:00Z")
    assert len(args.message) == 4000


def test_schedule_requires_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--at" in rejected(capsys, *SCHEDULE, "--message", "hi")


# --- erase-user --------------------------------------------------------------------


def test_erase_user_without_yes_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refused before the configuration is even read: no database is touched.
    def no_settings(**_: object) -> None:
        raise AssertionError("settings loaded")

    monkeypatch.setattr(cli, "load_settings", no_settings)
    assert cli.main(["erase-user", "u1"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert "--yes" in out.err
    assert "'u1'" in out.err


def test_erase_user_with_yes_parses() -> None:
    args = parse("erase-user", "u1", "--yes", "--json")
    assert (args.command, args.user, args.yes, args.json) == ("erase-user", "u1", True, True)


def test_health_parses() -> None:
    assert parse("health", "--json").json is True


# --- formatting ----------------------------------------------------------------------


def test_table_of_followups() -> None:
    views = [
        view(sends_at=T0 + timedelta(hours=2), held_reason="quiet_hours"),
        view(
            id="0b7d2c1e-9a4f-5e3b-8c6d-1f2e3a4b5c6d",
            user_id="user-with-a-long-id",
            trigger_type="post_event",
            status="executed",
            scheduled_at=datetime(2026, 4, 30, 22, 15, 7, 123456, tzinfo=UTC),
            template_id="post_event_positive",
        ),
    ]
    assert cli_ops.format_table(views).splitlines() == [
        "id                                    user                 trigger     status    "
        "scheduled_at               sends_at                   held         template",
        "f-1                                   u1                   custom      pending   "
        "2026-05-01T09:00:00+00:00  2026-05-01T11:00:00+00:00  quiet_hours  -",
        "0b7d2c1e-9a4f-5e3b-8c6d-1f2e3a4b5c6d  user-with-a-long-id  post_event  executed  "
        "2026-04-30T22:15:07+00:00  -                          -            post_event_positive",
    ]


def test_table_of_nothing_is_the_header() -> None:
    assert (
        cli_ops.format_table([])
        == "id  user  trigger  status  scheduled_at  sends_at  held  template\n"
    )


def test_table_escapes_control_characters() -> None:
    line = cli_ops.format_table([view(user_id="evil\x1b[2J\nuser")]).splitlines()[1]
    assert "\x1b" not in line
    assert "evil\\x1b[2J\\nuser" in line


def test_show_lists_every_field() -> None:
    text = cli_ops.format_followup(
        view(
            scheduled_at=datetime(2026, 5, 1, 11, 0, tzinfo=timezone(timedelta(hours=2))),
            trigger_data={"custom_message": "Hello\nagain", "booking_ids": ["b1", "b2"]},
        )
    )
    fields = dict((k, v.strip()) for k, v in (line.split(":", 1) for line in text.splitlines()))
    assert set(fields) == {
        "id", "user_id", "conversation_id", "trigger_type", "status", "scheduled_at",
        "executed_at", "cancelled_at", "created_at", "template_id", "message_content",
        "error_message", "retry_count", "sends_at", "held_reason", "locale", "template_version",
        "trigger_data.booking_ids",
        "trigger_data.custom_message",
    }  # fmt: skip
    assert fields["id"] == "f-1"
    assert fields["executed_at"] == "-"
    assert fields["retry_count"] == "0"
    assert "trigger_data.custom_message: Hello\\nagain" in text
    assert '["b1", "b2"]' in text
    assert "2026-05-01T11:00:00+02:00" in text


def test_counts_table() -> None:
    assert cli_ops.format_counts({"scheduled_followups": 3, "booking_projection": 0}) == (
        "table                deleted\nbooking_projection   0\nscheduled_followups  3\n"
    )


def test_lag_from_end_and_stored_offsets() -> None:
    ends = {("t", 1): 10, ("t", 0): 7, ("u", 0): 0}
    lags = lag_of(ends, {("t", 0): 7, ("t", 1): 4})
    assert [(p.topic, p.partition, p.end_offset, p.next_offset, p.lag) for p in lags] == [
        ("t", 0, 7, 7, 0),
        ("t", 1, 10, 4, 6),
        ("u", 0, 0, 0, 0),  # nothing stored: lag = end offset
    ]
    assert [p.lag for p in lag_of({("t", 0): 5}, {})] == [5]
    assert [p.lag for p in lag_of({("t", 0): 5}, None)] == [None]


def test_health_json_and_text() -> None:
    healthy = HealthReport(
        "g", None, None, {"pending_jobs": 2, "executed_today": 1}, lag_of({("t", 0): 5}, {})
    )
    doc = healthy.as_json()
    assert doc["status"] == "healthy"
    assert (doc["pending_jobs"], doc["executed_today"]) == (2, 1)
    assert doc["consumer"]["group"] == "g"
    assert doc["consumer"]["lag"] == {"t[0]": 5}
    assert doc["consumer"]["total_lag"] == 5
    assert doc["database"] == {"reachable": True, "error": None}

    down = HealthReport("g", None, "no answer within 5 s", {"pending_jobs": 0, "executed_today": 0})
    assert not down.healthy
    assert down.as_json()["status"] == "unhealthy"
    assert down.as_json()["consumer"]["total_lag"] is None
    assert "kafka:          UNREACHABLE (no answer within 5 s)" in cli_ops.format_health(down)


def test_schedule_help_states_the_message_limit(capsys: pytest.CaptureFixture[str]) -> None:
    from consumer.domain.limits import MESSAGE_MAX_CHARS

    with pytest.raises(SystemExit) as exc:
        parse("followups", "schedule", "--help")
    assert exc.value.code == 0
    assert f"at most {MESSAGE_MAX_CHARS} characters" in " ".join(capsys.readouterr().out.split())
