"""The evaluation report asset: a self-contained HTML file from the warehouse's tables (and the
`samples` check, whose UI plot a report reader met first)."""

import re
import shutil

import pandas as pd
import pytest
from dagster import (
    DagsterInstance,
    FloatMetadataValue,
    IntMetadataValue,
    MultiPartitionKey,
    materialize,
)

from dmg_assets import report as report_asset
from dmg_assets.data_layer import samples, source_files
from dmg_assets.evaluation import model_comparison, model_evaluation, r2_by_cpg_count
from dmg_assets.experiments import tissue_experiment
from dmg_assets.partitions import cohort_partitions
from dmg_assets.report import data_source, evaluation_report, report_path
from dmg_ml.evaluation.report import GENES_CSV
from dmg_resources.source import XENA_HUB_URL, XenaSource
from tests.test_report import _inputs as _report_inputs
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
    with pytest.raises(Exception,
                       match="gene_metrics has no rows: materialise model_evaluation first"):
        _report(built_copy, tiny_hub)


def test_the_report_shows_every_model_and_experiment_run_and_says_what_was_not(
    built, tiny_hub, tmp_path
):
    data_dir = tmp_path / "data"
    shutil.copytree(built, data_dir)
    run = {"partition_key": KEY, "resources": _resources(data_dir), "instance": _instance()}
    materialize([model_evaluation], **run, run_config={"ops": {"model_evaluation": {"config": {
        **FAST, "window_bp": W, "models": ["cnn", "enet", "mean"]}}}})
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


def test_the_data_source_is_the_synthetic_hub_or_the_url_read(tiny_hub, tmp_path):
    synthetic = data_source(XenaSource(base_url=str(tiny_hub)), ground_truth=False)
    assert synthetic.synthetic and synthetic.url == tiny_hub.resolve().as_uri()
    assert data_source(XenaSource(base_url=tiny_hub.resolve().as_uri()), False).synthetic
    mirror = tmp_path / "mirror"  # a local copy of the real hub: no synthetic_hub.json
    mirror.mkdir()
    assert not data_source(XenaSource(base_url=str(mirror)), ground_truth=False).synthetic
    public = data_source(XenaSource(base_url=XENA_HUB_URL), ground_truth=False)
    assert not public.synthetic and public.url == XENA_HUB_URL
    # a remote hub that serves the simulator's truth is a synthetic one
    assert data_source(XenaSource(base_url="https://example.org/hub/"), True).synthetic


def test_the_asset_writes_the_page_and_its_csv_and_says_the_source_first(
    tiny_hub, tmp_path, monkeypatch
):
    """The asset's own wiring, on in-memory tables (no training): source, CSV, provenance."""
    inputs = _report_inputs(n_genes=8)
    tables = {"gene_metrics": inputs.gene_metrics.assign(cohort="BRCA"),
              "model_comparison": inputs.comparison, "r2_by_cpg_count": inputs.by_cpg_count}
    monkeypatch.setattr(report_asset, "_rows",
                        lambda warehouse, view, column, cohort: tables.get(view))
    data_dir = tmp_path / "data"
    result = _report(data_dir, tiny_hub)
    path = report_path(_resources(data_dir)["warehouse"], "BRCA")
    page = path.read_text()
    body = page[page.index("<body>"):]
    assert body.index('id="data-source"') < body.index("<h1>")
    banner = re.search(r'id="data-source".*?</p>', page, flags=re.S)[0]
    assert "synthetic" in banner.lower() and tiny_hub.resolve().as_uri() in banner
    csv = path.with_name(GENES_CSV)
    assert f'href="{GENES_CSV}"' in page
    assert len(pd.read_csv(csv)) == len(tables["gene_metrics"])
    metadata = result.asset_materializations_for_node("evaluation_report")[0].metadata
    assert metadata["genes_csv"].value == str(csv) and metadata["synthetic"].value is True
    assert page.count("<details") == 1 and page.count('id="provenance"') == 1
    for run_id in tables["gene_metrics"]["run_id"].unique():
        assert page.count(run_id) == 1


def test_the_samples_check_gives_the_ui_nothing_to_plot_as_a_time_series(tiny_hub, tmp_path):
    """Dagster's check page plots every numeric check metadata entry on one time axis, so four
    cohorts' sample counts drew as one series (issue 23 case 7): the check's count is text."""
    result = materialize([source_files, samples], partition_key="BRCA", instance=_instance(),
                         resources=_resources_with_source(tmp_path / "data", tiny_hub))
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == "has_shared_samples" and evaluation.passed
    assert evaluation.metadata
    for value in evaluation.metadata.values():
        assert not isinstance(value, IntMetadataValue | FloatMetadataValue), value
    assert evaluation.metadata["samples_kept"].value.startswith("BRCA: ")
