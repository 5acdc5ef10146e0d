"""Resumable, verified downloads of one URL (``http(s)://`` or ``file://``) into a local file.

The body is streamed to ``<dest>.part`` and only moved onto ``<dest>`` once it has been
verified, so a half-written or wrong file never sits under the final name:

- its size against the server's Content-Length / Content-Range;
- its kind against the name: a ``.gz`` must start with the gzip magic bytes and pass the
  gzip CRC and length check; any other name (the probe map is a plain TSV) must be text, not
  an HTML/XML page (an error or login page) and not binary. A refused body is not retried
  and leaves no ``.part`` behind.

A sidecar ``<dest>.json`` records where the file came from, its sha256 and the server's
validators (ETag, Last-Modified, Content-Length). The next call reuses the file only when its
size matches the sidecar, a HEAD request shows the validators unchanged, and then its sha256
still matches (and, for a ``file://`` source, the source's sha256 too); otherwise it is
downloaded again. A ``<dest>.lock`` file lock keeps two processes from writing one file.

``file://`` URLs are answered by a local adapter whose ETag covers the file's content as well as
its size and mtime (``local_etag``), so a file edited in place is a new version.

It stays one module (over 400 lines) because resuming, validating and locking are one protocol
on one file and its sidecar: each step reads what the one before it wrote.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import stat
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import requests
import urllib3
from filelock import FileLock
from requests_file import FileAdapter
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
PROGRESS_INTERVAL_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 60.0
GZIP_MAGIC = b"\x1f\x8b"
MARKUP_CONTENT_TYPES = frozenset(
    {"text/html", "application/xhtml+xml", "text/xml", "application/xml"}
)

#: A local file up to this size is identified (its ETag) by the sha256 of all its bytes; a larger
#: one by the sha256 of its first and last ``LOCAL_EDGE_BYTES`` with its size and mtime.
LOCAL_FULL_HASH_MAX_BYTES = 64 << 20
LOCAL_EDGE_BYTES = 1 << 20

Progress = Callable[[int, int | None], None]

_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")


@dataclass(frozen=True)
class Download:
    """A file in the local cache and where it came from."""

    path: Path
    url: str
    size_bytes: int
    sha256: str
    reused: bool
    attempts: int


class DownloadError(RuntimeError):
    """A download failed for a reason that retrying did not, or could not, fix."""


class _TransientError(Exception):
    """A failure worth retrying: dropped connection, timeout, short body, HTTP 5xx or 429."""


@dataclass(frozen=True)
class _Fetched:
    """What one successful transfer left in the ``.part`` file."""

    size_bytes: int
    sha256: str
    etag: str | None
    last_modified: str | None
    content_length: int | None
    resumed_from: int
    content_type: str | None


class _LocalFileAdapter(FileAdapter):
    """``FileAdapter`` that also sends ETag and Last-Modified, so unchanged files are reused.

    The ETag is ``local_etag`` of the opened file: its mtime, size and a digest of its content.
    """

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        response = super().send(request, *args, **kwargs)
        if response.status_code == 200:
            fd = response.raw.fileno()
            st = os.fstat(fd)
            response.headers["Last-Modified"] = formatdate(st.st_mtime, usegmt=True)
            if stat.S_ISREG(st.st_mode):
                response.headers["ETag"] = local_etag(fd, st)
        return response


def local_etag(fd: int, st: os.stat_result) -> str:
    """The ETag of the open local file ``fd`` (``st`` its ``fstat``): mtime, size and content.

    Size and mtime alone miss an edit in place that keeps both, so a content digest is added.
    Up to ``LOCAL_FULL_HASH_MAX_BYTES`` it is the sha256 of the whole file and any edit shows.
    Hashing a larger file whole (a full BRCA matrix is ~1.2 GB: seconds) on every HEAD, and so
    on every sensor poll, is too slow; there only the first and last ``LOCAL_EDGE_BYTES`` are
    hashed, with the size and mtime, and an edit between them that keeps size and mtime goes
    unseen by the poll. ``download`` still catches it: reusing a cached copy of a ``file://``
    source also compares the source's whole sha256 with the sidecar's.
    """
    digest = hashlib.sha256()
    if st.st_size <= LOCAL_FULL_HASH_MAX_BYTES:
        offset = 0
        while chunk := os.pread(fd, CHUNK_BYTES, offset):
            digest.update(chunk)
            offset += len(chunk)
    else:
        digest.update(f"{st.st_size}:{st.st_mtime_ns}:".encode())
        digest.update(os.pread(fd, LOCAL_EDGE_BYTES, 0))
        digest.update(os.pread(fd, LOCAL_EDGE_BYTES, max(0, st.st_size - LOCAL_EDGE_BYTES)))
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}-{digest.hexdigest()[:16]}"'


def local_path(url: str) -> Path | None:
    """The local path a ``file://`` URL names; None for any other URL."""
    if not url.startswith("file:"):
        return None
    return Path(url2pathname(urlsplit(url).path))


def new_session() -> requests.Session:
    """A ``requests.Session`` that also understands ``file://`` URLs."""
    session = requests.Session()
    session.mount("file://", _LocalFileAdapter())
    return session


def to_url(url_or_path: str | os.PathLike[str]) -> str:
    """``url_or_path`` itself when it is a URL, else the ``file://`` URL of that local path."""
    text = os.fspath(url_or_path)
    if "://" in text:
        return text
    return Path(text).expanduser().resolve().as_uri()


def download(
    url: str | os.PathLike[str],
    dest: Path,
    *,
    retries: int = 5,
    backoff_seconds: float = 1.0,
    timeout_seconds: float = 60.0,
    session: requests.Session | None = None,
    progress: Progress | None = None,
) -> Download:
    """Download ``url`` to ``dest``, resuming, retrying and verifying; reuse it when unchanged.

    ``url`` is an ``http(s)://`` or ``file://`` URL, or a local path (made a ``file://`` URL).
    ``retries`` is the number of further attempts after the first one; the waits between them
    grow as ``backoff_seconds * 2**n``. ``timeout_seconds`` bounds the connection and each read.
    ``progress(bytes_done, total_or_None)`` is called at most a few times per second.
    Raises ``DownloadError`` naming the URL and the reason.
    """
    url = to_url(url)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    own_session = session is None
    session = session or new_session()
    if "file://" not in session.adapters:
        session.mount("file://", _LocalFileAdapter())
    try:
        with FileLock(_sibling(dest, ".lock")):
            cached = _reuse_if_unchanged(session, url, dest, timeout_seconds)
            if cached is not None:
                return cached
            return _download_fresh(
                session, url, dest, retries, backoff_seconds, timeout_seconds, progress
            )
    finally:
        if own_session:
            session.close()


def _download_fresh(
    session: requests.Session,
    url: str,
    dest: Path,
    retries: int,
    backoff_seconds: float,
    timeout_seconds: float,
    progress: Progress | None,
) -> Download:
    part = _sibling(dest, ".part")

    def fetch() -> tuple[_Fetched, int]:
        return _fetch_with_retries(
            session, url, part, retries, backoff_seconds, timeout_seconds, progress
        )

    fetched, attempts = fetch()
    try:
        _verify(part, dest, url, fetched.content_type)
    except DownloadError:
        if not fetched.resumed_from:
            raise
        # The bytes kept from an earlier run may belong to an older version of the file.
        log.warning("%s: resumed file failed verification; downloading it from the start", url)
        fetched, more = fetch()
        attempts += more
        _verify(part, dest, url, fetched.content_type)
    _install(part, dest, url, fetched)
    return Download(dest, url, fetched.size_bytes, fetched.sha256, reused=False, attempts=attempts)


def _fetch_with_retries(
    session: requests.Session,
    url: str,
    part: Path,
    retries: int,
    backoff_seconds: float,
    timeout_seconds: float,
    progress: Progress | None,
) -> tuple[_Fetched, int]:
    """Run ``_stream_to_part`` until it succeeds; return its result and the attempts made."""
    retrying = Retrying(
        stop=stop_after_attempt(retries + 1),
        wait=wait_exponential(
            multiplier=backoff_seconds, max=max(MAX_BACKOFF_SECONDS, backoff_seconds)
        ),
        retry=retry_if_exception_type(_TransientError),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                fetched = _stream_to_part(session, url, part, timeout_seconds, progress)
    except _TransientError as error:
        raise DownloadError(f"{url}: gave up after {retries + 1} attempts: {error}") from error
    return fetched, attempt.retry_state.attempt_number


def _stream_to_part(
    session: requests.Session,
    url: str,
    part: Path,
    timeout_seconds: float,
    progress: Progress | None,
) -> _Fetched:
    """One GET: append to ``part`` from where it ends (``Range``) or rewrite it from zero."""
    state = _part_state(part, url)
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        etag = state.get("etag")
        validator = etag if etag and not etag.startswith("W/") else state.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    try:
        with session.get(url, headers=headers, stream=True, timeout=timeout_seconds) as response:
            if response.status_code == 416 and offset:
                return _complete_part(response, part, state)
            _check_status(response, url)
            offset, total = _resume_point(response, part, offset)
            if offset == 0:
                state = _write_part_state(part, url, response)
            size, sha256 = _write_body(response, part, offset, total, progress)
    except (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.HTTPError,
    ) as error:
        raise _TransientError(f"{type(error).__name__}: {error}") from error
    except requests.RequestException as error:
        raise DownloadError(f"{url}: {error}") from error
    return _Fetched(
        size_bytes=size,
        sha256=sha256,
        etag=response.headers.get("ETag") or state.get("etag"),
        last_modified=response.headers.get("Last-Modified") or state.get("last_modified"),
        content_length=total,
        resumed_from=offset,
        content_type=response.headers.get("Content-Type") or state.get("content_type"),
    )


def _check_status(response: requests.Response, url: str) -> None:
    status = response.status_code
    if status in (200, 206):
        return
    if status == 429 or status >= 500:
        raise _TransientError(f"HTTP {status} {response.reason or ''}".rstrip())
    if status == 404:
        raise DownloadError(f"{url}: not found (HTTP 404)")
    raise DownloadError(f"{url}: HTTP {status} {response.reason or ''}".rstrip())


def _resume_point(response: requests.Response, part: Path, offset: int) -> tuple[int, int | None]:
    """Where the body starts in the file and the file's total size, when the server says."""
    if response.status_code == 200:
        return 0, _int_or_none(response.headers.get("Content-Length"))
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    if match is None or int(match.group(1)) != offset:
        part.unlink(missing_ok=True)
        raise _TransientError(
            f"server answered Range bytes={offset}- with Content-Range "
            f"{response.headers.get('Content-Range')!r}; restarting from zero"
        )
    return offset, _int_or_none(match.group(3))


def _complete_part(response: requests.Response, part: Path, state: dict[str, Any]) -> _Fetched:
    """HTTP 416: the ``.part`` is already whole (a run died before renaming it) or is garbage."""
    match = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", ""))
    size = part.stat().st_size
    if match is None or int(match.group(1)) != size:
        part.unlink(missing_ok=True)
        raise _TransientError(f"server cannot resume at byte {size}; restarting from zero")
    return _Fetched(
        size_bytes=size,
        sha256=_file_sha256(part),
        etag=state.get("etag"),
        last_modified=state.get("last_modified"),
        content_length=size,
        resumed_from=size,
        content_type=state.get("content_type"),
    )


def _write_body(
    response: requests.Response,
    part: Path,
    offset: int,
    total: int | None,
    progress: Progress | None,
) -> tuple[int, str]:
    """Write the body after ``offset`` bytes of ``part``; return the file's size and sha256."""
    digest = hashlib.sha256()
    if offset:
        _hash_file(part, digest)
    report = _ProgressReporter(progress, total)
    done = offset
    with part.open("ab" if offset else "wb") as out:
        for chunk in _raw_chunks(response):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            report(done)
        out.flush()
        os.fsync(out.fileno())
    report(done, final=True)
    if total is not None and done != total:
        if done > total:
            part.unlink(missing_ok=True)
        raise _TransientError(f"size mismatch: received {done} of {total} bytes")
    return done, digest.hexdigest()


def _raw_chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as sent, never content-decoded: a ``.gz`` stays gzip even if so labelled."""
    raw = response.raw
    if hasattr(raw, "stream"):
        yield from raw.stream(CHUNK_BYTES, decode_content=False)
        return
    while chunk := raw.read(CHUNK_BYTES):
        yield chunk


def _verify(part: Path, dest: Path, url: str, content_type: str | None) -> None:
    """Check the body is the kind of file ``dest`` names and a ``.gz`` end to end (CRC, length).

    A bad part is dropped with its state, so the next run starts from zero, not resumes it.
    """
    _check_content(part, dest, url, content_type)
    if not dest.name.endswith(".gz"):
        return
    problem = _gzip_problem(part)
    if problem is not None:
        _drop_part(part)
        raise DownloadError(f"{url}: downloaded file is a truncated or corrupt gzip ({problem})")


def _check_content(part: Path, dest: Path, url: str, content_type: str | None) -> None:
    """Refuse a body that cannot be the file ``dest`` names, such as an error or login page.

    Servers answer 200 with an HTML page for a wrong or expired link; cached, it would fail
    much later as a parse error. Only the first chunk is looked at.
    """
    with part.open("rb") as stream:
        head = stream.read(CHUNK_BYTES)
    if dest.name.endswith(".gz"):
        refused, expected = not head.startswith(GZIP_MAGIC), "not a gzip file"
    else:
        refused, expected = _is_markup(head, content_type) or b"\0" in head, "expected plain text"
    if refused:
        _drop_part(part)
        raise DownloadError(f"{url}: {expected}, received {_describe(head, content_type)}")


def _is_markup(head: bytes, content_type: str | None) -> bool:
    """An HTML/XML page by its Content-Type or by its first non-blank byte being ``<``."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    body = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return media_type in MARKUP_CONTENT_TYPES or body.startswith(b"<")


def _describe(head: bytes, content_type: str | None) -> str:
    """What a body looks like, for error messages: its kind, Content-Type and first bytes."""
    if _is_markup(head, content_type):
        kind = "an HTML/XML page"
    elif b"\0" in head:
        kind = "binary data"
    else:
        kind = "text"
    return f"{kind} (Content-Type {content_type or 'not given'}, starting {head[:40]!r})"


def _drop_part(part: Path) -> None:
    part.unlink(missing_ok=True)
    _sibling(part, ".json").unlink(missing_ok=True)


def _gzip_problem(path: Path) -> str | None:
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(CHUNK_BYTES):
                pass
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        return f"{type(error).__name__}: {error}"
    return None


def _install(part: Path, dest: Path, url: str, fetched: _Fetched) -> None:
    """Move the verified part onto ``dest`` and write its sidecar (stale sidecar removed first)."""
    sidecar = _sibling(dest, ".json")
    sidecar.unlink(missing_ok=True)
    os.replace(part, dest)
    record = {
        "url": url,
        "size_bytes": fetched.size_bytes,
        "sha256": fetched.sha256,
        "etag": fetched.etag,
        "last_modified": fetched.last_modified,
        "content_length": fetched.content_length,
        "downloaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_json(sidecar, record)
    _sibling(part, ".json").unlink(missing_ok=True)


def _reuse_if_unchanged(
    session: requests.Session, url: str, dest: Path, timeout_seconds: float
) -> Download | None:
    """The cached ``dest`` when its sidecar matches the server's current validators and the
    file's sha256 still matches the sidecar's; for a ``file://`` source, the source's too.

    The cheap checks (size, then HEAD validators) come first; hashing is last because it reads
    the whole file, a few seconds for a 1.2 GB matrix, which is accepted so that a corrupted or
    edited cache entry is downloaded again instead of failing on every later run. A local
    source is read whole as well (twice the reading): its ETag hashes only the ends of a large
    file (``local_etag``), and an edit in place between them must not leave a stale copy.
    """
    record = _read_json(_sibling(dest, ".json"))
    if not record or record.get("url") != url or not isinstance(record.get("sha256"), str):
        return None
    if not dest.is_file():
        return None
    if dest.stat().st_size != record.get("size_bytes"):
        log.warning("%s: cached file size differs from its sidecar; downloading again", dest)
        return None
    remote = _remote_validators(session, url, timeout_seconds)
    if remote is None or not _same_version(remote, record):
        return None
    if _file_sha256(dest) != record["sha256"]:
        log.warning("%s: cached file's sha256 differs from its sidecar; downloading again", dest)
        return None
    source = local_path(url)
    if source is not None and _source_sha256(source) != record["sha256"]:
        log.warning(
            "%s: source file's sha256 differs from the cached copy's; downloading again", url
        )
        return None
    return Download(dest, url, record["size_bytes"], record["sha256"], reused=True, attempts=0)


def _remote_validators(
    session: requests.Session, url: str, timeout_seconds: float
) -> dict[str, Any] | None:
    """ETag, Last-Modified and Content-Length from a HEAD request; None if it fails."""
    try:
        with session.head(
            url,
            headers={"Accept-Encoding": "identity"},
            allow_redirects=True,
            timeout=timeout_seconds,
        ) as response:
            if response.status_code != 200:
                log.info("%s: HEAD answered HTTP %s", url, response.status_code)
                return None
            return {
                "etag": response.headers.get("ETag"),
                "last_modified": response.headers.get("Last-Modified"),
                "content_length": _int_or_none(response.headers.get("Content-Length")),
            }
    except requests.RequestException as error:
        log.info("%s: HEAD failed (%s)", url, error)
        return None


def _same_version(remote: dict[str, Any], record: dict[str, Any]) -> bool:
    """Equal validators; without an ETag or Last-Modified nothing proves the file unchanged."""
    if not (remote["etag"] or remote["last_modified"]):
        return False
    if remote["content_length"] is not None and remote["content_length"] != record["size_bytes"]:
        return False
    return all(
        remote[key] == record.get(key)
        for key in ("etag", "last_modified")
        if remote[key] or record.get(key)
    )


def _part_state(part: Path, url: str) -> dict[str, Any]:
    """Validators of the response that started ``part``; a part from another URL is dropped."""
    state_path = _sibling(part, ".json")
    state = _read_json(state_path)
    if state is not None and state.get("url") != url:
        log.warning("%s: partial file came from %s; starting again", part, state.get("url"))
        part.unlink(missing_ok=True)
        state_path.unlink(missing_ok=True)
        return {}
    return state or {}


def _write_part_state(part: Path, url: str, response: requests.Response) -> dict[str, Any]:
    state = {
        "url": url,
        "etag": response.headers.get("ETag"),
        "last_modified": response.headers.get("Last-Modified"),
        "content_type": response.headers.get("Content-Type"),
    }
    _write_json(_sibling(part, ".json"), state)
    return state


class _ProgressReporter:
    """Calls ``callback(done, total)`` at most every ``PROGRESS_INTERVAL_SECONDS``, and last."""

    def __init__(self, callback: Progress | None, total: int | None) -> None:
        self._callback = callback
        self._total = total
        self._last = float("-inf")

    def __call__(self, done: int, *, final: bool = False) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        if final or now - self._last >= PROGRESS_INTERVAL_SECONDS:
            self._last = now
            self._callback(done, self._total)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    _hash_file(path, digest)
    return digest.hexdigest()


def _source_sha256(path: Path) -> str | None:
    """The local source's sha256; None if it cannot be read (the fresh download says why)."""
    try:
        return _file_sha256(path)
    except OSError:
        return None


def _hash_file(path: Path, digest: Any) -> None:
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = _sibling(path, ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
