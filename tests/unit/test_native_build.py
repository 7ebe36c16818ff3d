"""Which build runs: the source, or the modules mypyc compiled (hatch_build.py).

`python -m harness.native` runs the tests on a compiled copy and says so with
FOLLOWUPS_EXPECT_BUILD=compiled; everywhere else the source is what runs.
"""

from __future__ import annotations

import importlib
import os

from consumer.entrypoints.runner import _build
from harness.native import hatch_build


def test_the_build_the_startup_log_names_is_the_one_running() -> None:
    assert _build() == os.environ.get("FOLLOWUPS_EXPECT_BUILD", "interpreted")


def test_every_module_named_for_compiling_is_a_module_of_the_package() -> None:
    for path in hatch_build().NATIVE_MODULES:
        assert path.startswith("consumer/"), path
        assert path.endswith(".py"), path
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert module.__name__.startswith("consumer.")
