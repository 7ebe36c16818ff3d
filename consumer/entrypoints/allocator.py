"""glibc's allocator, told to hand freed memory back to the system promptly.

A batch builds tens of MiB of rows, dicts and strings and drops them when it
commits. glibc serves blocks over its mmap threshold (128 KiB) with their own
mappings, returned on free, but raises that threshold to the size of each such
block freed (up to 32 MiB), and its trim threshold with it: after the first
few batches their large blocks come from the heap instead, and the heap
only shrinks from its top. The process's resident memory then followed the
largest batch so far, growing along a replay as histories grew (192 to 245 MiB
over 2M events of 20,000 users; 179 to 202 MiB with fixed thresholds, peak 234
against 245: docs/ingest-per-core.md). Fixed thresholds end that adjustment.
"""

from __future__ import annotations

import ctypes
import os

# mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's defaults, kept fixed.
THRESHOLD_BYTES = 128 * 1024
# An operator's own settings of the same thresholds win.
GLIBC_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def return_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds; False where there is nothing to do
    (another C library, or glibc's variables set in the environment)."""
    if any(name in os.environ for name in GLIBC_VARIABLES):
        return False
    try:
        # The symbols already loaded (the C library's among them): no search for
        # the library's file, which runs `ldconfig`.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on error (musl's stub always 0).
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, THRESHOLD_BYTES)
    )
