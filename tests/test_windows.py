import pandas as pd

from dmg_ml.data.genome import CHROMOSOMES, load_promoters
from dmg_ml.data.windows import gene_windows, promoters_with_probes, window_counts


def _promoters():
    return pd.DataFrame(
        {
            "gene": ["PLUS", "MINUS", "EMPTY"],
            "chromosome": ["chr1", "chr1", "chr2"],
            "start": [10_000, 500_000, 10_000],
            "end": [12_000, 502_000, 12_000],
            "strand": ["+", "-", "+"],
            "tss": [11_000, 501_000, 11_000],
        }
    )


def _probes():
    return pd.DataFrame(
        {
            "probe_id": ["a", "b", "c", "d", "e"],
            "chromosome": ["chr1", "chr1", "chr1", "chr1", "chr3"],
            "position": [11_500, 12_900, 95_000, 501_200, 11_000],
        }
    )


def test_shipped_promoter_table_is_the_studys():
    promoters = load_promoters()
    assert len(promoters) > 27_000
    assert set(promoters["chromosome"]) <= set(CHROMOSOMES)
    assert ((promoters["end"] - promoters["start"]) == 2_000).all()
    assert promoters["gene"].is_unique


def test_promoters_need_a_probe_inside():
    kept = promoters_with_probes(_promoters(), _probes(), ["PLUS", "MINUS", "EMPTY"])
    assert kept.set_index("gene")["n_promoter_probes"].to_dict() == {"PLUS": 1, "MINUS": 1}


def test_windows_are_nested_ordered_and_strand_aware():
    promoters = promoters_with_probes(_promoters(), _probes(), ["PLUS", "MINUS"])
    windows = gene_windows(promoters, _probes(), [1_000, 100_000])
    plus = windows[windows["gene"] == "PLUS"]
    assert plus[plus["window_bp"] == 1_000]["probe_id"].tolist() == ["a", "b"]
    assert plus[plus["window_bp"] == 100_000]["probe_id"].tolist() == ["a", "b", "c"]
    minus = windows[(windows["gene"] == "MINUS") & (windows["window_bp"] == 1_000)]
    assert minus["distance_to_tss"].tolist() == [-200]  # downstream of a minus-strand TSS
    assert plus.set_index("probe_id")["distance_to_tss"].to_dict() == {
        "a": 500, "b": 1_900, "c": 84_000,
    }
    assert "e" not in set(windows["probe_id"])  # other chromosome


def test_window_counts_are_the_input_lengths():
    promoters = _promoters().set_index(pd.Index([7, 7, 3]))  # counts follow row order, not labels
    assert window_counts(promoters, _probes(), 1_000).tolist() == [2, 1, 0]
    assert window_counts(promoters, _probes(), 100_000).tolist() == [3, 1, 0]
