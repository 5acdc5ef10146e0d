"""Triton kernels of the fused convolution trunk (``dmg_ml.training.fused``).

Every layer of the trunk is a k=3, pad=1 convolution of ``T`` tasks' channels-last activations
``(T, R, C)`` (``R = N·L`` rows, a sample's ``L`` positions consecutive), followed by bias, the
packing mask, an optional residual and LeakyReLU. Each kernel reads its shifted rows
``x[l-1], x[l], x[l+1]`` in place (no window copies) and does its elementwise work in the
matmul's epilogue, so a layer moves each of its tensors through memory once forward and once
backward:

* ``_forward``: ``out = leaky(mask·(conv(x) + b) + res)``.
* ``_backward``: the error of the layer below, ``(convᵀ(e) + extra)·leaky'(x)·mask``, where
  ``leaky'`` is read off the stored activation ``x`` (its sign is that of the pre-activation),
  and the gradients ``Σ_rows x[r-1+k]ᵀ e[r]`` and ``Σ_rows e[r]``, each program summing its rows
  into an fp32 partial of its own (summed afterwards: deterministic, no atomics).

A program loads its task's weights once and runs over tiles of rows in a loop; tile sizes, tiles
per program and warps are tuned on the GPU (``_TUNED``).

Weights and biases are read from the tasks' parameter rows (stride ``P``) in the ``ParamLayout``
order ``(C_out, C_in, 3)``; stored widths may be any size, the blocks are the next power of two
(at least 16, the tensor cores' minimum) with the excess masked; only the blocks are compile-time
constants, so a cohort's many widths share a few compiled kernels. On CPU the kernels run under
Triton's interpreter (``TRITON_INTERPRET=1``), which is how the tests check them.
"""

from __future__ import annotations

from functools import partial

import torch
import triton
import triton.language as tl

from dmg_ml.models.cnn import NEGATIVE_SLOPE

#: (rows per tile, tiles per program) of every kernel on CPU tensors, under Triton's interpreter,
#: whose cost is per operation of each program: one program per task at the tests' sizes.
INTERPRETER_TILES = (1024, 1)


@triton.jit
def _forward(
    x_ptr, w_ptr, b_ptr, res_ptr, pos_ptr, out_ptr, R, L, P,
    CIN, COUT, BCI: tl.constexpr, BCO: tl.constexpr,
    HAS_RES: tl.constexpr, HAS_POS: tl.constexpr, SLOPE: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK: tl.constexpr, TILES: tl.constexpr,
):  # fmt: skip
    """Each program: ``TILES`` consecutive tiles of ``BLOCK`` rows of one task (the weights
    loaded once)."""
    t = tl.program_id(1).to(tl.int64)
    ci, co = tl.arange(0, BCI), tl.arange(0, BCO)
    ci_ok, co_ok = ci < CIN, co < COUT
    x_base, out_base, w_base = x_ptr + t * R * CIN, out_ptr + t * R * COUT, w_ptr + t * P
    w_off = (co[None, :] * CIN + ci[:, None]) * 3
    w_ok = ci_ok[:, None] & co_ok[None, :]
    w0 = tl.load(w_base + w_off, mask=w_ok, other=0.0)
    w1 = tl.load(w_base + w_off + 1, mask=w_ok, other=0.0)
    w2 = tl.load(w_base + w_off + 2, mask=w_ok, other=0.0)
    bias = tl.load(b_ptr + t * P + co, mask=co_ok, other=0.0).to(tl.float32)
    for i in range(TILES):
        rows = (tl.program_id(0) * TILES + i) * BLOCK + tl.arange(0, BLOCK)
        row_ok = rows < R
        pos = rows % L
        x_ok = row_ok[:, None] & ci_ok[None, :]
        x = x_base + rows[:, None] * CIN + ci[None, :]
        x0 = tl.load(x - CIN, mask=x_ok & (pos >= 1)[:, None], other=0.0)
        x1 = tl.load(x, mask=x_ok, other=0.0)
        x2 = tl.load(x + CIN, mask=x_ok & (pos + 1 < L)[:, None], other=0.0)
        acc = tl.dot(x0, w0, input_precision=PRECISION)
        acc = tl.dot(x1, w1, acc, input_precision=PRECISION)
        acc = tl.dot(x2, w2, acc, input_precision=PRECISION) + bias[None, :]
        if HAS_POS:
            acc *= tl.load(pos_ptr + t * L + pos, mask=row_ok, other=0.0).to(tl.float32)[:, None]
        out_off = rows[:, None] * COUT + co[None, :]
        out_ok = row_ok[:, None] & co_ok[None, :]
        if HAS_RES:
            acc += tl.load(res_ptr + t * R * COUT + out_off, mask=out_ok, other=0.0).to(tl.float32)
        acc = tl.where(acc > 0, acc, acc * SLOPE)
        tl.store(out_base + out_off, acc.to(out_ptr.dtype.element_ty), mask=out_ok)


@triton.jit
def _backward(
    e_ptr, w_ptr, x_ptr, extra_ptr, pos_ptr, out_ptr, part_ptr, R, L, P, SPLITS,
    CIN, COUT, BCI: tl.constexpr, BCO: tl.constexpr, INPUT_ERROR: tl.constexpr,
    HAS_EXTRA: tl.constexpr, HAS_POS: tl.constexpr, SLOPE: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr,
):  # fmt: skip
    """A layer's whole backward on ``ROWS`` consecutive rows of one task, in tiles of ``BLOCK``:
    the weight and bias gradients' fp32 partial sums over them and, if ``INPUT_ERROR``, the error
    of the layer below on them. The layer's input ``x`` and error ``e`` leave memory once for
    both: the weight gradient ``Σ_r x[r-1+k]ᵀ e[r]`` is summed as ``Σ_r x[r]ᵀ e[r+1-k]``, on
    the shifted error rows that the input error reads anyway. (As two kernels, each reading
    both, an epoch on an H100 took 19-24 % longer at L = 647-1075, 3 % at 438 and 8 % less at
    215: issue 10's note.)"""
    s = tl.program_id(0)
    t = tl.program_id(1).to(tl.int64)
    ci, co = tl.arange(0, BCI), tl.arange(0, BCO)
    ci_ok, co_ok = ci < CIN, co < COUT
    e_base, x_base = e_ptr + t * R * COUT, x_ptr + t * R * CIN
    w_off = (co[None, :] * CIN + ci[:, None]) * 3
    w_ok = ci_ok[:, None] & co_ok[None, :]
    if INPUT_ERROR:
        w_base = w_ptr + t * P
        wt_off = (co[:, None] * CIN + ci[None, :]) * 3
        wt_ok = co_ok[:, None] & ci_ok[None, :]
        w0 = tl.load(w_base + wt_off, mask=wt_ok, other=0.0)
        w1 = tl.load(w_base + wt_off + 1, mask=wt_ok, other=0.0)
        w2 = tl.load(w_base + wt_off + 2, mask=wt_ok, other=0.0)
    acc0 = tl.zeros((BCI, BCO), dtype=tl.float32)
    acc1 = tl.zeros((BCI, BCO), dtype=tl.float32)
    acc2 = tl.zeros((BCI, BCO), dtype=tl.float32)
    bias = tl.zeros((BCO,), dtype=tl.float32)
    for i in range(ROWS // BLOCK):
        rows = s * ROWS + i * BLOCK + tl.arange(0, BLOCK)
        row_ok = rows < R
        pos = rows % L
        e_ok = row_ok[:, None] & co_ok[None, :]
        e = e_base + rows[:, None] * COUT + co[None, :]
        e0 = tl.load(e + COUT, mask=e_ok & (pos + 1 < L)[:, None], other=0.0)  # e[r+1]
        e1 = tl.load(e, mask=e_ok, other=0.0)
        e2 = tl.load(e - COUT, mask=e_ok & (pos >= 1)[:, None], other=0.0)  # e[r-1]
        off = rows[:, None] * CIN + ci[None, :]
        ok = row_ok[:, None] & ci_ok[None, :]
        x = tl.load(x_base + off, mask=ok, other=0.0)
        xt = tl.trans(x)
        acc0 = tl.dot(xt, e0, acc0, input_precision=PRECISION)
        acc1 = tl.dot(xt, e1, acc1, input_precision=PRECISION)
        acc2 = tl.dot(xt, e2, acc2, input_precision=PRECISION)
        bias += tl.sum(e1.to(tl.float32), axis=0)
        if INPUT_ERROR:
            # y[r] = Σ_k x[r-1+k]·W_k, so x[r] meets e[r+1] through W_0 and e[r-1] through W_2.
            acc = tl.dot(e0, w0, input_precision=PRECISION)
            acc = tl.dot(e1, w1, acc, input_precision=PRECISION)
            acc = tl.dot(e2, w2, acc, input_precision=PRECISION)
            if HAS_EXTRA:
                acc += tl.load(extra_ptr + t * R * CIN + off, mask=ok, other=0.0).to(tl.float32)
            acc = tl.where(x > 0, acc, acc * SLOPE)
            if HAS_POS:
                own = tl.load(pos_ptr + t * L + pos, mask=row_ok, other=0.0)
                acc *= own.to(tl.float32)[:, None]
            tl.store(out_ptr + t * R * CIN + off, acc.to(out_ptr.dtype.element_ty), mask=ok)
    part = part_ptr + (t * SPLITS + s) * (COUT * CIN * 3 + COUT)
    tl.store(part + w_off, acc0, mask=w_ok)
    tl.store(part + w_off + 1, acc1, mask=w_ok)
    tl.store(part + w_off + 2, acc2, mask=w_ok)
    tl.store(part + COUT * CIN * 3 + co, bias, mask=co_ok)


#: The forward's choices on a GPU, ``(rows per tile, tiles per program, warps)``: few, as each
#: is compiled and timed at the first launch for every pair of channel blocks.
ROW_CONFIGS = ((128, 1, 4), (128, 4, 4), (128, 4, 8), (64, 4, 4))
#: The backward's choices on a GPU, ``(rows per tile, warps)`` (128 rows in 4 warps spill 1.5 KB
#: of registers a thread at 64 channels, compiled for sm_90).
BACKWARD_CONFIGS = ((64, 4), (64, 8), (128, 8))
#: Rows per program of the backward on a GPU, a compile-time constant (the interpreter runs
#: no loop of runtime length): each program sums its rows' weight gradient into a partial of its
#: own, so long programs write few partials; the longer choice is taken where a group still has
#: ``BACKWARD_PROGRAMS`` of them (a few waves of 132 SMs).
BACKWARD_ROWS = (512, 4096)
BACKWARD_PROGRAMS = 1024


def tuned_kernels(row_configs=ROW_CONFIGS, backward_configs=BACKWARD_CONFIGS) -> dict:
    """The kernels as ``triton.autotune`` runs them on a GPU: each choice timed at the first
    launch for a pair of channel blocks, the fastest kept, and its timings cached on disk with
    Triton's compiled kernels, so later processes on the machine (a run per partition) neither
    compile nor tune again. On an H200, compiling and tuning took most of a process's first
    minute (issue 10's note)."""
    rows = [
        triton.Config({"BLOCK": block, "TILES": tiles}, num_warps=warps, num_stages=3)
        for block, tiles, warps in row_configs
    ]
    back = [triton.Config({"BLOCK": b}, num_warps=w, num_stages=3) for b, w in backward_configs]
    tune = partial(triton.autotune, cache_results=True)
    return {
        "backward": tune(back, key=["BCI", "BCO", "ROWS", "INPUT_ERROR"])(_backward),
        "forward": tune(rows, key=["BCI", "BCO"])(_forward),
    }


_TUNED = tuned_kernels()


def _block(width: int) -> int:
    return max(16, triton.next_power_of_2(width))


def _precision(dtype: torch.dtype) -> str:
    """Exact fp32 products for fp32 tensors (the CPU tests); bf16 needs no choice."""
    return "ieee" if dtype == torch.float32 else "tf32"


def conv_forward(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    length: int,
    positions: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``leaky(mask·(conv(x) + b) + residual)`` for every task: ``x`` ``(T, R, C_in)``, ``w``
    ``(T, ·)`` and ``b`` ``(T, C_out)`` views into the parameter rows, ``positions`` ``(T, L)``
    (None: no packing), ``residual`` ``(T, R, C_out)`` or None; returns ``(T, R, C_out)``."""
    tasks, rows, c_in = x.shape
    c_out = b.shape[1]
    out = torch.empty((tasks, rows, c_out), dtype=x.dtype, device=x.device)
    args = (
        x, w, b, x if residual is None else residual, x if positions is None else positions, out,
        rows, length, w.stride(0), c_in, c_out, _block(c_in), _block(c_out),
        residual is not None, positions is not None, NEGATIVE_SLOPE, _precision(x.dtype),
    )  # fmt: skip
    if x.device.type == "cuda":
        grid = lambda meta: (triton.cdiv(rows, meta["BLOCK"] * meta["TILES"]), tasks)  # noqa: E731
        _TUNED["forward"][grid](*args)
    else:
        block, tiles = INTERPRETER_TILES
        _forward[(triton.cdiv(rows, block * tiles), tasks)](*args, BLOCK=block, TILES=tiles)
    return out


def backward(
    x: torch.Tensor,
    e: torch.Tensor,
    w: torch.Tensor,
    length: int,
    positions: torch.Tensor | None = None,
    extra: torch.Tensor | None = None,
    error_below: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A layer's backward: fp32 gradients of its weights ``(T, C_out·C_in·3)`` and biases ``(T,
    C_out)``, from its input ``x`` ``(T, R, C_in)`` and error ``e`` ``(T, R, C_out)``, and, if
    ``error_below``, the error ``(convᵀ(e) + extra)·leaky'(x)·mask`` of the layer whose output
    ``x`` was this layer's input (else None)."""
    tasks, rows, c_in = x.shape
    c_out = e.shape[2]
    cuda = x.device.type == "cuda"
    if cuda:
        short, long = BACKWARD_ROWS
        rows_per_program = long if tasks * triton.cdiv(rows, long) >= BACKWARD_PROGRAMS else short
    else:
        block, tiles = INTERPRETER_TILES
        rows_per_program = block * tiles
    splits = triton.cdiv(rows, rows_per_program)
    size = c_out * c_in * 3
    part = torch.empty((tasks, splits, size + c_out), dtype=torch.float32, device=x.device)
    out = torch.empty_like(x) if error_below else None
    args = (
        e, w, x, x if extra is None else extra, x if positions is None else positions,
        x if out is None else out, part, rows, length, w.stride(0), splits, c_in, c_out,
        _block(c_in), _block(c_out), error_below, extra is not None, positions is not None,
        NEGATIVE_SLOPE, _precision(x.dtype),
    )  # fmt: skip
    if cuda:
        _TUNED["backward"][(splits, tasks)](*args, ROWS=rows_per_program)
    else:
        _backward[(splits, tasks)](*args, BLOCK=block, ROWS=rows_per_program)
    total = part.sum(dim=1)
    return total[:, :size], total[:, size:], out
