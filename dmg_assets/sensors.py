"""Sensors and a schedule: keep the cohort partitions registered under the cohort rule, and watch
the source so that a new or changed cohort builds its data layer by itself (docs/design.md §9).

``watch_source`` (a sensor) and the schedule ``build_watch_schedule`` makes share one check,
:func:`check_source`. For every registered cohort and every cohort of the source's
``watch_cohorts`` it asks the source for the files' version (``XenaSource.version``: HEAD
validators, or a local file's size, mtime and content digest) and requests the
``data_layer_job`` run of a cohort whose version is new, unless that version

- is the one last seen (the sensor's cursor),
- was launched before (a run tagged ``dmg/source_version``: failed ones are re-executed by
  hand, never launched again),
- is already built (the cache holds these files and every data-layer table of the cohort was
  written after them: e.g. by ``make run``), or
- is being built: a ``data_layer_job`` run of the cohort has not finished (the driver's, one from
  the UI). The watch looks again on its next tick, when it finds the version built, rather than
  building it a second time and so retraining the cohort's models behind the driver's back.

The run key is ``"{cohort}:{version key}"``. A source that is down, or lacks a cohort's file, is
reported in the tick (its log, and the skip reason when nothing else is requested) and requests
nothing for that cohort.
"""

import json
import logging
from dataclasses import dataclass, field

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    load_assets_from_modules,
    schedule,
    sensor,
)

from dmg_assets import data_layer
from dmg_assets.partitions import DEFAULT_COHORTS, cohort_partitions
from dmg_resources.source import (
    CohortNotFound,
    SourceError,
    SourceUnavailable,
    XenaSource,
    validate_cohort,
)

#: The job the watch requests (defined in ``dmg_assets.definitions``).
DATA_LAYER_JOB = "data_layer_job"
#: Tag on every run the watch requests: the source version it builds.
SOURCE_VERSION_TAG = "dmg/source_version"
PARTITION_TAG = "dagster/partition"
#: States of a data-layer run that has not finished: the watch waits for it.
BUILDING = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING,
            DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
#: Seconds between two looks of the sensor at the source (two HEAD requests per cohort).
WATCH_INTERVAL_SECONDS = 300
#: What a data-layer run writes (the group ``data_layer_job`` selects): a cohort's built tables.
DATA_LAYER_KEYS: tuple[AssetKey, ...] = tuple(sorted(
    key for a in load_assets_from_modules([data_layer])
    for key, group in a.group_names_by_key.items() if group == data_layer.GROUP
))


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


@dataclass
class SourceCheck:
    """What one look at the source found, and the work it asks for."""

    #: cohort -> version key last seen (kept for a cohort the source did not answer for)
    versions: dict[str, str] = field(default_factory=dict)
    #: cohorts to register before their runs
    register: list[str] = field(default_factory=list)
    run_requests: list[RunRequest] = field(default_factory=list)
    #: one line per cohort that needs nothing, and why
    notes: list[str] = field(default_factory=list)
    #: one line per cohort the source could not tell about: the URL tried and its answer
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return "; ".join(self.errors + self.notes) or "no cohort to watch"

    def log(self, log: logging.Logger) -> None:
        for error in self.errors:
            log.error(error)
        for note in self.notes:
            log.info(note)
        for request in self.run_requests:
            log.info(f"{request.partition_key}: new source version, requesting "
                     f"{DATA_LAYER_JOB} (run key {request.run_key})")


def check_source(
    instance: DagsterInstance, source: XenaSource, last_seen: dict[str, str]
) -> SourceCheck:
    """Look at every registered and watched cohort on ``source``; ``last_seen`` maps cohorts to
    the version keys seen before (empty: decide from the instance and the cache alone)."""
    registered = [c for c in instance.get_dynamic_partitions(cohort_partitions.name)
                  if not _invalid(c)]
    found = SourceCheck()
    cohorts = sorted(set(registered) | set(source.watch_cohorts))
    for i, cohort in enumerate(cohorts):
        try:
            version = source.version(cohort)
        except SourceUnavailable as error:
            found.errors.append(f"{cohort}: source unavailable: {error}")
            found.notes += [f"{c}: not checked, the source is unavailable" for c in cohorts[i + 1:]]
            break
        except CohortNotFound as error:
            where = "registered" if cohort in registered else "watched"
            found.errors.append(f"{cohort} ({where}): {error}; nothing launched")
            continue
        except SourceError as error:
            found.errors.append(f"{cohort}: {error}; nothing launched")
            continue
        key = version.key
        if last_seen.get(cohort) == key:
            found.versions[cohort] = key
            found.notes.append(f"{cohort}: unchanged (version {key})")
            continue
        building = _building(instance, cohort)
        if building is not None:  # not remembered as seen: the next look finds it built
            found.notes.append(f"{cohort}: its data layer is being built by run "
                               f"{building.run_id}; looking again next time")
            continue
        found.versions[cohort] = key
        launched = _launched(instance, cohort, key)
        if launched is not None:
            found.notes.append(f"{cohort}: version {key} was launched before, in run "
                               f"{launched.run_id} ({launched.status.value})")
            continue
        if cohort in registered and _built_from(instance, source.cached_since(version), cohort):
            found.notes.append(f"{cohort}: version {key} is already built (cache and tables)")
            continue
        if cohort not in registered:
            found.register.append(cohort)
        found.run_requests.append(
            RunRequest(partition_key=cohort, run_key=f"{cohort}:{key}",
                       tags={SOURCE_VERSION_TAG: key})
        )
    # A cohort the source did not answer for keeps its last version: no relaunch when it returns.
    found.versions = {c: v for c, v in last_seen.items() if c in cohorts} | found.versions
    return found


def _building(instance: DagsterInstance, cohort: str) -> DagsterRun | None:
    """A run of ``data_layer_job`` for ``cohort`` that has not finished (queued or going), from
    the driver, the UI or this watch."""
    runs = instance.get_runs(
        RunsFilter(job_name=DATA_LAYER_JOB, tags={PARTITION_TAG: cohort},
                   statuses=BUILDING), limit=1,
    )
    return runs[0] if runs else None


def _launched(instance: DagsterInstance, cohort: str, key: str) -> DagsterRun | None:
    """The latest run of ``cohort`` tagged with source version ``key``, whatever its status."""
    runs = instance.get_runs(
        RunsFilter(tags={PARTITION_TAG: cohort, SOURCE_VERSION_TAG: key}), limit=1
    )
    return runs[0] if runs else None


def _built_from(instance: DagsterInstance, cached_at: float | None, cohort: str) -> bool:
    """Whether every data-layer table of ``cohort`` was written after the cache took its files."""
    if cached_at is None:
        return False
    for key in DATA_LAYER_KEYS:
        latest = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, asset_partitions=[cohort]), limit=1
        ).records
        if not latest or latest[0].timestamp < cached_at:
            return False
    return True


def _read_cursor(cursor: str | None) -> dict[str, str]:
    try:
        versions = json.loads(cursor or "{}").get("versions", {})
    except (ValueError, AttributeError):
        return {}
    return {str(c): str(v) for c, v in versions.items()} if isinstance(versions, dict) else {}


@sensor(
    job_name=DATA_LAYER_JOB,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=WATCH_INTERVAL_SECONDS,
)
def watch_source(context: SensorEvaluationContext, source: XenaSource) -> SensorResult:
    """Build the data layer of every registered or watched cohort whose source files are new
    or changed, once per version (run key ``cohort:version``); see ``dmg_assets.sensors``.

    The cursor keeps the version last seen per cohort (JSON). Watched cohorts are the source's
    ``watch_cohorts`` (the default cohorts unless configured).
    """
    found = check_source(context.instance, source, _read_cursor(context.cursor))
    found.log(context.log)
    cursor = json.dumps({"versions": found.versions}, sort_keys=True)
    if not found.run_requests:
        return SensorResult(skip_reason=SkipReason(found.summary()), cursor=cursor)
    adds = [cohort_partitions.build_add_request(found.register)] if found.register else []
    return SensorResult(run_requests=found.run_requests, dynamic_partitions_requests=adds,
                        cursor=cursor)


def build_watch_schedule(
    cron_schedule: str, execution_timezone: str = "UTC"
) -> ScheduleDefinition:
    """The same check as ``watch_source`` on a cron, for hubs that cannot be polled cheaply.

    A schedule has no cursor: what was launched or built is read from the instance and cache.
    """

    @schedule(
        name="watch_source_schedule",
        job_name=DATA_LAYER_JOB,
        cron_schedule=cron_schedule,
        execution_timezone=execution_timezone,
        default_status=DefaultScheduleStatus.RUNNING,
    )
    def watch_source_schedule(
        context: ScheduleEvaluationContext, source: XenaSource
    ) -> list[RunRequest] | SkipReason:
        found = check_source(context.instance, source, last_seen={})
        found.log(context.log)
        if found.register:  # a schedule cannot return partition requests: add them first
            context.instance.add_dynamic_partitions(cohort_partitions.name, found.register)
        return found.run_requests or SkipReason(found.summary())

    return watch_source_schedule
