"""The wheel's optional native build: the per-event code compiled with mypyc.

`FOLLOWUPS_NATIVE=1 pip wheel --no-deps --no-build-isolation .` (the Dockerfile
does this) compiles the modules below to C extensions with mypyc, the compiler
that ships with mypy. They are the same source, type-checked by the same
`mypy --strict`; compiled, the rules, the row conversions and the Avro codec
take about a fifth less of the CPU an ingested event costs
(docs/ingest-per-core.md). The extension sits beside its `.py` in the wheel,
and Python imports the extension first.

Editable installs (`scripts/bootstrap`) and builds without the variable stay
pure Python, so that an edit to a `.py` always takes effect in development:
never compile into the repository itself. `compiled_copy(...)` compiles a
copy (bench.compare --native, the native test step of scripts/test).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# The code every event or follow-up passes through. Modules that import pydantic
# models or run the asyncio loop stay interpreted (mypyc gains little there).
NATIVE_MODULES = (
    "consumer/domain/events.py",
    "consumer/domain/limits.py",
    "consumer/domain/model.py",
    "consumer/domain/policy.py",
    "consumer/domain/rules.py",
    "consumer/domain/working_set.py",
    "consumer/adapters/avro_encoder.py",
    "consumer/adapters/codec.py",
    "consumer/adapters/wire_fast.py",
    "consumer/adapters/postgres/arrays.py",
    "consumer/adapters/postgres/rows.py",
)
# Names the shared library of the compiled modules (one per wheel, top level).
GROUP = "followup_consumer"
ENABLE = "FOLLOWUPS_NATIVE"


def compiled_copy(source: Path, root: Path, parts: Sequence[str] = ("consumer",)) -> list[Path]:
    """Copy `parts` of the tree at `source` to `root` and compile NATIVE_MODULES
    there, in place; the extensions made. Always a copy: the tree compiled is
    never the one edited (see the module's docstring). Needs mypy (mypyc),
    setuptools and a C compiler.
    """
    for part in parts:
        shutil.copytree(source / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    from mypyc.build import mypycify
    from setuptools import Distribution  # type: ignore[import-untyped]

    here = Path.cwd()
    scratch = Path(tempfile.mkdtemp(prefix="followups-native-"))
    try:
        os.chdir(root)  # mypyc names modules by their paths from here
        extensions = mypycify(
            list(NATIVE_MODULES), opt_level="3", group_name=GROUP, target_dir=str(scratch / "c")
        )
        command: Any = Distribution({"ext_modules": extensions}).get_command_obj("build_ext")
        command.build_lib = str(root)
        command.build_temp = str(scratch / "o")
        command.ensure_finalized()
        command.run()
        return [Path(p) for p in command.get_outputs()]
    finally:
        os.chdir(here)
        shutil.rmtree(scratch, ignore_errors=True)


class NativeBuild(BuildHookInterface[Any]):
    """Compiles NATIVE_MODULES into the wheel when FOLLOWUPS_NATIVE=1."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        if os.environ.get(ENABLE, "") not in {"1", "true", "yes"}:
            return
        copy = self._copy = Path(tempfile.mkdtemp(prefix="followups-wheel-"))
        for built in compiled_copy(Path(self.root), copy):
            build_data["force_include"][str(built)] = str(built.relative_to(copy))
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        copy: Path | None = getattr(self, "_copy", None)
        if copy is not None:
            shutil.rmtree(copy, ignore_errors=True)
