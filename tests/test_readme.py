"""README examples run: python blocks against a small trained project laid out as after
``make run``, sql blocks and ``warehouse.query`` commands through its DuckDB file, the Launchpad
YAML as ``model_evaluation``'s run config; dependencies pinned to the majors they were tested with.

The tiny test cohort has other genes than the default synthetic one, so a gene the README names
must be a gene of the default BRCA cohort and is swapped for a trained gene of the tiny one.
"""

import re
import shlex
import shutil
import tomllib
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import yaml
from dagster import DagsterInstance, MultiPartitionKey, materialize
from packaging.requirements import Requirement

from dmg_assets import cli
from dmg_assets.evaluation import (
    model_comparison,
    model_evaluation,
    model_summary,
    r2_by_cpg_count,
)
from dmg_assets.experiments import generalisation, tissue_experiment
from dmg_assets.partitions import cohort_partitions
from dmg_ml.synthetic.layout import build_layout
from dmg_ml.synthetic.writer import SMALL
from dmg_resources.checkpoints import CheckpointStore
from dmg_resources.device import TorchDevice
from dmg_resources.store import RETIRED_TABLES
from dmg_resources.warehouse import Warehouse
from warehouse import query

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
FAST = {"max_epochs": 25, "patience": 5}
OP = "model_evaluation"
GENE_LITERAL = re.compile(r"""\bgene = (['"])([^'"]+)\1""")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL)


def _sql_statements() -> list[tuple[str, str]]:
    """(first comment, statement) of every statement of every sql block."""
    statements = []
    for block in _blocks("sql"):
        for chunk in block.split(";"):
            lines = [line for line in chunk.strip().splitlines() if line.strip()]
            sql = "\n".join(line for line in lines if not line.lstrip().startswith("--"))
            if sql:
                title = next((line.lstrip("- ") for line in lines if line.startswith("--")), sql)
                statements.append((title[:60], sql))
    return statements


def _query_commands() -> list[list[str]]:
    """Arguments of every ``python -m warehouse.query`` line of the bash blocks."""
    commands = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[1:3] == ["-m", "warehouse.query"]:
                commands.append(words[3:])
    return commands


def _genes_named(text: str) -> set[str]:
    return {match.group(2) for match in GENE_LITERAL.finditer(text)}


@pytest.fixture(scope="module")
def default_genes() -> set[str]:
    """Genes of the default synthetic hub that ``make run`` writes and trains (SMALL, seed 0)."""
    genes = build_layout(SMALL, 0).genes
    return set(genes.loc[genes["category"] == "modelled", "gene"])


def _resources(data_dir: Path) -> dict:
    return {
        "warehouse": Warehouse(
            root=str(data_dir / "warehouse"), database=str(data_dir / "dmg.duckdb")
        ),
        "device": TorchDevice(device="cpu"),
        "checkpoints": CheckpointStore(root=str(data_dir / "checkpoints")),
    }


def _readme_run_config() -> dict:
    (block,) = _blocks("yaml")
    run_config = yaml.safe_load(block)
    run_config["ops"][OP]["config"].update(FAST)
    return run_config


@pytest.fixture(scope="module")
def project(built, tmp_path_factory, one_thread) -> Path:
    """A project root holding ``data/`` as ``make run`` leaves it: the tiny BRCA's chr1 evaluated
    with the README's Launchpad config (its models, fewer epochs) and its CNN as the authors'
    script (published, last weights), the cohort's model summary, comparison and CpG-count table,
    and the tissue and generalisation experiments (cheap models)."""
    root = tmp_path_factory.mktemp("project")
    data_dir = root / "data"
    shutil.copytree(built, data_dir)
    resources = _resources(data_dir)
    resources["warehouse"].publish_views()
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cohort_partitions.name, ["BRCA"])
    chr1 = MultiPartitionKey({"cohort": "BRCA", "chromosome": "chr1"})
    materialize([model_evaluation], partition_key=chr1, resources=resources, instance=instance,
                run_config=_readme_run_config())
    published = _readme_run_config()
    published["ops"][OP]["config"].update(
        protocol="published", restore_best_weights=False, seed=42, models=["cnn"])
    materialize([model_evaluation], partition_key=chr1, resources=resources, instance=instance,
                run_config=published)
    materialize([model_summary, model_comparison, r2_by_cpg_count], partition_key="BRCA",
                resources=resources, instance=instance)
    window = _readme_run_config()["ops"][OP]["config"]["window_bp"]
    experiments = {"tissue_experiment": {"window_bp": window, "models": ["mean"]},
                   "generalisation": {"window_bp": window, "models": ["cnn", "mean"]}}
    materialize([tissue_experiment, generalisation], partition_key="BRCA", resources=resources,
                instance=instance,
                run_config={"ops": {op: {"config": c} for op, c in experiments.items()}})
    return root


@pytest.fixture(scope="module")
def tiny_gene(project) -> str:
    """A trained gene of the tiny cohort, standing in for the default cohort's genes."""
    warehouse = _resources(project / "data")["warehouse"]
    return warehouse.query(
        "SELECT min(gene) AS gene FROM model_registry WHERE model = 'cnn'")["gene"].item()


def _for_tiny(text: str, default_genes: set[str], tiny_gene: str) -> str:
    def swap(match: re.Match) -> str:
        quote, gene = match.groups()
        return f"gene = {quote}{tiny_gene if gene in default_genes else gene}{quote}"

    return GENE_LITERAL.sub(swap, text)


def _dmg_commands() -> list[list[str]]:
    """The ``dmg ...`` lines of the README's console blocks, without ``dmg``."""
    return [words[1:] for block in _blocks("console") for line in block.splitlines()
            if (words := shlex.split(line, comments=True))[:1] == ["dmg"]]


def test_the_readme_dmg_commands_parse_and_name_genes_of_the_default_hub(default_genes) -> None:
    """Issue 23, case 1: the first example named TP53 and ESR1, which the default hub lacks."""
    parsers = {"run": cli.run_parser, "predict": cli.predict_parser, "report": cli.report_parser}
    commands = _dmg_commands()
    assert [command for command, *_ in commands] == ["run", "predict", "query", "report"]
    for command, *argv in commands:
        if command in parsers:
            genes = getattr(parsers[command]().parse_args(argv), "genes", None) or []
            assert set(genes) <= default_genes, (command, genes)


def test_the_readme_has_the_examples_this_module_runs() -> None:
    assert len(_blocks("python")) >= 1 and len(_sql_statements()) >= 6
    assert len(_query_commands()) == 2 and len(_blocks("yaml")) == 1


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_readme_python_block_runs(project, default_genes, tiny_gene, monkeypatch, index) -> None:
    code = _blocks("python")[index]
    named = _genes_named(code)
    assert named <= default_genes, f"not genes of the default cohort: {named - default_genes}"
    monkeypatch.chdir(project)
    namespace: dict = {}
    exec(compile(_for_tiny(code, default_genes, tiny_gene), f"README python {index}", "exec"),
         namespace)
    if "predictions" in namespace:
        samples = _resources(project / "data")["warehouse"].query(
            "SELECT count(DISTINCT sample) AS n FROM m_values WHERE cohort = 'BRCA'"
        )["n"].item()
        assert namespace["predictions"].shape == (samples,)
        assert np.isfinite(namespace["predictions"]).all()


@pytest.mark.parametrize(("title", "sql"), _sql_statements(), ids=[t for t, _ in _sql_statements()])
def test_readme_sql_answers(project, default_genes, tiny_gene, title, sql) -> None:
    with query.connect(str(project / "data" / "dmg.duckdb")) as db:
        rows = db.execute(_for_tiny(sql, default_genes, tiny_gene)).fetchall()
    assert not _genes_named(sql) - default_genes, "README names a gene the default cohort lacks"
    assert rows, f"README query {title!r} returned no rows"


def test_the_readme_runs_every_readme_model_and_its_last_epoch_cnn(project) -> None:
    """The per-model query answers for each model of the Launchpad YAML, and the published audit
    pairs every trained gene's last-epoch CNN with its honest CNN."""
    (per_model,) = [sql for title, sql in _sql_statements() if "per model, straight" in title]
    (audit,) = [sql for title, sql in _sql_statements() if "published audit" in title]
    models = _readme_run_config()["ops"][OP]["config"]["models"]
    with query.connect(str(project / "data" / "dmg.duckdb")) as db:
        rows = db.execute(per_model).fetchall()
        audited = db.execute(audit).fetchall()
        genes = db.execute("SELECT count(DISTINCT gene) FROM gene_metrics").fetchone()[0]
    assert sorted(model for model, *_ in rows) == sorted(models)
    assert all(n == genes for _, n, *_ in rows)
    assert len(audited) == genes
    assert all(np.isfinite(value) for _, *values in audited for value in values)


def test_the_readme_names_no_retired_table() -> None:
    """The tables of the layout before ``model_evaluation`` scored the CNN are gone; the README
    names them only where it says a warehouse holding them is refused."""
    examples = "\n".join(_blocks("sql") + _blocks("python") + _blocks("yaml") + _blocks("bash"))
    assert not {t for t in RETIRED_TABLES if re.search(rf"\b{t}\b", examples)}
    named = {t for t in RETIRED_TABLES if re.search(rf"\b{t}\b", README)}
    assert named <= {"cnn_gene_metrics", "cnn_checkpoints", "model_gene_metrics"}
    assert not re.search(r"\bcnn_(models|summary)\b|dmg_ml\.evaluation\.cv\b", README)


@pytest.mark.parametrize("args", _query_commands(), ids=lambda args: args[0][:40])
def test_readme_query_commands_answer(project, monkeypatch, capsys, args) -> None:
    monkeypatch.chdir(project)
    args = [str(ROOT / a) if a.endswith(".sql") else a for a in args]
    assert query.main(args) == 0
    assert "Empty DataFrame" not in capsys.readouterr().out


def test_every_dependency_is_pinned_to_the_installed_major() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"] + project["optional-dependencies"]["dev"]:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # not installed on this platform
        bounds = {spec.operator for spec in requirement.specifier}
        assert "<" in bounds or "==" in bounds, f"{line}: no upper bound"
        installed = version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), (line, installed)
