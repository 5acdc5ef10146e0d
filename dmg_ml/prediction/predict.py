"""Predicted expression for new samples from a gene's saved models (docs/design.md §10).

The alignment, the fill and the fold models come from the ``generalisation`` experiment
(``dmg_ml.evaluation.experiments``): ``aligned_columns`` puts the new samples' M-values in the
checkpoint's probe order (NaN for a probe the input lacks) and gives the gene's probe coverage;
``checkpoint_predictors`` rebuilds each stored model with its scaler, whose training probe means
fill every missing value (an absent probe, or a missing cell of one sample), model by model.

Rules:

* **Coverage.** A gene whose share of probes present in the input is below ``min_coverage``
  (default ``DEFAULT_MIN_COVERAGE``) is skipped, with the reason (``SkippedGene``), not guessed.
  Each (sample, gene) also has its own coverage: the share of the gene's probes with a value for
  that sample (an absent probe and a missing cell both count as missing, and both are filled); a
  sample below ``min_coverage`` for a gene is left out of that gene's predictions and listed
  with the sample named.
* **Prediction** is the mean over every model the checkpoint holds: the fold models (what the
  honest cross-validation scores on held-out samples) and the final model trained on every
  sample; the final model alone where only it is stored. Not the final model alone when the folds
  are there: one network on a small cohort sometimes stalls on a plateau and early stopping ends
  it there, which an average of six rarely does (measured in the round trip of
  ``tests/test_prediction_assets.py``, 40 training samples, 3 genes × 8 held-back samples:
  centred r with the truth 0.36 for the final model alone, 0.74 for the six, 0.77 for the five
  folds).
* **Interval**: ``lower`` and ``upper`` are the minimum and maximum over every stored model's
  prediction, the fold models' and the final one's. This is the spread of the models (how much
  the prediction depends on which samples trained it), not a prediction interval for the
  measured expression: it leaves out the residual error, which the gene's honest R² describes.
  With one model (a final model stored alone) it is a single point. The range, not mean ± 2·sd,
  because five or six values give a poor sd, and the range always holds the prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dmg_ml.evaluation.experiments import (
    aligned_columns,
    checkpoint_predictors,
    fold_predictions,
)
from dmg_ml.models.checkpoint import GeneCheckpoint
from dmg_ml.prediction.inputs import MethylationInput

#: A gene (or a sample of a gene) with fewer of the model's probes than this share is skipped.
DEFAULT_MIN_COVERAGE = 0.8
#: Genes whose honest R² (``gene_metrics.r2``, also on each ``model_registry`` row) is below
#: this are not predicted by default: their models explain little of the expression. The filter
#: is applied where the registry is read (the prediction asset and CLI), not here.
DEFAULT_MIN_R2 = 0.1
PREDICTION_COLUMNS = ["sample", "gene", "prediction", "lower", "upper", "coverage",
                      "n_missing_probes"]
SKIPPED_COLUMNS = ["gene", "sample", "reason", "coverage"]
_EPSILON = 1e-9


@dataclass(frozen=True)
class GenePrediction:
    """One gene's predictions for the samples it could predict.

    ``model_predictions`` is models × samples (the fold models', then the final model's);
    ``coverage`` and ``n_missing_probes`` are per sample
    (the gene's probes with and without a value for that sample); ``gene_coverage`` is the share
    of the gene's probes present in the input; ``low_coverage`` maps the samples left out (their
    coverage below ``min_coverage``) to their coverage.
    """

    gene: str
    samples: list[str]
    model_predictions: np.ndarray
    coverage: np.ndarray
    n_missing_probes: np.ndarray
    gene_coverage: float
    n_probes: int
    min_coverage: float = DEFAULT_MIN_COVERAGE
    low_coverage: dict[str, float] = field(default_factory=dict)

    @property
    def prediction(self) -> np.ndarray:
        return self.model_predictions.mean(axis=0)

    @property
    def lower(self) -> np.ndarray:
        return self.model_predictions.min(axis=0)

    @property
    def upper(self) -> np.ndarray:
        return self.model_predictions.max(axis=0)

    @property
    def n_models(self) -> int:
        return int(self.model_predictions.shape[0])

    def frame(self) -> pd.DataFrame:
        """Rows of ``PREDICTION_COLUMNS``, one per predicted sample."""
        return pd.DataFrame({
            "sample": pd.Series(self.samples, dtype=object),
            "gene": self.gene,
            "prediction": self.prediction,
            "lower": self.lower,
            "upper": self.upper,
            "coverage": self.coverage.astype(np.float64),
            "n_missing_probes": self.n_missing_probes.astype(np.int64),
        }, columns=PREDICTION_COLUMNS)

    def skipped_frame(self) -> pd.DataFrame:
        """Rows of ``SKIPPED_COLUMNS`` for the samples left out for their coverage."""
        return pd.DataFrame({
            "gene": self.gene,
            "sample": pd.Series(list(self.low_coverage), dtype=object),
            "reason": [_reason(c, self.n_probes, self.min_coverage, "sample's ")
                       for c in self.low_coverage.values()],
            "coverage": pd.Series(list(self.low_coverage.values()), dtype=np.float64),
        }, columns=SKIPPED_COLUMNS)


@dataclass(frozen=True)
class SkippedGene:
    """A gene not predicted, and why. ``coverage`` is the share of its probes in the input."""

    gene: str
    reason: str
    coverage: float
    n_probes: int
    n_missing_probes: int

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"gene": [self.gene], "sample": pd.Series([None], dtype=object),
                             "reason": [self.reason], "coverage": [self.coverage]},
                            columns=SKIPPED_COLUMNS)


def predict_gene(
    checkpoint: GeneCheckpoint,
    m_values: pd.DataFrame | MethylationInput,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    gene: str | None = None,
) -> GenePrediction | SkippedGene:
    """Predict one gene for every sample (column) of the probes × samples M-value matrix.

    ``gene`` labels the result (default ``checkpoint.gene``). The fold models are loaded only
    when the gene's coverage clears ``min_coverage``.
    """
    matrix = _matrix(m_values)
    gene = gene or checkpoint.gene
    if not 0.0 <= min_coverage <= 1.0:
        raise ValueError(f"min_coverage must lie in [0, 1], got {min_coverage}")
    if not checkpoint.models:
        raise ValueError(f"{gene}: the checkpoint holds no model")
    samples = [str(s) for s in matrix.columns]
    if not samples:
        raise ValueError("the M-value matrix has no sample")
    n_probes = len(checkpoint.probe_ids)
    X, gene_coverage = aligned_columns(matrix, checkpoint.probe_ids, samples)
    n_absent = n_probes - int(round(gene_coverage * n_probes))
    if gene_coverage + _EPSILON < min_coverage:
        return SkippedGene(gene, _reason(gene_coverage, n_probes, min_coverage), gene_coverage,
                           n_probes, n_absent)
    n_missing = np.isnan(X).sum(axis=1)
    coverage = 1.0 - n_missing / n_probes
    keep = coverage + _EPSILON >= min_coverage
    if not keep.any():
        return SkippedGene(
            gene, f"every sample's probe coverage is below the threshold {min_coverage:.0%} "
            f"(best {coverage.max():.1%} of {n_probes} probes)", gene_coverage, n_probes,
            n_absent)
    by_model = fold_predictions(checkpoint_predictors(checkpoint, checkpoint.models), X[keep])
    return GenePrediction(
        gene=gene,
        samples=[s for s, k in zip(samples, keep, strict=True) if k],
        model_predictions=by_model,
        coverage=coverage[keep],
        n_missing_probes=n_missing[keep],
        gene_coverage=gene_coverage,
        n_probes=n_probes,
        min_coverage=min_coverage,
        low_coverage={s: float(c) for s, c, k in zip(samples, coverage, keep, strict=True)
                      if not k},
    )


def predict_genes(
    checkpoints: Iterable[tuple[str, GeneCheckpoint]],
    m_values: pd.DataFrame | MethylationInput,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    on_gene_done: Callable[[GenePrediction | SkippedGene], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predict every (gene, checkpoint) pair; checkpoints may be loaded lazily (a generator).

    Returns ``(predictions, skipped)``: ``predictions`` has ``PREDICTION_COLUMNS`` (one row per
    sample and gene), ``skipped`` has ``SKIPPED_COLUMNS`` (one row per gene skipped, ``sample``
    None; one per sample left out of a gene for its own coverage). ``on_gene_done`` is called
    with each gene's result as it finishes (a progress bar).
    """
    matrix = _matrix(m_values)
    predictions, skipped, seen = [], [], set()
    for gene, checkpoint in checkpoints:
        if gene in seen:
            raise ValueError(f"{gene}: more than one checkpoint given")
        seen.add(gene)
        result = predict_gene(checkpoint, matrix, min_coverage, gene=gene)
        if isinstance(result, SkippedGene):
            skipped.append(result.frame())
        else:
            predictions.append(result.frame())
            if result.low_coverage:
                skipped.append(result.skipped_frame())
        if on_gene_done is not None:
            on_gene_done(result)
    return _concat(predictions, PREDICTION_COLUMNS), _concat(skipped, SKIPPED_COLUMNS)


def _matrix(m_values: pd.DataFrame | MethylationInput) -> pd.DataFrame:
    return m_values.m_values if isinstance(m_values, MethylationInput) else m_values


def _reason(coverage: float, n_probes: int, threshold: float, whose: str = "") -> str:
    present = int(round(coverage * n_probes))
    return (f"{whose}probe coverage {coverage:.1%} ({present} of the model's {n_probes} probes) "
            f"is below the threshold {threshold:.0%}")


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if frames:
        return pd.concat(frames, ignore_index=True)
    empty = {"sample": object, "gene": object, "reason": object, "prediction": np.float64,
             "lower": np.float64, "upper": np.float64, "coverage": np.float64,
             "n_missing_probes": np.int64}
    return pd.DataFrame({c: pd.Series(dtype=empty[c]) for c in columns})
