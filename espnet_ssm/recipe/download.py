"""Download and unpack LibriSpeech parts from openslr (resource 12), verified and resumable.

For each part: ``<dir>/<part>.tar.gz`` is fetched through ``<dir>/<part>.tar.gz.part`` with HTTP
range requests (an interrupted download continues where it stopped), its size and SHA-256 are
checked against the known values, and it is unpacked into ``<dir>/LibriSpeech/<part>/`` through a
temporary directory, so an existing part directory is always complete. A bad archive is removed
and reported with the expected and actual size or checksum.

The LM text (openslr resource 11, ``librispeech-lm-norm.txt.gz``, about 1.5 GB) is fetched the
same resumable way into ``<dir>/librispeech-lm-norm.txt.gz``. openslr publishes no checksum for
it, so it is checked against the server's size and by reading the whole archive, which verifies
gzip's CRC-32 and length trailer.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import logging
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

URL_BASE = "https://www.openslr.org/resources/12"
LM_URL_BASE = "https://www.openslr.org/resources/11"
LM_TEXT = "librispeech-lm-norm.txt.gz"

# part -> (size in bytes, sha256). Sizes as in Kaldi's librispeech download_and_untar.sh,
# checksums as in torchaudio.datasets.librispeech.
PARTS: Dict[str, Tuple[int, str]] = {
    "dev-clean": (337926286, "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3"),
    "dev-other": (314305928, "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365"),
    "test-clean": (346663984, "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23"),
    "test-other": (328757843, "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29"),
    "train-clean-100": (6387309499, "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2"),
    "train-clean-360": (23049477885, "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf"),
    "train-other-500": (30593501606, "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2"),
}
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed or produced a file that does not match its known size or checksum."""


def sha256sum(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, size: int, sha256: str) -> None:
    """Raise DownloadError when ``path`` does not have the expected size and SHA-256."""
    actual = path.stat().st_size
    if actual != size:
        raise DownloadError(f"{path}: size {actual} bytes, expected {size}")
    digest = sha256sum(path)
    if digest != sha256:
        raise DownloadError(f"{path}: SHA-256 {digest}, expected {sha256}")


def fetch(url: str, dest: Path, size: int, retries: int = 5,
          opener: Callable[..., object] = urllib.request.urlopen) -> None:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial ``.part`` file."""
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, retries + 1):
        have = part.stat().st_size if part.is_file() else 0
        if have > size:  # not a prefix of the right file
            part.unlink()
            have = 0
        if have == size:
            break
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with opener(request, timeout=60) as response:
                status = getattr(response, "status", 200)
                if have and status != 206:  # the server ignored the range: start again
                    logging.info("%s: server does not resume; downloading from the start", url)
                    have = 0
                mode = "ab" if have else "wb"
                with open(part, mode) as f:
                    last = time.time()
                    for block in iter(lambda: response.read(CHUNK), b""):
                        f.write(block)
                        have += len(block)
                        if time.time() - last > 30:
                            logging.info("%s: %.1f / %.1f MB", dest.name, have / 1e6, size / 1e6)
                            last = time.time()
        except (urllib.error.URLError, OSError) as e:
            logging.warning("%s: attempt %d/%d failed: %s", url, attempt, retries, e)
            time.sleep(min(30, 2**attempt))
            continue
        if part.stat().st_size >= size:
            break
    else:
        raise DownloadError(f"could not download {url} after {retries} attempts (partial file kept: {part})")
    part.replace(dest)


def extract(archive: Path, dest_dir: Path, part: str) -> Path:
    """Unpack ``LibriSpeech/<part>/`` (and the corpus' top-level files) into ``dest_dir``."""
    tmp = dest_dir / f".extract_{part}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(tmp, filter="data")
    src = tmp / "LibriSpeech" / part
    if not src.is_dir():
        raise DownloadError(f"{archive} does not contain LibriSpeech/{part}/")
    root = dest_dir / "LibriSpeech"
    root.mkdir(parents=True, exist_ok=True)
    for extra in (tmp / "LibriSpeech").iterdir():
        if extra.is_file() and not (root / extra.name).exists():
            shutil.move(str(extra), root / extra.name)
    target = root / part
    shutil.rmtree(target, ignore_errors=True)
    shutil.move(str(src), target)  # only complete parts ever appear under LibriSpeech/
    shutil.rmtree(tmp)
    return target


def download_part(part: str, dest_dir: Path, url_base: str = URL_BASE, keep_archive: bool = True) -> Path:
    """Make ``<dest_dir>/LibriSpeech/<part>/`` exist, downloading and verifying when needed."""
    if part not in PARTS:
        raise DownloadError(f"unknown LibriSpeech part {part!r}; known: {', '.join(PARTS)}")
    target = dest_dir / "LibriSpeech" / part
    if target.is_dir():
        logging.info("%s exists, nothing to download", target)
        return target
    size, sha256 = PARTS[part]
    archive = dest_dir / f"{part}.tar.gz"
    dest_dir.mkdir(parents=True, exist_ok=True)
    if archive.is_file():
        try:
            verify(archive, size, sha256)
        except DownloadError as e:
            logging.warning("removing %s: %s", archive, e)
            archive.unlink()
    if not archive.is_file():
        logging.info("downloading %s/%s.tar.gz (%.1f GB)", url_base, part, size / 1e9)
        fetch(f"{url_base}/{part}.tar.gz", archive, size)
        try:
            verify(archive, size, sha256)
        except DownloadError:
            archive.unlink()
            raise
    logging.info("unpacking %s", archive)
    target = extract(archive, dest_dir, part)
    if not keep_archive:
        archive.unlink()
    return target


def remote_size(url: str, opener: Callable[..., object] = urllib.request.urlopen) -> int:
    """The size the server announces for ``url`` (HEAD request, Content-Length)."""
    try:
        with opener(urllib.request.Request(url, method="HEAD"), timeout=60) as response:
            length = response.headers.get("Content-Length")
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"cannot reach {url}: {e}") from e
    if not length or not length.isdigit():
        raise DownloadError(f"{url}: the server gives no Content-Length")
    return int(length)


def check_gzip(path: Path) -> None:
    """Raise DownloadError unless ``path`` is a complete, intact gzip file."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as e:
        raise DownloadError(f"{path}: not a complete gzip file ({e})") from e


def download_lm_text(dest_dir: Path, url_base: str = LM_URL_BASE) -> Path:
    """Make ``<dest_dir>/librispeech-lm-norm.txt.gz`` exist (an existing file is used as it is)."""
    target = dest_dir / LM_TEXT
    if target.is_file():
        logging.info("%s exists, nothing to download", target)
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    url = f"{url_base}/{LM_TEXT}"
    size = remote_size(url)
    logging.info("downloading %s (%.1f GB)", url, size / 1e9)
    tmp = dest_dir / (LM_TEXT + ".download")  # renamed only once checked
    fetch(url, tmp, size)
    got = tmp.stat().st_size
    if got != size:
        tmp.unlink()
        raise DownloadError(f"{url}: got {got} bytes, the server announced {size}")
    try:
        check_gzip(tmp)
    except DownloadError:
        tmp.unlink()
        raise
    tmp.replace(target)
    return target


def main(argv: Optional[Sequence[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dest_dir", type=Path, help="the parts go to <dest_dir>/LibriSpeech/<part>/")
    # No argparse choices: with nargs="*" they reject an empty list (Python < 3.12).
    p.add_argument("parts", nargs="*", metavar="PART", help=", ".join(sorted(PARTS)))
    p.add_argument("--url_base", default=URL_BASE)
    p.add_argument("--keep_archive", default="true", choices=("true", "false"))
    p.add_argument("--lm_text", action="store_true", help=f"also get <dest_dir>/{LM_TEXT} (openslr 11)")
    p.add_argument("--lm_url_base", default=LM_URL_BASE)
    args = p.parse_args(argv)
    unknown = [part for part in args.parts if part not in PARTS]
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}; known: {', '.join(sorted(PARTS))}")
    try:
        for part in args.parts:
            download_part(part, args.dest_dir, args.url_base, args.keep_archive == "true")
        if args.lm_text:
            download_lm_text(args.dest_dir, args.lm_url_base)
    except DownloadError as e:
        sys.exit(f"download: {e}")


if __name__ == "__main__":
    main()
