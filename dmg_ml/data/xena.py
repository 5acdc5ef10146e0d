"""Streaming readers for the UCSC Xena TCGA file formats (docs/design.md §2).

The methylation matrix of a full cohort is 485,577 probes × ~900 samples: it is read in row blocks
with pyarrow's streaming CSV reader and never held whole.

Nothing is dropped or invented silently. A non-numeric matrix cell fails with its row id and sample
named; ``read_matrix`` records the file name in ``DataFrame.attrs["source"]`` so that later checks
(``preprocess.check_expression_finite``) can name it too. The probe map normalises chromosome
aliases (``chr23``/``23`` → chrX, ``chr24``/``24`` → chrY, ``7`` → chr7, ``CHR1`` → chr1, ``MT`` →
chrM) and states them in ``attrs["chromosome_aliases"]``; it drops probes without a chromosome
(``.``, ``NA``, empty: ``attrs["n_unlocated"]``) and probes on chromosomes outside ``CHROMOSOMES``
(``attrs["n_off_chromosomes"]``), and fails when the file holds no probes, when no probe lies on
``CHROMOSOMES``, or when a probe on ``CHROMOSOMES`` lacks a positive integer ``chromStart``.
"""

from __future__ import annotations

import gzip
import logging
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from dmg_ml import defaults
from dmg_ml.data.genome import CHROMOSOMES

#: The cohorts of the study: trained on BRCA, generalisation tested on COAD, GBM and LUAD.
DEFAULT_COHORTS: tuple[str, ...] = defaults.COHORTS
#: Where each file lives under a hub's download root (the public hub and the synthetic one alike).
METHYLATION_PATH = "TCGA.{cohort}.sampleMap/HumanMethylation450.gz"
EXPRESSION_PATH = "TCGA.{cohort}.sampleMap/HiSeqV2.gz"
#: Per-gene truth (expected R² and more), written beside the files by the synthetic hub only.
GROUND_TRUTH_PATH = "ground_truth/{cohort}/genes.tsv"
PROBE_MAP_PATH = "probeMap/illuminaMethyl450_hg19_GPL16304_TCGAlegacy"
PROBE_MAP_COLUMNS = ("#id", "gene", "chrom", "chromStart", "chromEnd", "strand")
NULL_VALUES = ["NA", "", "NaN", "nan"]
#: Probe-map chromosome cells that mean "no coordinates" (the probe is unlocated, not malformed).
UNLOCATED_CHROMOSOMES = frozenset({"", ".", "NA", "NaN", "nan"})
_CHROMOSOME_ALIAS = re.compile(r"(?:chr)?(\d{1,2}|X|Y|M|MT)", re.IGNORECASE)
_SEX_CHROMOSOME_NUMBERS = {23: "X", 24: "Y"}
_OUR_CHROMOSOMES = f"{CHROMOSOMES[0]}, {CHROMOSOMES[1]}, …, {CHROMOSOMES[-1]}"
_INVALID_CELL = re.compile(r"In CSV column #(\d+):.*invalid value '(.*)'", re.DOTALL)

logger = logging.getLogger(__name__)


def methylation_path(cohort: str) -> str:
    return METHYLATION_PATH.format(cohort=cohort)


def expression_path(cohort: str) -> str:
    return EXPRESSION_PATH.format(cohort=cohort)


class SourceFormatError(ValueError):
    """A source file does not have the format docs/design.md §2 describes."""


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
        detail = _invalid_cell(path, names, exc) or _short(exc)
        raise SourceFormatError(f"{path.name}: unreadable matrix ({detail})") from exc


def _check_unique_rows(path: Path, row_ids: np.ndarray, seen: set[str]) -> None:
    index = pd.Index(row_ids)
    repeated = index[index.duplicated() | index.isin(seen)].unique().tolist()
    if repeated:
        raise SourceFormatError(f"{path.name}: row ids repeated, e.g. {repeated[:5]}")
    seen.update(row_ids.tolist())


def _invalid_cell(path: Path, names: list[str], exc: Exception) -> str | None:
    """Name the row id and sample of the non-numeric cell pyarrow reports by column number only."""
    match = _INVALID_CELL.search(str(exc))
    if match is None or int(match.group(1)) >= len(names):
        return None
    column, value = int(match.group(1)), match.group(2)
    row = _first_row_with(path, column, value)
    where = f"row {row!r}, " if row is not None else ""
    return f"non-numeric value {value!r} in {where}sample {names[column]!r}"


def _first_row_with(path: Path, column: int, value: str) -> str | None:
    """Row id of the first data line whose ``column`` holds ``value``; scans, on error only."""
    try:
        with _open_text(path) as handle:
            handle.readline()
            for line in handle:
                cells = line.rstrip("\r\n").split("\t", column + 1)
                if len(cells) > column and cells[column] == value:
                    return cells[0]
    except (EOFError, OSError, zlib.error):
        return None
    return None


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
    """Whole matrix as a rows × samples float32 DataFrame (for small matrices such as HiSeqV2).

    ``attrs["source"]`` holds the file name, for error messages of later checks.
    """
    path = Path(path)
    blocks = list(iter_matrix_blocks(path, columns))
    header = list(columns) if columns is not None else read_matrix_header(path)
    if not blocks:
        frame = pd.DataFrame(columns=header, dtype=np.float32)
    else:
        ids = np.concatenate([b.row_ids for b in blocks])
        values = np.concatenate([b.values for b in blocks])
        frame = pd.DataFrame(values, index=pd.Index(ids, name="row_id"), columns=header)
    frame.attrs["source"] = path.name
    return frame


def read_probe_map(path: str | Path) -> pd.DataFrame:
    """Probe coordinates from a Xena probe map: ``probe_id, chromosome, position``.

    Only probes on ``CHROMOSOMES`` are returned (docs/design.md §3 step 4), with chromosome aliases
    normalised (``normalise_chromosome``). ``attrs`` states what was normalised or left out:
    ``chromosome_aliases`` (alias → name, for every alias met), ``n_unlocated`` (rows without a
    chromosome) and ``n_off_chromosomes`` (rows on other chromosomes, such as chrY or chrM).
    Raises ``SourceFormatError`` naming the file when it holds no probes, when no probe lies on
    ``CHROMOSOMES``, when a probe on them lacks a positive integer ``chromStart`` or when a probe
    id repeats.
    """
    path = Path(path)
    table = _read_probe_table(path)
    raw = table["chrom"].str.strip()
    aliases = _chromosome_aliases(raw)
    chromosome = raw.replace(aliases)
    unlocated = raw.isin(UNLOCATED_CHROMOSOMES)
    ours = chromosome.isin(CHROMOSOMES)
    if not ours.any():
        raise SourceFormatError(
            f"{path.name}: no probe lies on {_OUR_CHROMOSOMES}; chromosome names "
            f"found: {_most_common(raw[~unlocated])} ({int(unlocated.sum()):,} row(s) without one)"
        )
    position = _positive_integers(table["chromStart"])
    _check_positions(path, table.loc[ours], position[ours])
    probes = pd.DataFrame(
        {
            "probe_id": table.loc[ours, "#id"].to_numpy(),
            "chromosome": chromosome[ours].to_numpy(),
            "position": position[ours].astype("int64").to_numpy(),
        }
    )
    if probes["probe_id"].duplicated().any():
        repeated = probes.loc[probes["probe_id"].duplicated(), "probe_id"].head(5).tolist()
        raise SourceFormatError(f"{path.name}: probe ids repeated, e.g. {repeated}")
    probes.attrs.update(
        source=path.name,
        chromosome_aliases=aliases,
        n_unlocated=int(unlocated.sum()),
        n_off_chromosomes=int((~ours & ~unlocated).sum()),
    )
    if aliases:
        logger.info("%s: chromosome names normalised: %s", path.name, aliases)
    return probes


def normalise_chromosome(name: str) -> str:
    """Chromosome alias → UCSC name: ``chr23``/``23`` → chrX, ``chr24``/``24`` → chrY, ``7`` → chr7,
    ``CHR1`` → chr1, ``MT`` → chrM.

    Names that are no such alias (``.``, ``chrUn_gl000220``, ``chr25``) come back unchanged.
    """
    match = _CHROMOSOME_ALIAS.fullmatch(name.strip())
    if match is None:
        return name
    key = match.group(1).upper()
    if key.isdigit():
        number = int(key)
        if not 1 <= number <= 24:
            return name
        key = _SEX_CHROMOSOME_NUMBERS.get(number, str(number))
    return f"chr{'M' if key == 'MT' else key}"


def _read_probe_table(path: Path) -> pd.DataFrame:
    """The probe map as text cells; rejects unreadable or empty files and missing columns."""
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as exc:
        raise SourceFormatError(f"{path.name}: empty probe map, no probes") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise SourceFormatError(f"{path.name}: unreadable probe map ({exc})") from exc
    missing = [c for c in PROBE_MAP_COLUMNS if c not in table.columns]
    if missing:
        raise SourceFormatError(
            f"{path.name}: probe map lacks column(s) {missing}; expected {list(PROBE_MAP_COLUMNS)}"
        )
    if table.empty:
        raise SourceFormatError(f"{path.name}: probe map has a header but no probes")
    return table


def _chromosome_aliases(raw: pd.Series) -> dict[str, str]:
    """Alias → name for each distinct name in ``raw`` that ``normalise_chromosome`` changes."""
    names = {name: normalise_chromosome(name) for name in raw.unique()}
    return {name: new for name, new in sorted(names.items()) if new != name}


def _positive_integers(text: pd.Series) -> pd.Series:
    """``text`` as float, NaN wherever it is not a positive integer (``100.0`` counts as 100)."""
    numbers = pd.to_numeric(text.str.strip(), errors="coerce").astype("float64")
    valid = (numbers > 0) & np.isfinite(numbers) & (numbers == np.floor(numbers))
    return numbers.where(valid)


def _check_positions(path: Path, table: pd.DataFrame, position: pd.Series) -> None:
    """Reject probes on ``CHROMOSOMES`` whose ``chromStart`` is no positive integer."""
    bad = position.isna().to_numpy()
    if bad.any():
        rows = table.loc[bad]
        raise SourceFormatError(
            f"{path.name}: {int(bad.sum()):,} probe(s) on {_OUR_CHROMOSOMES} lack "
            f"a positive integer chromStart: {rows['#id'].head(5).tolist()} "
            f"(chromStart {rows['chromStart'].head(5).tolist()})"
        )


def _most_common(names: pd.Series, limit: int = 5) -> list[str]:
    counts = names.value_counts()
    return sorted(counts.index, key=lambda name: (-counts[name], name))[:limit]
