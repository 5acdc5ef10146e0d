"""The report's numbers as DataFrames, and the scoping every section shares.

The *primary scope* (:func:`primary_scope`) is tissue ``all`` (or the most common tissue) and the
default 1 Mb window (or the window with most rows); the headline, the CpG-count, scatter,
per-gene and ceiling sections use it, the window section its tissue and the tissue section its
window. The headline table scores each model as ``dmg_ml.evaluation.protocols`` says: its R² and
r² are the columns ``headline_columns(model, protocol)`` names (pooled out-of-fold, or the mean
of per-fold values) and its headline figure is the mean over genes of
``headline_metric(model, protocol)``. The other sections read the honest rows, pooled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from dmg_ml.data.splits import HONEST, PROTOCOLS
from dmg_ml.data.windows import DEFAULT_WINDOW_BP
from dmg_ml.evaluation.protocols import headline_columns, headline_metric
from dmg_ml.evaluation.report.inputs import (
    GENE_COLUMNS,
    METRICS,
    MODEL_NAMES,
    N_LABELLED,
    N_RESAMPLES,
    NEAR_CEILING,
    SEED,
    TISSUE_ORDER,
    ReportInputs,
)
from dmg_ml.evaluation.report.markup import window_label

#: ``statistic`` of a headline row: what kind of per-gene value its R² and r² are.
POOLED, MEAN_OF_FOLDS = "pooled out-of-fold", "mean of per-fold values"
_STATS = ("genes", "mean", "median", "ci_low", "ci_high")
_FOLD_PREFIX = "mean_fold_"


def bootstrap_interval(values: Sequence[float] | np.ndarray, n_resamples: int = N_RESAMPLES,
                       seed: int = SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (seeded numpy; resamples in chunks so 14,000
    genes × 2000 resamples stay small). NaN for no values; the value itself for one."""
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return float("nan"), float("nan")
    if data.size == 1 or np.ptp(data) == 0:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // data.size)
    means = np.concatenate([
        data[rng.integers(0, data.size, size=(min(chunk, n_resamples - start), data.size))]
        .mean(axis=1)
        for start in range(0, n_resamples, chunk)
    ])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def primary_scope(gene_metrics: pd.DataFrame) -> tuple[int | None, str]:
    """(window_bp, tissue) of the headline: tissue ``all`` if present, else the most common; the
    default window (1 Mb) if present for that tissue, else the window with most rows (ties: the
    largest). ``(None, 'all')`` for an empty frame."""
    frame = with_tissue(gene_metrics)
    honest = frame[frame["protocol"] == HONEST] if "protocol" in frame else frame
    frame = honest if len(honest) else frame
    if frame.empty:
        return None, "all"
    tissues = frame["tissue"].astype(str)
    tissue = "all" if (tissues == "all").any() else str(tissues.value_counts().idxmax())
    if "window_bp" not in frame:
        return None, tissue
    windows = frame.loc[tissues == tissue, "window_bp"].dropna()
    if windows.empty:
        return None, tissue
    if (windows == DEFAULT_WINDOW_BP).any():
        return DEFAULT_WINDOW_BP, tissue
    counts = windows.value_counts()
    best = counts[counts == counts.max()].index
    return int(max(best)), tissue


def headline_figure(metric: str) -> str:
    """Which of :data:`METRICS` a ``gene_metrics`` column measures: ``mean_fold_r2`` → ``r2``."""
    return metric.removeprefix(_FOLD_PREFIX)


def headline_table(inputs: ReportInputs, n_resamples: int = N_RESAMPLES,
                   seed: int = SEED) -> pd.DataFrame:
    """One row per model and protocol (honest, then the published audit) in the primary scope:
    for R² (``r2_*``) and r² (``pearson_r2_*``) the genes with a value, mean, median and the
    bootstrap 95 % interval of the mean over genes. The per-gene values are the pair
    ``headline_columns(model, protocol)`` names; ``statistic`` says which kind they are
    (:data:`POOLED` or :data:`MEAN_OF_FOLDS`) and ``headline`` is the model's headline metric,
    ``headline_metric(model, protocol)``: its figure is the mean of ``r2`` or ``pearson_r2``
    (:func:`headline_figure`). A column the input lacks counts as no values. Models are ordered
    by honest mean R², best first."""
    columns = ["model", "protocol", "window_bp", "tissue", "statistic", "headline",
               *(f"{m}_{s}" for m in METRICS for s in _STATS)]
    window, tissue = primary_scope(inputs.gene_metrics)
    scoped_rows = honest_or_all(scoped(inputs.gene_metrics, window, tissue), honest_only=False)
    rows = []
    for (model, protocol), group in scoped_rows.groupby(["model", "protocol"], sort=True):
        sources = headline_columns(str(model), str(protocol))
        by_gene = group.reindex(columns=["gene", *sources]).groupby("gene")[list(sources)].mean()
        row = {"model": model, "protocol": protocol, "window_bp": window, "tissue": tissue,
               "statistic": MEAN_OF_FOLDS if sources[0].startswith(_FOLD_PREFIX) else POOLED,
               "headline": headline_metric(str(model), str(protocol))}
        for metric, source in zip(METRICS, sources, strict=True):
            values = by_gene[source].dropna().to_numpy(dtype=float)
            low, high = bootstrap_interval(values, n_resamples, seed)
            row.update({
                f"{metric}_genes": int(values.size),
                f"{metric}_mean": float(values.mean()) if values.size else np.nan,
                f"{metric}_median": float(np.median(values)) if values.size else np.nan,
                f"{metric}_ci_low": low, f"{metric}_ci_high": high,
            })
        rows.append(row)
    table = pd.DataFrame(rows, columns=columns)
    if table.empty:
        return table
    honest = table[table["protocol"] == HONEST].set_index("model")["r2_mean"]
    table["_model_rank"] = table["model"].map(-honest).fillna(np.inf)
    table["_protocol_rank"] = table["protocol"].map(rank(PROTOCOLS))
    table = table.sort_values(["_model_rank", "model", "_protocol_rank", "protocol"])
    return table.drop(columns=["_model_rank", "_protocol_rank"]).reset_index(drop=True)


def ceiling_table(inputs: ReportInputs) -> pd.DataFrame | None:
    """Synthetic cohorts: per model (honest protocol, primary scope) on the genes that have both a
    score and an expected R², the mean R², the mean expected R² (the ceiling: the share of
    variance methylation truly explains), the mean and median gap (expected − R²) and the share of
    genes whose R² is at most ``NEAR_CEILING`` below it. Closest to the ceiling first. ``None``
    without ground truth."""
    if inputs.ground_truth is None:
        return None
    columns = ["model", "genes", "mean_r2", "mean_expected_r2", "mean_gap", "median_gap",
               "share_near_ceiling"]
    joined = ceiling_rows(inputs)
    if joined.empty:
        return pd.DataFrame(columns=columns)
    joined = joined.assign(gap=joined["expected_r2"] - joined["r2"])
    table = (
        joined.groupby("model")
        .agg(genes=("gene", "size"), mean_r2=("r2", "mean"),
             mean_expected_r2=("expected_r2", "mean"), mean_gap=("gap", "mean"),
             median_gap=("gap", "median"),
             share_near_ceiling=("gap", lambda gap: float((gap <= NEAR_CEILING).mean())))
        .reset_index()
    )
    return table[columns].sort_values(["mean_gap", "model"]).reset_index(drop=True)


def gene_table(inputs: ReportInputs) -> pd.DataFrame:
    """Every per-gene row of ``gene_metrics`` (all protocols, windows, tissues and models) with
    the simulator's ``expected_r2`` on synthetic cohorts: the CSV beside the page. Known columns
    first (:data:`GENE_COLUMNS`), then any others; sorted in the report's order (honest first,
    window, tissue, CNN and elastic net first) and by gene."""
    frame = with_tissue(inputs.gene_metrics)
    truth = inputs.ground_truth
    if truth is not None and not truth.empty and "gene" in frame:
        expected = truth.groupby("gene")["expected_r2"].mean()
        frame = frame.assign(expected_r2=frame["gene"].map(expected))
    columns = [c for c in GENE_COLUMNS if c in frame]
    columns += [c for c in frame.columns if c not in columns]
    keys = [c for c in ("protocol", "window_bp", "tissue", "model", "gene") if c in frame]
    return frame.sort_values(keys, key=_report_order, kind="stable")[columns].reset_index(
        drop=True)


def extreme_genes(scores: pd.Series, n: int = N_LABELLED) -> tuple[list[str], list[str]]:
    """The ``n`` genes with the highest scores (best first) and the ``n`` lowest (worst first),
    never the same gene twice; NaN scores are left out."""
    scores = scores.dropna().sort_values(ascending=False, kind="stable")
    best = [str(g) for g in scores.index[:n]]
    worst = [str(g) for g in scores.index[::-1][:n] if str(g) not in best]
    return best, worst


def per_gene(inputs: ReportInputs, window: int | None, tissue: str) -> tuple[pd.DataFrame, str]:
    """One row per gene of the honest primary scope: CpGs, samples, expected R² (synthetic), then
    each model's R² and r² (columns ``model:r2``, ``model:pearson_r2``), sorted by the lead
    model's R² (the CNN, else the best honest mean R²), best first; and the lead model."""
    honest = honest_or_all(scoped(inputs.gene_metrics, window, tissue))
    if honest.empty:
        return pd.DataFrame(), ""
    models = [model for model, _ in by_model(honest)]
    means = honest.groupby("model")["r2"].mean()
    lead = "cnn" if "cnn" in models else str(means.idxmax())
    scores = honest.groupby(["gene", "model"])[list(METRICS)].mean().unstack("model")
    wide = pd.DataFrame(index=scores.index)
    for column in ("n_cpgs", "n_samples"):
        if column in honest:
            wide[column] = honest.groupby("gene")[column].max()
    truth = inputs.ground_truth
    if truth is not None and not truth.empty:
        wide["expected_r2"] = truth.groupby("gene")["expected_r2"].mean().reindex(wide.index)
    for model in models:
        for metric in METRICS:
            wide[f"{model}:{metric}"] = scores[(metric, model)]
    wide = wide.sort_values(f"{lead}:r2", ascending=False, na_position="last", kind="stable")
    return wide.rename_axis("gene").reset_index(), lead


def run_table(metrics: pd.DataFrame) -> pd.DataFrame | None:
    """One row per run id of ``gene_metrics``: its protocols, models, genes, windows, tissues."""
    if "run_id" not in metrics or metrics["run_id"].dropna().empty:
        return None
    frame = with_tissue(metrics).dropna(subset=["run_id"]).astype({"run_id": str})

    def joined(values) -> str:
        return ", ".join(sorted({str(v) for v in values.dropna()}))

    aggregations = {"protocol": joined, "model": joined, "gene": "nunique"}
    if "window_bp" in frame:
        frame = frame.assign(window_bp=frame["window_bp"].map(window_label))
        aggregations["window_bp"] = joined
    aggregations["tissue"] = joined
    aggregations = {k: v for k, v in aggregations.items() if k in frame}
    table = frame.groupby("run_id").agg(aggregations).reset_index()
    return table.rename(columns={"gene": "genes", "model": "models", "window_bp": "window (±)"})


def ceiling_rows(inputs: ReportInputs) -> pd.DataFrame:
    """Honest per-gene R² in the primary scope joined to the expected R² (mean per gene)."""
    empty = pd.DataFrame(columns=["model", "gene", "r2", "expected_r2", "run_id"])
    if inputs.ground_truth is None or inputs.ground_truth.empty:
        return empty
    window, tissue = primary_scope(inputs.gene_metrics)
    honest = honest_or_all(scoped(inputs.gene_metrics, window, tissue))
    if honest.empty:
        return empty
    expected = inputs.ground_truth.groupby("gene")["expected_r2"].mean()
    runs = (honest.groupby(["model", "gene"])["run_id"].first() if "run_id" in honest
            else None)
    scores = honest.groupby(["model", "gene"])["r2"].mean()
    joined = scores.to_frame().join(runs) if runs is not None else scores.to_frame()
    joined = joined.reset_index().merge(expected.reset_index(), on="gene", how="inner")
    return joined.dropna(subset=["r2", "expected_r2"])


# ---------------------------------------------------------------------------------------------
# Scoping and order


def nonempty(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """The frame, or None when it is None or empty."""
    return None if frame is None or frame.empty else frame


def with_tissue(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame, with tissue ``all`` when it has no tissue column."""
    return frame if "tissue" in frame else frame.assign(tissue="all")


def scoped(frame: pd.DataFrame | None, window: int | None,
           tissue: str | None) -> pd.DataFrame | None:
    """Rows of a window and tissue (either None: all); a missing tissue column reads as 'all'."""
    if frame is None:
        return None
    frame = with_tissue(frame)
    if window is not None and "window_bp" in frame:
        frame = frame[frame["window_bp"] == window]
    if tissue is not None:
        frame = frame[frame["tissue"].astype(str) == str(tissue)]
    return frame


def honest_or_all(frame: pd.DataFrame, honest_only: bool = True) -> pd.DataFrame:
    """Per-gene rows with at least the columns the report reads (none when they are missing);
    the honest ones when ``honest_only``."""
    if not {"protocol", "model", "gene", *METRICS} <= set(frame.columns):
        return pd.DataFrame(columns=["protocol", "model", "gene", *METRICS, "run_id"])
    return frame[frame["protocol"] == HONEST] if honest_only else frame


def protocol_rows(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """The honest rows, else those of the first protocol present; None when empty."""
    if frame is None or frame.empty:
        return None
    if "protocol" not in frame:
        return frame.assign(protocol=HONEST)
    protocols = sorted(frame["protocol"].astype(str).unique(),
                       key=lambda p: (rank(PROTOCOLS).get(p, 9), p))
    return frame[frame["protocol"] == protocols[0]]


def by_model(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(model, rows) in a stable order: the CNN and elastic net first, the mean floor last."""
    preferred = list(MODEL_NAMES)
    models = sorted(frame["model"].astype(str).unique(),
                    key=lambda m: (preferred.index(m) if m in preferred else len(preferred), m))
    return [(model, frame[frame["model"].astype(str) == model]) for model in models]


def rank(order: Iterable[str]) -> dict[str, int]:
    """Each value's position in ``order``."""
    return {value: index for index, value in enumerate(order)}


def run_ids(frame: pd.DataFrame | None) -> list[str] | None:
    """The sorted run ids of a frame; None without any."""
    if frame is None or "run_id" not in frame:
        return None
    return sorted({str(r) for r in frame["run_id"].dropna()}) or None


_ORDERS = {"protocol": rank(PROTOCOLS), "tissue": rank(TISSUE_ORDER),
           "model": rank(MODEL_NAMES)}


def _report_order(column: pd.Series) -> pd.Series:
    """A sort key putting protocols, tissues and models in the report's order (others after,
    by name); other columns sort as they are."""
    ranks = _ORDERS.get(str(column.name))
    if ranks is None:
        return column
    return column.astype(str).map(lambda value: f"{ranks.get(value, len(ranks)):03d} {value}")
