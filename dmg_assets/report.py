"""The evaluation report: one self-contained HTML file per cohort, and its headline in the UI.

``evaluation_report`` reads every evaluation table of the cohort from the warehouse, hands them to
``dmg_ml.evaluation.report`` and writes ``<data dir>/reports/<COHORT>/evaluation_report.html``
(images embedded: it opens offline in any browser). Experiments not yet run appear in the page as
a note saying how to run them. On a synthetic cohort the simulator's truth gives each model's
distance to the ceiling: the share of variance methylation truly explains.
"""

import base64
import os
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from dmg_assets.metadata import markdown_table
from dmg_assets.partitions import cohort_partitions
from dmg_ml.evaluation.report import ReportInputs, headline_table, render_report, report_figures
from dmg_resources.download import DownloadError
from dmg_resources.source import XenaSource
from dmg_resources.warehouse import Warehouse

REPORT_NAME = "evaluation_report.html"


def report_path(warehouse: Warehouse, cohort: str) -> Path:
    """Where a cohort's report is written: ``reports/`` beside the warehouse's database file."""
    return Path(warehouse.database).resolve().parent / "reports" / cohort / REPORT_NAME


def _rows(warehouse: Warehouse, view: str, column: str, cohort: str) -> pd.DataFrame | None:
    """The cohort's rows of ``view``, or None while the view does not exist (never materialised)."""
    try:
        return warehouse.query(f"SELECT * FROM {view} WHERE {column} = ?", [cohort])
    except duckdb.CatalogException:
        return None


def _ground_truth(source: XenaSource, cohort: str) -> pd.DataFrame | None:
    try:
        path = source.ground_truth(cohort).path
    except DownloadError:
        return None  # not a synthetic cohort
    return pd.read_csv(path, sep="\t", usecols=["gene", "expected_r2"])


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


@asset(
    partitions_def=cohort_partitions,
    group_name="evaluation",
    kinds={"html"},
    deps=["model_comparison", "r2_by_cpg_count", "tissue_experiment", "window_experiment",
          "generalisation"],
)
def evaluation_report(context: AssetExecutionContext, warehouse: Warehouse,
                      source: XenaSource) -> MaterializeResult:
    """A self-contained HTML report of the cohort's evaluation: the models compared (honest and
    published, R² and r², with intervals), CNN against elastic net per gene, R² against CpG count,
    window and tissue, generalisation to other cohorts and, on synthetic cohorts, the distance to
    the ground-truth ceiling. Open the file the metadata names in a browser."""
    cohort = context.partition_key
    gene_metrics = _rows(warehouse, "gene_metrics", "cohort", cohort)
    if gene_metrics is None or gene_metrics.empty:
        raise LookupError(f"{cohort}: gene_metrics has no rows: materialise cnn_models or "
                          "model_evaluation first")
    runs = sorted(gene_metrics["run_id"].dropna().unique())
    inputs = ReportInputs(
        cohort=cohort,
        gene_metrics=gene_metrics,
        comparison=_rows(warehouse, "model_comparison", "cohort", cohort),
        by_cpg_count=_rows(warehouse, "r2_by_cpg_count", "cohort", cohort),
        by_window=_rows(warehouse, "r2_by_window", "cohort", cohort),
        by_tissue=_rows(warehouse, "r2_by_tissue", "cohort", cohort),
        generalisation=_rows(warehouse, "generalisation_summary", "source_cohort", cohort),
        ground_truth=_ground_truth(source, cohort),
        provenance={
            "generated": datetime.now(UTC).isoformat(timespec="seconds"),
            "report run": context.run_id,
            "run ids": ", ".join(runs),
            "config": ", ".join(
                f"{p} W={int(w):,} {t}" for p, w, t in
                gene_metrics[["protocol", "window_bp", "tissue"]].drop_duplicates()
                .sort_values(["protocol", "window_bp", "tissue"]).itertuples(index=False)),
            "warehouse": str(Path(warehouse.database).resolve()),
        },
    )
    path = report_path(warehouse, cohort)
    page = render_report(inputs)
    _write_atomically(path, page)
    headline = headline_table(inputs)
    figures = report_figures(inputs)
    context.log.info(f"{cohort}: report written to {path} ({len(page) / 1e6:.1f} MB)")
    metadata = {
        "path": MetadataValue.path(str(path)),
        "bytes": len(page.encode()),
        "models": ", ".join(sorted(gene_metrics["model"].unique())),
        "headline": MetadataValue.md(markdown_table(headline)),
        "ground_truth": inputs.ground_truth is not None,
    }
    for name in ("cnn-vs-enet", "ceiling"):
        if name in figures:
            metadata[name] = MetadataValue.md(_image_markdown(figures[name], name))
    return MaterializeResult(metadata=metadata)


def _image_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
