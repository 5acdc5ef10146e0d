"""Sensors: keep the cohort partitions registered, and only names that follow the cohort rule."""

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from dmg_assets.partitions import DEFAULT_COHORTS, cohort_partitions
from dmg_resources.source import validate_cohort


def _invalid(cohort: str) -> bool:
    try:
        validate_cohort(cohort)
    except ValueError:
        return True
    return False


@sensor(default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=60)
def register_default_cohorts(context: SensorEvaluationContext):
    """Add the default cohorts (BRCA, COAD, GBM, LUAD) as partitions if they are missing.

    Further cohorts are added at run time from the UI's partition picker or ``python -m
    dmg_assets.run --cohorts KIRC``. Every name it adds follows the cohort rule
    (``dmg_resources.source.validate_cohort``), and registered names that break it (left by an
    older driver, or added from the UI and not yet materialised) are removed.
    """
    existing = context.instance.get_dynamic_partitions(cohort_partitions.name)
    missing = [validate_cohort(c) for c in DEFAULT_COHORTS if c not in set(existing)]
    invalid = [c for c in existing if _invalid(c)]
    requests = []
    if missing:
        requests.append(cohort_partitions.build_add_request(missing))
    if invalid:
        context.log.warning(f"removing cohort partitions with invalid names: {invalid}")
        requests.append(cohort_partitions.build_delete_request(invalid))
    if not requests:
        return SkipReason("default cohorts already registered")
    return SensorResult(dynamic_partitions_requests=requests)
