"""A threaded HTTP file server on 127.0.0.1 for tests: Range, validators, HEAD, fault injection.

    with FileServer(root) as server:
        server.drop("a.gz", after_bytes=100)   # first GET of a.gz breaks off after 100 bytes
        server.fail("b.gz", 500, times=2)      # first two requests for b.gz get HTTP 500
        download(server.url + "a.gz", dest)
        assert server.requests_for("a.gz", "GET")[1].range == "bytes=100-"

Paths are percent-decoded before use, so ``/TCGA.BRCA.sampleMap%2FHiSeqV2.gz`` serves
``root/TCGA.BRCA.sampleMap/HiSeqV2.gz``, as the Xena hub does.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Request:
    """One request as the server saw it; ``path`` is decoded and relative to the root."""

    method: str
    path: str
    raw_path: str
    range: str | None
    if_range: str | None


@dataclass
class _Fault:
    status: int | None
    drop_after: int | None
    remaining: int | None  # None: every request

    def applies(self, method: str) -> bool:
        if self.remaining == 0:
            return False
        return self.status is not None or method == "GET"


class FileServer:
    """Serves the files under ``root``; ``url`` is the base URL, ending in '/'.

    ``headers`` are added to every file response (e.g. ``Content-Encoding: gzip``, as S3 sends
    for objects uploaded with that metadata); a ``Content-Type`` among them replaces the
    default ``application/octet-stream``.
    """

    def __init__(self, root: Path, headers: dict[str, str] | None = None) -> None:
        self.root = Path(root).resolve()
        self.headers = dict(headers or {})
        self.requests: list[Request] = []
        self._faults: dict[str, list[_Fault]] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> FileServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.file_server = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def fail(self, path: str, status: int, times: int | None = None) -> None:
        """Answer every request for ``path`` with ``status``, or only the first ``times``."""
        self._add_fault(path, _Fault(status=status, drop_after=None, remaining=times))

    def drop(self, path: str, after_bytes: int, times: int = 1) -> None:
        """Close the connection after ``after_bytes`` of the body for the first ``times`` GETs."""
        self._add_fault(path, _Fault(status=None, drop_after=after_bytes, remaining=times))

    def requests_for(self, path: str, method: str | None = None) -> list[Request]:
        """Requests for ``path`` (decoded, relative to the root), optionally of one method."""
        with self._lock:
            return [r for r in self.requests if r.path == path and method in (None, r.method)]

    def _add_fault(self, path: str, fault: _Fault) -> None:
        with self._lock:
            self._faults.setdefault(path.lstrip("/"), []).append(fault)

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_fault(self, path: str, method: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults.get(path, []):
                if fault.applies(method):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    def _resolve(self, path: str) -> Path | None:
        file = (self.root / path).resolve()
        if not file.is_relative_to(self.root) or not file.is_file():
            return None
        return file


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: requests are recorded on the server object instead."""

    def _serve(self, send_body: bool) -> None:
        owner: FileServer = self.server.file_server  # type: ignore[attr-defined]
        path = unquote(urlsplit(self.path).path).lstrip("/")
        owner._record(
            Request(
                method=self.command,
                path=path,
                raw_path=self.path,
                range=self.headers.get("Range"),
                if_range=self.headers.get("If-Range"),
            )
        )
        fault = owner._take_fault(path, self.command)
        if fault is not None and fault.status is not None:
            self._send_plain(fault.status, f"injected HTTP {fault.status}\n", send_body)
            return
        file = owner._resolve(path)
        if file is None:
            self._send_plain(404, "not found\n", send_body)
            return
        data = file.read_bytes()
        stat = file.stat()
        etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        last_modified = formatdate(stat.st_mtime, usegmt=True)
        span = self._requested_span(len(data), etag, last_modified)
        if span == "unsatisfiable":
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = span if span is not None else (0, len(data) - 1)
        body = data[start : end + 1]
        self.send_response(206 if span is not None else 200)
        self.send_header(
            "Content-Type", owner.headers.get("Content-Type", "application/octet-stream")
        )
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        for name, value in owner.headers.items():
            if name != "Content-Type":
                self.send_header(name, value)
        if span is not None:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if not send_body:
            return
        if fault is not None and fault.drop_after is not None:
            self.wfile.write(body[: fault.drop_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def _requested_span(
        self, size: int, etag: str, last_modified: str
    ) -> tuple[int, int] | str | None:
        """(start, end) for a satisfiable single Range, "unsatisfiable", or None for all."""
        header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if header is None or (if_range is not None and if_range not in (etag, last_modified)):
            return None
        match = _RANGE.match(header.strip())
        if match is None or match.group(1) == match.group(2) == "":
            return None
        first, last = match.groups()
        if first == "":
            start, end = max(size - int(last), 0), size - 1
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
        if start >= size or start > end:
            return "unsatisfiable"
        return start, end

    def _send_plain(self, status: int, text: str, send_body: bool) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)
