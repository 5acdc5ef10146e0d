"""The UCSC Xena TCGA hub as a Dagster resource: cohort files fetched into a local cache.

The base URL may be the public hub, any ``http(s)://`` mirror, a ``file://`` URL or a bare
local directory laid out like the hub (``TCGA.BRCA.sampleMap/HumanMethylation450.gz``, ...),
which is how the embedded synthetic cohort is served: every base goes through ``download``.

``XenaSource.version`` tells whether a cohort's files changed without downloading them (HTTP
HEAD validators; a local file's size, mtime and a content digest, ``download.local_etag``),
which the ``watch_source`` sensor polls.
"""

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit
from urllib.request import url2pathname

import dagster as dg
import requests
from pydantic import Field, field_validator
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from dmg_ml.data.xena import (
    DEFAULT_COHORTS,
    EXPRESSION_PATH,
    GROUND_TRUTH_PATH,
    METHYLATION_PATH,
    PROBE_MAP_PATH,
)
from dmg_resources.download import Download, Progress, download, local_path, new_session

__all__ = [
    "EXPRESSION_PATH",
    "METHYLATION_PATH",
    "PROBE_MAP_PATH",
    "MAX_COHORT_CHARS",
    "CohortNotFound",
    "CohortVersion",
    "FileVersion",
    "SourceError",
    "SourceUnavailable",
    "XenaSource",
    "XENA_HUB_URL",
]

XENA_HUB_URL = "https://tcga-xena-hub.s3.us-east-1.amazonaws.com/download/"


_COHORT = re.compile(r"^[A-Z0-9]+(?:-[A-Z0-9]+)*$")
#: Longest cohort name accepted. TCGA's are 2-8 characters, other projects' a few more
#: (``TARGET-NBL``, ``CPTAC-3``); the name goes into directory and file names, which most file
#: systems cap at 255 bytes.
MAX_COHORT_CHARS = 64


def validate_cohort(cohort: str) -> str:
    """``cohort`` unchanged if it is a Xena cohort name such as ``BRCA``; else ``ValueError``."""
    if isinstance(cohort, str) and len(cohort) > MAX_COHORT_CHARS:
        raise ValueError(
            f"invalid cohort name {cohort[:16]!r}... ({len(cohort)} characters): "
            f"a cohort name has at most {MAX_COHORT_CHARS} characters"
        )
    if not isinstance(cohort, str) or not _COHORT.match(cohort):
        raise ValueError(
            f"invalid cohort name {cohort!r}: expected upper-case letters, digits and dashes, "
            "e.g. 'BRCA' or 'LUAD'"
        )
    return cohort


class SourceError(RuntimeError):
    """The source could not say what a cohort's files are; ``url`` is the one tried."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(message)
        self.url = url


class CohortNotFound(SourceError, LookupError):
    """The source answers, but lacks one of the cohort's files (HTTP 404 / 403 / 410, or no
    such local file)."""


class SourceUnavailable(SourceError):
    """The source did not answer: connection refused or timed out, HTTP 5xx or 429 after the
    retries, or a local base directory that does not exist. Worth trying again later."""


@dataclass(frozen=True)
class FileVersion:
    """One file's identity at the source, as its headers tell it, without reading the file.

    Over HTTP: the ETag, Last-Modified and Content-Length a HEAD request answers. A local base
    (a directory or ``file://``) answers through ``download``'s own file adapter, whose ETag is
    built from the file's size, nanosecond mtime and a digest of its content
    (``download.local_etag``: the whole file up to ``LOCAL_FULL_HASH_MAX_BYTES``, else its first
    and last MiB); ``size_bytes`` and ``mtime_ns`` give the first two as well.
    """

    url: str
    etag: str | None
    last_modified: str | None
    size_bytes: int | None
    mtime_ns: int | None = None


@dataclass(frozen=True)
class CohortVersion:
    """The identity of a cohort's methylation and expression files at the source."""

    cohort: str
    methylation: FileVersion
    expression: FileVersion

    @property
    def files(self) -> dict[str, FileVersion]:
        return {"methylation": self.methylation, "expression": self.expression}

    @property
    def key(self) -> str:
        """16 hex digits of the sha256 of both files' identities: a run key for this version.

        A server that sends neither ETag nor Last-Modified changes the key only when a size
        changes.
        """
        fields = json.dumps({n: asdict(f) for n, f in self.files.items()}, sort_keys=True)
        return hashlib.sha256(f"{self.cohort}\n{fields}".encode()).hexdigest()[:16]


def _validate_relative_path(relative_path: str) -> PurePosixPath:
    """A '/'-separated path that stays inside the base URL and the cache directory."""
    parts = relative_path.split("/")
    if any(p in ("", ".", "..") or "\\" in p for p in parts) or parts[0].endswith(":"):
        raise ValueError(f"not a relative path inside the source: {relative_path!r}")
    return PurePosixPath(*parts)


class XenaSource(dg.ConfigurableResource):
    """Files of the UCSC Xena TCGA hub (or a mirror, or a local copy) cached on local disk."""

    base_url: str = Field(
        default=XENA_HUB_URL,
        description=(
            "Root the cohort files live under: an http(s) URL (default: the public Xena TCGA "
            "hub), a file:// URL, or a local directory laid out like the hub, e.g. "
            "data/synthetic for the embedded synthetic cohort."
        ),
    )
    cache_dir: str = Field(
        default="data/cache",
        description="Local directory downloads are cached in, under their hub-relative path.",
    )
    retries: int = Field(
        default=5,
        description="Further attempts after a dropped connection, timeout, HTTP 5xx or 429.",
    )
    backoff_seconds: float = Field(
        default=1.0,
        description="First wait between attempts; it doubles after each failed attempt.",
    )
    timeout_seconds: float = Field(
        default=60.0,
        description="Seconds to wait for a connection or for the next bytes of a response.",
    )
    watch_cohorts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_COHORTS),
        description=(
            "Cohorts the watch_source sensor and schedule look for on the source besides the "
            "registered ones: one that appears is registered and its data layer built."
        ),
    )
    probe_retries: int = Field(
        default=2,
        description=(
            "Further HEAD attempts of a version check after a dropped connection, timeout, "
            "HTTP 5xx or 429 (few: a sensor tick must stay short)."
        ),
    )
    probe_timeout_seconds: float = Field(
        default=10.0, description="Seconds a version check waits for each HEAD answer."
    )

    @field_validator("watch_cohorts")
    @classmethod
    def _cohort_names(cls, cohorts: list[str]) -> list[str]:
        return [validate_cohort(c) for c in cohorts]

    def url_for(self, relative_path: str) -> str:
        """The URL of ``relative_path`` under ``base_url``.

        For http(s) bases the '/' inside the path is sent as ``%2F``, as the hub's own
        download links are; local bases give the ``file://`` URL of the file.
        """
        path = _validate_relative_path(relative_path)
        base = self.base_url
        if base.startswith(("http://", "https://")):
            return base.rstrip("/") + "/" + quote(str(path), safe="")
        if base.startswith("file://"):
            return base.rstrip("/") + "/" + quote(str(path), safe="/")
        return Path(base).expanduser().resolve().joinpath(*path.parts).as_uri()

    def cache_path(self, relative_path: str) -> Path:
        """Where ``relative_path`` is cached locally."""
        return Path(self.cache_dir).joinpath(*_validate_relative_path(relative_path).parts)

    def fetch(self, relative_path: str, progress: Progress | None = None) -> Download:
        """Download ``relative_path`` into the cache, or reuse the cached copy if unchanged."""
        return download(
            self.url_for(relative_path),
            self.cache_path(relative_path),
            retries=self.retries,
            backoff_seconds=self.backoff_seconds,
            timeout_seconds=self.timeout_seconds,
            progress=progress,
        )

    def cohort_files(self, cohort: str) -> dict[str, str]:
        """The hub-relative paths of the cohort's methylation and expression matrices."""
        cohort = validate_cohort(cohort)
        return {
            "methylation": METHYLATION_PATH.format(cohort=cohort),
            "expression": EXPRESSION_PATH.format(cohort=cohort),
        }

    def methylation(self, cohort: str, progress: Progress | None = None) -> Download:
        """The cohort's 450K beta-value matrix (gzip TSV, probes x samples)."""
        return self.fetch(self.cohort_files(cohort)["methylation"], progress)

    def expression(self, cohort: str, progress: Progress | None = None) -> Download:
        """The cohort's RNA-seq matrix, log2(RSEM normalised count + 1) (gzip TSV)."""
        return self.fetch(self.cohort_files(cohort)["expression"], progress)

    def version(self, cohort: str) -> CohortVersion:
        """What the cohort's two files are now, from one HEAD request each (no download; a
        local file is read for its ETag: whole if small, else its ends, see ``local_etag``).

        Raises ``CohortNotFound`` when the source lacks a file, ``SourceUnavailable`` when it
        does not answer (after ``probe_retries``), both naming the URL tried.
        """
        files = self.cohort_files(cohort)
        with self._probe_session() as session:
            found = {name: self._probe(session, cohort, path) for name, path in files.items()}
        return CohortVersion(cohort=cohort, **found)

    def cached_since(self, version: CohortVersion) -> float | None:
        """When the cache took exactly these files (the newer cached file's mtime, POSIX
        seconds), from the sidecars ``download`` writes; None when it holds other files or
        none, or when no ETag or Last-Modified can prove the files unchanged."""
        times = []
        for name, relative in self.cohort_files(version.cohort).items():
            file = version.files[name]
            path = self.cache_path(relative)
            record = _read_json(path.with_name(path.name + ".json"))
            if not (file.etag or file.last_modified) or record is None or not path.is_file():
                return None
            stat = path.stat()
            cached = (record.get("url"), record.get("etag"), record.get("last_modified"),
                      record.get("size_bytes"))
            if cached != (file.url, file.etag, file.last_modified, stat.st_size) or (
                file.size_bytes is not None and file.size_bytes != stat.st_size
            ):
                return None
            times.append(stat.st_mtime)
        return max(times)

    def _local_root(self) -> Path | None:
        """The directory a local base names; None for an http(s) base."""
        base = self.base_url
        if base.startswith(("http://", "https://")):
            return None
        if base.startswith("file://"):
            return Path(url2pathname(urlsplit(base).path))
        return Path(base).expanduser().resolve()

    def _probe_session(self) -> requests.Session:
        """``download``'s session (it answers ``file://`` too), retrying HEAD a few times."""
        session = new_session()
        retry = Retry(
            total=self.probe_retries,
            backoff_factor=self.backoff_seconds,
            status_forcelist=(408, 429, 500, 502, 503, 504),
            allowed_methods=frozenset({"HEAD"}),
            raise_on_status=False,
            respect_retry_after_header=False,  # an hour's Retry-After must not stall a tick
        )
        for prefix in ("http://", "https://"):
            session.mount(prefix, HTTPAdapter(max_retries=retry))
        return session

    def _probe(self, session: requests.Session, cohort: str, relative: str) -> FileVersion:
        url = self.url_for(relative)
        root = self._local_root()
        stat = None
        if root is not None:
            if not root.is_dir():
                raise SourceUnavailable(url, f"{url}: the source directory {root} does not exist")
            path = local_path(url)
            if path is None or not path.is_file():
                raise CohortNotFound(
                    url, f"cohort {cohort!r} is not on the source: no file {path} ({url})"
                )
            stat = path.stat()
        try:
            with session.head(
                url,
                headers={"Accept-Encoding": "identity"},
                allow_redirects=True,
                timeout=self.probe_timeout_seconds,
            ) as response:
                status, headers = response.status_code, response.headers
        except (requests.ConnectionError, requests.Timeout) as error:
            raise SourceUnavailable(
                url, f"{url}: the source did not answer ({type(error).__name__}: {error})"
            ) from error
        except (requests.RequestException, OSError) as error:
            raise SourceError(url, f"{url}: {error}") from error
        if status in (403, 404, 410):
            hint = " (S3 answers 403 for a missing object)" if status == 403 else ""
            raise CohortNotFound(
                url, f"cohort {cohort!r} is not on the source: {url} answered HTTP {status}{hint}"
            )
        if status in (408, 429) or status >= 500:
            raise SourceUnavailable(
                url, f"{url}: the source answered HTTP {status} "
                f"({self.probe_retries} retries included)"
            )
        if status != 200:
            raise SourceError(url, f"{url}: HEAD answered HTTP {status}")
        length = headers.get("Content-Length", "")
        return FileVersion(
            url=url,
            etag=headers.get("ETag"),
            last_modified=headers.get("Last-Modified"),
            size_bytes=stat.st_size if stat else int(length) if length.isdigit() else None,
            mtime_ns=stat.st_mtime_ns if stat else None,
        )

    def ground_truth(self, cohort: str) -> Download:
        """The simulator's per-gene truth (``expected_r2``: the share of expression variance
        methylation explains); only a synthetic hub has it, others raise ``DownloadError``."""
        return self.fetch(GROUND_TRUTH_PATH.format(cohort=validate_cohort(cohort)))

    def probe_map(self, progress: Progress | None = None) -> Download:
        """The 450K probe map (hg19 coordinates), shared by all cohorts."""
        return self.fetch(PROBE_MAP_PATH, progress)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
