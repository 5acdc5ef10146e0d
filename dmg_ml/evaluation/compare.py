"""Paired comparison of models over genes: what a reviewer asks for beyond the paper's bare means.

For each cohort, protocol, window and tissue, and each pair of models (a, b), over the genes both
were scored on: the mean and median per-gene difference of a metric (a − b), the share of genes each
wins, a Wilcoxon signed-rank p-value (two-sided; genes with no difference dropped, as
``scipy.stats.wilcoxon`` does by default) and a bootstrap 95 % interval of the mean difference
over genes (``scipy.stats.bootstrap``, percentile).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

KEYS = ["cohort", "protocol", "window_bp", "tissue"]
COLUMNS = [*KEYS, "model_a", "model_b", "metric", "genes", "mean_delta", "median_delta",
           "share_a_wins", "share_b_wins", "wilcoxon_p", "ci_low", "ci_high"]


def paired_comparison(gene_metrics: pd.DataFrame, metric: str = "r2", n_resamples: int = 2000,
                      seed: int = 0) -> pd.DataFrame:
    """One row per (cohort, protocol, window, tissue, model pair) from per-gene rows with
    columns ``cohort, protocol, window_bp, tissue, model, gene`` and ``metric``."""
    rows = []
    for keys, group in gene_metrics.groupby(KEYS, sort=True):
        wide = group.pivot_table(index="gene", columns="model", values=metric, aggfunc="first")
        for a, b in combinations(sorted(wide.columns), 2):
            pair = wide[[a, b]].dropna()
            if pair.empty:
                continue
            rows.append({**dict(zip(KEYS, keys, strict=True)), "model_a": a, "model_b": b,
                         "metric": metric,
                         **_paired(pair[a].to_numpy(), pair[b].to_numpy(), n_resamples, seed)})
    return pd.DataFrame(rows, columns=COLUMNS)


def _paired(a: np.ndarray, b: np.ndarray, n_resamples: int, seed: int) -> dict[str, float]:
    delta = a - b
    result = {
        "genes": len(delta),
        "mean_delta": float(delta.mean()),
        "median_delta": float(np.median(delta)),
        "share_a_wins": float((delta > 0).mean()),
        "share_b_wins": float((delta < 0).mean()),
        "wilcoxon_p": np.nan,
        "ci_low": np.nan,
        "ci_high": np.nan,
    }
    if np.count_nonzero(delta) >= 1 and len(delta) >= 2:
        result["wilcoxon_p"] = float(stats.wilcoxon(a, b).pvalue)
    if len(delta) >= 2 and np.ptp(delta) > 0:
        interval = stats.bootstrap(
            (delta,), np.mean, n_resamples=n_resamples, method="percentile",
            rng=np.random.default_rng(seed),
        ).confidence_interval
        result["ci_low"], result["ci_high"] = float(interval.low), float(interval.high)
    elif len(delta):
        result["ci_low"] = result["ci_high"] = float(delta.mean())
    return result
