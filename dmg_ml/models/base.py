"""The interface every model of the comparison shares, scikit-learn style.

A model is built from its parameters (constructor arguments, nothing else), learns from one
training set with ``fit(X, y, groups)`` and predicts with ``predict(X)``. ``X`` is samples × CpGs
of one gene, already standardised by the evaluation engine (with a scaler fitted on the training
folds; the published audit scales only where the authors' pipeline did); ``y`` is log2
expression. ``groups`` are the patients of the rows: a model that chooses anything from data
(a penalty, a number of layers, an early-stopping epoch) chooses it on an inner split of these
rows grouped by patient, so tumour and normal of one patient never sit on both sides. Models
know nothing of outer folds: the engine (``dmg_ml.evaluation``) never shows them the rows they
are scored on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from sklearn.model_selection import GroupKFold, GroupShuffleSplit

from dmg_ml.data.splits import INNER_VALID_FRACTION
from dmg_ml.models.checkpoint import FoldCheckpoint

#: Inner folds for choices made by cross-validation inside ``fit`` (enet's λ, cascade layers).
INNER_FOLDS = 5


@runtime_checkable
class Regressor(Protocol):
    """What the evaluation engine calls; scikit-learn regressors fit it once ``fit`` accepts
    ``groups``."""

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> Regressor:
        ...

    def predict(self, X: np.ndarray) -> np.ndarray:
        ...


def inner_folds(groups: np.ndarray | None, n_rows: int, n_splits: int = INNER_FOLDS,
                seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patient-grouped inner (train, validation) row splits of a training set.

    Without ``groups`` every row is its own group. Fewer groups than ``n_splits`` gives as many
    splits as there are groups (at least 2).
    """
    groups = np.arange(n_rows) if groups is None else np.asarray(groups).astype(str)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError("an inner split needs at least 2 patients")
    splitter = GroupKFold(n_splits=min(n_splits, n_groups), shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((n_rows, 1)), groups=groups))


def inner_holdout(groups: np.ndarray | None, n_rows: int,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One patient-grouped (train, validation) split for early stopping."""
    groups = np.arange(n_rows) if groups is None else np.asarray(groups).astype(str)
    splitter = GroupShuffleSplit(n_splits=1, test_size=INNER_VALID_FRACTION, random_state=seed)
    train, valid = next(splitter.split(np.zeros((n_rows, 1)), groups=groups))
    return np.sort(train), np.sort(valid)


@dataclass
class FittedFold:
    """A model fitted on one outer fold's training rows, as the evaluation engine scores it.

    ``predictor.predict`` takes raw rows (any scaling is inside it); ``seconds`` is the fold's
    share of the fit; ``facts`` what its training did where a model reports it (the CNN: rows
    held out for early stopping, epochs run, best epoch); ``checkpoint`` its saved form where
    the model can be stored."""

    fold: int
    predictor: Regressor
    seconds: float
    facts: dict[str, int] = field(default_factory=dict)
    checkpoint: FoldCheckpoint | None = None
