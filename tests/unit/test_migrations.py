"""The revisions as Alembic sees them (no database): one line of history, every
revision with a real, documented downgrade; `alembic revision` finds them through
pyproject.toml."""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import Script, ScriptDirectory

from consumer.adapters.postgres import schema

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
    assert schema.chain().losses[script.revision] == doc.splitlines()[0]
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
