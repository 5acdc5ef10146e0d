"""One cross-validation engine for every model of the comparison, the CNN included
(docs/design.md §5).

Every model is scored on the same outer folds: ``dmg_ml.data.splits.outer_splits`` is the one
place folds come from (honest: patient-grouped ``GroupKFold``; published: the authors' row
shuffle then ungrouped ``KFold(42)``). A model is built by name from the registry. Most are fitted
fold by fold: the features standardised with a scaler fitted on the outer training rows only
(the published audit scales only where the authors' pipeline did:
``dmg_ml.evaluation.protocols``), fitted on those rows (with their patients, for anything it
chooses on an inner split). A model with ``fit_folds`` (the CNN) is handed every fold of every
gene at once and trains them as one stacked batch. Either way the engine then scores each fold
model on the outer test rows it never saw, the same way: R² and r² per fold and pooled over the
out-of-fold predictions, into one result type, ``ModelCVResult``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from dmg_ml.data.inputs import GeneData
from dmg_ml.data.splits import (
    HONEST,
    N_FOLDS,
    PUBLISHED,
    FoldSplit,
    final_split,
    outer_splits,
)
from dmg_ml.evaluation.metrics import pearson_r2, r2
from dmg_ml.evaluation.protocols import PUBLISHED_PARAMS, PUBLISHED_SCALED, headline_metric
from dmg_ml.evaluation.registry import make_model
from dmg_ml.models.base import FittedFold
from dmg_ml.models.checkpoint import (
    FoldCheckpoint,
    GeneCheckpoint,
    half_precision,
    load_fold_model,
    scale_features,
)

FOLD_COLUMNS = ["fold", "n_train", "n_test", "r2", "pearson_r2", "seconds"]
#: Per-fold facts a model's training reports (the CNN's), in ``ModelCVResult.training``.
TRAINING_COLUMNS = ["fold", "n_valid", "epochs_run", "best_epoch"]


@dataclass
class ModelCVResult:
    """Cross-validated performance of one model on one gene.

    ``r2`` and ``pearson_r2`` pool the out-of-fold predictions; ``mean_fold_r2`` and
    ``mean_fold_pearson_r2`` average the per-fold figures of ``fold_metrics``. ``headline`` is
    the figure to report for the protocol (``dmg_ml.evaluation.protocols.headline_metric``).
    ``seconds`` is the wall time of the gene's fits (genes trained in one batch share it
    equally). ``training`` holds what the model's training did per fold where it reports it
    (``TRAINING_COLUMNS``; the CNN); ``fold_models`` and ``final`` the saved form of its fold
    models and of its final model (trained on every sample) where the model can be stored.
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
    training: pd.DataFrame | None = None
    fold_models: list[FoldCheckpoint] = field(default_factory=list, repr=False)
    final: FoldCheckpoint | None = field(default=None, repr=False)

    @property
    def mean_fold_r2(self) -> float:
        return float(self.fold_metrics["r2"].mean())

    @property
    def mean_fold_pearson_r2(self) -> float:
        return float(self.fold_metrics["pearson_r2"].mean())

    @property
    def headline_metric(self) -> str:
        return headline_metric(self.model, self.protocol)

    @property
    def headline(self) -> float:
        return float(getattr(self, self.headline_metric))

    def gene_checkpoint(self, probe_ids: Sequence[str], config: str, run_id: str) -> GeneCheckpoint:
        """The saved form of this gene's models; ``probe_ids`` are the columns of ``X``."""
        return GeneCheckpoint(self.gene, self.protocol, [str(p) for p in probe_ids],
                              self.fold_models, config, run_id, self.final, self.model)


class _Scaled:
    """A model fitted behind a scaler: ``predict`` takes raw rows."""

    def __init__(self, model, mean: np.ndarray | None, scale: np.ndarray | None) -> None:
        self.model, self.mean, self.scale = model, mean, scale

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.mean is not None:
            X = scale_features(X, self.mean, self.scale)
        return np.asarray(self.model.predict(X), dtype=np.float64)


def evaluate(
    genes: Sequence[GeneData],
    model: str,
    protocol: str = HONEST,
    params: Mapping[str, Any] | None = None,
    n_folds: int = N_FOLDS,
    seed: int = 0,
    on_gene_done: Callable[[ModelCVResult], None] | None = None,
    final_model: bool = False,
) -> list[ModelCVResult]:
    """Cross-validate ``model`` (a registry name) on every gene, on the shared outer folds;
    ``on_gene_done`` is called as each gene finishes.

    ``params`` are the model's constructor arguments. ``final_model`` also fits each gene's
    final model on every sample (``final_split``; honest protocol, models with ``fit_folds``),
    in the same batch as its folds: the model to predict new samples with; the folds' scores
    are its estimate.
    """
    params = dict(params or {})
    if protocol == PUBLISHED:
        params = {**PUBLISHED_PARAMS.get(model, {}), **params}
    estimator = make_model(model, **params)
    batched = hasattr(estimator, "fit_folds")
    if final_model and (protocol != HONEST or not batched):
        raise ValueError("final models are trained under the honest protocol, by models that "
                         f"fit their folds together (the CNN); not {model!r} under {protocol}")
    cache: dict[bytes, list[FoldSplit]] = {}
    splits = [_splits(gene, protocol, n_folds, seed, cache) for gene in genes]
    if final_model:
        splits = [[*s, final_split(g.patients, n_folds, seed)] for g, s in zip(genes, splits,
                                                                                strict=True)]
    fitted = (estimator.fit_folds(genes, splits, protocol, seed) if batched
              else _fit_each(genes, splits, model, protocol, params))
    results: list[ModelCVResult | None] = [None] * len(genes)
    for batch, folds in fitted:
        for i, gene_folds in zip(batch, folds, strict=True):
            results[i] = _score(genes[i], model, protocol, splits[i][:n_folds], gene_folds,
                                final_model)
            if on_gene_done is not None:
                on_gene_done(results[i])
    return results


def _splits(gene: GeneData, protocol: str, n_folds: int, seed: int,
            cache: dict[bytes, list[FoldSplit]]) -> list[FoldSplit]:
    """The gene's outer folds, computed once per set of samples and patients."""
    parts = [protocol, str(n_folds), str(seed), *gene.samples, *gene.patients]
    key = hashlib.sha256("\x00".join(parts).encode()).digest()
    if key not in cache:
        cache[key] = outer_splits(gene.patients, protocol, n_folds, seed)
    return cache[key]


def _fit_each(genes: Sequence[GeneData], splits: Sequence[list[FoldSplit]], model: str,
              protocol: str, params: dict[str, Any]) -> Iterator[tuple[list[int],
                                                                       list[list[FittedFold]]]]:
    """Each gene's fold models, fitted one by one on the outer training rows."""
    scaled = protocol != PUBLISHED or model in PUBLISHED_SCALED
    for i, gene in enumerate(genes):
        folds = []
        for split in splits[i]:
            started = time.perf_counter()
            rows = split.scaler_rows
            X, mean, scale = gene.X[rows], None, None
            if scaled:
                scaler = StandardScaler().fit(X.astype(np.float64))
                mean, scale = scaler.mean_, scaler.scale_
                X = scale_features(X, mean, scale)
            groups = None if protocol == PUBLISHED else gene.patients[rows]
            fitted = make_model(model, **params).fit(X, gene.y[rows], groups=groups)
            folds.append(FittedFold(split.fold, _Scaled(fitted, mean, scale),
                                    time.perf_counter() - started))
        yield [i], [folds]


def _score(gene: GeneData, model: str, protocol: str, splits: list[FoldSplit],
           folds: list[FittedFold], final_model: bool) -> ModelCVResult:
    """Score each fold model on its outer test rows; the pooled and per-fold figures."""
    metrics, oof, training = [], [], []
    for split, fitted in zip(splits, folds, strict=False):
        test = split.test
        pred = fitted.predictor.predict(gene.X[test])
        metrics.append({
            "fold": split.fold, "n_train": len(split.scaler_rows), "n_test": len(test),
            "r2": r2(gene.y[test], pred), "pearson_r2": pearson_r2(gene.y[test], pred),
            "seconds": fitted.seconds,
        })
        oof.append(pd.DataFrame({
            "row": test, "sample": gene.samples[test], "fold": split.fold,
            "y_true": gene.y[test].astype(np.float64), "y_pred": pred,
        }))
        if fitted.facts:
            training.append({"fold": split.fold, **fitted.facts})
    frame = pd.concat(oof).sort_values("row").drop(columns="row").reset_index(drop=True)
    kept = [f.checkpoint for f in folds[:len(splits)] if f.checkpoint is not None]
    return ModelCVResult(
        gene=gene.gene, model=model, protocol=protocol,
        fold_metrics=pd.DataFrame(metrics, columns=FOLD_COLUMNS), oof=frame,
        r2=r2(frame["y_true"], frame["y_pred"]),
        pearson_r2=pearson_r2(frame["y_true"], frame["y_pred"]),
        n_cpgs=gene.X.shape[1], seconds=float(sum(f.seconds for f in folds)),
        training=pd.DataFrame(training, columns=TRAINING_COLUMNS) if training else None,
        fold_models=kept,
        final=folds[len(splits)].checkpoint if final_model else None,
    )


def half_precision_delta_r2(result: ModelCVResult, gene: GeneData) -> float:
    """How much half-precision weights move the gene's out-of-fold R²: |R²(fp16) − R²(fp32)|,
    each fold's model predicting the rows it was scored on."""
    rows = pd.Index(gene.samples).get_indexer(result.oof["sample"].astype(str))
    folds = result.oof["fold"].to_numpy()
    full, half = np.empty(len(rows)), np.empty(len(rows))
    for checkpoint in result.fold_models:
        mask = folds == checkpoint.fold
        X = gene.X[rows[mask]]
        full[mask] = load_fold_model(checkpoint).predict(X)
        half[mask] = load_fold_model(half_precision(checkpoint)).predict(X)
    y = result.oof["y_true"].to_numpy()
    return abs(r2(y, half) - r2(y, full))
