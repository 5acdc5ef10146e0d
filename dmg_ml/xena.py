"""Streaming readers for the UCSC Xena TCGA file formats (DESIGN.md §2).

The methylation matrix of a full cohort is 485,577 probes × ~900 samples: it is read in row blocks
with pyarrow's streaming CSV reader and never held whole.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from dmg_ml.genome import CHROMOSOMES

#: The cohorts of the study: trained on BRCA, generalisation tested on COAD, GBM and LUAD.
DEFAULT_COHORTS: tuple[str, ...] = ("BRCA", "COAD", "GBM", "LUAD")
#: Where each file lives under a hub's download root (the public hub and the synthetic one alike).
METHYLATION_PATH = "TCGA.{cohort}.sampleMap/HumanMethylation450.gz"
EXPRESSION_PATH = "TCGA.{cohort}.sampleMap/HiSeqV2.gz"
PROBE_MAP_PATH = "probeMap/illuminaMethyl450_hg19_GPL16304_TCGAlegacy"
PROBE_MAP_COLUMNS = ("#id", "gene", "chrom", "chromStart", "chromEnd", "strand")
NULL_VALUES = ["NA", "", "NaN", "nan"]


def methylation_path(cohort: str) -> str:
    return METHYLATION_PATH.format(cohort=cohort)


def expression_path(cohort: str) -> str:
    return EXPRESSION_PATH.format(cohort=cohort)


class SourceFormatError(ValueError):
    """A source file does not have the format DESIGN.md §2 describes."""


@dataclass(frozen=True)
class MatrixBlock:
    """A block of consecutive rows of a Xena matrix: ``values`` is rows × samples, float32."""

    row_ids: np.ndarray
    values: np.ndarray


def _open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def read_matrix_header(path: str | Path) -> list[str]:
    """Sample barcodes of a Xena matrix (header cells after ``sample``); rejects duplicates."""
    path = Path(path)
    try:
        with _open_text(path) as handle:
            line = handle.readline()
    except (EOFError, OSError, zlib.error) as exc:
        raise SourceFormatError(f"{path.name}: cannot read header ({exc})") from exc
    cells = line.rstrip("\r\n").split("\t")
    if len(cells) < 2 or not line.strip():
        raise SourceFormatError(f"{path.name}: header has no sample columns")
    samples = cells[1:]
    seen: set[str] = set()
    duplicates = sorted({s for s in samples if s in seen or seen.add(s)})
    if duplicates:
        raise SourceFormatError(
            f"{path.name}: header lists {len(duplicates)} barcode(s) more than once: "
            f"{duplicates[:5]}"
        )
    return samples


def iter_matrix_blocks(
    path: str | Path, columns: list[str] | None = None, block_bytes: int = 16 << 20
) -> Iterator[MatrixBlock]:
    """Yield row blocks of a Xena matrix, keeping only ``columns`` (all when None), in that order.

    Raises ``SourceFormatError`` on duplicate row ids, non-numeric cells or a truncated gzip.
    """
    path = Path(path)
    header = read_matrix_header(path)
    wanted = header if columns is None else list(columns)
    absent = sorted(set(wanted) - set(header))
    if absent:
        raise SourceFormatError(f"{path.name}: samples not in header: {absent[:5]}")
    names = ["row_id", *header]
    types = {"row_id": pa.string(), **{name: pa.float32() for name in wanted}}
    read_options = pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=block_bytes)
    convert = pacsv.ConvertOptions(
        column_types=types, include_columns=["row_id", *wanted], null_values=NULL_VALUES,
        strings_can_be_null=False,
    )
    parse = pacsv.ParseOptions(delimiter="\t")
    seen: set[str] = set()
    try:
        stream = pa.input_stream(str(path), compression="gzip" if path.suffix == ".gz" else None)
        reader = pacsv.open_csv(stream, read_options, parse, convert)
        for batch in reader:
            if batch.num_rows == 0:
                continue
            row_ids = np.asarray(batch.column(0).to_pylist(), dtype=object)
            _check_unique_rows(path, row_ids, seen)
            values = np.empty((batch.num_rows, len(wanted)), dtype=np.float32)
            for j in range(len(wanted)):
                values[:, j] = batch.column(j + 1).to_numpy(zero_copy_only=False)
            yield MatrixBlock(row_ids=row_ids, values=values)
    except (pa.ArrowInvalid, OSError, EOFError, zlib.error) as exc:
        raise SourceFormatError(f"{path.name}: unreadable matrix ({_short(exc)})") from exc


def _check_unique_rows(path: Path, row_ids: np.ndarray, seen: set[str]) -> None:
    index = pd.Index(row_ids)
    repeated = index[index.duplicated() | index.isin(seen)].unique().tolist()
    if repeated:
        raise SourceFormatError(f"{path.name}: row ids repeated, e.g. {repeated[:5]}")
    seen.update(row_ids.tolist())


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    lowered = message.lower()
    if any(w in lowered for w in ("gzip", "compress", "truncat")) or isinstance(
        exc, EOFError | zlib.error
    ):
        return f"truncated or corrupt gzip: {message}"
    return message


def read_matrix(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Whole matrix as a rows × samples float32 DataFrame (for small matrices such as HiSeqV2)."""
    blocks = list(iter_matrix_blocks(path, columns))
    header = list(columns) if columns is not None else read_matrix_header(path)
    if not blocks:
        return pd.DataFrame(columns=header, dtype=np.float32)
    ids = np.concatenate([b.row_ids for b in blocks])
    values = np.concatenate([b.values for b in blocks])
    return pd.DataFrame(values, index=pd.Index(ids, name="row_id"), columns=header)


def read_probe_map(path: str | Path) -> pd.DataFrame:
    """Probe coordinates from a Xena probe map: ``probe_id, chromosome, position``.

    Only probes on ``CHROMOSOMES`` with a positive start are returned (DESIGN.md §3 step 4).
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise SourceFormatError(f"{path.name}: unreadable probe map ({exc})") from exc
    missing = [c for c in PROBE_MAP_COLUMNS if c not in table.columns]
    if missing:
        raise SourceFormatError(
            f"{path.name}: probe map lacks column(s) {missing}; expected {list(PROBE_MAP_COLUMNS)}"
        )
    position = pd.to_numeric(table["chromStart"], errors="coerce")
    located = table["chrom"].isin(CHROMOSOMES) & (position > 0)
    probes = pd.DataFrame(
        {
            "probe_id": table.loc[located, "#id"].to_numpy(),
            "chromosome": table.loc[located, "chrom"].to_numpy(),
            "position": position[located].astype("int64").to_numpy(),
        }
    )
    if probes["probe_id"].duplicated().any():
        repeated = probes.loc[probes["probe_id"].duplicated(), "probe_id"].head(5).tolist()
        raise SourceFormatError(f"{path.name}: probe ids repeated, e.g. {repeated}")
    return probes
