"""The paper's experiments as assets, one per cohort (docs/design.md §5): tissue, window and
generalisation. The CpG-count experiment needs no training of its own: it is
``r2_by_cpg_count`` in :mod:`dmg_assets.evaluation`.

Each asset cross-validates its models with the shared engine (the same outer folds as every other
table) chromosome by chromosome, writes one row per model and gene to its own table and shows a
summary in the UI; the views ``r2_by_tissue``, ``r2_by_window`` and ``generalisation_summary``
compare on the same genes. Rows are keyed by protocol, window, tissue and model, so runs with other
settings add rows beside these.
"""

import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset
from pydantic import Field, field_validator

from dmg_assets.configs import GenesPiece, ModelsConfig, ProtocolPiece, WindowPiece, models_field
from dmg_assets.evaluation import POOL
from dmg_assets.inputs import genes_by_chromosome, load_gene_inputs
from dmg_assets.metadata import markdown_table
from dmg_assets.partitions import cohort_partitions
from dmg_ml.data.barcodes import TISSUES
from dmg_ml.data.inputs import GeneData, m_value_matrix
from dmg_ml.data.splits import HONEST
from dmg_ml.data.windows import WINDOW_SIZES
from dmg_ml.evaluation.engine import evaluate
from dmg_ml.evaluation.experiments import (
    FoldPredictor,
    aligned_columns,
    checkpoint_predictors,
    fit_fold_predictors,
    gene_metrics_frame,
    generalisation_scores,
)
from dmg_ml.evaluation.registry import parallel_params
from dmg_ml.evaluation.schemas import validate
from dmg_ml.runtime import training_threads
from dmg_resources.checkpoints import CheckpointStore
from dmg_resources.device import TorchDevice
from dmg_resources.warehouse import Warehouse

GROUP = "experiments"
#: The models of the tissue and window experiments by default: the paper's linear model and the
#: floor, minutes on 2 cores; the CNN and the others through config.
EXPERIMENT_MODELS = ("enet", "mean")
#: Generalisation uses the CNN's saved fold models (no retraining), so it is in by default.
GENERALISATION_MODELS = ("cnn", "enet", "mean")
_DEPS = ["gene_windows", "m_values", "expression", "samples"]
_MIN_PATIENTS = 5  # one per outer fold


class TissueConfig(WindowPiece, ProtocolPiece, GenesPiece, ModelsConfig):
    models: list[str] = models_field(EXPERIMENT_MODELS)
    tissues: list[str] = Field(
        default=list(TISSUES), description="Sample sets to train and score on: all, tumour, normal."
    )

    @field_validator("tissues")
    @classmethod
    def _tissues(cls, tissues: list[str]) -> list[str]:
        """Dagster's config types cannot hold ``list[Tissue]``: the names are checked here."""
        if not tissues or not set(tissues) <= set(TISSUES):
            raise ValueError(f"tissues must be a non-empty list of {list(TISSUES)}; got {tissues}")
        return tissues


class WindowExperimentConfig(ProtocolPiece, GenesPiece, ModelsConfig):
    models: list[str] = models_field(EXPERIMENT_MODELS)
    windows: list[int] = Field(
        default=list(WINDOW_SIZES), description="Window half-widths W (bp) to compare."
    )


class GeneralisationConfig(WindowPiece, GenesPiece, ModelsConfig):
    models: list[str] = models_field(
        GENERALISATION_MODELS, "'cnn' here: its saved fold models, from model_evaluation."
    )
    targets: list[str] = Field(
        default_factory=list,
        description="Cohorts to predict (default: every other cohort the warehouse holds).",
    )


def _params(model: str, n_jobs: int, seed: int, device: TorchDevice) -> dict:
    if model == "cnn":
        torch_device = device.resolve()
        return {"precision": device.resolve_precision(torch_device), "device": torch_device}
    return parallel_params(model, n_jobs or training_threads())


def _genes(warehouse: Warehouse, cohort: str, window_bp: int,
           genes: list[str]) -> Iterator[tuple[str, list[str]]]:
    """(chromosome, genes) of the cohort's window, the named genes routed to theirs."""
    yield from genes_by_chromosome(warehouse, cohort, window_bp, genes).items()


def _cross_validate(genes: list[GeneData], config: TissueConfig | WindowExperimentConfig,
                    device: TorchDevice) -> pd.DataFrame:
    frames = []
    for model in config.models:
        results = evaluate(genes, model, protocol=config.protocol, seed=config.seed,
                           params=_params(model, config.n_jobs, config.seed, device))
        frames.append(gene_metrics_frame(results))
    return pd.concat(frames, ignore_index=True)


def _enough_patients(genes: list[GeneData]) -> bool:
    return bool(genes) and len(np.unique(genes[0].patients)) >= _MIN_PATIENTS


def _write(warehouse: Warehouse, table: str, cohort: str, frame: pd.DataFrame,
           by_gene: bool, run_id: str) -> int:
    key = ["protocol", "window_bp", "tissue", "model"] + (["gene"] if by_gene else [])
    frame = validate(table, frame.assign(run_id=run_id))
    return warehouse.replace_rows(table, {"cohort": cohort}, frame, key=key)


def _summary(warehouse: Warehouse, view: str, cohort_column: str, cohort: str,
             order: str) -> str:
    frame = warehouse.query(f"SELECT * FROM {view} WHERE {cohort_column} = ? ORDER BY {order}",
                            [cohort])
    return markdown_table(frame.drop(columns=[cohort_column]))


@asset(partitions_def=cohort_partitions, group_name=GROUP, kinds={"scikitlearn", "duckdb"},
       deps=_DEPS, pool=POOL)
def tissue_experiment(context: AssetExecutionContext, config: TissueConfig,
                      warehouse: Warehouse, device: TorchDevice) -> MaterializeResult:
    """The paper's tissue experiment: every model trained and scored on all samples, on tumours
    only and on normals only (the paper's normal-only result), one row per model and gene."""
    cohort = context.partition_key
    frames, skipped = [], []
    for tissue in config.tissues:
        started = time.monotonic()
        for chromosome, names in _genes(warehouse, cohort, config.window_bp, config.genes):
            genes = [i.data for i in load_gene_inputs(
                warehouse, cohort, chromosome, config.window_bp, names, tissue)]
            if not _enough_patients(genes):
                skipped.append(f"{tissue} {chromosome}")
                continue
            frames.append(_cross_validate(genes, config, device).assign(tissue=tissue))
        context.log.info(f"{cohort} {tissue}: done in {time.monotonic() - started:.0f} s")
    if not frames:
        raise ValueError(f"{cohort}: no tissue of {config.tissues} has {_MIN_PATIENTS} patients "
                         f"with samples at W={config.window_bp:,}")
    if skipped:
        context.log.warning(f"fewer than {_MIN_PATIENTS} patients, skipped: {skipped}")
    table = pd.concat(frames, ignore_index=True).assign(
        protocol=config.protocol, window_bp=config.window_bp)
    rows = _write(warehouse, "tissue_experiment", cohort, table, bool(config.genes),
                  context.run_id)
    return MaterializeResult(metadata={
        "rows": rows, "genes": int(table["gene"].nunique()), "skipped": ", ".join(skipped),
        "r2_by_tissue": MetadataValue.md(
            _summary(warehouse, "r2_by_tissue", "cohort", cohort, "ALL")),
    })


@asset(partitions_def=cohort_partitions, group_name=GROUP, kinds={"scikitlearn", "duckdb"},
       deps=_DEPS, pool=POOL)
def window_experiment(context: AssetExecutionContext, config: WindowExperimentConfig,
                      warehouse: Warehouse, device: TorchDevice) -> MaterializeResult:
    """The paper's window experiment: every model on the genes present in every window size
    (1 kb to 1 Mb by default), one row per window, model and gene."""
    cohort = context.partition_key
    by_window = {w: genes_by_chromosome(warehouse, cohort, w, config.genes)
                 for w in config.windows}
    frames = []
    for chromosome in by_window[config.windows[0]]:
        common = set.intersection(*(set(g.get(chromosome, [])) for g in by_window.values()))
        if not common:
            continue
        for window in config.windows:
            genes = [i.data for i in load_gene_inputs(
                warehouse, cohort, chromosome, window, sorted(common))]
            frames.append(_cross_validate(genes, config, device).assign(
                window_bp=window))
        context.log.info(f"{cohort} {chromosome}: {len(common)} genes × {len(config.windows)} "
                         "windows done")
    if not frames:
        raise ValueError(f"{cohort}: no gene has CpGs in every window of {config.windows}")
    table = pd.concat(frames, ignore_index=True).assign(protocol=config.protocol, tissue="all")
    rows = _write(warehouse, "window_experiment", cohort, table, bool(config.genes),
                  context.run_id)
    return MaterializeResult(metadata={
        "rows": rows, "genes": int(table["gene"].nunique()),
        "r2_by_window": MetadataValue.md(
            _summary(warehouse, "r2_by_window", "cohort", cohort, "model, window_bp")),
    })


@asset(partitions_def=cohort_partitions, group_name=GROUP, kinds={"scikitlearn", "duckdb"},
       deps=[*_DEPS, "model_registry"])
def generalisation(context: AssetExecutionContext, config: GeneralisationConfig,
                   warehouse: Warehouse, checkpoints: CheckpointStore) -> MaterializeResult:
    """The paper's generalisation experiment: models trained on this cohort (the fold models of
    its honest cross-validation) predict the same genes in other cohorts; R² and r² of the mean
    of the fold models' predictions, per gene, model and target cohort. CpGs a target did not
    measure take the training mean; ``coverage`` says how many it had."""
    source = context.partition_key
    targets = config.targets or _other_cohorts(warehouse, source)
    if not targets:
        raise ValueError(f"no target cohort: the warehouse holds only {source}; run the data "
                         "layer of another cohort or name targets in config")
    saved = _saved_cnns(warehouse, source, config.window_bp) if "cnn" in config.models else {}
    rows = []
    for chromosome, names in _genes(warehouse, source, config.window_bp, config.genes):
        inputs = load_gene_inputs(warehouse, source, chromosome, config.window_bp, names)
        fitted = {model: {i.data.gene: _predictors(model, i.data, saved, checkpoints, config)
                          for i in inputs} for model in config.models}
        for target in targets:
            rows += _score_target(warehouse, target, chromosome, inputs, fitted)
        context.log.info(f"{source} {chromosome}: {len(inputs)} genes → {', '.join(targets)}")
    table = pd.DataFrame(rows).dropna(subset=["r2"])
    if table.empty:
        raise ValueError(f"no gene of {source} is expressed in {targets}")
    table = table.assign(protocol=HONEST, window_bp=config.window_bp, tissue="all")
    key = ["target_cohort", "protocol", "window_bp", "model"] + (["gene"] if config.genes else [])
    table = validate("generalisation", table.assign(run_id=context.run_id))
    written = warehouse.replace_rows("generalisation", {"cohort": source}, table, key=key)
    return MaterializeResult(metadata={
        "rows": written, "targets": ", ".join(targets), "genes": int(table["gene"].nunique()),
        "summary": MetadataValue.md(_summary(warehouse, "generalisation_summary",
                                             "source_cohort", source, "ALL")),
    })


def _other_cohorts(warehouse: Warehouse, source: str) -> list[str]:
    cohorts = warehouse.query("SELECT DISTINCT cohort FROM gene_promoters ORDER BY 1")["cohort"]
    return [c for c in cohorts if c != source]


def _saved_cnns(warehouse: Warehouse, source: str, window_bp: int) -> dict[str, tuple[str, str]]:
    """gene → (checkpoint key, sha256) of the source's honest CNNs (all samples, best weights)."""
    try:
        registry = warehouse.query(
            "SELECT gene, path, sha256 FROM model_registry WHERE cohort = ? AND window_bp = ? "
            "AND protocol = ? AND tissue = 'all' AND model = 'cnn'",
            [source, window_bp, HONEST])
    except Exception as exc:  # the view does not exist before the first training run
        registry, missing = pd.DataFrame(), exc
    else:
        missing = None
    if registry.empty:
        raise LookupError(f"no honest CNN checkpoints of {source} at W={window_bp:,}: "
                          f"materialise model_evaluation for {source} first, or leave 'cnn' out of "
                          f"models ({missing or 'no rows'})")
    return {g: (p, s) for g, p, s in registry.itertuples(index=False)}


def _predictors(model: str, gene: GeneData, saved: dict[str, tuple[str, str]],
                store: CheckpointStore, config: GeneralisationConfig
                ) -> tuple[list[FoldPredictor], list[str]] | None:
    if model != "cnn":
        params = parallel_params(model, config.n_jobs or training_threads())
        return fit_fold_predictors(gene, model, params, seed=config.seed), None
    if gene.gene not in saved:
        return None
    checkpoint = store.load(*saved[gene.gene])
    return checkpoint_predictors(checkpoint), checkpoint.probe_ids


def _score_target(warehouse: Warehouse, target: str, chromosome: str, inputs: list,
                  fitted: dict) -> list[dict]:
    try:
        m_values = warehouse.read("m_values", {"cohort": target, "chromosome": chromosome})
    except LookupError:
        return []
    names = {i.data.gene for i in inputs}
    expression = warehouse.read("expression", {"cohort": target},
                                filters=[("gene", "in", names)])
    levels = expression.pivot(index="gene", columns="sample", values="log2_expression")
    matrix = m_value_matrix(m_values)
    samples = sorted(set(matrix.columns) & set(levels.columns))
    rows = []
    for item in inputs:
        gene = item.data.gene
        if gene not in levels.index:
            continue
        y = levels.loc[gene, samples].to_numpy(np.float64)
        for model, by_gene in fitted.items():
            if by_gene[gene] is None:
                continue
            predictors, probe_ids = by_gene[gene]
            probe_ids = item.probe_ids if probe_ids is None else probe_ids
            X, coverage = aligned_columns(matrix, probe_ids, samples)
            rows.append({"target_cohort": target, "model": model, "gene": gene,
                         "n_cpgs": len(probe_ids), "coverage": coverage, "n_samples": len(y),
                         **generalisation_scores(predictors, X, y)})
    return rows
