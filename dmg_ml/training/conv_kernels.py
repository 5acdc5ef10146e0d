"""Triton kernels of the fused convolution trunk (``dmg_ml.training.fused``).

Every layer of the trunk is a k=3, pad=1 convolution of ``T`` tasks' channels-last activations
``(T, R, C)`` (``R = N·L`` rows, a sample's ``L`` positions consecutive), followed by bias, the
packing mask, an optional residual and LeakyReLU. Each kernel reads its shifted rows
``x[l-1], x[l], x[l+1]`` in place (no window copies) and does its elementwise work in the
matmul's epilogue, so a layer's forward moves its input and output through memory once, and its
backward its error, input and output about twice:

* ``_forward``: ``out = leaky(mask·(conv(x) + b) + res)``.
* ``_input_error``: the error of the layer below, ``(convᵀ(e) + extra)·leaky'(x)·mask``, where
  ``leaky'`` is read off the stored activation ``x`` (its sign is that of the pre-activation).
* ``_weight_grad``: ``Σ_rows x[r-1+k]ᵀ e[r]`` and ``Σ_rows e[r]``, each program summing a slice of
  the rows into its own fp32 partial (summed afterwards: deterministic, no atomics).

A program loads its task's weights once and runs over ``TILES`` tiles of rows in a loop that
Triton can pipeline; tile sizes, persistence and warps are tuned on the GPU (``_TUNED``).

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

#: Rows per tile of the weight gradient on a GPU (the row kernels' tiles are tuned: ``_TUNED``).
WEIGHT_GRAD_BLOCK = 128
#: (rows per tile, tiles per program) of every kernel on CPU tensors, under Triton's interpreter,
#: whose cost is per operation of each program: one program per task at the tests' sizes.
INTERPRETER_TILES = (1024, 1)
#: Programs the weight gradient aims for (a few waves of an H100/H200's 132 SMs).
WEIGHT_GRAD_PROGRAMS = 1024


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
def _input_error(
    e_ptr, w_ptr, x_ptr, extra_ptr, pos_ptr, out_ptr, R, L, P,
    CIN, COUT, BCI: tl.constexpr, BCO: tl.constexpr,
    HAS_EXTRA: tl.constexpr, HAS_POS: tl.constexpr, SLOPE: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK: tl.constexpr, TILES: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(1).to(tl.int64)
    ci, co = tl.arange(0, BCI), tl.arange(0, BCO)
    ci_ok, co_ok = ci < CIN, co < COUT
    e_base, w_base = e_ptr + t * R * COUT, w_ptr + t * P
    w_off = (co[:, None] * CIN + ci[None, :]) * 3
    w_ok = co_ok[:, None] & ci_ok[None, :]
    w0 = tl.load(w_base + w_off, mask=w_ok, other=0.0)
    w1 = tl.load(w_base + w_off + 1, mask=w_ok, other=0.0)
    w2 = tl.load(w_base + w_off + 2, mask=w_ok, other=0.0)
    for i in range(TILES):
        rows = (tl.program_id(0) * TILES + i) * BLOCK + tl.arange(0, BLOCK)
        row_ok = rows < R
        pos = rows % L
        e_ok = row_ok[:, None] & co_ok[None, :]
        e = e_base + rows[:, None] * COUT + co[None, :]
        # y[r] = Σ_k x[r-1+k]·W_k, so x[r] meets e[r+1] through W_0 and e[r-1] through W_2.
        e0 = tl.load(e + COUT, mask=e_ok & (pos + 1 < L)[:, None], other=0.0)
        e1 = tl.load(e, mask=e_ok, other=0.0)
        e2 = tl.load(e - COUT, mask=e_ok & (pos >= 1)[:, None], other=0.0)
        acc = tl.dot(e0, w0, input_precision=PRECISION)
        acc = tl.dot(e1, w1, acc, input_precision=PRECISION)
        acc = tl.dot(e2, w2, acc, input_precision=PRECISION)
        off = t * R * CIN + rows[:, None] * CIN + ci[None, :]
        ok = row_ok[:, None] & ci_ok[None, :]
        if HAS_EXTRA:
            acc += tl.load(extra_ptr + off, mask=ok, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + off, mask=ok, other=0.0).to(tl.float32)
        acc = tl.where(x > 0, acc, acc * SLOPE)
        if HAS_POS:
            acc *= tl.load(pos_ptr + t * L + pos, mask=row_ok, other=0.0).to(tl.float32)[:, None]
        tl.store(out_ptr + off, acc.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _weight_grad(
    x_ptr, e_ptr, part_ptr, R, L, SPLITS,
    CIN, COUT, BCI: tl.constexpr, BCO: tl.constexpr,
    BLOCK: tl.constexpr, TILES: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Each program sums ``TILES`` consecutive tiles of ``BLOCK`` rows of one task."""
    s = tl.program_id(0)
    t = tl.program_id(1).to(tl.int64)
    ci, co = tl.arange(0, BCI), tl.arange(0, BCO)
    ci_ok, co_ok = ci < CIN, co < COUT
    x_base, e_base = x_ptr + t * R * CIN, e_ptr + t * R * COUT
    acc0 = tl.zeros((BCI, BCO), dtype=tl.float32)
    acc1 = tl.zeros((BCI, BCO), dtype=tl.float32)
    acc2 = tl.zeros((BCI, BCO), dtype=tl.float32)
    bias = tl.zeros((BCO,), dtype=tl.float32)
    for i in range(TILES):
        rows = (s * TILES + i) * BLOCK + tl.arange(0, BLOCK)
        row_ok = rows < R
        pos = rows % L
        e = tl.load(e_base + rows[:, None] * COUT + co[None, :],
                    mask=row_ok[:, None] & co_ok[None, :], other=0.0)  # fmt: skip
        bias += tl.sum(e.to(tl.float32), axis=0)
        x_ok = row_ok[:, None] & ci_ok[None, :]
        x = x_base + rows[:, None] * CIN + ci[None, :]
        x0 = tl.load(x - CIN, mask=x_ok & (pos >= 1)[:, None], other=0.0)
        x1 = tl.load(x, mask=x_ok, other=0.0)
        x2 = tl.load(x + CIN, mask=x_ok & (pos + 1 < L)[:, None], other=0.0)
        acc0 = tl.dot(tl.trans(x0), e, acc0, input_precision=PRECISION)
        acc1 = tl.dot(tl.trans(x1), e, acc1, input_precision=PRECISION)
        acc2 = tl.dot(tl.trans(x2), e, acc2, input_precision=PRECISION)
    part = part_ptr + (t * SPLITS + s) * (COUT * CIN * 3 + COUT)
    w_off = (co[None, :] * CIN + ci[:, None]) * 3
    w_ok = ci_ok[:, None] & co_ok[None, :]
    tl.store(part + w_off, acc0, mask=w_ok)
    tl.store(part + w_off + 1, acc1, mask=w_ok)
    tl.store(part + w_off + 2, acc2, mask=w_ok)
    tl.store(part + COUT * CIN * 3 + co, bias, mask=co_ok)


@triton.jit
def _backward(
    e_ptr, w_ptr, x_ptr, extra_ptr, pos_ptr, out_ptr, part_ptr, R, L, P, SPLITS,
    CIN, COUT, BCI: tl.constexpr, BCO: tl.constexpr, INPUT_ERROR: tl.constexpr,
    HAS_EXTRA: tl.constexpr, HAS_POS: tl.constexpr, SLOPE: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr,
):  # fmt: skip
    """A layer's whole backward on ``ROWS`` consecutive rows of one task, in tiles of ``BLOCK``:
    the weight and bias gradients' fp32 partial sums over them and, if ``INPUT_ERROR``, the error
    of the layer below on them. Its input ``x`` and error ``e`` are read from memory once for
    both (``_weight_grad`` and ``_input_error`` each read both): the weight gradient
    ``Σ_r x[r-1+k]ᵀ e[r]`` is summed as ``Σ_r x[r]ᵀ e[r+1-k]``, on the shifted error rows that
    the input error reads anyway."""
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


#: The row kernels' choices on a GPU, ``(rows per tile, tiles per program, warps)``: few, as each
#: is compiled and timed at the first launch for every pair of channel blocks.
ROW_CONFIGS = ((128, 1, 4), (128, 4, 4), (128, 4, 8), (64, 4, 4))
#: The weight gradient's warps.
WEIGHT_GRAD_WARPS = (4, 8)
#: The fused backward's choices on a GPU, ``(rows per tile, warps)`` (128 rows in 4 warps spill
#: 1.5 KB of registers a thread at 64 channels, compiled for sm_90).
BACKWARD_CONFIGS = ((64, 4), (64, 8), (128, 8))
#: Rows per program of the fused backward on a GPU, a compile-time constant (the interpreter runs
#: no loop of runtime length): each program sums its rows' weight gradient into a partial of its
#: own, so long programs write few partials; the longer choice is taken where a group still has
#: ``BACKWARD_PROGRAMS`` of them (a few waves of 132 SMs).
BACKWARD_ROWS = (512, 4096)
BACKWARD_PROGRAMS = 1024
#: The backward as one kernel per layer (``_backward``) or as two (``_weight_grad`` and
#: ``_input_error``), kept while the GPU benchmark compares them.
FUSED_BACKWARD = True


def tuned_kernels(row_configs=ROW_CONFIGS, weight_grad_warps=WEIGHT_GRAD_WARPS) -> dict:
    """The kernels as ``triton.autotune`` runs them on a GPU: each choice timed at the first
    launch for a pair of channel blocks, the fastest kept, and its timings cached on disk with
    Triton's compiled kernels, so later processes on the machine (a run per partition) neither
    compile nor tune again. On an H200, compiling and tuning took most of a process's first
    minute (issue 10's note)."""
    rows = [
        triton.Config({"BLOCK": block, "TILES": tiles}, num_warps=warps, num_stages=3)
        for block, tiles, warps in row_configs
    ]
    weight = [triton.Config({}, num_warps=w, num_stages=3) for w in weight_grad_warps]
    back = [triton.Config({"BLOCK": b}, num_warps=w, num_stages=3) for b, w in BACKWARD_CONFIGS]
    tune = partial(triton.autotune, cache_results=True)
    return {
        "backward": tune(back, key=["BCI", "BCO", "ROWS", "INPUT_ERROR"])(_backward),
        "forward": tune(rows, key=["BCI", "BCO"])(_forward),
        "input_error": tune(rows, key=["BCI", "BCO"])(_input_error),
        "weight_grad": tune(weight, key=["BCI", "BCO", "TILES"])(_weight_grad),
    }


_TUNED = tuned_kernels()


def _block(width: int) -> int:
    return max(16, triton.next_power_of_2(width))


def _precision(dtype: torch.dtype) -> str:
    """Exact fp32 products for fp32 tensors (the CPU tests); bf16 needs no choice."""
    return "ieee" if dtype == torch.float32 else "tf32"


def _launch(name: str, kernel, rows: int, tasks: int, device: torch.device, *args) -> None:
    """A row kernel over ``rows`` rows of ``tasks`` tasks: tuned on a GPU, ``INTERPRETER_TILES``
    under the interpreter."""
    if device.type == "cuda":
        grid = lambda meta: (triton.cdiv(rows, meta["BLOCK"] * meta["TILES"]), tasks)  # noqa: E731
        _TUNED[name][grid](*args)
        return
    block, tiles = INTERPRETER_TILES
    kernel[(triton.cdiv(rows, block * tiles), tasks)](*args, BLOCK=block, TILES=tiles)


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
    _launch(
        "forward", _forward, rows, tasks, x.device,
        x, w, b, x if residual is None else residual, x if positions is None else positions, out,
        rows, length, w.stride(0), c_in, c_out, _block(c_in), _block(c_out),
        residual is not None, positions is not None, NEGATIVE_SLOPE, _precision(x.dtype),
    )  # fmt: skip
    return out


def input_error(
    e: torch.Tensor,
    w: torch.Tensor,
    x: torch.Tensor,
    length: int,
    positions: torch.Tensor | None = None,
    extra: torch.Tensor | None = None,
) -> torch.Tensor:
    """The error ``(convᵀ(e) + extra)·leaky'(x)·mask`` of the layer whose output ``x`` ``(T, R,
    C_in)`` was this layer's input; ``e`` ``(T, R, C_out)`` is this layer's error."""
    tasks, rows, c_in = x.shape
    c_out = e.shape[2]
    out = torch.empty_like(x)
    _launch(
        "input_error", _input_error, rows, tasks, x.device,
        e, w, x, x if extra is None else extra, x if positions is None else positions, out,
        rows, length, w.stride(0), c_in, c_out, _block(c_in), _block(c_out),
        extra is not None, positions is not None, NEGATIVE_SLOPE, _precision(x.dtype),
    )  # fmt: skip
    return out


def weight_grad(x: torch.Tensor, e: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 gradients ``(T, C_out·C_in·3)`` of the weights (``(C_out, C_in, 3)`` order) and
    ``(T, C_out)`` of the biases, of a layer with input ``x`` and error ``e``."""
    tasks, rows, c_in = x.shape
    c_out = e.shape[2]
    block = WEIGHT_GRAD_BLOCK if x.device.type == "cuda" else INTERPRETER_TILES[0]
    blocks = triton.cdiv(rows, block)
    tiles = triton.next_power_of_2(triton.cdiv(blocks, max(1, WEIGHT_GRAD_PROGRAMS // tasks)))
    splits = triton.cdiv(blocks, tiles)
    size = c_out * c_in * 3
    part = torch.empty((tasks, splits, size + c_out), dtype=torch.float32, device=x.device)
    kernel = _TUNED["weight_grad"] if x.device.type == "cuda" else _weight_grad
    kernel[(splits, tasks)](
        x, e, part, rows, length, splits, c_in, c_out, _block(c_in), _block(c_out),
        block, tiles, _precision(x.dtype),
    )  # fmt: skip
    total = part.sum(dim=1)
    return total[:, :size], total[:, size:]


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
    ``error_below``, the error of the layer below, as ``input_error`` computes it (else None)."""
    if not FUSED_BACKWARD:
        below = input_error(e, w, x, length, positions, extra) if error_below else None
        return (*weight_grad(x, e, length), below)
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
