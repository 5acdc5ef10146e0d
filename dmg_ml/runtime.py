"""Process-wide settings that training on CPU needs to run at full speed.

**Freed memory.** glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MB)
with a fresh ``mmap`` and unmaps it on ``free``, and it returns the top of its heap to the system
once more than the trim threshold is free. Training allocates the same large activations every
epoch, so by default each epoch pays a page fault for every 4 KB of every activation over 32 MB,
and more for the smaller ones after a trim. Measured on the project's 2-core CPU at L=800 (600
samples, 5 folds, 5 epochs; ``benchmarks/trainer_speed.py --lengths range --min-cpgs 800
--max-cpgs 800 --genes 1 --epochs 5 --allocator default`` against ``--allocator kept``): the
reference trainer 46.8 s -> 16.6 s, the fast trainer 14.5 s -> 7.3 s (getrusage counted 20-350x
fewer minor page faults). There is no maintained Python package for this; ``mallopt`` through
ctypes is what the C library offers.

**OpenMP threads** (:func:`configure_threads`, :func:`set_training_threads`). PyTorch's CPU
kernels, MKL and oneDNN run on one OpenMP team (libgomp in the PyPI wheels). By default a
libgomp thread that reaches a barrier spins ``GOMP_SPINCOUNT`` = 300000 times before it sleeps,
and training runs one short parallel region after another, so a waiting thread rarely sleeps. When
another process holds one of the cores, the thread the others wait for queues behind it while
they burn their time slices spinning: on the 2-core machine, beside one busy single-threaded
process, a small fast-trainer run took 99.4 s with 2 threads against 4.1 s with 1 thread and
4.7 s with 2 threads under ``OMP_WAIT_POLICY=PASSIVE`` (Hardening issue, case 10). PASSIVE sets
the spin count to 0: a waiting thread sleeps on a futex at once and gives its core away.

When libgomp reads the policy (checked in subprocesses with ``OMP_DISPLAY_ENV=verbose``, which
makes libgomp print the settings it parsed, ``GOMP_SPINCOUNT`` included): its library
constructor parses every ``OMP_*`` variable once, when ``import torch`` loads
``torch/lib/libgomp.so.1``; the display appears during the import, before any parallel region.
The thread team itself only starts at the first parallel region (after ``import torch`` the
process has one extra thread, numpy's OpenBLAS server; the first parallel op adds the OpenMP
worker), but setting the variable between the import and that first region changes nothing: the
worker still sleeps after the region under ``ACTIVE`` set then, and spins under ``ACTIVE`` set
before the import. So the policy has to be in ``os.environ`` before torch (or anything else that
loads an OpenMP runtime, e.g. scikit-learn's own libgomp) is imported; ``dmg_ml/__init__.py``
calls :func:`configure_threads` first thing, and every entry point (the Dagster code location,
the run driver, the benchmarks) imports ``dmg_ml`` before torch. Child processes (Dagster's
multiprocess executor, benchmark workers) inherit the variable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import platform
import re
import sys
import warnings
from pathlib import Path

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_TOP_PAD_BYTES = 64 << 20
_NEVER_TRIM = 2**31 - 1

_applied = False

WAIT_POLICY = "PASSIVE"
_OPENMP_RUNTIME = re.compile(r"^lib(gomp|iomp5|omp)\b")  # GNU, Intel, LLVM
_warned = False


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


def loaded_openmp_runtimes() -> list[str]:
    """Paths of the OpenMP runtime libraries already loaded in this process (each has parsed
    its ``OMP_*`` variables). Where ``/proc`` is missing, ``["torch"]`` if torch is imported."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split(None, 5)[-1].strip() for line in maps if "/" in line}
    except OSError:
        return ["torch"] if "torch" in sys.modules else []
    return sorted(p for p in paths if _OPENMP_RUNTIME.match(os.path.basename(p)))


def configure_threads() -> str:
    """Make OpenMP threads sleep while they wait: ``OMP_WAIT_POLICY=PASSIVE`` unless set.

    ``dmg_ml`` calls it on import, before anything in it imports torch; calling it again is
    harmless. A policy the user set (``OMP_WAIT_POLICY=ACTIVE`` for a dedicated machine, say)
    is kept. If an OpenMP runtime was loaded before (torch imported before ``dmg_ml``) and the
    user set no policy, the runtime already runs with its default spinning, for the life of the
    process: this warns once (``RuntimeWarning``), sets the variable anyway for child processes,
    and the fix is to import ``dmg_ml`` first or export ``OMP_WAIT_POLICY=PASSIVE``. Returns the
    policy the variable now names.
    """
    global _warned
    user_set = "OMP_WAIT_POLICY" in os.environ
    policy = os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    if not user_set and not _warned:
        loaded = loaded_openmp_runtimes()
        if loaded:
            _warned = True
            warnings.warn(
                f"OpenMP runtime was loaded before dmg_ml ({', '.join(loaded)}), so its threads "
                "spin while they wait and training slows down many times over when another "
                "process uses a core: import dmg_ml before torch, or set OMP_WAIT_POLICY=PASSIVE "
                "in the environment",
                RuntimeWarning,
                stacklevel=2,
            )
    return policy


def allowed_cpus() -> set[int]:
    """The logical CPUs this process may run on (its affinity mask: taskset, cpusets)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def _physical_cores(cpus: set[int]) -> int:
    """Distinct physical cores among ``cpus`` (SMT siblings count once)."""
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        for name in ("core_cpus_list", "thread_siblings_list"):
            try:
                cores.add((topology / name).read_text().strip())
                break
            except OSError:
                continue
        else:
            cores.add(str(cpu))  # topology unknown: count it as a core
    return len(cores)


def _cgroup_cpu_limit() -> float | None:
    """CPUs' worth of time the cgroup v2 quota allows (``docker --cpus``), or None."""
    root = Path("/sys/fs/cgroup")
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    relative = next((line[3:] for line in lines if line.startswith("0::")), "/")
    directory, limits = root / relative.lstrip("/"), []
    while True:
        try:
            quota, period = (directory / "cpu.max").read_text().split()[:2]
            if quota != "max":
                limits.append(int(quota) / int(period))
        except (OSError, ValueError):
            pass
        if directory == root or root not in directory.parents:
            break
        directory = directory.parent
    return min(limits) if limits else None


def training_threads() -> int:
    """How many intra-op threads training should use: one per physical core it may run on.

    - Not more than the logical CPUs in the affinity mask, nor the cgroup CPU quota (rounded
      down, at least 1). libgomp's default counts the mask but not the quota; a team wider than
      the quota is throttled as a whole at the end of each period.
    - One per physical core, not per SMT thread: the convolutions and matrix products are bound
      by the core's vector units, which SMT siblings share, so a second thread per core adds team
      synchronisation and little arithmetic (Intel's tuning guides for oneDNN and PyTorch say
      the same). On the project's 2-core machine without SMT this is 2, PyTorch's default.
    - Not fewer because of other load: under the PASSIVE wait policy a thread waiting for a busy
      core sleeps, so a full team loses about its fair share beside other work (4.7 s with 2
      threads against 4.1 s with 1, beside one busy process, in the Hardening issue), and uses
      every core when the machine is idle. Run ``benchmarks/contention.py`` to check that.
    """
    cpus = allowed_cpus()
    threads = min(len(cpus), _physical_cores(cpus))
    limit = _cgroup_cpu_limit()
    if limit is not None:
        threads = min(threads, math.floor(limit))
    return max(1, threads)


def set_training_threads() -> int:
    """Cap torch's intra-op threads at :func:`training_threads` and return the count in effect.

    Only lowers: a smaller count set on purpose (``torch.set_num_threads(1)`` for tiny problems,
    as the tests do) stays. Where the user set ``OMP_NUM_THREADS``, torch already uses it and
    nothing changes. The ``device`` resource calls this when a step that trains starts.
    """
    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        threads = training_threads()
        if torch.get_num_threads() > threads:
            torch.set_num_threads(threads)
    return torch.get_num_threads()


def auto_precision(device: str) -> str:
    """bf16 where the hardware computes in it natively (AVX512-BF16/AMX CPUs, CUDA GPUs with
    bf16), fp32 elsewhere; ``benchmarks/trainer_speed.py`` measures that bf16 keeps per-gene R²
    within 0.01 of fp32."""
    import torch

    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
