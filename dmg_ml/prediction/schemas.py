"""Schemas of the two tables a prediction batch writes: the pandera ones each frame is validated
against, and the Parquet (pyarrow) types derived from them, so that a batch with no rows of a
kind still writes its columns with their types."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow

from dmg_ml.data.schemas import TEXT
from dmg_ml.data.schemas import validate as _validate
from dmg_ml.evaluation.schemas import COVERAGE, MODEL, PREDICTION, PROTOCOL, ROUNDING, result
from dmg_ml.prediction.inputs import Scale

#: What a lab's methylation file held.
SCALE = pa.Column(checks=pa.Check.isin(list(get_args(Scale))), **TEXT)


def _within_interval(frame: pd.DataFrame) -> pd.Series:
    """lower ≤ prediction ≤ upper (the interval is the fold models' range around their mean)."""
    slack = ROUNDING * (1.0 + frame["prediction"].abs())
    return ((frame["lower"] <= frame["prediction"] + slack)
            & (frame["prediction"] <= frame["upper"] + slack))


PREDICTION_SCHEMAS: dict[str, pa.DataFrameSchema] = {
    # One row per sample and gene of a batch.
    "predicted_expression": result({
        "sample": pa.Column(**TEXT), "gene": pa.Column(**TEXT), "model": MODEL,
        "training_cohort": pa.Column(**TEXT), "protocol": PROTOCOL,
        "window_bp": pa.Column("int64", pa.Check.gt(0), coerce=True), "prediction": PREDICTION,
        "lower": PREDICTION, "upper": PREDICTION, "coverage": COVERAGE,
        "n_missing_probes": pa.Column("int64", pa.Check.ge(0), coerce=True), "scale": SCALE,
        "run_id": pa.Column(**TEXT),
    }, ["sample", "gene"], [pa.Check(_within_interval, name="lower <= prediction <= upper")]),
    # Genes (sample null) and (gene, sample) pairs of a batch not predicted, with the reason;
    # coverage is null where the gene was left out before its model was read (its honest R²).
    "prediction_skipped": result({
        "gene": pa.Column(**TEXT), "sample": pa.Column(**{**TEXT, "nullable": True}),
        "reason": pa.Column(**TEXT), "coverage": pa.Column(float, pa.Check.in_range(0.0, 1.0),
                                                           nullable=True),
        "run_id": pa.Column(**TEXT),
    }, ["gene", "sample"]),
}


def arrow_schema(table: str) -> pyarrow.Schema:
    """The Parquet types of ``table``'s columns, in its pandera schema's order."""
    fields = []
    for name, column in PREDICTION_SCHEMAS[table].columns.items():
        dtype = str(column.dtype)
        kind = (pyarrow.string() if dtype.startswith("str")
                else pyarrow.from_numpy_dtype(np.dtype(dtype)))
        fields.append((name, kind))
    return pyarrow.schema(fields)


def validate(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Validate a prediction ``frame`` of ``table``; raise ``TableValidationError`` naming the
    failing columns and rows."""
    return _validate(table, frame, PREDICTION_SCHEMAS)
