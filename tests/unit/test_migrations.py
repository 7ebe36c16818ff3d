"""The revisions as Alembic sees them (no database): one line of history, every
revision with a real, documented downgrade; `alembic revision` finds them through
pyproject.toml; the migrate command's arguments and messages."""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import Script, ScriptDirectory

from consumer.adapters.postgres import schema
from consumer.adapters.postgres.schema import Migration, SchemaStatus
from consumer.domain.template_seeds import SEEDS
from consumer.entrypoints import cli, cli_migrate

REPO = Path(__file__).resolve().parents[2]


def scripts() -> list[Script]:
    """Oldest first."""
    directory = ScriptDirectory.from_config(schema._config())
    return list(reversed(list(directory.walk_revisions())))


def test_one_line_of_history_with_one_head() -> None:
    directory = ScriptDirectory.from_config(schema._config())
    assert directory.get_heads() == [schema.chain().head]
    assert directory.get_bases() == ["0001"]
    found = scripts()
    assert [s.revision for s in found] == list(schema.chain().revisions)
    for number, (previous, script) in enumerate(zip([None, *found], found, strict=False), 1):
        # Ids are numbers in order; each revision follows the one before.
        assert script.revision == f"{number:04d}"
        assert script.down_revision == (previous.revision if previous else None)
        assert script.branch_labels == set()
        assert script.dependencies is None
        assert Path(script.path).name.startswith(f"{script.revision}_")


def _body(function: Callable[..., Any]) -> list[ast.stmt]:
    """The statements of a function, its docstring left out."""
    tree = ast.parse(inspect.getsource(function))
    [definition] = tree.body
    assert isinstance(definition, ast.FunctionDef)
    body = definition.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return body


@pytest.mark.parametrize("script", scripts(), ids=lambda s: s.revision)
def test_every_revision_goes_up_and_down(script: Script) -> None:
    for name in ("upgrade", "downgrade"):
        function = getattr(script.module, name)
        body = _body(function)
        assert body, f"{script.revision}.{name} does nothing"
        assert not all(isinstance(s, ast.Pass) for s in body), f"{script.revision}.{name}: pass"
        assert '"..."' not in inspect.getsource(function), f"{script.revision}.{name}: template"
    # The first line of the downgrade's docstring says what going down loses:
    # `migrate --to` shows it before it asks for --yes.
    doc = inspect.getdoc(script.module.downgrade)
    assert doc, f"{script.revision}: say in downgrade's docstring what it loses"
    assert schema.chain().losses[script.revision] == doc.splitlines()[0].rstrip(".")
    assert re.match(r"Drops \S", doc), doc


def test_the_alembic_command_does_not_run_them() -> None:
    """Only `followup-consumer migrate` does: under its lock, with its adoption."""
    with pytest.raises(RuntimeError, match="followup-consumer migrate"):
        command.upgrade(schema._config(), "head")


def test_alembic_revision_finds_the_revisions_through_pyproject() -> None:
    config = Config(toml_file=str(REPO / "pyproject.toml"))
    directory = ScriptDirectory.from_config(config)
    assert Path(directory.dir).resolve() == Path(schema._config().get_main_option(
        "script_location"
    ) or "").resolve()  # fmt: skip
    assert directory.get_current_head() == schema.chain().head


def test_targets() -> None:
    chain = schema.chain()
    assert chain.revisions[:2] == ("0001", "0002")
    assert chain.resolve("head") == chain.head
    assert chain.resolve("base") is None
    assert chain.resolve("0001") == "0001"
    with pytest.raises(schema.UnknownRevision, match="no revision '0042'"):
        chain.resolve("0042")
    with pytest.raises(schema.UnknownRevision):
        chain.resolve("00")  # no prefixes: a revision is named in full
    assert chain.between(None, "0002") == ("0001", "0002")
    assert chain.between("0001", "0002") == ("0002",)
    assert chain.between("0002", "0002") == ()


def test_migrate_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    parse = cli._parser().parse_args
    plain = parse(["migrate"])
    assert (plain.to, plain.current, plain.yes) == (None, False, False)
    down = parse(["migrate", "--to", "0001", "--yes"])
    assert (down.to, down.yes) == ("0001", True)
    assert parse(["migrate", "--current"]).current
    for argv in (
        ["migrate", "--to", "0001", "--current"],
        ["migrate", "--to", "0001; DROP TABLE x"],
        ["migrate", "--to", ""],
        ["migrate", "--to", "x" * 33],
        ["migrate", "--to"],
    ):
        with pytest.raises(SystemExit) as exc:
            parse(argv)
        assert exc.value.code == 2, argv
    assert "not a revision id" in capsys.readouterr().err


def test_what_migrate_says() -> None:
    at_head = SchemaStatus(current="0002", head="0002", adoptable=None, known=True)

    def status(found: SchemaStatus) -> str:
        return cli_migrate.describe_status(found)

    assert status(at_head) == "0002 (head)"
    assert status(replace(at_head, current="0001")) == "0001 (head is 0002)"
    assert status(replace(at_head, current=None)) == (
        "none: no table of the service yet (head is 0002)"
    )
    assert status(replace(at_head, current=None, adoptable="0001")).startswith(
        "none recorded: the schema schema.sql made, which is 0001"
    )
    assert status(replace(at_head, current="0009", known=False)) == (
        "0009: not a revision of this release (its head is 0002)"
    )

    nothing = Migration(
        before="0002", adopted=None, after="0002", head="0002", applied=(), undone=()
    )

    def migration(done: Migration) -> str:
        return cli_migrate.describe_migration(done)

    assert migration(nothing) == "already at 0002 (head)"
    assert migration(replace(nothing, before=None, applied=("0001", "0002"))) == (
        "upgraded base -> 0002 (head)"
    )
    assert migration(replace(nothing, before=None, adopted="0001", applied=("0002",))) == (
        "recorded the schema schema.sql made as 0001; upgraded 0001 -> 0002 (head)"
    )
    assert migration(replace(nothing, after=None, undone=("0002", "0001"))) == (
        "downgraded 0002 -> base (head is 0002)"
    )


def test_0004_seeds_the_texts_of_the_code_as_version_1() -> None:
    """The revision writes its seed out (a shipped revision never changes); at this
    release it is exactly the code's English and French texts."""
    [script] = [s for s in scripts() if s.revision == "0004"]
    assert {(t, loc): body for t, loc, body in script.module.SEED} == SEEDS
