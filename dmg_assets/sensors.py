"""Sensors: keep the cohort partitions registered."""

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from dmg_assets.partitions import DEFAULT_COHORTS, cohort_partitions


@sensor(default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=60)
def register_default_cohorts(context: SensorEvaluationContext):
    """Add the default cohorts (BRCA, COAD, GBM, LUAD) as partitions if they are missing.

    Further cohorts are added at run time from the UI's partition picker or ``python -m
    dmg_assets.run --cohorts KIRC``.
    """
    existing = set(context.instance.get_dynamic_partitions(cohort_partitions.name))
    missing = [c for c in DEFAULT_COHORTS if c not in existing]
    if not missing:
        return SkipReason("default cohorts already registered")
    return SensorResult(dynamic_partitions_requests=[cohort_partitions.build_add_request(missing)])
