"""Tests against the mypyc-compiled modules, as the native wheel ships them.

    .venv/bin/python -m harness.native [pytest arguments]

Builds a scratch tree: a copy of `consumer/` compiled by `hatch_build.py`, every
other entry of the repository linked. It checks that each compiled module is
the one imported there, then runs pytest in that tree and exits with pytest's
code. The repository itself stays pure Python (see hatch_build.py).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, cast

from harness.paths import REPO


class HatchBuild(Protocol):
    """What hatch_build.py offers besides its hook."""

    NATIVE_MODULES: tuple[str, ...]

    def compiled_copy(
        self, source: Path, root: Path, parts: Sequence[str] = ("consumer",)
    ) -> list[Path]: ...


def hatch_build() -> HatchBuild:
    """The repository's hatch_build.py (a file beside pyproject.toml, not a package)."""
    spec = importlib.util.spec_from_file_location("hatch_build", REPO / "hatch_build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return cast(HatchBuild, module)


_PYCACHE = shutil.ignore_patterns("__pycache__")


def native_tree(target: Path) -> list[str]:
    """The repository at `target`, `consumer/` copied and compiled; the modules compiled."""
    build = hatch_build()
    for entry in REPO.iterdir():
        if entry.name in {"consumer", ".git", ".venv"} or entry.name.startswith(".pytest"):
            continue
        # Copied: what finds the repository from where it lies (harness.paths,
        # pyproject.toml's relative paths); the rest linked.
        if entry.name in {"harness", "tests"}:
            shutil.copytree(entry, target / entry.name, ignore=_PYCACHE)
        elif entry.is_dir():
            (target / entry.name).symlink_to(entry)
        else:
            shutil.copy2(entry, target / entry.name)
    build.compiled_copy(REPO, target)
    return [p.removesuffix(".py").replace("/", ".") for p in build.NATIVE_MODULES]


_CHECK = """
import importlib, sys
loaded = {m: importlib.import_module(m).__file__ or "" for m in sys.argv[1:]}
interpreted = [m for m, f in loaded.items() if not f.endswith(".so")]
if interpreted:
    sys.exit(f"not compiled: {', '.join(interpreted)}")
print(f"native: {len(loaded)} modules compiled")
"""


def main(argv: list[str]) -> int:
    target = Path(tempfile.mkdtemp(prefix="followups-native-tree-"))
    try:
        modules = native_tree(target)
        subprocess.run([sys.executable, "-c", _CHECK, *modules], cwd=target, check=True)
        env = {**os.environ, "FOLLOWUPS_EXPECT_BUILD": "compiled"}
        command = [sys.executable, "-m", "pytest", *argv]
        return subprocess.run(command, cwd=target, env=env).returncode
    finally:
        shutil.rmtree(target, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
