"""Watching the source and retraining after it, through Dagster's own test helpers.

The sensor's cases (new cohort, changed file, unchanged, source down, unknown cohort) run against
the local HTTP test server and against a local directory hub. The automation tests build real
data-layer partitions from the HTTP hub with the run requests the sensor made, then evaluate the
automation conditions of ``model_evaluation``'s tables as the daemon would, tick by tick.
"""

import gzip
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    MultiPartitionKey,
    ScheduleEvaluationContext,
    SensorResult,
    build_schedule_context,
    build_sensor_context,
    evaluate_automation_conditions,
    instance_for_test,
)
from dagster._core.test_utils import create_run_for_test

from dmg_assets import definitions, runs
from dmg_assets.automation import RETRAIN_ON_NEW_DATA
from dmg_assets.partitions import cohort_partitions
from dmg_assets.sensors import SOURCE_VERSION_TAG, build_watch_schedule, watch_source
from dmg_ml.data.genome import CHROMOSOMES
from dmg_resources.checkpoints import CheckpointStore
from dmg_resources.device import TorchDevice
from dmg_resources.source import (
    EXPRESSION_PATH,
    METHYLATION_PATH,
    CohortNotFound,
    SourceUnavailable,
    XenaSource,
)
from dmg_resources.warehouse import Warehouse
from tests.http_server import FileServer

#: The tables ``model_evaluation`` writes per (cohort, chromosome), every model (the CNN included)
#: in one step.
MODEL_TABLES = ("fold_metrics", "gene_metrics", "predictions", "cnn_training", "model_registry")
GENE_METRICS = AssetKey("gene_metrics")
TABLES_PER_PARTITION = len(MODEL_TABLES)


@dataclass
class Hub:
    """A copy of the tiny synthetic hub (BRCA, COAD) and the base URL it is served under."""

    root: Path
    base_url: str
    server: FileServer | None

    def file(self, cohort: str, path: str = EXPRESSION_PATH) -> Path:
        return self.root / path.format(cohort=cohort)

    def touch(self, cohort: str, seconds: int = 10) -> None:
        """Same bytes, a newer mtime: what a re-upload of an identical file looks like."""
        file = self.file(cohort)
        stat = file.stat()
        os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 10**9))


@pytest.fixture(params=["http", "directory"])
def hub(request, tiny_hub: Path, tmp_path: Path) -> Iterator[Hub]:
    root = tmp_path / "hub"
    shutil.copytree(tiny_hub, root)
    if request.param == "directory":
        yield Hub(root, str(root), None)
        return
    with FileServer(root) as server:
        yield Hub(root, server.url, server)


@pytest.fixture
def http_hub(tiny_hub: Path, tmp_path: Path) -> Iterator[Hub]:
    root = tmp_path / "hub"
    shutil.copytree(tiny_hub, root)
    with FileServer(root) as server:
        yield Hub(root, server.url, server)


def source_for(hub: Hub, tmp_path: Path, watch: list[str] | None = None) -> XenaSource:
    return XenaSource(
        base_url=hub.base_url, cache_dir=str(tmp_path / "cache"), backoff_seconds=0.001,
        probe_timeout_seconds=5.0, watch_cohorts=["BRCA"] if watch is None else watch,
    )


def tick(instance: DagsterInstance, source: XenaSource, cursor: str | None = None):
    """One sensor tick; the partitions it asks for are added, as the daemon does."""
    result = watch_source(
        build_sensor_context(instance=instance, resources={"source": source}, cursor=cursor)
    )
    assert isinstance(result, SensorResult)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def weekly_tick(instance: DagsterInstance, source: XenaSource) -> ScheduleEvaluationContext:
    """A schedule context; used as a context manager, so the instance it opens is closed again
    (left open, a later ``Definitions`` load in this process meets a disposed instance)."""
    return build_schedule_context(instance=instance, resources={"source": source})


def defs_for(source: XenaSource, tmp_path: Path) -> Definitions:
    """The project's assets and jobs with this test's source and a private data directory."""
    return Definitions(
        assets=definitions.defs.assets,
        jobs=definitions.defs.jobs,
        resources={
            "source": source,
            "warehouse": Warehouse(
                root=str(tmp_path / "warehouse"), database=str(tmp_path / "dmg.duckdb")
            ),
            "device": TorchDevice(),
            "checkpoints": CheckpointStore(root=str(tmp_path / "checkpoints")),
        },
    )


def launch(defs: Definitions, instance: DagsterInstance, request, tags: dict | None = None):
    """Execute a run request of ``data_layer_job`` in process, as the daemon would launch it."""
    return defs.resolve_job_def("data_layer_job").execute_in_process(
        instance=instance, partition_key=request.partition_key, raise_on_error=False,
        tags={**request.tags, "dagster/run_key": request.run_key, **(tags or {})},
    )


def run_keys(result: SensorResult) -> list[str]:
    return [r.run_key for r in result.run_requests]


def models_of(cohort: str) -> set[str]:
    return {str(MultiPartitionKey({"cohort": cohort, "chromosome": c})) for c in CHROMOSOMES}


def requested_models(auto) -> set[str]:
    """The (cohort, chromosome) partitions requested of ``model_evaluation``: the same for every
    table it writes (one step writes them all)."""
    requested = auto.get_requested_partitions(GENE_METRICS)
    for table in MODEL_TABLES:
        assert auto.get_requested_partitions(AssetKey(table)) == requested, table
    return requested


# --- the source's version probe ---------------------------------------------------------------


def test_version_is_cheap_and_names_what_identifies_the_files(hub: Hub, tmp_path: Path):
    source = source_for(hub, tmp_path)

    version = source.version("BRCA")

    expression = hub.file("BRCA")
    assert version.expression.url == source.url_for(EXPRESSION_PATH.format(cohort="BRCA"))
    assert version.expression.size_bytes == expression.stat().st_size
    assert version.expression.etag and version.expression.last_modified
    if hub.server is None:
        assert version.expression.mtime_ns == expression.stat().st_mtime_ns
    else:
        assert [r.method for r in hub.server.requests] == ["HEAD", "HEAD"]
    assert len(version.key) == 16 and version.key == source.version("BRCA").key
    assert not (tmp_path / "cache").exists()  # nothing downloaded
    hub.touch("BRCA")
    assert source.version("BRCA").key != version.key


def test_unknown_cohort_and_a_source_that_is_down_are_distinct_errors(hub: Hub, tmp_path: Path):
    source = source_for(hub, tmp_path)
    url = source.url_for(METHYLATION_PATH.format(cohort="KIRC"))

    with pytest.raises(CohortNotFound, match="KIRC") as missing:
        source.version("KIRC")

    assert missing.value.url == url and url in str(missing.value)
    if hub.server is not None:
        hub.server.fail(EXPRESSION_PATH.format(cohort="BRCA"), 500)
    else:
        hub.root.rename(hub.root.with_name("gone"))
    with pytest.raises(SourceUnavailable) as down:
        source.version("BRCA")
    assert down.value.url in str(down.value)


# --- the sensor's cases, over HTTP and from a directory ----------------------------------------


def test_new_cohort_is_registered_and_its_data_layer_requested(hub: Hub, tmp_path: Path):
    source = source_for(hub, tmp_path, watch=["BRCA"])
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(cohort_partitions.name, ["COAD"])  # added in the UI

        result = tick(instance, source)

        brca, coad = source.version("BRCA").key, source.version("COAD").key
        (add,) = result.dynamic_partitions_requests
        assert list(add.partition_keys) == ["BRCA"]  # COAD was registered already
        assert run_keys(result) == [f"BRCA:{brca}", f"COAD:{coad}"]
        assert [r.partition_key for r in result.run_requests] == ["BRCA", "COAD"]
        assert result.run_requests[0].tags == {SOURCE_VERSION_TAG: brca}
        assert json.loads(result.cursor) == {"versions": {"BRCA": brca, "COAD": coad}}


def test_changed_file_requests_a_new_run_key(hub: Hub, tmp_path: Path):
    source = source_for(hub, tmp_path)
    with DagsterInstance.ephemeral() as instance:
        first = tick(instance, source)
        hub.touch("BRCA")

        changed = tick(instance, source, first.cursor)

        assert run_keys(changed) == [f"BRCA:{source.version('BRCA').key}"]
        assert run_keys(changed) != run_keys(first)
        assert changed.dynamic_partitions_requests == []  # registered by the first tick


def test_unchanged_source_skips_with_the_reason(hub: Hub, tmp_path: Path):
    source = source_for(hub, tmp_path)
    with DagsterInstance.ephemeral() as instance:
        first = tick(instance, source)

        again = tick(instance, source, first.cursor)

        assert again.run_requests == [] and again.dynamic_partitions_requests == []
        key = source.version("BRCA").key
        assert again.skip_reason.skip_message == f"BRCA: unchanged (version {key})"
        assert again.cursor == first.cursor


def test_source_down_reports_and_requests_nothing(hub: Hub, tmp_path: Path):
    source = source_for(hub, tmp_path, watch=["BRCA", "COAD"])
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(cohort_partitions.name, ["BRCA"])
        seen = json.dumps({"versions": {"BRCA": source.version("BRCA").key}})
        hub.touch("BRCA")  # a new version is waiting, but the source does not answer
        if hub.server is not None:
            hub.server.fail(EXPRESSION_PATH.format(cohort="BRCA"), 500)
        else:
            hub.root.rename(hub.root.with_name("unmounted"))

        down = tick(instance, source, seen)

        assert down.run_requests == [] and down.dynamic_partitions_requests == []
        reason = down.skip_reason.skip_message
        tried = EXPRESSION_PATH if hub.server else METHYLATION_PATH  # the first file that failed
        url = source.url_for(tried.format(cohort="BRCA"))
        assert reason.startswith("BRCA: source unavailable") and url in reason
        assert "HTTP 500" in reason if hub.server else "does not exist" in reason
        assert "COAD: not checked, the source is unavailable" in reason
        assert json.loads(down.cursor) == json.loads(seen)  # the last version seen is kept
        assert instance.get_dynamic_partitions(cohort_partitions.name) == ["BRCA"]


def test_stopped_server_reports_and_requests_nothing(http_hub: Hub, tmp_path: Path):
    source = source_for(http_hub, tmp_path)
    url = source.url_for(METHYLATION_PATH.format(cohort="BRCA"))
    http_hub.server.stop()
    with DagsterInstance.ephemeral() as instance:
        down = tick(instance, source)

        assert down.run_requests == [] and down.dynamic_partitions_requests == []
        assert f"BRCA: source unavailable: {url}: the source did not answer" in (
            down.skip_reason.skip_message
        )


def test_registered_cohort_the_source_lacks_is_an_error_naming_the_url(hub: Hub, tmp_path: Path):
    source = source_for(hub, tmp_path, watch=["LUAD"])
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(cohort_partitions.name, ["KIRC"])  # from the UI or CLI

        result = tick(instance, source)

        assert result.run_requests == [] and result.dynamic_partitions_requests == []
        reason = result.skip_reason.skip_message
        kirc = source.url_for(METHYLATION_PATH.format(cohort="KIRC"))
        assert "KIRC (registered): cohort 'KIRC' is not on the source: " in reason
        assert kirc in reason and "nothing launched" in reason
        assert "HTTP 404" in reason if hub.server else "no file" in reason
        assert "LUAD (watched)" in reason  # a watched cohort the hub lacks is not registered
        assert instance.get_dynamic_partitions(cohort_partitions.name) == ["KIRC"]


# --- never the same version twice ----------------------------------------------------------------


def test_a_version_is_launched_once_even_without_the_cursor(http_hub: Hub, tmp_path: Path):
    source = source_for(http_hub, tmp_path)
    defs = defs_for(source, tmp_path)
    with instance_for_test() as instance:
        (request,) = tick(instance, source).run_requests
        assert launch(defs, instance, request).success
        schedule = build_watch_schedule(definitions.WATCH_SOURCE_CRON)

        fresh = tick(instance, source)  # a reset cursor
        with weekly_tick(instance, source) as context:
            weekly = schedule(context)

        assert fresh.run_requests == []
        assert "was launched before" in fresh.skip_reason.skip_message
        assert "(SUCCESS)" in fresh.skip_reason.skip_message
        assert "was launched before" in weekly.skip_message


def test_the_schedule_does_the_sensors_check(hub: Hub, tmp_path: Path):
    source = source_for(hub, tmp_path)
    schedule = build_watch_schedule("0 6 * * 1")
    with instance_for_test() as instance:
        with weekly_tick(instance, source) as context:
            requests = schedule(context)

        assert [r.run_key for r in requests] == [f"BRCA:{source.version('BRCA').key}"]
        assert instance.get_dynamic_partitions(cohort_partitions.name) == ["BRCA"]
        assert schedule.cron_schedule == "0 6 * * 1"


def test_a_cohort_already_built_from_these_files_is_not_launched(tiny_hub: Path, tmp_path: Path):
    hub = Hub(tmp_path / "hub", str(tmp_path / "hub"), None)
    shutil.copytree(tiny_hub, hub.root)
    source = source_for(hub, tmp_path)
    defs = defs_for(source, tmp_path)
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(cohort_partitions.name, ["BRCA"])
        job = defs.resolve_job_def("data_layer_job")
        built = job.execute_in_process(instance=instance, partition_key="BRCA",
                                       tags=runs.process_tags())  # as `make run` does
        assert built.success

        first = tick(instance, source)
        hub.touch("BRCA")
        changed = tick(instance, source, first.cursor)

        key = json.loads(first.cursor)["versions"]["BRCA"]
        assert first.run_requests == []
        assert first.skip_reason.skip_message == (
            f"BRCA: version {key} is already built (cache and tables)"
        )
        assert run_keys(changed) == [f"BRCA:{source.version('BRCA').key}"]


# --- retraining follows the data -----------------------------------------------------------------


def test_training_and_evaluation_follow_a_changed_cohort_once(http_hub: Hub, tmp_path: Path):
    source = source_for(http_hub, tmp_path, watch=["BRCA", "COAD"])
    defs = defs_for(source, tmp_path)
    with DagsterInstance.ephemeral() as instance:
        auto = evaluate_automation_conditions(defs=defs, instance=instance)
        assert auto.total_requested == 0
        first = tick(instance, source)
        assert [r.partition_key for r in first.run_requests] == ["BRCA", "COAD"]
        assert all(launch(defs, instance, r).success for r in first.run_requests)

        auto = evaluate_automation_conditions(defs=defs, instance=instance, cursor=auto.cursor)
        assert requested_models(auto) == models_of("BRCA") | models_of("COAD")
        auto = evaluate_automation_conditions(defs=defs, instance=instance, cursor=auto.cursor)
        assert auto.total_requested == 0  # once per upstream version

        http_hub.touch("BRCA")
        changed = tick(instance, source, first.cursor)
        (request,) = changed.run_requests
        assert request.partition_key == "BRCA"
        assert launch(defs, instance, request).success

        auto = evaluate_automation_conditions(defs=defs, instance=instance, cursor=auto.cursor)
        assert requested_models(auto) == models_of("BRCA")
        assert auto.total_requested == TABLES_PER_PARTITION * len(CHROMOSOMES)
        auto = evaluate_automation_conditions(defs=defs, instance=instance, cursor=auto.cursor)
        assert auto.total_requested == 0


def test_no_training_after_a_failed_data_layer_run(http_hub: Hub, tmp_path: Path):
    source = source_for(http_hub, tmp_path)
    defs = defs_for(source, tmp_path)
    expression = http_hub.file("BRCA")
    good = expression.read_bytes()
    with DagsterInstance.ephemeral() as instance:
        first = tick(instance, source)
        assert launch(defs, instance, first.run_requests[0]).success
        auto = evaluate_automation_conditions(defs=defs, instance=instance)
        auto = evaluate_automation_conditions(defs=defs, instance=instance, cursor=auto.cursor)
        assert auto.total_requested == 0  # v1 was handled on the tick before (not tested here)

        header, row, *rest = gzip.decompress(good).decode().splitlines()
        gene, _, *values = row.split("\t")
        expression.write_bytes(gzip.compress(
            "\n".join([header, "\t".join([gene, "oops", *values]), *rest, ""]).encode()))
        broken = tick(instance, source, first.cursor)
        assert not launch(defs, instance, broken.run_requests[0]).success  # samples did update

        for _ in range(2):
            auto = evaluate_automation_conditions(defs=defs, instance=instance, cursor=auto.cursor)
            assert auto.total_requested == 0

        expression.write_bytes(good)
        http_hub.touch("BRCA")
        fixed = tick(instance, source, broken.cursor)
        assert run_keys(fixed) not in (run_keys(first), run_keys(broken))
        assert launch(defs, instance, fixed.run_requests[0]).success
        auto = evaluate_automation_conditions(defs=defs, instance=instance, cursor=auto.cursor)
        assert requested_models(auto) == models_of("BRCA")


def test_data_layer_runs_of_the_driver_do_not_trigger_training(http_hub: Hub, tmp_path: Path):
    source = source_for(http_hub, tmp_path)
    defs = defs_for(source, tmp_path)
    with DagsterInstance.ephemeral() as instance:
        auto = evaluate_automation_conditions(defs=defs, instance=instance)
        (request,) = tick(instance, source).run_requests
        assert launch(defs, instance, request, tags=runs.process_tags()).success

        auto = evaluate_automation_conditions(defs=defs, instance=instance, cursor=auto.cursor)

        assert auto.total_requested == 0


def test_a_cohort_the_driver_is_building_is_neither_built_again_nor_retrained(
    http_hub: Hub, tmp_path: Path
):
    """Issue 23, case 2: with ``make dev`` running, a tick during the driver's data-layer run
    launched a second build, untagged, whose end requested all 23 chromosomes' models."""
    source = source_for(http_hub, tmp_path)
    defs = defs_for(source, tmp_path)
    job = defs.resolve_job_def("data_layer_job")
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(cohort_partitions.name, ["BRCA"])
        auto = evaluate_automation_conditions(defs=defs, instance=instance)
        source.fetch(source.cohort_files("BRCA")["methylation"])  # the driver, part way
        driver = create_run_for_test(instance, job_name="data_layer_job",
                                     status=DagsterRunStatus.STARTED,
                                     tags={"dagster/partition": "BRCA", **runs.process_tags()})
        during = tick(instance, source)
        assert during.run_requests == []
        assert f"being built by run {driver.run_id}" in during.skip_reason.skip_message
        instance.report_run_failed(driver)  # its record; the build itself:
        assert job.execute_in_process(instance=instance, partition_key="BRCA",
                                      tags=runs.process_tags()).success
        after = tick(instance, source, during.cursor)
        assert after.run_requests == [] and "already built" in after.skip_reason.skip_message
        for _ in range(2):
            auto = evaluate_automation_conditions(defs=defs, instance=instance, cursor=auto.cursor)
            assert auto.total_requested == 0


# --- wiring ---------------------------------------------------------------------------------------


def test_definitions_watch_the_source_and_automate_the_models():
    defs = definitions.defs
    assert defs.resolve_sensor_def("watch_source").default_status == DefaultSensorStatus.RUNNING
    automation = defs.resolve_sensor_def("default_automation_condition_sensor")
    assert automation.default_status == DefaultSensorStatus.RUNNING
    schedule = defs.resolve_schedule_def("watch_source_schedule")
    assert schedule.cron_schedule == definitions.WATCH_SOURCE_CRON == "0 6 * * 1"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    graph = defs.resolve_asset_graph()
    conditioned = {k.to_user_string() for k in graph.get_all_asset_keys()
                   if graph.get(k).automation_condition is not None}
    assert conditioned == set(MODEL_TABLES)
    for table in MODEL_TABLES:
        assert graph.get(AssetKey(table)).automation_condition == RETRAIN_ON_NEW_DATA
