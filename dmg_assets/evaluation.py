"""Evaluation assets: every baseline model on the CNN's outer folds, and their paired comparison.

``model_evaluation`` (per cohort × chromosome) cross-validates the configured models of the
registry on every gene of the partition with the shared engine and writes three tables keyed by
protocol and window, with a ``model`` column: fold metrics, gene metrics and out-of-fold
predictions. The CNN itself is trained by ``cnn_models``; the ``gene_metrics`` view lists its rows
beside these, so a comparison is one GROUP BY. ``model_comparison`` (per cohort) pairs every two
models over the genes both were scored on; ``r2_by_cpg_count`` (per cohort) is the paper's
CpG-count experiment.
"""

import time
from datetime import UTC, datetime

import pandas as pd
from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)
from pydantic import Field, field_validator

from dmg_assets.automation import RETRAIN_ON_NEW_DATA
from dmg_assets.inputs import load_gene_inputs
from dmg_assets.metadata import markdown_table
from dmg_assets.partitions import by_cohort, cohort_chromosome_partitions, cohort_partitions
from dmg_ml.data.barcodes import Tissue
from dmg_ml.data.windows import DEFAULT_WINDOW_BP
from dmg_ml.evaluation.compare import paired_comparison
from dmg_ml.evaluation.cv import ProtocolName
from dmg_ml.evaluation.engine import ModelCVResult, evaluate
from dmg_ml.evaluation.experiments import gene_metrics_frame
from dmg_ml.evaluation.experiments import r2_by_cpg_count as cpg_count_table
from dmg_ml.evaluation.schemas import validate
from dmg_ml.models.registry import MODELS, parallel_params
from dmg_ml.training.runtime import training_threads
from dmg_resources.warehouse import Warehouse

GROUP = "evaluation"
TABLES = ("model_fold_metrics", "model_gene_metrics", "model_predictions")
#: The baselines of the default run: the paper's linear model, the floor and one tree model.
DEFAULT_MODELS = ("enet", "mean", "rf")


class EvaluationConfig(Config):
    models: list[str] = Field(
        default=list(DEFAULT_MODELS),
        description="Registry models to cross-validate (the CNN is trained by cnn_models): "
        + ", ".join(m for m in MODELS if m != "cnn") + ".",
    )
    window_bp: int = Field(default=DEFAULT_WINDOW_BP, description="Window half-width W (bp).")
    protocol: ProtocolName = Field(
        default="honest", description="'honest' or the 'published' audit (the authors' folds)."
    )
    genes: list[str] = Field(default_factory=list, description="Only these genes (default all).")
    tissue: Tissue = Field(
        default="all", description="Samples trained and scored on: all, tumour or normal only."
    )
    seed: int = Field(default=0, description="Seed of the folds: equal to the CNN's, same folds.")
    n_jobs: int = Field(
        default=0, description="Workers for the forests (rf, cascade_forest); 0: one per "
        "physical core."
    )

    @field_validator("models")
    @classmethod
    def _known(cls, models: list[str]) -> list[str]:
        unknown = sorted(set(models) - set(MODELS))
        if unknown or "cnn" in models or not models:
            raise ValueError(
                f"models must be a non-empty list of {sorted(set(MODELS) - {'cnn'})} "
                f"(the CNN is trained by cnn_models); got {models}"
            )
        return models


def _params(model: str, config: EvaluationConfig) -> dict:
    return parallel_params(model, config.n_jobs or training_threads())


def _tables(results: list[ModelCVResult], run_id: str, tissue: str) -> dict[str, pd.DataFrame]:
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    folds = pd.concat(
        [r.fold_metrics.assign(model=r.model, gene=r.gene) for r in results], ignore_index=True
    )
    predictions = pd.concat(
        [r.oof.assign(model=r.model, gene=r.gene) for r in results], ignore_index=True
    )
    tables = {
        "model_fold_metrics": folds.assign(run_id=run_id, tissue=tissue),
        "model_gene_metrics": gene_metrics_frame(results).assign(
            run_id=run_id, trained_at=stamp, tissue=tissue),
        "model_predictions": predictions.assign(run_id=run_id, tissue=tissue),
    }
    return {name: validate(name, frame) for name, frame in tables.items()}


@multi_asset(
    specs=[
        AssetSpec(name, deps=["gene_windows", "m_values", "expression", "samples"],
                  group_name=GROUP, kinds={"scikitlearn", "duckdb"},
                  description=description, automation_condition=RETRAIN_ON_NEW_DATA)
        for name, description in zip(TABLES, (
            "Per-fold R² and r² of every baseline model and gene (outer folds shared with the "
            "CNN).",
            "Per-gene pooled out-of-fold R² and r² of every baseline model.",
            "Out-of-fold predictions of every baseline model, gene and sample.",
        ), strict=True)
    ],
    partitions_def=cohort_chromosome_partitions,
)
def model_evaluation(context: AssetExecutionContext, config: EvaluationConfig,
                     warehouse: Warehouse):
    """Cross-validate the configured baseline models on every gene of a (cohort, chromosome)."""
    keys = context.partition_key.keys_by_dimension
    partition = {"cohort": keys["cohort"], "chromosome": keys["chromosome"],
                 "protocol": config.protocol, "window_bp": str(config.window_bp)}
    inputs = load_gene_inputs(warehouse, keys["cohort"], keys["chromosome"], config.window_bp,
                              config.genes, config.tissue)
    genes = [i.data for i in inputs]
    context.log.info(f"{len(genes)} genes on {keys['chromosome']} ({keys['cohort']}), models "
                     f"{config.models}, protocol {config.protocol}, W={config.window_bp:,} bp")
    if not genes:
        for name in TABLES:
            yield MaterializeResult(asset_key=name, metadata={"genes": 0})
        return
    results: list[ModelCVResult] = []
    for model in config.models:
        started = time.monotonic()
        scored = evaluate(genes, model, protocol=config.protocol,
                          params=_params(model, config), seed=config.seed)
        results += scored
        mean_r2 = sum(r.r2 for r in scored) / len(scored)
        context.log.info(f"{model}: {len(scored)} genes, mean R² {mean_r2:.3f}, "
                         f"{time.monotonic() - started:.1f} s")
    key = ["model", "tissue", "gene"] if config.genes else ["model", "tissue"]
    with warehouse.transaction() as transaction:
        rows = {name: transaction.replace_rows(name, partition, frame, key=key)
                for name, frame in _tables(results, context.run_id, config.tissue).items()}
    summary = (
        pd.DataFrame({"model": [r.model for r in results], "r2": [r.r2 for r in results],
                      "pearson_r2": [r.pearson_r2 for r in results]})
        .groupby("model").agg(genes=("r2", "size"), mean_r2=("r2", "mean"),
                              mean_pearson_r2=("pearson_r2", "mean")).reset_index()
    )
    for name in TABLES:
        metadata = {"rows": rows[name], "genes": len(genes), "models": ", ".join(config.models)}
        if name == "model_gene_metrics":
            metadata["summary"] = MetadataValue.md(markdown_table(summary))
        yield MaterializeResult(asset_key=name, metadata=metadata)


#: A per-cohort table computed from every model's gene metrics (all chromosomes of the cohort).
_COHORT_SUMMARY = {
    "partitions_def": cohort_partitions,
    "group_name": GROUP,
    "kinds": {"duckdb"},
    "deps": [
        AssetDep(name, partition_mapping=by_cohort)
        for name in ("model_gene_metrics", "cnn_gene_metrics")
    ],
}


def _gene_metrics(warehouse: Warehouse, cohort: str, min_models: int, why: str) -> pd.DataFrame:
    """The ``gene_metrics`` rows of ``cohort``; fails with the reason when they hold fewer than
    ``min_models`` models."""
    metrics = warehouse.query("SELECT * FROM gene_metrics WHERE cohort = ?", [cohort])
    if metrics["model"].nunique() < min_models:
        raise LookupError(
            f"{cohort}: gene_metrics holds {sorted(metrics['model'].unique())}: materialise "
            f"cnn_models and model_evaluation first ({why})"
        )
    return metrics


@asset(**_COHORT_SUMMARY)
def model_comparison(context: AssetExecutionContext, warehouse: Warehouse) -> MaterializeResult:
    """Every pair of models (the CNN and the baselines) over the genes both were scored on: mean
    and median per-gene ΔR², share of genes each wins, Wilcoxon p and a bootstrap 95 % interval;
    for R² (coefficient of determination) and r² (squared Pearson)."""
    cohort = context.partition_key
    metrics = _gene_metrics(warehouse, cohort, 2, "a comparison needs two models")
    table = pd.concat(
        [paired_comparison(metrics, metric) for metric in ("r2", "pearson_r2")],
        ignore_index=True,
    )
    rows = warehouse.write("model_comparison", {"cohort": cohort}, table)
    shown = table[table["metric"] == "r2"][
        ["protocol", "window_bp", "tissue", "model_a", "model_b", "genes", "mean_delta",
         "median_delta", "share_a_wins", "wilcoxon_p", "ci_low", "ci_high"]
    ]
    return MaterializeResult(metadata={
        "rows": rows, "models": ", ".join(sorted(metrics["model"].unique())),
        "r2_comparison": MetadataValue.md(markdown_table(shown)),
    })


@asset(**_COHORT_SUMMARY)
def r2_by_cpg_count(context: AssetExecutionContext, warehouse: Warehouse) -> MaterializeResult:
    """The paper's CpG-count experiment: genes, mean and median R² and r² per model and bin of
    the number of CpGs in the gene's window, per protocol and window."""
    cohort = context.partition_key
    metrics = _gene_metrics(warehouse, cohort, 1, "one of them is enough")
    table = cpg_count_table(metrics)
    rows = warehouse.write("r2_by_cpg_count", {"cohort": cohort}, table)
    index = ["protocol", "window_bp", "tissue", "cpg_bin", "bin_low"]
    shown = table.pivot_table(index=index, columns="model", values="mean_r2").reset_index()
    shown = shown.sort_values(index[:3] + ["bin_low"]).drop(columns="bin_low")
    return MaterializeResult(metadata={
        "rows": rows, "mean_r2_by_bin": MetadataValue.md(markdown_table(shown)),
    })
