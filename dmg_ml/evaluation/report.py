"""The evaluation report: one self-contained HTML page per cohort that a biologist can open offline.

Pure rendering, no Dagster and no warehouse: the ``evaluation_report`` asset queries the tables and
passes them here as :class:`ReportInputs`. Figures are drawn with matplotlib's object-oriented
API (``matplotlib.figure.Figure`` on the Agg canvas, never pyplot: no global figure is left open)
and embedded as base64 PNG data URIs; the CSS is inline; nothing is fetched from the network.
:func:`write_report` writes the page and, beside it, every per-gene row as a CSV
(:data:`GENES_CSV`) that the page links to.

The page opens with where its data came from (:class:`DataSource`: the embedded synthetic hub or
the URL of a real one), then the title, what was not run (each with a link to the section that
says how to run it), and the provenance (run ids, configs) in one collapsed block: the sections
and figures name their scope and how many runs made them, never the run ids themselves.

Sections, in order: the headline table (honest and published side by side, R² and r²; without
published rows, the command that runs them); the paired model comparison; the per-gene scatter of
the CNN against the elastic net; R² against CpG count; R² against window; tissue; generalisation;
the ground-truth ceiling (synthetic cohorts only); the per-gene table (every gene, or the best and
worst). A section whose experiment was not run says so, and how to run it, instead of drawing an
empty figure. Figures label their outlier genes by name.

Which rows are the headline: the *primary scope* (:func:`primary_scope`) is tissue ``all`` (or the
most common tissue) and the default 1 Mb window (or the window with most rows); the CpG-count,
scatter, per-gene and ceiling sections use the same scope, the window section the primary tissue,
and the tissue section the primary window. The honest protocol is scored by its pooled
out-of-fold R² and r² per gene; the published audit by the mean of per-fold R² and r²
(``mean_fold_*``), the statistic behind the authors' figure.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dmg_ml.data.barcodes import TISSUES
from dmg_ml.data.windows import DEFAULT_WINDOW_BP

HONEST, PUBLISHED = "honest", "published"
PROTOCOL_ORDER = (HONEST, PUBLISHED)
TISSUE_ORDER = TISSUES
#: Per-gene metrics: R² (coefficient of determination) and r² (squared Pearson correlation).
METRICS = ("r2", "pearson_r2")
METRIC_LABELS = {"r2": "R²", "pearson_r2": "r²"}
#: Bootstrap of the mean over genes: resamples and seed of the headline's 95 % interval.
N_RESAMPLES = 2000
SEED = 0
#: A gene is "at the ceiling" when its R² is at most this far below the simulator's expected R².
NEAR_CEILING = 0.05
#: Figure resolution: figures are drawn 800-1100 px wide, the page's width, and stay well under
#: 2 MB together.
DPI = 110
#: Genes named in each figure and in the per-gene section: the best and the worst this many.
N_LABELLED = 3
#: The per-gene table shows every gene up to this many, else the best and worst half as many each
#: (the CSV has them all).
MAX_GENE_ROWS = 100
#: The per-gene CSV :func:`write_report` writes beside the page (the page links to it by name).
GENES_CSV = "gene_metrics.csv"
#: Inches: at ``DPI`` the scatter is 880 px square, the line and bar charts 1,050 px wide.
SCATTER_FIGSIZE = (8.0, 8.0)
LINE_FIGSIZE = (9.5, 4.8)
#: R² below this is drawn at this value in scatter plots (and counted in the caption).
R2_FLOOR = -1.0

MODEL_NAMES = {
    "cnn": "DeepMethyGene CNN",
    "enet": "elastic net (geneEXPLORE)",
    "svr": "support vector regression (RBF)",
    "rf": "random forest (100 trees)",
    "cascade_forest": "cascade forest (Deep Forest)",
    "mlp": "the CNN without its convolutions (ablation)",
    "mean": "training mean (the floor)",
    "best": "best model per gene, chosen by nested CV",
}

#: What to run when a section has no data (the asset may adjust these to its asset names).
HOW_TO_RUN = {
    "headline": "materialise cnn_models and model_evaluation for this cohort",
    "comparison": "materialise model_comparison (needs at least two models in gene_metrics)",
    "cnn": "materialise cnn_models (honest protocol) for this cohort",
    "enet": "materialise model_evaluation with models including enet (honest protocol)",
    "cpg": "materialise r2_by_cpg_count",
    "window": "materialise window_experiment (models and windows in its config; `dmg_assets.run "
              "--experiments window`)",
    "tissue": "materialise tissue_experiment (all, tumour and normal samples by default)",
    "generalisation": "materialise cnn_models for this cohort, the data layer of the target "
                      "cohorts, then generalisation",
    "ceiling": "ground truth exists only for synthetic cohorts (the simulator's expected R²)",
}

#: The authors' run exactly (their folds, one model carried across folds, their seed and
#: last-epoch weights), with the experiments skipped: ``{cohort}`` is filled in.
PUBLISHED_COMMAND = ("dmg run --cohorts {cohort} --protocol published --seed 42 "
                     "--keep-last-weights --experiments")
#: The same run from the Dagster UI: the Launchpad config of cnn_models and model_evaluation.
PUBLISHED_LAUNCHPAD = ("ops:\n"
                       "  cnn_models: {config: {protocol: published, seed: 42, "
                       "restore_best_weights: false}}\n"
                       "  model_evaluation: {config: {protocol: published, seed: 42}}")

_HEADLINE_STATS = ("genes", "mean", "median", "ci_low", "ci_high")
#: The per-gene CSV's columns, in order (those the input lacks are left out).
GENE_COLUMNS = ("cohort", "protocol", "window_bp", "tissue", "model", "gene", "n_cpgs",
                "n_samples", "r2", "pearson_r2", "mean_fold_r2", "mean_fold_pearson_r2",
                "expected_r2", "run_id")


@dataclass(frozen=True)
class DataSource:
    """Where the cohort's files came from: the URL the source read (``file://`` for a local hub)
    and whether it is a synthetic hub (simulated samples, not patients)."""

    url: str
    synthetic: bool


@dataclass
class ReportInputs:
    """Everything the report shows, as the warehouse's tables (see the module docstring).

    ``gene_metrics``: one row per (protocol, window_bp, tissue, model, gene), columns ``cohort,
    protocol, window_bp, tissue, model, gene, n_cpgs, n_samples, r2, pearson_r2, mean_fold_r2,
    mean_fold_pearson_r2, run_id`` (duplicates are averaged per gene). ``comparison``: the
    ``model_comparison`` table. ``by_cpg_count``, ``by_window``, ``by_tissue``, ``generalisation``:
    the experiments' tables, ``None`` or empty when not run. ``ground_truth``: ``gene,
    expected_r2`` on synthetic cohorts, else ``None``. ``source``: where the data came from
    (``None``: not recorded, and the page says so). ``provenance``: label → text shown in the
    page's one collapsed provenance block (``generated`` also in the header); ``run ids`` is shown
    only when ``gene_metrics`` has no ``run_id`` column, which lists the runs better. A missing
    ``tissue`` column reads as ``all``.
    """

    cohort: str
    gene_metrics: pd.DataFrame
    comparison: pd.DataFrame
    by_cpg_count: pd.DataFrame
    by_window: pd.DataFrame | None = None
    by_tissue: pd.DataFrame | None = None
    generalisation: pd.DataFrame | None = None
    ground_truth: pd.DataFrame | None = None
    provenance: dict[str, str] = field(default_factory=dict)
    source: DataSource | None = None


# ---------------------------------------------------------------------------------------------
# Tables


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
    frame = _with_tissue(gene_metrics)
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


def headline_table(inputs: ReportInputs, n_resamples: int = N_RESAMPLES,
                   seed: int = SEED) -> pd.DataFrame:
    """One row per model and protocol (honest, then the published audit) in the primary scope:
    for R² (``r2_*``) and r² (``pearson_r2_*``) the genes with a value, mean, median and the
    bootstrap 95 % interval of the mean over genes. ``statistic`` names the per-gene number used:
    pooled out-of-fold for honest, the mean of per-fold values (the authors' figure) for the
    published audit. Models are ordered by honest mean R², best first."""
    columns = ["model", "protocol", "window_bp", "tissue", "statistic",
               *(f"{m}_{s}" for m in METRICS for s in _HEADLINE_STATS)]
    window, tissue = primary_scope(inputs.gene_metrics)
    scoped = _honest_or_all(_scoped(inputs.gene_metrics, window, tissue), honest_only=False)
    rows = []
    for (model, protocol), group in scoped.groupby(["model", "protocol"], sort=True):
        sources, statistic = _metric_columns(group, protocol)
        per_gene = group.groupby("gene")[list(sources)].mean()
        row = {"model": model, "protocol": protocol, "window_bp": window, "tissue": tissue,
               "statistic": statistic}
        for metric, source in zip(METRICS, sources, strict=True):
            values = per_gene[source].dropna().to_numpy(dtype=float)
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
    table["_protocol_rank"] = table["protocol"].map(_rank(PROTOCOL_ORDER))
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
    joined = _ceiling_rows(inputs)
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
    frame = _with_tissue(inputs.gene_metrics)
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


# ---------------------------------------------------------------------------------------------
# The page


class Section(NamedTuple):
    anchor: str
    title: str
    content: str
    #: What this section would show but was not run (for the header's list), else None.
    missing: str | None = None


def write_report(inputs: ReportInputs, path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write the page to ``path`` and every per-gene row to :data:`GENES_CSV` beside it (the
    page links to it), each atomically (a partial file, then a rename): the CSV first, so a page
    never links to a missing or older CSV. Returns (page, CSV)."""
    page = Path(path)
    csv = page.with_name(GENES_CSV)
    _write_atomically(csv, gene_table(inputs).to_csv(index=False))
    _write_atomically(page, render_report(inputs, genes_csv=GENES_CSV))
    return page, csv


def render_report(inputs: ReportInputs, genes_csv: str | None = GENES_CSV) -> str:
    """The complete, self-contained HTML document (UTF-8, no external reference). ``genes_csv``:
    the name of the per-gene CSV beside the page to link to (``None``: no link);
    :func:`write_report` writes both."""
    window, tissue = primary_scope(inputs.gene_metrics)
    sections = [
        _headline_section(inputs, window, tissue),
        _comparison_section(inputs),
        _scatter_section(inputs, window, tissue),
        _cpg_section(inputs, window, tissue),
        _window_section(inputs, tissue),
        _tissue_section(inputs, window),
        _generalisation_section(inputs),
        _ceiling_section(inputs),
        _genes_section(inputs, window, tissue, genes_csv),
    ]
    nav = "".join(f'<li><a href="#{s.anchor}">{_e(s.title)}</a></li>' for s in sections)
    body = "\n".join(f'<section id="{s.anchor}">\n<h2>{_e(s.title)}</h2>\n{s.content}\n</section>'
                     for s in sections)
    synthetic = inputs.source is not None and inputs.source.synthetic
    title = f"dmg evaluation report: {inputs.cohort}"
    scope = (f"Headline scope: window ±{_window_label(window)}, tissue {tissue}."
             if window is not None else "No per-gene metrics were passed to this report.")
    downloads = ""
    if genes_csv and not inputs.gene_metrics.empty:
        downloads = (f' Per-gene results: <a href="#genes">the table</a> and '
                     f'<a href="{_e(genes_csv)}" download>{_e(genes_csv)}</a> (every row, CSV).')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{_e(title)}{' (synthetic data)' if synthetic else ''}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n<main>\n{_source_banner(inputs)}\n"
        f"<header>\n<h1>{_e(title)}</h1>\n"
        f"<p>Generated {_e(inputs.provenance.get('generated', 'at an unrecorded time'))}. "
        f"{_e(scope)}{downloads}</p>\n{_missing_list(sections)}"
        f"<nav><ol>{nav}</ol></nav>\n{_provenance_block(inputs)}</header>\n{body}\n</main>\n"
        "</body>\n</html>\n"
    )


def report_figures(inputs: ReportInputs) -> dict[str, bytes]:
    """The report's figures as PNG bytes by section id (only those that had data), for the UI."""
    window, tissue = primary_scope(inputs.gene_metrics)
    drawn = {
        "cnn-vs-enet": _scatter_figure(inputs, window, tissue)[0],
        "cpg-count": _cpg_figure(inputs, window, tissue)[0],
        "window": _window_figure(inputs, tissue)[0],
        "tissue": _tissue_figure(inputs, window)[0],
        "ceiling": _ceiling_figure(inputs, window, tissue)[0],
    }
    return {name: png for name, png in drawn.items() if png is not None}


def _source_banner(inputs: ReportInputs) -> str:
    """The page's first line: where every number on it comes from."""
    source = inputs.source
    if source is None:
        return ('<p class="source unknown" id="data-source"><b>Data source not recorded.</b> '
                "This report was made without saying which hub its cohort was read from.</p>")
    if source.synthetic:
        return (
            '<p class="source synthetic" id="data-source"><b>Synthetic data.</b> '
            f"{_e(inputs.cohort)} here is the embedded simulated TCGA cohort read from "
            f"<code>{_e(source.url)}</code>: its samples are simulated, not measured on patients. "
            "The numbers say how well the models recover a simulated signal whose truth is "
            'known (<a href="#ceiling">the ceiling</a>), not how well they predict real '
            "expression. For real TCGA data set <code>DMG_SOURCE_URL</code> to the UCSC Xena "
            "hub (see the README) and run again.</p>"
        )
    return (f'<p class="source real" id="data-source"><b>Data: TCGA {_e(inputs.cohort)}</b> '
            f"from <code>{_e(source.url)}</code>.</p>")


def _missing_list(sections: Sequence[Section]) -> str:
    missing = [(s.anchor, s.missing) for s in sections if s.missing]
    if not missing:
        return ""
    items = ", ".join(f'<a href="#{anchor}">{_e(what)}</a>' for anchor, what in missing)
    return (f'<p class="not-run" id="not-run"><b>Not run for this report:</b> {items}. Each '
            "section says how to run it.</p>\n")


def _provenance_block(inputs: ReportInputs) -> str:
    """Run ids and configs, once, in a collapsed block: a run table (run → protocol, models,
    genes, scope) when ``gene_metrics`` has run ids, then the provenance entries."""
    metrics = inputs.gene_metrics
    runs = _run_table(metrics)
    entries = {"cohort": inputs.cohort}
    if inputs.source is not None:
        entries["data source"] = (f"{inputs.source.url} "
                                  f"({'synthetic' if inputs.source.synthetic else 'real'})")
    entries |= {k: v for k, v in inputs.provenance.items()
                if not (k == "run ids" and runs is not None)}
    listed = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in entries.items())
    count = (f"{len(runs)} run{'s' if len(runs) != 1 else ''}, " if runs is not None else "")
    table = _table(runs, headers={"run_id": "run id"}) if runs is not None else ""
    return (f'<details class="provenance" id="provenance"><summary>Provenance: {count}the '
            "configs and the warehouse behind every number</summary>\n"
            f'<dl class="provenance">{listed}</dl>\n{table}</details>\n')


def _run_table(metrics: pd.DataFrame) -> pd.DataFrame | None:
    """One row per run id of ``gene_metrics``: its protocols, models, genes, windows, tissues."""
    if "run_id" not in metrics or metrics["run_id"].dropna().empty:
        return None
    frame = _with_tissue(metrics).dropna(subset=["run_id"]).astype({"run_id": str})

    def joined(values) -> str:
        return ", ".join(sorted({str(v) for v in values.dropna()}))

    aggregations = {"protocol": joined, "model": joined, "gene": "nunique"}
    if "window_bp" in frame:
        frame = frame.assign(window_bp=frame["window_bp"].map(_window_label))
        aggregations["window_bp"] = joined
    aggregations["tissue"] = joined
    aggregations = {k: v for k, v in aggregations.items() if k in frame}
    table = frame.groupby("run_id").agg(aggregations).reset_index()
    return table.rename(columns={"gene": "genes", "model": "models", "window_bp": "window (±)"})


def _headline_section(inputs: ReportInputs, window, tissue) -> Section:
    table = headline_table(inputs)
    published = bool((table["protocol"] == PUBLISHED).any()) if not table.empty else False
    title = ("Headline: every model, honest and published" if published or table.empty
             else "Headline: every model, honest protocol (published not run)")
    explain = (
        "<p><b>R²</b> is the coefficient of determination (scikit-learn <code>r2_score</code>): "
        "the share of the expression variance the prediction explains; it is negative when the "
        "prediction is worse than predicting the mean. <b>r²</b> is the squared Pearson "
        "correlation between prediction and measurement: it ignores the prediction's scale and "
        "offset, so it is never negative and never below R².</p>\n"
        "<p><b>Honest</b> is this platform's estimate: patient-grouped folds, a fresh model per "
        "fold, every choice made on the training folds only; each gene is scored on its pooled "
        "out-of-fold predictions. <b>Published</b> re-runs the authors' protocol (one model "
        "carried across folds, early stopping on the scored fold, ungrouped folds) and reports "
        "the mean of per-fold values as their figure does: it is an audit of how the paper's "
        "numbers were obtained, not an estimate of accuracy. The paper's BRCA means mix the "
        "metrics: DeepMethyGene 0.640 as the mean of per-fold r², geneEXPLORE 0.449 as the r² of "
        "its pooled predictions, random forest 0.374 and SVM 0.327 as the mean of per-fold "
        "R².</p>\n"
        f"<p>The interval is a bootstrap 95 % interval of the mean over genes ({N_RESAMPLES} "
        f"resamples, seed {SEED}). Models are ordered by honest mean R².</p>"
    )
    if table.empty:
        return Section("headline", title, explain + _not_run("No per-gene metrics", "headline"),
                       "any model (no per-gene metrics)")
    groups = [("", 3)] + [(METRIC_LABELS[m], 4) for m in METRICS]
    display = pd.DataFrame({
        "model": table["model"], "protocol": table["protocol"],
        "per-gene value": table["statistic"],
        **{k: v for m in METRICS for k, v in {
            f"{m} genes": table[f"{m}_genes"], f"{m} mean": table[f"{m}_mean"],
            f"{m} median": table[f"{m}_median"],
            f"{m} 95 % CI": [_interval(lo, hi) for lo, hi in
                             zip(table[f"{m}_ci_low"], table[f"{m}_ci_high"], strict=True)],
        }.items()},
    })
    headers = {c: c.split(" ", 1)[1] for c in display.columns if c.startswith(METRICS)}
    row_class = ["audit" if p == PUBLISHED else "" for p in table["protocol"]]
    models = sorted(set(table["model"]), key=list(table["model"]).index)
    legend = "".join(f"<dt>{_e(m)}</dt><dd>{_e(MODEL_NAMES.get(m, m))}</dd>" for m in models)
    content = ((_published_note(inputs.cohort) if not published else "") + explain
               + _table(display, headers=headers, groups=groups, row_class=row_class)
               + f'\n<dl class="models">{legend}</dl>\n'
               + _runs_link(_run_ids(_scoped(inputs.gene_metrics, window, tissue))))
    return Section("headline", title, content,
                   None if published else "the published protocol (the authors' audit)")


def _published_note(cohort: str) -> str:
    command = PUBLISHED_COMMAND.format(cohort=cohort)
    return (
        '<div class="not-run" id="published-not-run"><p><b>No published-protocol rows</b> for '
        f"{_e(cohort)}: the authors' protocol, the audit behind the paper's 0.640, was not run, "
        "so the table holds the honest estimate only. To add it (about as long as the honest "
        "training; <code>--experiments</code> with no name skips the experiments, and the "
        "report is rewritten at the end):</p>\n"
        f"<pre><code>{_e(command)}</code></pre>\n"
        "<p>That is their script's run exactly: their folds and seed, one model carried across "
        "folds, no scaling and the last epoch's weights (the CNN's rows are then named "
        "<code>cnn_last_epoch</code>; leave out <code>--keep-last-weights</code> to put them on "
        "the <code>cnn</code> rows). From the Dagster UI, materialise <code>cnn_models</code> "
        "and <code>model_evaluation</code> for the cohort with this Launchpad config:</p>\n"
        f"<pre><code>{_e(PUBLISHED_LAUNCHPAD)}</code></pre></div>\n"
    )


def _comparison_section(inputs: ReportInputs) -> Section:
    title = "Paired model comparison"
    frame = inputs.comparison
    explain = (
        "<p>For each pair of models (a, b), over the genes both were scored on: the mean and "
        "median per-gene difference a − b, the share of genes each wins, a two-sided Wilcoxon "
        "signed-rank p-value and a bootstrap 95 % interval of the mean difference over genes. "
        "R² first, then r².</p>"
    )
    if frame is None or frame.empty:
        return Section("comparison", title,
                       explain + _not_run("No paired comparison", "comparison"),
                       "the paired model comparison")
    frame = _with_tissue(frame)
    frame = frame.assign(
        _metric=frame["metric"].map(_rank(METRICS)).fillna(len(METRICS)),
        _protocol=frame["protocol"].map(_rank(PROTOCOL_ORDER)).fillna(len(PROTOCOL_ORDER)),
        _tissue=frame["tissue"].map(_rank(TISSUE_ORDER)).fillna(len(TISSUE_ORDER)),
    ).sort_values(["_metric", "metric", "_protocol", "protocol", "window_bp", "_tissue",
                   "tissue", "model_a", "model_b"])
    display = frame[["metric", "protocol", "window_bp", "tissue", "model_a", "model_b", "genes",
                     "mean_delta", "median_delta", "share_a_wins", "share_b_wins",
                     "wilcoxon_p"]].copy()
    display["metric"] = display["metric"].map(lambda m: METRIC_LABELS.get(m, m))
    display["95 % CI of mean Δ"] = [_interval(lo, hi) for lo, hi in
                                    zip(frame["ci_low"], frame["ci_high"], strict=True)]
    return Section("comparison", title, explain + _table(display))


def _scatter_section(inputs: ReportInputs, window, tissue) -> Section:
    title = "Per gene: CNN against elastic net"
    png, note, runs = _scatter_figure(inputs, window, tissue)
    explain = (
        "<p>Each point is a gene: its honest R² under the elastic net (geneEXPLORE, x) and the "
        "DeepMethyGene CNN (y). Above the diagonal the CNN predicts that gene better. The "
        f"{N_LABELLED} best and worst genes of each model are named.</p>"
    )
    if png is None:
        return Section("cnn-vs-enet", title, explain + note, "CNN against elastic net")
    return Section("cnn-vs-enet", title, explain + _figure(png, title, note, runs))


def _genes_section(inputs: ReportInputs, window, tissue, genes_csv: str | None) -> Section:
    title = "Per gene: every model's R² and r²"
    download = (f' Every row (all protocols, windows, tissues and models) is in <a '
                f'href="{_e(genes_csv)}" download>{_e(genes_csv)}</a> beside this page.'
                if genes_csv else "")
    wide, lead = _per_gene(inputs, window, tissue)
    if wide.empty:
        return Section("genes", title, (f"<p>{download}</p>" if download else "")
                       + _not_run("No honest per-gene metrics", "headline"))
    n_genes = len(wide)
    best, worst = extreme_genes(wide.set_index("gene")[f"{lead}:r2"])
    scores = wide.set_index("gene")[f"{lead}:r2"]

    def named(genes: list[str]) -> str:
        return ", ".join(f"<b>{_e(g)}</b> ({scores[g]:.3f})" for g in genes)

    lead_name = MODEL_NAMES.get(lead, lead)
    text = (f"<p>{n_genes} genes, window ±{_e(_window_label(window))}, tissue {_e(tissue)}, "
            f"honest protocol, sorted by the {_e(lead_name)}'s R², best first. Its best genes: "
            f"{named(best)}; its worst: {named(worst)}. CpGs: the CpGs in the gene's window; "
            f"samples: the samples scored.{download}</p>\n")
    models = [c.split(":", 1)[0] for c in wide.columns if c.endswith(":r2")]
    fixed = [c for c in wide.columns if ":" not in c]
    groups = [("", len(fixed))] + [(m, 2) for m in models]
    headers = {"n_cpgs": "CpGs", "n_samples": "samples", "expected_r2": "expected R²",
               **{f"{m}:r2": "R²" for m in models},
               **{f"{m}:pearson_r2": "r²" for m in models}}
    if n_genes <= MAX_GENE_ROWS:
        tables = _table(wide, headers=headers, groups=groups)
    else:
        half = MAX_GENE_ROWS // 2
        tables = (f"<p>The {half} best of the {n_genes} genes:</p>\n"
                  + _table(wide.head(half), headers=headers, groups=groups)
                  + f"<p>The {half} worst (the {n_genes - 2 * half} in between are in the "
                  "CSV):</p>\n"
                  + _table(wide.tail(half), headers=headers, groups=groups))
    return Section("genes", title, text + tables)


def _per_gene(inputs: ReportInputs, window, tissue) -> tuple[pd.DataFrame, str]:
    """One row per gene of the honest primary scope: CpGs, samples, expected R² (synthetic), then
    each model's R² and r² (columns ``model:r2``, ``model:pearson_r2``), sorted by the lead
    model's R² (the CNN, else the best honest mean R²), best first."""
    honest = _honest_or_all(_scoped(inputs.gene_metrics, window, tissue))
    if honest.empty:
        return pd.DataFrame(), ""
    models = [model for model, _ in _by_model(honest)]
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


def _cpg_section(inputs: ReportInputs, window, tissue) -> Section:
    title = "R² against the number of CpGs in the window"
    png, note, table = _cpg_figure(inputs, window, tissue)
    explain = ("<p>Mean honest R² of the genes in each bin of the number of CpGs in the gene's "
               "window, one line per model.</p>")
    if png is None:
        return Section("cpg-count", title, explain + note, "R² by CpG count")
    return Section("cpg-count", title, (explain + _figure(png, title, note, None)
                                        + _table(table, headers={"cpg_bin": "CpGs"})))


def _window_section(inputs: ReportInputs, tissue) -> Section:
    title = "R² against the window"
    png, note, table = _window_figure(inputs, tissue)
    explain = ("<p>Mean honest R² per model when the gene's CpGs are taken from a window of "
               "±W around its promoter, on the same genes.</p>")
    if png is None:
        return Section("window", title, explain + note, "the window experiment")
    return Section("window", title, explain + _figure(png, title, note, None) + _table(table))


def _tissue_section(inputs: ReportInputs, window) -> Section:
    title = "Tissue: all, tumour-only and normal-only samples"
    png, note, table = _tissue_figure(inputs, window)
    explain = ("<p>Models trained and scored on all samples, on tumour samples only and on "
               "normal samples only (the paper's normal-only result), honest protocol.</p>")
    if png is None:
        return Section("tissue", title, explain + note, "the tissue experiment")
    return Section("tissue", title, explain + _table(table) + _figure(png, title, note, None))


def _generalisation_section(inputs: ReportInputs) -> Section:
    title = "Generalisation to other cohorts"
    frame = inputs.generalisation
    explain = ("<p>Models trained on a source cohort predict the same genes in a target cohort "
               "(the mean of the fold models' predictions), scored per gene and target; "
               "coverage is the share of the model's CpGs measured in the target.</p>\n"
               "<p>Here R² and r² often disagree, and both are right. r² only asks whether the "
               "predictions rise and fall with the target's measurements: it ignores offset and "
               "scale. R² asks whether they hit the measured values: a model can correlate "
               "well with the truth in a new cohort yet be offset (the target's expression has "
               "another baseline: batch, tissue mix, normalisation) or scaled against it, and R² "
               "counts all of that as error, so it can be negative beside a positive r².</p>")
    if frame is None or frame.empty:
        return Section("generalisation", title,
                       explain + _not_run("Generalisation", "generalisation"),
                       "generalisation to other cohorts")
    keys = [c for c in ("source_cohort", "target_cohort", "protocol", "window_bp", "model")
            if c in frame]
    known = [*keys, "genes", "mean_coverage", "mean_r2", "median_r2", "mean_pearson_r2",
             "median_pearson_r2"]
    columns = [c for c in known if c in frame]
    columns += [c for c in frame.columns if c not in columns and c != "cohort"]
    table = (frame.sort_values(keys) if keys else frame)[columns]
    return Section("generalisation", title,
                   explain + _offset_note(frame) + _table(table))


def _offset_note(frame: pd.DataFrame) -> str:
    """Where mean R² is negative beside a positive mean r², say so by target and model."""
    if not {"mean_r2", "mean_pearson_r2"} <= set(frame.columns):
        return ""
    shifted = frame[(frame["mean_r2"] < 0) & (frame["mean_pearson_r2"] > 0)]
    if shifted.empty:
        return ""
    target = "target_cohort" if "target_cohort" in shifted else None
    places = []
    for name, group in (shifted.groupby(target, sort=True) if target else [("", shifted)]):
        models = ", ".join(sorted({str(m) for m in group.get("model", pd.Series(dtype=str))}))
        places.append(f"{name} ({models})" if models else str(name))
    return (f"<p>Mean R² is negative beside a positive mean r² in {_e('; '.join(places))}: "
            f"there the predictions follow the target's expression (mean r² up to "
            f"{shifted['mean_pearson_r2'].max():.3f}) but sit offset or scaled against it "
            f"(mean R² down to {shifted['mean_r2'].min():.3f}).</p>\n")


def _ceiling_section(inputs: ReportInputs) -> Section:
    title = "Distance to the ground-truth ceiling"
    explain = ("<p>On a synthetic cohort the simulator knows the share of each gene's expression "
               "variance that methylation truly explains (expected R²): no model can do better "
               "than this ceiling except by chance. Each point is a gene and model (honest "
               "protocol); the gap is ceiling − R²; a gene is near the ceiling when its gap is at "
               f"most {NEAR_CEILING}. The {N_LABELLED} genes furthest below it are named in each "
               "panel.</p>")
    if inputs.ground_truth is None or inputs.ground_truth.empty:
        return Section("ceiling", title, (
            f"<p class=\"not-run\">No ground truth: {_e(inputs.cohort)} is not a synthetic "
            f"cohort ({_e(HOW_TO_RUN['ceiling'])}).</p>"
        ))
    window, tissue = primary_scope(inputs.gene_metrics)
    png, note, runs = _ceiling_figure(inputs, window, tissue)
    if png is None:
        return Section("ceiling", title, explain + note, "the ground-truth ceiling")
    return Section("ceiling", title, (explain + _figure(png, title, note, runs)
                                      + _table(ceiling_table(inputs))))


# ---------------------------------------------------------------------------------------------
# Figures: each returns (png bytes or None, caption or not-run note, extra)


def _scatter_figure(inputs: ReportInputs, window, tissue):
    honest = _honest_or_all(_scoped(inputs.gene_metrics, window, tissue))
    for model in ("cnn", "enet"):
        if not (honest["model"] == model).any():
            what = "CNN" if model == "cnn" else "elastic net"
            return None, _not_run(f"No {what} rows ('{model}', honest protocol)", model), None
    wide = honest.pivot_table(index="gene", columns="model", values="r2", aggfunc="mean")
    pairs = wide[["enet", "cnn"]].dropna()
    if pairs.empty:
        return None, _not_run("The CNN and the elastic net share no scored gene", "enet"), None
    x, y = pairs["enet"].to_numpy(), pairs["cnn"].to_numpy()
    clipped = int(((x < R2_FLOOR) | (y < R2_FLOOR)).sum())
    x, y = np.maximum(x, R2_FLOOR), np.maximum(y, R2_FLOOR)
    runs = _run_ids(honest[honest["model"].isin(["cnn", "enet"])])
    figure = Figure(figsize=SCATTER_FIGSIZE, dpi=DPI)
    axis = figure.add_subplot()
    low = min(x.min(), y.min(), 0.0) - 0.05
    high = max(x.max(), y.max(), 0.0) + 0.05
    axis.plot([low, high], [low, high], color="0.5", lw=1, ls="--", label="equal")
    axis.scatter(x, y, s=22, alpha=0.7, color="C0", edgecolors="none")
    cnn_best, cnn_worst = extreme_genes(pairs["cnn"])
    enet_best, enet_worst = extreme_genes(pairs["enet"])
    named = list(dict.fromkeys(cnn_best + cnn_worst + enet_best + enet_worst))
    _label_genes(axis, x, y, list(pairs.index), named)
    axis.set_xlim(low, high)
    axis.set_ylim(low, high)
    axis.set_aspect("equal")
    axis.set_xlabel("elastic net R² (honest)", fontsize=11)
    axis.set_ylabel("CNN R² (honest)", fontsize=11)
    axis.legend(loc="upper left", fontsize=9)
    wins = int((pairs["cnn"] > pairs["enet"]).sum())
    caption = (f"{len(pairs)} genes, window ±{_window_label(window)}, tissue {tissue}; the CNN "
               f"is better on {wins} of them. Mean R²: CNN {pairs['cnn'].mean():.3f}, elastic "
               f"net {pairs['enet'].mean():.3f}. Named: the CNN's best ({', '.join(cnn_best)}) "
               f"and worst ({', '.join(cnn_worst)}) genes, the elastic net's best "
               f"({', '.join(enet_best)}) and worst ({', '.join(enet_worst)}).")
    if clipped:
        caption += f" {clipped} genes with R² below {R2_FLOOR:g} are drawn at {R2_FLOOR:g}."
    return _png(figure, inputs), _e(caption), runs


def _cpg_figure(inputs: ReportInputs, window, tissue):
    frame = _protocol_rows(_scoped(_frame(inputs.by_cpg_count), window, tissue))
    if frame is None or frame.empty:
        return None, _not_run("The CpG-count experiment was not run", "cpg"), None
    protocol = str(frame["protocol"].iloc[0])
    bins = (frame[["cpg_bin", "bin_low"]].drop_duplicates().sort_values("bin_low"))
    position = {b: i for i, b in enumerate(bins["cpg_bin"])}
    figure = Figure(figsize=LINE_FIGSIZE, dpi=DPI)
    axis = figure.add_subplot()
    for index, (model, group) in enumerate(_by_model(frame)):
        group = group.sort_values("bin_low")
        axis.plot(group["cpg_bin"].map(position), group["mean_r2"], marker="o", lw=1.5,
                  color=f"C{index % 10}", label=_plain(model))
    axis.axhline(0, color="0.6", lw=0.8)
    axis.set_xticks(range(len(position)), [_plain(b) for b in position])
    axis.set_xlabel("CpGs in the gene's window")
    axis.set_ylabel(f"mean R² ({protocol})")
    axis.legend(fontsize=8, ncol=2)
    table = frame.pivot_table(index=["bin_low", "cpg_bin"], columns="model", values="mean_r2")
    table = table[[model for model, _ in _by_model(frame)]]
    genes = frame.groupby(["bin_low", "cpg_bin"])["genes"].max().rename("genes")
    table = pd.concat([genes, table], axis=1).reset_index().drop(columns="bin_low")
    table.columns.name = None
    caption = (f"Window ±{_window_label(window)}, tissue {tissue}, {protocol} protocol; the "
               "table gives the genes per bin and each model's mean R².")
    return _png(figure, inputs), _e(caption), table


def _window_figure(inputs: ReportInputs, tissue):
    frame = _protocol_rows(_scoped(_frame(inputs.by_window), None, tissue))
    if frame is None or frame["window_bp"].nunique() < 2:
        reason = ("The window experiment was not run" if frame is None or frame.empty else
                  f"Only one window (±{_window_label(frame['window_bp'].iloc[0])}) was scored")
        return None, _not_run(reason, "window"), None
    protocol = str(frame["protocol"].iloc[0])
    windows = sorted(frame["window_bp"].unique())
    figure = Figure(figsize=LINE_FIGSIZE, dpi=DPI)
    axis = figure.add_subplot()
    for index, (model, group) in enumerate(_by_model(frame)):
        group = group.sort_values("window_bp")
        axis.plot(group["window_bp"], group["mean_r2"], marker="o", lw=1.5,
                  color=f"C{index % 10}", label=_plain(model))
    axis.set_xscale("log")
    axis.set_xticks(windows, [_window_label(w) for w in windows])
    axis.minorticks_off()
    axis.axhline(0, color="0.6", lw=0.8)
    axis.set_xlabel("window half-width W around the promoter")
    axis.set_ylabel(f"mean R² ({protocol})")
    axis.legend(fontsize=8, ncol=2)
    table = frame.pivot_table(index="window_bp", columns="model", values="mean_r2")
    table = table[[model for model, _ in _by_model(frame)]]
    genes = frame.groupby("window_bp")["genes"].max().rename("genes")
    table = pd.concat([genes, table], axis=1).reset_index()
    table.columns.name = None
    caption = f"Tissue {tissue}, {protocol} protocol; the table gives each model's mean R²."
    return _png(figure, inputs), _e(caption), table


def _tissue_figure(inputs: ReportInputs, window):
    frame = _protocol_rows(_scoped(_frame(inputs.by_tissue), window, None))
    if frame is None or frame["tissue"].nunique() < 2:
        reason = ("The tissue experiment was not run" if frame is None or frame.empty else
                  f"Only one tissue ({frame['tissue'].iloc[0]}) was scored")
        return None, _not_run(reason, "tissue"), None
    protocol = str(frame["protocol"].iloc[0])
    tissues = sorted(frame["tissue"].unique(), key=lambda t: (_rank(TISSUE_ORDER).get(t, 9), t))
    models = [model for model, _ in _by_model(frame)]
    wide = frame.pivot_table(index="model", columns="tissue", values="mean_r2")
    wide = wide.reindex(index=models, columns=tissues)
    figure = Figure(figsize=LINE_FIGSIZE, dpi=DPI)
    axis = figure.add_subplot()
    width = 0.8 / len(tissues)
    for index, tissue in enumerate(tissues):
        axis.bar(np.arange(len(models)) + (index - (len(tissues) - 1) / 2) * width,
                 wide[tissue].fillna(0).to_numpy(), width, label=_plain(tissue),
                 color=f"C{index % 10}")
    axis.axhline(0, color="0.4", lw=0.8)
    axis.set_xticks(range(len(models)), [_plain(m) for m in models])
    axis.set_ylabel(f"mean R² ({protocol})")
    axis.legend(fontsize=8, title="samples", title_fontsize=8)
    columns = [c for c in ("model", "tissue", "genes", "median_n_samples", "mean_r2",
                           "median_r2", "mean_pearson_r2", "median_pearson_r2") if c in frame]
    table = frame.assign(_m=frame["model"].map({m: i for i, m in enumerate(models)}),
                         _t=frame["tissue"].map({t: i for i, t in enumerate(tissues)}))
    table = table.sort_values(["_m", "_t"])[columns]
    caption = f"Window ±{_window_label(window)}, {protocol} protocol; mean R² per model and tissue."
    return _png(figure, inputs), _e(caption), table


def _ceiling_figure(inputs: ReportInputs, window, tissue):
    joined = _ceiling_rows(inputs)
    if joined.empty:
        return None, _not_run("No honest scores on genes with ground truth", "headline"), None
    runs = _run_ids(joined)
    models = _by_model(joined)
    columns = min(len(models), 3)
    rows = -(-len(models) // columns)
    side = max(3.2, LINE_FIGSIZE[0] / columns)
    figure = Figure(figsize=(side * columns, side * rows + 0.3), dpi=DPI)
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    clipped = int((joined["r2"] < R2_FLOOR).sum())
    r2 = np.maximum(joined["r2"].to_numpy(dtype=float), R2_FLOOR)
    expected = joined["expected_r2"].to_numpy(dtype=float)
    low = min(r2.min(), expected.min(), 0.0) - 0.05
    high = max(r2.max(), expected.max(), 0.0) + 0.05
    for index, (axis, (model, group)) in enumerate(zip(axes, models, strict=False)):
        gap = group["expected_r2"] - group["r2"]
        axis.plot([low, high], [low, high], color="0.5", lw=1, ls="--")
        expected_x = group["expected_r2"].to_numpy(dtype=float)
        r2_y = np.maximum(group["r2"].to_numpy(dtype=float), R2_FLOOR)
        axis.scatter(expected_x, r2_y, s=14, alpha=0.7, color=f"C{index % 10}",
                     edgecolors="none")
        furthest = extreme_genes(pd.Series(gap.to_numpy(), index=group["gene"].astype(str)))[0]
        _label_genes(axis, expected_x, r2_y, list(group["gene"].astype(str)), furthest, 7)
        axis.set_title(_plain(model), fontsize=10)
        axis.text(0.03, 0.97, f"gap {gap.mean():.3f}\n{(gap <= NEAR_CEILING).mean():.0%} near",
                  transform=axis.transAxes, va="top", fontsize=8, parse_math=False)
        axis.set_xlim(low, high)
        axis.set_ylim(low, high)
    for axis in axes[len(models):]:
        axis.set_visible(False)
        above = axes[list(axes).index(axis) - columns]
        above.tick_params(labelbottom=True)
        above.set_xlabel("expected R²", fontsize=8)
    for axis in axes[(rows - 1) * columns:len(models)]:
        axis.set_xlabel("expected R²", fontsize=8)
    for axis in axes[::columns]:
        axis.set_ylabel("R² (honest)", fontsize=8)
    caption = (f"Window ±{_window_label(window)}, tissue {tissue}; one panel per model, the dashed "
               "line is the ceiling: points below it fall short. Each panel gives the mean gap "
               f"(ceiling − R²) and the share of genes within {NEAR_CEILING} of the ceiling.")
    if clipped:
        caption += f" {clipped} points with R² below {R2_FLOOR:g} are drawn at {R2_FLOOR:g}."
    return _png(figure, inputs), _e(caption), runs


# ---------------------------------------------------------------------------------------------
# Helpers


def _frame(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    return None if frame is None or frame.empty else frame


def _with_tissue(frame: pd.DataFrame) -> pd.DataFrame:
    return frame if "tissue" in frame else frame.assign(tissue="all")


def _scoped(frame: pd.DataFrame | None, window, tissue) -> pd.DataFrame | None:
    """Rows of a window and tissue (either None: all); a missing tissue column reads as 'all'."""
    if frame is None:
        return None
    frame = _with_tissue(frame)
    if window is not None and "window_bp" in frame:
        frame = frame[frame["window_bp"] == window]
    if tissue is not None:
        frame = frame[frame["tissue"].astype(str) == str(tissue)]
    return frame


def _honest_or_all(frame: pd.DataFrame, honest_only: bool = True) -> pd.DataFrame:
    """Per-gene rows with at least the columns the report reads (none when they are missing);
    the honest ones when ``honest_only``."""
    if not {"protocol", "model", "gene", *METRICS} <= set(frame.columns):
        return pd.DataFrame(columns=["protocol", "model", "gene", *METRICS, "run_id"])
    return frame[frame["protocol"] == HONEST] if honest_only else frame


def _protocol_rows(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """The honest rows, else those of the first protocol present; None when empty."""
    if frame is None or frame.empty:
        return None
    if "protocol" not in frame:
        return frame.assign(protocol=HONEST)
    protocols = sorted(frame["protocol"].astype(str).unique(),
                       key=lambda p: (_rank(PROTOCOL_ORDER).get(p, 9), p))
    return frame[frame["protocol"] == protocols[0]]


def _metric_columns(group: pd.DataFrame, protocol: str) -> tuple[tuple[str, str], str]:
    if protocol == PUBLISHED and all(f"mean_fold_{m}" in group and group[f"mean_fold_{m}"]
                                     .notna().any() for m in METRICS):
        return tuple(f"mean_fold_{m}" for m in METRICS), "mean of per-fold values (authors')"
    return METRICS, "pooled out-of-fold"


def _ceiling_rows(inputs: ReportInputs) -> pd.DataFrame:
    """Honest per-gene R² in the primary scope joined to the expected R² (mean per gene)."""
    empty = pd.DataFrame(columns=["model", "gene", "r2", "expected_r2", "run_id"])
    if inputs.ground_truth is None or inputs.ground_truth.empty:
        return empty
    window, tissue = primary_scope(inputs.gene_metrics)
    honest = _honest_or_all(_scoped(inputs.gene_metrics, window, tissue))
    if honest.empty:
        return empty
    expected = inputs.ground_truth.groupby("gene")["expected_r2"].mean()
    runs = (honest.groupby(["model", "gene"])["run_id"].first() if "run_id" in honest
            else None)
    scores = honest.groupby(["model", "gene"])["r2"].mean()
    joined = scores.to_frame().join(runs) if runs is not None else scores.to_frame()
    joined = joined.reset_index().merge(expected.reset_index(), on="gene", how="inner")
    return joined.dropna(subset=["r2", "expected_r2"])


def _by_model(frame: pd.DataFrame):
    """(model, rows) in a stable order: the CNN and elastic net first, the mean floor last."""
    preferred = list(MODEL_NAMES)
    models = sorted(frame["model"].astype(str).unique(),
                    key=lambda m: (preferred.index(m) if m in preferred else len(preferred), m))
    return [(model, frame[frame["model"].astype(str) == model]) for model in models]


def _rank(order: Iterable[str]) -> dict[str, int]:
    return {value: index for index, value in enumerate(order)}


_ORDERS = {"protocol": _rank(PROTOCOL_ORDER), "tissue": _rank(TISSUE_ORDER),
           "model": _rank(MODEL_NAMES)}


def _report_order(column: pd.Series) -> pd.Series:
    """A sort key putting protocols, tissues and models in the report's order (others after,
    by name); other columns sort as they are."""
    ranks = _ORDERS.get(str(column.name))
    if ranks is None:
        return column
    return column.astype(str).map(lambda value: f"{ranks.get(value, len(ranks)):03d} {value}")


def _run_ids(frame: pd.DataFrame | None) -> list[str] | None:
    if frame is None or "run_id" not in frame:
        return None
    return sorted({str(r) for r in frame["run_id"].dropna()}) or None


def _runs_link(runs: Sequence[str] | None) -> str:
    """How many runs made a table or figure, linking to the provenance block that lists them."""
    if not runs:
        return ""
    plural = "s" if len(runs) != 1 else ""
    return f'<p class="runs">Made by <a href="#provenance">{len(runs)} run{plural}</a>.</p>'


def _footer(inputs: ReportInputs) -> str:
    """A saved figure's own caption: the cohort, its kind of data and when (runs: the page)."""
    parts = [f"dmg evaluation report: {inputs.cohort}"]
    if inputs.source is not None and inputs.source.synthetic:
        parts.append("synthetic data")
    if "generated" in inputs.provenance:
        parts.append(str(inputs.provenance["generated"])[:10])
    return " · ".join(parts)[:150]


def _png(figure: Figure, inputs: ReportInputs) -> bytes:
    """The figure, with a one-line footer (cohort, synthetic or not, date), as PNG bytes with no
    metadata."""
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.text(0.01, 0.01, _footer(inputs), fontsize=7, color="0.35", ha="left",
                va="bottom", parse_math=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    figure.clear()
    return buffer.getvalue()


def _figure(png: bytes, alt: str, caption: str, runs: Sequence[str] | None) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
            f"<figcaption>{caption} {_runs_link(runs)}</figcaption></figure>\n")


def _label_genes(axis, x: np.ndarray, y: np.ndarray, genes: Sequence[str],
                 chosen: Iterable[str], fontsize: float = 8) -> None:
    """Name the ``chosen`` genes beside their points, with a thin leader line."""
    position = {str(g): i for i, g in enumerate(genes)}
    for n, gene in enumerate(chosen):
        i = position[gene]
        axis.annotate(_plain(gene), (x[i], y[i]), xytext=(8, 8 if n % 2 else -10),
                      textcoords="offset points", fontsize=fontsize, color="0.15",
                      arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6})


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _not_run(what: str, how: str) -> str:
    return (f'<p class="not-run">{_e(what)}: not run for this report. '
            f"To run it, {_e(HOW_TO_RUN[how])}.</p>")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _plain(text: object) -> str:
    """A label matplotlib draws literally ('$' would start mathtext)."""
    return str(text).replace("$", r"\$")


def _window_label(window) -> str:
    if window is None or pd.isna(window):
        return "?"
    window = int(window)
    for size, unit in ((1_000_000, "Mb"), (1_000, "kb")):
        if window >= size and window % size == 0:
            return f"{window // size} {unit}"
    return f"{window:,} bp"


def _interval(low, high) -> str:
    if pd.isna(low) or pd.isna(high):
        return "–"
    return f"[{low:.3f}, {high:.3f}]"


_INTEGER_COLUMNS = ("genes", "n_cpgs", "n_samples", "median_n_samples", "median_n_cpgs")


def _cell(column: str, value: object) -> str:
    """One formatted, escaped cell: 3 decimals, p-values in 2-significant-digit scientific."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return "–"
    if value is pd.NA or value is pd.NaT:
        return "–"
    if isinstance(value, bool | np.bool_):
        return _e(value)
    if column == "window_bp" and isinstance(value, int | float | np.integer | np.floating):
        return _e(_window_label(value))
    if isinstance(value, np.integer | int):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        if column.endswith("_p") or column in ("p", "p_value", "pvalue"):
            return f"{float(value):.1e}"
        if column.endswith(_INTEGER_COLUMNS) and float(value).is_integer():
            return f"{int(value):,}"
        return f"{float(value):.3f}"
    return _e(value)


def _header(column: str) -> str:
    names = {"window_bp": "window (±)", "model_a": "model a", "model_b": "model b",
             "share_a_wins": "share a wins", "share_b_wins": "share b wins",
             "wilcoxon_p": "Wilcoxon p", "mean_delta": "mean Δ", "median_delta": "median Δ",
             "source_cohort": "source", "target_cohort": "target"}
    if column in names:
        return names[column]
    return column.replace("pearson_r2", "r²").replace("r2", "R²").replace("_", " ")


def _table(frame: pd.DataFrame, headers: dict[str, str] | None = None,
           groups: Sequence[tuple[str, int]] | None = None,
           row_class: Sequence[str] | None = None,
           cell: Callable[[str, object], str] = _cell) -> str:
    """An HTML table of a DataFrame, every string escaped; numbers right-aligned."""
    headers = headers or {}
    head = ""
    if groups:
        head += "<tr>" + "".join(f'<th colspan="{span}">{_e(label)}</th>'
                                 for label, span in groups) + "</tr>"
    head += "<tr>" + "".join(f"<th>{_e(headers.get(str(c), _header(str(c))))}</th>"
                             for c in frame.columns) + "</tr>"
    rows = []
    for index, record in enumerate(frame.itertuples(index=False, name=None)):
        klass = row_class[index] if row_class else ""
        cells = "".join(
            f'<td class="num">{cell(str(c), v)}</td>'
            if isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
            else f"<td>{cell(str(c), v)}</td>"
            for c, v in zip(frame.columns, record, strict=True)
        )
        rows.append(f'<tr class="{klass}">{cells}</tr>' if klass else f"<tr>{cells}</tr>")
    return (f'<div class="scroll"><table>\n<thead>{head}</thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody>\n</table></div>\n")


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1d232a; background: #fafafa; margin: 0; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 4rem; background: #fff; }
h1 { font-size: 1.6rem; margin-bottom: 0.3rem; }
h2 { font-size: 1.25rem; border-bottom: 1px solid #d8dde3; padding-bottom: 0.2rem;
     margin-top: 2.2rem; }
dl.provenance, dl.models { display: grid; grid-template-columns: max-content 1fr;
     gap: 0.1rem 1rem; font-size: 0.9rem; }
dt { font-weight: 600; color: #44505c; }
dd { margin: 0; word-break: break-word; }
nav ol { columns: 2; font-size: 0.92rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.6rem 0; }
th, td { padding: 0.2rem 0.55rem; border-bottom: 1px solid #e3e7eb; text-align: left; }
thead th { background: #eef2f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.audit td { color: #6b5a2e; background: #fdf8ea; font-style: italic; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #e3e7eb; }
figcaption { font-size: 0.85rem; color: #4b5560; }
.not-run { background: #fff4e5; border-left: 4px solid #f0a030; padding: 0.5rem 0.8rem; }
div.not-run p { margin: 0.3rem 0; }
pre { background: #f0f2f4; padding: 0.4rem 0.6rem; overflow-x: auto; font-size: 0.85rem; }
pre code { padding: 0; }
p.source { margin: 0 0 0.6rem; padding: 0.6rem 0.9rem; border-radius: 4px; font-size: 0.95rem; }
p.source.synthetic { background: #eef4ff; border: 1px solid #9db8e8; }
p.source.real { background: #eefaf0; border: 1px solid #97cda2; }
p.source.unknown { background: #f6f6f6; border: 1px solid #c8c8c8; }
details.provenance { margin: 0.8rem 0; font-size: 0.9rem; }
details.provenance summary { cursor: pointer; color: #44505c; }
p.runs { font-size: 0.8rem; color: #66707a; margin: 0.2rem 0; }
code { background: #f0f2f4; padding: 0 0.2rem; }
"""
