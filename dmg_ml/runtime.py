"""Process-wide settings that training on CPU needs to run at full speed.

glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MB) with a fresh
``mmap`` and unmaps it on ``free``, and it returns the top of its heap to the system once more than
the trim threshold is free. Training allocates the same large activations every epoch, so by
default each epoch pays a page fault for every 4 KB of every activation over 32 MB, and more for
the smaller ones after a trim. Measured on the project's 2-core CPU at L=800 (600 samples,
5 folds, 5 epochs; ``benchmarks/trainer_speed.py --lengths range --min-cpgs 800 --max-cpgs 800
--genes 1 --epochs 5 --allocator default`` against ``--allocator kept``): the reference trainer
46.8 s -> 16.6 s, the fast trainer 14.5 s -> 7.3 s (getrusage counted 20-350x fewer minor page
faults). There is no maintained Python package for this; ``mallopt`` through ctypes is what
the C library offers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_TOP_PAD_BYTES = 64 << 20
_NEVER_TRIM = 2**31 - 1

_applied = False


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of returning it to the system.

    Large blocks come from the heap (no per-allocation ``mmap``), the heap grows 64 MB at a time
    and is never trimmed, so the process's resident memory stays at its peak. Call it once in a
    process that trains (the ``device`` resource does, unless configured not to). Returns whether
    the setting is in effect: False where the C library is not glibc, and nothing changes there.
    """
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM), (_M_TOP_PAD, _TOP_PAD_BYTES))
    _applied = all(libc.mallopt(option, value) == 1 for option, value in settings)
    return _applied
