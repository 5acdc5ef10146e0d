"""The geneEXPLORE preprocessing protocol (DESIGN.md §3): M-values, missingness, imputation."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.impute import KNNImputer

#: |M| never exceeds this: β = 1 → +10, β = 0 → −10, and betas so close to 0 or 1 that their
#: M-value would pass ±10 are clamped too, so no infinity reaches a table.
M_CLAMP = 10.0
MAX_MISSING_FRACTION = 0.2
MIN_MEAN_EXPRESSION = 1.0


class BetaRangeError(ValueError):
    """A beta value lies outside [0, 1]."""


def check_beta_range(beta: np.ndarray, row_ids: np.ndarray, samples: list[str]) -> None:
    """Raise ``BetaRangeError`` naming a few (probe, sample, value) cells outside [0, 1]."""
    bad = (beta < 0) | (beta > 1)
    if bad.any():
        rows, cols = np.nonzero(bad)
        first = zip(rows[:5], cols[:5], strict=True)
        cells = [(str(row_ids[r]), samples[c], float(beta[r, c])) for r, c in first]
        raise BetaRangeError(
            f"{int(bad.sum())} beta value(s) outside [0, 1], e.g. (probe, sample, beta) {cells}"
        )


def beta_to_m(beta: np.ndarray) -> np.ndarray:
    """M = log2(β / (1 − β)), clamped to ±``M_CLAMP``; NaN stays NaN."""
    beta = np.asarray(beta, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.log2(beta) - np.log2(1.0 - beta)
    return np.clip(m, -M_CLAMP, M_CLAMP).astype(np.float32)


def missing_fraction(values: np.ndarray) -> np.ndarray:
    """Fraction of NaN per row."""
    if values.shape[1] == 0:
        return np.ones(values.shape[0])
    return np.isnan(values).mean(axis=1)


def impute_knn(m_values: np.ndarray, n_neighbors: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaNs of a probes × samples block from the ``n_neighbors`` most similar samples.

    Samples are compared over the probes of the block (nan-Euclidean distance, scikit-learn's
    ``KNNImputer``); a missing value becomes the mean of that probe in the nearest samples that
    have it. Blocks of a few thousand probes keep memory bounded while giving each distance
    thousands of CpGs to work with. Returns the filled block and the mask of imputed cells.
    """
    mask = np.isnan(m_values)
    if not mask.any():
        return m_values, mask
    imputer = KNNImputer(n_neighbors=n_neighbors, keep_empty_features=True)
    filled = imputer.fit_transform(m_values.T).T.astype(np.float32)
    return filled, mask


def filter_expression(
    expression: pd.DataFrame, min_mean: float = MIN_MEAN_EXPRESSION
) -> pd.DataFrame:
    """Keep genes (rows) whose mean log2 expression over samples (columns) exceeds ``min_mean``."""
    return expression[expression.mean(axis=1) > min_mean]
