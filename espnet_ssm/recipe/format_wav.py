"""Stage 3: dump the audio of a wav.scp (paths or ``command |`` pipes) at one sampling rate.

One call handles one split of the scp (the recipe runs ``nj`` of them through the job backend)
and writes, in ``<out_dir>``: the audio files ``<utt>.<audio_format>``, ``wav.scp`` pointing at
them and ``utt2num_samples``. The recipe then concatenates the splits.

A source file that is already a mono ``<audio_format>`` file at the target rate (LibriSpeech's
flac files at 16 kHz) is referenced rather than copied: decoding and re-encoding it would give
the same samples.
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
from math import gcd
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from espnet_ssm.recipe.datadir import read_table, write_table


def parse_fs(fs: str) -> int:
    """'16k' -> 16000, '8000' -> 8000."""
    fs = str(fs).strip().lower()
    try:
        return int(float(fs[:-1]) * 1000) if fs.endswith("k") else int(fs)
    except ValueError:
        raise ValueError(f"bad sampling rate {fs!r} (expected e.g. 16k or 16000)") from None


def read_entry(utt: str, entry: str) -> Tuple[np.ndarray, int]:
    """Read one wav.scp entry: a file path, or a shell command ending in '|' that writes audio."""
    if entry.endswith("|"):
        proc = subprocess.run(["bash", "-c", entry[:-1]], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            raise RuntimeError(f"utterance {utt}: command '{entry}' failed: {proc.stderr.decode(errors='replace')}")
        return sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)
    return sf.read(entry, dtype="float32", always_2d=True)


def resample(x: np.ndarray, fs_in: int, fs_out: int) -> np.ndarray:
    """Polyphase resampling along time (axis 0)."""
    if fs_in == fs_out:
        return x
    g = gcd(fs_in, fs_out)
    return resample_poly(x, fs_out // g, fs_in // g, axis=0).astype(np.float32)


def reusable(entry: str, fs: int, audio_format: str) -> Optional[int]:
    """The number of samples of ``entry`` when it can be used as it is, else None."""
    if entry.endswith("|") or not entry.lower().endswith("." + audio_format):
        return None
    try:
        info = sf.info(entry)
    except (RuntimeError, sf.LibsndfileError, OSError):
        return None  # unreadable: let the full read below report it
    if info.samplerate != fs or info.channels != 1 or info.frames <= 0:
        return None
    return info.frames


def format_scp(scp: Path, out_dir: Path, fs: int, audio_format: str = "flac") -> int:
    """Dump every utterance of ``scp``; return the number written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    wav_scp, num_samples = {}, {}
    for utt, entry in read_table(scp).items():
        n = reusable(entry, fs, audio_format)
        if n is not None:
            wav_scp[utt] = str(Path(entry).resolve())
            num_samples[utt] = str(n)
            continue
        try:
            x, fs_in = read_entry(utt, entry)
        except (RuntimeError, sf.LibsndfileError, OSError) as e:
            raise RuntimeError(f"utterance {utt}: cannot read {entry}: {e}") from None
        x = resample(x, fs_in, fs)
        if x.shape[0] == 0:
            raise RuntimeError(f"utterance {utt}: {entry} has no audio samples")
        path = (out_dir / f"{utt}.{audio_format}").resolve()
        sf.write(str(path), x[:, 0] if x.shape[1] == 1 else x, fs, subtype="PCM_16")
        wav_scp[utt] = str(path)
        num_samples[utt] = str(x.shape[0])
    write_table(out_dir / "wav.scp", wav_scp)
    write_table(out_dir / "utt2num_samples", num_samples)
    return len(wav_scp)


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scp", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--fs", default="16k")
    p.add_argument("--audio_format", default="flac", choices=("flac", "wav"))
    args = p.parse_args(argv)
    try:
        n = format_scp(args.scp, args.out_dir, parse_fs(args.fs), args.audio_format)
    except (RuntimeError, ValueError) as e:
        sys.exit(f"format_wav: {e}")
    print(f"{args.out_dir}: {n} utterances")


if __name__ == "__main__":
    main()
