"""LibriSpeech download logic on local files and a local HTTP server (no internet needed):
size and SHA-256 verification, resuming a partial download, servers that ignore ranges,
unpacking into LibriSpeech/<part>/."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path
from typing import List

import numpy as np
import pytest

from espnet_ssm.recipe import download
from espnet_ssm.recipe.download import DownloadError


class Server:
    """A local HTTP server for one directory; honours Range requests unless told not to."""

    def __init__(self, root: Path, honour_range: bool = True):
        self.ranges: List[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                data = (root / self.path.lstrip("/")).read_bytes()
                rng = self.headers.get("Range")
                outer.ranges.append(rng or "")
                start = int(rng.split("=")[1].split("-")[0]) if rng and honour_range else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def do_HEAD(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", str((root / self.path.lstrip("/")).stat().st_size))
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def make_archive(path: Path, part: str, rng: np.random.Generator) -> bytes:
    """A tar.gz laid out like openslr's LibriSpeech archives."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (
            (f"LibriSpeech/{part}/1/2/1-2.trans.txt", b"1-2-0000 HELLO\n"),
            (f"LibriSpeech/{part}/1/2/1-2-0000.flac", rng.bytes(200_000)),
            ("LibriSpeech/SPEAKERS.TXT", b"1 | F | dev-clean | 1.00 | Someone\n"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_verify_checks_size_then_checksum(tmp_path, rng):
    data = rng.bytes(5000)
    f = tmp_path / "a.tar.gz"
    f.write_bytes(data)
    download.verify(f, len(data), hashlib.sha256(data).hexdigest())
    with pytest.raises(DownloadError, match=f"size 5000 bytes, expected 5001"):
        download.verify(f, 5001, hashlib.sha256(data).hexdigest())
    with pytest.raises(DownloadError, match="SHA-256 .* expected 00"):
        download.verify(f, len(data), "00" * 32)


@pytest.mark.parametrize("honour_range", [True, False])
def test_fetch_resumes_a_partial_download(tmp_path, honour_range, rng):
    data = rng.bytes(3_000_000)
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "x.tar.gz").write_bytes(data)
    dest = tmp_path / "dl" / "x.tar.gz"
    dest.parent.mkdir()
    cut = 1_234_567
    dest.with_name("x.tar.gz.part").write_bytes(data[:cut])  # an interrupted earlier download
    server = Server(tmp_path / "srv", honour_range)
    try:
        download.fetch(f"{server.url}/x.tar.gz", dest, len(data))
    finally:
        server.close()
    assert server.ranges == [f"bytes={cut}-"]  # asked to resume where it stopped
    assert dest.read_bytes() == data and not dest.with_name("x.tar.gz.part").exists()


def test_download_part_unpacks_and_rejects_bad_archives(tmp_path, monkeypatch, rng):
    (tmp_path / "srv").mkdir()
    good = make_archive(tmp_path / "srv" / "dev-clean.tar.gz", "dev-clean", rng)
    monkeypatch.setitem(download.PARTS, "dev-clean", (len(good), hashlib.sha256(good).hexdigest()))
    server = Server(tmp_path / "srv")
    try:
        target = download.download_part("dev-clean", tmp_path / "dl", server.url)
        assert target == tmp_path / "dl" / "LibriSpeech" / "dev-clean"
        assert (target / "1" / "2" / "1-2.trans.txt").read_text() == "1-2-0000 HELLO\n"
        assert (tmp_path / "dl" / "LibriSpeech" / "SPEAKERS.TXT").is_file()
        assert not list((tmp_path / "dl").glob(".extract_*"))
        n_requests = len(server.ranges)
        download.download_part("dev-clean", tmp_path / "dl", server.url)  # present: nothing fetched
        assert len(server.ranges) == n_requests
        # The server now hands out a different (corrupt) file of the right size.
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF
        (tmp_path / "srv" / "dev-clean.tar.gz").write_bytes(bytes(bad))
        with pytest.raises(DownloadError, match="SHA-256"):
            download.download_part("dev-clean", tmp_path / "dl2", server.url)
        assert not (tmp_path / "dl2" / "dev-clean.tar.gz").exists()  # the bad archive is removed
        assert not (tmp_path / "dl2" / "LibriSpeech" / "dev-clean").exists()
    finally:
        server.close()
    with pytest.raises(DownloadError, match="unknown LibriSpeech part 'dev-cleen'"):
        download.download_part("dev-cleen", tmp_path / "dl3")


def test_download_lm_text_checks_the_gzip(tmp_path):
    """openslr 11's LM text: fetched, checked by size and gzip CRC; a corrupt one is refused."""
    lines = [f"SENTENCE NUMBER {i}" for i in range(20000)]
    good = gzip.compress("".join(x + "\n" for x in lines).encode())
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / download.LM_TEXT).write_bytes(good)
    server = Server(tmp_path / "srv")
    try:
        got = download.download_lm_text(tmp_path / "dl", server.url)
        assert got == tmp_path / "dl" / download.LM_TEXT and got.read_bytes() == good
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF
        (tmp_path / "srv" / download.LM_TEXT).write_bytes(bytes(bad))
        with pytest.raises(DownloadError, match="not a complete gzip file"):
            download.download_lm_text(tmp_path / "dl2", server.url)
        assert not list((tmp_path / "dl2").iterdir())  # nothing half-checked is left behind
    finally:
        server.close()


def test_download_lm_text_refuses_a_size_other_than_announced(tmp_path, monkeypatch):
    good = gzip.compress(b"ONE SENTENCE\n" * 1000)
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / download.LM_TEXT).write_bytes(good)
    monkeypatch.setattr(download, "remote_size", lambda url: len(good) - 1)
    server = Server(tmp_path / "srv")
    try:
        with pytest.raises(DownloadError, match=f"got {len(good)} bytes, the server announced {len(good) - 1}"):
            download.download_lm_text(tmp_path / "dl", server.url)
        assert not list((tmp_path / "dl").iterdir())
    finally:
        server.close()
