"""Evaluation assets: every model, the CNN included, cross-validated on the same outer folds.

``model_evaluation`` (per cohort × chromosome) cross-validates the configured models of the
registry on every gene of the partition with the one engine (``dmg_ml.evaluation.engine``) and
commits, in one transaction, one family of tables keyed by protocol and window with a ``model``
column: fold metrics, gene metrics and out-of-fold predictions; the CNN's training facts
(``cnn_training``) and its saved models (``model_registry``). ``model_summary``,
``model_comparison`` and ``r2_by_cpg_count`` (per cohort) roll a cohort's gene metrics up: a
summary with a histogram, every pair of models over the genes both were scored on, and the
paper's CpG-count experiment.
"""

import json
import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)

from dmg_assets.automation import RETRAIN_ON_NEW_DATA
from dmg_assets.configs import CNNConfig, ModelsConfig, ScopeConfig
from dmg_assets.inputs import load_gene_inputs
from dmg_assets.metadata import ProgressClock, markdown_table, png_markdown, progress_line
from dmg_assets.partitions import by_cohort, cohort_chromosome_partitions, cohort_partitions
from dmg_assets.registry import (
    SUPERSEDED,
    registered_keys,
    save_models,
    superseded,
    superseded_message,
)
from dmg_ml.data.splits import HONEST, PUBLISHED
from dmg_ml.evaluation.compare import paired_comparison
from dmg_ml.evaluation.engine import ModelCVResult, evaluate
from dmg_ml.evaluation.experiments import gene_metrics_frame
from dmg_ml.evaluation.experiments import r2_by_cpg_count as cpg_count_table
from dmg_ml.evaluation.protocols import headline_metric
from dmg_ml.evaluation.registry import parallel_params
from dmg_ml.evaluation.schemas import validate
from dmg_ml.runtime import training_threads
from dmg_ml.training.estimators import cnn_params
from dmg_ml.training.folds import protocol_config
from dmg_resources.checkpoints import CheckpointStore
from dmg_resources.device import TorchDevice
from dmg_resources.warehouse import Warehouse

GROUP = "evaluation"
#: The pool of steps that train on the torch device: one slot per GPU, one on CPU.
POOL = "torch_training"
#: The tables ``model_evaluation`` commits together, as the UI describes them.
DESCRIPTIONS = {
    "fold_metrics": "Every model's R² and r² per gene and outer fold (the same folds for all).",
    "gene_metrics": "Every model's R² (coefficient of determination; below 0: worse than the "
    "training mean) and r² (squared Pearson) per gene, pooled over out-of-fold predictions and "
    "as the mean over folds.",
    "predictions": "Every sample's out-of-fold prediction by every model, with its fold.",
    "cnn_training": "What the CNN's training did per gene and fold: rows held out for early "
    "stopping, epochs run, best epoch, weights kept, precision, trainer.",
    "model_registry": "The saved models: one safetensors file per model and gene (its final "
    "model trained on every sample and/or its fold models, with scalers and probe order), its "
    "sha256, bytes, precision and honest R².",
}
TABLES = tuple(DESCRIPTIONS)


class EvaluationConfig(ScopeConfig, ModelsConfig, CNNConfig):
    """What ``model_evaluation`` cross-validates: its scope, its models, the CNN's training."""

    @property
    def final_model(self) -> bool:
        """Whether the CNN's final model is trained (honest protocol, a layout that keeps it)."""
        if self.protocol == PUBLISHED and self.checkpoint_models == "final":
            raise ValueError(
                "the published audit trains no final model: set checkpoint_models to 'folds'"
            )
        return self.protocol == HONEST and self.checkpoint_models != "folds"


class _Progress:
    """Logs genes done, running mean R² and ETA every ~10% of the genes or 30 s, not per gene."""

    def __init__(self, context: AssetExecutionContext, model: str, total: int) -> None:
        self.context, self.model, self.clock, self.r2 = context, model, ProgressClock(total), []

    def __call__(self, result: ModelCVResult) -> None:
        self.r2.append(result.r2)
        if (timing := self.clock.tick()) is None:
            return
        self.context.log.info(progress_line(
            self.clock.total, timing, f", {self.model} running mean R² {np.mean(self.r2):.3f}"
        ))


def _params(model: str, config: EvaluationConfig, device: str, precision: str) -> dict:
    if model == "cnn":
        return cnn_params(config.train_config(precision, config.seed), config.trainer, device)
    return parallel_params(model, config.n_jobs or training_threads())


def _tables(results: list[ModelCVResult], run_id: str, config: EvaluationConfig,
            precision: str, registry: list[dict]) -> dict[str, pd.DataFrame]:
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    folds = pd.concat([r.fold_metrics.assign(model=r.model, gene=r.gene) for r in results],
                      ignore_index=True)
    predictions = pd.concat([r.oof.assign(model=r.model, gene=r.gene) for r in results],
                            ignore_index=True)
    training = [r.training.assign(model=r.model, gene=r.gene) for r in results
                if r.training is not None]
    tables = {
        "fold_metrics": folds.assign(run_id=run_id),
        "gene_metrics": gene_metrics_frame(results).assign(run_id=run_id, trained_at=stamp),
        "predictions": predictions.assign(run_id=run_id),
        "cnn_training": pd.concat(training, ignore_index=True).assign(
            weights=config.weights, precision=precision, trainer=config.trainer, run_id=run_id,
        ) if training else pd.DataFrame(),
        "model_registry": pd.DataFrame(registry),
    }
    return {name: validate(name, frame.assign(tissue=config.tissue))
            for name, frame in tables.items() if not frame.empty}


@multi_asset(
    specs=[
        AssetSpec(name, deps=["gene_windows", "m_values", "expression", "samples"],
                  group_name=GROUP, kinds={"pytorch", "scikitlearn", "duckdb"},
                  description=description, automation_condition=RETRAIN_ON_NEW_DATA)
        for name, description in DESCRIPTIONS.items()
    ],
    partitions_def=cohort_chromosome_partitions,
    pool=POOL,
)
def model_evaluation(
    context: AssetExecutionContext, config: EvaluationConfig, warehouse: Warehouse,
    device: TorchDevice, checkpoints: CheckpointStore,
):
    """Cross-validate the configured models (the CNN and the baselines) on every gene of a
    (cohort, chromosome) partition, on the same outer folds.

    Rows are keyed by protocol, window, model and tissue, so variants live side by side;
    evaluating a gene list replaces only those genes' rows, and only the models run.
    """
    keys = context.partition_key.keys_by_dimension
    partition = {"cohort": keys["cohort"], "chromosome": keys["chromosome"],
                 "protocol": config.protocol, "window_bp": str(config.window_bp)}
    inputs = load_gene_inputs(warehouse, keys["cohort"], keys["chromosome"], config.window_bp,
                              config.genes, config.tissue)
    genes = [i.data for i in inputs]
    torch_device = device.resolve()
    precision = protocol_config(
        config.protocol, config.train_config(device.resolve_precision(torch_device), config.seed)
    ).precision  # the published audit trains in fp32, as the authors
    context.log.info(
        f"{len(genes)} genes on {keys['chromosome']} ({keys['cohort']}), models "
        f"{config.models}, protocol {config.protocol}, W={config.window_bp:,} bp, "
        f"{torch_device} {precision}"
    )
    if not genes:
        for name in TABLES:
            yield MaterializeResult(asset_key=name, metadata={"genes": 0})
        return
    results: list[ModelCVResult] = []
    for model in config.models:
        started = time.monotonic()
        scored = evaluate(
            genes, model, protocol=config.protocol,
            params=_params(model, config, torch_device, precision), seed=config.seed,
            on_gene_done=_Progress(context, model, len(genes)),
            final_model=model == "cnn" and config.final_model,
        )
        if model == "cnn":
            scored = [_named(r, config.cnn_name) for r in scored]
        results += scored
        context.log.info(f"{scored[0].model}: {len(scored)} genes, mean R² "
                         f"{np.mean([r.r2 for r in scored]):.3f}, "
                         f"{time.monotonic() - started:.1f} s")
    config_json = json.dumps({**config.model_dump(), "precision": precision}, sort_keys=True)
    run_dir = (keys["cohort"], config.protocol, f"w{config.window_bp}", context.run_id)
    key = ["model", "tissue", "gene"] if config.genes else ["model", "tissue"]
    with checkpoints.writing(*run_dir):  # until committed: sweep leaves its files alone
        registry = save_models(checkpoints, run_dir, results, {i.data.gene: i for i in inputs},
                               config, config_json, context.run_id)
        tables = _tables(results, context.run_id, config, precision, registry)
        with warehouse.transaction() as transaction:
            rows = {name: transaction.replace_rows(name, partition, frame, key=key)
                    for name, frame in tables.items()}
            replaced = superseded(warehouse, partition, config.tissue,
                                  tables.get("model_registry", pd.DataFrame()), context.run_id)
            if not replaced.empty:
                transaction.replace_rows(SUPERSEDED, partition, replaced,
                                         key=["model", "tissue", "gene", "path"])
    checkpoints.sweep(lambda: registered_keys(warehouse))
    if not replaced.empty:
        context.log.warning(superseded_message(replaced))
    for name in TABLES:
        metadata = {"rows": rows.get(name, 0), "genes": len(genes),
                    "models": ", ".join(config.models)}
        if name == "gene_metrics":
            metadata["summary"] = MetadataValue.md(markdown_table(_summary(tables[name])))
        if name == "model_registry":
            metadata["superseded_with_lower_r2"] = len(replaced)
        yield MaterializeResult(asset_key=name, metadata=metadata)


def _named(result: ModelCVResult, name: str) -> ModelCVResult:
    result.model = name
    return result


def _summary(genes: pd.DataFrame) -> pd.DataFrame:
    return (genes.groupby("model")
            .agg(genes=("r2", "size"), mean_r2=("r2", "mean"), median_r2=("r2", "median"),
                 mean_pearson_r2=("pearson_r2", "mean"))
            .reset_index())


#: A per-cohort table computed from every model's gene metrics (all chromosomes of the cohort).
_COHORT_SUMMARY = {
    "partitions_def": cohort_partitions,
    "group_name": GROUP,
    "kinds": {"duckdb"},
    "deps": [
        AssetDep("gene_metrics", partition_mapping=by_cohort)
    ],
}


def _gene_metrics(warehouse: Warehouse, cohort: str, min_models: int, why: str) -> pd.DataFrame:
    """The ``gene_metrics`` rows of ``cohort``; fails with the reason when they hold fewer than
    ``min_models`` models."""
    metrics = warehouse.query("SELECT * FROM gene_metrics WHERE cohort = ?", [cohort])
    if metrics["model"].nunique() < min_models:
        raise LookupError(
            f"{cohort}: gene_metrics holds {sorted(metrics['model'].unique())}: materialise "
            f"model_evaluation first ({why})"
        )
    return metrics


@asset(**_COHORT_SUMMARY)
def model_summary(context: AssetExecutionContext, warehouse: Warehouse) -> MaterializeResult:
    """Genes and mean / median R² and r² per protocol, window, tissue and model, the mean of
    the protocol's headline figure (``headline_metric``: pooled R² when honest, the authors'
    own figure in the published audit), and a histogram of the per-gene R²."""
    cohort = context.partition_key
    genes = _with_headline(_gene_metrics(warehouse, cohort, 1, "one model is enough"))
    summary = (
        genes.groupby(["protocol", "window_bp", "tissue", "model"])
        .agg(genes=("gene", "nunique"), mean_r2=("r2", "mean"), median_r2=("r2", "median"),
             mean_pearson_r2=("pearson_r2", "mean"),
             median_pearson_r2=("pearson_r2", "median"), mean_n_cpgs=("n_cpgs", "mean"),
             headline_metric=("headline_metric", "first"), mean_headline=("headline", "mean"))
        .reset_index()
    )
    summary["window_bp"] = summary["window_bp"].astype("int64")
    rows = warehouse.write("model_summary", {"cohort": cohort}, summary)
    return MaterializeResult(metadata={
        "rows": rows, "genes": int(genes["gene"].nunique()),
        "summary": MetadataValue.md(markdown_table(summary)),
        "r2_histogram": MetadataValue.md(_histogram_markdown(genes)),
    })


def _with_headline(genes: pd.DataFrame) -> pd.DataFrame:
    """``genes`` with each row's headline metric (its name) and value."""
    metric = [headline_metric(m, p) for m, p in zip(genes["model"], genes["protocol"],
                                                     strict=True)]
    columns = {name: genes.columns.get_loc(name) for name in set(metric)}
    values = genes.to_numpy()
    headline = [values[i, columns[name]] for i, name in enumerate(metric)]
    return genes.assign(headline_metric=metric, headline=pd.to_numeric(headline))


def _histogram_markdown(genes: pd.DataFrame) -> str:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5), dpi=100)
    axis = figure.subplots()
    for (protocol, window, tissue, model), group in genes.groupby(
            ["protocol", "window_bp", "tissue", "model"]):
        axis.hist(group["r2"].clip(-1, 1), bins=30, alpha=0.6,
                  label=f"{model}, {protocol}, W={int(window):,}, {tissue}")
    axis.set_xlabel("out-of-fold R² per gene (clipped at -1)")
    axis.set_ylabel("genes")
    axis.legend()
    figure.tight_layout()
    return png_markdown(figure, "R² histogram")


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
