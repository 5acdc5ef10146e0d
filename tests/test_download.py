"""The downloader against a local HTTP server with injected faults, and against file:// URLs."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmg_resources import download as download_module
from dmg_resources.download import Download, DownloadError, download
from tests.http_server import FileServer

FAST = {"retries": 3, "backoff_seconds": 0.001, "timeout_seconds": 5.0}


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    root = tmp_path / "remote"
    root.mkdir()
    return root


@pytest.fixture
def server(remote: Path) -> Iterator[FileServer]:
    with FileServer(remote) as running:
        yield running


def write_gzip(path: Path, lines: int = 5000, seed: str = "a") -> bytes:
    """A gzip TSV of a few hundred KB that compresses poorly enough to span many chunks."""
    text = "".join(
        f"cg{i:08d}\t{hashlib.sha256(f'{seed}{i}'.encode()).hexdigest()}\n" for i in range(lines)
    )
    data = gzip.compress(text.encode(), mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bump_mtime(path: Path) -> None:
    """Make a rewritten file's mtime differ from the original's, whatever the clock resolution."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


PROBE_MAP = (
    "#id\tgene\tchrom\tchromStart\tchromEnd\tstrand\n"
    "cg00000029\tRBL2\tchr16\t53468112\t53468112\t+\n"
    "cg00000108\tC3orf35\tchr3\t37459206\t37459206\t+\n"
)
HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>"
    "<body><form action='/login'></form></body></html>\n"
)


def write_probe_map(remote: Path, text: str | bytes = PROBE_MAP) -> str:
    """``text`` as the hub's probe map (a plain TSV without extension); its URL path."""
    path = remote / "probeMap" / "map"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return "probeMap%2Fmap"


def edit_in_place(path: Path, offset: int, new: bytes) -> None:
    """Overwrite bytes of ``path`` at ``offset``, keeping its size and mtime."""
    st = path.stat()
    with path.open("r+b") as stream:
        stream.seek(offset)
        stream.write(new)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size


def assert_nothing_cached(dest: Path) -> None:
    """No file under the final name, no sidecar and no ``.part`` to resume from."""
    for suffix in ("", ".json", ".part", ".part.json"):
        assert not dest.with_name(dest.name + suffix).exists(), suffix


def test_plain_download_records_sha256_and_sidecar(server: FileServer, remote: Path, tmp_path):
    data = write_gzip(remote / "m.gz")
    dest = tmp_path / "cache" / "m.gz"

    result = download(server.url + "m.gz", dest, **FAST)

    assert result == Download(dest, server.url + "m.gz", len(data), sha256(data), False, 1)
    assert dest.read_bytes() == data
    assert not dest.with_name("m.gz.part").exists()
    sidecar = json.loads(dest.with_name("m.gz.json").read_text())
    assert sidecar["url"] == server.url + "m.gz"
    assert sidecar["sha256"] == sha256(data)
    assert sidecar["size_bytes"] == sidecar["content_length"] == len(data)
    assert sidecar["etag"] and sidecar["last_modified"] and sidecar["downloaded_at"]


def test_dropped_connection_resumes_with_range(server: FileServer, remote: Path, tmp_path):
    data = write_gzip(remote / "m.gz")
    server.drop("m.gz", after_bytes=len(data) // 3, times=2)
    dest = tmp_path / "m.gz"

    result = download(server.url + "m.gz", dest, **FAST)

    gets = server.requests_for("m.gz", "GET")
    assert [g.range for g in gets] == [
        None,
        f"bytes={len(data) // 3}-",
        f"bytes={2 * (len(data) // 3)}-",
    ]
    assert gets[1].if_range is not None
    assert result.attempts == 3
    assert dest.read_bytes() == data
    assert result.sha256 == sha256(data)


def test_404_fails_at_once_without_a_file(server: FileServer, tmp_path):
    dest = tmp_path / "missing.gz"

    with pytest.raises(DownloadError, match=r"missing\.gz: not found \(HTTP 404\)"):
        download(server.url + "missing.gz", dest, **FAST)

    assert len(server.requests_for("missing.gz", "GET")) == 1
    assert not dest.exists()
    assert not dest.with_name("missing.gz.part").exists()


def test_injected_404_is_not_retried(server: FileServer, remote: Path, tmp_path):
    write_gzip(remote / "m.gz")
    server.fail("m.gz", 404)

    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url + "m.gz", tmp_path / "m.gz", **FAST)

    assert len(server.requests_for("m.gz")) == 1


def test_server_error_then_success(server: FileServer, remote: Path, tmp_path):
    data = write_gzip(remote / "m.gz")
    server.fail("m.gz", 500, times=2)

    result = download(server.url + "m.gz", tmp_path / "m.gz", **FAST)

    assert result.attempts == 3
    assert result.sha256 == sha256(data)


def test_rate_limited_then_success(server: FileServer, remote: Path, tmp_path):
    write_gzip(remote / "m.gz")
    server.fail("m.gz", 429, times=1)

    assert download(server.url + "m.gz", tmp_path / "m.gz", **FAST).attempts == 2


def test_gives_up_after_retries(server: FileServer, remote: Path, tmp_path):
    write_gzip(remote / "m.gz")
    server.fail("m.gz", 503)
    dest = tmp_path / "m.gz"

    with pytest.raises(DownloadError, match=r"gave up after 3 attempts: HTTP 503"):
        download(server.url + "m.gz", dest, retries=2, backoff_seconds=0.001)

    assert len(server.requests_for("m.gz", "GET")) == 3
    assert not dest.exists()


def test_truncated_gzip_is_rejected(server: FileServer, remote: Path, tmp_path):
    data = write_gzip(remote / "m.gz")
    (remote / "m.gz").write_bytes(data[: len(data) - 100])
    dest = tmp_path / "m.gz"

    with pytest.raises(DownloadError, match="truncated or corrupt gzip"):
        download(server.url + "m.gz", dest, **FAST)

    assert not dest.exists()
    assert not dest.with_name("m.gz.part").exists()
    assert not dest.with_name("m.gz.json").exists()


def test_corrupt_gzip_crc_is_rejected(server: FileServer, remote: Path, tmp_path):
    data = bytearray(write_gzip(remote / "m.gz"))
    data[-8] ^= 0xFF  # the stored CRC32
    (remote / "m.gz").write_bytes(bytes(data))

    with pytest.raises(DownloadError, match="gzip"):
        download(server.url + "m.gz", tmp_path / "m.gz", **FAST)

    assert not (tmp_path / "m.gz").exists()


def test_html_page_for_a_gz_name_is_refused_at_once(server: FileServer, remote: Path, tmp_path):
    (remote / "m.gz").write_text(HTML_PAGE)
    dest = tmp_path / "m.gz"

    expected = rf"{re.escape(server.url)}m\.gz: not a gzip file, received an HTML/XML page"
    with pytest.raises(DownloadError, match=expected):
        download(server.url + "m.gz", dest, **FAST)

    assert len(server.requests_for("m.gz", "GET")) == 1
    assert_nothing_cached(dest)


@pytest.mark.parametrize(
    "body",
    [
        HTML_PAGE,
        "\ufeff\r\n  <html><body>Not Found</body></html>\n",
        '<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>\n',
        "<Error>AccessDenied</Error>\n",
    ],
    ids=["doctype", "bom-html", "xml", "tag"],
)
def test_markup_body_for_a_plain_name_is_refused_then_a_good_one_downloads(
    server: FileServer, remote: Path, tmp_path, body: str
):
    path = write_probe_map(remote, body)
    dest = tmp_path / "map"

    expected = rf"{re.escape(server.url + path)}: expected plain text, received an HTML/XML page"
    with pytest.raises(DownloadError, match=expected):
        download(server.url + path, dest, **FAST)

    assert len(server.requests_for("probeMap/map", "GET")) == 1
    assert_nothing_cached(dest)
    write_probe_map(remote)
    bump_mtime(remote / "probeMap" / "map")
    result = download(server.url + path, dest, **FAST)
    assert not result.reused and result.sha256 == sha256(PROBE_MAP.encode())
    assert dest.read_text() == PROBE_MAP


def test_text_html_content_type_for_a_plain_name_is_refused(
    server: FileServer, remote: Path, tmp_path
):
    path = write_probe_map(remote, "Access denied. Please <a href='/login'>sign in</a>.\n")
    dest = tmp_path / "map"

    with FileServer(remote, headers={"Content-Type": "text/html; charset=utf-8"}) as html:
        expected = (
            rf"{re.escape(html.url + path)}: expected plain text, received an HTML/XML page "
            r"\(Content-Type text/html"
        )
        with pytest.raises(DownloadError, match=expected):
            download(html.url + path, dest, **FAST)
        assert len(html.requests_for("probeMap/map", "GET")) == 1

    assert_nothing_cached(dest)
    write_probe_map(remote)
    result = download(server.url + path, dest, **FAST)
    assert dest.read_text() == PROBE_MAP and result.sha256 == sha256(PROBE_MAP.encode())


def test_binary_body_for_a_plain_name_is_refused(server: FileServer, remote: Path, tmp_path):
    path = write_probe_map(remote, gzip.compress(PROBE_MAP.encode(), mtime=0))
    dest = tmp_path / "map"

    with pytest.raises(DownloadError, match=r"map: expected plain text, received binary data"):
        download(server.url + path, dest, **FAST)

    assert len(server.requests_for("probeMap/map", "GET")) == 1
    assert_nothing_cached(dest)


def test_stale_part_from_a_crashed_run_is_resumed(server: FileServer, remote: Path, tmp_path):
    data = write_gzip(remote / "m.gz")
    dest = tmp_path / "m.gz"
    dest.with_name("m.gz.part").write_bytes(data[:1000])

    result = download(server.url + "m.gz", dest, **FAST)

    assert [g.range for g in server.requests_for("m.gz", "GET")] == ["bytes=1000-"]
    assert result.sha256 == sha256(data)
    assert dest.read_bytes() == data
    assert not dest.with_name("m.gz.part").exists()


def test_part_of_an_older_version_is_restarted_via_if_range(
    server: FileServer, remote: Path, tmp_path
):
    old = write_gzip(remote / "m.gz", seed="old")
    server.drop("m.gz", after_bytes=1000)
    dest = tmp_path / "m.gz"
    with pytest.raises(DownloadError):
        download(server.url + "m.gz", dest, retries=0)
    assert dest.with_name("m.gz.part").read_bytes() == old[:1000]

    new = write_gzip(remote / "m.gz", seed="new")
    bump_mtime(remote / "m.gz")
    result = download(server.url + "m.gz", dest, **FAST)

    last = server.requests_for("m.gz", "GET")[-1]
    assert last.range == "bytes=1000-" and last.if_range is not None
    assert result.sha256 == sha256(new)
    assert dest.read_bytes() == new


def test_whole_file_left_as_part_is_installed(server: FileServer, remote: Path, tmp_path):
    data = write_gzip(remote / "m.gz")
    dest = tmp_path / "m.gz"
    dest.with_name("m.gz.part").write_bytes(data)

    result = download(server.url + "m.gz", dest, **FAST)

    assert result.sha256 == sha256(data)
    assert dest.read_bytes() == data


def test_unchanged_remote_is_reused_without_get(server: FileServer, remote: Path, tmp_path):
    data = write_gzip(remote / "m.gz")
    dest = tmp_path / "m.gz"
    first = download(server.url + "m.gz", dest, **FAST)

    again = download(server.url + "m.gz", dest, **FAST)

    assert again.reused and again.attempts == 0
    assert (again.sha256, again.size_bytes) == (first.sha256, len(data))
    assert [r.method for r in server.requests_for("m.gz")] == ["GET", "HEAD"]


def test_changed_remote_is_downloaded_again(server: FileServer, remote: Path, tmp_path):
    write_gzip(remote / "m.gz", seed="old")
    dest = tmp_path / "m.gz"
    download(server.url + "m.gz", dest, **FAST)
    new = write_gzip(remote / "m.gz", lines=6000, seed="new")
    bump_mtime(remote / "m.gz")

    again = download(server.url + "m.gz", dest, **FAST)

    assert not again.reused
    assert again.sha256 == sha256(new)
    assert dest.read_bytes() == new
    assert json.loads(dest.with_name("m.gz.json").read_text())["sha256"] == sha256(new)


def test_cached_file_of_the_wrong_size_is_downloaded_again(
    server: FileServer, remote: Path, tmp_path
):
    data = write_gzip(remote / "m.gz")
    dest = tmp_path / "m.gz"
    download(server.url + "m.gz", dest, **FAST)
    dest.write_bytes(data[:10])

    again = download(server.url + "m.gz", dest, **FAST)

    assert not again.reused
    assert dest.read_bytes() == data


def test_cached_gzip_with_a_flipped_byte_is_downloaded_again(
    server: FileServer, remote: Path, tmp_path, caplog: pytest.LogCaptureFixture
):
    data = write_gzip(remote / "m.gz")
    dest = tmp_path / "m.gz"
    download(server.url + "m.gz", dest, **FAST)
    edit_in_place(dest, len(data) // 2, bytes([data[len(data) // 2] ^ 0x01]))

    with caplog.at_level(logging.WARNING, logger="dmg_resources.download"):
        again = download(server.url + "m.gz", dest, **FAST)

    assert not again.reused
    assert dest.read_bytes() == data
    assert again.sha256 == sha256(data) == sha256(dest.read_bytes())
    assert [r.method for r in server.requests_for("m.gz")] == ["GET", "HEAD", "GET"]
    assert f"{dest}: cached file's sha256 differs from its sidecar" in caplog.text


def test_cached_probe_map_edited_in_place_is_downloaded_again(
    server: FileServer, remote: Path, tmp_path
):
    path = write_probe_map(remote)
    dest = tmp_path / "map"
    download(server.url + path, dest, **FAST)
    edit_in_place(dest, PROBE_MAP.index("chr16"), b"chr17")

    again = download(server.url + path, dest, **FAST)

    assert not again.reused
    assert dest.read_text() == PROBE_MAP
    assert again.sha256 == sha256(PROBE_MAP.encode())
    assert download(server.url + path, dest, **FAST).reused


def test_progress_is_reported(server: FileServer, remote: Path, tmp_path):
    data = write_gzip(remote / "m.gz")
    calls: list[tuple[int, int | None]] = []

    download(server.url + "m.gz", tmp_path / "m.gz", progress=lambda d, t: calls.append((d, t)))

    assert calls and calls[-1] == (len(data), len(data))
    assert all(t == len(data) for _, t in calls)


def test_plain_files_are_not_gzip_checked(server: FileServer, remote: Path, tmp_path):
    (remote / "probeMap").mkdir()
    text = "#id\tgene\ncg1\tA\n"
    (remote / "probeMap" / "map").write_text(text)

    result = download(server.url + "probeMap%2Fmap", tmp_path / "map", **FAST)

    assert (tmp_path / "map").read_text() == text
    assert server.requests_for("probeMap/map")[0].raw_path == "/probeMap%2Fmap"
    assert result.size_bytes == len(text)


def test_file_url_and_bare_path(remote: Path, tmp_path):
    data = write_gzip(remote / "m.gz")

    by_url = download((remote / "m.gz").as_uri(), tmp_path / "a" / "m.gz", **FAST)
    by_path = download(str(remote / "m.gz"), tmp_path / "b" / "m.gz", **FAST)

    assert by_url.sha256 == by_path.sha256 == sha256(data)
    assert by_url.url == by_path.url == (remote / "m.gz").as_uri()
    sidecar = json.loads((tmp_path / "a" / "m.gz.json").read_text())
    assert sidecar["etag"] and sidecar["last_modified"]


def test_file_url_reuse_and_change(remote: Path, tmp_path):
    write_gzip(remote / "m.gz", seed="old")
    dest = tmp_path / "m.gz"
    url = (remote / "m.gz").as_uri()
    download(url, dest, **FAST)

    assert download(url, dest, **FAST).reused

    new = write_gzip(remote / "m.gz", seed="new")
    bump_mtime(remote / "m.gz")
    again = download(url, dest, **FAST)
    assert not again.reused and again.sha256 == sha256(new)


def test_local_source_edited_in_place_is_downloaded_again(remote: Path, tmp_path):
    """Same size and mtime, one byte different: the local ETag and the reuse check see it."""
    write_probe_map(remote)
    source = remote / "probeMap" / "map"
    dest = tmp_path / "map"
    first = download(source, dest, **FAST)
    edit_in_place(source, PROBE_MAP.index("chr16"), b"chr17")

    again = download(source, dest, **FAST)

    edited = PROBE_MAP.replace("chr16", "chr17")
    assert not again.reused and again.sha256 == sha256(edited.encode()) != first.sha256
    assert dest.read_text() == edited
    assert download(source, dest, **FAST).reused


def test_large_local_source_edited_in_place_is_downloaded_again(
    remote: Path, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    """Above the full-hash size the ETag covers the file's ends only; reuse still hashes it all."""
    monkeypatch.setattr(download_module, "LOCAL_FULL_HASH_MAX_BYTES", 1024)
    monkeypatch.setattr(download_module, "LOCAL_EDGE_BYTES", 128)
    rows = "".join(f"cg{i:08d}\tG{i}\tchr1\t{i}\t{i}\t+\n" for i in range(200))
    write_probe_map(remote, PROBE_MAP + rows)
    source = remote / "probeMap" / "map"
    assert source.stat().st_size > 4 * 1024
    dest = tmp_path / "map"
    sidecar = dest.with_name("map.json")
    download(source, dest, **FAST)
    etag = json.loads(sidecar.read_text())["etag"]

    edit_in_place(source, len(PROBE_MAP) + rows.index("cg00000100"), b"cg00000999")
    middle = download(source, dest, **FAST)

    assert not middle.reused and dest.read_bytes() == source.read_bytes()
    assert json.loads(sidecar.read_text())["etag"] == etag  # the ends are unchanged
    edit_in_place(source, 1, b"X")
    head = download(source, dest, **FAST)
    assert not head.reused and dest.read_bytes() == source.read_bytes()
    assert json.loads(sidecar.read_text())["etag"] != etag


def test_stale_part_with_a_file_url_restarts_from_zero(remote: Path, tmp_path):
    data = write_gzip(remote / "m.gz")
    dest = tmp_path / "m.gz"
    dest.with_name("m.gz.part").write_bytes(b"garbage from elsewhere")

    result = download(remote / "m.gz", dest, **FAST)

    assert result.sha256 == sha256(data) and dest.read_bytes() == data


def test_gzip_labelled_content_encoding_is_kept_as_is(remote: Path, tmp_path):
    data = write_gzip(remote / "m.gz")

    with FileServer(remote, headers={"Content-Encoding": "gzip"}) as labelled:
        result = download(labelled.url + "m.gz", tmp_path / "m.gz", **FAST)

    assert result.sha256 == sha256(data) and (tmp_path / "m.gz").read_bytes() == data


def test_missing_local_file(tmp_path):
    with pytest.raises(DownloadError, match=r"not found \(HTTP 404\)"):
        download(tmp_path / "nope.gz", tmp_path / "cache" / "nope.gz", **FAST)
    assert not (tmp_path / "cache" / "nope.gz").exists()


def test_truncated_local_gzip_is_rejected(remote: Path, tmp_path):
    data = write_gzip(remote / "m.gz")
    (remote / "m.gz").write_bytes(data[:-50])

    with pytest.raises(DownloadError, match="gzip"):
        download(remote / "m.gz", tmp_path / "m.gz", **FAST)
    assert not (tmp_path / "m.gz").exists()


def test_unreachable_server_is_retried_then_fails(tmp_path):
    with FileServer(tmp_path) as stopped:
        url = stopped.url + "m.gz"

    with pytest.raises(DownloadError, match="gave up after 2 attempts"):
        download(url, tmp_path / "m.gz", retries=1, backoff_seconds=0.001, timeout_seconds=2)
