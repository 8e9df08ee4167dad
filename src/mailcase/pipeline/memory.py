"""Giving freed memory back to the system after a batch of big messages.

glibc's malloc keeps freed memory in its arenas (one per thread that allocated), and raises
its mmap threshold after a big block is freed, so that the next big blocks come from an arena
too: after a few batches of big messages the process held their peak for good (issue 11:
1.66 GB held while idle). `malloc_trim(0)` returns the free pages of every arena.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable

__all__ = ["TRIM_AFTER", "release_free_memory"]

#: Batch bytes from which a batch is followed by a trim (a trim costs a walk over the heaps).
TRIM_AFTER = 1024 * 1024


def _load() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _load()


def release_free_memory() -> None:
    """Return free heap pages to the system, where the C library can (glibc); else nothing."""
    if _TRIM is not None:
        _TRIM(0)
