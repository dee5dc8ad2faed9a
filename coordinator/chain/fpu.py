"""Undo what LiteSVM leaves behind in the x87 floating-point unit of the calling thread.

Measured here (solders 0.27 LiteSVM, x86-64): after it executes a transaction, the x87 tag
word of the calling thread reads 0x5556 instead of 0xffff: registers of the x87 stack are left
marked in use (MMX state not released with EMMS). Python's floats use SSE and do not notice,
but SQLite computes with `long double` (x87): in that thread `SELECT 0.5` then returns NaN,
`0.5 < 1.0` is false, and indexes on REAL columns get entries that no lookup finds
(`PRAGMA integrity_check`: "row N missing from index ix_task_queue"). The coordinator runs
the embedded chain and its database in the same threads, so every LiteSVM call is followed
by `reset_x87()`, which runs EMMS: every x87 register is marked empty again.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
from collections.abc import Callable

_EMMS_RET = b"\x0f\x77\xc3"  # emms; ret


def _load() -> Callable[[], None]:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return lambda: None  # no x87 stack elsewhere
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE,
                         prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError, AttributeError):  # W^X policies refuse executable pages
        return lambda: None
    page.write(_EMMS_RET)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    function = ctypes.CFUNCTYPE(None)(address)
    _keep.append(page)
    return function


_keep: list[mmap.mmap] = []
reset_x87: Callable[[], None] = _load()
"""Mark every x87 register empty (EMMS) in the calling thread; a no-op off x86-64."""
