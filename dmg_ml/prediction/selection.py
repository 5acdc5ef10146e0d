"""Which saved models a prediction batch uses, and what it leaves out, with the reason.

The prediction asset reads the registry rows of a training cohort's models (gene, chromosome,
path, sha256, honest R²); these functions choose among them (``chosen``: the genes asked for;
``r2_gate``: the genes whose honest R² clears ``min_r2``), list the genes left out
(``SKIPPED_COLUMNS`` rows), and say why a file predicted nothing (``nothing_predicted``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dmg_ml.data.genome import CHROMOSOMES
from dmg_ml.prediction.inputs import MethylationInput, PredictionInputError
from dmg_ml.prediction.predict import SKIPPED_COLUMNS

_CHROMOSOME_ORDER = {c: i for i, c in enumerate(CHROMOSOMES)}


class PredictionRefused(ValueError):
    """The step will not predict: the batch holds rows (and ``replace`` is off), no trained model
    or gene to predict with. The message says what to do; nothing was written."""


def in_genome_order(registry: pd.DataFrame) -> pd.DataFrame:
    """Registry rows in chromosome order (unknown chromosomes last), then by gene."""
    order = registry["chromosome"].map(_CHROMOSOME_ORDER).fillna(len(CHROMOSOMES))
    return (registry.assign(_order=order).sort_values(["_order", "gene"])
            .drop(columns="_order").reset_index(drop=True))


def chosen(registry: pd.DataFrame, genes: list[str], cohort: str, window_bp: int) -> pd.DataFrame:
    """The rows of ``genes`` (every row when empty); ``PredictionRefused`` naming any gene
    without a model."""
    if not genes:
        return registry
    unknown = sorted(set(genes) - set(registry["gene"]))
    if unknown:
        raise PredictionRefused(f"genes without a trained CNN of {cohort} at W={window_bp:,}: "
                                f"{unknown[:10]} ({len(unknown)} in all)")
    return registry[registry["gene"].isin(set(genes))].reset_index(drop=True)


def r2_gate(registry: pd.DataFrame, min_r2: float, cohort: str,
            window_bp: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows whose honest R² is at least ``min_r2`` (a NaN R² is no evidence of a model: left
    out) and the skip rows of the others; ``PredictionRefused`` when none clears it."""
    low = ~(registry["r2"] >= min_r2)
    if low.all():
        raise PredictionRefused(
            f"no gene to predict: none of the {len(registry)} CNNs of {cohort} at "
            f"W={window_bp:,} has an honest R² of at least {min_r2:g} (best "
            f"{registry['r2'].max():.3f}); lower min_r2"
        )
    return registry[~low], _r2_skipped(registry[low], cohort, min_r2)


def _r2_skipped(low: pd.DataFrame, cohort: str, min_r2: float) -> pd.DataFrame:
    """Rows of ``SKIPPED_COLUMNS`` for the genes left out for their honest R² (their models are
    not read, so their coverage is unknown: null)."""
    def reason(r2: float) -> str:
        if np.isnan(r2):
            return f"honest R² in {cohort} undefined, below the threshold {min_r2:g}"
        return f"honest R² {r2:.3f} in {cohort} is below the threshold {min_r2:g}"

    return pd.DataFrame({
        "gene": low["gene"].to_numpy(dtype=object),
        "sample": pd.Series([None] * len(low), dtype=object),
        "reason": [reason(r2) for r2 in low["r2"]],
        "coverage": np.full(len(low), np.nan),
    }, columns=SKIPPED_COLUMNS)


def all_skipped(gated: pd.DataFrame, skipped: pd.DataFrame) -> pd.DataFrame:
    """The genes left out for their R², then those left out for coverage (columns kept when both
    are empty)."""
    return pd.concat([f for f in (gated, skipped) if not f.empty] or [skipped],
                     ignore_index=True)


def nothing_predicted(data: MethylationInput, skipped: pd.DataFrame, model_probes: set[str],
                      cohort: str, window_bp: int, min_coverage: float) -> PredictionInputError:
    """Why a file predicted no gene: it shares no probe with the models, or too few."""
    shared = len(model_probes & set(data.m_values.index))
    genes = len(skipped["gene"].unique())
    if not shared:
        examples = [str(p) for p in data.m_values.index[:3]]
        return PredictionInputError(
            f"{data.source}: no probe in common with the models: none of its {data.n_probes:,} "
            f"probes (e.g. {examples}) is one of the {len(model_probes):,} probes of "
            f"{cohort}'s {genes} models at W={window_bp:,}; the file needs 450K or EPIC probe "
            "ids of the genes' windows"
        )
    best = skipped.loc[skipped["coverage"].idxmax()]
    return PredictionInputError(
        f"{data.source}: no gene could be predicted: the file holds {shared:,} of the models' "
        f"{len(model_probes):,} probes, and every one of the {genes} genes (or every sample of "
        f"it) is below the probe coverage threshold {min_coverage:.0%} (best: "
        f"{best['gene']}, {best['coverage']:.1%}); lower min_coverage to predict them from "
        "fewer probes"
    )
