"""Stage 4: remove too short / too long utterances and empty transcripts from a dumped set.

Reads ``<src>`` (with ``utt2num_samples``), writes the kept utterances to ``<dst>`` and lists every
removed utterance with its reason in ``<dst>/logs/filtered_out.txt`` (nothing disappears unseen).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

from espnet_ssm.recipe.datadir import DataDirError, read_table, subset, validate
from espnet_ssm.recipe.format_wav import parse_fs


def filter_reasons(src: Path, fs: int, min_sec: float, max_sec: float) -> Dict[str, str]:
    """utterance -> why it must go, for every utterance that fails a check."""
    num_samples = read_table(src / "utt2num_samples")
    text = read_table(src / "text", allow_empty_value=True)
    reasons = {}
    for utt, n in num_samples.items():
        sec = int(n) / fs
        if sec < min_sec:
            reasons[utt] = f"too short: {sec:.3f} s < {min_sec} s"
        elif sec > max_sec:
            reasons[utt] = f"too long: {sec:.3f} s > {max_sec} s"
        elif not text.get(utt, "").strip():
            reasons[utt] = "empty transcript"
    return reasons


def filter_dir(src: Path, dst: Path, fs: int, min_sec: float, max_sec: float) -> Dict[str, str]:
    validate(src)
    reasons = filter_reasons(src, fs, min_sec, max_sec)
    keep = [u for u in read_table(src / "utt2spk") if u not in reasons]
    if not keep:
        raise DataDirError(f"filtering {src} would remove every utterance (e.g. {next(iter(reasons.values()))})")
    subset(src, dst, keep)
    for name in ("feats_type", "audio_format"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    (dst / "logs").mkdir(parents=True, exist_ok=True)
    with open(dst / "logs" / "filtered_out.txt", "w") as f:
        for utt in sorted(reasons):
            f.write(f"{utt} {reasons[utt]}\n")
    validate(dst)
    return reasons


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--fs", default="16k")
    p.add_argument("--min_wav_duration", type=float, default=0.1)
    p.add_argument("--max_wav_duration", type=float, default=20.0)
    args = p.parse_args(argv)
    try:
        reasons = filter_dir(args.src, args.dst, parse_fs(args.fs), args.min_wav_duration, args.max_wav_duration)
    except (DataDirError, ValueError) as e:
        sys.exit(f"filter_data: {e}")
    kept = len(read_table(args.dst / "utt2spk"))
    print(f"{args.dst}: kept {kept}, removed {len(reasons)} (listed in {args.dst}/logs/filtered_out.txt)")


if __name__ == "__main__":
    main()
