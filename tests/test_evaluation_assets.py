"""Evaluation assets through Dagster: the CNN and the baselines on the same folds, rows in one
family of tables with a model column, comparison."""

import shutil

import pytest
from dagster import DagsterInstance, MultiPartitionKey, materialize

from dmg_assets.evaluation import (
    EvaluationConfig,
    model_comparison,
    model_evaluation,
    r2_by_cpg_count,
)
from dmg_assets.partitions import cohort_partitions
from dmg_ml import defaults
from tests.test_training_assets import FAST, _resources

W = 100_000
KEY = MultiPartitionKey({"cohort": "BRCA", "chromosome": "chr1"})


def _instance() -> DagsterInstance:
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cohort_partitions.name, ["BRCA"])
    return instance


def _evaluate(data_dir, **config):
    return materialize(
        [model_evaluation], partition_key=KEY, resources=_resources(data_dir),
        instance=_instance(),
        run_config={"ops": {"model_evaluation": {"config": {"window_bp": W, **config}}}},
    )


@pytest.fixture(scope="module")
def evaluated(built, tmp_path_factory):
    """BRCA chr1: the CNN, then enet and mean in a run of their own, then the comparison."""
    data_dir = tmp_path_factory.mktemp("evaluated") / "data"
    shutil.copytree(built, data_dir)
    _evaluate(data_dir, **FAST)
    _evaluate(data_dir, models=["enet", "mean"])
    materialize([model_comparison, r2_by_cpg_count], partition_key="BRCA",
                resources=_resources(data_dir), instance=_instance())
    return data_dir


def test_baselines_land_beside_the_cnn_on_the_same_folds(evaluated):
    warehouse = _resources(evaluated)["warehouse"]
    counts = warehouse.query(
        "SELECT model, count(*) AS genes FROM gene_metrics GROUP BY 1 ORDER BY 1"
    )
    genes = counts["genes"].iloc[0]
    assert counts.to_dict("list") == {"model": ["cnn", "enet", "mean"], "genes": [genes] * 3}
    cnn_beside_baselines = (
        "SELECT count(*) AS n FROM predictions m JOIN predictions c "
        "USING (cohort, chromosome, protocol, window_bp, tissue, gene, sample) "
        "WHERE c.model = 'cnn' AND m.model <> 'cnn'"
    )
    mismatched = warehouse.query(cnn_beside_baselines + " AND m.fold <> c.fold")
    assert mismatched["n"].item() == 0
    paired = warehouse.query(cnn_beside_baselines)
    assert paired["n"].item() == 2 * genes * 48
    folds = warehouse.query(
        "SELECT model, gene, count(*) AS n FROM fold_metrics GROUP BY ALL"
    )
    assert set(folds["model"]) == {"cnn", "enet", "mean"} and (folds["n"] == 5).all()
    mean = warehouse.query("SELECT max(r2) AS best FROM gene_metrics WHERE model = 'mean'")
    assert mean["best"].item() <= 0.0 + 1e-9


def test_the_comparison_pairs_every_two_models_on_both_metrics(evaluated):
    table = _resources(evaluated)["warehouse"].query(
        "SELECT * FROM model_comparison ORDER BY metric, model_a, model_b"
    )
    pairs = [(a, b) for a, b in zip(table["model_a"], table["model_b"], strict=True)]
    assert pairs == [("cnn", "enet"), ("cnn", "mean"), ("enet", "mean")] * 2
    assert set(table["metric"]) == {"r2", "pearson_r2"}
    assert (table["ci_low"] <= table["mean_delta"]).all()
    assert (table["mean_delta"] <= table["ci_high"]).all()
    assert table["genes"].nunique() == 1


def test_another_model_adds_its_rows_and_a_gene_list_replaces_only_those(evaluated, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(evaluated, data_dir)
    warehouse = _resources(data_dir)["warehouse"]
    before = warehouse.query("SELECT model, gene, run_id FROM gene_metrics ORDER BY ALL")
    _evaluate(data_dir, models=["rf"])
    _evaluate(data_dir, models=["enet"], genes=[before["gene"].iloc[0]])
    after = warehouse.query("SELECT model, gene, run_id FROM gene_metrics ORDER BY ALL")
    assert sorted(set(after["model"])) == ["cnn", "enet", "mean", "rf"]
    merged = before.merge(after, on=["model", "gene"], suffixes=("_before", "_after"))
    changed = merged[merged["run_id_before"] != merged["run_id_after"]]
    assert changed[["model", "gene"]].values.tolist() == [["enet", before["gene"].iloc[0]]]


def test_an_unknown_model_or_none_is_refused_before_any_work(evaluated, tmp_path):
    for models in (["xgboost"], ["cnn", "xgboost"], []):
        with pytest.raises(Exception, match="models must be a non-empty list"):
            _evaluate(tmp_path, models=models)


def test_every_model_the_cnn_included_is_evaluated_by_default():
    assert EvaluationConfig().models == list(defaults.MODELS) == ["cnn", "enet", "mean", "rf"]


def test_the_cpg_count_experiment_bins_every_gene_of_every_model(evaluated):
    warehouse = _resources(evaluated)["warehouse"]
    table = warehouse.query("SELECT * FROM r2_by_cpg_count ORDER BY model, bin_low")
    genes = warehouse.query("SELECT model, count(*) AS n FROM gene_metrics GROUP BY 1")
    per_model = table.groupby("model")["genes"].sum()
    assert per_model.to_dict() == genes.set_index("model")["n"].to_dict()
    cnn = warehouse.query(
        "SELECT avg(r2) AS mean_r2 FROM gene_metrics WHERE model = 'cnn'"
    )["mean_r2"].item()
    rows = table[table["model"] == "cnn"]
    assert (rows["mean_r2"] * rows["genes"]).sum() / rows["genes"].sum() == pytest.approx(cnn)


def test_one_group_by_compares_every_model_fold_by_fold_and_sample_by_sample(evaluated):
    warehouse = _resources(evaluated)["warehouse"]
    folds = warehouse.query(
        "SELECT model, count(DISTINCT fold) AS folds, sum(n_test) AS tested FROM fold_metrics "
        "GROUP BY model ORDER BY model")
    assert folds["model"].tolist() == ["cnn", "enet", "mean"]
    assert folds["folds"].tolist() == [5] * 3 and folds["tested"].nunique() == 1
    disagreements = warehouse.query(
        "SELECT gene, sample FROM predictions GROUP BY gene, sample "
        "HAVING count(DISTINCT fold) > 1 OR count(DISTINCT model) <> 3")
    assert disagreements.empty
