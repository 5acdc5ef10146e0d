"""Registers, spills and shared memory of the fused Triton kernels, compiled for a Hopper GPU
(sm_90) on this machine, without one: Triton ships the compiler (ptxas) and ``cuobjdump``. A
``STACK`` above 0 is registers spilled to local memory. This is how the fused backward's tuning
choices were narrowed before a device call (``conv_kernels.BACKWARD_CONFIGS``).

    python benchmarks/kernel_resources.py
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dmg_ml.training import conv_kernels  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
CUOBJDUMP = Path(triton.__file__).parent / "backends/nvidia/bin/cuobjdump"
#: Channel blocks of the trunk's layers (c1 = 64 and c2 = 32 for windows of 640 CpGs or more).
BLOCKS = ((64, 64), (64, 32), (32, 32), (16, 64))


def compile_kernel(fn, constants: dict, warps: int):
    """``fn`` compiled for sm_90 with bf16 tensors (fp32 partials), i32 scalars, ``constants``."""
    names = inspect.signature(fn.fn).parameters
    types = {}
    for name in names:
        if name in constants:
            types[name] = "constexpr"
        elif name.endswith("_ptr"):
            types[name] = "*fp32" if name == "part_ptr" else "*bf16"
        else:
            types[name] = "i32"
    source = ASTSource(fn=fn, signature=types, constexprs=constants)
    return triton.compile(source, target=TARGET, options={"num_warps": warps, "num_stages": 3})


def resources(kernel) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(kernel.asm["cubin"])
        cubin.flush()
        out = subprocess.run(
            [str(CUOBJDUMP), "-res-usage", cubin.name], capture_output=True, text=True, check=True
        ).stdout
    line = next(line for line in out.splitlines() if "REG:" in line)
    fields = dict(field.split(":", 1) for field in line.split() if ":" in field)
    mma = "wgmma" if "wgmma" in kernel.asm["ptx"] else "mma" if "mma" in kernel.asm["ptx"] else "-"
    return (
        f"{fields['REG']} | {fields['STACK']} | {kernel.metadata.shared // 1024} | {mma}"
    )


def main() -> None:
    common = {"SLOPE": 0.01, "PRECISION": "tf32", "HAS_POS": False}
    print("| kernel | channel blocks | rows per tile | warps | registers | spilled bytes | "
          "shared KiB | matrix instructions |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for bci, bco in BLOCKS:
        for block, tiles, warps in conv_kernels.ROW_CONFIGS:
            constants = {**common, "BCI": bci, "BCO": bco, "HAS_RES": True, "BLOCK": block,
                         "TILES": tiles}  # fmt: skip
            kernel = compile_kernel(conv_kernels._forward, constants, warps)
            print(f"| forward | {bci}x{bco} | {block} x {tiles} | {warps} | {resources(kernel)} |")
        for block, warps in conv_kernels.BACKWARD_CONFIGS:
            constants = {**common, "BCI": bci, "BCO": bco, "INPUT_ERROR": bci > 16,
                         "HAS_EXTRA": True, "BLOCK": block,
                         "ROWS": conv_kernels.BACKWARD_ROWS[-1]}  # fmt: skip
            kernel = compile_kernel(conv_kernels._backward, constants, warps)
            print(f"| backward | {bci}x{bco} | {block} | {warps} | {resources(kernel)} |")


if __name__ == "__main__":
    main()
