#!/usr/bin/env python3
"""Build long-form test sets by concatenating consecutive utterances of a data directory.

As in the Speech-Mamba paper's long-context evaluation: a speaker's consecutive utterances (in
utterance-id order, i.e. reading order in LibriSpeech) are joined into recordings whose duration
lies in ``[min_seconds, max_seconds]`` (45-60 s there). For 10- and 60-minute recordings a
speaker rarely has enough audio, so ``--across_speakers`` continues with the next speaker.
Kaldi-style LibriSpeech speakers are reader-chapter pairs; ``--speaker_prefix_sep -`` groups a
reader's chapters together (for test sets with few utterances per chapter).

Grouping, per speaker (or over the whole set with ``--across_speakers``): utterances are added in
order while the recording stays within ``max_seconds``; once it has at least ``min_seconds`` it is
closed. An utterance that would overflow a recording still shorter than ``min_seconds`` ends that
recording unfinished: its utterances are left out, as are utterances that are themselves longer
than ``max_seconds`` and a speaker's final remainder shorter than ``min_seconds``. Every left-out
utterance is listed in ``<dst>/left_out`` with the reason, and counted on stdout.

Writes a Kaldi-style data directory ``<dst>``: ``wav.scp`` (new wav files under ``<dst>/wav``,
16-bit PCM), ``text`` (the transcripts joined by spaces), ``utt2spk``, ``spk2utt``,
``utt2num_samples``, ``utt2dur``, plus ``segments_orig``: ``<recording> <utterance> <start> <end>``
(seconds) for every source utterance, to score or align per utterance later.

Usage::

    local/make_longform_sets.py --src data/test_clean --dst data/test_clean_long45 \
        --min_seconds 45 --max_seconds 60
    local/make_longform_sets.py --src data/test_clean --dst data/test_clean_10min \
        --min_seconds 600 --max_seconds 660 --across_speakers
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from espnet_ssm.recipe.datadir import load_data_dir, validate, write_data_dir


@dataclass
class Utterance:
    """A source utterance and its duration."""

    utt: str
    speaker: str
    num_samples: int


@dataclass
class Recording:
    """A long recording under construction."""

    utts: List[Utterance] = field(default_factory=list)

    @property
    def num_samples(self) -> int:
        return sum(u.num_samples for u in self.utts)


def read_audio(spec: str, what: str) -> Tuple[np.ndarray, int]:
    """Read a wav.scp value: a file path, or a command ending in ``|`` whose stdout is audio."""
    spec = spec.strip()
    try:
        if spec.endswith("|"):
            proc = subprocess.run(spec[:-1], shell=True, capture_output=True, check=True)
            audio, rate = sf.read(io.BytesIO(proc.stdout), dtype="int16")
        else:
            audio, rate = sf.read(spec, dtype="int16")
    except subprocess.CalledProcessError as e:
        raise RuntimeError(
            f"{what}: command '{spec}' failed: {e.stderr.decode(errors='replace')[-500:]}"
        ) from None
    except (RuntimeError, sf.LibsndfileError, OSError) as e:
        raise RuntimeError(f"{what}: cannot read audio '{spec}': {e}") from None
    if audio.ndim != 1:
        raise RuntimeError(f"{what}: expected mono audio, got {audio.shape[1]} channels")
    return audio, rate


def durations(tables: Dict[str, Dict[str, str]]) -> Tuple[Dict[str, int], int]:
    """Samples per utterance (from ``utt2num_samples`` or the audio headers) and the rate."""
    wav = tables["wav.scp"]
    rates = set()
    out: Dict[str, int] = {}
    for utt, spec in wav.items():
        if spec.strip().endswith("|"):
            audio, rate = read_audio(spec, f"utterance {utt}")
            out[utt] = len(audio)
        else:
            try:
                info = sf.info(spec)
            except (RuntimeError, sf.LibsndfileError, OSError) as e:
                raise RuntimeError(f"utterance {utt}: cannot read audio '{spec}': {e}") from None
            out[utt], rate = info.frames, info.samplerate
        rates.add(rate)
    if len(rates) > 1:
        raise RuntimeError(f"the source utterances have different sampling rates {sorted(rates)}")
    if "utt2num_samples" in tables:
        bad = [u for u, n in tables["utt2num_samples"].items() if int(n) != out.get(u)]
        if bad:
            raise RuntimeError(
                f"utt2num_samples disagrees with the audio for {len(bad)} utterance(s), "
                f"e.g. {bad[:5]}"
            )
    return out, rates.pop()


def group(
    utts: Sequence[Utterance], min_samples: int, max_samples: int
) -> Tuple[List[Recording], List[Tuple[str, str]]]:
    """Group consecutive utterances into recordings of ``min..max`` samples.

    Returns the recordings and the left-out utterances with their reasons.
    """
    recordings: List[Recording] = []
    left_out: List[Tuple[str, str]] = []
    cur = Recording()

    def abandon(reason: str) -> None:
        left_out.extend((u.utt, reason) for u in cur.utts)
        cur.utts.clear()

    for u in utts:
        if u.num_samples > max_samples:
            abandon("recording could not reach the minimum duration")
            left_out.append((u.utt, "utterance longer than the maximum duration"))
            continue
        if cur.num_samples + u.num_samples > max_samples:
            abandon("recording could not reach the minimum duration")
        cur.utts.append(u)
        if cur.num_samples >= min_samples:
            recordings.append(cur)
            cur = Recording()
    abandon("final remainder shorter than the minimum duration")
    return recordings, left_out


def build(
    src: Path,
    dst: Path,
    min_seconds: float,
    max_seconds: float,
    across_speakers: bool = False,
    gap_seconds: float = 0.0,
    tag: Optional[str] = None,
    speaker_prefix_sep: Optional[str] = None,
) -> Tuple[int, int]:
    """Write the long-form data directory; return (recordings, left-out utterances)."""
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(
            f"need 0 < min_seconds <= max_seconds, got {min_seconds} and {max_seconds}"
        )
    if gap_seconds < 0:
        raise ValueError(f"gap_seconds must be >= 0, got {gap_seconds}")
    validate(src)
    tables = load_data_dir(src)
    num_samples, rate = durations(tables)
    gap = int(round(gap_seconds * rate))
    utt2spk = tables["utt2spk"]
    if speaker_prefix_sep == "":
        raise ValueError("speaker_prefix_sep must be a non-empty separator")

    def speaker_of(utt: str) -> str:  # LibriSpeech: "<reader>-<chapter>" -> "<reader>"
        spk = utt2spk[utt]
        return spk.split(speaker_prefix_sep, 1)[0] if speaker_prefix_sep else spk

    ordered = [Utterance(u, speaker_of(u), num_samples[u] + gap) for u in sorted(utt2spk)]
    if across_speakers:
        streams = {"": ordered}
    else:
        streams: Dict[str, List[Utterance]] = {}
        for u in ordered:
            streams.setdefault(u.speaker, []).append(u)

    if tag is None:
        tag = f"long{int(min_seconds)}" if min_seconds < 600 else f"long{int(min_seconds) // 60}min"
    wav_dir = dst / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    out: Dict[str, Dict[str, str]] = {
        k: {} for k in ("wav.scp", "text", "utt2spk", "utt2num_samples", "utt2dur")
    }
    segments: List[str] = []
    all_left_out: List[Tuple[str, str]] = []
    for speaker, utts in streams.items():
        recordings, left_out = group(utts, int(min_seconds * rate), int(max_seconds * rate))
        all_left_out += left_out
        for i, rec in enumerate(recordings):
            rec_id = f"{speaker}-{tag}-{i:04d}" if speaker else f"{tag}-{i:04d}"
            path = (wav_dir / f"{rec_id}.wav").resolve()
            pieces, offset = [], 0
            silence = np.zeros(gap, dtype=np.int16)
            for u in rec.utts:
                audio, _ = read_audio(tables["wav.scp"][u.utt], f"utterance {u.utt}")
                start = offset / rate
                pieces += [audio, silence]
                offset += len(audio) + gap
                segments.append(f"{rec_id} {u.utt} {start:.4f} {start + len(audio) / rate:.4f}")
            audio = np.concatenate(pieces)
            sf.write(path, audio, rate, subtype="PCM_16")
            out["wav.scp"][rec_id] = str(path)
            out["text"][rec_id] = " ".join(tables["text"][u.utt] for u in rec.utts).strip()
            out["utt2spk"][rec_id] = speaker if speaker else rec_id
            out["utt2num_samples"][rec_id] = str(len(audio))
            out["utt2dur"][rec_id] = f"{len(audio) / rate:.4f}"
    if not out["wav.scp"]:
        raise RuntimeError(
            f"no recording of {min_seconds}-{max_seconds} s could be built from {src} "
            f"({len(ordered)} utterances, {sum(num_samples.values()) / rate:.1f} s in total"
            + ("" if across_speakers else "; try --across_speakers") + ")"
        )
    write_data_dir(dst, out)
    (dst / "segments_orig").write_text("\n".join(sorted(segments)) + "\n", encoding="utf-8")
    (dst / "left_out").write_text(
        "".join(f"{u} {reason}\n" for u, reason in sorted(all_left_out)), encoding="utf-8"
    )
    validate(dst)
    return len(out["wav.scp"]), len(all_left_out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--src", type=Path, required=True, help="source data directory")
    p.add_argument("--dst", type=Path, required=True, help="output data directory")
    p.add_argument("--min_seconds", type=float, required=True)
    p.add_argument("--max_seconds", type=float, required=True)
    p.add_argument("--across_speakers", action="store_true",
                   help="continue recordings across speakers (for 10- and 60-minute sets)")
    p.add_argument("--gap_seconds", type=float, default=0.0,
                   help="silence inserted after each utterance (default: none, as in the paper)")
    p.add_argument("--tag", default=None, help="recording-id tag (default: long<min seconds>)")
    p.add_argument("--speaker_prefix_sep", default=None,
                   help="group by the part of the utt2spk speaker before this separator "
                   "(LibriSpeech '-': a reader's chapters together; default: utt2spk as is)")
    args = p.parse_args(argv)
    try:
        n, left = build(args.src, args.dst, args.min_seconds, args.max_seconds,
                        args.across_speakers, args.gap_seconds, args.tag,
                        args.speaker_prefix_sep)
    except (ValueError, RuntimeError) as e:
        print(f"make_longform_sets.py: error: {e}", file=sys.stderr)
        return 1
    print(f"{args.dst}: {n} recordings of {args.min_seconds:g}-{args.max_seconds:g} s; "
          f"{left} utterance(s) left out (listed in {args.dst / 'left_out'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
