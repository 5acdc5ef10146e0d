"""Samples that imputation would mostly invent are an error, raised after the last block."""

import gzip

import numpy as np
import pandas as pd
import pytest

from dmg_ml.data.methylation import MValueStream, SampleMissingError

N_PROBES = 400
SAMPLES = [f"S{j:02d}" for j in range(12)]


def _stream(tmp_path, missing: dict[str, float], block_bytes: int = 4_000) -> MValueStream:
    """A 400-probe beta matrix in which sample ``s`` misses the first ``missing[s]`` of probes."""
    rng = np.random.default_rng(1)
    beta = rng.uniform(0.05, 0.95, (N_PROBES, len(SAMPLES)))
    cells = np.array([[f"{b:.4f}" for b in row] for row in beta], dtype=object)
    for sample, fraction in missing.items():
        cells[: int(round(fraction * N_PROBES)), SAMPLES.index(sample)] = "NA"
    ids = [f"cg{i:08d}" for i in range(N_PROBES)]
    path = tmp_path / "HumanMethylation450.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("\t".join(["sample", *SAMPLES]) + "\n")
        for probe, row in zip(ids, cells, strict=True):
            handle.write("\t".join([probe, *row]) + "\n")
    coordinates = pd.DataFrame(
        {"probe_id": ids, "chromosome": "chr1", "position": np.arange(1, N_PROBES + 1) * 100}
    )
    return MValueStream(
        path=path, samples=SAMPLES, coordinates=coordinates, block_bytes=block_bytes
    )


def test_all_na_sample_is_reported_after_the_last_block(tmp_path):
    stream = _stream(tmp_path, {"S03": 1.0})
    yielded = []
    with pytest.raises(SampleMissingError, match=r"1 sample.*'S03' \(100\.0%\).*Exclude"):
        for block in stream.blocks():
            yielded.append(block)
    assert len(yielded) > 1
    assert sum(len(b.probe_ids) for b in yielded) == N_PROBES  # every block was yielded first


def test_mostly_na_samples_are_named_and_lightly_missing_ones_pass(tmp_path):
    stream = _stream(tmp_path, {"S01": 0.3, "S07": 0.25, "S09": 0.1})
    with pytest.raises(SampleMissingError, match=r"2 sample.*'S01' \(30\.0%\), 'S07' \(25\.0%\)"):
        list(stream.blocks())


def test_samples_within_the_limit_stream_through(tmp_path):
    stream = _stream(tmp_path, {"S01": 0.2, "S09": 0.1})
    blocks = list(stream.blocks())
    assert sum(len(b.probe_ids) for b in blocks) == N_PROBES
    assert stream.sample_missing_fraction()["S01"] == pytest.approx(0.2)
    assert list(stream.probe_table().columns) == [
        "probe_id", "chromosome", "position", "missing_fraction", "kept",
    ]


def test_sample_limit_follows_max_missing_fraction(tmp_path):
    stream = _stream(tmp_path, {"S01": 0.3})
    stream.max_missing_fraction = 0.5
    list(stream.blocks())
    assert stream.sample_missing_fraction()["S01"] == pytest.approx(0.3)
