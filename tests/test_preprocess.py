import gzip

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import KNNImputer

from dmg_ml.data.barcodes import parse_barcodes, sample_table
from dmg_ml.data.preprocess import (
    BetaRangeError,
    NonFiniteValueError,
    beta_to_m,
    check_beta_range,
    check_expression_finite,
    filter_expression,
    impute_knn,
    missing_fraction,
)
from dmg_ml.data.xena import read_matrix


def test_beta_to_m_matches_definition_and_clamps_extremes():
    beta = np.array([0.0, 1.0, 0.5, 0.2, np.nan, 1e-9, 1 - 1e-9])
    m = beta_to_m(beta)
    assert m.dtype == np.float32
    assert m[0] == -10 and m[1] == 10
    assert m[2] == 0
    assert m[3] == pytest.approx(np.log2(0.2 / 0.8))
    assert np.isnan(m[4])
    assert m[5] == -10 and m[6] == 10
    assert not np.isinf(m).any()


def test_beta_range_error_names_probe_sample_and_value():
    beta = np.array([[0.1, 1.2], [0.3, -0.1]], dtype=np.float32)
    with pytest.raises(BetaRangeError, match=r"2 beta value.*cg1', 'S2'.*1\.2"):
        check_beta_range(beta, np.array(["cg1", "cg2"]), ["S1", "S2"])


def test_missing_fraction_per_row():
    values = np.array([[1, np.nan, np.nan, 1], [1, 1, 1, 1]], dtype=np.float32)
    assert missing_fraction(values).tolist() == [0.5, 0.0]


def test_knn_imputation_uses_similar_samples_and_flags_cells():
    rng = np.random.default_rng(0)
    group = np.repeat([0, 1], 20)  # two kinds of samples with opposite methylation
    block = np.where(group == 0, -3.0, 3.0)[None, :] + rng.normal(0, 0.3, (200, 40))
    block = block.astype(np.float32)
    truth = block.copy()
    block[5, 3] = np.nan  # a sample of group 0
    block[7, 30] = np.nan  # a sample of group 1
    filled, mask = impute_knn(block, n_neighbors=5)
    assert mask.sum() == 2 and mask[5, 3] and mask[7, 30]
    assert not np.isnan(filled).any()
    assert abs(filled[5, 3] - truth[5, 3]) < 1.0
    assert abs(filled[7, 30] - truth[7, 30]) < 1.0
    untouched = ~mask
    np.testing.assert_array_equal(filled[untouched], block[untouched])


def test_filter_expression_drops_genes_with_mean_at_most_one():
    frame = pd.DataFrame(
        {"s1": [0.5, 1.0, 5.0], "s2": [1.4, 1.0, 6.0]}, index=["LOW", "EDGE", "HI"]
    )
    assert filter_expression(frame).index.tolist() == ["HI"]


def test_barcodes_give_patient_and_tissue():
    table = parse_barcodes(["TCGA-A1-A0SB-01", "TCGA-A1-A0SB-11", "TCGA-B6-A0RE-06"])
    assert table["patient"].tolist() == ["TCGA-A1-A0SB"] * 2 + ["TCGA-B6-A0RE"]
    assert table["tissue"].tolist() == ["tumour", "normal", "tumour"]
    # the barcode's two digits, as TCGA writes them: "01" must not read back as 1
    assert table["sample_type_code"].tolist() == ["01", "11", "06"]
    with pytest.raises(ValueError, match="not TCGA sample barcodes"):
        parse_barcodes(["sample1"])


def test_sample_table_keeps_the_intersection_and_rejects_disjoint_files():
    table = sample_table(["TCGA-A1-A0SB-01", "TCGA-A1-A0SC-01"], ["TCGA-A1-A0SC-01"])
    assert table.set_index("sample")["kept"].to_dict() == {
        "TCGA-A1-A0SB-01": False,
        "TCGA-A1-A0SC-01": True,
    }
    with pytest.raises(ValueError, match="shares no sample"):
        sample_table(["TCGA-A1-A0SB-01"], ["TCGA-A1-A0SC-01"])


@pytest.mark.parametrize("missing_rate", [0.02, 0.4])
def test_knn_imputation_equals_scikit_learns_knn_imputer(missing_rate):
    rng = np.random.default_rng(3)
    block = (rng.normal(size=(300, 60)) + rng.normal(size=(1, 60)) * 2).astype(np.float32)
    block[rng.random(block.shape) < missing_rate] = np.nan
    filled, _ = impute_knn(block, n_neighbors=7)
    reference = KNNImputer(n_neighbors=7).fit_transform(block.T).T
    np.testing.assert_allclose(filled, reference, atol=1e-5)


def _expression_with(value: float) -> pd.DataFrame:
    return pd.DataFrame(
        {"s1": [5.0, 6.0, 7.0], "s2": [5.0, value, 7.0]}, index=["A", "B", "C"], dtype=np.float32
    )


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_expression_check_names_gene_sample_and_value(value):
    with pytest.raises(
        NonFiniteValueError, match=r"HiSeqV2.gz: 1 non-finite .*\('B', 's2', -?(nan|inf)\)"
    ):
        check_expression_finite(_expression_with(value), "HiSeqV2.gz")


def test_expression_check_counts_every_bad_cell():
    frame = _expression_with(np.nan)
    frame.loc["A", "s1"] = -np.inf
    frame.loc["C", "s1"] = np.inf
    with pytest.raises(NonFiniteValueError, match="3 non-finite"):
        check_expression_finite(frame, "HiSeqV2.gz")


def test_filter_expression_rejects_minus_inf_rather_than_dropping_the_gene():
    with pytest.raises(NonFiniteValueError, match=r"expression: 1 non-finite .*'B', 's2', -inf"):
        filter_expression(_expression_with(-np.inf))


def test_filter_expression_names_the_file_read_matrix_read(tmp_path):
    path = tmp_path / "HiSeqV2.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("sample\tS1\tS2\nG1\t5\t6\nG2\t7\t-inf\n")
    with pytest.raises(NonFiniteValueError, match=r"HiSeqV2.gz: .*'G2', 'S2', -inf"):
        filter_expression(read_matrix(path))
