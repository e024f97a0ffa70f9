"""Stage 2: speed-perturbed copy of a data directory (Kaldi's ``perturb_data_dir_speed.sh``).

Utterance and speaker ids get the prefix ``sp<factor>-``; wav.scp entries become sox pipes
(``sox <file> -t wav - speed <factor> |``) that stage 3 reads and dumps; ``utt2uniq`` maps each
new utterance to its source.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

from espnet_ssm.recipe.datadir import DataDirError, load_data_dir, validate, write_data_dir


def speed_entry(entry: str, factor: str) -> str:
    if entry.endswith("|"):
        return f"{entry} sox -t wav - -t wav - speed {factor} |"
    return f"sox {shlex.quote(entry)} -t wav - speed {factor} |"


def perturb(src: Path, dst: Path, factor: str) -> int:
    if float(factor) <= 0:
        raise DataDirError(f"speed factor must be positive, got {factor}")
    validate(src)
    t = load_data_dir(src)
    pre = f"sp{factor}-"
    out = {
        "wav.scp": {pre + u: speed_entry(e, factor) for u, e in t["wav.scp"].items()},
        "text": {pre + u: v for u, v in t["text"].items()},
        "utt2spk": {pre + u: pre + s for u, s in t["utt2spk"].items()},
        "utt2uniq": {pre + u: t.get("utt2uniq", {}).get(u, u) for u in t["utt2spk"]},
    }
    if "spk2gender" in t:
        out["spk2gender"] = {pre + s: g for s, g in t["spk2gender"].items()}
    if "utt2num_samples" in t:  # n samples at speed f -> about n / f samples
        out["utt2num_samples"] = {pre + u: str(int(int(n) / float(factor))) for u, n in t["utt2num_samples"].items()}
    write_data_dir(dst, out)
    return validate(dst)


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("factor")
    args = p.parse_args(argv)
    try:
        n = perturb(args.src, args.dst, args.factor)
    except (DataDirError, ValueError) as e:
        sys.exit(f"perturb: {e}")
    print(f"{args.dst}: {n} utterances at speed {args.factor}")


if __name__ == "__main__":
    main()
