"""Experiment tables from per-gene metrics, on known numbers."""

import pandas as pd
import pytest

from dmg_ml.evaluation.experiments import r2_by_cpg_count


def _metrics() -> pd.DataFrame:
    rows = [("cnn", f"G{i}", n, r) for i, (n, r) in enumerate(
        [(10, 0.1), (30, 0.2), (40, 0.4), (120, 0.5), (900, 0.9), (0, 0.0)])]
    rows += [("enet", "G0", 10, 0.3)]
    frame = pd.DataFrame(rows, columns=["model", "gene", "n_cpgs", "r2"])
    return frame.assign(pearson_r2=frame["r2"] + 0.05, cohort="BRCA", protocol="honest",
                        window_bp=1_000_000)


def test_genes_fall_into_their_cpg_bins_per_model():
    table = r2_by_cpg_count(_metrics(), edges=(1, 25, 100, 800))
    cnn = table[table["model"] == "cnn"].set_index("cpg_bin")
    assert cnn["genes"].to_dict() == {"1-24": 1, "25-99": 2, "100-799": 1, "800+": 1}
    assert cnn.loc["25-99", "mean_r2"] == pytest.approx(0.3)
    assert cnn.loc["25-99", "mean_pearson_r2"] == pytest.approx(0.35)
    assert table[table["model"] == "enet"]["cpg_bin"].tolist() == ["1-24"]
    assert cnn["bin_low"].tolist() == [1, 25, 100, 800]  # ordered by bin, not by label
    assert cnn["genes"].sum() == 5  # the gene without CpGs falls in no bin
