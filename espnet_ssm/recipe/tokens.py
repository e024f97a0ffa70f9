"""Stage 5: sentencepiece model and ESPnet token list.

The token list (``tokens.txt``, one token per line, line number = token id) is
``<blank>`` (id 0), ``<unk>``, the sentencepiece pieces, and ``<sos/eos>`` last, exactly as
ESPnet's asr.sh writes it. sentencepiece's Python API stands in for ``spm_train``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import sentencepiece as spm


def train_bpe(
    text: Path,
    out_dir: Path,
    nbpe: int,
    bpemode: str = "unigram",
    character_coverage: float = 1.0,
    input_sentence_size: int = 100_000_000,
    user_defined_symbols: Sequence[str] = (),
    blank: str = "<blank>",
    oov: str = "<unk>",
    sos_eos: str = "<sos/eos>",
) -> List[str]:
    """Train ``<out_dir>/bpe.model`` on the transcripts of a Kaldi ``text`` file; write tokens.txt."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sentences = []
    for n, line in enumerate(text.read_text(encoding="utf-8").splitlines(), 1):
        _, _, words = line.partition(" ")
        if words.strip():
            sentences.append(words.strip())
    if not sentences:
        raise ValueError(f"{text} has no transcripts to train sentencepiece on")
    (out_dir / "train.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    kwargs = dict(
        input=str(out_dir / "train.txt"),
        model_prefix=str(out_dir / "bpe"),
        vocab_size=nbpe,
        model_type=bpemode,
        character_coverage=character_coverage,
        input_sentence_size=input_sentence_size,
        minloglevel=2,
    )
    if user_defined_symbols:
        kwargs["user_defined_symbols"] = list(user_defined_symbols)
    try:
        spm.SentencePieceTrainer.train(**kwargs)
    except RuntimeError as e:
        raise ValueError(f"sentencepiece training with --nbpe {nbpe} failed: {e}") from None
    pieces = [line.split("\t")[0] for line in (out_dir / "bpe.vocab").read_text(encoding="utf-8").splitlines()]
    # The first three pieces are sentencepiece's <unk>, <s>, </s>.
    tokens = [blank, oov] + pieces[3:] + [sos_eos]
    (out_dir / "tokens.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return tokens


def bpe_nlsyms(value: str) -> List[str]:
    """The symbols of ``--bpe_nlsyms``: a file (first column of each line) or a comma-separated list."""
    if not value or value == "none":
        return []
    if Path(value).is_file():
        return [line.split()[0] for line in Path(value).read_text(encoding="utf-8").splitlines() if line.strip()]
    if "/" in value:
        raise ValueError(f"--bpe_nlsyms {value}: no such file (or give the symbols separated by commas)")
    return [sym for sym in value.split(",") if sym]


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--text", type=Path, required=True, help="Kaldi text file (<utt> <transcript>)")
    p.add_argument("--out_dir", type=Path, required=True)
    p.add_argument("--nbpe", type=int, required=True)
    p.add_argument("--bpemode", default="unigram", choices=("unigram", "bpe", "char", "word"))
    p.add_argument("--character_coverage", type=float, default=1.0)
    p.add_argument("--input_sentence_size", type=int, default=100_000_000)
    p.add_argument("--bpe_nlsyms", default="",
                   help="symbols sentencepiece keeps whole (asr.sh --bpe_nlsyms): comma-separated, or a file "
                        "with one per line (its first column)")
    p.add_argument("--blank", default="<blank>")
    p.add_argument("--oov", default="<unk>")
    p.add_argument("--sos_eos", default="<sos/eos>")
    args = p.parse_args(argv)
    try:
        nlsyms = bpe_nlsyms(args.bpe_nlsyms)
        tokens = train_bpe(args.text, args.out_dir, args.nbpe, args.bpemode, args.character_coverage,
                           args.input_sentence_size, nlsyms, args.blank, args.oov, args.sos_eos)
    except (ValueError, OSError) as e:
        sys.exit(f"tokens: {e}")
    print(f"{args.out_dir}/tokens.txt: {len(tokens)} tokens")


if __name__ == "__main__":
    main()
