"""What a saved model holds, and the fitted fold models rebuilt from it.

A ``GeneCheckpoint`` is one gene's saved models: a ``FoldCheckpoint`` per outer fold kept and/or a
final model trained on every sample, with the probe (column) order their inputs take. A
``FoldCheckpoint`` is the network's weights (a ``state_dict`` of tensors, so the model registry
stores it as safetensors, never pickle) and the scaler its inputs were standardised with.
``dmg_resources.checkpoints`` writes and verifies the files; the registry table
``model_registry`` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from dmg_ml.models.cnn import AdaptiveRegressionCNN, model_from_state, predict

#: Largest change of a gene's out-of-fold R² that storing its weights in half precision may cause
#: for the half-precision file to be kept (docs/design.md §11).
HALF_PRECISION_MAX_DELTA_R2 = 1e-3


@dataclass
class FoldCheckpoint:
    """Everything needed to rebuild a fold's model and reproduce its predictions."""

    fold: int
    state_dict: dict[str, torch.Tensor]
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    input_size: int
    channels: str


@dataclass
class GeneCheckpoint:
    """A gene's saved models: a ``FoldCheckpoint`` per outer fold kept (none, where only the
    final model is stored), the ``final`` model trained on every sample (None where it was not
    trained or not kept) and the probe (column) order their inputs take. ``model`` is the
    registry name of the model; ``config`` the run configuration as JSON."""

    gene: str
    protocol: str
    probe_ids: list[str]
    folds: list[FoldCheckpoint]
    config: str
    run_id: str
    final: FoldCheckpoint | None = None
    model: str = "cnn"

    @property
    def models(self) -> list[FoldCheckpoint]:
        """Every stored model: the folds', then the final one."""
        return [*self.folds, *([self.final] if self.final is not None else [])]


@dataclass
class FoldModel:
    """A fold's network and the scaler it was trained behind."""

    model: AdaptiveRegressionCNN
    mean: np.ndarray
    scale: np.ndarray

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions for raw (unscaled) rows of ``X``, computed on the CPU in fp32."""
        return predict(self.model, scale_features(X, self.mean, self.scale))


def scale_features(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(X - mean) / scale`` in float64, returned as float32 (used for training and reload)."""
    return ((np.asarray(X, dtype=np.float64) - mean) / scale).astype(np.float32)


def load_fold_model(checkpoint: FoldCheckpoint) -> FoldModel:
    """Rebuild a fold's model from its checkpoint."""
    model = model_from_state(checkpoint.state_dict, checkpoint.input_size, checkpoint.channels)
    return FoldModel(model.eval(), checkpoint.scaler_mean, checkpoint.scaler_scale)


def half_precision(checkpoint: FoldCheckpoint) -> FoldCheckpoint:
    """``checkpoint`` with its floating-point weights rounded to float16 (the scaler stays
    float64): what a half-precision file holds."""
    state = {
        name: t.to(torch.float16) if t.is_floating_point() else t
        for name, t in checkpoint.state_dict.items()
    }
    return replace(checkpoint, state_dict=state)
