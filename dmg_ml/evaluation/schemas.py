"""pandera schemas of the result tables the evaluation and experiment assets write (a prediction
batch's: ``dmg_ml.prediction.schemas``); each frame is validated before a single row is written."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

from dmg_ml.data.barcodes import TISSUES
from dmg_ml.data.schemas import FINITE, TEXT
from dmg_ml.data.schemas import validate as _validate
from dmg_ml.data.splits import PROTOCOLS
from dmg_ml.training.reference import PRECISIONS

#: R² is at most 1 and may be very negative; NaN only where it is undefined (a fold of one sample).
R2 = pa.Column(float, pa.Check.le(1.0 + 1e-9), nullable=True)
#: r² (squared Pearson) lies in [0, 1]; 0 where a side is constant (never NaN).
PEARSON_R2 = pa.Column(float, pa.Check.in_range(0.0, 1.0 + 1e-9))
COUNT = pa.Column("int64", pa.Check.ge(1), coerce=True)
MODEL = pa.Column(checks=pa.Check.str_matches(r"^[a-z_]+$"), **TEXT)
TISSUE = pa.Column(checks=pa.Check.isin(list(TISSUES)), **TEXT)
WEIGHTS = pa.Column(checks=pa.Check.isin(["best", "last"]), **TEXT)
PROTOCOL = pa.Column(checks=pa.Check.isin(list(PROTOCOLS)), **TEXT)
PREDICTION = pa.Column(float, FINITE)
#: A share of a gene's probes: [0, 1].
COVERAGE = pa.Column(float, pa.Check.in_range(0.0, 1.0))
#: Slack of checks between computed floats (relative to the value).
ROUNDING = 1e-6


def result(columns: dict, unique: list[str],
           checks: list[pa.Check] | None = None) -> pa.DataFrameSchema:
    """A result table's schema: exactly ``columns``, one row per ``unique`` key."""
    return pa.DataFrameSchema(columns, unique=unique, strict=True, checks=checks)


_GENE_SCORES = {
    "gene": pa.Column(**TEXT), "n_cpgs": COUNT, "n_samples": COUNT, "r2": R2,
    "pearson_r2": PEARSON_R2, "mean_fold_r2": R2,
    "mean_fold_pearson_r2": pa.Column(float, pa.Check.in_range(0.0, 1.0 + 1e-9), nullable=True),
}
_FOLD_SCORES = {
    "gene": pa.Column(**TEXT), "fold": pa.Column("int64", pa.Check.ge(0), coerce=True),
    "n_train": COUNT, "n_test": COUNT, "r2": R2, "pearson_r2": PEARSON_R2,
}
_PREDICTIONS = {
    "gene": pa.Column(**TEXT), "sample": pa.Column(**TEXT),
    "fold": pa.Column("int64", pa.Check.ge(0), coerce=True), "y_true": PREDICTION,
    "y_pred": PREDICTION, "run_id": pa.Column(**TEXT),
}
_EXPERIMENT = {
    **_GENE_SCORES, "model": MODEL, "seconds": pa.Column(float), "protocol": PROTOCOL,
    "window_bp": pa.Column("int64", pa.Check.gt(0), coerce=True), "tissue": TISSUE,
    "run_id": pa.Column(**TEXT),
}
_EXPERIMENT_KEY = ["protocol", "window_bp", "tissue", "model", "gene"]
_CHECKPOINT = {
    "gene": pa.Column(**TEXT), "path": pa.Column(**TEXT),
    "sha256": pa.Column(checks=pa.Check.str_matches(r"^[0-9a-f]{64}$"), **TEXT),
    "n_cpgs": COUNT, "n_folds": pa.Column("int64", pa.Check.ge(0), coerce=True),
    "final_model": pa.Column(bool, coerce=True),
    "config": pa.Column(**TEXT), "r2": R2,
    "pearson_r2": PEARSON_R2, "weights_dtype": pa.Column(
        checks=pa.Check.isin(["fp16", "fp32"]), **TEXT),
    "half_precision_delta_r2": pa.Column(float, pa.Check.ge(0.0), nullable=True, coerce=True),
    "bytes": COUNT, "run_id": pa.Column(**TEXT), "tissue": TISSUE, "model": MODEL,
}

RESULT_SCHEMAS: dict[str, pa.DataFrameSchema] = {
    # Every model's cross-validation, the CNN's included: one family of tables, a model column.
    "gene_metrics": result({
        **_GENE_SCORES, "model": MODEL, "seconds": pa.Column(float), "run_id": pa.Column(**TEXT),
        "trained_at": pa.Column(**TEXT), "tissue": TISSUE,
    }, ["model", "tissue", "gene"]),
    "fold_metrics": result({
        **_FOLD_SCORES, "model": MODEL, "seconds": pa.Column(float), "run_id": pa.Column(**TEXT),
        "tissue": TISSUE,
    }, ["model", "tissue", "gene", "fold"]),
    "predictions": result({**_PREDICTIONS, "model": MODEL, "tissue": TISSUE},
                           ["model", "tissue", "gene", "sample"]),
    # What the CNN's training did per gene and fold (the facts no other model has).
    "cnn_training": result({
        "model": MODEL, "tissue": TISSUE, "gene": pa.Column(**TEXT),
        "fold": pa.Column("int64", pa.Check.ge(0), coerce=True), "n_valid": COUNT,
        "epochs_run": COUNT, "best_epoch": pa.Column("int64", pa.Check.ge(0), coerce=True),
        "weights": WEIGHTS, "precision": pa.Column(checks=pa.Check.isin(list(PRECISIONS)),
                                                   **TEXT),
        "trainer": pa.Column(**TEXT), "run_id": pa.Column(**TEXT),
    }, ["model", "tissue", "gene", "fold"]),
    "model_registry": result(_CHECKPOINT, ["model", "tissue", "gene"]),
    # Registry rows of models a retrain replaced with a lower out-of-fold R²: their files are
    # kept, so the better model stays reachable (CheckpointStore.load(path, sha256)).
    "model_superseded": result({
        **_CHECKPOINT, "superseded_by_run_id": pa.Column(**TEXT), "superseded_by_r2": R2,
        "superseded_at": pa.Column(**TEXT),
    }, ["model", "tissue", "gene", "path"]),
    "tissue_experiment": result(_EXPERIMENT, _EXPERIMENT_KEY),
    "window_experiment": result(_EXPERIMENT, _EXPERIMENT_KEY),
    "generalisation": result({
        "target_cohort": pa.Column(**TEXT), "model": MODEL, "gene": pa.Column(**TEXT),
        "n_cpgs": COUNT, "coverage": pa.Column(float, pa.Check.in_range(0.0, 1.0)),
        "n_samples": COUNT, "r2": R2, "pearson_r2": PEARSON_R2, "protocol": PROTOCOL,
        "window_bp": pa.Column("int64", pa.Check.gt(0), coerce=True), "tissue": TISSUE,
        "run_id": pa.Column(**TEXT),
    }, ["target_cohort", "protocol", "window_bp", "model", "gene"]),
}


def validate(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Validate a result ``frame`` of ``table``; raise ``TableValidationError`` naming the
    failing columns and rows."""
    return _validate(table, frame, RESULT_SCHEMAS)
