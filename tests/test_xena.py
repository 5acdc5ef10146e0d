import gzip

import numpy as np
import pytest

from dmg_ml.data.xena import (
    SourceFormatError,
    iter_matrix_blocks,
    normalise_chromosome,
    read_matrix,
    read_matrix_header,
    read_probe_map,
)


def _write_matrix(path, header, rows):
    text = "\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows)
    with gzip.open(path, "wt") as handle:
        handle.write(text)
    return path


def test_matrix_is_read_in_blocks_with_missing_values(tmp_path):
    rows = [[f"cg{i:08d}", f"{i / 1000:.3f}", "NA", "0.5"] for i in range(3000)]
    path = _write_matrix(tmp_path / "m.gz", ["sample", "S1", "S2", "S3"], rows)
    blocks = list(iter_matrix_blocks(path, ["S3", "S1"], block_bytes=8_000))
    assert len(blocks) > 1
    values = np.concatenate([b.values for b in blocks])
    assert values.shape == (3000, 2)
    assert values[:, 0].tolist() == [0.5] * 3000  # columns in the order asked for
    assert values[10, 1] == pytest.approx(0.01)
    whole = read_matrix(path)
    assert np.isnan(whole["S2"]).all() and whole.index[0] == "cg00000000"


def test_duplicate_barcodes_in_header_are_rejected(tmp_path):
    path = _write_matrix(tmp_path / "m.gz", ["sample", "S1", "S2", "S1"], [["cg1", "0", "0", "0"]])
    with pytest.raises(SourceFormatError, match=r"more than once: \['S1'\]"):
        read_matrix_header(path)


def test_duplicate_row_ids_are_rejected(tmp_path):
    path = _write_matrix(tmp_path / "m.gz", ["sample", "S1"], [["cg1", "0"], ["cg1", "1"]])
    with pytest.raises(SourceFormatError, match="row ids repeated"):
        read_matrix(path)


def test_truncated_gzip_is_reported(tmp_path):
    rows = [[f"cg{i:08d}"] + [f"{(i * j) % 997 / 997:.4f}" for j in range(50)] for i in range(4000)]
    path = _write_matrix(tmp_path / "m.gz", ["sample"] + [f"S{j}" for j in range(50)], rows)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceFormatError, match="gzip"):
        read_matrix(path)


def test_non_numeric_cells_are_reported(tmp_path):
    path = _write_matrix(tmp_path / "m.gz", ["sample", "S1"], [["cg1", "high"]])
    with pytest.raises(SourceFormatError, match="unreadable matrix"):
        read_matrix(path)


def test_probe_map_keeps_located_probes(tmp_path):
    path = tmp_path / "probeMap"
    path.write_text(
        "#id\tgene\tchrom\tchromStart\tchromEnd\tstrand\n"
        "cg1\tA\tchr1\t100\t101\t+\n"
        "cg2\t.\t.\t-1\t-1\t.\n"
        "cg3\tB\tchrY\t5\t6\t-\n"
        "cg4\tC\tchrX\t70\t71\t+\n"
    )
    probes = read_probe_map(path)
    assert probes["probe_id"].tolist() == ["cg1", "cg4"]
    assert probes["position"].tolist() == [100, 70]


def test_probe_map_missing_a_column_is_rejected(tmp_path):
    path = tmp_path / "probeMap"
    path.write_text("#id\tgene\tchromStart\tchromEnd\tstrand\ncg1\tA\t100\t101\t+\n")
    with pytest.raises(SourceFormatError, match=r"lacks column\(s\) \['chrom'\]"):
        read_probe_map(path)


PROBE_MAP_HEADER = "#id\tgene\tchrom\tchromStart\tchromEnd\tstrand\n"


def _probe_map(path, rows):
    path.write_text(PROBE_MAP_HEADER + "".join("\t".join(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("text", ["", PROBE_MAP_HEADER])
def test_empty_probe_map_is_rejected_naming_the_file(tmp_path, text):
    path = tmp_path / "probeMap_hg19"
    path.write_text(text)
    with pytest.raises(SourceFormatError, match=r"probeMap_hg19: .*no probes"):
        read_probe_map(path)


@pytest.mark.parametrize("start", ["abc", "0", "-5", "1.5", ""])
def test_probe_on_our_chromosome_without_a_positive_start_is_rejected(tmp_path, start):
    path = _probe_map(
        tmp_path / "probeMap_hg19",
        [
            ["cg1", "A", "chr1", "100", "101", "+"],
            ["cg2", "B", "chr2", start, "", "+"],
            ["cg3", "C", "chr3", start, "", "+"],
            ["cg4", ".", ".", "-1", "-1", "."],  # unlocated: still dropped quietly
        ],
    )
    with pytest.raises(
        SourceFormatError, match=r"probeMap_hg19: 2 probe\(s\) on .*chromStart.*'cg2', 'cg3'"
    ):
        read_probe_map(path)


def test_unlocated_probes_are_dropped_and_counted(tmp_path):
    path = _probe_map(
        tmp_path / "probeMap",
        [
            ["cg1", "A", "chr1", "100", "101", "+"],
            ["cg2", ".", ".", "-1", "-1", "."],
            ["cg3", ".", "NA", "NA", "NA", "."],
            ["cg4", ".", "", "", "", "."],
            ["cg5", "B", "chrY", "5", "6", "-"],
        ],
    )
    probes = read_probe_map(path)
    assert probes["probe_id"].tolist() == ["cg1"]
    assert probes.attrs["n_unlocated"] == 3
    assert probes.attrs["n_off_chromosomes"] == 1


def test_chromosome_aliases_are_normalised_and_stated(tmp_path):
    path = _probe_map(
        tmp_path / "probeMap",
        [
            ["cg1", "A", "chr23", "100", "101", "+"],
            ["cg2", "A", "23", "200", "201", "+"],
            ["cg3", "A", "CHR1", "300", "301", "+"],
            ["cg4", "A", "7", "400", "401", "+"],
            ["cg5", "A", "X", "500", "501", "+"],
            ["cg6", "A", "chr24", "600", "601", "+"],
            ["cg7", "A", "chr2", "700", "701", "+"],
        ],
    )
    probes = read_probe_map(path)
    assert probes.set_index("probe_id")["chromosome"].to_dict() == {
        "cg1": "chrX", "cg2": "chrX", "cg3": "chr1", "cg4": "chr7", "cg5": "chrX", "cg7": "chr2",
    }
    assert probes.attrs["chromosome_aliases"] == {
        "23": "chrX", "7": "chr7", "CHR1": "chr1", "X": "chrX", "chr23": "chrX", "chr24": "chrY",
    }


def test_probe_map_with_no_probe_on_our_chromosomes_names_what_it_found(tmp_path):
    path = _probe_map(
        tmp_path / "probeMap_hg19",
        [
            ["cg1", "A", "NC_000001.10", "100", "101", "+"],
            ["cg2", "A", "chrY", "200", "201", "+"],
            ["cg3", ".", ".", "-1", "-1", "."],
        ],
    )
    with pytest.raises(
        SourceFormatError, match=r"probeMap_hg19: no probe lies on chr1.*'NC_000001.10', 'chrY'"
    ):
        read_probe_map(path)


def test_non_numeric_cell_names_the_row_and_sample(tmp_path):
    path = _write_matrix(
        tmp_path / "HiSeqV2.gz", ["sample", "S1", "S2", "S3"],
        [["G1", "1", "2", "3"], ["G2", "4", "high", "6"]],
    )
    with pytest.raises(SourceFormatError, match=r"HiSeqV2.gz: .*'high'.*row 'G2'.*sample 'S2'"):
        read_matrix(path, ["S3", "S2"])


def test_read_matrix_records_its_source_file(tmp_path):
    path = _write_matrix(tmp_path / "HiSeqV2.gz", ["sample", "S1"], [["G1", "1"]])
    assert read_matrix(path).attrs["source"] == "HiSeqV2.gz"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("chr23", "chrX"), ("24", "chrY"), ("chrMT", "chrM"), ("01", "chr1"), ("chrx", "chrX"),
     ("chr25", "chr25"), ("0", "0"), (".", "."), ("chrUn_gl000220", "chrUn_gl000220")],
)
def test_normalise_chromosome(name, expected):
    assert normalise_chromosome(name) == expected
