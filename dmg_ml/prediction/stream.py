"""A methylation file's bytes, read as a bounded stream for the parser (docs/design.md §10).

``open_source`` opens a file, gzipped or not (gzip is recognised by its magic bytes), as a
``BoundedSource``: a raw binary stream that decompresses the file chunk by chunk and checks each
chunk before the parser sees it, so that a file is refused as soon as it passes a cap, each
named in the message, never after it has been held whole. ``dmg_ml.prediction.inputs`` parses
what it reads (pyarrow's CSV reader, ``block_bytes()`` at a time) and applies the matrix's own
caps and rules.

**The caps it checks**, module constants, their one home: a line longer than
``MAX_LINE_BYTES``, more than ``MAX_INPUT_BYTES`` of text (decompressed; a plain file larger
than that is refused before its text is read), a gzip stream that decompresses to more than
``MAX_GZIP_RATIO`` times what it has read (once past ``GZIP_RATIO_AFTER``; a methylation matrix
compresses 2-5×), and bytes that are not UTF-8 (line, probe and sample named; UTF-16 told
apart) or a damaged gzip stream. ``BLOCK_BYTES`` sets how much text the parser takes at a time.
What the stream itself holds is the chunk being checked and the current line's bytes so far
(at most ``MAX_LINE_BYTES``): the measured peak RSS of a read, under 2 GiB for any file, is in
``dmg_ml.prediction.inputs``.

``PredictionInputError`` is defined here, the lower of the two modules, and imported by
``inputs``: both raise it.
"""

from __future__ import annotations

import codecs
import gzip
import io
import zlib
from pathlib import Path

import numpy as np

#: The longest line: a header of ``inputs.MAX_SAMPLES`` barcodes or a row of as many values
#: fits three times over.
MAX_LINE_BYTES = 1 << 20
#: The most text a file may hold (decompressed): ``inputs.MAX_CELLS`` values at up to ~60 bytes
#: each.
MAX_INPUT_BYTES = 16 << 30
#: The most a gzip stream may decompress to per byte read, checked from GZIP_RATIO_AFTER on.
MAX_GZIP_RATIO = 100
GZIP_RATIO_AFTER = 64 << 20
#: Text parsed at a time (at least twice MAX_LINE_BYTES, so that any line fits in a block). The
#: parser reads up to 32 blocks ahead (Arrow's background reader), 64 MiB at 2 MiB.
BLOCK_BYTES = 2 << 20
_HEADER_READ = 1 << 16
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class PredictionInputError(ValueError):
    """A methylation file for prediction cannot be used as it is; the message says why."""


def open_source(path: Path, sep: str) -> BoundedSource:
    """``path`` as a ``BoundedSource`` (gzip detected), its cells separated by ``sep``; a plain
    file larger than ``MAX_INPUT_BYTES`` is refused before it is opened."""
    gzipped = is_gzip(path)
    if not gzipped and path.stat().st_size > MAX_INPUT_BYTES:
        raise too_large(path.name, gzipped)
    return BoundedSource(path, gzipped, sep)


def is_gzip(path: Path) -> bool:
    """Whether the file starts with gzip's magic bytes."""
    try:
        with open(path, "rb") as handle:
            return handle.read(2) == b"\x1f\x8b"
    except OSError as exc:
        raise PredictionInputError(f"{path.name}: cannot read the file ({exc})") from exc


def block_bytes() -> int:
    """Bytes read and parsed at a time: ``BLOCK_BYTES``, and at least two lines of the longest."""
    return max(BLOCK_BYTES, 2 * MAX_LINE_BYTES)


def too_large(name: str, gzipped: bool) -> PredictionInputError:
    """The refusal of a file past ``MAX_INPUT_BYTES``."""
    return PredictionInputError(
        f"{name}: more than {MAX_INPUT_BYTES:,} bytes{' once decompressed' if gzipped else ''}, "
        "the cap on a file (MAX_INPUT_BYTES): split its samples over several files and predict "
        "each as its own batch"
    )


class BoundedSource(io.RawIOBase):
    """The file's bytes, decompressed, checked as they are read; the parser reads from it.

    Each chunk is checked before anyone sees it: the bytes so far against ``MAX_INPUT_BYTES``
    and, for gzip, ``MAX_GZIP_RATIO``; every line's length against ``MAX_LINE_BYTES``; and that
    it is UTF-8. A chunk that fails raises ``PredictionInputError`` naming the line (and the
    probe and sample of a bad byte), so a file is refused at the cap, never held whole.
    ``path``, ``name_``, ``gzipped`` and ``sep`` (bytes) say what is read; the reader sets
    ``samples`` once it has the header, so that a bad byte's sample can be named.
    """

    def __init__(self, path: Path, gzipped: bool, sep: str) -> None:
        super().__init__()
        self.path, self.name_, self.gzipped = path, path.name, gzipped
        self.sep = sep.encode()
        self.samples: list[str] = []
        self.n_bytes = 0
        self._raw = open(path, "rb")  # noqa: SIM115 (closed by close())
        self._stream = gzip.GzipFile(fileobj=self._raw, mode="rb") if gzipped else self._raw
        self._lines = 0  # newlines before the current line
        self._tail = b""  # the current line's bytes so far (the part before this chunk)
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._pushed = b""

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
            self._raw.close()
        super().close()

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes, fewer only at the end (the parser takes a short read for the end)."""
        size = block_bytes() if size is None or size < 0 else size
        parts, got = [], 0
        if self._pushed:
            parts.append(self._pushed[:size])
            self._pushed = self._pushed[size:]
            self._check(parts[0])
            got = len(parts[0])
        while got < size:
            chunk = self._next(size - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def first_line(self) -> bytes:
        """The first line without its end, checked; the rest is checked as it is read, once
        the header's sample ids can name a bad cell's sample."""
        data = b""
        while b"\n" not in data and len(data) <= MAX_LINE_BYTES:
            chunk = self._read_raw(min(_HEADER_READ, block_bytes()))
            if not chunk:
                break
            data += chunk
        line, newline, rest = data.partition(b"\n")
        self._check(line + newline)
        self._pushed = rest
        return line.rstrip(b"\r")

    def _next(self, size: int) -> bytes:
        chunk = self._read_raw(size)
        self._check(chunk)
        return chunk

    def _read_raw(self, size: int) -> bytes:
        try:
            return self._stream.read(size)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise PredictionInputError(
                f"{self.name_}: the gzip stream is damaged after {self.n_bytes:,} bytes of text "
                f"({exc}); the file is not whole: download or compress it again") from exc
        except OSError as exc:
            raise PredictionInputError(f"{self.name_}: cannot read the file ({exc})") from exc

    def _check(self, chunk: bytes) -> None:
        self.n_bytes += len(chunk)
        if self.n_bytes > MAX_INPUT_BYTES:
            raise too_large(self.name_, self.gzipped)
        if self.gzipped and self.n_bytes > GZIP_RATIO_AFTER:
            read = max(self._raw.tell(), 1)
            if self.n_bytes > MAX_GZIP_RATIO * read:
                raise PredictionInputError(
                    f"{self.name_}: decompresses to more than {MAX_GZIP_RATIO}× its compressed "
                    f"size ({self.n_bytes:,} bytes from {read:,}), the cap on a gzip file "
                    "(MAX_GZIP_RATIO): a methylation matrix compresses a few times, not a "
                    "hundred; refused as a likely gzip bomb")
        if not chunk:
            self._utf8(b"", final=True)
            return
        newlines = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 0x0A)
        too_long = self._too_long(chunk, newlines)
        pending = self._decoder.getstate()[0]
        bad_byte = self._utf8(chunk)
        if bad_byte is not None and (too_long is None or bad_byte <= too_long[1]):
            raise self._not_utf8(chunk, bad_byte, pending)
        if too_long is not None:
            raise PredictionInputError(
                f"{self.name_}: line {too_long[0]:,} is longer than {MAX_LINE_BYTES:,} bytes, "
                "the cap on a line (MAX_LINE_BYTES): a methylation matrix holds one probe per "
                "line; is this a probes × samples text file?")
        self._lines += len(newlines)
        if len(newlines):
            self._tail = chunk[newlines[-1] + 1:]
        else:
            self._tail += chunk

    def _too_long(self, chunk: bytes, newlines: np.ndarray) -> tuple[int, int] | None:
        """(line number, offset in ``chunk`` where it passes the cap) of the first line too
        long, or None."""
        ends = np.append(newlines, len(chunk))  # the last "line" is the unfinished one
        starts = np.concatenate([[-len(self._tail)], newlines + 1])
        over = np.flatnonzero(ends - starts > MAX_LINE_BYTES)
        if not len(over):
            return None
        first = int(over[0])
        return self._lines + first + 1, int(starts[first] + MAX_LINE_BYTES)

    def _utf8(self, chunk: bytes, final: bool = False) -> int | None:
        """Offset in ``chunk`` of the first byte that is not UTF-8 (negative: in the bytes of an
        unfinished character held over from the last chunk), or None; at the end (``final``)
        a character left unfinished is refused here."""
        pending = self._decoder.getstate()[0]
        if not pending and chunk.isascii() and not final:
            return None
        try:
            self._decoder.decode(chunk, final=final)
        except UnicodeDecodeError as exc:
            if final:
                raise self._not_utf8(b"", exc.start - len(pending), pending) from None
            return exc.start - len(pending)
        return None

    def _not_utf8(self, chunk: bytes, offset: int, pending: bytes) -> PredictionInputError:
        """The refusal of the byte at ``offset`` of ``chunk`` (negative: of ``pending``, the
        held-over bytes that end the line's part before ``chunk``)."""
        if offset < 0:  # the bytes before ``chunk`` are the end of ``self._tail``
            chunk, offset = pending + chunk, offset + len(pending)
            tail = self._tail[:len(self._tail) - len(pending)]
        else:
            tail = self._tail
        if self._lines == 0 and not tail and chunk[:2] in _UTF16_BOMS:
            return PredictionInputError(
                f"{self.name_}: the file is UTF-16 text (it starts with a UTF-16 byte order "
                "mark); save the file as UTF-8")
        return PredictionInputError(
            f"{self.name_}: {self._place(chunk, offset, tail)}: byte 0x{chunk[offset]:02x} is "
            "not UTF-8 text (Latin-1 or another encoding?); save the file as UTF-8")

    def _place(self, chunk: bytes, offset: int, tail: bytes) -> str:
        """Where byte ``offset`` of ``chunk`` lies (``tail``: the line's bytes before
        ``chunk``): its line, and the probe and sample of its cell (a header byte: its
        column)."""
        start = chunk.rfind(b"\n", 0, offset)
        line = self._lines + chunk.count(b"\n", 0, offset) + 1
        before = chunk[start + 1:offset] if start >= 0 else tail + chunk[:offset]
        ends = [i for i in (chunk.find(self.sep, offset), chunk.find(b"\n", offset)) if i >= 0]
        fields = (before + chunk[offset:min(ends, default=len(chunk))]).split(self.sep)
        column = len(fields)  # 1-based: the cell holding the byte
        if line == 1:
            return f"line 1 (the header), column {column:,}"
        probe = _text(fields[0]).strip()
        if column == 1:
            return f"line {line:,} (probe '{probe}')"
        sample = self.samples[column - 2] if column - 2 < len(self.samples) else None
        cell = f", sample '{sample}'" if sample is not None else f", column {column:,}"
        return f"line {line:,} (probe '{probe}'{cell})"


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")

