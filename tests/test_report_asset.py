"""The evaluation report asset: a self-contained HTML file from the warehouse's tables."""

import re
import shutil

import pytest
from dagster import DagsterInstance, MultiPartitionKey, materialize

from dmg_assets.evaluation import model_comparison, model_evaluation, r2_by_cpg_count
from dmg_assets.experiments import tissue_experiment
from dmg_assets.partitions import cohort_partitions
from dmg_assets.report import evaluation_report, report_path
from dmg_assets.training import cnn_models
from dmg_resources.source import XenaSource
from tests.test_training_assets import FAST, _resources

W = 100_000
KEY = MultiPartitionKey({"cohort": "BRCA", "chromosome": "chr1"})


def _instance() -> DagsterInstance:
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cohort_partitions.name, ["BRCA"])
    return instance


def _resources_with_source(data_dir, hub) -> dict:
    source = XenaSource(base_url=str(hub), cache_dir=str(data_dir / "cache"),
                        backoff_seconds=0.01)
    return {**_resources(data_dir), "source": source}


def _report(data_dir, hub):
    return materialize([evaluation_report], partition_key="BRCA", instance=_instance(),
                       resources=_resources_with_source(data_dir, hub))


def test_a_report_needs_gene_metrics(built_copy, tiny_hub):
    with pytest.raises(Exception, match="gene_metrics has no rows: materialise cnn_models"):
        _report(built_copy, tiny_hub)


def test_the_report_shows_every_model_and_experiment_run_and_says_what_was_not(
    built, tiny_hub, tmp_path
):
    data_dir = tmp_path / "data"
    shutil.copytree(built, data_dir)
    run = {"partition_key": KEY, "resources": _resources(data_dir), "instance": _instance()}
    materialize([cnn_models], **run,
                run_config={"ops": {"cnn_models": {"config": {**FAST, "window_bp": W}}}})
    materialize([model_evaluation], **run, run_config={
        "ops": {"model_evaluation": {"config": {"window_bp": W, "models": ["enet", "mean"]}}}})
    genes = _resources(data_dir)["warehouse"].query(
        "SELECT DISTINCT gene FROM gene_metrics")["gene"].tolist()
    cohort_run = {**run, "partition_key": "BRCA"}
    materialize([model_comparison, r2_by_cpg_count], **cohort_run)
    materialize([tissue_experiment], **cohort_run, run_config={"ops": {"tissue_experiment": {
        "config": {"window_bp": W, "genes": genes, "models": ["mean"]}}}})

    result = _report(data_dir, tiny_hub)
    path = report_path(_resources(data_dir)["warehouse"], "BRCA")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"(src|href)=\"https?://", page)  # opens offline
    images = page.count('src="data:image/png;base64,')
    assert images == 4  # CNN vs enet, CpG count, tissue, ceiling: the experiments that ran
    assert "window_experiment" in page and "generalisation" in page  # not run: how to run them
    for model in ("cnn", "enet", "mean"):
        assert f">{model}<" in page
    metadata = result.asset_materializations_for_node("evaluation_report")[0].metadata
    assert metadata["path"].value == str(path) and metadata["ground_truth"].value is True
    assert "| cnn |" in metadata["headline"].value or "cnn" in metadata["headline"].value
    assert "data:image/png;base64," in metadata["ceiling"].value
    run_ids = _resources(data_dir)["warehouse"].query(
        "SELECT DISTINCT run_id FROM gene_metrics")["run_id"]
    assert all(run_id in page for run_id in run_ids)  # every figure names the runs behind it
