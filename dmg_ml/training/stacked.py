"""The stacked network: ``T`` per-gene CNNs as one set of tensors, and their forward passes.

``ParamLayout`` places each task's parameters in a row of a flat ``(T, P)`` buffer, its shapes
read off ``AdaptiveRegressionCNN`` itself; the forward passes compute every task's predictions
from such rows with ``grouped`` convolutions, tasks ``looped`` one by one, or batched ``matmul``s
(the GPU's without Triton, which also take windows of unequal length packed into one layout);
the GPU's default, the ``fused`` Triton trunk, is ``dmg_ml.training.fused``. ``initial_row``
draws a task's initial weights straight into its row. The trainer that updates the rows is
``dmg_ml.training.batched``; its docstring says why each choice was made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from dmg_ml.models.cnn import HIDDEN_UNITS, NEGATIVE_SLOPE, AdaptiveRegressionCNN

FC1 = "fc1.weight"
#: The module's convolution trunk as a table every stacked path walks: each layer's name, and
#: which earlier activation it adds back before its LeakyReLU (0 is the input, ``i`` the output
#: of layer ``i``), if any. Layer ``i`` reads activation ``i - 1``.
TRUNK = (
    ("conv1", None),
    ("res1.conv1", None),
    ("res1.conv2", 1),
    ("conv2", None),
    ("res2.conv1", None),
    ("res2.conv2", 4),
)
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


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@lru_cache(maxsize=1024)
def _stored_shapes(input_size: int, channels: str, align: int = 1) -> dict[str, tuple[int, ...]]:
    """Each parameter's shape as stored in a row, read off the module (built on the meta device,
    so the network is defined once): the module's own, except ``fc1.weight``, kept as
    ``(512, L, c2)``, i.e. in the channels-last flatten order of its input, and the channel
    widths rounded up to a multiple of ``align`` (the first convolution's single input channel
    stays one)."""
    with torch.device("meta"):
        model = AdaptiveRegressionCNN(input_size, channels)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    for name, shape in shapes.items():
        if name == FC1:
            hidden, features = shape
            shapes[name] = (hidden, input_size, round_up(features // input_size, align))
        elif name.endswith(".bias") and name.startswith(("conv", "res")):
            shapes[name] = (round_up(shape[0], align),)
        elif name.endswith(".weight") and name.startswith(("conv", "res")):
            c_in = shape[1] if name == "conv1.weight" else round_up(shape[1], align)
            shapes[name] = (round_up(shape[0], align), c_in, shape[2])
    return shapes


class ParamLayout:
    """Where each parameter of one task sits in a row of the flat ``(T, P)`` buffer.

    A layout is that of the model for ``input_size`` CpGs. A task with a shorter window (tasks
    of nearby lengths packed into one group) sits in the leading corner of every parameter: its
    channels first, its positions first. The rest of its row is zero and stays zero, because
    padded positions are masked to zero after every convolution (``_forward_matmul``), so every
    gradient reaching a padded weight is exactly zero and Adam leaves it where it is.

    ``align`` (8 for the GPU's matmul kernels) rounds channel widths up and starts every
    parameter at a multiple of it, so that bfloat16 matrices meet the tensor cores' 16-byte
    alignment; the extra channels are padding of the same kind.
    """

    def __init__(self, input_size: int, channels: str, align: int = 1) -> None:
        self.input_size, self.channels = input_size, channels
        self.shapes = _stored_shapes(input_size, channels, align)
        self.c1, self.c2 = self.shapes["conv1.bias"][0], self.shapes[FC1][2]
        self.names = list(self.shapes)
        self.numels = [math.prod(s) for s in self.shapes.values()]
        self.sizes = [round_up(n, align) for n in self.numels]
        self.size = sum(self.sizes)

    def views(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each parameter's slice of a row ``(P,)`` or rows ``(T, P)`` (views, flat layout)."""
        parts = row.split(self.sizes, dim=-1)
        return {
            name: part[..., :numel]
            for name, part, numel in zip(self.names, parts, self.numels, strict=True)
        }

    def to_row(
        self, state: dict[str, torch.Tensor], out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """A reference ``state_dict`` (of a window up to ``input_size`` long) as one row, written
        into ``out`` (zeros; default a new one)."""
        row = torch.zeros(self.size) if out is None else out
        c2 = state["conv2.bias"].numel()
        for name, target in self.views(row).items():
            value = state[name].detach().to("cpu", torch.float32)
            if name == FC1:
                value = value.view(value.shape[0], c2, -1).transpose(1, 2)
            target.view(self.shapes[name])[_corner(value.shape)] = value
        return row

    def to_state(self, row: torch.Tensor, input_size: int | None = None) -> dict[str, torch.Tensor]:
        """Inverse of ``to_row``: the ``state_dict`` (CPU tensors) of the model for
        ``input_size`` CpGs (default: the layout's) held in ``row``."""
        own = _stored_shapes(input_size or self.input_size, self.channels)
        state = {}
        for name, part in self.views(row.detach().cpu()).items():
            block = part.view(self.shapes[name])[_corner(own[name])]
            if name == FC1:
                block = block.transpose(1, 2).reshape(block.shape[0], -1)
            state[name] = block.clone()
        return state

    def initial_row(
        self, input_size: int, seed: int, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``to_row(init_model(input_size, channels, seed).state_dict())``, drawn straight into
        the row ``out`` (zeros; default a new one): PyTorch's default initialisation of every
        ``Conv1d`` and ``Linear`` (what their ``reset_parameters`` does: kaiming-uniform weights
        with ``a=√5``, biases uniform in ±1/√fan_in), in the module's parameter order, from a
        generator seeded with ``seed``, so the values are the same to the bit (a test holds it to
        that). No module is built and the global RNG is not touched, so tasks can be drawn in
        threads of their own."""
        generator = torch.Generator().manual_seed(seed)
        state, bound = {}, 0.0
        for name, shape in _stored_shapes(input_size, self.channels).items():
            if name.endswith(".weight"):
                own = (shape[0], shape[1] * shape[2]) if name == FC1 else shape
                state[name] = nn.init.kaiming_uniform_(torch.empty(own), a=math.sqrt(5),
                                                       generator=generator)  # fmt: skip
                bound = 1 / math.sqrt(state[name][0].numel())
            else:
                state[name] = nn.init.uniform_(torch.empty(shape), -bound, bound,
                                               generator=generator)  # fmt: skip
        return self.to_row(state, out)


def _corner(shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(0, n) for n in shape)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    """In place: saves an allocation. Never on a view (autograd would copy the whole base)."""
    return F.leaky_relu_(x, NEGATIVE_SLOPE)


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
        acts.append(_lrelu(out if residual is None else out.add_(acts[residual])))
    return acts[-1]


def dense(p: dict[str, torch.Tensor], h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense layers of every task on its flattened trunk output ``(T, N, L·c2)``: the hidden
    layer ``(T, N, 512)`` after LeakyReLU (the fused backward reads it) and predictions
    ``(T, N)``."""
    tasks = h.shape[0]
    w1 = p[FC1].view(tasks, HIDDEN_UNITS, -1).transpose(1, 2)
    hidden = _lrelu(torch.baddbmm(p["fc1.bias"].unsqueeze(1), h, w1))
    w2 = p["fc2.weight"].view(tasks, HIDDEN_UNITS, 1)
    return hidden, torch.baddbmm(p["fc2.bias"].view(tasks, 1, 1), hidden, w2).squeeze(-1)


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
    h = _lrelu(h.view(tasks, n, length, c1).permute(1, 2, 0, 3).reshape(n, length, tasks * c1))
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
    h = _lrelu(torch.addmm(p["conv1.bias"], u.view(n * length, 3), w0))
    h = _trunk(conv, _nhwc(h.view(n, length, layout.c1)))
    h = h.permute(0, 2, 3, 1).reshape(n, length * layout.c2)
    h = _lrelu(F.linear(h, p["fc1.weight"].view(HIDDEN_UNITS, -1), p["fc1.bias"]))
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
    h = _lrelu(masked(_chunked_matmul(u, w0, p["conv1.bias"], chunks)))
    h = _trunk(conv, h).reshape(tasks, n, length * layout.c2)
    return dense(p, h)[1]


def task_losses(pred: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Every task's weighted squared error ``(..., N) → (...)`` (fp32): with weights ``1/n_t``
    on a task's real rows and 0 on padding, its mean squared error."""
    return ((pred.float() - y) ** 2 * weight).sum(dim=-1)


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
        from dmg_ml.training import fused  # needs Triton, so only when asked for

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
