"""``best``: per gene, the candidate model with the best inner cross-validated R².

The choice is nested: inside ``fit`` the candidates are scored by patient-grouped inner
cross-validation on the training rows only, the winner is refitted on all of them, and the
evaluation engine scores it on the outer fold it never saw, like every other model. (The inner
folds reuse the scaling the engine fitted on the outer training rows: nothing outside those rows
is involved.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from dmg_ml.evaluation.metrics import r2
from dmg_ml.evaluation.registry import make_model
from dmg_ml.models.base import inner_folds


class BestModel(BaseEstimator, RegressorMixin):
    """Chooses among ``candidates`` (registry names) per training set; ``candidate_params``
    maps a name to its constructor arguments. Costs ``inner_splits + 1`` fits per candidate."""

    def __init__(self, candidates: Sequence[str] = ("enet", "cnn"),
                 candidate_params: Mapping[str, Mapping[str, Any]] | None = None,
                 inner_splits: int = 3, random_state: int = 0) -> None:
        self.candidates = candidates
        self.candidate_params = candidate_params
        self.inner_splits = inner_splits
        self.random_state = random_state

    def _make(self, name: str):
        return make_model(name, **dict((self.candidate_params or {}).get(name, {})))

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> BestModel:
        if not self.candidates:
            raise ValueError("best needs at least one candidate model")
        folds = inner_folds(groups, len(y), self.inner_splits, self.random_state)
        scores = {}
        for name in self.candidates:
            predicted = np.empty(len(y), dtype=np.float64)
            for train, valid in folds:
                part = None if groups is None else np.asarray(groups)[train]
                model = self._make(name).fit(X[train], y[train], groups=part)
                predicted[valid] = model.predict(X[valid])
            scores[name] = r2(y, predicted)
        self.inner_r2_ = scores
        self.chosen_ = max(self.candidates, key=lambda name: scores[name])
        self.model_ = self._make(self.chosen_).fit(X, y, groups=groups)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict(X)
