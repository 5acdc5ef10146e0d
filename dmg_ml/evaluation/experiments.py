"""The paper's experiments as tables computed from per-gene metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Edges of the CpG-count bins (CpGs in a gene's window); the last bin is open.
CPG_BIN_EDGES: tuple[int, ...] = (1, 25, 50, 100, 200, 400, 800)
KEYS = ["cohort", "protocol", "window_bp", "model"]


def r2_by_cpg_count(gene_metrics: pd.DataFrame,
                    edges: Sequence[int] = CPG_BIN_EDGES) -> pd.DataFrame:
    """Genes, mean and median R² and r² per model and bin of the number of CpGs in the window.

    ``gene_metrics`` has ``cohort, protocol, window_bp, model, gene, n_cpgs, r2, pearson_r2``.
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
