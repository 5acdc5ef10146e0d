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
  has most of its values outside [0, 1]). ``scale="beta"`` or ``"m_value"`` overrides the
  detection: a small M-value file whose values all happen to lie in [0, 1] needs
  ``scale="m_value"``.
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
file with no value at all, a sample without any value.
"""

from __future__ import annotations

import csv
import gzip
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from dmg_ml.data.preprocess import M_CLAMP, beta_to_m
from dmg_ml.data.xena import NULL_VALUES

Scale = Literal["beta", "m_value"]
SCALES: tuple[str, ...] = ("auto", "beta", "m_value")
#: A file with at least this share of its values in [0, 1] is a β file: any value outside is an
#: error, not a sign of M-values.
BETA_SHARE = 0.99
#: A 450K / EPIC probe id, with the optional EPIC v2 suffix (``_TC21``) as ``suffix``.
PROBE_ID = re.compile(
    r"(?P<base>cg\d+|ch\d+|ch\.(?:\d{1,2}|X|Y)\.\d+[A-Z]?|rs\d+)(?P<suffix>_[A-Za-z0-9]+)?"
)
_BARCODE = re.compile(r"TCGA-\w\w-\w{4}", re.IGNORECASE)
_INVALID_CELL = re.compile(r"invalid value '(.*)'", re.DOTALL)
_ROW_ID = "\x00row_id"
_EXAMPLES = 5


class PredictionInputError(ValueError):
    """A methylation file for prediction cannot be used as it is; the message says why."""


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
        return int(np.isnan(self.m_values.to_numpy()).sum())

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
    gzipped = _is_gzip(path)
    sep = "," if _stem_suffix(path) == ".csv" else "\t"
    samples = _read_header(path, gzipped, sep)
    row_ids, values = _read_values(path, gzipped, sep, samples)
    if not len(row_ids):
        raise PredictionInputError(f"{name}: the file has a header but no probe rows")
    probes, values, non_probe = _probe_rows(name, row_ids, values, samples)
    file_scale, detected = _scale(name, probes, values, samples, scale)
    renamed, merged, probe_ids, values = _collapse(name, probes, values)
    if file_scale == "beta":
        m = beta_to_m(values)
        n_clamped = 0
    else:
        over = ~np.isnan(values) & (np.abs(values) > M_CLAMP)
        n_clamped = int(over.sum())
        m = np.clip(values, -M_CLAMP, M_CLAMP).astype(np.float32)
    has_value = ~np.isnan(m)
    empty_rows = ~has_value.any(axis=1)
    _check_samples(name, has_value[~empty_rows], samples)
    frame = pd.DataFrame(
        m[~empty_rows],
        index=pd.Index(probe_ids[~empty_rows], name="probe_id", dtype=object),
        columns=pd.Index(samples, name="sample", dtype=object),
    )
    return MethylationInput(
        source=name,
        m_values=frame,
        scale=file_scale,
        scale_detected=detected,
        renamed_probes=renamed,
        merged_replicates=merged,
        non_probe_rows=non_probe,
        empty_probes=[str(p) for p in probe_ids[empty_rows]],
        n_clamped=n_clamped,
    )


def m_to_beta(m: np.ndarray) -> np.ndarray:
    """β = 2^M / (1 + 2^M), the inverse of ``preprocess.beta_to_m`` (up to its clamp)."""
    m = np.asarray(m, dtype=np.float64)
    return 1.0 / (1.0 + np.exp2(-m))


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _stem_suffix(path: Path) -> str:
    """The extension once a ``.gz`` is set aside: ``a.csv.gz`` → ``.csv``."""
    name = path.name.lower()
    name = name.removesuffix(".gz")
    return Path(name).suffix


def _open_text(path: Path, gzipped: bool):
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _read_header(path: Path, gzipped: bool, sep: str) -> list[str]:
    """Sample ids of the header; refuses an empty file, no samples, empty or repeated ids and
    a transposed matrix."""
    name, rest = path.name, ""
    try:
        with _open_text(path, gzipped) as handle:
            line = handle.readline()
            blank_first = not line.strip()
            if blank_first:
                rest = handle.read(1 << 16)
    except (EOFError, OSError, zlib.error, UnicodeDecodeError) as exc:
        raise PredictionInputError(f"{name}: cannot read the header ({exc})") from exc
    if blank_first:
        if rest.strip():
            raise PredictionInputError(f"{name}: the first line is blank; it must be the header")
        raise PredictionInputError(f"{name}: the file is empty")
    cells = next(csv.reader([line.rstrip("\r\n")], delimiter=sep))
    samples = [c.strip() for c in cells[1:]]
    if not samples:
        other = "," if sep == "\t" else "\t"
        hint = (f" (the separator is {'a tab' if sep == chr(9) else 'a comma'}, chosen by the "
                f"file's extension, but the header holds {other!r}: rename the file)"
                if other in line else "")
        raise PredictionInputError(f"{name}: the header has no sample columns{hint}")
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
    return samples


def _read_values(
    path: Path, gzipped: bool, sep: str, samples: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Row ids (stripped text) and the rows × samples float32 values, streamed in blocks."""
    names = [_ROW_ID, *samples]
    types = {_ROW_ID: pa.string(), **{s: pa.float32() for s in samples}}
    read_options = pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=16 << 20)
    convert = pacsv.ConvertOptions(column_types=types, null_values=NULL_VALUES,
                                   strings_can_be_null=False)
    ids, blocks = [], []
    try:
        stream = pa.input_stream(str(path), compression="gzip" if gzipped else None)
        reader = pacsv.open_csv(stream, read_options, pacsv.ParseOptions(delimiter=sep), convert)
        for batch in reader:
            if batch.num_rows == 0:
                continue
            ids.append(np.asarray(batch.column(0).to_pylist(), dtype=object))
            block = np.empty((batch.num_rows, len(samples)), dtype=np.float32)
            for j in range(len(samples)):
                block[:, j] = batch.column(j + 1).to_numpy(zero_copy_only=False)
            blocks.append(block)
    except pa.ArrowInvalid as exc:
        if _INVALID_CELL.search(str(exc)):
            cells = _non_numeric_cells(path, gzipped, sep, samples)
            if cells:
                raise PredictionInputError(
                    f"{path.name}: non-numeric cells, e.g. (probe, sample, value) {cells}; "
                    f"cells must be numbers or one of {NULL_VALUES} for a missing value"
                ) from exc
        raise PredictionInputError(f"{path.name}: unreadable matrix ({_first_line(exc)})") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise PredictionInputError(f"{path.name}: unreadable file ({_first_line(exc)})") from exc
    if not blocks:
        return np.empty(0, dtype=object), np.empty((0, len(samples)), dtype=np.float32)
    row_ids = np.array([str(r).strip() for r in np.concatenate(ids)], dtype=object)
    return row_ids, np.concatenate(blocks)


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _non_numeric_cells(
    path: Path, gzipped: bool, sep: str, samples: list[str]
) -> list[tuple[str, str, str]]:
    """The first few (row id, sample, text) cells that are neither a number nor missing; read
    again as text, on the error path only."""
    found: list[tuple[str, str, str]] = []
    chunks = pd.read_csv(
        path, sep=sep, header=None, skiprows=1, names=[_ROW_ID, *samples], dtype=str,
        keep_default_na=False, chunksize=20_000, compression="gzip" if gzipped else None,
        encoding="utf-8-sig",
    )
    nulls = set(NULL_VALUES)
    with chunks:
        for chunk in chunks:
            cells = chunk[samples].to_numpy(dtype=object)
            numeric = pd.DataFrame(cells).apply(pd.to_numeric, errors="coerce").to_numpy()
            blank = np.vectorize(lambda c: not isinstance(c, str) or c.strip() in nulls,
                                 otypes=[bool])(cells)
            bad = np.isnan(numeric.astype(np.float64)) & ~blank
            for r, c in zip(*np.nonzero(bad), strict=True):
                found.append((str(chunk[_ROW_ID].iloc[r]).strip(), samples[c], cells[r, c]))
                if len(found) == _EXAMPLES:
                    return found
    return found


def _probe_rows(
    name: str, row_ids: np.ndarray, values: np.ndarray, samples: list[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Rows whose id is a probe id; the others are listed. Refuses a file without one."""
    is_probe = np.array([PROBE_ID.fullmatch(r) is not None for r in row_ids], dtype=bool)
    if not is_probe.any():
        barcodes = [r for r in row_ids[:50] if _BARCODE.match(r)]
        if barcodes:
            raise PredictionInputError(
                f"{name}: looks transposed: the row labels are sample ids (e.g. "
                f"{barcodes[:3]}), not probe ids; the file must have one row per probe"
            )
        raise PredictionInputError(
            f"{name}: no row id looks like a 450K or EPIC probe id (cg…, ch…, rs…); the first "
            f"column holds e.g. {row_ids[:_EXAMPLES].tolist()}"
        )
    return row_ids[is_probe], values[is_probe], [str(r) for r in row_ids[~is_probe]]


def _scale(
    name: str, probes: np.ndarray, values: np.ndarray, samples: list[str], scale: str
) -> tuple[Scale, bool]:
    """The file's scale (given, or detected by ``BETA_SHARE``); refuses β values outside
    [0, 1] and a file without any value."""
    present = ~np.isnan(values)
    n_values = int(present.sum())
    if n_values == 0:
        raise PredictionInputError(f"{name}: no value at all: every cell is missing")
    inside = present & (values >= 0) & (values <= 1)
    share = float(inside.sum()) / n_values
    if scale == "m_value" or (scale == "auto" and share < BETA_SHARE):
        return "m_value", scale == "auto"
    outside = present & ~inside
    if outside.any():
        why = (f"{share:.2%} of its values lie in [0, 1], so it holds β values (a file is read "
               f"as M-values only when fewer than {BETA_SHARE:.0%} of its values do)"
               if scale == "auto" else "β values were asked for")
        raise PredictionInputError(
            f"{name}: β outside [0, 1]: {why}, but {int(outside.sum()):,} value(s) lie outside "
            f"[0, 1], e.g. (probe, sample, value) {_cells(values, outside, probes, samples)}. "
            "A β is a fraction: correct these cells or blank them (NA); if the file holds "
            "M-values, say so (scale 'm_value')"
        )
    return "beta", scale == "auto"


def _collapse(
    name: str, probes: np.ndarray, values: np.ndarray
) -> tuple[dict[str, str], dict[str, int], np.ndarray, np.ndarray]:
    """Strip EPIC v2 suffixes and average the replicates they reveal; refuses an id twice."""
    index = pd.Index(probes)
    repeated = index[index.duplicated()].unique().tolist()
    if repeated:
        raise PredictionInputError(
            f"{name}: duplicate probe ids: {len(repeated)} id(s) appear on more than one row, "
            f"e.g. {repeated[:_EXAMPLES]}"
        )
    base = np.array([PROBE_ID.fullmatch(p).group("base") for p in probes], dtype=object)
    renamed = {str(p): str(b) for p, b in zip(probes, base, strict=True) if p != b}
    counts = pd.Series(base).value_counts()
    replicated = counts[counts > 1]
    if replicated.empty:
        return renamed, {}, base, values
    frame = pd.DataFrame(values, index=pd.Index(base, dtype=object))
    collapsed = frame.groupby(level=0, sort=False).mean()  # NaN-skipping mean of replicates
    merged = {str(b): int(n) for b, n in replicated.items()}
    return (renamed, merged, collapsed.index.to_numpy(dtype=object),
            collapsed.to_numpy(dtype=np.float32))


def _check_samples(name: str, has_value: np.ndarray, samples: list[str]) -> None:
    empty = [s for s, any_value in zip(samples, has_value.any(axis=0), strict=True)
             if not any_value]
    if empty:
        raise PredictionInputError(
            f"{name}: {len(empty)} sample(s) without any value (every probe missing), e.g. "
            f"{empty[:_EXAMPLES]}: remove these columns"
        )


def _cells(
    values: np.ndarray, mask: np.ndarray, probes: np.ndarray, samples: list[str]
) -> list[tuple[str, str, float]]:
    """(probe, sample, value) of the first few cells of ``mask``, row by row; values as the file
    wrote them (float32's shortest form: 1.3, not 1.2999999523)."""
    rows, cols = np.nonzero(mask)
    return [(str(probes[r]), samples[c], float(str(values[r, c])))
            for r, c in zip(rows[:_EXAMPLES], cols[:_EXAMPLES], strict=True)]
