"""The stacked network with its convolution trunk in fused Triton kernels (``kernels="fused"``).

The GPU's matmul path (``stacked._forward_matmul``) spends most of an epoch moving activations:
window copies for every convolution, their scatter-add in backward, and a pass each for bias,
mask, residual and LeakyReLU. Here each layer of the trunk is one kernel forward and one
backward (``dmg_ml.training.conv_kernels``), and the backward is written out by hand rather than
recorded by autograd: the trunk's six layers keep only their outputs, from which LeakyReLU's
derivative is read, and each layer's error is computed once, already multiplied by the derivative
and the packing mask of the layer below. The dense layers are the other paths' batched matmuls
(``layout.dense``). Weight gradients are summed in fp32 and written straight into the fp32
gradient buffer.

Same arithmetic as the module, up to rounding; the tests check it on CPU under Triton's
interpreter against the matmul path's autograd.
"""

from __future__ import annotations

import torch

from dmg_ml.models.cnn import HIDDEN_UNITS, NEGATIVE_SLOPE
from dmg_ml.training import conv_kernels as kernels
from dmg_ml.training.layout import FC1, TRUNK, ParamLayout, dense, task_losses

#: Activation → the layer that adds it back (its error joins that activation's error).
ADDED_BY = {residual: i for i, (_, residual) in enumerate(TRUNK, 1) if residual is not None}


def _leaky_grad(g: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return torch.where(out > 0, g, g * NEGATIVE_SLOPE)


def trunk(
    p: dict[str, torch.Tensor], x: torch.Tensor, positions: torch.Tensor | None, keep: bool
) -> list[torch.Tensor | None]:
    """Activations ``(T, N·L, C)`` of the trunk on rows ``x`` ``(T, N, L)``: the input and each
    layer's output. Unless ``keep`` (backward needs them all), each is let go once no later layer
    reads it; the last is always there."""
    tasks, n, length = x.shape
    acts: list[torch.Tensor | None] = [x.reshape(tasks, n * length, 1)]
    for i, (name, residual) in enumerate(TRUNK, 1):
        acts.append(kernels.conv_forward(
            acts[i - 1], p[f"{name}.weight"], p[f"{name}.bias"], length, positions,
            None if residual is None else acts[residual],
        ))  # fmt: skip
        if not keep:
            later = {r for _, r in TRUNK[i:]}
            acts[:i] = [a if j in later else None for j, a in enumerate(acts[:i])]
    return acts


def _positions(positions: torch.Tensor | None) -> torch.Tensor | None:
    """The group's ``(T, 1, L, 1)`` packing mask as the kernels' ``(T, L)``."""
    return None if positions is None else positions.reshape(positions.shape[0], -1)


def forward(
    layout: ParamLayout, flat: torch.Tensor, x: torch.Tensor, positions: torch.Tensor | None = None
) -> torch.Tensor:
    """Predictions ``(T, N)`` of the stacked networks in rows ``flat`` on rows ``x`` ``(T, N,
    L)`` (same dtype); ``positions`` as in ``stacked._forward_matmul``."""
    p = layout.views(flat)
    h = trunk(p, x, _positions(positions), keep=False)[-1]
    return dense(p, h.reshape(x.shape[0], x.shape[1], -1))[1]


def losses(
    layout: ParamLayout,
    flat: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Every task's weighted squared error ``(T,)``."""
    return task_losses(forward(layout, flat, x, positions), y, weight)


@torch.no_grad()
def gradient(
    layout: ParamLayout,
    flat: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    grad: torch.Tensor,
    positions: torch.Tensor | None = None,
) -> None:
    """The gradient of every task's weighted squared error with respect to its row of ``flat``
    (the compute copy), written into ``grad`` (fp32, same shape)."""
    tasks, n, length = x.shape
    p, g = layout.views(flat), layout.views(grad)
    mask = _positions(positions)
    acts = trunk(p, x, mask, keep=True)
    h = acts[-1].reshape(tasks, n, -1)
    hidden, pred = dense(p, h)
    g_pred = 2 * (pred.float() - y) * weight
    g["fc2.bias"].copy_(g_pred.sum(dim=1, keepdim=True))
    g_pred = g_pred.to(flat.dtype)
    g["fc2.weight"].copy_(torch.bmm(g_pred.unsqueeze(1), hidden).squeeze(1))
    g_hidden = _leaky_grad(g_pred.unsqueeze(2) * p["fc2.weight"].view(tasks, 1, -1), hidden)
    g["fc1.bias"].copy_(g_hidden.float().sum(dim=1))
    g[FC1].view(tasks, HIDDEN_UNITS, -1).copy_(torch.bmm(g_hidden.transpose(1, 2), h))
    g_h = torch.bmm(g_hidden, p[FC1].view(tasks, HIDDEN_UNITS, -1))
    top = _leaky_grad(g_h, h).view(tasks, n, length, -1)
    if mask is not None:
        top.mul_(mask.view(tasks, 1, length, 1))
    # errors[i]: layer i's error (at its pre-activation, masked); a residual layer's is kept
    # until it reaches the activation it added back.
    errors = {len(TRUNK): top.view(acts[-1].shape)}
    for i in range(len(TRUNK), 0, -1):
        name, _ = TRUNK[i - 1]
        extra = errors.pop(ADDED_BY[i - 1]) if i - 1 in ADDED_BY else None
        w_grad, b_grad, below = kernels.backward(
            acts[i - 1], errors[i], p[f"{name}.weight"], length, mask, extra, error_below=i > 1
        )
        g[f"{name}.weight"].copy_(w_grad)
        g[f"{name}.bias"].copy_(b_grad)
        if below is not None:
            errors[i - 1] = below
        if TRUNK[i - 1][1] is None:
            del errors[i]
        acts[i] = None
