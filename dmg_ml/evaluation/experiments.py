"""The paper's experiments (docs/design.md §5): R² by CpG count, window, tissue, and generalisation
to other cohorts; the pieces that are not the cross-validation engine itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from dmg_ml.data.inputs import GeneData
from dmg_ml.data.splits import HONEST, outer_splits
from dmg_ml.evaluation.engine import ModelCVResult
from dmg_ml.evaluation.metrics import pearson_r2, r2
from dmg_ml.evaluation.registry import make_model
from dmg_ml.models.checkpoint import (
    FoldCheckpoint,
    GeneCheckpoint,
    load_fold_model,
    scale_features,
)

#: Edges of the CpG-count bins (CpGs in a gene's window); the last bin is open.
CPG_BIN_EDGES: tuple[int, ...] = (1, 25, 50, 100, 200, 400, 800)
KEYS = ["cohort", "protocol", "window_bp", "tissue", "model"]


def r2_by_cpg_count(gene_metrics: pd.DataFrame,
                    edges: Sequence[int] = CPG_BIN_EDGES) -> pd.DataFrame:
    """Genes, mean and median R² and r² per model and bin of the number of CpGs in the window.

    ``gene_metrics`` has ``cohort, protocol, window_bp, tissue, model, gene, n_cpgs, r2,
    pearson_r2``.
    Bins are ``[edge_i, edge_{i+1})``, the last ``[edge_last, ∞)``; empty bins are left out.
    """
    bounds = [*edges, np.inf]
    labels = [f"{lo}-{hi - 1}" if np.isfinite(hi) else f"{lo}+"
              for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    binned = gene_metrics.assign(
        cpg_bin=pd.cut(gene_metrics["n_cpgs"], bins=bounds, right=False, labels=labels)
    ).dropna(subset=["cpg_bin"])
    lows = dict(zip(labels, edges, strict=True))
    table = (
        binned.groupby([*KEYS, "cpg_bin"], observed=True)
        .agg(genes=("gene", "size"), mean_r2=("r2", "mean"), median_r2=("r2", "median"),
             mean_pearson_r2=("pearson_r2", "mean"), median_n_cpgs=("n_cpgs", "median"))
        .reset_index()
    )
    table["cpg_bin"] = table["cpg_bin"].astype(str)
    table["bin_low"] = table["cpg_bin"].map(lows).astype("int64")
    return table.sort_values([*KEYS, "bin_low"]).reset_index(drop=True)


def gene_metrics_frame(results: Sequence[ModelCVResult]) -> pd.DataFrame:
    """One row per model and gene of cross-validation results: pooled and mean-of-fold R², r²."""
    return pd.DataFrame({
        "model": [r.model for r in results],
        "gene": [r.gene for r in results],
        "n_cpgs": pd.array([r.n_cpgs for r in results], dtype="int64"),
        "n_samples": pd.array([len(r.oof) for r in results], dtype="int64"),
        "r2": [r.r2 for r in results],
        "pearson_r2": [r.pearson_r2 for r in results],
        "mean_fold_r2": [r.mean_fold_r2 for r in results],
        "mean_fold_pearson_r2": [r.mean_fold_pearson_r2 for r in results],
        "seconds": [r.seconds for r in results],
    })


@dataclass
class FoldPredictor:
    """A model fitted on one outer fold's training rows of the source cohort.

    ``predict`` takes raw M-values (samples × the source's CpGs, in its order); ``fill`` holds
    the training rows' mean of each CpG, used for a CpG the target cohort did not measure.
    """

    predict: Callable[[np.ndarray], np.ndarray]
    fill: np.ndarray


def fit_fold_predictors(
    gene: GeneData, model: str, params: Mapping[str, Any] | None = None, n_folds: int = 5,
    seed: int = 0,
) -> list[FoldPredictor]:
    """``model`` fitted on the training rows of each honest outer fold of ``gene``, with the
    engine's scaling: the folds, scalers and models the honest cross-validation scores."""
    predictors = []
    for split in outer_splits(gene.patients, HONEST, n_folds, seed):
        rows = split.scaler_rows
        scaler = StandardScaler().fit(gene.X[rows].astype(np.float64))
        fitted = make_model(model, **dict(params or {})).fit(
            scale_features(gene.X[rows], scaler.mean_, scaler.scale_), gene.y[rows],
            groups=gene.patients[rows],
        )
        predictors.append(FoldPredictor(
            predict=partial(_scaled_predict, fitted, scaler.mean_, scaler.scale_),
            fill=scaler.mean_.astype(np.float64),
        ))
    return predictors


def checkpoint_predictors(
    checkpoint: GeneCheckpoint, models: Sequence[FoldCheckpoint] | None = None
) -> list[FoldPredictor]:
    """Models of a saved CNN checkpoint as predictors (their scalers' means fill): ``models``,
    by default the fold models (what the cross-validation scored), or the final model where no
    fold model was kept."""
    if models is None:
        models = checkpoint.folds or checkpoint.models
    predictors = []
    for fold in models:
        loaded = load_fold_model(fold)
        predictors.append(FoldPredictor(loaded.predict, np.asarray(loaded.mean, np.float64)))
    return predictors


def _scaled_predict(model: Any, mean: np.ndarray, scale: np.ndarray, X: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(scale_features(X, mean, scale)), dtype=np.float64)


def aligned_columns(matrix: pd.DataFrame, probe_ids: Sequence[str],
                    samples: Sequence[str]) -> tuple[np.ndarray, float]:
    """Rows ``samples`` × columns ``probe_ids`` of a probes × samples M-value ``matrix``, NaN
    where the matrix lacks a probe; and the share of ``probe_ids`` it has (the coverage)."""
    present = pd.Index(probe_ids).isin(matrix.index)
    X = matrix.reindex(index=list(probe_ids), columns=list(samples)).to_numpy(np.float64).T
    return X, float(present.mean()) if len(present) else 0.0


def fold_predictions(predictors: Sequence[FoldPredictor], X: np.ndarray) -> np.ndarray:
    """Folds × samples predictions of raw M-value rows ``X`` (samples × the model's CpGs); a
    missing value (NaN) takes each fold's training mean."""
    if not predictors:
        raise ValueError("no fold models to predict with")
    missing = np.isnan(X)
    rows = []
    for predictor in predictors:
        filled = np.where(missing, predictor.fill[np.newaxis, :], X)
        rows.append(np.asarray(predictor.predict(filled), dtype=np.float64).ravel())
    return np.vstack(rows)


def generalisation_scores(predictors: Sequence[FoldPredictor], X: np.ndarray,
                          y: np.ndarray) -> dict[str, float]:
    """R² and r² of the mean of the fold models' predictions on a target cohort's samples.

    A CpG the target lacks (NaN in ``X``) takes each fold's training mean.
    """
    mean = fold_predictions(predictors, X).mean(axis=0)
    return {"r2": r2(y, mean), "pearson_r2": pearson_r2(y, mean)}
