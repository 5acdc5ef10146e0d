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

Weights and biases are read from the tasks' parameter rows (stride ``P``) in the ``ParamLayout``
order ``(C_out, C_in, 3)``; stored widths may be any size, the blocks are the next power of two
(at least 16, the tensor cores' minimum) with the excess masked; only the blocks are compile-time
constants, so a cohort's many widths share a few compiled kernels. On CPU the kernels run under
Triton's interpreter (``TRITON_INTERPRET=1``), which is how the tests check them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dmg_ml.models.cnn import NEGATIVE_SLOPE

#: Rows per program on a GPU; on CPU tensors (Triton's interpreter, whose cost is per operation
#: of each program) as many as make one program per task of the tests' sizes.
BLOCK_ROWS = {"cuda": 128, "cpu": 1024}
#: Programs the weight gradient aims for (a few waves of an H100/H200's 132 SMs).
WEIGHT_GRAD_PROGRAMS = 1024


@triton.jit
def _forward(
    x_ptr, w_ptr, b_ptr, res_ptr, pos_ptr, out_ptr, R, L, P,
    CIN, COUT, BCI: tl.constexpr, BCO: tl.constexpr,
    HAS_RES: tl.constexpr, HAS_POS: tl.constexpr, BLOCK: tl.constexpr, SLOPE: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    row_ok = rows < R
    pos = rows % L
    ci, co = tl.arange(0, BCI).to(tl.int64), tl.arange(0, BCO).to(tl.int64)
    ci_ok, co_ok = ci < CIN, co < COUT
    x_base, w_base = x_ptr + t * R * CIN, w_ptr + t * P
    acc = tl.zeros((BLOCK, BCO), dtype=tl.float32)
    for k in tl.static_range(3):
        ok = row_ok & (pos + k - 1 >= 0) & (pos + k - 1 < L)
        xk = tl.load(x_base + (rows + k - 1)[:, None] * CIN + ci[None, :],
                     mask=ok[:, None] & ci_ok[None, :], other=0.0)  # fmt: skip
        wk = tl.load(w_base + (co[None, :] * CIN + ci[:, None]) * 3 + k,
                     mask=ci_ok[:, None] & co_ok[None, :], other=0.0)  # fmt: skip
        acc += tl.dot(xk, wk, input_precision=PRECISION)
    acc += tl.load(b_ptr + t * P + co, mask=co_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_POS:
        acc *= tl.load(pos_ptr + t * L + pos, mask=row_ok, other=0.0).to(tl.float32)[:, None]
    out_off = t * R * COUT + rows[:, None] * COUT + co[None, :]
    out_ok = row_ok[:, None] & co_ok[None, :]
    if HAS_RES:
        acc += tl.load(res_ptr + out_off, mask=out_ok, other=0.0).to(tl.float32)
    acc = tl.where(acc > 0, acc, acc * SLOPE)
    tl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=out_ok)


@triton.jit
def _input_error(
    e_ptr, w_ptr, x_ptr, extra_ptr, pos_ptr, out_ptr, R, L, P,
    CIN, COUT, BCI: tl.constexpr, BCO: tl.constexpr,
    HAS_EXTRA: tl.constexpr, HAS_POS: tl.constexpr, BLOCK: tl.constexpr, SLOPE: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    row_ok = rows < R
    pos = rows % L
    ci, co = tl.arange(0, BCI).to(tl.int64), tl.arange(0, BCO).to(tl.int64)
    ci_ok, co_ok = ci < CIN, co < COUT
    e_base, w_base = e_ptr + t * R * COUT, w_ptr + t * P
    acc = tl.zeros((BLOCK, BCI), dtype=tl.float32)
    for k in tl.static_range(3):
        ok = row_ok & (pos + 1 - k >= 0) & (pos + 1 - k < L)
        ek = tl.load(e_base + (rows + 1 - k)[:, None] * COUT + co[None, :],
                     mask=ok[:, None] & co_ok[None, :], other=0.0)  # fmt: skip
        wk = tl.load(w_base + (co[:, None] * CIN + ci[None, :]) * 3 + k,
                     mask=co_ok[:, None] & ci_ok[None, :], other=0.0)  # fmt: skip
        acc += tl.dot(ek, wk, input_precision=PRECISION)
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
    x_ptr, e_ptr, part_ptr, R, L, SPAN, SPLITS,
    CIN, COUT, BCI: tl.constexpr, BCO: tl.constexpr,
    BLOCK: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    s = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1).to(tl.int64)
    ci, co = tl.arange(0, BCI).to(tl.int64), tl.arange(0, BCO).to(tl.int64)
    ci_ok, co_ok = ci < CIN, co < COUT
    x_base, e_base = x_ptr + t * R * CIN, e_ptr + t * R * COUT
    acc0 = tl.zeros((BCI, BCO), dtype=tl.float32)
    acc1 = tl.zeros((BCI, BCO), dtype=tl.float32)
    acc2 = tl.zeros((BCI, BCO), dtype=tl.float32)
    bias = tl.zeros((BCO,), dtype=tl.float32)
    start = s * SPAN
    while start < s * SPAN + SPAN:  # SPAN: a multiple of BLOCK
        rows = start + tl.arange(0, BLOCK)
        row_ok = rows < R
        pos = rows % L
        e = tl.load(e_base + rows[:, None] * COUT + co[None, :],
                    mask=row_ok[:, None] & co_ok[None, :], other=0.0)  # fmt: skip
        bias += tl.sum(e.to(tl.float32), axis=0)
        ok0 = row_ok & (pos >= 1)
        ok2 = row_ok & (pos + 1 < L)
        x0 = tl.load(x_base + (rows - 1)[:, None] * CIN + ci[None, :],
                     mask=ok0[:, None] & ci_ok[None, :], other=0.0)  # fmt: skip
        x1 = tl.load(x_base + rows[:, None] * CIN + ci[None, :],
                     mask=row_ok[:, None] & ci_ok[None, :], other=0.0)  # fmt: skip
        x2 = tl.load(x_base + (rows + 1)[:, None] * CIN + ci[None, :],
                     mask=ok2[:, None] & ci_ok[None, :], other=0.0)  # fmt: skip
        acc0 += tl.dot(tl.trans(x0), e, input_precision=PRECISION)
        acc1 += tl.dot(tl.trans(x1), e, input_precision=PRECISION)
        acc2 += tl.dot(tl.trans(x2), e, input_precision=PRECISION)
        start += BLOCK
    part = part_ptr + (t * SPLITS + s) * (COUT * CIN * 3 + COUT)
    w_off = (co[None, :] * CIN + ci[:, None]) * 3
    w_ok = ci_ok[:, None] & co_ok[None, :]
    tl.store(part + w_off, acc0, mask=w_ok)
    tl.store(part + w_off + 1, acc1, mask=w_ok)
    tl.store(part + w_off + 2, acc2, mask=w_ok)
    tl.store(part + COUT * CIN * 3 + co, bias, mask=co_ok)


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
    block = BLOCK_ROWS[x.device.type]
    grid = (triton.cdiv(rows, block), tasks)
    _forward[grid](
        x, w, b, x if residual is None else residual, x if positions is None else positions, out,
        rows, length, w.stride(0), c_in, c_out, _block(c_in), _block(c_out),
        residual is not None, positions is not None, block, NEGATIVE_SLOPE,
        _precision(x.dtype),
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
    block = BLOCK_ROWS[x.device.type]
    grid = (triton.cdiv(rows, block), tasks)
    _input_error[grid](
        e, w, x, x if extra is None else extra, x if positions is None else positions, out,
        rows, length, w.stride(0), c_in, c_out, _block(c_in), _block(c_out),
        extra is not None, positions is not None, block, NEGATIVE_SLOPE,
        _precision(x.dtype),
    )  # fmt: skip
    return out


def weight_grad(x: torch.Tensor, e: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 gradients ``(T, C_out·C_in·3)`` of the weights (``(C_out, C_in, 3)`` order) and
    ``(T, C_out)`` of the biases, of a layer with input ``x`` and error ``e``."""
    tasks, rows, c_in = x.shape
    c_out = e.shape[2]
    block = BLOCK_ROWS[x.device.type]
    splits = max(1, min(triton.cdiv(rows, 4 * block), WEIGHT_GRAD_PROGRAMS // tasks))
    span = triton.cdiv(triton.cdiv(rows, splits), block) * block
    splits = triton.cdiv(rows, span)
    size = c_out * c_in * 3
    part = torch.empty((tasks, splits, size + c_out), dtype=torch.float32, device=x.device)
    _weight_grad[(splits, tasks)](
        x, e, part, rows, length, span, splits, c_in, c_out, _block(c_in), _block(c_out),
        block, _precision(x.dtype), num_warps=8,
    )  # fmt: skip
    total = part.sum(dim=1)
    return total[:, :size], total[:, size:]
