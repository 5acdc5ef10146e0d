"""The report's figures, drawn with matplotlib's object-oriented API.

Each figure is a ``matplotlib.figure.Figure`` on the Agg canvas, never pyplot's (no global figure
is left open), saved as PNG bytes with a one-line footer (cohort, synthetic or not, date) and no
metadata. Every drawing function returns ``(png or None, caption, extra)``: without data the PNG
is None and the caption is the note saying how to run the experiment; ``extra`` is the run ids
behind the figure or the table drawn beside it. Figures name their scope in the caption and label
their outlier genes by name.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dmg_ml.evaluation.report.inputs import (
    DPI,
    LINE_FIGSIZE,
    NEAR_CEILING,
    R2_FLOOR,
    SCATTER_FIGSIZE,
    TISSUE_ORDER,
    ReportInputs,
)
from dmg_ml.evaluation.report.markup import escape, not_run, window_label
from dmg_ml.evaluation.report.tables import (
    by_model,
    ceiling_rows,
    extreme_genes,
    honest_or_all,
    nonempty,
    primary_scope,
    protocol_rows,
    rank,
    run_ids,
    scoped,
)

#: What a drawing function returns: the PNG (None: no data), the caption (or the not-run note)
#: and the run ids behind it or the table drawn beside it.
Drawn = tuple[bytes | None, str, list[str] | None]
Tabled = tuple[bytes | None, str, pd.DataFrame | None]


def report_figures(inputs: ReportInputs) -> dict[str, bytes]:
    """The report's figures as PNG bytes by section id (only those that had data), for the UI."""
    window, tissue = primary_scope(inputs.gene_metrics)
    drawn = {
        "cnn-vs-enet": scatter_figure(inputs, window, tissue)[0],
        "cpg-count": cpg_figure(inputs, window, tissue)[0],
        "window": window_figure(inputs, tissue)[0],
        "tissue": tissue_figure(inputs, window)[0],
        "ceiling": ceiling_figure(inputs, window, tissue)[0],
    }
    return {name: png for name, png in drawn.items() if png is not None}


def scatter_figure(inputs: ReportInputs, window: int | None, tissue: str) -> Drawn:
    """Per gene, the CNN's honest R² against the elastic net's; the best and worst named."""
    honest = honest_or_all(scoped(inputs.gene_metrics, window, tissue))
    for model in ("cnn", "enet"):
        if not (honest["model"] == model).any():
            what = "CNN" if model == "cnn" else "elastic net"
            return None, not_run(f"No {what} rows ('{model}', honest protocol)", model), None
    wide = honest.pivot_table(index="gene", columns="model", values="r2", aggfunc="mean")
    pairs = wide[["enet", "cnn"]].dropna()
    if pairs.empty:
        return None, not_run("The CNN and the elastic net share no scored gene", "enet"), None
    x, y = pairs["enet"].to_numpy(), pairs["cnn"].to_numpy()
    clipped = int(((x < R2_FLOOR) | (y < R2_FLOOR)).sum())
    x, y = np.maximum(x, R2_FLOOR), np.maximum(y, R2_FLOOR)
    runs = run_ids(honest[honest["model"].isin(["cnn", "enet"])])
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
    caption = (f"{len(pairs)} genes, window ±{window_label(window)}, tissue {tissue}; the CNN "
               f"is better on {wins} of them. Mean R²: CNN {pairs['cnn'].mean():.3f}, elastic "
               f"net {pairs['enet'].mean():.3f}. Named: the CNN's best ({', '.join(cnn_best)}) "
               f"and worst ({', '.join(cnn_worst)}) genes, the elastic net's best "
               f"({', '.join(enet_best)}) and worst ({', '.join(enet_worst)}).")
    if clipped:
        caption += f" {clipped} genes with R² below {R2_FLOOR:g} are drawn at {R2_FLOOR:g}."
    return _png(figure, inputs), escape(caption), runs


def cpg_figure(inputs: ReportInputs, window: int | None, tissue: str) -> Tabled:
    """Mean R² per CpG-count bin, one line per model, and the table of it."""
    frame = protocol_rows(scoped(nonempty(inputs.by_cpg_count), window, tissue))
    if frame is None or frame.empty:
        return None, not_run("The CpG-count experiment was not run", "cpg"), None
    protocol = str(frame["protocol"].iloc[0])
    bins = (frame[["cpg_bin", "bin_low"]].drop_duplicates().sort_values("bin_low"))
    position = {b: i for i, b in enumerate(bins["cpg_bin"])}
    figure = Figure(figsize=LINE_FIGSIZE, dpi=DPI)
    axis = figure.add_subplot()
    for index, (model, group) in enumerate(by_model(frame)):
        group = group.sort_values("bin_low")
        axis.plot(group["cpg_bin"].map(position), group["mean_r2"], marker="o", lw=1.5,
                  color=f"C{index % 10}", label=_plain(model))
    axis.axhline(0, color="0.6", lw=0.8)
    axis.set_xticks(range(len(position)), [_plain(b) for b in position])
    axis.set_xlabel("CpGs in the gene's window")
    axis.set_ylabel(f"mean R² ({protocol})")
    axis.legend(fontsize=8, ncol=2)
    table = frame.pivot_table(index=["bin_low", "cpg_bin"], columns="model", values="mean_r2")
    table = table[[model for model, _ in by_model(frame)]]
    genes = frame.groupby(["bin_low", "cpg_bin"])["genes"].max().rename("genes")
    table = pd.concat([genes, table], axis=1).reset_index().drop(columns="bin_low")
    table.columns.name = None
    caption = (f"Window ±{window_label(window)}, tissue {tissue}, {protocol} protocol; the "
               "table gives the genes per bin and each model's mean R².")
    return _png(figure, inputs), escape(caption), table


def window_figure(inputs: ReportInputs, tissue: str) -> Tabled:
    """Mean R² per window (at least two), one line per model, and the table of it."""
    frame = protocol_rows(scoped(nonempty(inputs.by_window), None, tissue))
    if frame is None or frame["window_bp"].nunique() < 2:
        reason = ("The window experiment was not run" if frame is None or frame.empty else
                  f"Only one window (±{window_label(frame['window_bp'].iloc[0])}) was scored")
        return None, not_run(reason, "window"), None
    protocol = str(frame["protocol"].iloc[0])
    windows = sorted(frame["window_bp"].unique())
    figure = Figure(figsize=LINE_FIGSIZE, dpi=DPI)
    axis = figure.add_subplot()
    for index, (model, group) in enumerate(by_model(frame)):
        group = group.sort_values("window_bp")
        axis.plot(group["window_bp"], group["mean_r2"], marker="o", lw=1.5,
                  color=f"C{index % 10}", label=_plain(model))
    axis.set_xscale("log")
    axis.set_xticks(windows, [window_label(w) for w in windows])
    axis.minorticks_off()
    axis.axhline(0, color="0.6", lw=0.8)
    axis.set_xlabel("window half-width W around the promoter")
    axis.set_ylabel(f"mean R² ({protocol})")
    axis.legend(fontsize=8, ncol=2)
    table = frame.pivot_table(index="window_bp", columns="model", values="mean_r2")
    table = table[[model for model, _ in by_model(frame)]]
    genes = frame.groupby("window_bp")["genes"].max().rename("genes")
    table = pd.concat([genes, table], axis=1).reset_index()
    table.columns.name = None
    caption = f"Tissue {tissue}, {protocol} protocol; the table gives each model's mean R²."
    return _png(figure, inputs), escape(caption), table


def tissue_figure(inputs: ReportInputs, window: int | None) -> Tabled:
    """Mean R² per model and tissue (at least two) as bars, and the table of it."""
    frame = protocol_rows(scoped(nonempty(inputs.by_tissue), window, None))
    if frame is None or frame["tissue"].nunique() < 2:
        reason = ("The tissue experiment was not run" if frame is None or frame.empty else
                  f"Only one tissue ({frame['tissue'].iloc[0]}) was scored")
        return None, not_run(reason, "tissue"), None
    protocol = str(frame["protocol"].iloc[0])
    tissues = sorted(frame["tissue"].unique(), key=lambda t: (rank(TISSUE_ORDER).get(t, 9), t))
    models = [model for model, _ in by_model(frame)]
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
    caption = f"Window ±{window_label(window)}, {protocol} protocol; mean R² per model and tissue."
    return _png(figure, inputs), escape(caption), table


def ceiling_figure(inputs: ReportInputs, window: int | None, tissue: str) -> Drawn:
    """Synthetic cohorts: each model's honest R² against the expected R², a panel per model."""
    joined = ceiling_rows(inputs)
    if joined.empty:
        return None, not_run("No honest scores on genes with ground truth", "headline"), None
    runs = run_ids(joined)
    models = by_model(joined)
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
    caption = (f"Window ±{window_label(window)}, tissue {tissue}; one panel per model, the dashed "
               "line is the ceiling: points below it fall short. Each panel gives the mean gap "
               f"(ceiling − R²) and the share of genes within {NEAR_CEILING} of the ceiling.")
    if clipped:
        caption += f" {clipped} points with R² below {R2_FLOOR:g} are drawn at {R2_FLOOR:g}."
    return _png(figure, inputs), escape(caption), runs


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


def _label_genes(axis: Axes, x: np.ndarray, y: np.ndarray, genes: Sequence[str],
                 chosen: Iterable[str], fontsize: float = 8) -> None:
    """Name the ``chosen`` genes beside their points, with a thin leader line."""
    position = {str(g): i for i, g in enumerate(genes)}
    for n, gene in enumerate(chosen):
        i = position[gene]
        axis.annotate(_plain(gene), (x[i], y[i]), xytext=(8, 8 if n % 2 else -10),
                      textcoords="offset points", fontsize=fontsize, color="0.15",
                      arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6})


def _plain(text: object) -> str:
    """A label matplotlib draws literally ('$' would start mathtext)."""
    return str(text).replace("$", r"\$")


