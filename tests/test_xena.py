import gzip

import numpy as np
import pytest

from dmg_ml.xena import (
    SourceFormatError,
    iter_matrix_blocks,
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
