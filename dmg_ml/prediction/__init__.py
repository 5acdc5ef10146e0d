"""Predicted expression for new samples from saved per-gene models (docs/design.md §10).

``read_methylation`` reads and checks a lab's β or M-value matrix; ``predict_genes`` predicts
every gene of a set of checkpoints for its samples. No Dagster here: the prediction asset and the
CLI call these.
"""

from dmg_ml.prediction.inputs import (
    BETA_SHARE,
    MethylationInput,
    PredictionInputError,
    m_to_beta,
    read_methylation,
)
from dmg_ml.prediction.predict import (
    DEFAULT_MIN_COVERAGE,
    DEFAULT_MIN_R2,
    PREDICTION_COLUMNS,
    SKIPPED_COLUMNS,
    GenePrediction,
    SkippedGene,
    predict_gene,
    predict_genes,
)

__all__ = [
    "BETA_SHARE",
    "DEFAULT_MIN_COVERAGE",
    "DEFAULT_MIN_R2",
    "PREDICTION_COLUMNS",
    "SKIPPED_COLUMNS",
    "GenePrediction",
    "MethylationInput",
    "PredictionInputError",
    "SkippedGene",
    "m_to_beta",
    "predict_gene",
    "predict_genes",
    "read_methylation",
]
