"""keep_freed_memory: large blocks freed each epoch are reused, not faulted in again."""

import platform
import subprocess
import sys

import pytest

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
