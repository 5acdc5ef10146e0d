"""Prediction for new samples (docs/design.md §10): a lab's methylation file in, predicted
expression out, as one multi-asset on the dynamic ``prediction_batch`` partition.

``prediction`` reads the file first (``dmg_ml.prediction.read_methylation``: a file it refuses
fails the step with the reason, and nothing is written), then takes the training cohort's honest
CNNs from the ``model_registry`` registry (all samples, best weights, the configured window),
leaves out the genes whose honest R² is below ``min_r2``, predicts the others with
``predict_genes`` (missing probes take the training means; genes and samples below
``min_coverage`` are skipped) and writes two tables in one warehouse transaction, one partition
(``batch=<name>``) each:

* ``predicted_expression``: one row per sample and gene;
* ``prediction_skipped``: the genes not predicted (``sample`` null) and the samples left out of a
  gene, with the reason.

A batch exists once it holds rows (``batch_rows``; a registered partition without rows does not
count). The step refuses an existing batch unless ``replace`` is set, before it reads anything;
with ``replace`` both of its partitions are replaced whole. A step that would predict nothing
fails with the reason and writes nothing: no gene clears ``min_r2``, or the file shares too few
probes with every model (none at all: the file's ids are not the models' probes). Its refusals
are ``PredictionInputError`` (the file) and ``PredictionRefused`` (the batch, the models, the
genes), each message saying what to do.

``python -m dmg_assets.predict FILE`` registers a batch and runs ``prediction_job``
(``dmg_assets.predict``). Which models a batch uses and what it leaves out is
``dmg_ml.prediction.selection``; the tables' schemas are ``dmg_ml.prediction.schemas``. The
module stays whole (just over 400 lines): the config, the batch checks and the step are one
asset's.
"""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import duckdb
import pandas as pd
import pyarrow as pa
from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetSelection,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    define_asset_job,
    multi_asset,
)
from pydantic import Field, field_validator

from dmg_assets.metadata import ProgressClock, markdown_table, progress_line
from dmg_assets.partitions import prediction_batches
from dmg_ml import defaults
from dmg_ml.data.splits import HONEST
from dmg_ml.data.windows import DEFAULT_WINDOW_BP
from dmg_ml.models.checkpoint import GeneCheckpoint
from dmg_ml.prediction import (
    DEFAULT_MIN_COVERAGE,
    DEFAULT_MIN_R2,
    PREDICTION_COLUMNS,
    GenePrediction,
    MethylationInput,
    SkippedGene,
    predict_genes,
    read_methylation,
)
from dmg_ml.prediction.schemas import arrow_schema, validate
from dmg_ml.prediction.selection import (
    PredictionRefused,
    all_skipped,
    chosen,
    in_genome_order,
    nothing_predicted,
    r2_gate,
)
from dmg_resources.checkpoints import CheckpointStore
from dmg_resources.source import validate_cohort
from dmg_resources.warehouse import Warehouse

GROUP = "prediction"
TABLES = ("predicted_expression", "prediction_skipped")
MODEL = "cnn"
PROTOCOL = HONEST
#: The cohort whose models predict by default: the study trains on BRCA.
DEFAULT_TRAINING_COHORT = defaults.TRAINING_COHORT
#: What a methylation file holds; ``auto`` detects β or M values. The values of
#: ``dmg_ml.prediction.inputs.SCALES``, as a ``Literal`` so the config checks them.
ScaleOption = Literal["auto", "beta", "m_value"]
#: A batch name: letters, digits, dashes and underscores, starting with a letter or digit.
BATCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
_PREVIEW_ROWS = 10


def validate_batch(name: str) -> str:
    """``name`` unchanged if it is a batch name (letters, digits, ``-`` and ``_``, at most 100,
    starting with a letter or digit); else ``ValueError``."""
    if not isinstance(name, str) or not BATCH_NAME.fullmatch(name):
        raise ValueError(
            f"invalid batch name {name!r}: expected letters, digits, dashes and underscores "
            "(at most 100, starting with a letter or digit), e.g. lab_2024-06"
        )
    return name


def _batch(context: AssetExecutionContext) -> str:
    """The partition's batch name, checked against the rule for batch names. A partition added
    from the UI with a name that breaks it is removed again; the step fails before reading."""
    try:
        return validate_batch(context.partition_key)
    except ValueError:
        context.instance.delete_dynamic_partition(prediction_batches.name, context.partition_key)
        raise


def batch_name_for(path: str | Path) -> str:
    """The default batch name of a file: its name without extensions (``.gz`` included), every
    run of other characters made one ``_``; ``batch`` when nothing is left."""
    name = Path(path).name
    name = re.sub(r"\.gz$", "", name, flags=re.IGNORECASE)
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    clean = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")[:100].rstrip("_-")
    return clean or "batch"


def batch_rows(warehouse: Warehouse, batch: str) -> dict[str, int]:
    """The rows ``batch`` holds in each table of ``TABLES`` that has some: a batch with rows
    exists (empty when it has none)."""
    held, rows = set(warehouse.tables()), {}
    for table in TABLES:
        if table in held:
            count = warehouse.query(f"SELECT count(*) AS n FROM {table} WHERE batch = ?",
                                    [validate_batch(batch)])["n"].iloc[0]
            if count:
                rows[table] = int(count)
    return rows


def existing_batch(batch: str, rows: dict[str, int], replace: str,
                   new_batch: str) -> PredictionRefused:
    """The refusal of a batch that holds ``rows``, saying how to replace it (``replace``) or to
    predict into another batch (``new_batch``) from where the person stands."""
    held = ", ".join(f"{n:,} rows in {table}" for table, n in rows.items())
    return PredictionRefused(
        f"batch {batch} already holds predictions ({held}): {replace} to replace them, or "
        f"name another batch ({new_batch}) to keep both"
    )


def batch_sql(batch: str) -> str:
    """The query that reads a batch's predictions back."""
    return ("SELECT sample, gene, prediction, lower, upper FROM predicted_expression "
            f"WHERE batch = '{validate_batch(batch)}'")


class PredictionConfig(Config):
    input_path: str = Field(
        description="Methylation file of the new samples: a Xena β matrix or a probes × samples "
        "TSV/CSV (gzipped or not), 450K or EPIC probe ids, β or M values.",
    )
    training_cohort: str = Field(
        default=DEFAULT_TRAINING_COHORT,
        description="Cohort whose trained CNNs predict (its model_evaluation must have run).",
    )
    window_bp: int = Field(
        default=DEFAULT_WINDOW_BP, description="Window half-width W (bp) of the models used."
    )
    min_coverage: float = Field(
        default=DEFAULT_MIN_COVERAGE,
        description="Share of a gene's probes a sample must have for the gene to be predicted; "
        "the missing ones take the training cohort's means.",
    )
    min_r2: float = Field(
        default=DEFAULT_MIN_R2,
        description="Genes whose honest R² is below this are not predicted (they are listed in "
        "prediction_skipped).",
    )
    scale: ScaleOption = Field(
        default="auto", description="What the file holds: 'auto' detects β or M values."
    )
    genes: list[str] = Field(
        default_factory=list, description="Only these genes (default: every gene with a model)."
    )
    replace: bool = Field(
        default=False,
        description="Replace the batch's rows if it holds some; off, a batch with rows is refused "
        "(two files of one name must not overwrite each other).",
    )

    @field_validator("training_cohort")
    @classmethod
    def _cohort(cls, cohort: str) -> str:
        return validate_cohort(cohort)

    @field_validator("window_bp")
    @classmethod
    def _window(cls, window_bp: int) -> int:
        if window_bp <= 0:
            raise ValueError(f"window_bp must be positive, got {window_bp}")
        return window_bp

    @field_validator("min_coverage")
    @classmethod
    def _coverage(cls, share: float) -> float:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"min_coverage must lie in [0, 1], got {share}")
        return share

    @field_validator("min_r2")
    @classmethod
    def _r2(cls, r2: float) -> float:
        if not r2 <= 1.0:  # NaN too
            raise ValueError(f"min_r2 must be at most 1 (the best R²), got {r2}")
        return r2


class _Progress:
    """Logs genes done, predicted and skipped, and the ETA every ~10% of the genes or 30 s."""

    def __init__(self, context: AssetExecutionContext, total: int) -> None:
        self.context, self.clock, self.predicted = context, ProgressClock(total), 0

    def __call__(self, result: GenePrediction | SkippedGene) -> None:
        self.predicted += isinstance(result, GenePrediction)
        if (timing := self.clock.tick()) is None:
            return
        skipped = timing[0] - self.predicted
        self.context.log.info(progress_line(
            self.clock.total, timing, f" ({self.predicted} predicted, {skipped} skipped for "
            "coverage)"
        ))


def _registry(warehouse: Warehouse, cohort: str, window_bp: int) -> pd.DataFrame:
    """gene, chromosome, path, sha256 and honest R² of the cohort's CNNs (all samples, best
    weights) at ``window_bp``, in chromosome order; ``PredictionRefused`` saying what to do when
    none."""
    try:
        registry = warehouse.query(
            "SELECT gene, chromosome, path, sha256, r2 FROM model_registry WHERE cohort = ? "
            "AND window_bp = ? AND protocol = ? AND tissue = 'all' AND model = 'cnn'",
            [cohort, window_bp, PROTOCOL])
        trained = warehouse.query(
            "SELECT DISTINCT cohort, window_bp FROM model_registry WHERE protocol = ? "
            "AND tissue = 'all' AND model = 'cnn' ORDER BY ALL", [PROTOCOL])
    except duckdb.CatalogException:  # no training run yet: the view does not exist
        registry = trained = pd.DataFrame()
    if registry.empty:
        there = ", ".join(f"{c} W={int(w):,}" for c, w in trained.itertuples(index=False))
        raise PredictionRefused(
            f"no trained CNN of {cohort} at W={window_bp:,} (honest protocol, all samples, best "
            f"weights) in {Path(warehouse.database).resolve()}: train that cohort first "
            f"(python -m dmg_assets.run --cohorts {cohort} --train {cohort} --window-bp "
            f"{window_bp}), or pick a training cohort and window that has models"
            + (f" ({there})" if there else " (none has any yet)")
        )
    return in_genome_order(registry)


def _loaded(store: CheckpointStore, registry: pd.DataFrame,
            probes: set[str]) -> Iterator[tuple[str, GeneCheckpoint]]:
    """Each gene's checkpoint, read (and hash-checked) when its turn comes; the models' probes
    are gathered in ``probes``."""
    for gene, key, digest in registry[["gene", "path", "sha256"]].itertuples(index=False):
        checkpoint = store.load(key, digest)
        probes.update(checkpoint.probe_ids)
        yield gene, checkpoint


def _tables(predictions: pd.DataFrame, skipped: pd.DataFrame, data: MethylationInput,
            config: PredictionConfig, run_id: str) -> dict[str, pd.DataFrame]:
    predicted = predictions.assign(
        model=MODEL, training_cohort=config.training_cohort, protocol=PROTOCOL,
        window_bp=config.window_bp, scale=data.scale, run_id=run_id,
    )[arrow_schema("predicted_expression").names]
    return {
        "predicted_expression": validate("predicted_expression", predicted),
        "prediction_skipped": validate("prediction_skipped", skipped.assign(run_id=run_id)),
    }


def _arrow(table: str, frame: pd.DataFrame) -> pa.Table:
    """``frame`` with its table's Parquet types; a missing sample or coverage becomes null."""
    return pa.Table.from_pandas(frame, schema=arrow_schema(table), preserve_index=False)


def _writable(warehouse: Warehouse, skipped: pd.DataFrame) -> Warehouse:
    """The warehouse to commit to. An empty skip list is a result (every gene predicted): it
    replaces the batch's old list, which the warehouse refuses by default (no empty
    replacement); ``predicted_expression`` is never empty here."""
    if not skipped.empty:
        return warehouse
    return Warehouse(root=warehouse.root, database=warehouse.database,
                     allow_empty_replacement=True)


def _skip_counts(skipped: pd.DataFrame, n_low_r2: int, config: PredictionConfig) -> dict:
    genes = skipped["sample"].isna()
    return {
        f"honest R² below {config.min_r2:g}": n_low_r2,
        f"probe coverage below {config.min_coverage:.0%}": int(genes.sum()) - n_low_r2,
        "samples left out of a gene for their own coverage": int((~genes).sum()),
    }


@multi_asset(
    name="prediction",
    specs=[
        AssetSpec(
            "predicted_expression", group_name=GROUP, kinds={"pytorch", "duckdb"},
            deps=[AssetDep("model_registry", partition_mapping=AllPartitionMapping())],
            description="Expression predicted for a batch of new samples (a lab's methylation "
            "file) by a training cohort's honest CNNs: one row per sample and gene, the mean of "
            "the gene's fold models with their range (lower, upper) and the sample's probe "
            "coverage. Query it by batch (the partition).",
        ),
        AssetSpec(
            "prediction_skipped", group_name=GROUP, kinds={"duckdb"},
            deps=[AssetDep("model_registry", partition_mapping=AllPartitionMapping())],
            description="What a prediction batch left out, with the reason: genes whose honest "
            "R² or probe coverage is below the threshold, and samples left out of one gene for "
            "their own coverage.",
        ),
    ],
    partitions_def=prediction_batches,
)
def prediction(context: AssetExecutionContext, config: PredictionConfig, warehouse: Warehouse,
               checkpoints: CheckpointStore):
    """Predict expression for the batch's methylation file with the training cohort's CNNs; both
    tables are committed together, or nothing is written."""
    batch = _batch(context)
    if not config.replace and (held := batch_rows(warehouse, batch)):
        raise existing_batch(batch, held, "set replace: true in the run config",
                             "a new partition of prediction_batch")
    data = read_methylation(config.input_path, config.scale)  # bad input fails here, first
    context.log.info(data.summary())
    cohort = config.training_cohort
    registry = chosen(_registry(warehouse, cohort, config.window_bp), config.genes, cohort,
                      config.window_bp)
    models, gated = r2_gate(registry, config.min_r2, cohort, config.window_bp)
    context.log.info(f"{data.n_samples} samples × {len(models)} genes of {cohort} "
                     f"(W={config.window_bp:,}; {len(gated)} genes with an honest R² "
                     f"below {config.min_r2:g} left out)")
    model_probes: set[str] = set()
    predictions, skipped = predict_genes(
        _loaded(checkpoints, models, model_probes), data, config.min_coverage,
        on_gene_done=_Progress(context, len(models)),
    )
    if predictions.empty:
        raise nothing_predicted(data, skipped, model_probes, cohort, config.window_bp,
                                config.min_coverage)
    skipped = all_skipped(gated, skipped)
    tables = _tables(predictions, skipped, data, config, context.run_id)
    rows = {}
    with _writable(warehouse, skipped).transaction() as transaction:
        for name, frame in tables.items():
            if not config.replace:  # another step may have taken the name since the check
                transaction.require_empty(name, {"batch": batch}, PredictionRefused(
                    f"batch {batch} was written by another run while this one predicted; "
                    "nothing was written: pass --replace (replace: true) to replace it, or name "
                    "another batch (--batch NAME)"))
            rows[name] = transaction.write(name, {"batch": batch}, _arrow(name, frame))
    yield from _results(batch, tables, rows, data, config, len(gated), warehouse)


def _results(batch: str, tables: dict[str, pd.DataFrame], rows: dict[str, int],
             data: MethylationInput, config: PredictionConfig, n_low_r2: int,
             warehouse: Warehouse) -> Iterator[MaterializeResult]:
    predicted, skipped = tables["predicted_expression"], tables["prediction_skipped"]
    counts = _skip_counts(skipped, n_low_r2, config)
    common = {
        "genes_skipped": int(skipped["sample"].isna().sum()),
        "skipped_by_reason": MetadataValue.json(counts),
        "database": MetadataValue.path(str(Path(warehouse.database).resolve())),
    }
    preview = predicted[[c for c in PREDICTION_COLUMNS if c != "n_missing_probes"]]
    yield MaterializeResult(asset_key="predicted_expression", metadata={
        "rows": rows["predicted_expression"],
        "samples": int(predicted["sample"].nunique()),
        "genes_predicted": int(predicted["gene"].nunique()),
        **common,
        "scale": f"{data.scale} ({'detected' if data.scale_detected else 'as given'})",
        "input": MetadataValue.text(data.summary()),
        "training_cohort": config.training_cohort,
        "window_bp": config.window_bp,
        "preview": MetadataValue.md(markdown_table(preview.head(_PREVIEW_ROWS))),
        "sql": MetadataValue.md(f"```sql\n{batch_sql(batch)}\n```"),
    })
    yield MaterializeResult(asset_key="prediction_skipped", metadata={
        "rows": rows["prediction_skipped"],
        **common,
        "preview": MetadataValue.md(markdown_table(
            skipped[["gene", "sample", "reason"]].head(_PREVIEW_ROWS).fillna("(gene)"))),
        "sql": MetadataValue.md(
            "```sql\nSELECT gene, sample, reason, coverage FROM prediction_skipped "
            f"WHERE batch = '{batch}'\n```"),
    })


prediction_job = define_asset_job(
    "prediction_job",
    selection=AssetSelection.assets(prediction),
    description="Predict expression for one batch of new samples (a methylation file) with a "
    "training cohort's CNNs.",
)
