"""Prediction for new samples (dmg_ml.prediction): a round trip through files, and bad input.

One simulated gene (30 CpGs, expression linear in two of them) is cross-validated on 200
samples, with a final model trained on all 200; its saved models predict the 20 held-back
samples from β and M-value files.
"""

import gzip
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dmg_ml.data.inputs import GeneData
from dmg_ml.evaluation.engine import evaluate
from dmg_ml.models.checkpoint import load_fold_model
from dmg_ml.prediction import (
    DEFAULT_MIN_COVERAGE,
    PREDICTION_COLUMNS,
    SKIPPED_COLUMNS,
    GenePrediction,
    PredictionInputError,
    SkippedGene,
    m_to_beta,
    predict_gene,
    predict_genes,
    read_methylation,
)

N_SAMPLES, N_TRAIN, N_CPGS = 220, 200, 30
DRIVERS = (3, 17)
PROBES = [f"cg{i:08d}" for i in range(N_CPGS)]
SAMPLES = [f"TCGA-AA-{i:04d}-01A" for i in range(N_SAMPLES)]
HELD = SAMPLES[N_TRAIN:]
#: The held-back samples' predictions correlate with their truth at r ≈ 0.97 (the fold models'
#: mean) and 0.90 (the final model alone), seed 0.
MIN_R = 0.85


@pytest.fixture(scope="module")
def gene(one_thread):
    """The simulated gene's checkpoint and the held-back samples' M-values and truth."""
    rng = np.random.default_rng(0)
    X = rng.normal(0.0, 1.5, size=(N_SAMPLES, N_CPGS)).astype(np.float32)
    y = -1.0 * X[:, DRIVERS[0]] + 0.6 * X[:, DRIVERS[1]] + 0.2 * rng.normal(size=N_SAMPLES)
    train = GeneData("G", X[:N_TRAIN], y[:N_TRAIN], np.array([s[:12] for s in SAMPLES[:N_TRAIN]]),
                     np.array(SAMPLES[:N_TRAIN]))
    (result,) = evaluate(
        [train], "cnn", params={"max_epochs": 300, "patience": 30}, final_model=True
    )
    with_final = result.gene_checkpoint(PROBES, "{}", "run-1")
    held = pd.DataFrame(X[N_TRAIN:].T, index=PROBES, columns=HELD)  # probes × samples
    return replace(with_final, final=None), held, pd.Series(y[N_TRAIN:], index=HELD), with_final


@pytest.fixture(scope="module")
def final(gene):
    """The same gene's checkpoint with its final model (trained on all 100 samples) too."""
    return gene[3]


def write_matrix(path: Path, values: pd.DataFrame, first: str = "sample") -> Path:
    """A probes × samples file: tab unless ``.csv``, gzipped when ``.gz``."""
    sep = "," if ".csv" in path.suffixes else "\t"
    text = values.rename_axis(first).to_csv(sep=sep, float_format="%.9g", na_rep="NA")
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def correlation(prediction: GenePrediction, truth: pd.Series) -> float:
    return float(np.corrcoef(prediction.prediction, truth.loc[prediction.samples])[0, 1])


def test_round_trip_from_a_xena_beta_matrix(gene, tmp_path):
    checkpoint, held, truth, _ = gene
    path = write_matrix(tmp_path / "HumanMethylation450.gz", pd.DataFrame(
        m_to_beta(held.to_numpy()), index=held.index, columns=held.columns))
    data = read_methylation(path)
    assert (data.scale, data.scale_detected) == ("beta", True)
    assert (data.n_probes, data.n_samples) == (N_CPGS, len(HELD))
    assert "β values (detected)" in data.summary()
    np.testing.assert_allclose(data.m_values.loc[PROBES, HELD], held, atol=1e-4)

    result = predict_gene(checkpoint, data)
    assert isinstance(result, GenePrediction)
    assert result.samples == HELD and result.n_models == 5
    assert correlation(result, truth) > MIN_R
    assert (result.coverage == 1.0).all() and (result.n_missing_probes == 0).all()
    assert (result.lower <= result.prediction).all() and (result.prediction <= result.upper).all()
    assert (result.upper > result.lower).all()  # five different models do not agree exactly


def test_round_trip_from_an_m_value_csv_agrees_with_the_beta_file(gene, tmp_path):
    checkpoint, held, truth, _ = gene
    data = read_methylation(write_matrix(tmp_path / "lab.csv", held, first=""))
    assert (data.scale, data.scale_detected, data.n_clamped) == ("m_value", True, 0)
    from_m = predict_gene(checkpoint, data)
    assert correlation(from_m, truth) > MIN_R
    beta = pd.DataFrame(m_to_beta(held.to_numpy()), index=held.index, columns=held.columns)
    from_beta = predict_gene(checkpoint, read_methylation(write_matrix(tmp_path / "b.tsv", beta)))
    np.testing.assert_allclose(from_m.prediction, from_beta.prediction, atol=1e-3)


def test_interval_is_the_range_of_the_fold_models(gene):
    checkpoint, held, _, _ = gene
    result = predict_gene(checkpoint, held)
    folds = np.array([load_fold_model(f).predict(held.T.to_numpy()) for f in checkpoint.folds])
    np.testing.assert_allclose(result.model_predictions, folds, rtol=1e-6)
    np.testing.assert_allclose(result.prediction, folds.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(result.lower, folds.min(axis=0), rtol=1e-6)
    np.testing.assert_allclose(result.upper, folds.max(axis=0), rtol=1e-6)


def test_every_stored_model_predicts_and_a_final_model_alone_suffices(gene, final):
    _, held, truth, _ = gene
    X = held.T.to_numpy()
    result = predict_gene(final, held)
    assert result.n_models == 6
    models = np.array([load_fold_model(m).predict(X) for m in final.models])
    np.testing.assert_allclose(result.model_predictions, models, rtol=1e-6)
    np.testing.assert_allclose(result.prediction, models.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(result.lower, models.min(axis=0), rtol=1e-6)
    np.testing.assert_allclose(result.upper, models.max(axis=0), rtol=1e-6)
    assert correlation(result, truth) > MIN_R

    alone = predict_gene(replace(final, folds=[]), held)  # a registry that keeps the final only
    assert alone.n_models == 1
    np.testing.assert_allclose(alone.prediction, models[-1], rtol=1e-6)
    np.testing.assert_array_equal(alone.lower, alone.upper)
    assert correlation(alone, truth) > MIN_R


def test_a_missing_probe_takes_each_folds_training_mean_and_is_counted(gene, tmp_path):
    checkpoint, held, truth, _ = gene
    dropped = PROBES[10]
    assert 10 not in DRIVERS
    data = read_methylation(write_matrix(tmp_path / "lab.tsv", held.drop(index=dropped)))
    result = predict_gene(checkpoint, data)
    assert result.gene_coverage == pytest.approx(29 / 30)
    assert np.allclose(result.coverage, 29 / 30) and (result.n_missing_probes == 1).all()
    assert correlation(result, truth) > MIN_R
    full = predict_gene(checkpoint, held)
    assert np.abs(result.prediction - full.prediction).max() < 0.5 * truth.std()
    # exactly the fold models fed their own training mean for that probe
    expected = []
    for fold in checkpoint.folds:
        model, X = load_fold_model(fold), held.T.to_numpy().copy()
        X[:, 10] = model.mean[10]
        expected.append(model.predict(X))
    np.testing.assert_allclose(result.model_predictions, expected, rtol=1e-5, atol=1e-6)

    predictions, skipped = predict_genes([("G", checkpoint)], data)
    assert list(predictions.columns) == PREDICTION_COLUMNS and skipped.empty
    assert (predictions["n_missing_probes"] == 1).all()
    assert predictions["coverage"].to_numpy() == pytest.approx(29 / 30)


def test_a_gene_below_the_coverage_threshold_is_skipped_and_listed(gene):
    checkpoint, held, _, _ = gene
    result = predict_gene(checkpoint, held.iloc[:10])  # 10 of 30 probes
    assert isinstance(result, SkippedGene)
    assert result.coverage == pytest.approx(1 / 3) and result.n_missing_probes == 20
    assert "coverage 33.3% (10 of the model's 30 probes)" in result.reason
    assert f"threshold {DEFAULT_MIN_COVERAGE:.0%}" in result.reason

    done = []
    predictions, skipped = predict_genes([("G", checkpoint), ("H", checkpoint)], held.iloc[:10],
                                         on_gene_done=done.append)
    assert [r.gene for r in done] == ["G", "H"]
    assert predictions.empty and list(predictions.columns) == PREDICTION_COLUMNS
    assert list(skipped.columns) == SKIPPED_COLUMNS
    assert skipped["gene"].tolist() == ["G", "H"] and skipped["sample"].isna().all()
    # a lower threshold predicts it
    assert isinstance(predict_gene(checkpoint, held.iloc[:10], min_coverage=0.3), GenePrediction)


def test_a_sample_missing_most_of_a_genes_probes_is_left_out_and_named(gene, tmp_path):
    checkpoint, held, _, _ = gene
    held = held.copy()
    held.iloc[:20, 0] = np.nan  # first sample: 10 of 30 probes
    held.iloc[5, 1] = np.nan  # second sample: one cell missing
    data = read_methylation(write_matrix(tmp_path / "lab.tsv", held))
    predictions, skipped = predict_genes([("G", checkpoint)], data)
    assert skipped[["gene", "sample"]].values.tolist() == [["G", HELD[0]]]
    assert "sample's probe coverage 33.3%" in skipped["reason"].iloc[0]
    assert predictions["sample"].tolist() == HELD[1:]
    row = predictions.set_index("sample").loc[HELD[1]]
    assert row["n_missing_probes"] == 1 and row["coverage"] == pytest.approx(29 / 30)


def test_epic_v2_ids_are_stripped_of_their_suffix_and_replicates_averaged(gene, tmp_path):
    checkpoint, held, _, _ = gene
    beta = pd.DataFrame(m_to_beta(held.to_numpy()), index=held.index, columns=held.columns)
    epic = beta.rename(index=lambda p: f"{p}_TC21")
    replicate = beta.iloc[[4]].rename(index=lambda p: f"{p}_TC12")
    replicate.iloc[0] = 0.5 * (replicate.iloc[0] + 0.5)  # the mean with the TC21 row: (β+0.5)/2
    lines = pd.concat([epic, replicate])
    data = read_methylation(write_matrix(tmp_path / "epic.tsv", lines))
    assert data.renamed_probes[f"{PROBES[0]}_TC21"] == PROBES[0]
    assert len(data.renamed_probes) == N_CPGS + 1 and data.merged_replicates == {PROBES[4]: 2}
    assert "EPIC v2 id(s) stripped" in data.summary()
    expected = np.log2(0.75 * beta.iloc[4] + 0.125) - np.log2(1 - (0.75 * beta.iloc[4] + 0.125))
    np.testing.assert_allclose(data.m_values.loc[PROBES[4]], expected, atol=1e-4)
    result = predict_gene(checkpoint, data)
    assert result.gene_coverage == 1.0


def test_m_values_beyond_the_clamp_are_clamped_and_counted(tmp_path):
    frame = pd.DataFrame({"s1": [2.5, 50.0, -3.0], "s2": [-np.inf, 1.0, 0.2]},
                         index=["cg00000001", "cg00000002", "ch.1.1240440F"])
    data = read_methylation(write_matrix(tmp_path / "m.tsv", frame))
    assert data.scale == "m_value" and data.n_clamped == 2
    assert data.m_values.loc["cg00000002", "s1"] == 10.0
    assert data.m_values.loc["cg00000001", "s2"] == -10.0


def test_rows_without_a_probe_id_and_empty_probes_are_left_out_and_listed(tmp_path):
    frame = pd.DataFrame({"s1": [0.2, 0.4, np.nan], "s2": [0.3, 0.9, np.nan]},
                         index=["cg00000001", "control_1", "rs1234567"])
    data = read_methylation(write_matrix(tmp_path / "b.tsv", frame))
    assert data.non_probe_rows == ["control_1"] and data.empty_probes == ["rs1234567"]
    assert data.m_values.index.tolist() == ["cg00000001"]


def test_scale_can_be_given(tmp_path):
    frame = pd.DataFrame({"s1": [0.2, 0.4], "s2": [0.3, 0.9]}, index=["cg1", "cg2"])
    path = write_matrix(tmp_path / "b.tsv", frame)
    data = read_methylation(path, scale="m_value")
    assert (data.scale, data.scale_detected) == ("m_value", False)
    assert data.m_values.loc["cg1", "s1"] == pytest.approx(0.2)


BETAS = "sample\tS1\tS2\ncg00000001\t0.2\t0.4\ncg00000002\t0.5\t0.6\n"
BAD_INPUTS = {
    "empty": ("", "the file is empty"),
    "blank lines": ("\n\n", "the file is empty"),
    "header only": ("sample\tS1\tS2\n", "header but no probe rows"),
    "no samples": ("sample\ncg00000001\n", "header has no sample columns"),
    "csv named tsv": ("sample,S1\ncg00000001,0.2\n", "separator is a tab"),
    "transposed": ("sample\tcg00000001\tcg00000002\nTCGA-AA-0001-01A\t0.2\t0.3\n",
                   "looks transposed: probe ids are in the header"),
    "barcode rows": ("id\tx1\tx2\nTCGA-AA-0001-01A\t0.2\t0.3\n",
                     "looks transposed: the row labels are sample ids"),
    "non-numeric": ("sample\tS1\tS2\ncg00000001\t0.2\thigh\ncg00000002\t0.5\t0..6\n",
                    r"non-numeric cells, e.g. \(probe, sample, value\) \[\('cg00000001', 'S2', "
                    r"'high'\), \('cg00000002', 'S2', '0..6'\)\]"),
    "duplicate samples": ("sample\tS1\tS1\ncg00000001\t0.2\t0.4\n",
                          r"duplicate sample ids: .*\['S1'\]"),
    "empty sample id": ("sample\tS1\t\ncg00000001\t0.2\t0.4\n", "empty sample id"),
    "duplicate probes": (BETAS + "cg00000001\t0.3\t0.3\n",
                         r"duplicate probe ids: .*\['cg00000001'\]"),
    "beta outside [0, 1]": (
        "sample\tS1\tS2\n" + "".join(f"cg{i:08d}\t0.{i + 1}\t0.5\n" for i in range(99))
        + "cg00000099\t1.3\t0.5\n",
        r"β outside \[0, 1\]: 99.50% of its values lie in \[0, 1\].*\('cg00000099', 'S1', 1.3"),
    "no probe ids": ("gene\tS1\nTP53\t1.0\nBRCA1\t2.0\n", "no row id looks like a 450K or EPIC"),
    "no values": ("sample\tS1\ncg00000001\tNA\n", "every cell is missing"),
    "sample without values": ("sample\tS1\tS2\ncg00000001\t0.2\tNA\n",
                              r"sample\(s\) without any value.*\['S2'\]"),
    "short row": (BETAS + "cg00000003\t0.1\n",
                  r"the row of 'cg00000003' \(data row 3\) has 2 cells where the header has 3"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_with_the_file_and_the_problem_named(case, tmp_path):
    text, message = BAD_INPUTS[case]
    path = write_text(tmp_path / "lab.tsv", text)
    with pytest.raises(PredictionInputError, match=message) as error:
        read_methylation(path)
    assert str(error.value).startswith("lab.tsv: ")


def test_a_gzipped_csv_is_read_and_a_missing_file_refused(tmp_path):
    frame = pd.DataFrame({"s1": [0.2, 0.4]}, index=["cg00000001", "cg00000002"])
    data = read_methylation(write_matrix(tmp_path / "lab.csv.gz", frame))
    assert data.m_values.shape == (2, 1) and data.scale == "beta"
    with pytest.raises(PredictionInputError, match="no such file"):
        read_methylation(tmp_path / "absent.tsv")


def test_the_same_gene_twice_is_refused(gene):
    checkpoint, held, _, _ = gene
    with pytest.raises(ValueError, match="more than one checkpoint"):
        predict_genes([("G", checkpoint), ("G", checkpoint)], held)


def test_beta_in_percent_and_other_ambiguous_scales_are_refused_saying_how_to_state_them(
    tmp_path,
):
    """Issue 23, case 3: β in percent was "detected" as M-values, 32,525 cells clamped to ±10
    and predictions up to 63 log2 units."""
    rng = np.random.default_rng(0)
    probes = [f"cg{i:08d}" for i in range(40)]
    percent = pd.DataFrame(rng.uniform(0, 100, (40, 3)), index=probes, columns=["a", "b", "c"])
    path = write_matrix(tmp_path / "percent.tsv", percent)
    with pytest.raises(PredictionInputError, match=r"percent.tsv: .*ambiguous.*"
                       r"from 0\.\d+ to 99\.\d+.*β in percent.*divide.*100.*scale 'm_value'"):
        read_methylation(path)
    above_one = write_matrix(tmp_path / "big.tsv", percent + 200)
    with pytest.raises(PredictionInputError, match=r"ambiguous.*no value below 0"):
        read_methylation(above_one)
    stated = read_methylation(path, scale="m_value")  # said so: taken as M-values
    assert (stated.scale, stated.scale_detected) == ("m_value", False)
    m_values = write_matrix(tmp_path / "m.tsv", (percent - 50) / 10)
    assert read_methylation(m_values).scale == "m_value"
