"""Learning check: the CNN recovers the synthetic cohort's ground truth under honest CV."""

import pandas as pd
import pytest

from dmg_ml.data.inputs import gene_inputs
from dmg_ml.evaluation.engine import evaluate
from dmg_ml.synthetic.writer import SyntheticSpec, write_synthetic_hub
from dmg_resources.warehouse import Warehouse
from tests.conftest import materialize_cohort, resources_for

#: Enough samples for a CNN to learn from (the paper's BRCA has 873), few genes.
LEARNABLE = SyntheticSpec(
    n_genes=23, n_low_expressed=1, n_unmapped_genes=1, min_genes_per_chromosome=1,
    no_signal_fraction=0.3, samples=(("BRCA", 330, 30),),
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    hub = tmp_path_factory.mktemp("learnable_hub")
    write_synthetic_hub(hub, LEARNABLE, cohorts=("BRCA",), seed=11)
    data_dir = tmp_path_factory.mktemp("learnable_data")
    materialize_cohort("BRCA", resources_for(str(hub), data_dir))
    truth = pd.read_csv(hub / "ground_truth/BRCA/genes.tsv", sep="\t")
    return Warehouse(root=str(data_dir / "warehouse"), database=str(data_dir / "dmg.duckdb")), truth


def _inputs(warehouse, genes):
    partition = {"cohort": "BRCA"}
    windows = warehouse.read("gene_windows", partition, filters=[("window_bp", "=", 1_000_000)])
    windows = windows[windows["gene"].isin(genes)]
    m_values = warehouse.query(
        "SELECT probe_id, sample, m_value FROM m_values WHERE probe_id IN "
        "(SELECT probe_id FROM gene_windows WHERE window_bp = 1000000)"
    )
    return gene_inputs(
        windows, m_values, warehouse.read("expression", partition),
        warehouse.read("samples", partition, filters=[("kept", "=", True)]),
    )


def _strong_and_null(truth):
    modelled = truth[truth["category"] == "modelled"]
    strong = modelled.nlargest(4, "expected_r2")["gene"].tolist()
    null = modelled[~modelled["has_signal"]]["gene"].head(3).tolist()
    assert len(null) == 3 and modelled.set_index("gene").loc[strong, "expected_r2"].min() > 0.5
    return strong, null


def test_honest_r2_is_high_where_methylation_drives_expression_and_null_where_not(cohort):
    warehouse, truth = cohort
    strong, null = _strong_and_null(truth)
    inputs = _inputs(warehouse, strong + null)
    results = {
        r.gene: r
        for r in evaluate(
            [i.data for i in inputs], "cnn", params={"max_epochs": 200, "patience": 25}
        )
    }
    strong_r2 = [results[g].r2 for g in strong]
    null_r2 = [results[g].r2 for g in null]
    assert min(strong_r2) > 0.15 and sum(strong_r2) / 4 > 0.3, strong_r2
    assert max(null_r2) < 0.1, null_r2
    assert max(results[g].pearson_r2 for g in null) < 0.1


def test_elastic_net_recovers_the_signal_and_the_mean_is_the_floor(cohort):
    warehouse, truth = cohort
    strong, null = _strong_and_null(truth)
    genes = [i.data for i in _inputs(warehouse, strong + null)]
    enet = {r.gene: r for r in evaluate(genes, "enet")}
    mean = {r.gene: r for r in evaluate(genes, "mean")}
    strong_r2 = [enet[g].r2 for g in strong]
    assert min(strong_r2) > 0.15 and sum(strong_r2) / 4 > 0.3, strong_r2
    assert max(enet[g].r2 for g in null) < 0.1
    assert all(-0.1 < mean[g].r2 <= 0.0 + 1e-9 for g in strong + null)
