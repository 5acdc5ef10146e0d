"""A new lab's methylation matrix, read and checked before any model sees it (docs/design.md §10).

Accepted files: a probes × samples matrix whose first column holds probe ids and whose header holds
sample ids: a UCSC Xena β matrix (``HumanMethylation450.gz``) or any TSV or CSV of that shape,
gzipped or not (gzip is recognised by its magic bytes). The separator follows the extension once a
``.gz`` is set aside: ``.csv`` → comma, anything else → tab. Cells ``NA``, ``NaN``, ``nan`` and
empty are missing values.

Rules, each stated in the returned ``MethylationInput`` (``summary()``) rather than applied
silently:

* **Probe ids.** 450K and EPIC ids: ``cg`` + digits, ``ch`` + digits, ``ch.<chromosome>.<digits>``
  with an optional strand letter (``ch.1.1240440F``) and ``rs`` + digits. EPIC v2 ids carry a
  suffix (``cg00000029_TC21``): it is stripped so they match the 450K ids the models were trained
  on (``renamed_probes``: original → stripped). EPIC v2 replicate probes (distinct suffixes of one
  id) are averaged, in the file's own scale, as SeSAMe's ``betasCollapseToPfx`` does
  (``merged_replicates``). Rows whose id is no probe id (control probes, a summary row) are left
  out and listed (``non_probe_rows``); a file without a single probe row is refused. One id twice
  is refused.
* **β or M-values.** ``scale="auto"`` (the default) looks at every non-missing cell: all in
  [0, 1] → β. At least ``BETA_SHARE`` (99 %) in [0, 1] but not all → a β file with broken cells,
  refused with the cells named (a β is a fraction, and reading the file as M-values would take
  every β for an M-value near 0, a half-methylated CpG). Fewer → M-values (a real M-value file
  has most of its values outside [0, 1]), unless no value is below 0: β in percent (0-100), or a
  file whose scale cannot be told, refused saying what was seen and how to state the scale (an
  M-value file has negative values for its unmethylated CpGs). ``scale="beta"`` or
  ``"m_value"`` overrides the detection: a small M-value file whose values all happen to lie in
  [0, 1] needs ``scale="m_value"``.
* **Conversion and clamp.** β becomes M with the project's ``beta_to_m`` (the training data's
  own transform, β = 0 → −``M_CLAMP``, β = 1 → +``M_CLAMP``). M-values beyond ±``M_CLAMP`` (±inf
  included) are clamped to it, counted in ``n_clamped``: no training M-value lies beyond, so a
  model never saw one, and clamping is what the training data's transform does to the same
  extreme β.
* **Missing values.** NaN cells stay NaN (prediction fills them with each fold's training mean and
  counts them). Probes without a single value are left out (``empty_probes``), so they count as
  missing in a gene's coverage; a sample without a single value is refused.

Refused, with ``PredictionInputError`` naming the file and the offending rows, columns or cells,
and nothing returned: an empty file or a header without rows, a header without samples or with an
empty or repeated sample id, a transposed matrix (probe ids in the header), non-numeric cells, a
row with the wrong number of cells, repeated probe ids, β values outside [0, 1], no probe row, a
file with no value at all, a sample without any value, bytes that are not UTF-8 (line, probe and
sample named), a damaged gzip stream.

**Caps, and the memory they bound.** A file is read as a stream, block by block
(``BLOCK_BYTES`` of text), and refused as soon as it passes one of the caps below, each named in
the message, before anything more of it is held. The stream's caps are checked, and live, in
``dmg_ml.prediction.stream`` (``BoundedSource``): a line longer than ``MAX_LINE_BYTES``, more
than ``MAX_INPUT_BYTES`` of text (decompressed), a gzip stream that decompresses to more than
``MAX_GZIP_RATIO`` times what it has read (once past ``GZIP_RATIO_AFTER``; a methylation matrix
compresses 2-5×); ``BLOCK_BYTES`` lives there too. The matrix's caps are checked, and live, here:
more than ``MAX_SAMPLES`` samples, ``MAX_ROWS`` rows or ``MAX_CELLS`` values (probe rows ×
samples), a row id longer than ``MAX_ID_CHARS``. What is held: the values once, as
float32, in one array reserved for ``MAX_CELLS`` values (1 GB, resident only as far as it is
filled: β → M and the replicates' merge work in place); the row ids (at most ``MAX_ROWS`` of at
most ``MAX_ID_CHARS``, ~0.25 GB); the parser's read-ahead (32 blocks, 64 MiB). Peak RSS of
``dmg predict`` measured with ``/usr/bin/time -v`` (0.53 GiB for a file of one cell): 1.85 GiB
for a file at the row, id and value caps at once (1.5M rows of 100-character ids × 166 samples),
1.68 GiB for 450K × 556 samples, 1.54 GiB for 450K × 600 samples (refused at ``MAX_CELLS``),
0.49 GiB for a 2 GB file without a newline or a gzip of 1 GiB of NUL bytes (refused at
``MAX_LINE_BYTES``): under 2 GiB for any file. A full EPIC array fits 288 samples (450K: 514);
a larger batch is refused with that advice: split its samples over several files. The caps are
module constants, each in the one module that checks it.

The module stays whole past 400 lines because the parse, the rules and the scale detection share
one private record, ``_Values``, filled block by block and read by every rule: split apart, that
record would become an interface between modules that only this one read uses.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from dmg_ml.data.preprocess import M_CLAMP, beta_to_m
from dmg_ml.data.xena import NULL_VALUES
from dmg_ml.prediction.stream import (
    BoundedSource,
    PredictionInputError,
    block_bytes,
    open_source,
)

Scale = Literal["beta", "m_value"]
SCALES: tuple[str, ...] = ("auto", "beta", "m_value")
#: A file with at least this share of its values in [0, 1] is a β file: any value outside is an
#: error, not a sign of M-values.
BETA_SHARE = 0.99
#: The most samples (columns) a file may hold: a lab batch of a few thousand fits.
MAX_SAMPLES = 10_000
#: The most rows a file may hold: EPIC v2 has ~937k, 450K 485,577.
MAX_ROWS = 1_500_000
#: The most values (probe rows × samples) held: 1 GB of float32; EPIC × 288 or 450K × 514.
MAX_CELLS = 250_000_000
#: The longest row id: probe ids have at most ~20 characters, control-probe names ~40.
MAX_ID_CHARS = 100
#: A 450K / EPIC probe id, with the optional EPIC v2 suffix (``_TC21``) as ``suffix``.
PROBE_ID = re.compile(
    r"(?P<base>cg\d+|ch\d+|ch\.(?:\d{1,2}|X|Y)\.\d+[A-Z]?|rs\d+)(?P<suffix>_[A-Za-z0-9]+)?"
)
_BARCODE = re.compile(r"TCGA-\w\w-\w{4}", re.IGNORECASE)
_INVALID_CELL = re.compile(r"In CSV column #(\d+): .*invalid value '(.*)'", re.DOTALL)
_ROW_ID = "\x00row_id"
_EXAMPLES = 5
_EPIC_PROBES, _450K_PROBES = 866_000, 485_577


@dataclass(frozen=True)
class MethylationInput:
    """A new lab's methylation, ready for prediction.

    ``m_values`` is probes × samples (index ``probe_id``, columns ``sample``), float32 M-values,
    NaN for missing cells. ``scale`` is what the file held (``"beta"`` or ``"m_value"``) and
    ``scale_detected`` whether it was detected (``scale="auto"``) rather than given.
    """

    source: str
    m_values: pd.DataFrame
    scale: Scale
    scale_detected: bool = True
    renamed_probes: dict[str, str] = field(default_factory=dict)
    merged_replicates: dict[str, int] = field(default_factory=dict)
    non_probe_rows: list[str] = field(default_factory=list)
    empty_probes: list[str] = field(default_factory=list)
    n_clamped: int = 0

    @property
    def n_probes(self) -> int:
        return int(self.m_values.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.m_values.shape[1])

    @property
    def n_missing_cells(self) -> int:
        values = self.m_values.to_numpy()
        step = _rows_per_chunk(values.shape[1])
        return sum(int(np.isnan(values[i:i + step]).sum()) for i in range(0, len(values), step))

    def summary(self) -> str:
        """What was read and every rule that changed something, in one paragraph."""
        how = "detected" if self.scale_detected else "as given"
        scale = ("β values", "converted to M-values") if self.scale == "beta" else (
            "M-values", "used as they are")
        parts = [f"{self.source}: {self.n_probes:,} probes × {self.n_samples:,} samples, "
                 f"{scale[0]} ({how}), {scale[1]}"]
        if self.renamed_probes:
            first = next(iter(self.renamed_probes.items()))
            parts.append(f"{len(self.renamed_probes):,} EPIC v2 id(s) stripped of their suffix "
                         f"(e.g. {first[0]} → {first[1]})")
        if self.merged_replicates:
            parts.append(f"{len(self.merged_replicates):,} replicate probe(s) averaged")
        if self.non_probe_rows:
            parts.append(f"{len(self.non_probe_rows):,} row(s) without a probe id left out "
                         f"(e.g. {self.non_probe_rows[:3]})")
        if self.empty_probes:
            parts.append(f"{len(self.empty_probes):,} probe(s) without any value left out")
        if self.n_clamped:
            parts.append(f"{self.n_clamped:,} M-value(s) clamped to ±{M_CLAMP:g}")
        missing = self.n_missing_cells
        if missing:
            share = missing / max(self.n_probes * self.n_samples, 1)
            parts.append(f"{missing:,} missing cell(s) ({share:.2%}), filled with the training "
                         "means at prediction")
        return "; ".join(parts) + "."


def read_methylation(path: str | Path, scale: str = "auto") -> MethylationInput:
    """Read a probes × samples β or M-value matrix for prediction (see the module's rules).

    Raises ``PredictionInputError`` naming the file and the problem; nothing is returned then.
    """
    path = Path(path)
    name = path.name
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if not path.is_file():
        raise PredictionInputError(f"{path}: no such file")
    sep = "," if _stem_suffix(path) == ".csv" else "\t"
    with open_source(path, sep) as source:
        samples = _read_header(source)
        values = _read_values(source, samples)
    if not values.n_rows:
        raise PredictionInputError(f"{name}: the file has a header but no probe rows")
    _refuse_without_probes(name, values)
    file_scale, detected = _scale(name, values, samples, scale)
    _refuse_duplicates(name, values.originals)
    renamed = {o: b for o, b in zip(values.originals, values.bases, strict=True) if o != b}
    merged, matrix, probe_ids, empty = _collapse(values)
    n_clamped = _to_m_values(matrix, file_scale)
    _check_samples(name, values.sample_has_value, samples)
    frame = pd.DataFrame(
        matrix,
        index=pd.Index(probe_ids, name="probe_id", dtype=object),
        columns=pd.Index(samples, name="sample", dtype=object),
        copy=False,
    )
    return MethylationInput(
        source=name,
        m_values=frame,
        scale=file_scale,
        scale_detected=detected,
        renamed_probes=renamed,
        merged_replicates=merged,
        non_probe_rows=values.non_probe,
        empty_probes=empty,
        n_clamped=n_clamped,
    )


def m_to_beta(m: np.ndarray) -> np.ndarray:
    """β = 2^M / (1 + 2^M), the inverse of ``preprocess.beta_to_m`` (up to its clamp)."""
    m = np.asarray(m, dtype=np.float64)
    return 1.0 / (1.0 + np.exp2(-m))


def _stem_suffix(path: Path) -> str:
    """The extension once a ``.gz`` is set aside: ``a.csv.gz`` → ``.csv``."""
    name = path.name.lower()
    name = name.removesuffix(".gz")
    return Path(name).suffix


def _rows_per_chunk(n_columns: int) -> int:
    """Rows of a values array processed at a time: about 4M values, whatever the width."""
    return max(1, (4 << 20) // max(n_columns, 1))


def _read_header(source: BoundedSource) -> list[str]:
    """Sample ids of the header; refuses an empty file, no samples, empty or repeated ids, more
    than MAX_SAMPLES and a transposed matrix."""
    name, sep = source.name_, source.sep.decode()
    line = source.first_line().decode("utf-8").removeprefix("\ufeff")
    if not line.strip():
        if source.read(1 << 16).strip():
            raise PredictionInputError(f"{name}: the first line is blank; it must be the header")
        raise PredictionInputError(f"{name}: the file is empty")
    cells = next(csv.reader([line], delimiter=sep))
    samples = [c.strip() for c in cells[1:]]
    if not samples:
        other = "," if sep == "\t" else "\t"
        hint = (f" (the separator is {'a tab' if sep == chr(9) else 'a comma'}, chosen by the "
                f"file's extension, but the header holds {other!r}: rename the file)"
                if other in line else "")
        raise PredictionInputError(f"{name}: the header has no sample columns{hint}")
    if len(samples) > MAX_SAMPLES:
        raise PredictionInputError(
            f"{name}: the header names {len(samples):,} samples, more than the cap of "
            f"{MAX_SAMPLES:,} (MAX_SAMPLES): split the samples over several files and predict "
            "each as its own batch"
        )
    probe_like = [s for s in samples if PROBE_ID.fullmatch(s)]
    if len(probe_like) * 2 >= len(samples):
        raise PredictionInputError(
            f"{name}: looks transposed: probe ids are in the header ({len(probe_like):,} of "
            f"{len(samples):,} columns, e.g. {probe_like[:3]}); the file must have one row per "
            "probe (first column the probe id) and one column per sample"
        )
    empty = [i + 2 for i, s in enumerate(samples) if not s]
    if empty:
        raise PredictionInputError(f"{name}: empty sample id in header column(s) {empty[:5]}")
    repeated = pd.Index(samples)[pd.Index(samples).duplicated()].unique().tolist()
    if repeated:
        raise PredictionInputError(
            f"{name}: duplicate sample ids: {len(repeated)} id(s) appear more than once in the "
            f"header, e.g. {repeated[:_EXAMPLES]}"
        )
    source.samples = samples
    return samples


@dataclass
class _Values:
    """The probe rows of a file as read, before replicates are merged: one float32 row each in
    ``matrix`` (``n_rows`` of them filled), their ids, and what the scale and the checks need."""

    matrix: np.ndarray
    originals: list[str] = field(default_factory=list)
    bases: list[str] = field(default_factory=list)
    non_probe: list[str] = field(default_factory=list)
    first_ids: list[str] = field(default_factory=list)
    n_rows: int = 0
    n_present: int = 0
    n_inside: int = 0
    n_negative: int = 0
    lowest: float = np.inf
    highest: float = -np.inf
    outside: list[tuple[str, str, float]] = field(default_factory=list)
    row_has_value: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    sample_has_value: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def n_probes(self) -> int:
        return len(self.originals)

    @property
    def probes(self) -> np.ndarray:
        return self.matrix[:self.n_probes]


def _read_values(source: BoundedSource, samples: list[str]) -> _Values:
    """The rows after the header, parsed a block at a time; only probe rows are kept, in an
    array reserved for at most ``MAX_CELLS`` values."""
    name, n_samples = source.name_, len(samples)
    capacity = min(MAX_ROWS, MAX_CELLS // n_samples)
    values = _Values(np.empty((capacity, n_samples), dtype=np.float32),
                     row_has_value=np.zeros(capacity, dtype=bool),
                     sample_has_value=np.zeros(n_samples, dtype=bool))
    bad_rows: list = []
    try:
        for batch in _batches(source, samples, pa.float32(), bad_rows):
            _take(name, values, batch, samples)
    except pa.ArrowInvalid as exc:
        if str(exc).startswith("Empty CSV file"):  # nothing after the header (blank lines)
            return values
        raise _unreadable(source, samples, exc, bad_rows, values.n_rows) from exc
    return values


def _batches(source: BoundedSource, samples: list[str], kind: pa.DataType, bad_rows: list):
    """Record batches of the rows after the header, the samples' cells of type ``kind``; a row
    with the wrong number of cells is kept in ``bad_rows`` (and the parser raises)."""
    def invalid(row) -> str:
        bad_rows.append(row)
        return "error"

    read = pacsv.ReadOptions(column_names=[_ROW_ID, *samples], block_size=block_bytes(),
                             use_threads=False)  # in file order, with row numbers
    parse = pacsv.ParseOptions(delimiter=source.sep.decode(), invalid_row_handler=invalid)
    # Read as floats, every id stays text (an id "NA" is no missing id); read as text (the
    # error path), missing cells must be null so that only the non-numeric ones are left.
    convert = pacsv.ConvertOptions(column_types={_ROW_ID: pa.string(),
                                                 **{s: kind for s in samples}},
                                   null_values=NULL_VALUES,
                                   strings_can_be_null=kind == pa.string())
    yield from pacsv.open_csv(source, read, parse, convert)


def _take(name: str, values: _Values, batch: pa.RecordBatch, samples: list[str]) -> None:
    """Check one block of rows against the caps and keep its probe rows."""
    n = batch.num_rows
    if not n:
        return
    if values.n_rows + n > MAX_ROWS:
        raise PredictionInputError(
            f"{name}: more than {MAX_ROWS:,} rows (MAX_ROWS), more than any 450K or EPIC array "
            "has probes")
    ids_column = pc.utf8_trim_whitespace(batch.column(0))
    lengths = pc.utf8_length(ids_column).to_numpy(zero_copy_only=False)
    if lengths.max() > MAX_ID_CHARS:
        first = int(np.flatnonzero(lengths > MAX_ID_CHARS)[0])
        raise PredictionInputError(
            f"{name}: data row {values.n_rows + first + 1:,} has a row id of "
            f"{int(lengths[first]):,} characters, more than {MAX_ID_CHARS} (MAX_ID_CHARS): the "
            "first column must hold probe ids")
    ids = ids_column.to_pylist()
    values.n_rows += n
    if len(values.first_ids) < 50:
        values.first_ids.extend(ids[:50 - len(values.first_ids)])
    matches = [PROBE_ID.fullmatch(r) for r in ids]
    is_probe = np.array([m is not None for m in matches], dtype=bool)
    values.non_probe.extend(r for r, m in zip(ids, matches, strict=True) if m is None)
    k, start = int(is_probe.sum()), values.n_probes
    if start + k > len(values.matrix):
        raise PredictionInputError(
            f"{name}: more than {MAX_CELLS:,} values ({start + k:,} probe rows so far × "
            f"{len(samples):,} samples), the cap (MAX_CELLS) that keeps a file's values within "
            f"{MAX_CELLS * 4 / 1e9:.1f} GB of memory: split its samples over several files, at "
            f"most {MAX_CELLS // _EPIC_PROBES:,} samples each for a full EPIC array "
            f"({MAX_CELLS // _450K_PROBES:,} for 450K), and predict each as its own batch")
    if not k:
        return
    block = values.matrix[start:start + k]
    cells = np.asarray(batch.select(range(1, batch.num_columns))
                       .to_tensor(null_to_nan=True, row_major=True))
    block[:] = cells if k == n else cells[is_probe]
    for r, m in zip(ids, matches, strict=True):
        if m is not None:
            values.originals.append(r)
            base = m.group("base")
            values.bases.append(r if base == r else base)  # one string when nothing is stripped
    present = ~np.isnan(block)
    inside = (block >= 0) & (block <= 1)
    values.n_present += int(np.count_nonzero(present))
    values.n_inside += int(np.count_nonzero(inside))
    values.n_negative += int(np.count_nonzero(block < 0))
    if present.any():
        values.lowest = min(values.lowest, float(np.nanmin(block)))
        values.highest = max(values.highest, float(np.nanmax(block)))
    if len(values.outside) < _EXAMPLES:
        rows, cols = np.nonzero(present & ~inside)
        for r, c in zip(rows[:_EXAMPLES], cols[:_EXAMPLES], strict=True):
            if len(values.outside) < _EXAMPLES:
                values.outside.append((values.originals[start + r], samples[c],
                                       float(str(block[r, c]))))
    values.row_has_value[start:start + k] = present.any(axis=1)
    values.sample_has_value |= present.any(axis=0)


def _unreadable(source: BoundedSource, samples: list[str], exc: pa.ArrowInvalid, bad_rows: list,
                rows_read: int) -> PredictionInputError:
    """The project's own message for what the parser refused: the row with the wrong number of
    cells, the first non-numeric cells (the file read again as text, from the failing block)."""
    name = source.name_
    if bad_rows:
        row = bad_rows[0]
        probe = row.text.split(source.sep.decode(), 1)[0].strip()
        number = f" (data row {row.number:,})" if row.number is not None else ""
        return PredictionInputError(
            f"{name}: the row of '{probe}'{number} has {row.actual_columns} cells where the "
            f"header has {row.expected_columns}: every row holds a probe id and one value per "
            "sample")
    invalid = _INVALID_CELL.search(str(exc))
    if invalid:
        cells = _non_numeric_cells(source.path, source.gzipped, source.sep.decode(), samples,
                                   rows_read)
        if not cells:
            column = int(invalid.group(1))
            sample = samples[column - 1] if 0 < column <= len(samples) else f"column {column}"
            cells = [("?", sample, invalid.group(2))]
        return PredictionInputError(
            f"{name}: non-numeric cells, e.g. (probe, sample, value) {cells}; cells must be "
            f"numbers or one of {NULL_VALUES} for a missing value")
    return PredictionInputError(f"{name}: unreadable matrix ({_first_line(exc)})")


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _non_numeric_cells(
    path: Path, gzipped: bool, sep: str, samples: list[str], skip: int
) -> list[tuple[str, str, str]]:
    """The first few (row id, sample, text) cells, row by row, that are neither a number nor
    missing, in the first block past the ``skip`` rows read well that holds any; read again as
    text, a block at a time, on the error path only."""
    with BoundedSource(path, gzipped, sep) as source:
        _read_header(source)
        offset = 0
        try:
            for batch in _batches(source, samples, pa.string(), []):
                if offset + batch.num_rows > skip:
                    found = sorted((r, j) for j in range(len(samples))
                                   for r in _not_numbers(batch.column(j + 1), _EXAMPLES))
                    if found:
                        ids = batch.column(0)
                        return [(str(ids[r].as_py()).strip(), samples[j],
                                 batch.column(j + 1)[r].as_py())
                                for r, j in found[:_EXAMPLES]]
                offset += batch.num_rows
        except pa.ArrowInvalid:
            return []
    return []


def _not_numbers(column: pa.Array, limit: int, offset: int = 0) -> list[int]:
    """Indices of the first ``limit`` strings of ``column`` that do not parse as a float (found
    by halving: a cast of a slice fails when it holds one)."""
    try:
        pc.cast(pc.utf8_trim_whitespace(column), pa.float32())
        return []
    except pa.ArrowInvalid:
        if len(column) == 1:
            return [offset]
    half = len(column) // 2
    found = _not_numbers(column.slice(0, half), limit, offset)
    if len(found) < limit:
        found += _not_numbers(column.slice(half), limit - len(found), offset + half)
    return found


def _refuse_without_probes(name: str, values: _Values) -> None:
    """A file without a single probe row: transposed (sample ids as row labels) or not a
    methylation matrix."""
    if values.n_probes:
        return
    barcodes = [r for r in values.first_ids if _BARCODE.match(r)]
    if barcodes:
        raise PredictionInputError(
            f"{name}: looks transposed: the row labels are sample ids (e.g. "
            f"{barcodes[:3]}), not probe ids; the file must have one row per probe"
        )
    raise PredictionInputError(
        f"{name}: no row id looks like a 450K or EPIC probe id (cg…, ch…, rs…); the first "
        f"column holds e.g. {values.first_ids[:_EXAMPLES]}"
    )


def _scale(name: str, values: _Values, samples: list[str], scale: str) -> tuple[Scale, bool]:
    """The file's scale (given, or detected by ``BETA_SHARE``); refuses β values outside
    [0, 1] and a file without any value."""
    if values.n_present == 0:
        raise PredictionInputError(f"{name}: no value at all: every cell is missing")
    share = values.n_inside / values.n_present
    if scale == "auto" and share < BETA_SHARE and not values.n_negative:
        _refuse_ambiguous(name, values, share)
    if scale == "m_value" or (scale == "auto" and share < BETA_SHARE):
        return "m_value", scale == "auto"
    n_outside = values.n_present - values.n_inside
    if n_outside:
        why = (f"{share:.2%} of its values lie in [0, 1], so it holds β values (a file is read "
               f"as M-values only when fewer than {BETA_SHARE:.0%} of its values do)"
               if scale == "auto" else "β values were asked for")
        raise PredictionInputError(
            f"{name}: β outside [0, 1]: {why}, but {n_outside:,} value(s) lie outside "
            f"[0, 1], e.g. (probe, sample, value) {values.outside}. "
            "A β is a fraction: correct these cells or blank them (NA); if the file holds "
            "M-values, say so (scale 'm_value')"
        )
    return "beta", scale == "auto"


def _refuse_ambiguous(name: str, values: _Values, share: float) -> None:
    """Too few values in [0, 1] for β, and none below 0, which M-values have (an unmethylated
    CpG's M is negative): β in percent, or a scale the file does not say."""
    seen = (f"every value is ≥ 0 and {1 - share:.1%} lie above 1 (from {values.lowest:.4g} to "
            f"{values.highest:.4g})")
    if values.highest <= 100:
        looks = "which reads as β in percent (0-100), not as M-values"
    else:
        looks = "neither β (fractions in [0, 1]) nor M-values (which have no value below 0 only " \
                "when every CpG is methylated)"
    raise PredictionInputError(
        f"{name}: the scale is ambiguous: {seen}, {looks}, and no value below 0 as an "
        "M-value file has for its unmethylated CpGs. For β in percent, divide every value by "
        "100 (β is a fraction); if these are M-values, say so (scale 'm_value', --scale m_value)"
    )


def _refuse_duplicates(name: str, probes: list[str]) -> None:
    index = pd.Index(probes, dtype=object)
    repeated = index[index.duplicated()].unique().tolist()
    if repeated:
        raise PredictionInputError(
            f"{name}: duplicate probe ids: {len(repeated)} id(s) appear on more than one row, "
            f"e.g. {repeated[:_EXAMPLES]}"
        )


def _collapse(values: _Values) -> tuple[dict[str, int], np.ndarray, np.ndarray, list[str]]:
    """Average the replicates that stripping EPIC v2 suffixes reveals (into the first row of
    each) and leave out the rows without any value, in place: (replicates merged, the values,
    their probe ids, the empty probes)."""
    matrix, has_value = values.probes, values.row_has_value[:values.n_probes]
    bases = np.array(values.bases, dtype=object)
    index = pd.Index(bases, dtype=object)
    first = ~index.duplicated(keep="first")
    merged: dict[str, int] = {}
    if not first.all():
        rows = np.flatnonzero(index.duplicated(keep=False))
        group = pd.DataFrame(matrix[rows], index=pd.Index(bases[rows], dtype=object))
        collapsed = group.groupby(level=0, sort=False).mean()  # NaN-skipping mean of replicates
        counts = group.groupby(level=0, sort=False).size()
        merged = {str(b): int(n) for b, n in counts.items()}
        targets = rows[first[rows]]  # each group's first row, in the same order as collapsed
        matrix[targets] = collapsed.to_numpy(dtype=np.float32)
        has_value[targets] = collapsed.notna().any(axis=1).to_numpy()
    keep = first & has_value
    empty = [str(p) for p in bases[first & ~has_value]]
    kept = np.flatnonzero(keep)
    if len(kept) < len(matrix):
        step = _rows_per_chunk(matrix.shape[1])
        for i in range(0, len(kept), step):  # rows move up only: each chunk reads rows ≥ i
            rows = kept[i:i + step]
            matrix[i:i + len(rows)] = matrix[rows]
    return merged, matrix[:len(kept)], bases[kept], empty


def _to_m_values(matrix: np.ndarray, scale: Scale) -> int:
    """β → M (``beta_to_m``) or M clamped to ±``M_CLAMP``, in place, a chunk of rows at a time;
    the number of M-values clamped."""
    n_clamped, step = 0, _rows_per_chunk(matrix.shape[1])
    for i in range(0, len(matrix), step):
        chunk = matrix[i:i + step]
        if scale == "beta":
            chunk[:] = beta_to_m(chunk)
        else:
            n_clamped += int(np.count_nonzero(np.abs(chunk) > M_CLAMP))  # NaN is not counted
            np.clip(chunk, -M_CLAMP, M_CLAMP, out=chunk)
    return n_clamped


def _check_samples(name: str, has_value: np.ndarray, samples: list[str]) -> None:
    empty = [s for s, any_value in zip(samples, has_value, strict=True) if not any_value]
    if empty:
        raise PredictionInputError(
            f"{name}: {len(empty)} sample(s) without any value (every probe missing), e.g. "
            f"{empty[:_EXAMPLES]}: remove these columns"
        )
