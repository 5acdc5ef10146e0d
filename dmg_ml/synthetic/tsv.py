"""The synthetic hub's fast TSV/gzip encoder: matrices of 4-decimal values written as Xena writes
them, without formatting a value at a time in Python.

A value is a code (value × 10⁴, an integer); a table of ``\t``-prefixed decimal strings, one per
code, turns a block of codes into its TSV bytes in one numpy gather (``encode_rows``), and
``GzipWriter`` compresses them in a background thread (zlib releases the GIL) into a
deterministic gzip that appears under its name only when complete.
"""

from __future__ import annotations

import gzip
import os
import queue
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: The code of a missing β value: the last cell of ``BETA_TABLE``, ``NA``.
NA_CODE = 10_001


def _decimal_table(lo: int, hi: int, na: bool = False) -> np.ndarray:
    """``\\t``-prefixed strings for codes ``lo..hi`` (value = code / 10⁴), plus ``\\tNA`` last."""
    cells = []
    for k in range(lo, hi + 1):
        sign = "-" if k < 0 else ""
        a = abs(k)
        cells.append(f"\t{sign}{a // 10_000}.{a % 10_000:04d}")
    if na:
        cells.append("\tNA")
    width = max(len(c) for c in cells)
    return np.array(cells, dtype=f"S{width}")


BETA_TABLE = _decimal_table(0, 10_000, na=True)


def encode_rows(names: np.ndarray, codes: np.ndarray, table: np.ndarray) -> bytes:
    """TSV rows ``name\\tv1\\tv2...\\n`` from table codes, without per-value Python formatting.

    Table cells are null-padded to a fixed width; the nulls are deleted from the joined bytes.
    """
    codes = np.ascontiguousarray(codes)
    n, m = codes.shape
    name_bytes = names.view(np.uint8).reshape(n, names.dtype.itemsize)
    cells = table[codes].view(np.uint8).reshape(n, m * table.dtype.itemsize)
    newline = np.full((n, 1), ord("\n"), np.uint8)
    return np.concatenate([name_bytes, cells, newline], axis=1).tobytes().translate(None, b"\0")


def write_matrix(path: Path, columns: Sequence[str], names: Sequence[str], values: np.ndarray,
                  compresslevel: int) -> None:
    """Gzip TSV of a genes × samples float matrix with 4 decimals."""
    codes = np.rint(values * 10_000).astype(np.int64)
    lo, hi = (int(codes.min()), int(codes.max())) if codes.size else (0, 0)
    table = _decimal_table(lo, hi)
    with GzipWriter(path, compresslevel) as out:
        out.write(("sample\t" + "\t".join(columns) + "\n").encode())
        name_array = np.array(list(names), dtype="S")
        for start in range(0, len(name_array), 4096):
            stop = start + 4096
            out.write(encode_rows(name_array[start:stop], codes[start:stop] - lo, table))


class GzipWriter:
    """Deterministic gzip (mtime 0, no file name) written to a temporary name, then renamed.

    Compression runs in a background thread (zlib releases the GIL), overlapping generation.
    """

    def __init__(self, path: Path, compresslevel: int) -> None:
        self.path = path
        self.tmp = path.with_name(path.name + ".part")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.raw = open(self.tmp, "wb")  # noqa: SIM115 - closed in __exit__
        self.gz = gzip.GzipFile(fileobj=self.raw, mode="wb", mtime=0, filename="",
                                compresslevel=compresslevel)
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=3)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (data := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.gz.write(data)
                except BaseException as exc:  # re-raised in the caller's thread
                    self.error = exc

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(data)

    def __enter__(self) -> GzipWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.queue.put(None)
        self.thread.join()
        self.gz.close()
        self.raw.close()
        if exc_type is None and self.error is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
            if self.error is not None and exc_type is None:
                raise self.error
