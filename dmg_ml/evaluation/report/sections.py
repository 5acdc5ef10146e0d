"""The report's sections, in the page's order, each a :class:`Section` of HTML.

The headline table shows honest and published side by side, R² and r², with the bootstrap
interval of the mean over genes. Which per-gene values a row shows and which figure headlines it
is ``dmg_ml.evaluation.protocols``'s one rule (``headline_metric``, ``headline_columns``): the
column "per-gene value" names the kind (pooled out-of-fold, or the mean of per-fold values), the
column "headline" names the figure and the figure is bold. Without published rows the headline
section gives the command (and the Launchpad config) that runs them. The other sections show
the honest rows of their scope (``tables``); a section whose experiment was not run says so,
and how to run it, instead of drawing an empty figure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import pandas as pd

from dmg_ml.data.splits import PROTOCOLS, PUBLISHED
from dmg_ml.evaluation.protocols import HONEST_HEADLINE, PUBLISHED_HEADLINE, headline_metric
from dmg_ml.evaluation.report.figures import (
    ceiling_figure,
    cpg_figure,
    scatter_figure,
    tissue_figure,
    window_figure,
)
from dmg_ml.evaluation.report.inputs import (
    HOW_TO_RUN,
    MAX_GENE_ROWS,
    METRIC_LABELS,
    METRICS,
    MODEL_NAMES,
    N_LABELLED,
    N_RESAMPLES,
    NEAR_CEILING,
    PUBLISHED_COMMAND,
    PUBLISHED_LAUNCHPAD,
    SEED,
    TISSUE_ORDER,
    ReportInputs,
)
from dmg_ml.evaluation.report.markup import (
    escape,
    html_figure,
    html_table,
    interval,
    not_run,
    runs_link,
    window_label,
)
from dmg_ml.evaluation.report.tables import (
    ceiling_table,
    extreme_genes,
    headline_figure,
    headline_table,
    per_gene,
    primary_scope,
    rank,
    run_ids,
    scoped,
    with_tissue,
)


class Section(NamedTuple):
    """One section of the page: its anchor, its title and its HTML."""

    anchor: str
    title: str
    content: str
    #: What this section would show but was not run (for the header's list), else None.
    missing: str | None = None


def report_sections(inputs: ReportInputs, genes_csv: str | None) -> list[Section]:
    """Every section of the page, in order, in the primary scope (``genes_csv``: the per-gene
    CSV the per-gene section links to, ``None``: no link)."""
    window, tissue = primary_scope(inputs.gene_metrics)
    return [
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


def figure_name(metric: str) -> str:
    """A headline metric in words: ``mean_fold_pearson_r2`` → "mean of per-fold r²"."""
    kind = "mean of per-fold" if metric != headline_figure(metric) else "pooled out-of-fold"
    return f"{kind} {METRIC_LABELS[headline_figure(metric)]}"


def headline_rule(models: Iterable[str] = ()) -> str:
    """The headline rule in one sentence (HTML), naming the published figure of every model the
    authors reported and of ``models``."""
    by_figure: dict[str, list[str]] = {}
    for model in dict.fromkeys([*PUBLISHED_HEADLINE, *models]):
        by_figure.setdefault(headline_metric(model, PUBLISHED), []).append(model)
    published = "; ".join(
        f"the {figure_name(metric)} for {_listed(f'<code>{escape(m)}</code>' for m in names)}"
        for metric, names in by_figure.items())
    return (f"Each model's headline figure (bold) follows one rule, "
            f"<code>dmg_ml.evaluation.protocols.headline_metric</code>: under the honest "
            f"protocol the {figure_name(HONEST_HEADLINE)} of every model, under the published "
            f"audit the figure the authors reported for it ({published}), and a row's R² and r² "
            "are both of its headline's kind, pooled or the mean over folds.")


def _listed(items: Iterable[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _headline_section(inputs: ReportInputs, window: int | None, tissue: str) -> Section:
    table = headline_table(inputs)
    published = bool((table["protocol"] == PUBLISHED).any()) if not table.empty else False
    title = ("Headline: every model, honest and published" if published or table.empty
             else "Headline: every model, honest protocol (published not run)")
    models = [str(m) for m in dict.fromkeys(table["model"])]
    explain = (
        "<p><b>R²</b> is the coefficient of determination (scikit-learn <code>r2_score</code>): "
        "the share of the expression variance the prediction explains; it is negative when the "
        "prediction is worse than predicting the mean. <b>r²</b> is the squared Pearson "
        "correlation between prediction and measurement: it ignores the prediction's scale and "
        "offset, so it is never negative and never below R².</p>\n"
        "<p><b>Honest</b> is this platform's estimate: patient-grouped folds, a fresh model per "
        "fold, every choice made on the training folds only. <b>Published</b> re-runs the "
        "authors' protocol (one model carried across folds, early stopping on the scored fold, "
        "ungrouped folds): it is an audit of how the paper's numbers were obtained, not an "
        "estimate of accuracy.</p>\n"
        f"<p>{headline_rule(models)} The paper's BRCA means are such figures: DeepMethyGene "
        "0.640 as the mean of per-fold r², geneEXPLORE 0.449 as the r² of its pooled "
        "predictions, random forest 0.374 and SVM 0.327 as the mean of per-fold R².</p>\n"
        f"<p>The interval is a bootstrap 95 % interval of the mean over genes ({N_RESAMPLES} "
        f"resamples, seed {SEED}). Models are ordered by honest mean R².</p>"
    )
    if table.empty:
        return Section("headline", title, explain + not_run("No per-gene metrics", "headline"),
                       "any model (no per-gene metrics)")
    groups = [("", 4)] + [(METRIC_LABELS[m], 4) for m in METRICS]
    display = pd.DataFrame({
        "model": table["model"], "protocol": table["protocol"],
        "per-gene value": table["statistic"],
        "headline": table["headline"].map(figure_name),
        **{k: v for m in METRICS for k, v in {
            f"{m} genes": table[f"{m}_genes"], f"{m} mean": table[f"{m}_mean"],
            f"{m} median": table[f"{m}_median"],
            f"{m} 95 % CI": [interval(lo, hi) for lo, hi in
                             zip(table[f"{m}_ci_low"], table[f"{m}_ci_high"], strict=True)],
        }.items()},
    })
    headers = {c: c.split(" ", 1)[1] for c in display.columns if c.startswith(METRICS)}
    row_class = ["audit" if p == PUBLISHED else "" for p in table["protocol"]]
    bold = [{f"{headline_figure(h)} mean"} for h in table["headline"]]
    legend = "".join(f"<dt>{escape(m)}</dt><dd>{escape(MODEL_NAMES.get(m, m))}</dd>"
                     for m in models)
    content = ((_published_note(inputs.cohort) if not published else "") + explain
               + html_table(display, headers=headers, groups=groups, row_class=row_class,
                            bold=bold)
               + f'\n<dl class="models">{legend}</dl>\n'
               + runs_link(run_ids(scoped(inputs.gene_metrics, window, tissue))))
    return Section("headline", title, content,
                   None if published else "the published protocol (the authors' audit)")


def _published_note(cohort: str) -> str:
    command = PUBLISHED_COMMAND.format(cohort=cohort)
    return (
        '<div class="not-run" id="published-not-run"><p><b>No published-protocol rows</b> for '
        f"{escape(cohort)}: the authors' protocol, the audit behind the paper's 0.640, was not "
        "run, so the table holds the honest estimate only. To add it (about as long as the "
        "honest training; <code>--experiments</code> with no name skips the experiments, and "
        "the report is rewritten at the end):</p>\n"
        f"<pre><code>{escape(command)}</code></pre>\n"
        "<p>That is their script's run exactly: their folds and seed, one model carried across "
        "folds, no scaling and the last epoch's weights (the CNN so trained is the model "
        "<code>cnn_last_epoch</code>; leave out <code>--keep-last-weights</code> to put its rows "
        "on <code>cnn</code>). From the Dagster UI, materialise <code>model_evaluation</code> "
        "for the cohort with this Launchpad config:</p>\n"
        f"<pre><code>{escape(PUBLISHED_LAUNCHPAD)}</code></pre></div>\n"
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
                       explain + not_run("No paired comparison", "comparison"),
                       "the paired model comparison")
    frame = with_tissue(frame)
    frame = frame.assign(
        _metric=frame["metric"].map(rank(METRICS)).fillna(len(METRICS)),
        _protocol=frame["protocol"].map(rank(PROTOCOLS)).fillna(len(PROTOCOLS)),
        _tissue=frame["tissue"].map(rank(TISSUE_ORDER)).fillna(len(TISSUE_ORDER)),
    ).sort_values(["_metric", "metric", "_protocol", "protocol", "window_bp", "_tissue",
                   "tissue", "model_a", "model_b"])
    display = frame[["metric", "protocol", "window_bp", "tissue", "model_a", "model_b", "genes",
                     "mean_delta", "median_delta", "share_a_wins", "share_b_wins",
                     "wilcoxon_p"]].copy()
    display["metric"] = display["metric"].map(lambda m: METRIC_LABELS.get(m, m))
    display["95 % CI of mean Δ"] = [interval(lo, hi) for lo, hi in
                                    zip(frame["ci_low"], frame["ci_high"], strict=True)]
    return Section("comparison", title, explain + html_table(display))


def _scatter_section(inputs: ReportInputs, window, tissue) -> Section:
    title = "Per gene: CNN against elastic net"
    png, note, runs = scatter_figure(inputs, window, tissue)
    explain = (
        "<p>Each point is a gene: its honest R² under the elastic net (geneEXPLORE, x) and the "
        "DeepMethyGene CNN (y). Above the diagonal the CNN predicts that gene better. The "
        f"{N_LABELLED} best and worst genes of each model are named.</p>"
    )
    if png is None:
        return Section("cnn-vs-enet", title, explain + note, "CNN against elastic net")
    return Section("cnn-vs-enet", title, explain + html_figure(png, title, note, runs))


def _genes_section(inputs: ReportInputs, window, tissue, genes_csv: str | None) -> Section:
    title = "Per gene: every model's R² and r²"
    download = (f' Every row (all protocols, windows, tissues and models) is in <a '
                f'href="{escape(genes_csv)}" download>{escape(genes_csv)}</a> beside this page.'
                if genes_csv else "")
    wide, lead = per_gene(inputs, window, tissue)
    if wide.empty:
        return Section("genes", title, (f"<p>{download}</p>" if download else "")
                       + not_run("No honest per-gene metrics", "headline"))
    n_genes = len(wide)
    best, worst = extreme_genes(wide.set_index("gene")[f"{lead}:r2"])
    scores = wide.set_index("gene")[f"{lead}:r2"]

    def named(genes: list[str]) -> str:
        return ", ".join(f"<b>{escape(g)}</b> ({scores[g]:.3f})" for g in genes)

    lead_name = MODEL_NAMES.get(lead, lead)
    text = (f"<p>{n_genes} genes, window ±{escape(window_label(window))}, tissue {escape(tissue)}, "
            f"honest protocol, sorted by the {escape(lead_name)}'s R², best first. Its best genes: "
            f"{named(best)}; its worst: {named(worst)}. CpGs: the CpGs in the gene's window; "
            f"samples: the samples scored.{download}</p>\n")
    models = [c.split(":", 1)[0] for c in wide.columns if c.endswith(":r2")]
    fixed = [c for c in wide.columns if ":" not in c]
    groups = [("", len(fixed))] + [(m, 2) for m in models]
    headers = {"n_cpgs": "CpGs", "n_samples": "samples", "expected_r2": "expected R²",
               **{f"{m}:r2": "R²" for m in models},
               **{f"{m}:pearson_r2": "r²" for m in models}}
    if n_genes <= MAX_GENE_ROWS:
        tables = html_table(wide, headers=headers, groups=groups)
    else:
        half = MAX_GENE_ROWS // 2
        tables = (f"<p>The {half} best of the {n_genes} genes:</p>\n"
                  + html_table(wide.head(half), headers=headers, groups=groups)
                  + f"<p>The {half} worst (the {n_genes - 2 * half} in between are in the "
                  "CSV):</p>\n"
                  + html_table(wide.tail(half), headers=headers, groups=groups))
    return Section("genes", title, text + tables)


def _cpg_section(inputs: ReportInputs, window, tissue) -> Section:
    title = "R² against the number of CpGs in the window"
    png, note, table = cpg_figure(inputs, window, tissue)
    explain = ("<p>Mean honest R² of the genes in each bin of the number of CpGs in the gene's "
               "window, one line per model.</p>")
    if png is None:
        return Section("cpg-count", title, explain + note, "R² by CpG count")
    return Section("cpg-count", title, (explain + html_figure(png, title, note, None)
                                        + html_table(table, headers={"cpg_bin": "CpGs"})))


def _window_section(inputs: ReportInputs, tissue) -> Section:
    title = "R² against the window"
    png, note, table = window_figure(inputs, tissue)
    explain = ("<p>Mean honest R² per model when the gene's CpGs are taken from a window of "
               "±W around its promoter, on the same genes.</p>")
    if png is None:
        return Section("window", title, explain + note, "the window experiment")
    return Section("window", title,
                   explain + html_figure(png, title, note, None) + html_table(table))


def _tissue_section(inputs: ReportInputs, window) -> Section:
    title = "Tissue: all, tumour-only and normal-only samples"
    png, note, table = tissue_figure(inputs, window)
    explain = ("<p>Models trained and scored on all samples, on tumour samples only and on "
               "normal samples only (the paper's normal-only result), honest protocol.</p>")
    if png is None:
        return Section("tissue", title, explain + note, "the tissue experiment")
    return Section("tissue", title,
                   explain + html_table(table) + html_figure(png, title, note, None))


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
                       explain + not_run("Generalisation", "generalisation"),
                       "generalisation to other cohorts")
    keys = [c for c in ("source_cohort", "target_cohort", "protocol", "window_bp", "model")
            if c in frame]
    known = [*keys, "genes", "mean_coverage", "mean_r2", "median_r2", "mean_pearson_r2",
             "median_pearson_r2"]
    columns = [c for c in known if c in frame]
    columns += [c for c in frame.columns if c not in columns and c != "cohort"]
    table = (frame.sort_values(keys) if keys else frame)[columns]
    return Section("generalisation", title,
                   explain + _offset_note(frame) + html_table(table))


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
    return (f"<p>Mean R² is negative beside a positive mean r² in {escape('; '.join(places))}: "
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
            f"<p class=\"not-run\">No ground truth: {escape(inputs.cohort)} is not a synthetic "
            f"cohort ({escape(HOW_TO_RUN['ceiling'])}).</p>"
        ))
    window, tissue = primary_scope(inputs.gene_metrics)
    png, note, runs = ceiling_figure(inputs, window, tissue)
    if png is None:
        return Section("ceiling", title, explain + note, "the ground-truth ceiling")
    return Section("ceiling", title, (explain + html_figure(png, title, note, runs)
                                      + html_table(ceiling_table(inputs))))

