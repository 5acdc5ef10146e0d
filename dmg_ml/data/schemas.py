"""pandera schemas of the data-layer tables (results: ``dmg_ml.evaluation.schemas``); a table is
validated before a single row is written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaError, SchemaErrors

from dmg_ml.data.genome import CHROMOSOMES
from dmg_ml.data.preprocess import M_CLAMP


class TableValidationError(ValueError):
    """A table broke its schema; the message names the table, the columns and offending rows."""


def _finite(series: pd.Series) -> pd.Series:
    return pd.Series(np.isfinite(series.to_numpy(dtype=np.float64)), index=series.index)


FINITE = pa.Check(_finite, name="finite", element_wise=False)
TEXT = {"dtype": str, "coerce": True, "nullable": False}

SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "samples": pa.DataFrameSchema(
        {
            "sample": pa.Column(unique=True, **TEXT),
            "patient": pa.Column(**TEXT),
            "sample_type_code": pa.Column(str, pa.Check.str_matches(r"^\d{2}$")),
            "tissue": pa.Column(checks=pa.Check.isin(["tumour", "normal", "control"]), **TEXT),
            "in_methylation": pa.Column(bool),
            "in_expression": pa.Column(bool),
            "kept": pa.Column(bool),
        },
        strict=True,
    ),
    "probes": pa.DataFrameSchema(
        {
            "probe_id": pa.Column(unique=True, **TEXT),
            "chromosome": pa.Column(checks=pa.Check.isin(CHROMOSOMES), **TEXT),
            "position": pa.Column("int64", pa.Check.gt(0)),
            "missing_fraction": pa.Column("float32", pa.Check.in_range(0.0, 1.0)),
            "kept": pa.Column(bool),
        },
        strict=True,
    ),
    "m_values": pa.DataFrameSchema(
        {
            "probe_id": pa.Column(nullable=False),
            "sample": pa.Column(nullable=False),
            "m_value": pa.Column("float32", [pa.Check.in_range(-M_CLAMP, M_CLAMP), FINITE]),
            "imputed": pa.Column(bool),
        },
        strict=True,
    ),
    "expression": pa.DataFrameSchema(
        {
            "gene": pa.Column(**TEXT),
            "sample": pa.Column(**TEXT),
            "log2_expression": pa.Column("float32", [pa.Check.ge(0.0), FINITE]),
        },
        unique=["gene", "sample"],
        strict=True,
    ),
    "gene_promoters": pa.DataFrameSchema(
        {
            "gene": pa.Column(unique=True, **TEXT),
            "chromosome": pa.Column(checks=pa.Check.isin(CHROMOSOMES), **TEXT),
            "start": pa.Column("int64", pa.Check.ge(0)),
            "end": pa.Column("int64", pa.Check.gt(0)),
            "strand": pa.Column(checks=pa.Check.isin(["+", "-"]), **TEXT),
            "tss": pa.Column("int64", pa.Check.gt(0)),
            "n_promoter_probes": pa.Column("int32", pa.Check.ge(1)),
        },
        strict=True,
    ),
    "gene_windows": pa.DataFrameSchema(
        {
            "gene": pa.Column(**TEXT),
            "window_bp": pa.Column("int64", pa.Check.gt(0)),
            "probe_id": pa.Column(**TEXT),
            "chromosome": pa.Column(checks=pa.Check.isin(CHROMOSOMES), **TEXT),
            "position": pa.Column("int64", pa.Check.gt(0)),
            "distance_to_tss": pa.Column("int64"),
        },
        unique=["gene", "window_bp", "probe_id"],
        strict=True,
    ),
}


def validate(table: str, frame: pd.DataFrame,
             schemas: dict[str, pa.DataFrameSchema] | None = None) -> pd.DataFrame:
    """Validate ``frame`` against the schema of ``table`` in ``schemas`` (default: the data
    layer's); raise ``TableValidationError`` if not."""
    try:
        return (SCHEMAS if schemas is None else schemas)[table].validate(frame, lazy=True)
    except SchemaErrors as exc:
        raise TableValidationError(_describe(table, exc.failure_cases)) from None
    except SchemaError as exc:
        raise TableValidationError(f"table {table!r}: {exc}") from None


def _describe(table: str, failures: pd.DataFrame) -> str:
    lines = [f"table {table!r} failed validation ({len(failures)} failing values); nothing written"]
    for (column, check), cases in failures.groupby(["column", "check"], dropna=False, sort=False):
        rows = cases["index"].head(5).tolist()
        values = cases["failure_case"].head(5).tolist()
        lines.append(f"  column {column!r} failed {check}: rows {rows}, values {values}")
    return "\n".join(lines)
