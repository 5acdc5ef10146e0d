"""The runs ``python -m dmg_assets.run`` launches: tagged with their process, released when that
process is gone, and a pool slot waited for aloud and interruptibly.

The driver runs each job with ``execute_in_process``, inside its own process, so no run launcher
watches the run: a driver killed with ``kill -9`` (or by the out-of-memory killer) leaves its run
STARTED and its slot in the ``torch_training`` pool claimed, and every later training run waits for
that slot forever. Hence:

* every run the driver launches is tagged with the pid, the pid's start time and the host of the
  process that runs it (:func:`process_tags`), so a reused pid is not taken for the run's process;
* :func:`release_stale_runs`, called when the driver starts and while it waits, marks the runs whose
  process is gone as failed and frees their pool slots, and frees the slots still held by runs
  that are over or deleted;
* before a job that uses a pool, :func:`wait_for_pool` waits for a free slot, saying at INFO level
  which runs hold the pool, and stops at once on Ctrl-C or SIGTERM (:func:`until_interrupted`):
  exit code 130 after Ctrl-C, 143 after SIGTERM, whether a step was running or not.

A failure is said the way a person reads it (:func:`in_one_line`): the project's own message in
one line on stderr, exit 2 when it refuses what was asked (a ``ValueError`` or ``LookupError``
naming the file, gene, sample or value), 1 when the work failed otherwise; the traceback only with
``--verbose``. Dagster's console shows no stack trace of a failed step (:data:`QUIET_CONSOLE`).

Runs without these tags, launched from the UI or with ``dagster job launch``, are left to Dagster:
its run monitoring (the daemon, ``run_monitoring`` in ``dagster.yaml``) and the UI's "Terminate"
and "Free concurrency slots". Only a process on this host can be checked: runs tagged with another
host are left alone too.

It stays one module (over 400 lines): the tags a run is launched with, the check that reads them
back, the pool wait and the signal handling are one life cycle of a terminal run.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import (
    AssetKey,
    DagsterExecutionInterruptedError,
    DagsterInstance,
    DagsterRunStatus,
    JobDefinition,
    LoggerDefinition,
    RunsFilter,
    colored_console_logger,
)
from dagster._core.errors import DagsterUserCodeExecutionError
from dagster._core.log_manager import get_log_record_metadata, has_log_record_metadata
from dagster._core.utils import make_new_run_id
from dagster._utils.interrupts import check_captured_interrupt  # a signal Dagster holds back

logger = logging.getLogger(__name__)

PID_TAG = "dmg/pid"
PID_START_TAG = "dmg/pid_start"
HOST_TAG = "dmg/host"
#: A run in one of these states still needs its process.
UNFINISHED = [
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
POLL_S = 2.0
REMIND_S = 30.0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C."""


class RunFailed(Exception):
    """A run of ``what`` (``"data layer BRCA"``) failed with ``error``, the step's own exception."""

    def __init__(self, what: str, error: BaseException) -> None:
        super().__init__(f"{what}: {_said(error)}")
        self.what, self.error = what, error


def user_error(error: BaseException) -> BaseException:
    """The exception the project's code raised, out of Dagster's wrappers around it."""
    while True:
        if isinstance(error, RunFailed):
            inner = error.error
        elif isinstance(error, DagsterUserCodeExecutionError):
            inner = error.user_exception
        else:
            return error
        if inner is None:
            return error
        error = inner


def refused(error: BaseException) -> bool:
    """Whether ``error`` refuses what was asked (a file, gene, sample or value it names) rather
    than says the work failed: the project raises ``ValueError`` or ``LookupError`` for those."""
    return isinstance(user_error(error), ValueError | LookupError)


def _said(error: BaseException) -> str:
    """``error``'s message on one line; for an exception that is not a refusal, its class first."""
    error = user_error(error)
    text = " ".join(str(error).split())
    if isinstance(error, ValueError | LookupError) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def in_one_line(work: Callable[[], int], verbose: bool = False) -> int:
    """``work()``, or the one line that says why it failed, on stderr: exit 2 for a refusal, 1
    for another failure. ``verbose`` prints the traceback first."""
    try:
        return work()
    except Exception as error:
        if verbose:
            traceback.print_exc()
        hint = "" if verbose or refused(error) else " (--verbose shows the traceback)"
        message = str(error) if isinstance(error, RunFailed) else _said(error)
        print(f"error: {message}{hint}", file=sys.stderr, flush=True)
        return 2 if refused(error) else 1


def _not_a_failure(record: logging.LogRecord) -> bool:
    """False for the step and run failure events, whose text is a stack trace."""
    if not has_log_record_metadata(record):
        return True
    event = get_log_record_metadata(record).get("dagster_event")
    return event is None or not (event.is_step_failure or event.is_run_failure)


def _quiet_console(init_context) -> logging.Logger:
    console = colored_console_logger.logger_fn(init_context)
    console.addFilter(_not_a_failure)
    return console


#: Dagster's console logger (same config: ``log_level``, ``name``) without the failure events:
#: the command says why a step failed in one line (:func:`in_one_line`).
QUIET_CONSOLE = LoggerDefinition(
    _quiet_console, config_schema=colored_console_logger.config_schema,
    description="Dagster's console logger without the stack traces of failed steps.",
)


def process_tags(pid: int | None = None) -> dict[str, str]:
    """Tags naming process ``pid`` (this one by default) on this host."""
    pid = os.getpid() if pid is None else pid
    start = _start_time(pid) or ""
    return {PID_TAG: str(pid), PID_START_TAG: start, HOST_TAG: socket.gethostname()}


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time, clock ticks after boot); None for no live process.

    A killed process its parent has not reaped yet (a zombie) counts as gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, *fields = stat[stat.rindex(")") + 2 :].split()  # state is field 3
    return None if state in ("Z", "X") else fields[18]


def process_alive(tags: dict[str, str]) -> bool | None:
    """Whether the process named by ``tags`` still runs; None when this host cannot tell."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return None
    pid = int(tags[PID_TAG])
    if Path("/proc/self/stat").exists():
        start = _start_time(pid)
        return start is not None and start == (tags.get(PID_START_TAG) or start)
    try:  # no /proc (macOS): the pid alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release_stale_runs(instance: DagsterInstance) -> list[str]:
    """Mark the driver's runs whose process is gone as failed and free their pool slots.

    Also frees the slots still held by runs that are over or were deleted. Returns the ids of the
    runs marked failed; logs one INFO line per run released.
    """
    released = []
    records = instance.get_run_records(
        RunsFilter(statuses=UNFINISHED, tags={HOST_TAG: socket.gethostname()})
    )
    for record in records:
        run = record.dagster_run
        if process_alive(run.tags) is not False:
            continue
        why = (f"the process that ran it (pid {run.tags[PID_TAG]} on {run.tags[HOST_TAG]}) is "
               "gone: it was killed (kill -9, out of memory) or crashed")
        if run.status == DagsterRunStatus.CANCELING:
            marked = "canceled"
            instance.report_run_canceled(run, f"Marked canceled by dmg_assets.run: {why}.")
        else:
            marked = "failed"
            instance.report_run_failed(run, f"Marked failed by dmg_assets.run: {why}.")
        _free_slots(instance, run.run_id)
        logger.info(f"released run {run.run_id} ({run.job_name}, {run.status.value}): {why}; "
                    f"marked {marked}, its pool slots freed")
        released.append(run.run_id)
    if instance.event_log_storage.supports_global_concurrency_limits:
        for run_id in instance.event_log_storage.get_concurrency_run_ids():
            run = instance.get_run_by_id(run_id)
            if run is None or run.is_finished:
                _free_slots(instance, run_id)
                state = "deleted" if run is None else run.status.value
                logger.info(f"freed the pool slots still held by run {run_id} ({state})")
    return released


def _free_slots(instance: DagsterInstance, run_id: str) -> None:
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def pool_holders(instance: DagsterInstance, pool: str) -> list[str] | None:
    """The runs holding every slot of ``pool``; None when a slot is free or the pool unlimited."""
    if not instance.event_log_storage.supports_global_concurrency_limits:
        return None
    info = instance.event_log_storage.get_concurrency_info(pool)
    if info.slot_count == 0 and info.limit is None:
        return None
    # A step holds a slot from its assignment (before it claims it) until it frees it.
    taken = {(s.run_id, s.step_key) for s in info.pending_steps if s.assigned_timestamp}
    taken |= {(s.run_id, s.step_key) for s in info.claimed_slots}
    if len(taken) < info.slot_count:
        return None
    return sorted({run_id for run_id, _ in taken})


def _describe(instance: DagsterInstance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    if run is None:
        return f"run {run_id} (deleted)"
    if PID_TAG not in run.tags:
        return (f"run {run_id} ({run.job_name}, {run.status.value}, not launched by this driver: "
                "terminate it or free its slot in the UI if it is dead)")
    return (f"run {run_id} ({run.job_name}, {run.status.value}, pid {run.tags[PID_TAG]} on "
            f"{run.tags.get(HOST_TAG)})")


def wait_for_pool(instance: DagsterInstance, pool: str, poll_s: float = POLL_S,
                  remind_s: float = REMIND_S) -> None:
    """Return once ``pool`` has a free slot, saying which runs hold it while it has none.

    Releases stale runs at every poll, so a holder that dies meanwhile frees its slot.
    """
    said_at = None
    while True:
        release_stale_runs(instance)
        holders = pool_holders(instance, pool)
        if holders is None:
            if said_at is not None:
                logger.info(f"pool {pool} has a free slot: going on")
            return
        if said_at is None or time.monotonic() - said_at >= remind_s:
            info = instance.event_log_storage.get_concurrency_info(pool)
            logger.info(
                f"{'still waiting' if said_at else 'waiting'} for a slot in pool {pool} "
                f"({info.slot_count} slot(s)), held by "
                + "; ".join(_describe(instance, run_id) for run_id in holders)
            )
            said_at = time.monotonic()
        time.sleep(poll_s)


def job_pools(job: JobDefinition, asset_selection: list[AssetKey] | None = None) -> set[str]:
    """The concurrency pools of the ops a run of ``job`` (limited to ``asset_selection``) runs."""
    if asset_selection:
        job = job.get_subset(asset_selection=set(asset_selection))
    return {op.pool for op in job.graph.iterate_op_defs() if op.pool}


def execute(job: JobDefinition, instance: DagsterInstance, **kwargs):
    """``job.execute_in_process`` on ``instance``, tagged with this process, after waiting for its
    pools; Ctrl-C and SIGTERM stop it even while Dagster holds a step back for a pool slot."""
    pools = job_pools(job, kwargs.get("asset_selection"))
    for pool in sorted(pools):
        wait_for_pool(instance, pool)
    run_id = make_new_run_id()
    tags = {**kwargs.pop("tags", {}), **process_tags()}
    try:
        with _watching(instance, sorted(pools), run_id):
            return job.execute_in_process(instance=instance, run_id=run_id, tags=tags, **kwargs)
    finally:
        _sigterm_as_interrupt()  # Dagster leaves SIGTERM mapped to SIGINT's handler


@contextmanager
def _watching(instance: DagsterInstance, pools: list[str], run_id: str,
              poll_s: float = POLL_S) -> Iterator[None]:
    """While Dagster holds the run's step back for a slot (another launcher took the slot between
    :func:`wait_for_pool` and the launch), say so, release stale holders and honour Ctrl-C and
    SIGTERM: Dagster captures both during ``execute_in_process`` and does not look at them until the
    step has its slot. The run, which has not started any step, is marked canceled, its place in the
    queue freed, and the process ends with 130 (Ctrl-C) or 143 (SIGTERM).
    """
    if not pools or not instance.event_log_storage.supports_global_concurrency_limits:
        yield
        return
    stop = threading.Event()

    def queued() -> list[str]:
        infos = instance.event_log_storage.get_concurrency_infos(pools)
        return [pool for pool, info in infos.items() if any(
            s.run_id == run_id and not s.assigned_timestamp for s in info.pending_steps)]

    def watch() -> None:
        said_at = None
        while not stop.wait(poll_s):
            try:
                said_at = look(said_at)
            except Exception:  # a busy database now and then: look again at the next poll
                logger.debug("pool watch failed", exc_info=True)

    def look(said_at: float | None) -> float | None:
        waiting_for = queued()
        if not waiting_for:
            return said_at
        if check_captured_interrupt():
            run = instance.get_run_by_id(run_id)
            if run is not None and not run.is_finished:
                instance.report_run_canceled(run, "Interrupted while waiting for a pool slot.")
            _free_slots(instance, run_id)
            signum = received_signal()
            logger.info(f"{_STOPPED[signum]} while run {run_id} waited for pool {waiting_for[0]}: "
                        "run marked canceled, stopping")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)
        release_stale_runs(instance)
        if said_at is None or time.monotonic() - said_at >= REMIND_S:
            holders = pool_holders(instance, waiting_for[0]) or []
            logger.info(f"run {run_id} is waiting for a slot in pool {waiting_for[0]}, held by "
                        + "; ".join(_describe(instance, r) for r in holders))
            said_at = time.monotonic()
        return said_at

    watcher = threading.Thread(target=watch, name="dmg-pool-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _sigterm_as_interrupt() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


#: What the command says when a signal stops it.
_STOPPED = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
#: The signals that came since :func:`_noting_signals` began, read off the interpreter's wakeup
#: pipe: Dagster maps SIGTERM onto its SIGINT handler while a run executes, so the exception a
#: signal raises no longer says which one it was, but the interpreter writes every signal's
#: number to that pipe before any Python handler runs.
_received: set[int] = set()
_received_lock = threading.Lock()
_wakeup_read: int | None = None


def received_signal() -> int:
    """SIGTERM if it came (it asks the process to end: it wins over a Ctrl-C), else SIGINT."""
    with _received_lock:
        while _wakeup_read is not None:
            try:
                data = os.read(_wakeup_read, 512)
            except OSError:  # BlockingIOError: nothing more to read
                break
            if not data:
                break
            _received.update(data)
        return signal.SIGTERM if signal.SIGTERM in _received else signal.SIGINT


@contextmanager
def _noting_signals() -> Iterator[None]:
    """Note the number of every signal that comes (see ``_received``); main thread only."""
    global _wakeup_read
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    with _received_lock:
        _received.clear()
        _wakeup_read = read
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        with _received_lock:
            _wakeup_read = None
        os.close(read)
        os.close(write)


def until_interrupted(main: Callable[[], int]) -> int:
    """``main()``, with SIGTERM acting like Ctrl-C; 130 after Ctrl-C, 143 after SIGTERM, also
    when the signal came while Dagster ran a step (it raises the same error for both)."""
    before = signal.getsignal(signal.SIGTERM)
    _sigterm_as_interrupt()
    try:
        with _noting_signals():
            try:
                return main()
            except (KeyboardInterrupt, DagsterExecutionInterruptedError) as stop:
                signum = signal.SIGTERM if isinstance(stop, Terminated) else received_signal()
                print(_STOPPED[signum], file=sys.stderr, flush=True)
                return 128 + signum
    finally:
        if threading.current_thread() is threading.main_thread() and before is not None:
            signal.signal(signal.SIGTERM, before)


def log_to_terminal() -> None:
    """Show this package's INFO messages (released runs, waits for a pool) on stdout."""
    package = logging.getLogger("dmg_assets")
    if not package.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        package.addHandler(handler)
    package.setLevel(logging.INFO)
