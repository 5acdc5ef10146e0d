"""Paired model comparison: deltas, wins, Wilcoxon and bootstrap interval on known numbers."""

import numpy as np
import pandas as pd
import pytest

from dmg_ml.evaluation.compare import paired_comparison


def _metrics(deltas, base=None):
    base = np.linspace(0.1, 0.5, len(deltas)) if base is None else base
    genes = [f"G{i}" for i in range(len(deltas))]
    rows = [("cnn", g, b + d) for g, b, d in zip(genes, base, deltas, strict=True)]
    rows += [("enet", g, b) for g, b in zip(genes, base, strict=True)]
    frame = pd.DataFrame(rows, columns=["model", "gene", "r2"])
    return frame.assign(cohort="BRCA", protocol="honest", window_bp=1_000_000, tissue="all")


def test_a_consistent_gain_is_measured_and_significant():
    deltas = np.random.default_rng(0).normal(0.1, 0.02, 40)
    row = paired_comparison(_metrics(deltas)).iloc[0]
    assert (row["model_a"], row["model_b"], row["genes"]) == ("cnn", "enet", 40)
    assert row["mean_delta"] == pytest.approx(deltas.mean())
    assert row["median_delta"] == pytest.approx(np.median(deltas))
    assert row["share_a_wins"] == 1.0 and row["share_b_wins"] == 0.0
    assert row["wilcoxon_p"] < 1e-6
    assert row["ci_low"] < deltas.mean() < row["ci_high"] and row["ci_low"] > 0.08


def test_no_difference_is_not_significant_and_its_interval_covers_zero():
    deltas = np.tile([0.05, -0.05], 20) + np.random.default_rng(1).normal(0, 0.001, 40)
    row = paired_comparison(_metrics(deltas)).iloc[0]
    assert row["wilcoxon_p"] > 0.2
    assert row["ci_low"] < 0 < row["ci_high"]
    assert row["share_a_wins"] == pytest.approx(0.5, abs=0.05)


def test_only_genes_both_models_scored_are_paired_and_every_pair_is_listed():
    frame = _metrics(np.full(10, 0.1))
    frame = pd.concat([frame, frame[frame["model"] == "enet"].assign(model="mean", r2=0.0)])
    frame = frame[~((frame["model"] == "cnn") & (frame["gene"] == "G0"))]
    table = paired_comparison(frame)
    columns = table[["model_a", "model_b", "genes"]].itertuples(index=False)
    pairs = {(a, b): n for a, b, n in columns}
    assert pairs == {("cnn", "enet"): 9, ("cnn", "mean"): 9, ("enet", "mean"): 10}


def test_models_are_paired_within_a_tissue_never_across_tissues():
    frame = _metrics(np.full(6, 0.1))
    normal = frame[frame["model"] == "enet"].assign(tissue="normal", r2=0.9)
    table = paired_comparison(pd.concat([frame, normal]))
    assert table[["tissue", "model_a", "model_b", "genes"]].values.tolist() == [
        ["all", "cnn", "enet", 6]]
    assert table.iloc[0]["mean_delta"] == pytest.approx(0.1)
