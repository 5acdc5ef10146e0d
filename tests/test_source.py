"""XenaSource: URLs, cohort validation, and the same files through HTTP, file:// and a directory."""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from dmg_resources.source import (
    EXPRESSION_PATH,
    METHYLATION_PATH,
    PROBE_MAP_PATH,
    XENA_HUB_URL,
    XenaSource,
    validate_cohort,
)
from tests.http_server import FileServer

FAST = {"retries": 2, "backoff_seconds": 0.001, "timeout_seconds": 5.0}


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    """A directory laid out like the Xena hub, with one tiny cohort."""
    root = tmp_path / "hub"
    files = {
        METHYLATION_PATH.format(cohort="BRCA"): gzip.compress(
            b"sample\tTCGA-A1-A0SB-01A\ncg00000029\t0.5\n", mtime=0
        ),
        EXPRESSION_PATH.format(cohort="BRCA"): gzip.compress(
            b"sample\tTCGA-A1-A0SB-01A\nTP53\t9.1\n", mtime=0
        ),
        PROBE_MAP_PATH: b"#id\tgene\tchrom\tchromStart\tchromEnd\tstrand\ncg00000029\tRBL2\tchr16"
        b"\t53468112\t53468112\t.\n",
    }
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return root


@pytest.fixture
def server(hub: Path) -> Iterator[FileServer]:
    with FileServer(hub) as running:
        yield running


def fetch_all(source: XenaSource) -> list[tuple[str, int]]:
    return [
        (d.sha256, d.size_bytes)
        for d in (source.methylation("BRCA"), source.expression("BRCA"), source.probe_map())
    ]


def test_url_for_encodes_slash_for_http():
    source = XenaSource()
    assert source.base_url == XENA_HUB_URL
    assert source.url_for(METHYLATION_PATH.format(cohort="BRCA")) == (
        "https://tcga-xena-hub.s3.us-east-1.amazonaws.com/download/"
        "TCGA.BRCA.sampleMap%2FHumanMethylation450.gz"
    )
    no_slash = XenaSource(base_url="http://mirror.example/xena")
    assert no_slash.url_for(PROBE_MAP_PATH) == (
        "http://mirror.example/xena/probeMap%2FilluminaMethyl450_hg19_GPL16304_TCGAlegacy"
    )


def test_url_for_local_bases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    expected = (tmp_path / "hub" / "TCGA.BRCA.sampleMap" / "HiSeqV2.gz").as_uri()
    relative = EXPRESSION_PATH.format(cohort="BRCA")
    monkeypatch.chdir(tmp_path)

    assert XenaSource(base_url=str(tmp_path / "hub")).url_for(relative) == expected
    assert XenaSource(base_url="hub").url_for(relative) == expected
    assert XenaSource(base_url=(tmp_path / "hub").as_uri()).url_for(relative) == expected
    assert XenaSource(base_url=(tmp_path / "hub").as_uri() + "/").url_for(relative) == expected


@pytest.mark.parametrize("bad", ["brca", "BR CA", "", "BRCA/../x", "-BRCA", "TCGA.BRCA"])
def test_bad_cohort_is_rejected(bad: str, tmp_path: Path):
    source = XenaSource(base_url=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="invalid cohort name"):
        source.methylation(bad)


def test_good_cohorts_are_accepted():
    assert [validate_cohort(c) for c in ("BRCA", "LUAD", "COADREAD", "TCGA-X1")] == [
        "BRCA",
        "LUAD",
        "COADREAD",
        "TCGA-X1",
    ]
    assert validate_cohort("TARGET-NBL") == "TARGET-NBL"
    assert validate_cohort("CPTAC-3") == "CPTAC-3"
    assert validate_cohort("A" * 64) == "A" * 64


def test_overlong_cohort_is_refused_before_any_path_is_made(tmp_path: Path):
    source = XenaSource(base_url=str(tmp_path / "hub"), cache_dir=str(tmp_path / "cache"))

    with pytest.raises(ValueError, match="at most 64 characters") as refused:
        source.methylation("A" * 300)

    message = str(refused.value)
    assert "\n" not in message and len(message) < 200 and "300" in message
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ValueError, match="at most 64 characters"):
        XenaSource(watch_cohorts=["A" * 65])


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a//b", "a/./b", ""])
def test_paths_outside_the_source_are_rejected(bad: str):
    with pytest.raises(ValueError, match="relative path"):
        XenaSource().url_for(bad)


def test_http_file_url_and_directory_bases_give_the_same_files(
    server: FileServer, hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    sources = [
        XenaSource(base_url=server.url, cache_dir="cache-http", **FAST),
        XenaSource(base_url=hub.as_uri(), cache_dir="cache-file-url", **FAST),
        XenaSource(base_url="hub", cache_dir="cache-dir", **FAST),
        XenaSource(base_url=str(hub), cache_dir=str(tmp_path / "cache-abs"), **FAST),
    ]

    results = [fetch_all(source) for source in sources]

    expected = [
        (hashlib.sha256((hub / p).read_bytes()).hexdigest(), (hub / p).stat().st_size)
        for p in (
            METHYLATION_PATH.format(cohort="BRCA"),
            EXPRESSION_PATH.format(cohort="BRCA"),
            PROBE_MAP_PATH,
        )
    ]
    assert all(result == expected for result in results)
    for cache in ("cache-http", "cache-file-url", "cache-dir", "cache-abs"):
        cached = tmp_path / cache / "TCGA.BRCA.sampleMap" / "HumanMethylation450.gz"
        assert cached.read_bytes() == (hub / METHYLATION_PATH.format(cohort="BRCA")).read_bytes()
    raw_paths = [r.raw_path for r in server.requests_for("TCGA.BRCA.sampleMap/HiSeqV2.gz")]
    assert raw_paths == ["/TCGA.BRCA.sampleMap%2FHiSeqV2.gz"]


def test_second_fetch_reuses_the_cache(server: FileServer, tmp_path: Path):
    source = XenaSource(base_url=server.url, cache_dir=str(tmp_path / "cache"), **FAST)
    first = source.methylation("BRCA")

    again = source.methylation("BRCA")

    assert again.reused and again.path == first.path
    assert again.path == tmp_path / "cache" / "TCGA.BRCA.sampleMap" / "HumanMethylation450.gz"


def rewrite_in_place(path: Path, data: bytes) -> None:
    """Overwrite ``path`` with ``data`` of the same size, keeping its mtime to the nanosecond."""
    st = path.stat()
    assert len(data) == st.st_size
    with path.open("r+b") as stream:
        stream.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_local_file_edited_in_place_is_a_new_version_and_fetched_again(hub: Path, tmp_path: Path):
    """Same size, same mtime, one byte different: the version the sensor polls, the cache's
    record and the fetch all see the edit."""
    source = XenaSource(base_url=str(hub), cache_dir=str(tmp_path / "cache"), **FAST)
    path = hub / METHYLATION_PATH.format(cohort="BRCA")
    old = gzip.compress(b"sample\tTCGA-A1-A0SB-01A\ncg00000029\t0.5\n", compresslevel=0, mtime=0)
    new = gzip.compress(b"sample\tTCGA-A1-A0SB-01A\ncg00000029\t0.6\n", compresslevel=0, mtime=0)
    path.write_bytes(old)
    source.methylation("BRCA")
    source.expression("BRCA")
    before = source.version("BRCA")
    assert source.cached_since(before) is not None

    rewrite_in_place(path, new)

    after = source.version("BRCA")
    assert after.key != before.key
    assert after.methylation.etag != before.methylation.etag
    assert source.cached_since(after) is None
    again = source.methylation("BRCA")
    assert not again.reused and again.sha256 == hashlib.sha256(new).hexdigest()
    assert again.path.read_bytes() == new
    assert source.cached_since(source.version("BRCA")) is not None


def test_switching_base_url_downloads_again(server: FileServer, hub: Path, tmp_path: Path):
    cache = str(tmp_path / "cache")
    XenaSource(base_url=server.url, cache_dir=cache, **FAST).probe_map()

    local = XenaSource(base_url=str(hub), cache_dir=cache, **FAST).probe_map()

    assert not local.reused and local.url.startswith("file://")


def test_resource_works_inside_an_asset(server: FileServer, tmp_path: Path):
    @dg.asset
    def probe_map_file(xena: XenaSource) -> dg.MaterializeResult:
        fetched = xena.probe_map()
        return dg.MaterializeResult(metadata={"sha256": fetched.sha256})

    source = XenaSource(base_url=server.url, cache_dir=str(tmp_path / "cache"), **FAST)
    result = dg.materialize([probe_map_file], resources={"xena": source})

    assert result.success
    fields = XenaSource.to_config_schema().as_field().config_type.fields
    assert all(fields[name].description for name in fields)
