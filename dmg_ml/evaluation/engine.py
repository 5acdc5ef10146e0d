"""One cross-validation engine for every model of the comparison (docs/design.md §5).

Every model is scored on the same outer folds: ``outer_splits`` is the one place folds come from
(honest: patient-grouped ``GroupKFold``, the same per cohort and seed as the CNN's
``cross_validate``; published: the authors' row shuffle then ungrouped ``KFold(42)``, see
``published_splits``). For each fold the features are standardised with a scaler fitted on the
outer training rows only, a fresh model is built by name from the registry, fitted on the outer
training rows (with their patients, for anything it chooses on an inner split) and scored on the
outer test rows it never saw. R² and r² are stored per fold and pooled over the out-of-fold
predictions.

The published audit runs each model as the authors' scripts ran it: their SVM, random-forest,
Deep Forest and CNN scripts scale nothing, so features stay raw there except for the models in
``PUBLISHED_SCALED`` (``enet``: geneEXPLORE's ``glmnet`` standardises the features itself; ``best``
is dmg's own and its candidates expect standardised features); the random forest gets their
``random_state=42`` (``PUBLISHED_PARAMS``) unless the caller sets one; rows reach every fit in
their shuffled order. Its headline per model is the authors' figure (``PUBLISHED_HEADLINE``).

The CNN goes through the same folds with its batched trainer (``dmg_ml.evaluation.cv``), which
trains a gene's five folds as one stacked model and carries weights across folds in the
published audit; its rows come back in the same shape as every other model's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from dmg_ml.data.inputs import GeneData
from dmg_ml.evaluation.cv import (
    PROTOCOLS,
    CVScores,
    FoldSplit,
    GeneCVResult,
    cross_validate,
    honest_splits,
    published_splits,
    scale_features,
)
from dmg_ml.evaluation.metrics import pearson_r2, r2
from dmg_ml.models.registry import make_model
from dmg_ml.training.reference import TrainConfig

FOLD_COLUMNS = ["fold", "n_train", "n_test", "r2", "pearson_r2", "seconds"]
#: Models whose features the published audit still standardises (on the outer training rows).
PUBLISHED_SCALED = frozenset({"enet", "best"})
#: Constructor arguments of the authors' scripts, under the caller's ``params``.
PUBLISHED_PARAMS: dict[str, dict[str, Any]] = {"rf": {"random_state": 42}}
#: The figure the authors reported per model (the paper's table): their CNN script averages the
#: per-fold squared Pearson correlation, their SVM, random-forest and Deep Forest scripts the
#: per-fold ``r2_score``; geneEXPLORE squares the correlation of all pre-validated predictions
#: with y (pooled). ``mlp`` is scored as the CNN; other models as their scikit-learn baselines.
PUBLISHED_HEADLINE = {
    "cnn": "mean_fold_pearson_r2",
    "mlp": "mean_fold_pearson_r2",
    "svr": "mean_fold_r2",
    "rf": "mean_fold_r2",
    "cascade_forest": "mean_fold_r2",
    "enet": "pearson_r2",
}


def headline_metric(model: str, protocol: str) -> str:
    """The figure a model's results are headlined by: pooled out-of-fold R² when honest, the
    authors' own figure (``PUBLISHED_HEADLINE``) in the published audit."""
    if protocol == "honest":
        return "r2"
    return PUBLISHED_HEADLINE.get(model, "mean_fold_r2")


@dataclass
class ModelCVResult(CVScores):
    """Cross-validated performance of one model on one gene.

    ``r2`` and ``pearson_r2`` pool the out-of-fold predictions; ``mean_fold_r2`` and
    ``mean_fold_pearson_r2`` average the per-fold figures. ``headline`` is the one to report for
    the protocol (``headline_metric``): in the published audit, the authors' own figure.
    """

    gene: str
    model: str
    protocol: str
    fold_metrics: pd.DataFrame
    oof: pd.DataFrame
    r2: float
    pearson_r2: float
    n_cpgs: int
    seconds: float

    @property
    def headline_metric(self) -> str:
        return headline_metric(self.model, self.protocol)


def outer_splits(gene: GeneData, protocol: str, n_folds: int = 5, seed: int = 0) -> list[FoldSplit]:
    """The outer folds every model of a gene is scored on."""
    if protocol == "honest":
        return honest_splits(gene.patients, n_folds, seed)
    if protocol == "published":
        return published_splits(len(gene.y), n_folds)
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def evaluate(
    genes: Sequence[GeneData],
    model: str,
    protocol: str = "honest",
    params: Mapping[str, Any] | None = None,
    n_folds: int = 5,
    seed: int = 0,
    on_gene_done: Callable[[ModelCVResult], None] | None = None,
) -> list[ModelCVResult]:
    """Cross-validate ``model`` (a registry name) on every gene, on the shared outer folds.

    ``params`` are the model's constructor arguments. For ``cnn`` they are ``cross_validate``'s
    (``config``, ``trainer``, ``device``).
    """
    params = dict(params or {})
    if model == "cnn":
        return _evaluate_cnn(genes, protocol, params, n_folds, seed, on_gene_done)
    results = []
    for gene in genes:
        result = _evaluate_gene(gene, model, protocol, params, n_folds, seed)
        results.append(result)
        if on_gene_done is not None:
            on_gene_done(result)
    return results


def _evaluate_gene(gene: GeneData, model: str, protocol: str, params: dict[str, Any],
                   n_folds: int, seed: int) -> ModelCVResult:
    started = time.perf_counter()
    published = protocol == "published"
    if published:
        params = {**PUBLISHED_PARAMS.get(model, {}), **params}
    scaled = not published or model in PUBLISHED_SCALED
    metrics, oof = [], []
    for split in outer_splits(gene, protocol, n_folds, seed):
        fold_started = time.perf_counter()
        fit_rows, test = split.scaler_rows, split.test
        X_fit, X_test = gene.X[fit_rows], gene.X[test]
        if scaled:
            scaler = StandardScaler().fit(X_fit.astype(np.float64))
            X_fit = scale_features(X_fit, scaler.mean_, scaler.scale_)
            X_test = scale_features(X_test, scaler.mean_, scaler.scale_)
        groups = None if published else gene.patients[fit_rows]
        fitted = make_model(model, **params).fit(X_fit, gene.y[fit_rows], groups=groups)
        pred = np.asarray(fitted.predict(X_test), dtype=np.float64)
        metrics.append({
            "fold": split.fold, "n_train": len(fit_rows), "n_test": len(test),
            "r2": r2(gene.y[test], pred), "pearson_r2": pearson_r2(gene.y[test], pred),
            "seconds": time.perf_counter() - fold_started,
        })
        oof.append(pd.DataFrame({
            "row": test, "sample": gene.samples[test], "fold": split.fold,
            "y_true": gene.y[test].astype(np.float64), "y_pred": pred,
        }))
    return _result(gene, model, protocol, pd.DataFrame(metrics, columns=FOLD_COLUMNS),
                   pd.concat(oof), time.perf_counter() - started)


def _result(gene: GeneData, model: str, protocol: str, folds: pd.DataFrame, oof: pd.DataFrame,
            seconds: float) -> ModelCVResult:
    oof = oof.sort_values("row").drop(columns="row").reset_index(drop=True)
    return ModelCVResult(
        gene=gene.gene, model=model, protocol=protocol, fold_metrics=folds, oof=oof,
        r2=r2(oof["y_true"], oof["y_pred"]), pearson_r2=pearson_r2(oof["y_true"], oof["y_pred"]),
        n_cpgs=gene.X.shape[1], seconds=seconds,
    )


def _evaluate_cnn(genes: Sequence[GeneData], protocol: str, params: dict[str, Any],
                  n_folds: int, seed: int, on_gene_done: Callable[[ModelCVResult], None] | None,
                  ) -> list[ModelCVResult]:
    by_name = {gene.gene: gene for gene in genes}

    def convert(result: GeneCVResult) -> ModelCVResult:
        folds = result.fold_metrics.assign(
            n_train=result.fold_metrics["n_train"] + result.fold_metrics["n_valid"],
            seconds=result.seconds / max(1, len(result.fold_metrics)),
        )[FOLD_COLUMNS]
        oof = result.oof.assign(row=np.arange(len(result.oof)))
        converted = _result(by_name[result.gene], "cnn", protocol, folds, oof, result.seconds)
        if on_gene_done is not None:
            on_gene_done(converted)
        return converted

    converted: list[ModelCVResult] = []
    params["config"] = replace(params.get("config") or TrainConfig(), seed=seed)
    cross_validate(genes, protocol=protocol, n_folds=n_folds,
                   on_gene_done=lambda r: converted.append(convert(r)), **params)
    return converted
