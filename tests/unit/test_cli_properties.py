"""Generated command lines against the CLI's argument rules (Hypothesis).

Whatever the arguments (bytes that were not UTF-8, NUL, huge values, dates
Python cannot convert, options in odd places), `followup-consumer` either
parses them into values that obey `consumer.domain.limits` or stops with
argparse's usage error (exit 2); never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from argparse import Namespace
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.config import ConfigError
from consumer.domain.limits import (
    LIST_LIMIT_MAX,
    identifier_problem,
    message_problem,
    timestamp_problem,
)
from consumer.entrypoints import cli
from consumer.entrypoints.exit_codes import EXIT_USAGE

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = 300
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Where a command line starts: every command, and a few wrong ones.
PREFIXES = [
    [],
    ["run"],
    ["migrate"],
    ["migrate", "--to"],
    ["migrate", "--current"],
    ["replay"],
    ["replay", "--since"],
    ["followups"],
    ["followups", "list"],
    ["followups", "list", "--user"],
    ["followups", "list", "--limit"],
    ["followups", "list", "--status"],
    ["followups", "show"],
    ["followups", "cancel"],
    ["followups", "schedule", "--user", "u", "--conversation", "c", "--message"],
    ["followups", "schedule", "--user", "u", "--conversation", "c", "--message", "m", "--at"],
    ["erase-user"],
    ["erase-user", "--yes"],
    ["health"],
    ["followup"],
]
FLAGS = [
    "--json", "--yes", "--user", "--conversation", "--message", "--at", "--since", "--limit",
    "--status", "--trigger", "--no-progress", "--", "-", "--user=", "--limit=0", "--to",
    "--current",
]  # fmt: skip
# What argv holds when the bytes were not UTF-8: Python's surrogateescape.
not_utf8 = st.binary(min_size=1, max_size=8).map(lambda b: os.fsdecode(b"\xff" + b))
offsets = st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))
# Any instant with any offset; the edges of Python's range (years 1 and 9999)
# get their own share, since an offset can push them out of it.
instants = st.one_of(
    st.datetimes(timezones=offsets | st.timezones()),
    st.datetimes(max_value=datetime(1, 1, 2), timezones=offsets),
    st.datetimes(min_value=datetime(9999, 12, 30), timezones=offsets),
)
tokens = st.one_of(
    st.text(max_size=20),
    st.sampled_from(FLAGS),
    not_utf8,
    st.sampled_from(
        ["", " ", "a\x00b", "x" * 256, "m" * 4001, "\uff11\uff12", "1e3", "-5", "1000"]
    ),
    instants.map(datetime.isoformat),
    st.just("2030-01-01"),  # no offset
)
DATED = [p for p in PREFIXES if p and p[-1] in ("--at", "--since")]
argvs = st.one_of(
    st.builds(
        lambda prefix, rest: [*prefix, *rest],
        st.sampled_from(PREFIXES),
        st.lists(tokens, max_size=6),
    ),
    # Dates get a share of their own: right after --at / --since.
    st.builds(
        lambda prefix, when, rest: [*prefix, when.isoformat(), *rest],
        st.sampled_from(DATED),
        instants,
        st.lists(tokens, max_size=2),
    ),
)


def _parse(argv: Sequence[str]) -> Namespace | int:
    """The namespace, or argparse's exit code; output swallowed."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return cli._parser().parse_args(argv)
        except SystemExit as exc:
            code = exc.code
    assert isinstance(code, int)
    return code


@SETTINGS
@given(argv=argvs)
def test_any_command_line_parses_to_valid_values_or_exits_2(argv: list[str]) -> None:
    got = _parse(argv)
    if isinstance(got, int):
        # 0 only for --help.
        assert got == 2 or (got == 0 and {"-h", "--help"} & set(argv)), (argv, got)
        return
    for name in ("user", "id", "conversation"):
        value = getattr(got, name, None)
        if value is not None:
            assert identifier_problem(value) is None, (name, value)
    if getattr(got, "message", None) is not None:
        assert message_problem(got.message) is None
    for name in ("at", "since"):
        value = getattr(got, name, None)
        if value is not None:
            assert timestamp_problem(value) is None, (name, value)
    if getattr(got, "limit", None) is not None:
        assert 1 <= got.limit <= LIST_LIMIT_MAX
    if getattr(got, "to", None) is not None:
        assert re.fullmatch(r"[A-Za-z0-9_]{1,32}", got.to), got.to


@SETTINGS
@given(argv=argvs)
def test_main_answers_any_command_line_with_an_exit_code(argv: list[str]) -> None:
    # Stops before any I/O: once the arguments are accepted, the configuration
    # is refused (as with a missing DATABASE_URL), which main reports as exit 2.
    refuse = mock.patch.object(cli, "load_settings", side_effect=ConfigError("no config here"))
    with (
        refuse,
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else -1
    assert code in (EXIT_USAGE, 0), (argv, code)


def test_real_argv_bytes_that_are_not_utf8_get_a_usage_error_not_a_traceback() -> None:
    for argv in (
        [b"followups", b"show", b"\xff\xfe"],
        [b"followups", b"list", b"--user", b"caf\xe9"],
        [b"followups", b"schedule", b"--user", b"u", b"--conversation", b"c", b"--message",
         b"m", b"--at", b"0001-01-01T00:00:00+01:00"],
    ):  # fmt: skip
        done = subprocess.run(
            [sys.executable.encode(), b"-m", b"consumer", *argv],
            cwd=REPO,
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 2, (argv, done.stderr)
        assert b"Traceback" not in done.stderr
        assert b"usage:" in done.stderr
