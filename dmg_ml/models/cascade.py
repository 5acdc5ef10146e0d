"""The paper's "Deep Forest" baseline: a cascade forest regressor built on scikit-learn.

The ``deep-forest`` package (DF21, the cascade forest the paper ran) has no wheels for current
Python, so this is the cascade of gcForest/DF21 rebuilt from scikit-learn's forests, as a model of
the common interface (``dmg_ml.models.base``): parameters in the constructor, ``fit(X, y, groups)``
with every choice (here: how many layers) made on patient-grouped inner folds of the training
rows, ``predict(X)``.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor
from sklearn.metrics import r2_score
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from dmg_ml.models.base import inner_folds

_SEED_MAX = np.iinfo(np.int32).max


class CascadeForest(BaseEstimator, RegressorMixin):
    """Cascade forest ("Deep Forest") regressor.

    Every layer holds ``forests_per_type`` random forests (``RandomForestRegressor``) and
    ``forests_per_type`` extra-trees forests (``ExtraTreesRegressor``, gcForest's "completely
    random" forests), each of ``n_estimators`` trees. Layer 1 sees ``X``. Each forest of a layer
    gives out-of-fold predictions for the training rows through ``inner_splits`` patient-grouped
    inner folds (``inner_folds``: fitted on the inner-train rows, predicting the inner-validation
    rows; the same folds in every layer). The layer's score is the inner R² (``r2_score``) of the
    mean of its forests' out-of-fold predictions. The next layer sees ``X`` plus one column per
    forest of this layer: its out-of-fold predictions. A layer is kept only when its score exceeds
    the best so far by more than ``tol``; the first layer that does not is discarded and growth
    stops, as it does at ``max_layers``. Kept layers' forests are then refitted on all training
    rows; ``predict`` passes ``X`` through them (each layer's refitted forests give the next
    layer's extra columns) and returns the mean of the last kept layer's forests.

    Cost: a kept layer fits ``2 * forests_per_type * (inner_splits + 1)`` forests (one per inner
    fold plus the refit on all rows) of ``n_estimators`` trees each, 16 forests of 100 trees with
    the defaults; the rejected layer fits ``2 * forests_per_type * inner_splits``. A cascade that
    keeps ``k`` layers therefore costs about ``16 k + 12`` random forests of the size of the
    ``rf`` baseline.

    Parameter choices:

    * ``max_features=1.0`` and ``extra_max_features=1.0`` (every CpG is a split candidate in
      both kinds of forest): the regressors of the ``deep-forest`` package, which is what a Deep
      Forest user (and the paper) ran, default to ``max_features="auto"``, all features for a
      regressor, and 1.0 is also scikit-learn's regression default, so the cascade's random
      forests match the ``rf`` baseline. gcForest's 2017 classifier used ``sqrt(d)`` for the
      random forests and 1 for the completely random ones: pass ``max_features="sqrt",
      extra_max_features=1`` to get that. Windows can hold few CpGs, where ``sqrt`` leaves one
      or two candidates per split and weakens the random forests.
    * ``forests_per_type=2`` and ``n_estimators=100``: DF21's defaults (two forests of each
      type, 100 trees each).
    * ``max_layers=5`` and ``tol=0.0`` (DF21 grows up to 20 layers, tolerating two layers without
      gain): per-gene training sets are small (hundreds of rows), so the cascade rarely gains
      after two or three layers, and stopping at the first layer without gain keeps the cost
      bounded.
    * ``inner_splits=3``: fewer than the 5 inner folds of the other models, because every fold
      costs ``2 * forests_per_type`` forests per layer.
    * Extra-trees forests keep scikit-learn's ``bootstrap=False`` (completely random trees grown
      on all rows, as in gcForest); DF21's feature binning is not reproduced.

    Fitted attributes: ``layers_`` (list of the kept layers, each a list of its fitted forests,
    random forests first), ``layer_scores_`` (inner R² of every layer tried, the rejected one
    included, so it is one longer than ``layers_`` unless growth stopped at ``max_layers``),
    ``n_layers_`` (kept layers), ``n_features_in_``.
    """

    def __init__(self, n_estimators: int = 100, forests_per_type: int = 2, max_layers: int = 5,
                 inner_splits: int = 3, tol: float = 0.0, max_features: float | int | str = 1.0,
                 extra_max_features: float | int | str = 1.0, min_samples_leaf: int = 1,
                 n_jobs: int | None = None, random_state: int | None = 0) -> None:
        self.n_estimators = n_estimators
        self.forests_per_type = forests_per_type
        self.max_layers = max_layers
        self.inner_splits = inner_splits
        self.tol = tol
        self.max_features = max_features
        self.extra_max_features = extra_max_features
        self.min_samples_leaf = min_samples_leaf
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _new_layer(self, rng: np.random.RandomState) -> list[BaseEstimator]:
        """Unfitted forests of one layer: random forests first, then extra-trees forests."""
        common = {"n_estimators": self.n_estimators, "min_samples_leaf": self.min_samples_leaf,
                  "n_jobs": self.n_jobs}
        forests: list[BaseEstimator] = [
            RandomForestRegressor(max_features=self.max_features,
                                  random_state=rng.randint(_SEED_MAX), **common)
            for _ in range(self.forests_per_type)]
        forests += [
            ExtraTreesRegressor(max_features=self.extra_max_features,
                                random_state=rng.randint(_SEED_MAX), **common)
            for _ in range(self.forests_per_type)]
        return forests

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> CascadeForest:
        for name in ("n_estimators", "forests_per_type", "max_layers"):
            value = getattr(self, name)
            if not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.inner_splits, Integral) or self.inner_splits < 2:
            raise ValueError(f"inner_splits must be an integer >= 2, got {self.inner_splits!r}")
        X, y = check_X_y(X, y, dtype=np.float64, y_numeric=True)
        n_rows = len(y)
        rng = check_random_state(self.random_state)
        fold_seed = (int(self.random_state) if isinstance(self.random_state, Integral)
                     else int(rng.randint(_SEED_MAX)))
        folds = inner_folds(groups, n_rows, self.inner_splits, fold_seed)

        layers: list[list[BaseEstimator]] = []
        scores: list[float] = []
        best = -np.inf
        features = X
        for _ in range(self.max_layers):
            forests = self._new_layer(rng)
            oof = np.zeros((n_rows, len(forests)))
            for j, forest in enumerate(forests):
                for train, valid in folds:
                    oof[valid, j] = clone(forest).fit(features[train], y[train]).predict(
                        features[valid])
            score = float(r2_score(y, oof.mean(axis=1)))
            scores.append(score)
            if layers and not score > best + self.tol:
                break
            best = score
            layers.append([forest.fit(features, y) for forest in forests])
            features = np.hstack([X, oof])

        self.layers_ = layers
        self.layer_scores_ = scores
        self.n_layers_ = len(layers)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "layers_")
        X = check_array(X, dtype=np.float64)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the model was fitted on "
                             f"{self.n_features_in_}")
        features = X
        for forests in self.layers_:
            out = np.column_stack([forest.predict(features) for forest in forests])
            features = np.hstack([X, out])
        return out.mean(axis=1)
