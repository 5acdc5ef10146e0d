"""The make-run driver end to end on the tiny hub: genes routed across chromosomes, a line per
chromosome, the report, and no Dagster DEBUG flood on the terminal."""

import shutil

import pytest
from dagster import DagsterInstance

from dmg_assets import cli, commands, run
from dmg_assets.definitions import DATA_DIR, SOURCE_URL
from dmg_ml.data.xena import PROBE_MAP_PATH, methylation_path
from dmg_ml.synthetic.writer import write_synthetic_hub
from dmg_resources.warehouse import Warehouse
from tests.conftest import TINY


def test_the_driver_routes_genes_to_their_chromosomes_and_says_where_results_are(
    tiny_hub, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    # An in-memory instance keeps its 15 runs fast (the project's instance, on disk, is
    # test_cli_errors.py's); every command takes it from commands.project_instance
    monkeypatch.setattr(commands, "project_instance", DagsterInstance.ephemeral)
    shutil.copytree(tiny_hub, tmp_path / SOURCE_URL)
    code = run.main(["--cohorts", "BRCA", "COAD", "--genes", *_two_chromosomes(tiny_hub),
                     "--max-epochs", "5", "--patience", "2", "--models", "cnn", "mean",
                     "--experiments", "tissue"])
    out = capsys.readouterr().out
    assert code == 0, out
    warehouse = Warehouse(root=f"{DATA_DIR}/warehouse", database=f"{DATA_DIR}/dmg.duckdb")
    trained = warehouse.query(
        "SELECT chromosome, model, count(*) AS genes FROM gene_metrics GROUP BY ALL ORDER BY ALL")
    assert trained.values.tolist() == [["chr1", "cnn", 1], ["chr1", "mean", 1],
                                       ["chr2", "cnn", 1], ["chr2", "mean", 1]]
    assert "BRCA chr1 (1 genes), mean R²: cnn" in out and "BRCA chr2 (1 genes)" in out
    assert "chr3" not in out  # only the chromosomes of the named genes
    report = tmp_path / DATA_DIR / "reports" / "BRCA" / "evaluation_report.html"
    assert report.is_file() and f"Report: {report.resolve()}" in out
    assert " - DEBUG - " not in out and "STEP_START" not in out
    assert "below 0: worse than the training mean" in out
    # the same work through the dmg command: the report and a query
    report.unlink()
    assert cli.main(["report", "BRCA"]) == 0
    assert report.is_file() and f"Report: {report.resolve()}" in capsys.readouterr().out
    assert cli.main(["report", "KIRC"]) == 2
    assert "KIRC has no evaluation results to report" in capsys.readouterr().err
    shutil.rmtree(report.parents[1])  # reports/ cannot be written: said as it is
    report.parents[1].write_text("")
    assert cli.main(["report", "BRCA"]) == 1
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and "train it first" not in line
    assert str(report.parents[1]) in line
    assert cli.main(["query", "SELECT count(*) AS n FROM gene_metrics WHERE model = 'cnn'"]) == 0
    assert capsys.readouterr().out.split() == ["n", "2"]


def _two_chromosomes(hub) -> list[str]:
    """The first gene of chr1 and of chr2 in the tiny hub's ground truth."""
    import pandas as pd

    truth = pd.read_csv(hub / "ground_truth" / "BRCA" / "genes.tsv", sep="\t")
    modelled = truth[truth["category"] == "modelled"].sort_values("gene")
    return [modelled[modelled["chromosome"] == c]["gene"].iloc[0] for c in ("chr1", "chr2")]


def test_a_cohort_the_source_lacks_stops_the_driver_before_anything_runs(
    tiny_hub, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    shutil.copytree(tiny_hub, tmp_path / SOURCE_URL)
    assert run.main(["--cohorts", "BRCA", "KIRC", "--train"]) == 2
    err = capsys.readouterr().err
    assert "TCGA.KIRC.sampleMap" in err and "nothing was registered or run" in err
    assert not (tmp_path / DATA_DIR / "warehouse").exists()


def test_cohorts_are_added_only_to_a_synthetic_hub_of_the_default_spec(tmp_path):
    """A hub of another spec (or a mirror) is never written into: its probe map is shared."""
    hub = tmp_path / "tiny"
    write_synthetic_hub(hub, TINY, cohorts=("BRCA",), seed=7)
    probe_map = (hub / PROBE_MAP_PATH).read_bytes()
    run.ensure_synthetic_hub(str(hub), ["BRCA", "KIRC"])
    assert (hub / PROBE_MAP_PATH).read_bytes() == probe_map
    assert not (hub / methylation_path("KIRC")).exists()
    default = tmp_path / "default"
    run.ensure_synthetic_hub(str(default), ["BRCA"])
    run.ensure_synthetic_hub(str(default), ["BRCA", "KIRC"])
    assert (default / methylation_path("KIRC")).exists()


def test_dmg_help_names_every_subcommand_and_each_explains_its_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("run", "predict", "query", "report"))
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    assert "--experiments" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train"])
    assert exit_.value.code == 2
