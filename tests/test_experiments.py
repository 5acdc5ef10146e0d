"""Experiment tables from per-gene metrics, on known numbers."""

import numpy as np
import pandas as pd
import pytest

from dmg_ml.data.inputs import GeneData
from dmg_ml.data.splits import outer_splits
from dmg_ml.evaluation.engine import evaluate
from dmg_ml.evaluation.experiments import (
    aligned_columns,
    fit_fold_predictors,
    gene_metrics_frame,
    generalisation_scores,
    r2_by_cpg_count,
)


def _metrics() -> pd.DataFrame:
    rows = [("cnn", f"G{i}", n, r) for i, (n, r) in enumerate(
        [(10, 0.1), (30, 0.2), (40, 0.4), (120, 0.5), (900, 0.9), (0, 0.0)])]
    rows += [("enet", "G0", 10, 0.3)]
    frame = pd.DataFrame(rows, columns=["model", "gene", "n_cpgs", "r2"])
    return frame.assign(pearson_r2=frame["r2"] + 0.05, cohort="BRCA", protocol="honest",
                        window_bp=1_000_000, tissue="all")


def test_genes_fall_into_their_cpg_bins_per_model():
    table = r2_by_cpg_count(_metrics(), edges=(1, 25, 100, 800))
    cnn = table[table["model"] == "cnn"].set_index("cpg_bin")
    assert cnn["genes"].to_dict() == {"1-24": 1, "25-99": 2, "100-799": 1, "800+": 1}
    assert cnn.loc["25-99", "mean_r2"] == pytest.approx(0.3)
    assert cnn.loc["25-99", "mean_pearson_r2"] == pytest.approx(0.35)
    assert table[table["model"] == "enet"]["cpg_bin"].tolist() == ["1-24"]
    assert cnn["bin_low"].tolist() == [1, 25, 100, 800]  # ordered by bin, not by label
    assert cnn["genes"].sum() == 5  # the gene without CpGs falls in no bin


def _gene(name: str = "G", n: int = 60, length: int = 8, seed: int = 0) -> GeneData:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, length)).astype(np.float32)
    y = 2.0 - 1.5 * X[:, 3] + 0.2 * rng.normal(size=n)
    samples = np.array([f"TCGA-AA-{i:04d}-01" for i in range(n)])
    return GeneData(name, X, y, np.array([s[:12] for s in samples]), samples)


def test_fold_predictors_are_the_models_the_honest_cross_validation_scores():
    """Fold k's predictor, applied to fold k's test rows, gives the engine's out-of-fold
    predictions: same folds, same scaling, same fit."""
    gene = _gene()
    predictors = fit_fold_predictors(gene, "enet", seed=3)
    (scored,) = evaluate([gene], "enet", protocol="honest", seed=3)
    oof = scored.oof.set_index("sample")["y_pred"]
    splits = outer_splits(gene.patients, "honest", 5, 3)
    for split, predictor in zip(splits, predictors, strict=True):
        expected = oof.loc[gene.samples[split.test]].to_numpy()
        np.testing.assert_allclose(predictor.predict(gene.X[split.test]), expected, rtol=1e-10)
        np.testing.assert_allclose(predictor.fill, gene.X[split.scaler_rows].mean(axis=0),
                                   rtol=1e-5, atol=1e-6)


def test_a_model_generalises_to_a_cohort_with_the_same_biology_and_not_to_noise():
    source, target = _gene(seed=0), _gene(n=40, seed=1)
    predictors = fit_fold_predictors(source, "enet")
    same = generalisation_scores(predictors, target.X.astype(np.float64), target.y)
    assert same["r2"] > 0.9 and same["pearson_r2"] > 0.9
    noise = np.random.default_rng(2).normal(size=len(target.y))
    unrelated = generalisation_scores(predictors, target.X.astype(np.float64), noise)
    assert unrelated["pearson_r2"] < 0.2 and unrelated["r2"] < 0.0


def test_a_cpg_the_target_lacks_takes_the_training_mean_and_lowers_the_coverage():
    source, target = _gene(seed=0), _gene(n=40, seed=1)
    probes = [f"cg{i:08d}" for i in range(source.X.shape[1])]
    matrix = pd.DataFrame(target.X.T, index=probes, columns=target.samples)
    without_driver = matrix.drop(index="cg00000003")
    X, coverage = aligned_columns(without_driver, probes, target.samples)
    assert coverage == pytest.approx(7 / 8) and np.isnan(X[:, 3]).all()
    assert not np.isnan(np.delete(X, 3, axis=1)).any()
    predictors = fit_fold_predictors(source, "enet")
    lost = generalisation_scores(predictors, X, target.y)
    assert lost["pearson_r2"] < 0.2  # the driver gone, its training mean predicts nothing
    X_other, _ = aligned_columns(matrix.drop(index="cg00000005"), probes, target.samples)
    assert generalisation_scores(predictors, X_other, target.y)["r2"] > 0.9


def test_gene_metrics_frame_has_one_row_per_model_and_gene():
    genes = [_gene("A"), _gene("B", seed=4)]
    results = evaluate(genes, "mean") + evaluate(genes, "enet")
    frame = gene_metrics_frame(results)
    assert frame[["model", "gene"]].values.tolist() == [
        ["mean", "A"], ["mean", "B"], ["enet", "A"], ["enet", "B"]]
    assert (frame["n_samples"] == 60).all() and (frame["n_cpgs"] == 8).all()
    assert frame.loc[2, "mean_fold_r2"] == pytest.approx(results[2].fold_metrics["r2"].mean())
    assert frame.loc[0, "r2"] < 0.0 < 0.9 < frame.loc[2, "r2"]
