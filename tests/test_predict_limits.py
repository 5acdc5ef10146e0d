"""The prediction reader's caps and its messages for bytes it cannot read (docs/design.md §10).

Every cap is lowered here, on the module that checks it and is its one home (the stream's caps
and block size on ``dmg_ml.prediction.stream``, the matrix's on ``dmg_ml.prediction.inputs``),
so that a few kilobytes show what a file of gigabytes would meet: memory stays bounded because
a file is refused as soon as it passes a cap, never after it has been held whole.
"""

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dmg_ml.prediction
from dmg_ml.prediction import inputs, stream
from dmg_ml.prediction.inputs import PredictionInputError, read_methylation

HEADER = "probe\tS1\tS2\n"


def rows(n: int, start: int = 0) -> str:
    return "".join(f"cg{start + i:08d}\t0.{i % 9 + 1}\t0.5\n" for i in range(n))


def refused(path: Path, match: str) -> str:
    with pytest.raises(PredictionInputError, match=match) as error:
        read_methylation(path)
    message = str(error.value)
    assert message.startswith(f"{path.name}: ") and "\n" not in message
    return message


def small_reads(monkeypatch, line: int, block: int) -> list[int]:
    """Lower the line cap and the block size; the sizes the parser asks of the stream, filled as
    the file is read, to show that the lowered block size is the one read by."""
    monkeypatch.setattr(stream, "MAX_LINE_BYTES", line)
    monkeypatch.setattr(stream, "BLOCK_BYTES", block)
    sizes: list[int] = []
    read = stream.BoundedSource.read

    def counted(self, size: int = -1) -> bytes:
        sizes.append(size)
        return read(self, size)

    monkeypatch.setattr(stream.BoundedSource, "read", counted)
    return sizes


def test_a_line_longer_than_the_cap_is_refused_naming_the_file_and_the_line(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(stream, "MAX_LINE_BYTES", 200)
    path = tmp_path / "lab.tsv"
    path.write_text(HEADER + rows(3) + "cg99999999\t" + "1" * 300 + "\t0.5\n" + rows(2, 10))
    message = refused(path, r"line 5 is longer than 200 bytes")
    assert "MAX_LINE_BYTES" in message


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_a_file_without_a_newline_is_refused_at_the_cap(gzipped, tmp_path, monkeypatch):
    """The 2 GB file without a newline and the gzip of 1 GiB of NUL bytes, in small."""
    monkeypatch.setattr(stream, "MAX_LINE_BYTES", 1_000)
    path = tmp_path / ("lab.tsv.gz" if gzipped else "lab.tsv")
    body = b"\0" * 200_000 if gzipped else b"1" * 200_000
    path.write_bytes(gzip.compress(body) if gzipped else body)
    refused(path, r"line 1 is longer than 1,000 bytes")


def test_a_gzip_that_decompresses_far_beyond_its_size_is_refused(tmp_path, monkeypatch):
    """Blank lines are skipped by the parser: without the ratio cap, a small gzip of newlines
    would be decompressed to the end."""
    monkeypatch.setattr(stream, "MAX_GZIP_RATIO", 20)
    monkeypatch.setattr(stream, "GZIP_RATIO_AFTER", 100_000)
    path = tmp_path / "lab.tsv.gz"
    path.write_bytes(gzip.compress((HEADER + rows(2) + "\n" * 2_000_000).encode()))
    message = refused(path, r"decompresses to more than 20× its compressed size")
    assert "MAX_GZIP_RATIO" in message


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_a_file_larger_than_the_cap_is_refused(gzipped, tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "MAX_INPUT_BYTES", 2_000)
    path = tmp_path / ("lab.tsv.gz" if gzipped else "lab.tsv")
    text = (HEADER + rows(300)).encode()
    path.write_bytes(gzip.compress(text) if gzipped else text)
    message = refused(path, r"more than 2,000 bytes")
    assert "MAX_INPUT_BYTES" in message


@pytest.mark.parametrize("cap, value, text, match", [
    ("MAX_SAMPLES", 2, "probe\tS1\tS2\tS3\n" + "cg00000001\t0.1\t0.2\t0.3\n",
     r"3 samples, more than the cap of 2 \(MAX_SAMPLES\)"),
    ("MAX_ROWS", 4, HEADER + rows(5), r"more than 4 rows \(MAX_ROWS\)"),
    ("MAX_CELLS", 10, HEADER + rows(6), r"more than 10 values .*\(MAX_CELLS\)"),
    ("MAX_ID_CHARS", 20, HEADER + rows(2) + "control_probe_with_a_long_name\t0.1\t0.2\n",
     r"data row 3 has a row id of 30 characters, more than 20 \(MAX_ID_CHARS\)"),
])
def test_a_file_beyond_a_size_cap_is_refused_naming_the_cap(cap, value, text, match, tmp_path,
                                                            monkeypatch):
    monkeypatch.setattr(inputs, cap, value)
    path = tmp_path / "lab.tsv"
    path.write_text(text)
    refused(path, match)


def test_the_caps_let_a_full_epic_array_through():
    """The caps fit a real lab file: an EPIC v2 array (~937k rows) with a few hundred samples,
    a header of thousands of TCGA barcodes, its longest ids."""
    assert inputs.MAX_ROWS >= 1_000_000 and inputs.MAX_SAMPLES >= 5_000
    assert inputs.MAX_CELLS >= 937_000 * 250
    assert stream.MAX_LINE_BYTES >= inputs.MAX_SAMPLES * 30
    assert len("ch.X.123456789F_TC21") * 2 <= inputs.MAX_ID_CHARS
    assert stream.MAX_INPUT_BYTES >= inputs.MAX_CELLS * 12


def test_the_refusal_is_one_class_wherever_it_is_imported_from():
    assert inputs.PredictionInputError is stream.PredictionInputError
    assert dmg_ml.prediction.PredictionInputError is stream.PredictionInputError


def test_reading_in_many_small_blocks_gives_what_one_block_gives(tmp_path, monkeypatch):
    """Non-probe rows, empty probes, replicates and missing cells spread over many blocks."""
    rng = np.random.default_rng(3)
    values = rng.uniform(0.0, 1.0, (120, 3)).round(4)
    ids = [f"cg{i:08d}_TC21" if i % 7 else f"cg{i:08d}" for i in range(120)]
    frame = pd.DataFrame(values, index=ids, columns=["A", "B", "C"])
    frame.iloc[5, 1] = np.nan
    frame.iloc[9] = np.nan  # an empty probe
    replicates = frame.iloc[[1, 50]].rename(index=lambda p: p.replace("_TC21", "_BC11"))
    control = pd.DataFrame([[0.5, 0.5, 0.5]], index=["control_1"], columns=frame.columns)
    text = pd.concat([frame.iloc[:60], control, replicates, frame.iloc[60:]]).rename_axis(
        "probe").to_csv(sep="\t", na_rep="NA")
    path = tmp_path / "lab.tsv"
    path.write_text(text)
    whole = read_methylation(path)
    sizes = small_reads(monkeypatch, line=100, block=256)
    blocks = read_methylation(path)
    assert len(sizes) > 10 and max(sizes) <= 256
    pd.testing.assert_frame_equal(blocks.m_values, whole.m_values)
    assert blocks.summary() == whole.summary()
    assert (blocks.merged_replicates, blocks.non_probe_rows, blocks.empty_probes) == (
        {"cg00000001": 2, "cg00000050": 2}, ["control_1"], ["cg00000009"])
    assert blocks.n_probes == 119 and blocks.n_missing_cells == 1


def test_a_non_numeric_cell_in_a_later_block_is_named(tmp_path, monkeypatch):
    sizes = small_reads(monkeypatch, line=100, block=256)
    path = tmp_path / "lab.tsv"
    missing = "cg00000039\tNA\t\n"  # missing cells are no non-numeric cells
    path.write_text(HEADER + rows(39) + missing + "cg00000040\t0.3\tabc\n" + rows(40, 41))
    refused(path, r"non-numeric cells, e.g. \(probe, sample, value\) \[\('cg00000040', 'S2', "
            r"'abc'\)\]")
    assert path.stat().st_size > 4 * 256 and max(sizes) <= 256  # the cell lies blocks in


def test_a_row_with_too_few_cells_is_named(tmp_path):
    path = tmp_path / "lab.tsv"
    path.write_text(HEADER + rows(2) + "cg00000003\t0.1\n")
    refused(path, r"the row of 'cg00000003' \(data row 3\) has 2 cells where the header has 3")


@pytest.mark.parametrize("body, match", [
    (b"probe\tS\xbf1\tS2\ncg00000001\t0.2\t0.3\n",
     r"line 1 \(the header\), column 2: byte 0xbf is not UTF-8"),
    (b"probe\tS1\tS2\ncg00000001\t0.2\t0.3\ncg00000002\t0.4\t0.\xbf5\n",
     r"line 3 \(probe 'cg00000002', sample 'S2'\): byte 0xbf is not UTF-8"),
    (b"probe\tS1\tS2\ncg0000\xe90001\t0.2\t0.3\n",
     r"line 2 \(probe 'cg0000\\xe90001'\): byte 0xe9 is not UTF-8"),
    ("probe\tS1\ncg00000001\t0.2\n".encode("utf-16"), r"UTF-16"),
])
def test_bytes_that_are_not_utf8_are_refused_naming_the_line_and_the_cell(body, match,
                                                                          tmp_path):
    path = tmp_path / "lab.tsv"
    path.write_bytes(body)
    message = refused(path, match)
    assert "codec" not in message and "save the file as UTF-8" in message


def test_a_utf8_bom_and_multibyte_text_split_across_reads_are_read(tmp_path, monkeypatch):
    """Rows of 21 bytes read 80 bytes at a time: some 'ô' fall across two reads."""
    sizes = small_reads(monkeypatch, line=40, block=80)
    controls = [f"contrôle_{i:02d}" for i in range(30)]
    text = "\ufeffprobe\tÉchantillon-1\tprøve-2\n" + "".join(
        f"{c}\t0.1\t0.2\ncg{i:08d}\t0.3\t0.4\n" for i, c in enumerate(controls))
    path = tmp_path / "lab.tsv"
    path.write_bytes(text.encode())
    data = read_methylation(path)
    assert data.m_values.columns.tolist() == ["Échantillon-1", "prøve-2"]
    assert data.n_probes == 30 and data.non_probe_rows == controls
    assert len(sizes) > 10 and max(sizes) <= 80


def test_a_broken_sequence_across_two_reads_names_its_first_byte(tmp_path, monkeypatch):
    """0xc3 opens a two-byte character as the last byte of one read (the first 80 bytes); the
    next read does not go on with it."""
    sizes = small_reads(monkeypatch, line=40, block=80)
    start = HEADER.encode() + rows(2).encode() + b"cg00000009\t0.1\t"
    text = start + b"x" * (79 - len(start)) + b"\xc3" + b"y\n"
    assert text.index(b"\xc3") == 79
    path = tmp_path / "lab.tsv"
    path.write_bytes(text)
    refused(path, r"line 4 \(probe 'cg00000009', sample 'S2'\): byte 0xc3 is not UTF-8")
    assert sizes and max(sizes) <= 80
