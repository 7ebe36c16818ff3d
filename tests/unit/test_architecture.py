"""The package's shape: no import cycle anywhere in `consumer/` (import-linter,
run by scripts/test, checks the layers; this checks every module pair), and no
import across the boundaries between the service and the tools around it."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]

# Package -> the top-level packages none of its files may import. bench/ and tests/
# share what they need through harness/; the service never imports any of them.
# (import-linter checks this too, but it does not see tests/unit, which is not a package.)
FORBIDDEN = {
    "consumer": {"harness", "bench", "tests"},
    "harness": {"bench", "tests"},
    "bench": {"tests"},
    "tests": {"bench"},
}


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in graph.find_modules_directly_imported_by(m) & modules:
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            component = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                component.append(n)
                if n == m:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return found


def test_no_import_cycle_in_the_package() -> None:
    graph = grimp.build_graph("consumer")
    modules = set(graph.modules)
    assert len(modules) > 30
    assert _cycles(graph, modules) == []


def test_the_cycle_finder_finds_cycles() -> None:
    graph = grimp.ImportGraph()
    for m in ("a", "b", "c"):
        graph.add_module(m)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="a")
    graph.add_import(importer="b", imported="c")
    assert _cycles(graph, {"a", "b", "c"}) == [["a", "b"]]


def _imported(path: Path) -> set[str]:
    """The top-level packages a file imports (absolute imports, anywhere in the file)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_across_the_boundaries(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    assert files
    found = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in files
        for name in sorted(_imported(path) & FORBIDDEN[package])
    ]
    assert found == []


def test_the_import_scan_sees_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import bench.lib\nfrom tests.x import y\nfrom . import z\n")
    assert _imported(source) == {"bench", "tests"}
