"""The neural models of the comparison as scikit-learn estimators (docs/design.md §4-5).

``CNNRegressor`` is DeepMethyGene's per-gene CNN (``AdaptiveRegressionCNN``); ``MLPRegressor`` is
the paper's ablation, the same network without its convolutional layers (``AblationMLP``). Both
train with the project's trainers (``dmg_ml.training``: Adam, MSE, early stopping with patience,
best weights restored) and stop early on one patient-grouped inner split of the rows they are given
(``inner_holdout``), so tumour and normal of one patient never sit on both sides. ``X`` arrives
as the caller prepared it (the evaluation engine standardises it, except in the published audit,
where the authors' scripts fed raw M-values); the models do not scale it. The defaults are the
paper's, taken from ``TrainConfig``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from dmg_ml.data.inputs import GeneData
from dmg_ml.data.splits import FoldSplit
from dmg_ml.models.base import FittedFold, inner_holdout
from dmg_ml.models.cnn import AblationMLP, predict
from dmg_ml.training.batched import fit_batched
from dmg_ml.training.folds import train_gene_folds
from dmg_ml.training.planning import FitTask
from dmg_ml.training.reference import (
    TRAINERS,
    TrainConfig,
    TrainResult,
    fit_reference,
)

_DEFAULTS = TrainConfig()


class _NeuralRegressor(RegressorMixin, BaseEstimator):
    """What the two networks share: the inner split, the config, the fitted attributes, predict.

    Subclasses define ``__init__`` (the parameters) and ``_train``.
    """

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None):
        """Train on ``(X, y)``, early stopping on a patient-grouped 20 % of the rows (``groups``
        are the patients of the rows; None makes every row its own patient)."""
        X, y = validate_data(self, X, y, dtype=np.float32, y_numeric=True)
        y = np.asarray(y, dtype=np.float32)
        if groups is not None and len(groups) != len(y):
            raise ValueError(f"groups has {len(groups)} entries for {len(y)} rows")
        config = self._config()
        train, valid = inner_holdout(groups, len(y), self.seed)
        result = self._train(X[train], y[train], X[valid], y[valid], config)
        self.model_ = result.model.to("cpu").eval()
        self.epochs_run_ = result.epochs_run
        self.best_epoch_ = result.best_epoch
        self.best_valid_loss_ = result.best_valid_loss
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions for rows of ``X`` prepared as in ``fit``, float64, computed on the CPU in
        fp32 whatever the training device and precision (as the cross-validation scores)."""
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=np.float32)
        return predict(self.model_, X)

    def _config(self) -> TrainConfig:
        return TrainConfig(
            max_epochs=self.max_epochs,
            patience=self.patience,
            lr=self.learning_rate,
            batch_size=self.batch_size,
            seed=self.seed,
            channels=getattr(self, "channels", _DEFAULTS.channels),
            precision=self.precision,
            restore_best_weights=self.restore_best_weights,
        )

    def _train(
        self,
        X_train: np.ndarray,
        y_train: np.ndarray,
        X_valid: np.ndarray,
        y_valid: np.ndarray,
        config: TrainConfig,
    ) -> TrainResult:
        raise NotImplementedError


class CNNRegressor(_NeuralRegressor):
    """DeepMethyGene's residual 1-D CNN for one gene.

    ``trainer="batched"`` trains with ``fit_batched`` (one task), ``"reference"`` with
    ``fit_reference``; they share semantics and agree up to floating-point rounding. ``seed`` seeds
    the inner split, the initial weights and the mini-batch order. Fitted: ``model_`` (the network,
    eval mode, on the CPU), ``epochs_run_``, ``best_epoch_``, ``best_valid_loss_``.
    """

    def __init__(
        self,
        max_epochs: int = _DEFAULTS.max_epochs,
        patience: int = _DEFAULTS.patience,
        learning_rate: float = _DEFAULTS.lr,
        batch_size: int | None = _DEFAULTS.batch_size,
        channels: str = _DEFAULTS.channels,
        trainer: str = "batched",
        precision: str = _DEFAULTS.precision,
        restore_best_weights: bool = _DEFAULTS.restore_best_weights,
        seed: int = _DEFAULTS.seed,
        device: str = "cpu",
    ) -> None:
        self.max_epochs = max_epochs
        self.patience = patience
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.channels = channels
        self.trainer = trainer
        self.precision = precision
        self.restore_best_weights = restore_best_weights
        self.seed = seed
        self.device = device

    def _train(self, X_train, y_train, X_valid, y_valid, config) -> TrainResult:
        if self.trainer not in TRAINERS:
            raise ValueError(f"trainer must be one of {TRAINERS}, got {self.trainer!r}")
        if self.trainer == "batched":
            task = FitTask(X_train, y_train, X_valid, y_valid, seed=self.seed)
            return fit_batched([task], config, device=self.device)[0]
        return fit_reference(
            X_train, y_train, X_valid, y_valid, config, seed=self.seed, device=self.device
        )

    def fit_folds(
        self, genes: Sequence[GeneData], splits: Sequence[Sequence[FoldSplit]], protocol: str,
        seed: int,
    ) -> Iterator[tuple[list[int], list[list[FittedFold]]]]:
        """Every fold of every gene at once, the way the evaluation engine trains this model:
        the batched trainer stacks a batch's (gene, fold) tasks into one model
        (``dmg_ml.training.folds.train_gene_folds``); ``seed`` seeds the weights as it seeded
        the folds. Yields the genes of each batch and their fitted folds."""
        config = replace(self._config(), seed=seed)
        return train_gene_folds(genes, splits, protocol, config, self.trainer, self.device)


def cnn_params(config: TrainConfig, trainer: str = "batched", device: str = "cpu") -> dict:
    """``CNNRegressor``'s arguments (``evaluate``'s ``params`` for ``"cnn"``) for ``config``
    trained by ``trainer`` on ``device``; ``config.seed`` goes to ``evaluate`` as its ``seed``."""
    return {
        "max_epochs": config.max_epochs, "patience": config.patience,
        "learning_rate": config.lr, "batch_size": config.batch_size,
        "channels": config.channels, "trainer": trainer, "precision": config.precision,
        "restore_best_weights": config.restore_best_weights, "device": str(device),
    }


class MLPRegressor(_NeuralRegressor):
    """The paper's ablation: ``AblationMLP`` (the CNN without its convolutional layers), trained
    with the reference loop under the CNN's training semantics.

    ``seed`` seeds the inner split, the initial weights and the mini-batch order. Fitted:
    ``model_`` (the network, eval mode, on the CPU), ``epochs_run_``, ``best_epoch_``,
    ``best_valid_loss_``.
    """

    def __init__(
        self,
        max_epochs: int = _DEFAULTS.max_epochs,
        patience: int = _DEFAULTS.patience,
        learning_rate: float = _DEFAULTS.lr,
        batch_size: int | None = _DEFAULTS.batch_size,
        precision: str = _DEFAULTS.precision,
        restore_best_weights: bool = _DEFAULTS.restore_best_weights,
        seed: int = _DEFAULTS.seed,
        device: str = "cpu",
    ) -> None:
        self.max_epochs = max_epochs
        self.patience = patience
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.precision = precision
        self.restore_best_weights = restore_best_weights
        self.seed = seed
        self.device = device

    def _train(self, X_train, y_train, X_valid, y_valid, config) -> TrainResult:
        model = init_mlp(X_train.shape[1], self.seed)
        return fit_reference(
            X_train, y_train, X_valid, y_valid, config, seed=self.seed, device=self.device,
            model=model,
        )  # fmt: skip


def init_mlp(input_size: int, seed: int) -> AblationMLP:
    """A fresh ``AblationMLP`` with PyTorch's default initialisation drawn on the CPU under
    ``seed``, leaving the global RNG untouched (as ``init_model`` does for the CNN)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AblationMLP(input_size)
