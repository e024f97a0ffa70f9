"""WER of one model on test sets recognised one recording per pass (e.g. original vs long).

    python -m espnet_ssm.streaming.longform_wer --exp_dir exp/asr_train \\
        --model_file valid.loss.ave.pth data/test_clean data/test_clean_long45

Each data directory (``wav.scp`` and ``text``) is recognised with
:class:`~espnet_ssm.streaming.longform.LongFormSpeech2Text` (every recording in one pass, CTC
greedy or prefix beam search) and scored with ``jiwer`` against its ``text``; one markdown
table row per directory. The long sets come from ``local/make_longform_sets.sh`` (their
``text`` is the concatenation of the utterances' transcripts).
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Set

import jiwer

from espnet_ssm.recipe.datadir import load_data_dir
from espnet_ssm.streaming.io import read_recordings
from espnet_ssm.streaming.longform import LongFormSpeech2Text


@dataclass
class SetScore:
    """Scores of one data directory."""

    name: str
    recordings: int
    mean_seconds: float
    errors: int  # substitutions + deletions + insertions
    words: int  # reference words

    @property
    def wer(self) -> float:
        """Word error rate in percent."""
        return 100.0 * self.errors / max(self.words, 1)


def same_utterances_name(data_dir_name: str) -> str:
    """The row name of an original set scored on just the utterances of the long sets."""
    return f"{data_dir_name} (utterances in the long sets)"


def concatenated_utterances(data_dir: Path) -> Optional[Set[str]]:
    """Source utterances of a long set (its ``segments_orig``), or None for other sets."""
    segments = data_dir / "segments_orig"
    if not segments.is_file():
        return None
    return {line.split()[1] for line in segments.read_text().splitlines() if line.strip()}


def score_set(s2t: LongFormSpeech2Text, data_dir: Path,
              keep: Optional[Set[str]] = None) -> SetScore:
    """Recognise the recordings of ``data_dir`` (those in ``keep`` if given) and score them
    against its ``text``."""
    refs = load_data_dir(data_dir)["text"]
    keys, hyps, seconds = [], [], 0.0
    for key, speech, _ in read_recordings(str(data_dir / "wav.scp"), s2t.sample_rate):
        if keep is not None and key not in keep:
            continue
        if key not in refs:
            raise ValueError(f"{data_dir}: recording {key} has no transcript in text")
        hyps.append(s2t(speech).text or "")
        keys.append(key)
        seconds += speech.numel() / s2t.sample_rate
    if not keys:
        raise ValueError(f"{data_dir}: no recordings")
    out = jiwer.process_words([refs[k] for k in keys], hyps)
    errors = out.substitutions + out.deletions + out.insertions
    words = out.substitutions + out.deletions + out.hits
    name = data_dir.name if keep is None else same_utterances_name(data_dir.name)
    return SetScore(name, len(keys), seconds / len(keys), errors, words)


def table(title: str, scores: Sequence[SetScore]) -> str:
    """A markdown table of the scores."""
    rows = [f"### {title}", "", "| test set | recordings | mean duration | WER (errors/words) |",
            "|---|---|---|---|"]
    rows += [f"| {s.name} | {s.recordings} | {s.mean_seconds:.1f} s | {s.wer:.2f} % "
             f"({s.errors}/{s.words}) |" for s in scores]
    return "\n".join(rows)


# a row of table(): | name | recordings | mean s | wer % (errors/words) |
_ROW = re.compile(r"\|\s*([^|]+?)\s*\|\s*(\d+)\s*\|\s*([\d.]+) s\s*\|[^(|]*\((\d+)/(\d+)\)\s*\|$")


def read_table(path: Path) -> List[SetScore]:
    """The scores of a table written by :func:`table` (e.g. ``local/score_longform.sh``'s record)."""
    return [SetScore(m.group(1), int(m.group(2)), float(m.group(3)), int(m.group(4)), int(m.group(5)))
            for m in map(_ROW.match, path.read_text(encoding="utf-8").splitlines()) if m]


def main(argv: Optional[List[str]] = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dirs", nargs="+", type=Path, help="data directories to score")
    p.add_argument("--exp_dir", type=Path, required=True, help="has config.yaml")
    p.add_argument("--model_file", default="valid.loss.ave.pth", help="in --exp_dir")
    p.add_argument("--beam_size", type=int, default=1)
    p.add_argument("--mode", default="auto", choices=["auto", "stream", "offline"])
    p.add_argument("--same_utterances", action="store_true",
                   help="also score the original sets on just the utterances that the long "
                   "sets (those with segments_orig) contain")
    args = p.parse_args(argv)
    import espnet_ssm  # noqa: F401  (registers the encoders)

    s2t = LongFormSpeech2Text(args.exp_dir / "config.yaml", args.exp_dir / args.model_file,
                              mode=args.mode, beam_size=args.beam_size)
    search = "greedy" if args.beam_size == 1 else f"prefix beam {args.beam_size}"
    scores = [score_set(s2t, d) for d in args.data_dirs]
    if args.same_utterances:
        used = [concatenated_utterances(d) for d in args.data_dirs]
        keep = set().union(*[u for u in used if u is not None])
        if not keep:
            p.error("--same_utterances needs a long set (a data directory with segments_orig)")
        scores += [score_set(s2t, d, keep) for d, u in zip(args.data_dirs, used) if u is None]
    print(table(f"WER of {args.exp_dir.name}/{args.model_file} (CTC {search}, {s2t.mode} mode, "
                "one pass per recording)", scores), flush=True)


if __name__ == "__main__":
    main()
