"""The CLI of a checkout finds the services `scripts/services up` started: what the
environment does not set comes from `$SERVICES_DIR/env` (entrypoints.local_services)."""

from __future__ import annotations

from pathlib import Path

from consumer.config import Settings
from consumer.entrypoints.local_services import (
    CHECKOUT,
    env_file,
    missing_settings,
    parse_exports,
    settings_from_services,
)

WRITTEN = (
    "export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092\n"
    "export DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:15432/followups\n"
    "export SCHEMA_REGISTRY_URL=http://127.0.0.1:18081/apis/ccompat/v7\n"
)
FIELDS = list(Settings.model_fields)


def checkout(tmp_path: Path, env: str | None = WRITTEN) -> Path:
    """A directory that looks like a checkout, with `scripts/services up` done."""
    (tmp_path / "scripts").mkdir(parents=True)
    (tmp_path / "scripts" / "services").write_text("#!/bin/sh\n")
    if env is not None:
        (tmp_path / ".services").mkdir()
        (tmp_path / ".services" / "env").write_text(env)
    return tmp_path


def test_parses_what_scripts_services_writes() -> None:
    assert parse_exports(WRITTEN) == {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092",
        "DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:15432/followups",
        "SCHEMA_REGISTRY_URL": "http://127.0.0.1:18081/apis/ccompat/v7",
    }


def test_parses_quotes_and_ignores_anything_else() -> None:
    text = "# a comment\n\nNAME='a b'\nexport OTHER=\"x\"\nnot a line\n  export  SPACED=1  \n"
    assert parse_exports(text) == {"NAME": "a b", "OTHER": "x", "SPACED": "1"}


def test_the_environment_wins_and_only_settings_are_taken() -> None:
    exports = parse_exports(WRITTEN)
    assert missing_settings({}, exports, FIELDS) == {
        "kafka_bootstrap_servers": "127.0.0.1:19092",
        "database_url": "postgresql+asyncpg://postgres@127.0.0.1:15432/followups",
        "schema_registry_url": "http://127.0.0.1:18081/apis/ccompat/v7",
    }
    given = {
        "DATABASE_URL": "postgresql+asyncpg://me@db/x",
        "SCHEMA_REGISTRY_URL": "http://registry:8081",
    }
    assert missing_settings(given, exports, FIELDS) == {
        "kafka_bootstrap_servers": "127.0.0.1:19092"
    }
    # Only settings are taken: another variable in the file is left alone.
    assert missing_settings({}, {"PATH": "/x", **exports}, FIELDS).keys() == {
        "kafka_bootstrap_servers",
        "database_url",
        "schema_registry_url",
    }
    # Settings are case-insensitive: a lower-case variable counts as set.
    assert "database_url" not in missing_settings({"database_url": "x"}, exports, FIELDS)


def test_read_from_the_checkout_or_services_dir(tmp_path: Path) -> None:
    repo = checkout(tmp_path / "repo")
    assert env_file({}, repo) == repo / ".services" / "env"
    assert settings_from_services({}, FIELDS, repo)["kafka_bootstrap_servers"] == "127.0.0.1:19092"

    elsewhere = tmp_path / "state"
    elsewhere.mkdir()
    (elsewhere / "env").write_text("export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:29092\n")
    environ = {"SERVICES_DIR": str(elsewhere)}
    assert settings_from_services(environ, FIELDS, repo) == {
        "kafka_bootstrap_servers": "127.0.0.1:29092"
    }


def test_nothing_without_a_checkout_or_a_file(tmp_path: Path) -> None:
    assert env_file({}, tmp_path) is None  # an installed package: no scripts/services
    assert settings_from_services({}, FIELDS, tmp_path) == {}
    assert settings_from_services({}, FIELDS, checkout(tmp_path / "repo", env=None)) == {}


def test_this_checkout_is_the_repository() -> None:
    assert (CHECKOUT / "scripts" / "services").is_file()
