"""What the report is given and the constants it is drawn with.

:class:`ReportInputs` holds the warehouse's tables for one cohort, :class:`DataSource` where the
cohort's files came from. The constants fix the page's look (figure sizes, resolution, how many
genes are named), the bootstrap behind every interval, the per-gene CSV's name and columns, the
models' long names (also the order they are listed in) and what to run when a section has no
data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from dmg_ml.data.barcodes import TISSUES

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
#: The per-gene CSV ``write_report`` writes beside the page (the page links to it by name).
GENES_CSV = "gene_metrics.csv"
#: Inches: at ``DPI`` the scatter is 880 px square, the line and bar charts 1,050 px wide.
SCATTER_FIGSIZE = (8.0, 8.0)
LINE_FIGSIZE = (9.5, 4.8)
#: R² below this is drawn at this value in scatter plots (and counted in the caption).
R2_FLOOR = -1.0

MODEL_NAMES = {
    "cnn": "DeepMethyGene CNN",
    "cnn_last_epoch": "DeepMethyGene CNN, last epoch's weights kept (the authors' script)",
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
    "headline": "materialise model_evaluation for this cohort",
    "comparison": "materialise model_comparison (needs at least two models in gene_metrics)",
    "cnn": "materialise model_evaluation with models including cnn (honest protocol) for this "
           "cohort",
    "enet": "materialise model_evaluation with models including enet (honest protocol)",
    "cpg": "materialise r2_by_cpg_count",
    "window": "materialise window_experiment (models and windows in its config; `dmg_assets.run "
              "--experiments window`)",
    "tissue": "materialise tissue_experiment (all, tumour and normal samples by default)",
    "generalisation": "materialise model_evaluation for this cohort, the data layer of the "
                      "target cohorts, then generalisation",
    "ceiling": "ground truth exists only for synthetic cohorts (the simulator's expected R²)",
}

#: The authors' run exactly (their folds, one model carried across folds, their seed and
#: last-epoch weights), with the experiments skipped: ``{cohort}`` is filled in.
PUBLISHED_COMMAND = ("dmg run --cohorts {cohort} --protocol published --seed 42 "
                     "--keep-last-weights --experiments")
#: The same run from the Dagster UI: the Launchpad config of model_evaluation.
PUBLISHED_LAUNCHPAD = ("ops:\n"
                       "  model_evaluation: {config: {protocol: published, seed: 42, "
                       "restore_best_weights: false}}")

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
    """Everything the report shows, as the warehouse's tables.

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
