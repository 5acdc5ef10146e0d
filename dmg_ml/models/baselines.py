"""The baselines the paper compares DeepMethyGene with, as models of the common interface.

``mean`` (the training mean: the floor every table shows), ``enet`` (geneEXPLORE's elastic net),
``svr`` and ``rf`` (scikit-learn's defaults, as the paper ran them). Each is a scikit-learn
estimator whose ``fit`` also takes the rows' patients (``groups``), used where the model chooses
something by inner cross-validation. The cascade forest lives in ``cascade``, the networks in
``neural``.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNetCV
from sklearn.svm import SVR

from dmg_ml.models.base import INNER_FOLDS, inner_folds


class MeanModel(DummyRegressor):
    """Predicts the training mean: what a model that learnt nothing scores (R² ≈ 0 or below)."""

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> MeanModel:
        return super().fit(X, y)


class ElasticNetGeneExplore(BaseEstimator, RegressorMixin):
    """geneEXPLORE's model: elastic net with l1_ratio 0.5 and λ chosen by patient-grouped inner
    cross-validation on the training rows (λ.min: the λ of least mean inner-validation error),
    then refitted on all of them.

    scikit-learn's ``ElasticNetCV`` fits each inner fold's whole λ path with warm starts (each λ
    starts from the previous solution), which is what makes 100 λs cheap; ``n_jobs`` runs the
    inner folds in parallel. glmnet standardises features itself; here the evaluation engine has
    already standardised them on the training rows.
    """

    def __init__(self, l1_ratio: float = 0.5, n_alphas: int = 100, inner_splits: int = INNER_FOLDS,
                 max_iter: int = 10_000, tol: float = 1e-4, n_jobs: int | None = None,
                 random_state: int = 0) -> None:
        self.l1_ratio = l1_ratio
        self.n_alphas = n_alphas
        self.inner_splits = inner_splits
        self.max_iter = max_iter
        self.tol = tol
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray,
            groups: np.ndarray | None = None) -> ElasticNetGeneExplore:
        cv = inner_folds(groups, len(y), self.inner_splits, self.random_state)
        net = ElasticNetCV(l1_ratio=self.l1_ratio, alphas=self.n_alphas, cv=cv,
                           max_iter=self.max_iter, tol=self.tol, n_jobs=self.n_jobs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            net.fit(np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64))
        self.model_ = net
        self.alpha_ = float(net.alpha_)
        self.n_nonzero_ = int(np.count_nonzero(net.coef_))
        self.converged_ = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict(np.asarray(X, dtype=np.float64))


class SVRModel(SVR):
    """Support vector regression with an RBF kernel and scikit-learn's defaults (as the paper)."""

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> SVRModel:
        return super().fit(X, y)


class RandomForestModel(RandomForestRegressor):
    """A random forest of 100 trees (scikit-learn's defaults otherwise, as the paper)."""

    def fit(self, X: np.ndarray, y: np.ndarray,
            groups: np.ndarray | None = None) -> RandomForestModel:
        return super().fit(X, y)
