"""Process-wide runtime settings for training on CPU.

keep_freed_memory: large blocks freed each epoch are reused, not faulted in again.
configure_threads / set_training_threads: OpenMP threads sleep instead of spinning while they
wait, and the team is no wider than the cores the process may use, so training keeps its speed
on a shared machine. The wait policy is observed in the OpenMP runtime itself: libgomp prints the
settings it parsed at start-up when ``OMP_DISPLAY_ENV=verbose``, including ``GOMP_SPINCOUNT``
(how long a waiting thread spins before it sleeps: 0 under PASSIVE, 300000 when unset).
"""

import os
import platform
import subprocess
import sys

import pytest

from dmg_ml import runtime
from dmg_ml.runtime import keep_freed_memory

PROBE = """
import resource, sys
import torch
from dmg_ml.runtime import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
x = torch.ones(8 << 20)  # 32 MB of float32, as large as glibc's largest mmap threshold
faults = []
for epoch in range(20):  # the same activations every epoch, as in training
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = (x * 2).relu_()
    z = y + x
    del y, z
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[-5:]))
"""
PAGES_PER_EPOCH = 2 * (32 << 20) // 4096

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc"
)
linux_only = pytest.mark.skipif(platform.system() != "Linux", reason="sched_setaffinity, /proc")


def _page_faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


@glibc_only
def test_repeated_large_allocations_reuse_freed_memory():
    default, tuned = _page_faults("default"), _page_faults("tuned")
    assert default > 5 * PAGES_PER_EPOCH // 2  # each epoch faults its activations in again
    assert tuned < PAGES_PER_EPOCH // 20  # steady state: the freed blocks are reused


@glibc_only
def test_keep_freed_memory_is_idempotent():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True


TOO_LATE = "OpenMP runtime was loaded before dmg_ml"


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter: no OpenMP runtime loaded yet, no wait policy or
    thread count inherited from this process (whose torch was imported before dmg_ml)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    clean["OMP_DISPLAY_ENV"] = "verbose"
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        capture_output=True, text=True, check=True, env=clean,
    )


def _openmp_settings(stderr: str) -> dict[str, str]:
    """The settings the first OpenMP runtime loaded (torch's here) printed at start-up."""
    if "OPENMP DISPLAY ENVIRONMENT BEGIN" not in stderr:
        pytest.skip("the OpenMP runtime does not print OMP_DISPLAY_ENV (not libgomp)")
    block = stderr.split("OPENMP DISPLAY ENVIRONMENT BEGIN", 1)[1]
    block = block.split("OPENMP DISPLAY ENVIRONMENT END", 1)[0]
    pairs = (line.strip().split(" = ", 1) for line in block.splitlines() if " = " in line)
    return {key: value.strip("'") for key, value in pairs}


IMPORT_ORDER = """
import os, sys
{first}
{second}
import torch
torch.ones(1 << 20).mul_(2)  # a parallel region: the thread team exists
print(os.environ.get("OMP_WAIT_POLICY"))
"""


def test_importing_dmg_ml_before_torch_makes_openmp_threads_wait_passively():
    out = _python(IMPORT_ORDER.format(first="import dmg_ml", second="import torch"))
    assert out.stdout.strip() == "PASSIVE"
    settings = _openmp_settings(out.stderr)
    assert settings["OMP_WAIT_POLICY"] == "PASSIVE"
    assert settings["GOMP_SPINCOUNT"] == "0"  # a waiting thread sleeps at once (default 300000)
    assert TOO_LATE not in out.stderr


def test_the_dagster_code_location_imports_dmg_ml_before_torch():
    out = _python(IMPORT_ORDER.format(first="import dmg_assets.definitions", second=""))
    assert _openmp_settings(out.stderr)["GOMP_SPINCOUNT"] == "0"
    assert TOO_LATE not in out.stderr


def test_an_explicit_wait_policy_is_kept():
    out = _python(
        IMPORT_ORDER.format(first="import dmg_ml", second="import torch"), OMP_WAIT_POLICY="ACTIVE"
    )
    assert out.stdout.strip() == "ACTIVE"
    settings = _openmp_settings(out.stderr)
    assert settings["OMP_WAIT_POLICY"] == "ACTIVE"
    assert int(settings["GOMP_SPINCOUNT"]) > 300000


@linux_only
def test_importing_torch_first_is_warned_once():
    code = IMPORT_ORDER.format(first="import torch", second="import dmg_ml")
    code += "from dmg_ml.runtime import configure_threads\nconfigure_threads()\n"
    out = _python(code)
    assert _openmp_settings(out.stderr)["GOMP_SPINCOUNT"] == "300000"  # the policy came too late
    assert out.stderr.count(TOO_LATE) == 1
    # a policy the user set before torch loaded is in effect: nothing to warn about
    out = _python(code, OMP_WAIT_POLICY="PASSIVE")
    assert _openmp_settings(out.stderr)["GOMP_SPINCOUNT"] == "0"
    assert TOO_LATE not in out.stderr


def test_training_threads_fit_the_cpus_the_process_may_use():
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert 1 <= runtime.training_threads() <= cpus


ONE_CPU = """
import os
import dmg_ml
import torch
from dagster import build_init_resource_context
from dmg_resources.device import TorchDevice
from dmg_ml.runtime import set_training_threads, training_threads
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # taskset after torch counted the CPUs
before = torch.get_num_threads()
TorchDevice(device="cpu").setup_for_execution(build_init_resource_context())
print(training_threads(), before, torch.get_num_threads())
torch.set_num_threads(1)
print(set_training_threads())
"""


@linux_only
def test_the_device_resource_caps_threads_at_the_cpus_the_process_may_use():
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    out = _python(ONE_CPU).stdout.split()
    assert out[:3] == ["1", str(len(os.sched_getaffinity(0))), "1"]
    assert out[3] == "1"  # a smaller count set explicitly is kept


@linux_only
def test_an_explicit_thread_count_is_kept():
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    out = _python(ONE_CPU, OMP_NUM_THREADS="2").stdout.split()
    assert out[:3] == ["1", "2", "2"]


def test_the_device_resource_refuses_a_device_or_precision_it_cannot_run_when_built():
    from pydantic import ValidationError

    from dmg_resources.device import TorchDevice

    assert TorchDevice(device="cuda:1", precision="bf16").device == "cuda:1"
    with pytest.raises(ValidationError, match="device"):
        TorchDevice(device="gpu")
    with pytest.raises(ValidationError, match="precision"):
        TorchDevice(precision="fp16")
