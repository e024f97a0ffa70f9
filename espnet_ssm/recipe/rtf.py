"""Real-time factor of a decoding run, from ESPnet's ``asr_inference.*.log`` files.

For every utterance ESPnet logs ``INFO: speech length: <samples>`` when decoding starts and
``INFO: best hypo: ...`` when the search ends. Decoding time is the sum over utterances of the
time between the two (model loading is not counted); audio duration is the sum of
``samples / fs``. Output, as ESPnet's ``calculate_rtf.py`` prints it::

    Total audio duration: 12.345 [sec]
    Total decoding time: 1.234 [sec]
    RTF: 0.100
    Latency: 30.850 [ms/sentence]
"""
from __future__ import annotations

import argparse
import datetime
import re
import sys
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence

from espnet_ssm.recipe.format_wav import parse_fs

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
START = "speech length: "
END = "best hypo: "


class RTF(NamedTuple):
    audio_sec: float
    decode_sec: float
    n_utt: int

    @property
    def rtf(self) -> float:
        return self.decode_sec / self.audio_sec if self.audio_sec > 0 else 0.0

    @property
    def latency_ms(self) -> float:
        return self.decode_sec * 1000 / self.n_utt if self.n_utt > 0 else 0.0

    def report(self) -> str:
        return (
            f"Total audio duration: {self.audio_sec:.3f} [sec]\n"
            f"Total decoding time: {self.decode_sec:.3f} [sec]\n"
            f"RTF: {self.rtf:.3f}\n"
            f"Latency: {self.latency_ms:.3f} [ms/sentence]\n"
        )


def _time(line: str, log: Path) -> datetime.datetime:
    m = STAMP.match(line)
    if not m:
        raise ValueError(f"{log}: no time stamp at the start of {line.strip()!r}")
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")


def parse_log(log: Path, fs: int) -> RTF:
    """Audio seconds, decoding seconds and utterance count of one decoding log."""
    audio, decode, n = 0.0, 0.0, 0
    start: Optional[datetime.datetime] = None
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if "INFO: " + START in line:
            if start is not None:
                raise ValueError(f"{log}: an utterance started before the previous one ended: {line!r}")
            audio += int(line.split(START, 1)[1].split()[0]) / fs
            start = _time(line, log)
        elif "INFO: " + END in line:
            if start is None:
                raise ValueError(f"{log}: '{END.strip()}' without a preceding '{START.strip()}': {line!r}")
            decode += (_time(line, log) - start).total_seconds()
            start, n = None, n + 1
    if start is not None:
        raise ValueError(f"{log}: the last utterance has no '{END.strip()}' line (decoding interrupted?)")
    return RTF(audio, decode, n)


def calculate(log_dir: Path, fs: int, name: str = "asr_inference") -> RTF:
    logs: List[Path] = sorted(log_dir.glob(f"{name}.*.log"))
    if not logs:
        raise ValueError(f"no {name}.*.log files in {log_dir}")
    parts = [parse_log(log, fs) for log in logs]
    return RTF(sum(p.audio_sec for p in parts), sum(p.decode_sec for p in parts), sum(p.n_utt for p in parts))


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log_dir", type=Path, required=True)
    p.add_argument("--log_name", default="asr_inference")
    p.add_argument("--fs", default="16k", help="sampling rate of the decoded audio")
    args = p.parse_args(argv)
    try:
        print(calculate(args.log_dir, parse_fs(args.fs), args.log_name).report(), end="")
    except ValueError as e:
        sys.exit(f"rtf: {e}")


if __name__ == "__main__":
    main()
