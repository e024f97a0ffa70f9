"""Synthesise a small speech corpus in LibriSpeech's directory layout with espeak-ng.

The corpus stands in for LibriSpeech in the demo and in the tests: the recipe's stage 1 prepares
it exactly as it prepares a real LibriSpeech copy. Layout written under ``<out>/LibriSpeech/``::

    SPEAKERS.TXT                     ;ID |SEX| SUBSET |MINUTES| NAME   (LibriSpeech's columns)
    README.TXT                       how the corpus was made
    <part>/<reader>/<chapter>/<reader>-<chapter>.trans.txt
    <part>/<reader>/<chapter>/<reader>-<chapter>-<nnnn>.flac   (16 kHz, mono, 16 bit)

Content:
  * open-vocabulary English sentences from :mod:`espnet_ssm.recipe.text_corpus` (WordNet's example
    sentences, LibriSpeech's normalisation), the parts made of disjoint source documents: no
    document or sentence of the dev or test part occurs in training;
  * an optional fourth part (``test-other-source``) whose text comes from another source and genre
    (fortune cookies: quotations and aphorisms), read by the test voices;
  * one "reader" per espeak-ng voice = base voice (accent) + variant (voice quality), each with its
    own speaking rate and pitch, jittered per utterance (240 training readers: 4 accents x 60
    variants);
  * the variants of the dev and test readers never occur in training, so those voices are unseen;
  * mild noise: white noise at 20-35 dB SNR, random gain and leading/trailing silence.

Beside ``LibriSpeech/`` goes ``librispeech-lm-norm.txt.gz``, the stand-in for LibriSpeech's LM
text (openslr resource 11): one sentence per line from WordNet documents that no part uses, so
it holds no dev or test sentence (LibriSpeech's LM text likewise leaves out the books of the dev
and test sets).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import logging
import multiprocessing
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from espnet_ssm.recipe.text_corpus import split_texts

FS = 16000
ESPEAK_FS = 22050

# Base voices (accents) and variants (voice qualities: pitch range, formants, voicing) of
# espeak-ng. A reader is one base + variant pair. Many training variants matter: a model trained
# on a handful of voice qualities does not generalise to new ones.
TRAIN_BASES = ("en-us", "en-gb", "en-gb-x-rp", "en-029")
EVAL_BASES = ("en-us", "en-gb")
TRAIN_VARIANTS = (
    "m1", "m2", "m3", "m5", "m6", "m8", "f1", "f2", "f3", "f5", "Andy", "Annie", "Gene", "Jacky",
    "Lee", "Mario", "Michael", "antonio", "aunty", "belinda", "edward", "gustave", "john", "marcelo",
    "max", "michel", "norbert", "pablo", "paul", "quincy", "rob", "robert", "steph", "travis",
    "victor", "grandpa", "Alicia", "Diogo", "Gene2", "Henrique", "Marco", "Mike", "Nguyen", "adam",
    "anika", "benjamin", "boris", "david", "ed", "edward2", "iven", "miguel", "pedro", "sandro",
    "steph2", "zac", "grandma", "announcer", "kaukovalta", "RicishayMax",
)
DEV_VARIANTS = ("Alex", "Denis", "shelby", "linda")
TEST_VARIANTS = ("m4", "m7", "f4", "Hugo", "Andrea")
FEMALE_VARIANTS = frozenset(
    ("f1", "f2", "f3", "f4", "f5", "Annie", "Andrea", "aunty", "belinda", "linda", "steph", "shelby",
     "Alicia", "anika", "steph2", "grandma")
)

# train, dev, test (in-domain text) and a test part whose text comes from another source
DEFAULT_PARTS = ("train-synth", "dev-synth", "test-synth", "test-other-source")
LM_TEXT = "librispeech-lm-norm.txt.gz"  # openslr 11's file name, so local/data.sh takes either
DEFAULT_LM_SENTENCES = 20000


@dataclass(frozen=True)
class Reader:
    """A synthetic LibriSpeech reader: one espeak-ng voice with its own rate and pitch."""

    reader_id: int
    part: str
    base: str
    variant: str
    wpm: int  # espeak-ng -s, words per minute
    pitch: int  # espeak-ng -p, 0..99

    @property
    def voice(self) -> str:
        return f"{self.base}+{self.variant}"

    @property
    def sex(self) -> str:
        return "F" if self.variant in FEMALE_VARIANTS else "M"


@dataclass(frozen=True)
class Utterance:
    utt_id: str
    path: Path
    text: str
    reader: Reader
    seed: int


def make_readers(part: str, bases: Sequence[str], variants: Sequence[str], first_id: int,
                 rng: np.random.Generator) -> List[Reader]:
    """All base x variant readers of one part, with speaker-specific rate and pitch."""
    readers = []
    for i, (base, variant) in enumerate((b, v) for v in variants for b in bases):
        readers.append(
            Reader(
                reader_id=first_id + i,
                part=part,
                base=base,
                variant=variant,
                wpm=int(rng.integers(135, 186)),
                pitch=int(rng.integers(30, 71)),
            )
        )
    return readers


def plan_corpus(
    out_dir: Path,
    sizes: Dict[str, int],
    seed: int = 0,
    chapters_per_reader: int = 2,
    lm_text_sentences: int = 0,
) -> Tuple[List[Reader], List[Utterance], List[str]]:
    """Decide every reader, chapter, utterance id and sentence, and the LM text, before any audio.

    ``sizes`` maps the part names (train, dev, test and optionally the other-source test part,
    in that order) to utterance counts. The other-source part is read by the test voices.
    """
    if len(sizes) not in (3, 4):
        raise ValueError(f"plan_corpus: expected 3 or 4 parts (train, dev, test[, other-source test]), got {list(sizes)}")
    for part, n in sizes.items():
        if n < 1:
            raise ValueError(f"plan_corpus: part {part} needs at least one utterance, got {n}")
    (train, dev, test, *other) = list(sizes)
    # One random stream per part: the dev and test readers do not change with the training voices.
    readers = (
        make_readers(train, TRAIN_BASES, TRAIN_VARIANTS, 100, np.random.default_rng([seed, 0]))
        + make_readers(dev, EVAL_BASES, DEV_VARIANTS, 700, np.random.default_rng([seed, 1]))
        + make_readers(test, EVAL_BASES, TEST_VARIANTS, 800, np.random.default_rng([seed, 2]))
    )
    if other:
        readers += make_readers(other[0], EVAL_BASES, TEST_VARIANTS, 900, np.random.default_rng([seed, 3]))
    sentences, lm_text = split_texts(sizes, lm_text_sentences, seed, other[0] if other else None)
    root = out_dir / "LibriSpeech"
    utterances: List[Utterance] = []
    for part, texts in sentences.items():
        part_readers = [r for r in readers if r.part == part]
        # Round-robin over (reader, chapter) so that every reader gets a share of every part.
        slots = [(r, c) for c in range(chapters_per_reader) for r in part_readers]
        counters: Dict[Tuple[int, int], int] = {}
        for k, text in enumerate(texts):
            reader, c = slots[k % len(slots)]
            chapter = reader.reader_id * 10 + c
            n = counters.get((reader.reader_id, chapter), 0)
            counters[(reader.reader_id, chapter)] = n + 1
            utt_id = f"{reader.reader_id}-{chapter}-{n:04d}"
            path = root / part / str(reader.reader_id) / str(chapter) / f"{utt_id}.flac"
            utterances.append(Utterance(utt_id, path, text, reader, seed * 1_000_003 + len(utterances)))
    return readers, utterances, lm_text


def espeak(text: str, voice: str, wpm: int, pitch: int) -> np.ndarray:
    """Run espeak-ng and return its waveform (float64, 22.05 kHz)."""
    # Lower case so that short words are not spelt out as acronyms ("US" -> "U S").
    cmd = ["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "--stdout", text.lower()]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        raise RuntimeError(
            f"espeak-ng failed for voice {voice} ({' '.join(cmd[:-1])} ...): "
            f"{proc.stderr.decode(errors='replace').strip()}"
        )
    wav, fs = sf.read(io.BytesIO(proc.stdout), dtype="float64")
    if fs != ESPEAK_FS:
        raise RuntimeError(f"espeak-ng produced {fs} Hz audio, expected {ESPEAK_FS} Hz")
    return wav


def degrade(wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Resample to 16 kHz, add silence, random gain and white noise at 20-35 dB SNR."""
    x = resample_poly(wav, FS // 50, ESPEAK_FS // 50)  # 22050 -> 16000 = 320 / 441
    lead, trail = (int(rng.uniform(0.05, 0.35) * FS) for _ in range(2))
    x = np.concatenate([np.zeros(lead), x, np.zeros(trail)])
    power = np.mean(x**2) + 1e-12
    snr_db = rng.uniform(20.0, 35.0)
    x = x + rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), size=x.shape)
    peak = np.max(np.abs(x)) + 1e-12
    return x * (rng.uniform(0.3, 0.9) / peak)


def synthesise(utt: Utterance) -> float:
    """Make one utterance's flac file; return its duration in seconds."""
    rng = np.random.default_rng(utt.seed)
    r = utt.reader
    wpm = int(r.wpm + rng.integers(-10, 11))
    pitch = int(np.clip(r.pitch + rng.integers(-6, 7), 0, 99))
    x = degrade(espeak(utt.text, r.voice, wpm, pitch), rng)
    utt.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = utt.path.with_suffix(".tmp.flac")
    sf.write(tmp, x, FS, subtype="PCM_16", format="FLAC")
    tmp.replace(utt.path)  # atomic: an interrupted run never leaves a truncated flac
    return len(x) / FS


def write_metadata(out_dir: Path, readers: Sequence[Reader], utterances: Sequence[Utterance],
                   durations: Dict[str, float]) -> None:
    """Write the transcripts, SPEAKERS.TXT and README.TXT."""
    root = out_dir / "LibriSpeech"
    by_chapter: Dict[Path, List[Utterance]] = {}
    for u in utterances:
        by_chapter.setdefault(u.path.parent, []).append(u)
    for chapter_dir, utts in by_chapter.items():
        reader, chapter = chapter_dir.parent.name, chapter_dir.name
        lines = [f"{u.utt_id} {u.text}\n" for u in sorted(utts, key=lambda u: u.utt_id)]
        (chapter_dir / f"{reader}-{chapter}.trans.txt").write_text("".join(lines))
    minutes: Dict[int, float] = {}
    for u in utterances:
        minutes[u.reader.reader_id] = minutes.get(u.reader.reader_id, 0.0) + durations[u.utt_id] / 60
    lines = [
        "; Synthetic readers made with espeak-ng (voice = base voice + variant).\n",
        ";ID  |SEX| SUBSET           |MINUTES| NAME\n",
    ]
    for r in readers:
        if r.reader_id in minutes:
            lines.append(
                f"{r.reader_id:<5}| {r.sex} | {r.part:<17}| {minutes[r.reader_id]:5.2f} | "
                f"espeak-ng {r.voice} rate {r.wpm} pitch {r.pitch}\n"
            )
    (root / "SPEAKERS.TXT").write_text("".join(lines))
    (root / "README.TXT").write_text(
        "Synthetic speech corpus in LibriSpeech's layout, made by espnet_ssm.recipe.synth_corpus\n"
        "with espeak-ng. Sentences: WordNet 3.0's example sentences (Debian package wordnet-base,\n"
        "WordNet 3.0 licence), the parts made of disjoint synsets; test-other-source: fortune\n"
        "cookies (Debian package fortunes, BSD licence). The voice variants of the dev and test\n"
        "readers do not occur in the training part.\n"
    )


def write_lm_text(path: Path, sentences: Sequence[str]) -> None:
    """Write ``sentences`` gzipped, one per line; byte-identical for the same sentences."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        f.write("".join(s + "\n" for s in sentences).encode())
    tmp.replace(path)  # atomic: a reader never sees a truncated archive


def generate(
    out_dir: Path,
    sizes: Dict[str, int],
    seed: int = 0,
    nj: int = 2,
    chapters_per_reader: int = 2,
    log_every: int = 500,
    lm_text_sentences: int = DEFAULT_LM_SENTENCES,
) -> Path:
    """Synthesise the whole corpus; return its root.

    ``<root>/.plan`` records what the corpus is made of: an interrupted run with the same plan
    resumes (existing flac files are kept), a finished one (``.complete``) is left alone, and a
    corpus made with another plan is removed first, so files of two plans never mix.
    ``<out_dir>/librispeech-lm-norm.txt.gz`` (``lm_text_sentences`` lines; none when 0) is
    rewritten every time: it takes a few seconds and depends only on the plan.
    """
    if shutil.which("espeak-ng") is None:
        raise RuntimeError(
            "espeak-ng is not installed; install it with: sudo apt-get install -y espeak-ng"
        )
    readers, utterances, lm_text = plan_corpus(out_dir, sizes, seed, chapters_per_reader, lm_text_sentences)
    if lm_text_sentences > 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_lm_text(out_dir / LM_TEXT, lm_text)
        logging.info("LM text: %d sentences in %s (no dev/test sentence)", len(lm_text), out_dir / LM_TEXT)
    root = out_dir / "LibriSpeech"
    marker, plan_file = root / ".complete", root / ".plan"
    # The texts are part of the plan: a corpus made from other text (another source package
    # version, another normalisation) is made afresh.
    texts = hashlib.sha256("\n".join(f"{u.utt_id} {u.text}" for u in utterances).encode()).hexdigest()
    plan = repr((list(sizes.items()), seed, chapters_per_reader, TRAIN_BASES, EVAL_BASES,
                 TRAIN_VARIANTS, DEV_VARIANTS, TEST_VARIANTS, texts))
    if marker.is_file() and marker.read_text() == plan:
        logging.info("corpus %s is complete, nothing to do", out_dir)
        return root
    if root.exists() and not (plan_file.is_file() and plan_file.read_text() == plan):
        logging.info("removing %s: it was made with other settings", root)
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(plan)
    todo = [u for u in utterances if not u.path.is_file()]
    logging.info(
        "synthesising %d of %d utterances (%s) with %d jobs",
        len(todo), len(utterances), ", ".join(f"{k}: {v}" for k, v in sizes.items()), nj,
    )
    start = time.time()
    if nj > 1 and len(todo) > 1:
        with multiprocessing.get_context("fork").Pool(nj) as pool:
            for k, _ in enumerate(pool.imap_unordered(synthesise, todo, chunksize=8), 1):
                if k % log_every == 0:
                    logging.info("  %d / %d utterances (%.0f s)", k, len(todo), time.time() - start)
    else:
        for u in todo:
            synthesise(u)
    durations = {u.utt_id: sf.info(str(u.path)).frames / FS for u in utterances}
    write_metadata(out_dir, readers, utterances, durations)
    hours = sum(durations.values()) / 3600
    logging.info("corpus ready: %d utterances, %.2f h, in %.0f s", len(utterances), hours, time.time() - start)
    marker.write_text(plan)
    return out_dir / "LibriSpeech"


def parse_sizes(parts: Iterable[str], sizes: Iterable[int]) -> Dict[str, int]:
    """``{part: size}`` for 3 or 4 part names (train, dev, test[, other-source test]) and as many sizes."""
    parts, sizes = list(parts), list(sizes)
    if len(parts) not in (3, 4) or len(sizes) != len(parts):
        raise ValueError(f"need 3 or 4 part names and as many sizes, got {parts} and {sizes}")
    if len(set(parts)) != len(parts):
        raise ValueError(f"part names must be distinct, got {parts}")
    return dict(zip(parts, sizes))


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("out_dir", type=Path, help="the corpus goes to <out_dir>/LibriSpeech")
    p.add_argument("--parts", nargs="+", default=list(DEFAULT_PARTS),
                   help="train, dev, test and optionally a test part whose text comes from another source")
    p.add_argument("--sizes", nargs="+", type=int, default=[2100, 100, 200, 200], help="utterances per part")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nj", type=int, default=2, help="parallel synthesis processes")
    p.add_argument("--chapters_per_reader", type=int, default=2)
    p.add_argument("--lm_text_sentences", type=int, default=DEFAULT_LM_SENTENCES,
                   help=f"sentences in <out_dir>/{LM_TEXT}, the LM text (0: none)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    args = get_parser().parse_args(argv)
    try:
        sizes = parse_sizes(args.parts, args.sizes)
        generate(args.out_dir, sizes, args.seed, args.nj, args.chapters_per_reader,
                 lm_text_sentences=args.lm_text_sentences)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        sys.exit(f"synth_corpus: {e}")


if __name__ == "__main__":
    main()
