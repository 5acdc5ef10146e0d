"""Training assets: one CNN per gene, cross-validated, per (cohort, chromosome) partition.

``cnn_models`` trains every gene of a chromosome (or the genes named in run config) and writes
four tables: fold metrics, gene metrics, out-of-fold predictions and the checkpoint registry.
``cnn_summary`` rolls a cohort's gene metrics up into one row per protocol and window, with a
histogram in the UI.
"""

import json
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime
from typing import Literal

import numpy as np
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
from pydantic import Field

from dmg_assets.automation import RETRAIN_ON_NEW_DATA
from dmg_assets.inputs import load_gene_inputs
from dmg_assets.metadata import ProgressClock, markdown_table, png_markdown, progress_line
from dmg_assets.partitions import by_cohort, cohort_chromosome_partitions, cohort_partitions
from dmg_ml.data.barcodes import Tissue
from dmg_ml.data.inputs import GeneInput
from dmg_ml.data.windows import DEFAULT_WINDOW_BP
from dmg_ml.evaluation.cv import (
    HALF_PRECISION_MAX_DELTA_R2,
    GeneCheckpoint,
    GeneCVResult,
    ProtocolName,
    cross_validate,
    half_precision,
    half_precision_delta_r2,
    protocol_config,
)
from dmg_ml.evaluation.schemas import validate
from dmg_ml.models.cnn import ChannelRule
from dmg_ml.training.reference import TrainConfig, TrainerName
from dmg_resources.checkpoints import CheckpointStore
from dmg_resources.device import TorchDevice
from dmg_resources.warehouse import Warehouse

GROUP = "training"
POOL = "torch_training"
#: The four tables ``cnn_models`` commits together, as the UI describes them.
DESCRIPTIONS = {
    "cnn_fold_metrics": "The CNN's R² and r² per gene and outer fold, with epochs run and the "
    "best epoch.",
    "cnn_gene_metrics": "The CNN's R² (coefficient of determination; below 0: worse than the "
    "training mean) and r² (squared Pearson) per gene, pooled over out-of-fold predictions and "
    "as the mean over folds.",
    "cnn_predictions": "Every sample's out-of-fold prediction by the CNN, with its fold.",
    "cnn_checkpoints": "The registry of saved CNNs: one safetensors file per gene (its final "
    "model trained on every sample and/or its fold models, with scalers and probe order), its "
    "sha256, bytes, precision and honest R².",
}
TABLES = tuple(DESCRIPTIONS)
REGISTRY = "cnn_checkpoints"
#: Registry rows of models a retrain replaced with lower-scoring ones (their files are kept).
SUPERSEDED = "cnn_superseded"


#: The paper's training settings: the one home of their defaults is ``TrainConfig``.
_PAPER = TrainConfig()


class TrainingConfig(Config):
    window_bp: int = Field(default=DEFAULT_WINDOW_BP, description="Window half-width W (bp).")
    protocol: ProtocolName = Field(
        default="honest",
        description="'honest' (patient-grouped, fresh model per fold, inner early stopping) or "
        "'published' (the authors' code path; an audit, not an estimate).",
    )
    genes: list[str] = Field(
        default_factory=list, description="Train only these genes (default: every gene)."
    )
    max_epochs: int = Field(default=_PAPER.max_epochs, description="Epochs at most per fold.")
    patience: int = Field(
        default=_PAPER.patience, description="Epochs without a better validation loss to stop."
    )
    learning_rate: float = Field(default=_PAPER.lr, description="Adam's learning rate.")
    batch_size: int = Field(default=0, description="0 = full batch (as the authors); else a size.")
    seed: int = Field(default=_PAPER.seed, description="Seed of the folds and initial weights.")
    channels: ChannelRule = Field(
        default="adaptive",
        description="'adaptive' (the paper's rule from L) or 'fixed' (64/32, the authors' first "
        "commit).",
    )
    trainer: TrainerName = Field(
        default="batched", description="'batched' (fast, stacked) or 'reference' (plain loop)."
    )
    tissue: Tissue = Field(
        default="all", description="Samples trained and scored on: all, tumour or normal only."
    )
    checkpoint_precision: Literal["auto", "fp32", "fp16"] = Field(
        default="auto",
        description="Weights in the checkpoint files: 'auto' stores a gene in half precision "
        "when that moves its out-of-fold R² by less than 1e-3 (half the bytes), else fp32.",
    )
    checkpoint_models: Literal["folds", "folds_and_final", "final"] = Field(
        default="folds",
        description="Models saved per gene: its five fold models (the default), those and a "
        "final model trained on every sample (early stopping on a patient-grouped 20 %; +20 % "
        "training), or the final model alone, a fifth of the folds' disk: the choice for whole "
        "cohorts (docs/design.md §11). Prediction averages what is saved and reports its range; "
        "the generalisation experiment uses the folds. The published audit saves its folds.",
    )
    store_min_r2: float | None = Field(
        default=None,
        description="Save no model for a gene whose honest out-of-fold R² is below this (its "
        "metrics and predictions stay): models that explain nothing need no disk. Unset: every "
        "gene.",
    )
    restore_best_weights: bool = Field(
        default=True,
        description="Restore the best epoch's weights after early stopping (the paper). False "
        "keeps the last epoch's, as the authors' script does in effect: with protocol "
        "'published' and seed 42 it is the authors' run exactly (published always trains in "
        "fp32 and scales nothing).",
    )

    def train_config(self, precision: str) -> TrainConfig:
        return TrainConfig(
            max_epochs=self.max_epochs, patience=self.patience, lr=self.learning_rate,
            batch_size=self.batch_size or None, seed=self.seed, channels=self.channels,
            precision=precision, restore_best_weights=self.restore_best_weights,
        )

    @property
    def final_model(self) -> bool:
        """Whether a final model is trained (the honest protocol, a layout that keeps it)."""
        if self.protocol == "published" and self.checkpoint_models == "final":
            raise ValueError(
                "the published audit trains no final model: set checkpoint_models to 'folds'"
            )
        return self.protocol == "honest" and self.checkpoint_models != "folds"

    @property
    def variant(self) -> dict[str, str]:
        """The settings that key a row within its partition, so variants sit side by side."""
        return {"tissue": self.tissue, "weights": "best" if self.restore_best_weights else "last"}


def _partition(context: AssetExecutionContext, config: TrainingConfig) -> dict[str, str]:
    keys = context.partition_key.keys_by_dimension
    return {
        "cohort": keys["cohort"],
        "chromosome": keys["chromosome"],
        "protocol": config.protocol,
        "window_bp": str(config.window_bp),
    }


class _Progress:
    """Logs genes done, running mean R² and ETA every ~10% of the genes or 30 s, not per epoch."""

    def __init__(self, context: AssetExecutionContext, total: int) -> None:
        self.context, self.clock, self.r2 = context, ProgressClock(total), []

    def __call__(self, result: GeneCVResult) -> None:
        self.r2.append(result.r2)
        if (timing := self.clock.tick()) is None:
            return
        self.context.log.info(progress_line(
            self.clock.total, timing, f", running mean R² {np.mean(self.r2):.3f}"
        ))


def _tables(
    results: list[GeneCVResult], run_id: str, trainer: str, checkpoint_rows: list[dict],
    variant: dict[str, str],
) -> dict[str, pd.DataFrame]:
    folds = pd.concat(
        [r.fold_metrics.assign(gene=r.gene) for r in results], ignore_index=True
    )
    predictions = pd.concat([r.oof.assign(gene=r.gene) for r in results], ignore_index=True)
    genes = pd.DataFrame(
        {
            "gene": [r.gene for r in results],
            "n_cpgs": [r.n_cpgs for r in results],
            "n_samples": [len(r.oof) for r in results],
            "r2": [r.r2 for r in results],
            "pearson_r2": [r.pearson_r2 for r in results],
            "mean_fold_r2": [r.fold_metrics["r2"].mean() for r in results],
            "mean_fold_pearson_r2": [r.fold_metrics["pearson_r2"].mean() for r in results],
            "mean_epochs": [r.fold_metrics["epochs_run"].mean() for r in results],
            "seconds": [r.seconds for r in results],
            "trainer": trainer,
            "run_id": run_id,
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    tables = {
        "cnn_fold_metrics": folds.assign(run_id=run_id),
        "cnn_gene_metrics": genes,
        "cnn_predictions": predictions.assign(run_id=run_id),
        "cnn_checkpoints": pd.DataFrame(checkpoint_rows),
    }
    return {name: validate(name, frame.assign(**variant)) for name, frame in tables.items()}


def _save_checkpoints(
    store: CheckpointStore, run_dir: tuple[str, ...], results: list[GeneCVResult],
    inputs: dict[str, GeneInput], config: TrainingConfig, config_json: str, run_id: str,
) -> list[dict]:
    """Save each gene's models as ``config`` asks (which models, which precision, which genes)
    and return its registry rows."""
    rows = []
    precision = config.checkpoint_precision
    for result in results:
        if config.store_min_r2 is not None and result.r2 < config.store_min_r2:
            continue
        gene = inputs[result.gene]
        checkpoint = _kept_models(
            result.gene_checkpoint(gene.probe_ids, config_json, run_id), config.checkpoint_models
        )
        delta = half_precision_delta_r2(result, gene.data) if precision == "auto" else None
        half = precision == "fp16" or (delta is not None and delta < HALF_PRECISION_MAX_DELTA_R2)
        if half:
            checkpoint = replace(
                checkpoint, folds=[half_precision(f) for f in checkpoint.folds],
                final=checkpoint.final and half_precision(checkpoint.final),
            )
        key, digest = store.save(checkpoint, *run_dir, result.gene)
        rows.append(
            {
                "gene": result.gene,
                "path": key,
                "sha256": digest,
                "n_cpgs": result.n_cpgs,
                "n_folds": len(checkpoint.folds),
                "final_model": checkpoint.final is not None,
                "config": config_json,
                "r2": result.r2,
                "pearson_r2": result.pearson_r2,
                "weights_dtype": "fp16" if half else "fp32",
                "half_precision_delta_r2": delta,
                "bytes": store.resolve(key).stat().st_size,
                "run_id": run_id,
            }
        )
    return rows


@multi_asset(
    specs=[
        AssetSpec(name, deps=["gene_windows", "m_values", "expression", "samples"],
                  group_name=GROUP, kinds={"pytorch", "duckdb"}, description=description,
                  automation_condition=RETRAIN_ON_NEW_DATA)
        for name, description in DESCRIPTIONS.items()
    ],
    partitions_def=cohort_chromosome_partitions,
    pool=POOL,
)
def cnn_models(
    context: AssetExecutionContext, config: TrainingConfig, warehouse: Warehouse,
    device: TorchDevice, checkpoints: CheckpointStore,
):
    """Cross-validated DeepMethyGene CNNs for every gene of a (cohort, chromosome) partition.

    Writes per-fold and per-gene metrics (R² = coefficient of determination, r² = squared
    Pearson), out-of-fold predictions and a checkpoint registry. Rows are keyed by protocol,
    window, tissue and weights (best or last epoch), so variants live side by side; training a
    gene list replaces only those genes' rows.
    """
    partition = _partition(context, config)
    inputs = load_gene_inputs(
        warehouse, partition["cohort"], partition["chromosome"], config.window_bp, config.genes,
        config.tissue,
    )
    torch_device = device.resolve()
    train_config = protocol_config(config.protocol,
                                   config.train_config(device.resolve_precision(torch_device)))
    precision = train_config.precision  # the published audit trains in fp32, as the authors
    context.log.info(
        f"{len(inputs)} genes on {partition['chromosome']} ({partition['cohort']}), "
        f"protocol {config.protocol}, W={config.window_bp:,} bp, {torch_device} {precision}"
    )
    if not inputs:
        for name in TABLES:
            yield MaterializeResult(asset_key=name, metadata={"genes": 0})
        return
    results = cross_validate(
        [i.data for i in inputs], protocol=config.protocol,
        config=train_config, trainer=config.trainer, device=torch_device,
        on_gene_done=_Progress(context, len(inputs)), final_model=config.final_model,
    )
    config_json = json.dumps({**config.model_dump(), "precision": precision}, sort_keys=True)
    run_dir = (partition["cohort"], partition["protocol"], f"w{partition['window_bp']}",
               context.run_id)
    with checkpoints.writing(*run_dir):  # until committed: sweep leaves its files alone
        registry = _save_checkpoints(
            checkpoints, run_dir, results, {i.data.gene: i for i in inputs}, config,
            config_json, context.run_id,
        )
        tables = _tables(results, context.run_id, config.trainer, registry, config.variant)
        key = [*config.variant, "gene"] if config.genes else [*config.variant]
        with warehouse.transaction() as transaction:
            rows = {
                name: transaction.replace_rows(name, partition, frame, key=key)
                for name, frame in tables.items()
            }
            superseded = _superseded(warehouse, partition, config.variant,
                                     tables["cnn_gene_metrics"], context.run_id)
            if not superseded.empty:
                transaction.replace_rows(SUPERSEDED, partition, superseded,
                                         key=[*config.variant, "gene", "path"])
    checkpoints.sweep(lambda: _registered_keys(warehouse))
    if not superseded.empty:
        context.log.warning(_superseded_message(superseded))
    for name, frame in tables.items():
        metadata = {"rows": rows[name], "genes": len(results)}
        if name == "cnn_gene_metrics":
            metadata |= _r2_summary(frame)
        if name == "cnn_checkpoints":
            metadata["superseded_with_lower_r2"] = len(superseded)
        yield MaterializeResult(asset_key=name, metadata=metadata)


def _kept_models(checkpoint: GeneCheckpoint, layout: str) -> GeneCheckpoint:
    """The models of ``checkpoint`` that ``layout`` (``checkpoint_models``) keeps (a final
    model is trained wherever ``layout`` asks for one: ``TrainingConfig.final_model``)."""
    if layout == "final":
        return replace(checkpoint, folds=[])
    if layout == "folds":
        return replace(checkpoint, final=None)
    return checkpoint


def _superseded(
    warehouse: Warehouse, partition: dict[str, str], variant: dict[str, str],
    genes: pd.DataFrame, run_id: str,
) -> pd.DataFrame:
    """Registry rows of this variant's stored models whose gene this run scores lower (by
    out-of-fold R²), with the run and R² that replace them: their files are kept."""
    try:
        old = warehouse.read(REGISTRY, partition)
    except LookupError:
        return pd.DataFrame()
    old = old[(old["tissue"] == variant["tissue"]) & (old["weights"] == variant["weights"])]
    new_r2 = genes.set_index("gene")["r2"]
    old = old[old["gene"].isin(new_r2.index)]
    lower = old[new_r2.loc[old["gene"]].to_numpy() < old["r2"].to_numpy()]
    frame = lower.assign(
        superseded_by_run_id=run_id, superseded_by_r2=new_r2.loc[lower["gene"]].to_numpy(),
        superseded_at=pd.Timestamp.now(tz="UTC").isoformat(),
    )
    return validate(SUPERSEDED, frame.reset_index(drop=True))


def _superseded_message(superseded: pd.DataFrame) -> str:
    shown = ", ".join(f"{row.gene} {row.r2:.3f} → {row.superseded_by_r2:.3f}"
                      for row in superseded.head(5).itertuples())
    more = f" and {len(superseded) - 5} more" if len(superseded) > 5 else ""
    return (
        f"{len(superseded)} genes scored lower than their stored models ({shown}{more}); the "
        f"new models replace them in {REGISTRY}, and the previous ones are kept: SELECT * FROM "
        f"{SUPERSEDED} WHERE superseded_by_run_id = '{superseded['superseded_by_run_id'][0]}'"
    )


def _registered_keys(warehouse: Warehouse) -> set[str]:
    """Every checkpoint key the committed warehouse names (current and superseded models)."""
    keys: set[str] = set()
    for table in (REGISTRY, SUPERSEDED):
        with suppress(LookupError):
            keys |= set(warehouse.read(table, columns=["path"])["path"])
    return keys


def _r2_summary(genes: pd.DataFrame) -> dict[str, float]:
    return {
        "mean_r2": round(float(genes["r2"].mean()), 4),
        "median_r2": round(float(genes["r2"].median()), 4),
        "mean_pearson_r2": round(float(genes["pearson_r2"].mean()), 4),
        "median_pearson_r2": round(float(genes["pearson_r2"].median()), 4),
    }


@asset(
    partitions_def=cohort_partitions,
    group_name=GROUP,
    kinds={"duckdb"},
    deps=[
        AssetDep(
            "cnn_gene_metrics",
            partition_mapping=by_cohort,
        )
    ],
)
def cnn_summary(context: AssetExecutionContext, warehouse: Warehouse) -> MaterializeResult:
    """Genes trained and mean / median R² and r² per protocol, window, tissue and weights, with
    a histogram."""
    cohort = context.partition_key
    genes = warehouse.query(
        "SELECT * FROM cnn_gene_metrics WHERE cohort = ?", [cohort]
    )
    if genes.empty:
        raise LookupError(f"no cnn_gene_metrics rows for {cohort}: materialise cnn_models first")
    summary = (
        genes.groupby(["protocol", "window_bp", "tissue", "weights"])
        .agg(
            genes=("gene", "nunique"),
            mean_r2=("r2", "mean"),
            median_r2=("r2", "median"),
            mean_pearson_r2=("pearson_r2", "mean"),
            median_pearson_r2=("pearson_r2", "median"),
            mean_n_cpgs=("n_cpgs", "mean"),
        )
        .reset_index()
    )
    summary["window_bp"] = summary["window_bp"].astype("int64")
    rows = warehouse.write("cnn_cohort_summary", {"cohort": cohort}, summary)
    return MaterializeResult(
        metadata={
            "rows": rows,
            "genes": int(genes["gene"].nunique()),
            "summary": MetadataValue.md(markdown_table(summary)),
            "r2_histogram": MetadataValue.md(_histogram_markdown(genes)),
        }
    )


def _histogram_markdown(genes: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    variants = genes.groupby(["protocol", "window_bp", "tissue", "weights"])
    for (protocol, window, tissue, weights), group in variants:
        axis.hist(group["r2"].clip(-1, 1), bins=30, alpha=0.6,
                  label=f"{protocol}, W={int(window):,}, {tissue}, {weights} weights")
    axis.set_xlabel("out-of-fold R² per gene (clipped at -1)")
    axis.set_ylabel("genes")
    axis.legend()
    figure.tight_layout()
    return png_markdown(figure, "R² histogram")
