"""The stacked network: ``T`` per-gene CNNs as one set of tensors, and their forward passes.

``ParamLayout`` places each task's parameters in a row of a flat ``(T, P)`` buffer, its shapes
read off ``AdaptiveRegressionCNN`` itself; it lives in ``dmg_ml.training.layout``, with the trunk
table, the dense layers and the loss that every path shares. The forward passes compute every
task's predictions from such rows with ``grouped`` convolutions, tasks ``looped`` one by one, or
batched ``matmul``s (the GPU's without Triton, which also take windows of unequal length packed
into one layout); the GPU's default, the ``fused`` Triton trunk, is ``dmg_ml.training.fused``.
``initial_row`` draws a task's initial weights straight into its row. The trainer that updates
the rows is ``dmg_ml.training.batched``; its docstring says why each choice was made.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from dmg_ml.models.cnn import HIDDEN_UNITS
from dmg_ml.training.layout import TRUNK, ParamLayout, dense, lrelu_, task_losses
from dmg_ml.training.layout import round_up as round_up  # re-exported: batched imports it here

#: Rows (sample, position pairs) per matmul of a chunked convolution (``_chunked_matmul``).
CHUNK_ROWS = 8192
#: The matmul kernels' alignment: channel widths, parameter offsets and sample counts are
#: rounded up to multiples of it (bfloat16 tensor cores want 16-byte aligned matrices).
MATMUL_ALIGN = 8
#: The fused Triton kernels' alignment: Triton specialises integer arguments that are multiples
#: of 16, and only then knows that a row's channels can be loaded and stored in 16-byte vectors.
FUSED_ALIGN = 16
#: How a stack of tasks runs (``stacked_forward``; ``fused``: ``dmg_ml.training.fused``).
Kernels = Literal["grouped", "looped", "matmul", "fused"]
KERNELS: tuple[Kernels, ...] = get_args(Kernels)
#: The kernels that take windows of unequal length packed into one layout.
PACKING_KERNELS: tuple[Kernels, ...] = ("matmul", "fused")


def kernel_align(kernels: Kernels) -> int:
    """What ``kernels`` round channel widths, parameter offsets and sample counts up to."""
    return {"matmul": MATMUL_ALIGN, "fused": FUSED_ALIGN}.get(kernels, 1)


def check_packing(kernels: Kernels) -> None:
    if kernels not in PACKING_KERNELS:
        raise ValueError(f"windows of unequal length are packed only by {PACKING_KERNELS}")


def _nhwc(h: torch.Tensor) -> torch.Tensor:
    """View ``(N, L, C)`` memory as an ``(N, C, 1, L)`` channels-last tensor (no copy)."""
    n, length, c = h.shape
    return h.view(n, 1, length, c).permute(0, 3, 1, 2)


def unfold_input(x: torch.Tensor) -> torch.Tensor:
    """``(T, N, L)`` rows → ``(T, N, L, 3)`` windows ``x[l-1], x[l], x[l+1]`` (zero padded).

    The first convolution has one input channel, so it is a small matmul on these windows; they
    are built once per data set rather than once per epoch.
    """
    padded = F.pad(x, (1, 1))
    return torch.stack([padded[..., :-2], padded[..., 1:-1], padded[..., 2:]], dim=-1)


def _conv(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, groups: int) -> torch.Tensor:
    """k=3, pad=1 convolution of channels-last ``h`` with flat weights ``w`` (grouped by task)."""
    weight = w.reshape(b.numel(), -1, 1, 3)
    return F.conv2d(h, weight, b.reshape(-1), padding=(0, 1), groups=groups)


def _trunk(conv, h: torch.Tensor) -> torch.Tensor:
    """Everything between the first convolution (its activation ``h``) and the dense layers."""
    acts = [None, h]
    for name, residual in TRUNK[1:]:
        out = conv(name, acts[-1])
        acts.append(lrelu_(out if residual is None else out.add_(acts[residual])))
    return acts[-1]


def forward_grouped(
    layout: ParamLayout, p: dict[str, torch.Tensor], u: torch.Tensor
) -> torch.Tensor:
    """All tasks in one kernel per layer; task ``t`` owns channels ``[t·c, (t+1)·c)``.

    ``p`` maps names to ``(T, numel)`` parameter rows; returns ``(T, N)``.
    """
    tasks, n, length, _ = u.shape
    c1, c2 = layout.c1, layout.c2

    def conv(name: str, h: torch.Tensor) -> torch.Tensor:
        return _conv(h, p[f"{name}.weight"], p[f"{name}.bias"], tasks)

    w0 = p["conv1.weight"].view(tasks, c1, 3).transpose(1, 2)
    h = torch.baddbmm(p["conv1.bias"].unsqueeze(1), u.view(tasks, n * length, 3), w0)
    h = lrelu_(h.view(tasks, n, length, c1).permute(1, 2, 0, 3).reshape(n, length, tasks * c1))
    h = _trunk(conv, _nhwc(h))
    # NHWC memory is (N, L, T, c2): regroup by task, flattened position-major.
    h = h.permute(0, 2, 3, 1).reshape(n, length, tasks, c2)
    h = h.permute(2, 0, 1, 3).reshape(tasks, n, length * c2)
    return dense(p, h)[1]


def forward_single(
    layout: ParamLayout, p: dict[str, torch.Tensor], u: torch.Tensor
) -> torch.Tensor:
    """One task: ``p`` maps names to flat parameters, ``u`` is ``(N, L, 3)``; returns ``(N,)``."""
    n, length, _ = u.shape

    def conv(name: str, h: torch.Tensor) -> torch.Tensor:
        return _conv(h, p[f"{name}.weight"], p[f"{name}.bias"], 1)

    w0 = p["conv1.weight"].view(layout.c1, 3).t()
    h = lrelu_(torch.addmm(p["conv1.bias"], u.view(n * length, 3), w0))
    h = _trunk(conv, _nhwc(h.view(n, length, layout.c1)))
    h = h.permute(0, 2, 3, 1).reshape(n, length * layout.c2)
    h = lrelu_(F.linear(h, p["fc1.weight"].view(HIDDEN_UNITS, -1), p["fc1.bias"]))
    return F.linear(h, p["fc2.weight"].view(1, HIDDEN_UNITS), p["fc2.bias"]).squeeze(-1)


def sample_chunks(n: int, length: int) -> int:
    """Into how many chunks the ``n`` samples are cut for the matmuls of the convolutions: the
    most that leave each chunk ``CHUNK_ROWS`` (sample, position) rows or more."""
    return _chunks(n, length, CHUNK_ROWS)


@lru_cache(maxsize=4096)
def _chunks(n: int, length: int, rows: int) -> int:
    fits = (s for s in range(1, n + 1) if n % s == 0 and (n // s) * length >= rows)
    return max(fits, default=1)


def _chunked_matmul(a: torch.Tensor, w: torch.Tensor, b: torch.Tensor, chunks: int) -> torch.Tensor:
    """``a @ w + b`` for every task: ``a`` ``(T, N, L, K)``, ``w`` ``(T, K, C)``, ``b`` ``(T, C)``;
    ``chunks`` (``sample_chunks``) divides ``N``.

    The samples are cut into chunks that are matmuls of their own, sharing the task's weights,
    so the weight gradient is a sum of ``T·chunks`` short products rather than ``T`` products
    over all ``N·L`` rows, which cuBLAS gives to ``T`` thread blocks each (a GPU of 132 SMs then
    idles, and a group's epoch costs about the same for 5 tasks as for 120).
    """
    tasks, n, length, k = a.shape
    out = torch.matmul(a.reshape(tasks, chunks, (n // chunks) * length, k), w.unsqueeze(1))
    return out.add_(b.view(tasks, 1, 1, -1)).view(tasks, n, length, -1)


def _conv_matmul(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, chunks: int) -> torch.Tensor:
    """k=3, pad=1 convolution of every task's ``(N, L, C)`` activations as matmuls on their
    ``(x[l-1], x[l], x[l+1])`` windows; ``w``/``b`` are ``(T, numel)`` rows."""
    tasks, n, length, c_in = h.shape
    c_out = b.shape[1]
    windows = F.pad(h, (0, 0, 1, 1)).unfold(2, 3, 1).reshape(tasks, n, length, c_in * 3)
    return _chunked_matmul(windows, w.view(tasks, c_out, c_in * 3).transpose(1, 2), b, chunks)


def _forward_matmul(
    layout: ParamLayout,
    p: dict[str, torch.Tensor],
    u: torch.Tensor,
    positions: torch.Tensor | None = None,
    chunks: int | None = None,
) -> torch.Tensor:
    """All tasks as batched matmuls over ``(T, N, L, C)`` activations (cuBLAS on a GPU, where
    grouped convolutions are slow). ``positions`` ``(T, 1, L, 1)`` is 1 on each task's own
    positions and 0 on the padding of shorter windows packed into the group (None: no padding);
    every convolution's output is masked with it, so padding reads as the zeros a task's own
    convolution pads with."""
    tasks, n, length, _ = u.shape
    chunks = chunks or sample_chunks(n, length)

    def masked(h: torch.Tensor) -> torch.Tensor:
        return h if positions is None else h.mul_(positions)

    def conv(name: str, h: torch.Tensor) -> torch.Tensor:
        return masked(_conv_matmul(h, p[f"{name}.weight"], p[f"{name}.bias"], chunks))

    w0 = p["conv1.weight"].view(tasks, layout.c1, 3).transpose(1, 2)
    h = lrelu_(masked(_chunked_matmul(u, w0, p["conv1.bias"], chunks)))
    h = _trunk(conv, h).reshape(tasks, n, length * layout.c2)
    return dense(p, h)[1]


def matmul_losses(
    layout: ParamLayout,
    flat: torch.Tensor,
    u: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    positions: torch.Tensor | None,
    chunks: int,
) -> torch.Tensor:
    """Every task's weighted squared error ``(T,)`` under the matmul kernels."""
    return task_losses(_forward_matmul(layout, layout.views(flat), u, positions, chunks), y, weight)


@lru_cache(maxsize=1)
def compiled_matmul_losses():
    """``matmul_losses`` through ``torch.compile`` (Inductor fuses the masks, activations,
    residuals and window copies around the matmuls into few kernels); built on first use, and
    compiled again for each new group shape."""
    return torch.compile(matmul_losses, dynamic=True)


def stacked_forward(
    layout: ParamLayout,
    flat: torch.Tensor,
    u: torch.Tensor,
    kernels: Kernels = "grouped",
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Predictions ``(T, N)`` of ``T`` stacked networks.

    ``flat`` holds one parameter row per task, in the dtype to compute in; ``u`` is the
    ``unfold_input`` of the tasks' rows ``(T, N, L)``. ``kernels`` picks how the stack runs
    (same arithmetic, different speed): ``grouped`` convolutions, tasks ``looped`` one by one,
    batched ``matmul``s, or ``fused`` Triton kernels (``dmg_ml.training.fused``); the last two
    take packed windows of unequal length (``positions``, see ``_forward_matmul``).
    """
    p = layout.views(flat)
    if kernels == "fused":
        from dmg_ml.training import fused  # loads Triton: only when the fused kernels run

        return fused.forward(layout, flat, u[..., 1].contiguous(), positions)  # the rows
    if kernels == "matmul":
        return _forward_matmul(layout, p, u, positions)
    if positions is not None:
        check_packing(kernels)
    if kernels == "grouped":
        return forward_grouped(layout, p, u)
    return torch.stack(
        [forward_single(layout, layout.views(row), u[t]) for t, row in enumerate(flat)]
    )
