"""Cohort partitions (extendable at run time), (cohort, chromosome) partitions for gene work and
prediction batches (one per file of new samples)."""

import warnings

from dagster import (
    BetaWarning,
    DynamicPartitionsDefinition,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    StaticPartitionsDefinition,
)

from dmg_ml.data.genome import CHROMOSOMES
from dmg_ml.data.xena import DEFAULT_COHORTS

__all__ = [
    "DEFAULT_COHORTS",
    "cohort_chromosome_partitions",
    "by_cohort",
    "cohort_partitions",
    "prediction_batches",
]

#: Cohorts are dynamic: the sensor registers the defaults; a user adds more from the UI or CLI.
cohort_partitions = DynamicPartitionsDefinition(name="cohort")
chromosome_partitions = StaticPartitionsDefinition(list(CHROMOSOMES))
#: A gene window never crosses a chromosome, so (cohort, chromosome) is self-contained work.
cohort_chromosome_partitions = MultiPartitionsDefinition(
    {"cohort": cohort_partitions, "chromosome": chromosome_partitions}
)
#: From a cohort's (cohort, chromosome) partitions to the cohort: how the per-cohort summaries
#: depend on the per-chromosome tables. Dagster calls this mapping beta; it is the one use of it.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", BetaWarning)
    by_cohort = MultiToSingleDimensionPartitionMapping("cohort")
#: A batch of new samples to predict (a lab's file): added by ``python -m dmg_assets.predict`` or
#: from the UI; the name keys the batch's rows in ``predicted_expression``.
prediction_batches = DynamicPartitionsDefinition(name="prediction_batch")
