"""Experiment assets through Dagster on the tiny synthetic hub: tissue, window, generalisation."""

import shutil

import pytest
from dagster import DagsterInstance, MultiPartitionKey, materialize

from dmg_assets.evaluation import POOL, model_evaluation
from dmg_assets.experiments import generalisation, tissue_experiment, window_experiment
from dmg_assets.partitions import cohort_partitions
from tests.test_training_assets import FAST, _resources

W = 100_000


def _instance() -> DagsterInstance:
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cohort_partitions.name, ["BRCA", "COAD"])
    return instance


def _run(asset, data_dir, raise_on_error=True, **config):
    return materialize(
        [asset], partition_key="BRCA", resources=_resources(data_dir), instance=_instance(),
        run_config={"ops": {asset.op.name: {"config": config}}}, raise_on_error=raise_on_error,
    )


@pytest.fixture(scope="module")
def genes(built):
    """Two genes on each of two chromosomes: a list that crosses partitions."""
    windows = _resources(built)["warehouse"].query(
        "SELECT DISTINCT chromosome, gene FROM gene_windows WHERE cohort = 'BRCA' "
        "AND chromosome IN ('chr1', 'chr2') ORDER BY ALL")
    assert len(windows) == 4
    return windows["gene"].tolist()


def test_tissue_experiment_scores_each_model_on_all_tumour_and_normal_samples(
    built, genes, tmp_path
):
    data_dir = tmp_path / "data"
    shutil.copytree(built, data_dir)
    _run(tissue_experiment, data_dir, genes=genes, window_bp=W)
    warehouse = _resources(data_dir)["warehouse"]
    rows = warehouse.query("SELECT tissue, model, count(*) AS genes, min(n_samples) AS lo, "
                           "max(n_samples) AS hi FROM tissue_experiment GROUP BY ALL ORDER BY ALL")
    assert rows.values.tolist() == [  # the tiny BRCA: 40 tumours and 8 normals of those patients
        ["all", "enet", 4, 48, 48], ["all", "mean", 4, 48, 48],
        ["normal", "enet", 4, 8, 8], ["normal", "mean", 4, 8, 8],
        ["tumour", "enet", 4, 40, 40], ["tumour", "mean", 4, 40, 40]]
    summary = warehouse.query("SELECT * FROM r2_by_tissue ORDER BY model, tissue")
    assert summary["genes"].tolist() == [4] * 6
    assert (summary.loc[summary["model"] == "mean", "mean_r2"] < 0.05).all()


def test_window_experiment_compares_windows_on_the_same_genes(built, genes, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(built, data_dir)
    _run(window_experiment, data_dir, genes=genes, windows=[1_000, W], models=["mean"])
    warehouse = _resources(data_dir)["warehouse"]
    table = warehouse.query("SELECT * FROM window_experiment ORDER BY window_bp, gene")
    assert table.groupby("window_bp")["gene"].apply(list).to_dict() == {
        1_000: sorted(genes), W: sorted(genes)}
    cpgs = table.pivot(index="gene", columns="window_bp", values="n_cpgs")
    assert (cpgs[1_000] <= cpgs[W]).all() and (cpgs[1_000] < cpgs[W]).any()
    assert warehouse.query("SELECT count(*) AS n FROM r2_by_window")["n"].item() == 2


def test_a_window_never_built_or_an_unknown_gene_fails_with_the_reason_and_writes_nothing(
    built, genes, tmp_path
):
    data_dir = tmp_path / "data"
    shutil.copytree(built, data_dir)
    with pytest.raises(Exception, match="not 5,000: add it to the windows of gene_windows"):
        _run(window_experiment, data_dir, windows=[5_000, W], models=["mean"])
    with pytest.raises(Exception, match=r"genes without a window in BRCA.*\['NOPE1'\]"):
        _run(tissue_experiment, data_dir, genes=[*genes, "NOPE1"], models=["mean"])
    assert not (data_dir / "warehouse" / "window_experiment").exists()
    assert not (data_dir / "warehouse" / "tissue_experiment").exists()


def test_generalisation_needs_the_cnns_it_applies(built, genes, tmp_path):
    with pytest.raises(Exception, match="materialise model_evaluation for BRCA first"):
        _run(generalisation, built, genes=genes, window_bp=W)


def test_generalisation_applies_brca_models_to_the_same_genes_in_coad(built, genes, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(built, data_dir)
    for chromosome in ("chr1", "chr2"):
        materialize([model_evaluation], resources=_resources(data_dir), instance=_instance(),
                    partition_key=MultiPartitionKey({"cohort": "BRCA", "chromosome": chromosome}),
                    run_config={"ops": {"model_evaluation": {"config": {**FAST, "window_bp": W}}}})
    _run(generalisation, data_dir, genes=genes, window_bp=W)
    warehouse = _resources(data_dir)["warehouse"]
    table = warehouse.query("SELECT * FROM generalisation ORDER BY model, gene")
    expressed = warehouse.query(
        "SELECT DISTINCT gene FROM expression WHERE cohort = 'COAD' ORDER BY 1")["gene"]
    scored = sorted(set(genes) & set(expressed))
    assert scored and table.groupby("model")["gene"].apply(list).to_dict() == {
        m: scored for m in ("cnn", "enet", "mean")}
    assert set(table["source_cohort"]) == {"BRCA"} and set(table["target_cohort"]) == {"COAD"}
    assert (table["n_samples"] == 24).all()  # the tiny COAD: 20 tumours + 4 normals
    assert table["coverage"].between(0.5, 1.0).all()
    same = table.pivot(index="gene", columns="model", values="n_cpgs")
    assert (same["cnn"] == same["enet"]).all()  # the CNN's saved probe order is the window's
    summary = warehouse.query("SELECT * FROM generalisation_summary ORDER BY model")
    assert summary["genes"].tolist() == [len(scored)] * 3


def test_the_experiments_that_can_train_the_cnn_wait_for_a_training_slot():
    """tissue and window can train the CNN (``models: [cnn]``), so they take a torch_training
    slot as model_evaluation does; generalisation only applies saved models."""
    assert tissue_experiment.op.pool == window_experiment.op.pool == POOL
    assert model_evaluation.op.pool == POOL == "torch_training"
    assert generalisation.op.pool is None
