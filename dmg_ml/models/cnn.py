"""DeepMethyGene's per-gene residual 1-D CNN (docs/design.md §4).

One model maps the ordered CpG M-values of a gene's window (length ``L``) to the gene's expression.
Channel widths follow the adaptive rule ``c1 = min(64, L // 10)``, ``c2 = min(32, L // 20)`` of the
paper and of the authors' current code (``Model/DeepMethyGene.py`` since its August 2024 update;
its first commit, April 2024, fixed 64/32, which ``channels="fixed"`` gives).

Labelled deviations from the authors' module:

* **A floor of one channel.** Their rule gives ``c2 = 0`` for ``L < 20`` (and ``c1 = 0`` for
  ``L < 10``), and their script crashes on such a gene; here every width is at least 1, so tiny
  windows train.
* **Initial weights.** Their ``__init__`` sizes ``fc1`` by running ``torch.randn(1, 1, L)``
  through the convolutions, one draw from the global RNG between the convolutions' and the dense
  layers' initialisation, so under the same seed their ``fc1``/``fc2`` start elsewhere.
  ``published_init=True`` makes that draw too (the ``published`` audit uses it); by default it is
  not made.

``AblationMLP`` is the paper's ablation: the same network without its convolutional layers.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

ChannelRule = Literal["adaptive", "fixed"]
CHANNEL_MODES: tuple[ChannelRule, ...] = get_args(ChannelRule)
HIDDEN_UNITS = 512
NEGATIVE_SLOPE = 0.01


def channel_widths(input_size: int, channels: str = "adaptive") -> tuple[int, int]:
    """``(c1, c2)`` for a window of ``input_size`` CpGs."""
    if input_size < 1:
        raise ValueError(f"input_size must be >= 1, got {input_size}")
    if channels == "adaptive":
        return max(1, min(64, input_size // 10)), max(1, min(32, input_size // 20))
    if channels == "fixed":
        return 64, 32
    raise ValueError(f"channels must be one of {CHANNEL_MODES}, got {channels!r}")


@lru_cache(maxsize=4096)
def parameter_count(input_size: int, channels: str = "adaptive") -> int:
    """Number of trainable parameters, read off the module itself (built on the meta device, so
    nothing is allocated): the network is defined once, in the classes below."""
    with torch.device("meta"):
        model = AdaptiveRegressionCNN(input_size, channels)
    return sum(p.numel() for p in model.parameters())


class ResidualBlock(nn.Module):
    """conv(c→c, 3, pad 1) → LeakyReLU → conv(c→c, 3, pad 1) → + input → LeakyReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3, padding=1)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.act(self.conv1(x)))
        return self.act(out + x)


class AdaptiveRegressionCNN(nn.Module):
    """Input ``(batch, L)`` or ``(batch, 1, L)`` of M-values; output ``(batch,)`` expression.

    ``published_init=True`` consumes the global RNG exactly as the authors' module does while it
    is built: one ``torch.randn(1, 1, L)`` after the convolutions, before ``fc1`` (their probe
    that sizes ``fc1``). It changes the initial dense weights under a given seed, nothing else.
    """

    def __init__(
        self, input_size: int, channels: str = "adaptive", published_init: bool = False
    ) -> None:
        super().__init__()
        c1, c2 = channel_widths(input_size, channels)
        self.input_size = input_size
        self.channels = channels
        self.conv1 = nn.Conv1d(1, c1, kernel_size=3, padding=1)
        self.res1 = ResidualBlock(c1)
        self.conv2 = nn.Conv1d(c1, c2, kernel_size=3, padding=1)
        self.res2 = ResidualBlock(c2)
        if published_init:
            torch.randn(1, 1, input_size)  # the draw of their fc1-sizing probe; value unused
        self.fc1 = nn.Linear(c2 * input_size, HIDDEN_UNITS)
        self.fc2 = nn.Linear(HIDDEN_UNITS, 1)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        x = self.res1(self.act(self.conv1(x)))
        x = self.res2(self.act(self.conv2(x)))
        x = self.act(self.fc1(x.flatten(1)))
        return self.fc2(x).squeeze(-1)


class AblationMLP(nn.Module):
    """The paper's ablation: the same network without its convolutional layers.

    ``Linear(L → 512) → LeakyReLU(0.01) → Linear(512 → 1)``; input ``(batch, L)`` or
    ``(batch, 1, L)`` of M-values, output ``(batch,)`` expression, as ``AdaptiveRegressionCNN``.
    """

    def __init__(self, input_size: int) -> None:
        super().__init__()
        if input_size < 1:
            raise ValueError(f"input_size must be >= 1, got {input_size}")
        self.input_size = input_size
        self.fc1 = nn.Linear(input_size, HIDDEN_UNITS)
        self.fc2 = nn.Linear(HIDDEN_UNITS, 1)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(x.flatten(1)))
        return self.fc2(x).squeeze(-1)


def model_from_state(
    state: dict[str, torch.Tensor], input_size: int, channels: str
) -> AdaptiveRegressionCNN:
    """A model holding a copy of ``state``, built without initialising weights only to overwrite
    them (a per-task cost on the host that a GPU would wait for)."""
    with torch.device("meta"):
        model = AdaptiveRegressionCNN(input_size, channels)
    model.to_empty(device="cpu").load_state_dict(state)
    return model


def predict(model: nn.Module, X: np.ndarray) -> np.ndarray:
    """Predictions of ``model`` for the rows of ``X`` as float64, computed on the CPU in fp32
    (as every score and every prediction for new samples is, whatever the training device)."""
    model = model.to("cpu").eval()
    with torch.no_grad():
        pred = model(torch.as_tensor(np.asarray(X, dtype=np.float32)))
    return pred.float().numpy().astype(np.float64)
