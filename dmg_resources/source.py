"""The UCSC Xena TCGA hub as a Dagster resource: cohort files fetched into a local cache.

The base URL may be the public hub, any ``http(s)://`` mirror, a ``file://`` URL or a bare
local directory laid out like the hub (``TCGA.BRCA.sampleMap/HumanMethylation450.gz``, ...),
which is how the embedded synthetic cohort is served: every base goes through ``download``.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import dagster as dg
from pydantic import Field

from dmg_ml.data.xena import EXPRESSION_PATH, GROUND_TRUTH_PATH, METHYLATION_PATH, PROBE_MAP_PATH
from dmg_resources.download import Download, Progress, download

__all__ = ["EXPRESSION_PATH", "METHYLATION_PATH", "PROBE_MAP_PATH", "XenaSource", "XENA_HUB_URL"]

XENA_HUB_URL = "https://tcga-xena-hub.s3.us-east-1.amazonaws.com/download/"


_COHORT = re.compile(r"^[A-Z0-9]+(?:-[A-Z0-9]+)*$")


def validate_cohort(cohort: str) -> str:
    """``cohort`` unchanged if it is a Xena cohort name such as ``BRCA``; else ``ValueError``."""
    if not isinstance(cohort, str) or not _COHORT.match(cohort):
        raise ValueError(
            f"invalid cohort name {cohort!r}: expected upper-case letters, digits and dashes, "
            "e.g. 'BRCA' or 'LUAD'"
        )
    return cohort


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

    def methylation(self, cohort: str, progress: Progress | None = None) -> Download:
        """The cohort's 450K beta-value matrix (gzip TSV, probes x samples)."""
        return self.fetch(METHYLATION_PATH.format(cohort=validate_cohort(cohort)), progress)

    def expression(self, cohort: str, progress: Progress | None = None) -> Download:
        """The cohort's RNA-seq matrix, log2(RSEM normalised count + 1) (gzip TSV)."""
        return self.fetch(EXPRESSION_PATH.format(cohort=validate_cohort(cohort)), progress)

    def ground_truth(self, cohort: str) -> Download:
        """The simulator's per-gene truth (``expected_r2``: the share of expression variance
        methylation explains); only a synthetic hub has it, others raise ``DownloadError``."""
        return self.fetch(GROUND_TRUTH_PATH.format(cohort=validate_cohort(cohort)))

    def probe_map(self, progress: Progress | None = None) -> Download:
        """The 450K probe map (hg19 coordinates), shared by all cohorts."""
        return self.fetch(PROBE_MAP_PATH, progress)
