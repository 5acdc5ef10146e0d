"""Materialise the platform from a shell: ``python -m dmg_assets.run``.

Writes the embedded synthetic hub when the source is a local directory that lacks it, registers
the cohorts as partitions, then runs the data-layer job for each cohort, recording every run in
the Dagster instance (``$DAGSTER_HOME``) so the UI shows them.
"""

import argparse
import sys
from pathlib import Path

from dagster import DagsterInstance

from dmg_assets.definitions import SOURCE_URL, defs
from dmg_assets.partitions import DEFAULT_COHORTS, cohort_partitions
from dmg_ml.synthetic import SMALL, write_synthetic_hub
from dmg_resources.source import METHYLATION_PATH


def _instance() -> DagsterInstance:
    try:
        return DagsterInstance.get()
    except Exception:  # no DAGSTER_HOME: runs are not kept, results still land in the warehouse
        print("DAGSTER_HOME is not set: using a temporary Dagster instance", file=sys.stderr)
        return DagsterInstance.ephemeral()


def ensure_synthetic_hub(base: str, cohorts: list[str]) -> None:
    """Write the synthetic hub under ``base`` if it is a local directory without the files."""
    if "://" in base:
        return
    missing = [c for c in cohorts if not (Path(base) / METHYLATION_PATH.format(cohort=c)).exists()]
    if missing:
        print(f"writing the synthetic TCGA hub for {missing} under {base}")
        write_synthetic_hub(base, SMALL, cohorts=tuple(missing))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", nargs="+", default=list(DEFAULT_COHORTS))
    args = parser.parse_args(argv)
    cohorts = [c.upper() for c in args.cohorts]

    ensure_synthetic_hub(SOURCE_URL, cohorts)
    instance = _instance()
    known = set(instance.get_dynamic_partitions(cohort_partitions.name))
    instance.add_dynamic_partitions(cohort_partitions.name, [c for c in cohorts if c not in known])

    data_job = defs.resolve_job_def("data_layer_job")
    for cohort in cohorts:
        print(f"data layer: {cohort}")
        data_job.execute_in_process(partition_key=cohort, instance=instance)

    overview = defs.resources["warehouse"].query("SELECT * FROM cohort_overview ORDER BY cohort")
    print(overview.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
