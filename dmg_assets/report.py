"""The evaluation report: one self-contained HTML file per cohort, and its headline in the UI.

``evaluation_report`` reads every evaluation table of the cohort from the warehouse, hands them to
``dmg_ml.evaluation.report`` and writes ``<data dir>/reports/<COHORT>/evaluation_report.html``
(images embedded: it opens offline in any browser) and, beside it, ``gene_metrics.csv`` (every
per-gene row, linked from the page). The page opens with where the data came from: the source's
URL and whether it is the embedded synthetic hub (:func:`data_source`). Experiments not yet run
appear in the page as a note saying how to run them. On a synthetic cohort the simulator's truth
gives each model's distance to the ceiling: the share of variance methylation truly explains.
"""

import base64
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from dmg_assets.metadata import markdown_table
from dmg_assets.partitions import cohort_partitions
from dmg_ml.evaluation.report import (
    DataSource,
    ReportInputs,
    headline_table,
    report_figures,
    write_report,
)
from dmg_ml.synthetic.writer import MANIFEST
from dmg_resources.download import DownloadError, local_path, to_url
from dmg_resources.source import XenaSource
from dmg_resources.warehouse import Warehouse

REPORT_NAME = "evaluation_report.html"


class NothingToReport(LookupError):
    """The cohort has no evaluation results yet: nothing trained or evaluated on it."""


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


def data_source(source: XenaSource, ground_truth: bool) -> DataSource:
    """Where the source reads from (its base as a URL) and whether that is a synthetic hub: a
    local one holding the writer's ``synthetic_hub.json``, or any hub that served the simulator's
    ground truth (``ground_truth``). Asks the network nothing."""
    url = to_url(source.base_url)
    root = local_path(url)
    marked = root is not None and (root / MANIFEST).is_file()
    return DataSource(url=url, synthetic=ground_truth or marked)


@asset(
    partitions_def=cohort_partitions,
    group_name="evaluation",
    kinds={"html"},
    deps=["model_comparison", "r2_by_cpg_count", "tissue_experiment", "window_experiment",
          "generalisation"],
)
def evaluation_report(context: AssetExecutionContext, warehouse: Warehouse,
                      source: XenaSource) -> MaterializeResult:
    """A self-contained HTML report of the cohort's evaluation: where the data came from, the
    models compared (honest and published, R² and r², with intervals), CNN against elastic net
    per gene, a per-gene table (and every per-gene row as a CSV beside the page), R² against CpG
    count, window and tissue, generalisation to other cohorts and, on synthetic cohorts, the
    distance to the ground-truth ceiling. Open the file the metadata names in a browser."""
    cohort = context.partition_key
    gene_metrics = _rows(warehouse, "gene_metrics", "cohort", cohort)
    if gene_metrics is None or gene_metrics.empty:
        raise NothingToReport(f"{cohort}: gene_metrics has no rows: materialise "
                              "model_evaluation first")
    ground_truth = _ground_truth(source, cohort)
    inputs = ReportInputs(
        cohort=cohort,
        gene_metrics=gene_metrics,
        comparison=_rows(warehouse, "model_comparison", "cohort", cohort),
        by_cpg_count=_rows(warehouse, "r2_by_cpg_count", "cohort", cohort),
        by_window=_rows(warehouse, "r2_by_window", "cohort", cohort),
        by_tissue=_rows(warehouse, "r2_by_tissue", "cohort", cohort),
        generalisation=_rows(warehouse, "generalisation_summary", "source_cohort", cohort),
        ground_truth=ground_truth,
        source=data_source(source, ground_truth is not None),
        provenance={
            "generated": datetime.now(UTC).isoformat(timespec="seconds"),
            "report run": context.run_id,
            "config": ", ".join(
                f"{p} W={int(w):,} {t}" for p, w, t in
                gene_metrics[["protocol", "window_bp", "tissue"]].drop_duplicates()
                .sort_values(["protocol", "window_bp", "tissue"]).itertuples(index=False)),
            "warehouse": str(Path(warehouse.database).resolve()),
        },
    )
    path, csv = write_report(inputs, report_path(warehouse, cohort))
    size = path.stat().st_size
    headline = headline_table(inputs)
    figures = report_figures(inputs)
    context.log.info(f"{cohort}: report written to {path} ({size / 1e6:.1f} MB), per-gene rows "
                     f"to {csv}")
    metadata = {
        "path": MetadataValue.path(str(path)),
        "genes_csv": MetadataValue.path(str(csv)),
        "bytes": size,
        "source": inputs.source.url,
        "synthetic": inputs.source.synthetic,
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
