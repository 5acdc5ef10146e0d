"""The reference trainer: one gene, one fold, one model, written to be read.

It is the yardstick the fast trainer (``dmg_ml.training.batched``) is checked against, so it
stays plain:
Adam, MSE, early stopping on a validation set with patience, best weights restored.

Semantics shared by both trainers (keep them in step):

* weights are initialised by PyTorch's default initialisers on the CPU under ``task_seed``
  (``init_model``), whatever the device, so a task starts from the same weights everywhere;
* an epoch is one Adam step on the full training set (``batch_size=None``, the authors' setting) or
  one pass over shuffled mini-batches (the permutation drawn from a ``torch.Generator`` seeded with
  ``task_seed``);
* after epoch ``e`` (1-based) the validation MSE of the updated weights is computed; a strictly
  lower loss than the best so far makes ``e`` the best epoch and resets the patience counter,
  otherwise the counter grows and training stops when it reaches ``patience``;
* the weights of the best epoch are restored (epoch 0, the initial weights, if none improved).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from dmg_ml import defaults
from dmg_ml.models.cnn import AdaptiveRegressionCNN, ChannelRule

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
#: The two trainers of this package: the plain loop here and the stacked one in ``batched``.
TrainerName = Literal["batched", "reference"]
TRAINERS: tuple[TrainerName, ...] = get_args(TrainerName)


@dataclass
class TrainConfig:
    """Training hyper-parameters; the defaults are the paper's (docs/design.md §4).

    ``batch_size=None`` trains full-batch as the authors did; an int trains on shuffled
    mini-batches. ``precision="bf16"`` runs the network's matmuls and convolutions in bfloat16
    autocast (weights, optimiser state and losses stay fp32); the ``published`` audit ignores it
    and trains in fp32 as the authors did (``dmg_ml.training.folds.protocol_config``, the one
    place that rule lives). ``restore_best_weights=False`` keeps the weights of the last epoch run
    instead of the best epoch's: what the authors' script does in effect (its "best" state is a
    reference to the live weights), for an exact audit.
    """

    max_epochs: int = defaults.MAX_EPOCHS
    patience: int = defaults.PATIENCE
    lr: float = defaults.LEARNING_RATE
    batch_size: int | None = None
    seed: int = defaults.SEED
    channels: ChannelRule = "adaptive"
    precision: Precision = "fp32"
    restore_best_weights: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.max_epochs < 1 or self.patience < 1:
            raise ValueError("max_epochs and patience must be >= 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError("batch_size must be None or >= 1")


@dataclass
class TrainResult:
    """A fitted model (best weights restored, unless the config said not to) and how training
    went."""

    model: AdaptiveRegressionCNN
    epochs_run: int
    best_epoch: int
    best_valid_loss: float


def init_model(
    input_size: int, channels: str, seed: int, published_init: bool = False
) -> AdaptiveRegressionCNN:
    """A fresh model with PyTorch's default initialisation drawn on the CPU under ``seed``,
    leaving the global RNG untouched.

    ``published_init=True`` draws as the authors' module does (one extra ``torch.randn`` before
    ``fc1``, see ``AdaptiveRegressionCNN``): with their seed 42, their script's initial weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AdaptiveRegressionCNN(input_size, channels, published_init=published_init)


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for ``precision="bf16"``, a no-op for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def minibatches(
    n: int, batch_size: int | None, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Index batches of one epoch: everything at once, or a shuffled split into ``batch_size``."""
    if batch_size is None or batch_size >= n:
        yield torch.arange(n)
        return
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _as_tensor(a: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)


def fit_reference(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
    config: TrainConfig,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    model: nn.Module | None = None,
) -> TrainResult:
    """Train one model with early stopping on ``(X_valid, y_valid)``.

    ``seed`` (default ``config.seed``) seeds the initial weights and the mini-batch order. Passing
    ``model`` continues training it in place instead (the published protocol carries one model
    across folds); a fresh Adam is created either way.
    """
    device = torch.device(device)
    seed = config.seed if seed is None else seed
    if model is None:
        model = init_model(X_train.shape[1], config.channels, seed)
    model = model.to(device)
    xt, yt = _as_tensor(X_train, device), _as_tensor(y_train, device)
    xv, yv = _as_tensor(X_valid, device), _as_tensor(y_valid, device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(seed)
    loss_fn = nn.MSELoss()

    best_loss, best_epoch, wait = math.inf, 0, 0
    best_state = copy.deepcopy(model.state_dict())
    epoch = 0
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        for idx in minibatches(len(yt), config.batch_size, generator):
            idx = idx.to(device)
            optimiser.zero_grad(set_to_none=True)
            with autocast_context(device, config.precision):
                pred = model(xt[idx])
            loss_fn(pred.float(), yt[idx]).backward()
            optimiser.step()
        valid_loss = _valid_loss(model, xv, yv, device, config.precision)
        if valid_loss < best_loss:
            best_loss, best_epoch, wait = valid_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            wait += 1
            if wait >= config.patience:
                break
    if config.restore_best_weights:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, epochs_run=epoch, best_epoch=best_epoch, best_valid_loss=best_loss)


def _valid_loss(
    model: nn.Module, xv: torch.Tensor, yv: torch.Tensor, device: torch.device, precision: str
) -> float:
    model.eval()
    with torch.no_grad(), autocast_context(device, precision):
        pred = model(xv)
    return float(torch.mean((pred.float() - yv) ** 2))
