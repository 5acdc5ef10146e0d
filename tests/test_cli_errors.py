"""What ``dmg run`` and ``dmg report`` say when they refuse: the project's own message, in one
line, exit 2 (a traceback only with ``--verbose``), and arguments checked before any work; and the
Dagster instance they record their runs in.

Every test runs in an empty project directory (the current one) without ``DAGSTER_HOME``; those
that need a source copy the tiny synthetic hub to where the default source reads it.
"""

import gzip
import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance

from dmg_assets import cli, commands, run
from dmg_assets.definitions import DATA_DIR, SOURCE_URL, defs
from dmg_ml.data.xena import EXPRESSION_PATH, GROUND_TRUTH_PATH

ROOT = Path(__file__).resolve().parents[1]
POOL = "torch_training"


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return tmp_path


@pytest.fixture
def no_hub_writes(monkeypatch):
    def must_not_write(*args, **kwargs):
        raise AssertionError(f"wrote the synthetic hub: {args}")

    monkeypatch.setattr(run, "write_synthetic_hub", must_not_write)


@pytest.fixture
def hub(project, tiny_hub) -> Path:
    """The tiny synthetic hub where the default source reads it."""
    return Path(shutil.copytree(tiny_hub, project / SOURCE_URL))


def dmg(*argv: str) -> int:
    """``dmg ARGV``'s exit code, whether it returned it or exited with it."""
    try:
        return cli.main(list(argv))
    except SystemExit as exit_:
        return exit_.code


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def written(project: Path) -> list[Path]:
    """The files under ``project`` but those of the source copy."""
    source = (project / SOURCE_URL).resolve()
    return [p for p in project.rglob("*")
            if p.is_file() and source not in p.resolve().parents]


@pytest.mark.parametrize("argv, says", [
    (["run", "--max-epochs", "0"], "--max-epochs"),
    (["run", "--patience", "-1"], "--patience"),
    (["run", "--window-bp", "0"], "--window-bp"),
    (["run", "--models", "svm"], "svm"),
    (["run", "--cohorts", "A" * 300], "300 characters"),
    (["run", "--train", "B" * 300], "300 characters"),
    (["report", "A" * 300], "300 characters"),
])
def test_bad_arguments_are_refused_in_one_line_before_any_work(
    argv, says, project, no_hub_writes, capsys
):
    assert dmg(*argv) == 2
    assert says in one_line(capsys.readouterr().err)
    assert written(project) == []  # no hub, no warehouse, no Dagster instance


@pytest.mark.parametrize("command", [["run", "--cohorts", "BRCA"], ["report", "BRCA"]])
def test_a_dagster_home_that_does_not_exist_is_an_error_not_a_temporary_instance(
    command, project, no_hub_writes, monkeypatch, capsys
):
    missing = project / "no" / "such" / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(missing))
    assert dmg(*command) == 2
    line = one_line(capsys.readouterr().err)
    assert str(missing) in line and "not set" not in line
    assert written(project) == [] and not missing.exists()


def test_without_dagster_home_the_runs_go_to_the_projects_instance(project):
    """The instance the Makefile gives ``make run`` (.dagster_home beside data/, no telemetry),
    created when missing, its training pool limited as the driver limits it."""
    instance = commands.project_instance()
    home = project / ".dagster_home"
    assert Path(instance.root_directory).resolve() == home.resolve()
    assert not instance.is_ephemeral
    assert (home / "dagster.yaml").read_text() == commands.INSTANCE_YAML
    assert instance.event_log_storage.get_concurrency_info(POOL).slot_count == max(
        1, defs.resources["device"].gpu_count())
    again = commands.project_instance()
    assert Path(again.root_directory).resolve() == home.resolve()
    makefile = (ROOT / "Makefile").read_text()  # the same instance as make run's
    assert "export DAGSTER_HOME := $(CURDIR)/" + commands.INSTANCE_DIR in makefile
    assert "printf '" + commands.INSTANCE_YAML.replace("\n", "\\n") + "' > $@" in makefile
    assert Path(DATA_DIR).resolve().parent == project.resolve()


def test_genes_the_synthetic_hub_lacks_are_refused_before_the_data_layer(hub, project, capsys):
    assert dmg("run", "--cohorts", "BRCA", "--genes", "NOTAGENE", "--experiments") == 2
    line = one_line(capsys.readouterr().err)
    assert "NOTAGENE" in line and "BRCA" in line
    assert not (project / DATA_DIR / "warehouse").exists()


def test_genes_a_real_hub_lacks_are_refused_in_one_line_after_its_data_layer(
    hub, project, capsys
):
    shutil.rmtree(hub / Path(GROUND_TRUTH_PATH).parts[0])  # a hub that does not list its genes
    assert dmg("run", "--cohorts", "BRCA", "--genes", "NOTAGENE", "--experiments") == 2
    err = capsys.readouterr().err
    assert "NOTAGENE" in one_line(err) and "Traceback" not in err


def _break_expression(hub: Path) -> None:
    """BRCA's expression matrix a valid gzip whose header names no sample."""
    with gzip.open(hub / EXPRESSION_PATH.format(cohort="BRCA"), "wt") as matrix:
        matrix.write("sample\nGENE1\n")


def test_a_data_layer_refusal_is_one_line_without_a_traceback(hub, project, capsys):
    _break_expression(hub)
    assert dmg("run", "--cohorts", "BRCA", "--train") == 2
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert line.startswith("error: data layer BRCA: ") and "HiSeqV2.gz" in line
    assert "header has no sample columns" in line
    assert "Traceback" not in captured.out + captured.err
    # the run is in the project's instance, where the UI of make dev shows it
    instance = DagsterInstance.from_config(str(project / commands.INSTANCE_DIR))
    assert [r.job_name for r in instance.get_runs()] == ["data_layer_job"]


def test_verbose_shows_the_traceback_then_the_same_line(hub, capsys):
    _break_expression(hub)
    assert dmg("run", "--cohorts", "BRCA", "--train", "--verbose") == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("error: data layer BRCA: ")
