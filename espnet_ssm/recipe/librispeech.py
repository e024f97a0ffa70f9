"""Prepare one LibriSpeech part as a Kaldi data directory, refusing inconsistent input.

Input (LibriSpeech's layout)::

    <corpus>/SPEAKERS.TXT
    <corpus>/<part>/<reader>/<chapter>/<reader>-<chapter>.trans.txt
    <corpus>/<part>/<reader>/<chapter>/<reader>-<chapter>-<nnnn>.flac

Output ``data/<set>/`` as Kaldi's ``local/data_prep.sh`` writes it: ``wav.scp`` (absolute flac
paths, no pipes), ``text``, ``utt2spk`` with speaker = ``<reader>-<chapter>``, ``spk2utt`` and
``spk2gender`` (from SPEAKERS.TXT).

Nothing is dropped silently: a transcript line without its flac, a flac without a transcript line,
an unreadable or truncated flac, a malformed transcript line or a reader missing from SPEAKERS.TXT
stops the preparation with one error listing every offending file.
"""
from __future__ import annotations

import argparse
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import soundfile as sf

from espnet_ssm.recipe.datadir import DataDirError, format_problems, validate, write_data_dir

UTT_RE = re.compile(r"^(\d+)-(\d+)-(\d+)$")


class CorpusError(ValueError):
    """The corpus on disk is inconsistent; the message lists the offending files."""


def read_speakers(path: Path) -> Dict[str, str]:
    """Reader id -> sex ('m' / 'f') from LibriSpeech's SPEAKERS.TXT (``ID | SEX | ...`` lines)."""
    if not path.is_file():
        raise CorpusError(f"{path} not found (LibriSpeech's SPEAKERS.TXT is needed for spk2gender)")
    genders = {}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip() or line.startswith(";"):
            continue
        fields = [x.strip() for x in line.split("|")]
        if len(fields) < 2 or fields[1].upper() not in ("M", "F"):
            raise CorpusError(f"{path}:{n}: expected 'ID | SEX | ...', got {line!r}")
        genders[fields[0]] = fields[1].lower()
    return genders


def check_flac(path: Path) -> Optional[str]:
    """None when the flac decodes at its start and its end, else the reason it does not."""
    try:
        with sf.SoundFile(str(path)) as f:
            if f.frames <= 0:
                return "no audio samples"
            f.read(min(f.frames, 1600))
            # A truncated file has an intact header; decoding its last block fails or comes short.
            f.seek(max(0, f.frames - 1600))
            tail = f.read(1600)
            if len(tail) != min(f.frames, 1600):
                return f"truncated: header says {f.frames} samples"
    except (RuntimeError, sf.LibsndfileError, OSError) as e:
        return f"unreadable ({e})"
    return None


def scan_part(part_dir: Path, nj: int = 4) -> Tuple[Dict[str, Dict[str, str]], List[str]]:
    """Collect the tables of one part and every problem found in it."""
    problems: List[str] = []
    wav_scp: Dict[str, str] = {}
    text: Dict[str, str] = {}
    utt2spk: Dict[str, str] = {}
    if not part_dir.is_dir():
        raise CorpusError(f"LibriSpeech part {part_dir} does not exist")
    chapters = sorted(p for p in part_dir.glob("*/*") if p.is_dir())
    if not chapters:
        raise CorpusError(f"{part_dir} has no <reader>/<chapter>/ directories")
    for chapter_dir in chapters:
        reader, chapter = chapter_dir.parent.name, chapter_dir.name
        trans = chapter_dir / f"{reader}-{chapter}.trans.txt"
        flacs = {p.stem: p for p in chapter_dir.glob("*.flac")}
        transcribed: Dict[str, str] = {}
        if not trans.is_file():
            problems.append(f"{trans}: transcript file missing")
        else:
            for n, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
                utt, _, words = line.strip().partition(" ")
                m = UTT_RE.match(utt)
                if not m or (m.group(1), m.group(2)) != (reader, chapter):
                    problems.append(f"{trans}:{n}: utterance id {utt!r} is not {reader}-{chapter}-<nnnn>")
                elif not words.strip():
                    problems.append(f"{trans}:{n}: utterance {utt} has no transcript")
                elif utt in transcribed:
                    problems.append(f"{trans}:{n}: utterance {utt} transcribed twice")
                else:
                    transcribed[utt] = " ".join(words.split())
        for utt in sorted(set(transcribed) - set(flacs)):
            problems.append(f"{chapter_dir / (utt + '.flac')}: missing (transcript line without audio)")
        for utt in sorted(set(flacs) - set(transcribed)):
            if trans.is_file():
                problems.append(f"{flacs[utt]}: audio without a transcript line in {trans.name}")
        for utt in sorted(set(transcribed) & set(flacs)):
            wav_scp[utt] = str(flacs[utt].resolve())
            text[utt] = transcribed[utt]
            utt2spk[utt] = f"{reader}-{chapter}"
    with ThreadPoolExecutor(max(1, nj)) as pool:  # libsndfile releases the GIL while decoding
        paths = [Path(p) for p in wav_scp.values()]
        for path, reason in zip(paths, pool.map(check_flac, paths)):
            if reason:
                problems.append(f"{path}: {reason}")
    return {"wav.scp": wav_scp, "text": text, "utt2spk": utt2spk}, problems


def prepare_part(part_dir: Path, data_dir: Path, speakers_txt: Optional[Path] = None, nj: int = 4) -> int:
    """Write ``data_dir`` for ``part_dir``; raise CorpusError listing every offending file."""
    part_dir = Path(part_dir)
    tables, problems = scan_part(part_dir, nj)
    speakers = read_speakers(speakers_txt or part_dir.parent / "SPEAKERS.TXT")
    spk2gender: Dict[str, str] = {}
    for spk in sorted(set(tables["utt2spk"].values())):
        reader = spk.split("-")[0]
        if reader not in speakers:
            problems.append(f"{part_dir / reader}: reader {reader} is not listed in SPEAKERS.TXT")
        else:
            spk2gender[spk] = speakers[reader]
    if problems:
        raise CorpusError(format_problems(f"cannot prepare {part_dir}", problems, limit=100))
    tables["spk2gender"] = spk2gender
    write_data_dir(data_dir, tables)
    return validate(data_dir)


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part_dir", type=Path, help="e.g. downloads/LibriSpeech/dev-clean")
    p.add_argument("data_dir", type=Path, help="e.g. data/dev_clean")
    p.add_argument("--speakers", type=Path, default=None, help="SPEAKERS.TXT (default: next to the part)")
    p.add_argument("--nj", type=int, default=4, help="threads for checking the flac files")
    args = p.parse_args(argv)
    try:
        n = prepare_part(args.part_dir, args.data_dir, args.speakers, args.nj)
    except (CorpusError, DataDirError) as e:
        sys.exit(f"librispeech: {e}")
    print(f"{args.data_dir}: {n} utterances from {args.part_dir}")


if __name__ == "__main__":
    main()
