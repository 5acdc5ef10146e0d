"""TCGA sample barcodes: ``TCGA-A1-A0SB-01A...`` → patient, sample type, tumour or normal."""

from __future__ import annotations

import re
from typing import Literal

import pandas as pd

#: Which samples a model is trained and scored on: every kept sample, tumours or normals only.
Tissue = Literal["all", "tumour", "normal"]
TISSUES: tuple[Tissue, ...] = ("all", "tumour", "normal")

_BARCODE = re.compile(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}-\d{2}")


def parse_barcodes(barcodes: list[str] | pd.Index) -> pd.DataFrame:
    """One row per barcode: ``sample, patient, sample_type_code, tissue``.

    ``sample_type_code`` is the barcode's two digits as written (``"01"``); ``tissue`` is
    ``tumour`` for type codes 01-09, ``normal`` for 10-19 and ``control`` otherwise.
    Raises ``ValueError`` naming the first malformed barcodes.
    """
    values = [str(b) for b in barcodes]
    bad = [b for b in values if not _BARCODE.match(b)]
    if bad:
        raise ValueError(f"not TCGA sample barcodes: {bad[:5]} ({len(bad)} in all)")
    codes = [b[13:15] for b in values]
    tissue = ["tumour" if int(c) < 10 else "normal" if int(c) < 20 else "control" for c in codes]
    return pd.DataFrame(
        {
            "sample": values,
            "patient": [b[:12] for b in values],
            "sample_type_code": codes,
            "tissue": tissue,
        }
    )


def sample_table(methylation: list[str], expression: list[str]) -> pd.DataFrame:
    """Every barcode of either matrix; ``kept`` marks those in both (docs/design.md §3 step 4).

    Raises ``ValueError`` when the two files share no sample.
    """
    in_methylation, in_expression = set(methylation), set(expression)
    ordered = list(dict.fromkeys([*methylation, *expression]))
    table = parse_barcodes(ordered)
    table["in_methylation"] = table["sample"].isin(in_methylation)
    table["in_expression"] = table["sample"].isin(in_expression)
    table["kept"] = table["in_methylation"] & table["in_expression"]
    if not table["kept"].any():
        raise ValueError(
            f"the expression file shares no sample with the methylation file "
            f"({len(in_expression)} vs {len(in_methylation)} barcodes, e.g. "
            f"{sorted(in_expression)[:2]} vs {sorted(in_methylation)[:2]})"
        )
    return table
