"""The CNN through ``model_evaluation`` on the tiny synthetic hub: tables, checkpoints, gene
lists (``models: [cnn]`` keeps it to the CNN)."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance, MultiPartitionKey, materialize
from sklearn.metrics import r2_score

from dmg_assets.evaluation import model_evaluation, model_summary
from dmg_assets.partitions import cohort_partitions
from dmg_ml.models.checkpoint import load_fold_model
from dmg_resources.checkpoints import CheckpointStore
from dmg_resources.device import TorchDevice
from dmg_resources.store import Transaction
from dmg_resources.warehouse import Warehouse

#: The CNN alone, briefly: what these tests need of ``model_evaluation``.
FAST = {"models": ["cnn"], "max_epochs": 25, "patience": 5}


def _resources(data_dir) -> dict:
    return {
        "warehouse": Warehouse(
            root=str(data_dir / "warehouse"), database=str(data_dir / "dmg.duckdb")
        ),
        "device": TorchDevice(device="cpu"),
        "checkpoints": CheckpointStore(root=str(data_dir / "checkpoints")),
    }


def _train(data_dir, chromosome: str, **config):
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cohort_partitions.name, ["BRCA"])
    return materialize(
        [model_evaluation],
        partition_key=MultiPartitionKey({"cohort": "BRCA", "chromosome": chromosome}),
        resources=_resources(data_dir),
        instance=instance,
        run_config={"ops": {"model_evaluation": {"config": {**FAST, **config}}}},
    )


@pytest.fixture(scope="module")
def trained(built, tmp_path_factory):
    """chr1 and chr2 of BRCA trained once (honest, W = 100 kb)."""
    data_dir = tmp_path_factory.mktemp("trained") / "data"
    shutil.copytree(built, data_dir)
    for chromosome in ("chr1", "chr2"):
        _train(data_dir, chromosome, window_bp=100_000)
    return data_dir


def test_training_writes_metrics_predictions_and_registry(trained):
    warehouse = _resources(trained)["warehouse"]
    genes = warehouse.query(
        "SELECT * FROM gene_metrics WHERE model = 'cnn' ORDER BY chromosome, gene")
    expected = warehouse.query(
        "SELECT chromosome, count(*) AS n FROM gene_promoters WHERE cohort = 'BRCA' "
        "AND chromosome IN ('chr1', 'chr2') GROUP BY 1 ORDER BY 1"
    )
    assert genes.groupby("chromosome").size().tolist() == expected["n"].tolist()
    assert set(genes["protocol"]) == {"honest"} and set(genes["window_bp"]) == {100_000}
    assert np.isfinite(genes[["r2", "pearson_r2"]]).all().all()
    assert (genes["pearson_r2"].between(0, 1)).all()
    folds = warehouse.query("SELECT gene, count(*) AS n, sum(n_test) AS tested "
                            "FROM fold_metrics WHERE model = 'cnn' GROUP BY gene")
    assert (folds["n"] == 5).all() and (folds["tested"] == 48).all()
    predictions = warehouse.query("SELECT gene, count(DISTINCT sample) AS n FROM predictions "
                                  "WHERE model = 'cnn' GROUP BY gene")
    assert (predictions["n"] == 48).all()
    n_cpgs = warehouse.query(
        "SELECT g.gene, g.n_cpgs, s.n_cpgs AS window_cpgs FROM gene_metrics g "
        "JOIN gene_window_sizes s ON s.cohort = g.cohort AND s.gene = g.gene "
        "AND s.window_bp = g.window_bp WHERE g.model = 'cnn'"
    )
    assert (n_cpgs["n_cpgs"] == n_cpgs["window_cpgs"]).all()
    registry = warehouse.query("SELECT * FROM model_registry WHERE model = 'cnn'")
    assert len(registry) == len(genes) and registry["sha256"].str.len().eq(64).all()
    expected_keys = (
        "BRCA/honest/w100000/" + registry["run_id"] + "/cnn/" + registry["gene"] + ".safetensors"
    )
    assert registry["path"].tolist() == expected_keys.tolist()


def _reloaded_predictions(data_dir, entry) -> pd.DataFrame:
    """Out-of-fold rows of ``entry``'s gene with the stored prediction and the reloaded one."""
    warehouse = _resources(data_dir)["warehouse"]
    checkpoint = _resources(data_dir)["checkpoints"].load(entry["path"], entry["sha256"])
    stored = warehouse.query(
        "SELECT sample, fold, y_true, y_pred FROM predictions WHERE model = ? AND gene = ? "
        "AND protocol = ? AND window_bp = ? AND tissue = ?",
        [entry["model"], entry["gene"], entry["protocol"], int(entry["window_bp"]),
         entry["tissue"]],
    )
    m = warehouse.query(
        "SELECT probe_id, sample, m_value FROM m_values WHERE cohort = 'BRCA' "
        "AND chromosome = ?", [entry["chromosome"]]
    ).pivot(index="sample", columns="probe_id", values="m_value")
    reloaded = []
    for fold in checkpoint.folds:
        rows = stored[stored["fold"] == fold.fold]
        X = m.loc[rows["sample"], checkpoint.probe_ids].to_numpy(np.float32)
        reloaded.append(rows.assign(reloaded=load_fold_model(fold).predict(X)))
    return pd.concat(reloaded)


def test_a_reloaded_fp32_checkpoint_reproduces_its_out_of_fold_predictions(trained, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(trained, data_dir)
    _train(data_dir, "chr1", window_bp=100_000, checkpoint_precision="fp32")
    registry = _resources(data_dir)["warehouse"].query(
        "SELECT * FROM model_registry WHERE model = 'cnn' AND chromosome = 'chr1' ORDER BY gene")
    assert set(registry["weights_dtype"]) == {"fp32"}
    rows = _reloaded_predictions(data_dir, registry.iloc[0])
    np.testing.assert_allclose(rows["reloaded"], rows["y_pred"], rtol=1e-5, atol=1e-5)


def test_half_precision_is_stored_only_where_it_moves_r2_by_under_1e_3(trained, tmp_path):
    """``auto`` (the default): fp16 files where the out-of-fold R² moves < 1e-3, half the
    bytes; the reloaded fp16 models keep that promise."""
    registry = _resources(trained)["warehouse"].query(
        "SELECT * FROM model_registry WHERE model = 'cnn'")
    half = registry[registry["weights_dtype"] == "fp16"]
    assert len(half) > 0 and (half["half_precision_delta_r2"] < 1e-3).all()
    assert (registry.loc[registry["weights_dtype"] == "fp32", "half_precision_delta_r2"]
            >= 1e-3).all()
    entry = half.sort_values("gene").iloc[0]
    rows = _reloaded_predictions(trained, entry)
    moved = abs(r2_score(rows["y_true"], rows["reloaded"]) - r2_score(rows["y_true"],
                                                                      rows["y_pred"]))
    assert moved < 1e-3
    data_dir = tmp_path / "data"
    shutil.copytree(trained, data_dir)
    _train(data_dir, "chr1", window_bp=100_000, checkpoint_precision="fp32")
    full = _resources(data_dir)["warehouse"].query(
        "SELECT gene, bytes FROM model_registry WHERE model = 'cnn' AND chromosome = 'chr1'"
    ).set_index("gene")
    ratio = (half.set_index("gene")["bytes"] / full["bytes"]).dropna()
    assert len(ratio) and ratio.between(0.45, 0.6).all(), ratio


def test_training_a_gene_list_replaces_only_those_genes(trained, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(trained, data_dir)
    warehouse = _resources(data_dir)["warehouse"]
    before = warehouse.query(
        "SELECT gene, run_id FROM gene_metrics WHERE model = 'cnn' AND chromosome = 'chr1' "
        "ORDER BY gene"
    )
    target = before["gene"].iloc[0]
    _train(data_dir, "chr1", window_bp=100_000, genes=[target])
    after = warehouse.query(
        "SELECT gene, run_id FROM gene_metrics WHERE model = 'cnn' AND chromosome = 'chr1' "
        "ORDER BY gene"
    )
    assert after["gene"].tolist() == before["gene"].tolist()
    changed = after.set_index("gene")["run_id"] != before.set_index("gene")["run_id"]
    assert changed.to_dict() == {g: g == target for g in before["gene"]}
    folds = warehouse.query(
        "SELECT count(*) AS n FROM fold_metrics WHERE model = 'cnn' AND gene = ?", [target])
    assert folds["n"].item() == 5
    with pytest.raises(Exception, match="NOT_A_GENE"):
        _train(data_dir, "chr1", window_bp=100_000, genes=["NOT_A_GENE"])


def _registry(data_dir):
    return _resources(data_dir)["warehouse"].query(
        "SELECT gene, path, sha256, run_id FROM model_registry WHERE model = 'cnn' "
        "AND chromosome = 'chr1' ORDER BY gene"
    )


def test_a_run_dying_at_its_commit_leaves_every_registered_checkpoint_loadable(
    trained, tmp_path, monkeypatch
):
    data_dir = tmp_path / "data"
    shutil.copytree(trained, data_dir)
    before = _registry(data_dir)
    before_r2 = _resources(data_dir)["warehouse"].query(
        "SELECT gene, r2 FROM gene_metrics WHERE model = 'cnn' AND chromosome = 'chr1'")

    def die(self):
        raise RuntimeError("killed at commit")

    monkeypatch.setattr(Transaction, "commit", die)
    with pytest.raises(Exception, match="killed at commit"):
        _train(data_dir, "chr1", window_bp=100_000)
    monkeypatch.undo()
    after = _registry(data_dir)
    pd.testing.assert_frame_equal(before, after)
    store = _resources(data_dir)["checkpoints"]
    for path, sha256 in zip(after["path"], after["sha256"], strict=True):
        assert store.load(path, sha256).folds
    assert len(_on_disk(data_dir)) > len(_on_disk(trained))  # the dead run's files, unlisted

    # Issue 22, cases 6 and 8: a quick retrain scores lower; its models replace the registry's,
    # the better ones stay on disk, listed in model_superseded, and the dead run's files go.
    result = _train(data_dir, "chr1", window_bp=100_000, max_epochs=2, patience=1)
    warehouse = _resources(data_dir)["warehouse"]
    new = warehouse.query(
        "SELECT gene, r2 FROM gene_metrics WHERE model = 'cnn' AND chromosome = 'chr1'")
    superseded = warehouse.query(
        "SELECT * FROM model_superseded WHERE model = 'cnn' ORDER BY gene")
    lower = new.merge(before_r2, on="gene", suffixes=("", "_before"))
    lower = lower[lower["r2"] < lower["r2_before"]]
    assert not lower.empty and superseded["gene"].tolist() == sorted(lower["gene"])
    assert np.allclose(superseded["superseded_by_r2"], lower.sort_values("gene")["r2"])
    for row in superseded.itertuples():
        assert store.load(row.path, row.sha256).run_id == row.run_id != result.run_id
    registry = warehouse.query("SELECT path FROM model_registry")
    assert _on_disk(data_dir) == set(registry["path"]) | set(superseded["path"])
    metadata = result.asset_materializations_for_node("model_evaluation")
    counts = [m.metadata["superseded_with_lower_r2"].value for m in metadata
              if "superseded_with_lower_r2" in m.metadata]
    assert counts == [len(lower)]


def _on_disk(data_dir) -> set[str]:
    return {p.relative_to(data_dir / "checkpoints").as_posix()
            for p in (data_dir / "checkpoints").rglob("*.safetensors*")}


def test_retraining_removes_the_checkpoints_it_replaces(trained, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(trained, data_dir)
    _train(data_dir, "chr1", window_bp=100_000)
    registry = _resources(data_dir)["warehouse"].query("SELECT path FROM model_registry")
    assert _on_disk(data_dir) == set(registry["path"])


def test_published_audit_rows_sit_beside_honest_ones_and_summary_reports_both(trained, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(trained, data_dir)
    _train(data_dir, "chr1", window_bp=100_000, protocol="published")
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cohort_partitions.name, ["BRCA"])
    result = materialize(
        [model_summary], partition_key="BRCA", resources=_resources(data_dir), instance=instance
    )
    warehouse = _resources(data_dir)["warehouse"]
    summary = warehouse.query("SELECT * FROM model_summary WHERE model = 'cnn' ORDER BY protocol")
    assert summary["protocol"].tolist() == ["honest", "published"]
    genes = warehouse.query(
        "SELECT protocol, count(*) AS n FROM gene_metrics WHERE model = 'cnn' GROUP BY 1 "
        "ORDER BY 1"
    )
    assert summary["genes"].tolist() == genes["n"].tolist()
    # each row's headline is the protocol's figure (protocols.headline_metric): the pooled R²
    # when honest, the authors' mean of per-fold r² for their CNN
    assert summary["headline_metric"].tolist() == ["r2", "mean_fold_pearson_r2"]
    means = warehouse.query(
        "SELECT protocol, avg(r2) AS r2, avg(mean_fold_pearson_r2) AS fold_r2 FROM gene_metrics "
        "WHERE model = 'cnn' GROUP BY 1 ORDER BY 1"
    )
    assert summary["mean_headline"].to_numpy() == pytest.approx(
        [means["r2"].iloc[0], means["fold_r2"].iloc[1]])
    metadata = result.asset_materializations_for_node("model_summary")[0].metadata
    assert "data:image/png;base64," in metadata["r2_histogram"].value
    assert "honest" in metadata["summary"].value


@pytest.mark.parametrize("name", ["cnn_best_genes", "cnn_r2_by_window_size"])
def test_example_training_queries_answer(trained, name):
    sql = (Path(__file__).parents[1] / "warehouse" / "queries" / f"{name}.sql").read_text()
    answer = _resources(trained)["warehouse"].query(sql.replace("1000000", "100000"))
    assert len(answer) > 0


def test_weights_and_tissue_variants_sit_side_by_side_instead_of_replacing_each_other(
    trained, tmp_path
):
    data_dir = tmp_path / "data"
    shutil.copytree(trained, data_dir)
    _train(data_dir, "chr1", window_bp=100_000, protocol="published")
    _train(data_dir, "chr1", window_bp=100_000, protocol="published",
           restore_best_weights=False)
    _train(data_dir, "chr1", window_bp=100_000, tissue="tumour")
    warehouse = _resources(data_dir)["warehouse"]
    variants = warehouse.query(
        "SELECT protocol, tissue, model, count(*) AS genes FROM gene_metrics "
        "WHERE chromosome = 'chr1' GROUP BY ALL ORDER BY ALL"
    )
    genes = variants["genes"].iloc[0]
    assert variants.drop(columns="genes").values.tolist() == [
        ["honest", "all", "cnn"], ["honest", "tumour", "cnn"],
        ["published", "all", "cnn"], ["published", "all", "cnn_last_epoch"]]
    assert (variants["genes"] == genes).all()
    weights = warehouse.query("SELECT DISTINCT model, weights FROM cnn_training ORDER BY ALL")
    assert weights.values.tolist() == [["cnn", "best"], ["cnn_last_epoch", "last"]]
    tumour = warehouse.query("SELECT DISTINCT n_samples FROM gene_metrics "
                             "WHERE tissue = 'tumour'")["n_samples"].tolist()
    assert tumour == [40]  # the tiny BRCA's 40 tumours, not its 48 samples
    models = warehouse.query("SELECT DISTINCT protocol, model FROM gene_metrics ORDER BY ALL")
    assert models.values.tolist() == [["honest", "cnn"], ["published", "cnn"],
                                      ["published", "cnn_last_epoch"]]
    registry = warehouse.query("SELECT protocol, tissue, model, count(*) AS n "
                               "FROM model_registry WHERE chromosome = 'chr1' GROUP BY ALL")
    assert len(registry) == 4 and (registry["n"] == genes).all()


def test_a_window_never_built_fails_with_the_reason_instead_of_training_nothing(built_copy):
    with pytest.raises(Exception, match="holds W in .*, not 5,000: add it to the windows"):
        _train(built_copy, "chr1", window_bp=5_000)
    assert not (built_copy / "warehouse" / "gene_metrics").exists()


def test_a_final_only_registry_keeps_one_model_per_useful_gene(trained, tmp_path):
    """The layout for whole cohorts: the final model alone (a sixth of the bytes of the five
    folds and a final model, a fifth of the default five folds) and no file for genes below
    ``store_min_r2``; their metrics stay."""
    registry = _resources(trained)["warehouse"].query(
        "SELECT * FROM model_registry WHERE model = 'cnn' AND chromosome = 'chr1' ORDER BY gene")
    assert (registry["n_folds"] == 5).all() and not registry["final_model"].any()
    data_dir = tmp_path / "data"
    shutil.copytree(trained, data_dir)
    fp32 = {"window_bp": 100_000, "checkpoint_precision": "fp32"}
    _train(data_dir, "chr1", checkpoint_models="folds_and_final", **fp32)
    both = _resources(data_dir)["warehouse"].query(
        "SELECT gene, bytes FROM model_registry WHERE model = 'cnn' AND chromosome = 'chr1'"
    ).set_index("gene")
    genes = _resources(data_dir)["warehouse"].query(
        "SELECT gene, r2 FROM gene_metrics WHERE model = 'cnn' AND chromosome = 'chr1'"
    ).set_index("gene")
    threshold = float(genes["r2"].median())
    _train(data_dir, "chr1", checkpoint_models="final", store_min_r2=threshold, **fp32)
    warehouse, store = _resources(data_dir)["warehouse"], _resources(data_dir)["checkpoints"]
    final = warehouse.query(
        "SELECT * FROM model_registry WHERE model = 'cnn' AND chromosome = 'chr1'")
    kept = warehouse.query(
        "SELECT gene, r2 FROM gene_metrics WHERE model = 'cnn' AND chromosome = 'chr1'")
    assert len(kept) == len(genes)  # every gene keeps its metrics
    assert set(final["gene"]) == set(kept.loc[kept["r2"] >= threshold, "gene"])
    assert 0 < len(final) < len(kept)
    assert (final["n_folds"] == 0).all() and final["final_model"].all()
    for entry in final.itertuples():
        loaded = store.load(entry.path, entry.sha256)
        assert loaded.folds == [] and loaded.final is not None
    ratio = final.set_index("gene")["bytes"] / both["bytes"]
    assert ratio.dropna().between(1 / 6 - 0.02, 1 / 6 + 0.02).all(), ratio
    with pytest.raises(Exception, match="published audit trains no final model"):
        _train(data_dir, "chr1", protocol="published", checkpoint_models="final", **fp32)
