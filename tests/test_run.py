"""The ``python -m dmg_assets.run`` driver: dead runs release the training pool, a waiting driver
says what it waits for and stops on Ctrl-C or SIGTERM, and bad cohort names are refused first.

The pool tests run real processes against one Dagster instance in a temporary DAGSTER_HOME: a
"holder" claims the only slot of the ``torch_training`` pool with a tiny op that blocks until a
file appears; it is started through the driver's own helper (:func:`dmg_assets.runs.execute`),
so its run carries the same tags as the driver's runs.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dagster import (
    Config,
    DagsterInstance,
    DagsterRunStatus,
    OpExecutionContext,
    build_sensor_context,
    job,
    op,
)

from dmg_assets import runs

ROOT = Path(__file__).resolve().parents[1]
#: Spelled out so the subprocesses need not import torch; checked against evaluation.POOL below.
POOL = "torch_training"
#: Every wait in this module ends by then, so no test can hang.
DEADLINE_S = 40


class Hold(Config):
    release: str = ""  # block until this file exists; "" returns at once
    claimed: str = ""  # touched once the op runs, i.e. once it holds the pool slot
    timeout_s: float = DEADLINE_S


@op(pool=POOL)
def hold_slot(context: OpExecutionContext, config: Hold) -> None:
    if config.claimed:
        Path(config.claimed).touch()
    deadline = time.monotonic() + config.timeout_s
    while config.release and not Path(config.release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{config.release} never appeared")
        time.sleep(0.05)


@job
def hold_pool_slot():
    hold_slot()


def hold_config(release: str = "", claimed: str = "") -> dict:
    return {"ops": {"hold_slot": {"config": {"release": release, "claimed": claimed}}}}


#: A driver process: runs ``hold_pool_slot`` through the driver's helper, as run.main does.
DRIVER = """
import sys
from dagster import DagsterInstance
from dmg_assets import runs
from tests.test_run import hold_config, hold_pool_slot

release, claimed = sys.argv[1:3]
if "--no-pre-wait" in sys.argv:  # as if another launcher took the slot between check and launch
    runs.wait_for_pool = lambda *args, **kwargs: None


def drive():
    runs.execute(hold_pool_slot, DagsterInstance.get(), run_config=hold_config(release, claimed))
    return 0


runs.log_to_terminal()
sys.exit(runs.until_interrupted(drive))
"""


class Driver:
    def __init__(self, home: Path, work: Path, name: str, *flags: str):
        self.release, self.claimed = work / f"{name}.release", work / f"{name}.claimed"
        self.out = work / f"{name}.out"
        env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT),
               "OMP_NUM_THREADS": "1"}
        with self.out.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", DRIVER, str(self.release), str(self.claimed), *flags],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.out.read_text()

    def wait_until(self, condition, what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{what}: the driver exited with {self.process.returncode}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.output()}")
            time.sleep(0.05)

    def holds_slot(self) -> None:
        self.wait_until(self.claimed.exists, "the driver's op to claim the pool slot")

    def finish(self) -> int:
        self.release.touch()
        return self.process.wait(DEADLINE_S)


@pytest.fixture
def home(tmp_path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    return home


@pytest.fixture
def instance(home):
    instance = DagsterInstance.from_config(str(home))
    instance.event_log_storage.set_concurrency_slots(POOL, 1)
    yield instance
    instance.dispose()


@pytest.fixture
def drivers(home, tmp_path):
    """Starts driver processes; kills any still running at the end of the test."""
    started: list[Driver] = []

    def start(name: str, *flags: str) -> Driver:
        driver = Driver(home, tmp_path, name, *flags)
        started.append(driver)
        return driver

    yield start
    for driver in started:
        if driver.process.poll() is None:
            driver.process.kill()
            driver.process.wait()


def _pool(instance):
    return instance.event_log_storage.get_concurrency_info(POOL)


def _only_run(instance, driver: Driver):
    (run,) = [r for r in instance.get_runs() if r.tags.get(runs.PID_TAG) == str(driver.process.pid)]
    return run


def _bounded(fn, timeout_s: float = DEADLINE_S):
    """fn() in a thread, failing the test if it has not returned within timeout_s."""
    outcome = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as error:  # handed to the test below
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"still running after {timeout_s} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_pool_name_is_the_training_pool():
    from dmg_assets.evaluation import POOL as TRAINING_POOL
    from dmg_assets.evaluation import model_evaluation

    assert POOL == TRAINING_POOL
    assert model_evaluation.op.pool == POOL


def test_a_killed_run_is_marked_failed_and_its_slot_freed_at_start(instance, drivers):
    holder = drivers("holder")
    holder.holds_slot()
    os.kill(holder.process.pid, signal.SIGKILL)
    holder.process.wait(DEADLINE_S)

    # The reproduction: the run stays STARTED and keeps its slot.
    run = _only_run(instance, holder)
    assert run.status == DagsterRunStatus.STARTED
    assert run.tags[runs.HOST_TAG] and run.tags[runs.PID_START_TAG]
    assert [s.run_id for s in _pool(instance).claimed_slots] == [run.run_id]

    # The driver's start-up check releases it, and only it.
    assert runs.release_stale_runs(instance) == [run.run_id]
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
    assert _pool(instance).claimed_slots == [] and _pool(instance).pending_steps == []
    assert runs.release_stale_runs(instance) == []

    # The next training run gets the slot.
    result = _bounded(lambda: runs.execute(hold_pool_slot, instance, run_config=hold_config()))
    assert result.success
    assert _pool(instance).claimed_slots == []


def test_a_live_holder_is_waited_for_aloud_then_the_driver_goes_on(instance, drivers, caplog):
    holder = drivers("holder")
    holder.holds_slot()
    run = _only_run(instance, holder)
    assert runs.release_stale_runs(instance) == []  # alive: not released
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED

    caplog.set_level("INFO", logger=runs.__name__)
    waiting = threading.Thread(
        target=runs.wait_for_pool, args=(instance, POOL), kwargs={"poll_s": 0.1}, daemon=True
    )
    waiting.start()
    deadline = time.monotonic() + DEADLINE_S
    while not [r for r in caplog.records if run.run_id in r.getMessage()]:
        assert time.monotonic() < deadline, "the waiting driver never said what it waits for"
        time.sleep(0.05)
    (said, *_) = [r for r in caplog.records if run.run_id in r.getMessage()]
    assert said.levelname == "INFO"
    assert POOL in said.getMessage() and str(holder.process.pid) in said.getMessage()
    assert waiting.is_alive()  # still waiting: the holder runs

    assert holder.finish() == 0
    waiting.join(DEADLINE_S)
    assert not waiting.is_alive()
    result = _bounded(lambda: runs.execute(hold_pool_slot, instance, run_config=hold_config()))
    assert result.success


def test_ctrl_c_and_sigterm_stop_a_driver_waiting_for_the_pool(instance, drivers):
    holder = drivers("holder")
    holder.holds_slot()
    held_by = _only_run(instance, holder).run_id
    waiters = {signal.SIGINT: drivers("sigint"), signal.SIGTERM: drivers("sigterm")}
    for waiter in waiters.values():
        waiter.wait_until(lambda w=waiter: held_by in w.output(), "the waiting line")
        assert POOL in waiter.output()
    for signum, waiter in waiters.items():
        waiter.process.send_signal(signum)
    for signum, waiter in waiters.items():
        assert waiter.process.wait(10) == 128 + signum  # exiting takes a second or two
        assert not waiter.claimed.exists()
    assert holder.finish() == 0
    assert len(instance.get_runs()) == 1  # the waiters never launched a run
    assert _pool(instance).claimed_slots == [] and _pool(instance).pending_steps == []


def test_ctrl_c_and_sigterm_stop_a_run_that_dagster_holds_back_for_the_pool(instance, drivers):
    """Inside execute_in_process Dagster captures both signals and, while a step waits for a
    slot, never looks at them; the driver's watcher does."""
    holder = drivers("holder")
    holder.holds_slot()
    waiters = {s: drivers(s.name, "--no-pre-wait") for s in (signal.SIGINT, signal.SIGTERM)}
    for waiter in waiters.values():
        waiter.wait_until(lambda w=waiter: POOL in w.output() and "waiting" in w.output(),
                          "the watcher's waiting line")
    for signum, waiter in waiters.items():
        waiter.process.send_signal(signum)
    for signum, waiter in waiters.items():
        assert waiter.process.wait(10) == 128 + signum  # the watcher looks every 2 s
        assert not waiter.claimed.exists()
        run = _only_run(instance, waiter)
        assert run.status == DagsterRunStatus.CANCELED
    assert {s.run_id for s in _pool(instance).pending_steps} == {_only_run(instance, holder).run_id}
    assert holder.finish() == 0


def test_sigterm_during_a_step_exits_143_and_ctrl_c_130(instance, drivers):
    """Dagster maps SIGTERM onto its SIGINT handler while a step runs; the exit code still says
    which signal came, as documented."""
    instance.event_log_storage.set_concurrency_slots(POOL, 2)
    stepping = {signal.SIGINT: drivers("sigint"), signal.SIGTERM: drivers("sigterm")}
    for driver in stepping.values():
        driver.holds_slot()
    for signum, driver in stepping.items():
        driver.process.send_signal(signum)
    for signum, driver in stepping.items():
        assert driver.process.wait(DEADLINE_S) == 128 + signum, driver.output()
        said = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}[signum]
        assert said in driver.output().splitlines()
    assert _pool(instance).claimed_slots == []


def test_process_tags_tell_a_live_process_from_a_dead_or_reused_one():
    tags = runs.process_tags()
    assert runs.process_alive(tags) is True
    assert runs.process_alive({}) is None  # not launched by the driver
    assert runs.process_alive({**tags, runs.HOST_TAG: tags[runs.HOST_TAG] + "-elsewhere"}) is None
    if tags[runs.PID_START_TAG]:  # /proc: a reused pid has another start time
        reused = {**tags, runs.PID_START_TAG: str(int(tags[runs.PID_START_TAG]) + 1)}
        assert runs.process_alive(reused) is False

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        child_tags = runs.process_tags(child.pid)
        assert runs.process_alive(child_tags) is True
        child.kill()
        deadline = time.monotonic() + DEADLINE_S
        while runs.process_alive(child_tags):  # killed, not reaped yet: a zombie is dead
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()
    assert runs.process_alive(child_tags) is False


@pytest.mark.parametrize(
    "argv, bad",
    [
        (["--cohorts", "/../../../../TMP_X"], "/../../../../TMP_X"),
        (["--cohorts", ".."], ".."),
        (["--train", "../x"], "../x"),
        (["--cohorts", "BRCA", "KIRC", "--train", "BRCA", "a/b"], "a/b"),
        (["--cohorts", ""], ""),
    ],
)
def test_cli_refuses_a_bad_cohort_name_before_writing_or_registering(
    argv, bad, home, tmp_path, monkeypatch, capsys
):
    from dmg_assets import run
    from dmg_assets.partitions import cohort_partitions

    project = tmp_path / "outside" / "project"  # "/../../../../TMP_X" would land in outside/
    project.mkdir(parents=True)
    monkeypatch.chdir(project)
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    def must_not_write(*args, **kwargs):
        raise AssertionError(f"wrote the synthetic hub: {args}")

    monkeypatch.setattr(run, "write_synthetic_hub", must_not_write)
    with pytest.raises(SystemExit) as exited:
        run.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert repr(bad.upper()) in one_line(err) and "cohort" in err
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == []
    instance = DagsterInstance.from_config(str(home))
    assert instance.get_dynamic_partitions(cohort_partitions.name) == []


def test_sensor_adds_valid_defaults_and_drops_names_that_break_the_rule():
    from dmg_assets.partitions import DEFAULT_COHORTS, cohort_partitions
    from dmg_assets.sensors import register_default_cohorts

    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cohort_partitions.name, [*DEFAULT_COHORTS, "..", "KIRC"])
    result = register_default_cohorts(build_sensor_context(instance=instance))
    (request,) = result.dynamic_partitions_requests
    assert list(request.partition_keys) == [".."]
    assert type(request).__name__ == "DeleteDynamicPartitionsRequest"


def test_only_training_runs_wait_for_the_pool():
    from dagster import AssetKey

    from dmg_assets.definitions import defs

    everything = defs.resolve_implicit_global_asset_job_def()
    assert runs.job_pools(defs.resolve_job_def("evaluation_job")) == {POOL}
    assert runs.job_pools(defs.resolve_job_def("data_layer_job")) == set()
    assert runs.job_pools(everything, [AssetKey("model_summary")]) == set()
    assert runs.job_pools(everything) == {POOL}


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_the_progress_bar_counts_work_not_steps():
    """Issue 23, case 7: the ETA counted steps alike ("3 min left" before 10 min of training):
    a chromosome of 600 genes weighs 200 of 3 genes, training a gene's CNN outweighs scoring it
    with the default baselines, and after the data layer the plan is the genes actually there."""
    from dmg_assets import cli
    from dmg_assets.run import (
        _cohort_work,
        _evaluation_work,
        _planned_work,
        _Progress,
        step_work,
    )

    args = cli.run_parser().parse_args(["--cohorts", "BRCA", "--experiments", "tissue"])
    assert args.models == ["cnn", "enet", "mean", "rf"]
    baselines = len(args.models) - 1  # the CNN's share is "training", the others' "evaluating"
    assert step_work("training", 600) == 200 * step_work("training", 3)
    assert step_work("training", 1) > step_work("evaluating", 1, baselines)
    per_gene = step_work("training") + step_work("evaluating", 1, baselines)
    assert _evaluation_work(args, 5) == pytest.approx(5 * per_gene)
    only_cnn = cli.run_parser().parse_args(["--models", "cnn"])
    assert _evaluation_work(only_cnn, 5) == pytest.approx(step_work("training", 5))
    no_cnn = cli.run_parser().parse_args(["--models", "enet", "mean"])
    assert _evaluation_work(no_cnn, 5) == pytest.approx(step_work("evaluating", 5, 2))
    work = {"chr1": 600, "chr2": 3}
    assert _cohort_work(args, work, others=0) == pytest.approx(
        603 * (per_gene + step_work("experiment", 1, len(args.models)))
        + step_work("summaries") + step_work("report"))
    progress = _Progress(_planned_work(args, ["BRCA"], ["BRCA"]), "WARNING")
    try:
        progress.bar.update(step_work("data layer"))
        progress.plan(_cohort_work(args, work, others=0))
        assert progress.bar.total == pytest.approx(
            step_work("data layer") + _cohort_work(args, work, others=0))
    finally:
        progress.close()
