"""The geneEXPLORE preprocessing protocol (docs/design.md §3): M-values, missingness, imputation.

Values are checked before they are transformed, so that a bad cell fails the step with its probe
or gene and sample named rather than being dropped or reaching pandera as a bare row number: betas
outside [0, 1] (``check_beta_range``; ±inf included) and NaN or ±inf in the expression matrix
(``check_expression_finite``, called by ``filter_expression``; a −inf would otherwise pull its
gene's mean below the threshold and drop the gene unnoticed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: |M| never exceeds this: β = 1 → +10, β = 0 → −10, and betas so close to 0 or 1 that their
#: M-value would pass ±10 are clamped too, so no infinity reaches a table.
M_CLAMP = 10.0
MAX_MISSING_FRACTION = 0.2
MIN_MEAN_EXPRESSION = 1.0


class BetaRangeError(ValueError):
    """A beta value lies outside [0, 1]."""


class NonFiniteValueError(ValueError):
    """A matrix that must hold numbers everywhere holds NaN, inf or −inf."""


def check_beta_range(beta: np.ndarray, row_ids: np.ndarray, samples: list[str]) -> None:
    """Raise ``BetaRangeError`` naming a few (probe, sample, value) cells outside [0, 1]."""
    bad = (beta < 0) | (beta > 1)
    if bad.any():
        cells = _first_cells(beta, bad, row_ids, samples)
        raise BetaRangeError(
            f"{int(bad.sum())} beta value(s) outside [0, 1], e.g. (probe, sample, beta) {cells}"
        )


def _first_cells(
    values: np.ndarray,
    bad: np.ndarray,
    row_ids: np.ndarray | pd.Index,
    columns: list[str] | pd.Index,
    limit: int = 5,
) -> list[tuple[str, str, float]]:
    """(row id, column, value) of the first ``limit`` cells flagged in ``bad``, row by row."""
    rows, cols = np.nonzero(bad)
    first = zip(rows[:limit], cols[:limit], strict=True)
    return [(str(row_ids[r]), str(columns[c]), float(values[r, c])) for r, c in first]


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


def nan_euclidean(values: np.ndarray) -> np.ndarray:
    """Samples × samples nan-Euclidean distances of the columns of a probes × samples block.

    scikit-learn's definition: ``sqrt(n_probes / n_shared · Σ_shared (a − b)²)``, over the probes
    both samples have; infinite when they share none.
    """
    present = (~np.isnan(values)).astype(np.float64)
    x = np.where(present > 0, values, 0.0).astype(np.float64)
    squares = x * x
    shared = present.T @ present
    sum_sq = squares.T @ present + present.T @ squares - 2.0 * (x.T @ x)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.maximum(sum_sq, 0.0) * values.shape[0] / shared
    scaled[shared == 0] = np.inf
    return np.sqrt(scaled)


def impute_knn(m_values: np.ndarray, n_neighbors: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaNs of a probes × samples block from the ``n_neighbors`` most similar samples.

    The semantics of scikit-learn's ``KNNImputer`` (uniform weights): samples are compared by
    nan-Euclidean distance over the probes of the block, and a missing value becomes the mean of
    that probe over the nearest samples that have it (the probe's mean if none has it). Blocks of
    a few thousand probes keep memory bounded while giving each distance thousands of CpGs.
    ``KNNImputer`` itself takes ~20 s per 2,700-probe block of a full cohort (over an hour per
    cohort); this computes the distances with three matrix products and vectorises over probes.
    Returns the filled block and the mask of imputed cells.
    """
    mask = np.isnan(m_values)
    if not mask.any():
        return m_values, mask
    filled = m_values.copy()
    distances = nan_euclidean(m_values)
    np.fill_diagonal(distances, np.inf)  # a sample is not its own donor
    order = np.argsort(distances, axis=1, kind="stable")
    probe_means = np.nanmean(np.where(mask.all(axis=1, keepdims=True), 0.0, m_values), axis=1)
    probes, samples = np.nonzero(mask)
    # Nearly always the k nearest donors lie among the nearest few k samples: take those for all
    # cells at once, then walk the full donor order only for the cells left short.
    width = min(order.shape[1], 5 * n_neighbors)
    estimate, short = _donor_mean(m_values, probes, order[samples, :width], n_neighbors)
    if short.any():
        rest = np.flatnonzero(short)
        estimate[rest], _ = _donor_mean(m_values, probes[rest], order[samples[rest]], n_neighbors)
    filled[probes, samples] = np.where(np.isnan(estimate), probe_means[probes], estimate)
    return filled.astype(np.float32), mask


def _donor_mean(
    values: np.ndarray, probes: np.ndarray, donors: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each cell's probe over its first ``k`` donors having it; flags cells short of k."""
    candidates = values[probes[:, None], donors]
    usable = ~np.isnan(candidates)
    chosen = usable & (np.cumsum(usable, axis=1) <= k)
    counts = chosen.sum(axis=1)
    sums = np.where(chosen, candidates, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts, counts < k


def check_expression_finite(matrix: pd.DataFrame, source: str) -> None:
    """Raise ``NonFiniteValueError`` naming ``source``, the count and a few (gene, sample, value)
    cells when the genes × samples ``matrix`` holds NaN, inf or −inf."""
    values = matrix.to_numpy()
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        cells = _first_cells(values, bad, matrix.index, matrix.columns)
        raise NonFiniteValueError(
            f"{source}: {int(bad.sum())} non-finite expression value(s) (NaN, inf or -inf), "
            f"e.g. (gene, sample, value) {cells}"
        )


def filter_expression(
    expression: pd.DataFrame, min_mean: float = MIN_MEAN_EXPRESSION, source: str | None = None
) -> pd.DataFrame:
    """Keep genes (rows) whose mean log2 expression over samples (columns) exceeds ``min_mean``.

    Every value must be finite (``check_expression_finite``); ``source`` names the file in the
    error, by default ``expression.attrs["source"]`` as set by ``xena.read_matrix``.
    """
    check_expression_finite(expression, source or expression.attrs.get("source", "expression"))
    return expression[expression.mean(axis=1) > min_mean]
