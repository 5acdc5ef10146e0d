"""What every forward path of the stacked network shares: where each task's parameters sit in
its row of the flat ``(T, P)`` buffer (``ParamLayout``), the convolution trunk as a table
(``TRUNK``), the dense layers and the loss.

The paths themselves are ``dmg_ml.training.stacked`` (grouped, looped and matmul) and
``dmg_ml.training.fused`` (the Triton trunk); both build on this module, and neither on the
other's internals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

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
    padded positions are masked to zero after every convolution (``stacked._forward_matmul``), so
    every gradient reaching a padded weight is exactly zero and Adam leaves it where it is.

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


def lrelu_(x: torch.Tensor) -> torch.Tensor:
    """The module's LeakyReLU, in place: saves an allocation. Never on a view (autograd would
    copy the whole base)."""
    return F.leaky_relu_(x, NEGATIVE_SLOPE)


def dense(p: dict[str, torch.Tensor], h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense layers of every task on its flattened trunk output ``(T, N, L·c2)``: the hidden
    layer ``(T, N, 512)`` after LeakyReLU (the fused backward reads it) and predictions
    ``(T, N)``."""
    tasks = h.shape[0]
    w1 = p[FC1].view(tasks, HIDDEN_UNITS, -1).transpose(1, 2)
    hidden = lrelu_(torch.baddbmm(p["fc1.bias"].unsqueeze(1), h, w1))
    w2 = p["fc2.weight"].view(tasks, HIDDEN_UNITS, 1)
    return hidden, torch.baddbmm(p["fc2.bias"].view(tasks, 1, 1), hidden, w2).squeeze(-1)


def task_losses(pred: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Every task's weighted squared error ``(..., N) → (...)`` (fp32): with weights ``1/n_t``
    on a task's real rows and 0 on padding, its mean squared error."""
    return ((pred.float() - y) ** 2 * weight).sum(dim=-1)
