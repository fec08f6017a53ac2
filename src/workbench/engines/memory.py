"""How much memory this process holds, and giving freed memory back to the OS.

Unloading is only trusted once measured (DESIGN invariant 4). glibc keeps freed heap
pages mapped, so after `del model; gc.collect()` RSS barely moves until `malloc_trim(0)`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import time
from typing import Any

import psutil

MiB = 1 << 20


def rss_bytes() -> int:
    """Resident memory of this process."""
    return int(psutil.Process().memory_info().rss)


def malloc_trim() -> bool:
    """Give freed heap pages back to the OS; False where glibc's malloc_trim is missing."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        return bool(ctypes.CDLL(name).malloc_trim(0))
    except (OSError, AttributeError):
        return False


def trim() -> None:
    """All an in-process unload can do: collect garbage, then trim the C heap."""
    gc.collect()
    malloc_trim()


def snapshot() -> dict[str, Any]:
    """This process's RSS and the machine's available memory, timestamped."""
    vm = psutil.virtual_memory()
    return {"at": time.time(), "rss": rss_bytes(), "available": int(vm.available)}

