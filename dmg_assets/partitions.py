"""Cohort partitions (extendable at run time) and (cohort, chromosome) partitions for gene work."""

from dagster import (
    DynamicPartitionsDefinition,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
)

from dmg_ml.data.genome import CHROMOSOMES
from dmg_ml.data.xena import DEFAULT_COHORTS

__all__ = ["DEFAULT_COHORTS", "cohort_partitions", "cohort_chromosome_partitions"]

#: Cohorts are dynamic: the sensor registers the defaults; a user adds more from the UI or CLI.
cohort_partitions = DynamicPartitionsDefinition(name="cohort")
chromosome_partitions = StaticPartitionsDefinition(list(CHROMOSOMES))
#: A gene window never crosses a chromosome, so (cohort, chromosome) is self-contained work.
cohort_chromosome_partitions = MultiPartitionsDefinition(
    {"cohort": cohort_partitions, "chromosome": chromosome_partitions}
)
