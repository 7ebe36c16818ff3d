"""`allocator.return_freed_memory`: blocks a batch frees go back to the system, even
after a larger block was freed first (which, left to glibc, raises its thresholds
and keeps them). Each case runs in a fresh interpreter: the setting is the process's."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# In a fresh process: free one 8 MiB block (glibc then raises its thresholds to
# that size), then make 64 MiB of 256 KiB blocks and free all but the last one
# made, which pins the top of the heap. Prints the resident KiB kept.
_SCRIPT = """
import sys
from consumer.entrypoints.allocator import return_freed_memory

def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

if sys.argv[1] == "set":
    assert return_freed_memory()
big = bytearray(8 << 20)
del big
before = rss_kib()
blocks = [bytearray(256 << 10) for _ in range(256)]
last = blocks.pop()
del blocks
print(rss_kib() - before)
"""


def _kept_kib(mode: str, env: dict[str, str] | None = None) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return int(out.stdout)


def _env_without_glibc_variables() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_blocks_go_back_to_the_system() -> None:
    env = _env_without_glibc_variables()
    left_to_glibc = _kept_kib("leave", env)
    fixed = _kept_kib("set", env)
    assert left_to_glibc > 48 << 10  # most of the 64 MiB stays resident
    assert fixed < 8 << 10  # all but the last block and some change go back


def test_an_operators_glibc_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.entrypoints.allocator import return_freed_memory

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    assert return_freed_memory() is False
