"""Stage 13: score hypotheses against references into ``score_<type>/result.txt``.

For each token type (``char`` -> ``score_cer``, ``word`` -> ``score_wer``, ``bpe`` ->
``score_ter``) the reference (cleaned with ``--cleaner``) and hypothesis (cleaned with
``--hyp_cleaner``) texts are tokenized with ESPnet's tokenizers (as asr.sh does with
``tokenize_text``) and written as ``ref.trn`` / ``hyp.trn`` (``tokens<TAB>(spk-utt)``).

Scorer: NIST's ``sclite`` when installed (``sclite`` on PATH, Debian's ``/usr/lib/sctk/bin/sclite``
or ``sctk sclite``), run as ESPnet's asr.sh runs it: ``sclite <score_opts> -r ref.trn trn -h
hyp.trn trn -i rm -o all stdout > result.txt``. Without it, a fallback writes ``result.txt`` in
sclite's layout (a ``SYSTEM SUMMARY PERCENTAGES by SPEAKER`` table whose ``Sum/Avg`` row is what
``show_asr_result.sh`` reads, then every sentence's alignment) and says so in its first line.

The fallback aligns with unit costs (minimum edit distance; jiwer, i.e. rapidfuzz's Levenshtein).
sclite's alignment weights substitutions 4 and insertions/deletions 3, so on some sentences it
counts more errors (ref ``a d a d a c d``, hyp ``d d c d d b b b``: 7 rather than 6) or splits them
differently into S, D and I.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import jiwer

from espnet_ssm.recipe.datadir import DataDirError, check_keys, read_table

SCORE_DIRS = {"char": "score_cer", "word": "score_wer", "bpe": "score_ter"}
# First line of a result.txt written without sclite (results.py looks for it).
FALLBACK_NOTE = "NOTE: NIST sclite not found; scored by espnet_ssm.recipe.score (unit-cost alignment)"
DEBIAN_SCLITE = "/usr/lib/sctk/bin/sclite"


def find_sclite() -> Optional[List[str]]:
    """The command that runs NIST sclite here, or None when it is not installed."""
    if shutil.which("sclite"):
        return ["sclite"]
    if Path(DEBIAN_SCLITE).is_file():
        return [DEBIAN_SCLITE]
    if shutil.which("sctk"):
        return ["sctk", "sclite"]
    return None


@dataclass
class Counts:
    """Error counts of a set of sentences (one sentence, one speaker or everything)."""

    snt: int = 0
    wrd: int = 0
    cor: int = 0
    sub: int = 0
    dele: int = 0
    ins: int = 0
    snt_err: int = 0

    def add(self, other: "Counts") -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))

    @property
    def err(self) -> int:
        return self.sub + self.dele + self.ins

    def percentages(self) -> Tuple[float, ...]:
        """Corr, Sub, Del, Ins, Err as % of reference tokens; S.Err as % of sentences."""
        n = self.wrd
        pct = (lambda x: 100.0 * x / n) if n else (lambda x: 0.0 if x == 0 else 100.0)
        serr = 100.0 * self.snt_err / self.snt if self.snt else 0.0
        return (pct(self.cor), pct(self.sub), pct(self.dele), pct(self.ins), pct(self.err), serr)


@dataclass
class Sentence:
    utt: str
    spk: str
    ref: List[str]
    hyp: List[str]
    counts: Counts = field(default_factory=Counts)
    ops: List[Tuple[str, str, str]] = field(default_factory=list)  # (ref tok, hyp tok, C/S/D/I)


def align(ref: Sequence[str], hyp: Sequence[str]) -> Tuple[Counts, List[Tuple[str, str, str]]]:
    """Counts and the token-level alignment of one sentence."""
    ops: List[Tuple[str, str, str]] = []
    if not ref:
        ops = [("", h, "I") for h in hyp]
    else:
        out = jiwer.process_words(" ".join(ref), " ".join(hyp) if hyp else "")
        for chunk in out.alignments[0]:
            r = ref[chunk.ref_start_idx : chunk.ref_end_idx]
            h = hyp[chunk.hyp_start_idx : chunk.hyp_end_idx]
            if chunk.type == "equal":
                ops += [(a, b, "C") for a, b in zip(r, h)]
            elif chunk.type == "substitute":
                ops += [(a, b, "S") for a, b in zip(r, h)]
            elif chunk.type == "delete":
                ops += [(a, "", "D") for a in r]
            else:
                ops += [("", b, "I") for b in h]
    c = Counts(snt=1, wrd=len(ref))
    for _, _, op in ops:
        if op == "C":
            c.cor += 1
        elif op == "S":
            c.sub += 1
        elif op == "D":
            c.dele += 1
        else:
            c.ins += 1
    c.snt_err = int(c.err > 0)
    return c, ops


def summary_table(sentences: Sequence[Sentence], name: str) -> str:
    """sclite's 'SYSTEM SUMMARY PERCENTAGES by SPEAKER' table."""
    by_spk: Dict[str, Counts] = {}
    total = Counts()
    for s in sentences:
        by_spk.setdefault(s.spk, Counts()).add(s.counts)
        total.add(s.counts)
    label_w = max([len("Sum/Avg")] + [len(k) for k in by_spk])

    def row(label: str, counts: Sequence[str], pcts: Sequence[str]) -> str:
        return (f"| {label:<{label_w}} | {counts[0]:>6} {counts[1]:>7} | "
                + " ".join(f"{p:>6}" for p in pcts) + " |")

    def fmt(label: str, c: Counts) -> str:
        return row(label, [str(c.snt), str(c.wrd)], [f"{p:.1f}" for p in c.percentages()])

    def stat_row(label: str, fn) -> str:
        cols = [fn(col) for col in zip(*[[c.snt, c.wrd, *c.percentages()] for c in by_spk.values()])]
        return row(label, [f"{x:.1f}" for x in cols[:2]], [f"{x:.1f}" for x in cols[2:]])

    def sd(col) -> float:
        return statistics.stdev(col) if len(col) > 1 else 0.0

    header = row("SPKR", ["# Snt", "# Wrd"], ["Corr", "Sub", "Del", "Ins", "Err", "S.Err"])
    bars = [i for i, ch in enumerate(header) if ch == "|"]
    width = max(len(header) - 2, len(name) + 2)
    pad = " " * (width - (len(header) - 2))

    def line(text: str) -> str:
        return text[:-1] + pad + "|"

    rule = "".join("+" if i in bars[1:-1] else "-" for i in range(1, len(header) - 1))
    lines = [
        "SYSTEM SUMMARY PERCENTAGES by SPEAKER".center(width + 2),
        "",
        "," + "-" * width + ".",
        "|" + name.center(width) + "|",
        "|" + "-" * width + "|",
        line(header),
        "|" + rule + "-" * len(pad) + "|",
    ]
    for i, spk in enumerate(sorted(by_spk)):
        if i:
            lines.append("|" + rule + "-" * len(pad) + "|")
        lines.append(line(fmt(spk, by_spk[spk])))
    lines += [
        "|" + "=" * width + "|",
        line(fmt("Sum/Avg", total)),
        "|" + "=" * width + "|",
        line(stat_row("Mean", statistics.mean)),
        line(stat_row("S.D.", sd)),
        line(stat_row("Median", statistics.median)),
        "`" + "-" * width + "'",
    ]
    return "\n".join(lines) + "\n"


def alignment_dump(sentences: Sequence[Sentence], name: str) -> str:
    """Every sentence's alignment, sclite 'pralign' style: errors upper case, correct lower case."""
    out = ["", "DUMP OF SYSTEM ALIGNMENT STRUCTURE", "", f"System name:   {name}", ""]
    for s in sentences:
        c = s.counts
        ref_cells, hyp_cells, eval_cells = [], [], []
        for r, h, op in s.ops:
            w = max(len(r), len(h), 1)
            if op == "C":
                r, h = r.lower(), h.lower()
            ref_cells.append((r or "*" * w).ljust(w))
            hyp_cells.append((h or "*" * w).ljust(w))
            eval_cells.append(("" if op == "C" else op).ljust(w))
        out += [
            f"id: ({s.spk}-{s.utt})",
            f"Scores: (#C #S #D #I) {c.cor} {c.sub} {c.dele} {c.ins}",
            "REF:  " + " ".join(ref_cells),
            "HYP:  " + " ".join(hyp_cells),
            "Eval: " + " ".join(eval_cells).rstrip(),
            "",
        ]
    return "\n".join(out)


def build_tokenize(token_type: str, bpemodel: Optional[str], cleaner: str, nlsyms_txt: str):
    """ESPnet's tokenizer + cleaner for scoring (non-linguistic symbols removed for char/word).

    The tokenizer classes are imported directly: ``build_tokenizer`` would also import the
    phoneme tokenizers, whose g2p packages try to download data on import.
    """
    from espnet2.text.cleaner import TextCleaner

    nlsyms = None if nlsyms_txt in ("", "none", None) else nlsyms_txt
    if token_type == "bpe":
        from espnet2.text.sentencepiece_tokenizer import SentencepiecesTokenizer

        if not bpemodel or bpemodel == "none":
            raise ValueError("token type bpe needs --bpemodel")
        tokenizer = SentencepiecesTokenizer(bpemodel)
    elif token_type == "char":
        from espnet2.text.char_tokenizer import CharTokenizer

        tokenizer = CharTokenizer(non_linguistic_symbols=nlsyms, remove_non_linguistic_symbols=True)
    else:
        from espnet2.text.word_tokenizer import WordTokenizer

        tokenizer = WordTokenizer(non_linguistic_symbols=nlsyms, remove_non_linguistic_symbols=True)
    clean = TextCleaner(None if cleaner in ("", "none") else cleaner)
    return lambda text: tokenizer.text2tokens(clean(text))


def score(
    ref_text: Path,
    hyp_text: Path,
    utt2spk: Path,
    out_dir: Path,
    token_types: Sequence[str],
    bpemodel: Optional[str] = None,
    cleaner: str = "none",
    nlsyms_txt: str = "none",
    hyp_cleaner: str = "none",
    scorer: str = "auto",
    score_opts: Sequence[str] = (),
) -> Dict[str, Path]:
    """Write ``<out_dir>/score_<type>/{ref.trn,hyp.trn,result.txt}``; return the result.txt paths.

    ``scorer``: ``sclite`` (an error when it is not installed), ``python`` (the fallback) or
    ``auto`` (sclite when installed). ``score_opts`` are extra sclite options; they need sclite.
    """
    if scorer not in ("auto", "sclite", "python"):
        raise ValueError(f"--scorer must be auto, sclite or python, got {scorer!r}")
    sclite = find_sclite() if scorer != "python" else None
    if sclite is None and scorer == "sclite":
        raise ValueError("--scorer sclite: NIST sclite is not installed (apt-get install sctk)")
    if sclite is None and score_opts:
        raise ValueError(f"--score_opts {' '.join(score_opts)!r} are sclite options, but NIST sclite "
                         "is not installed (apt-get install sctk; or drop --score_opts)")
    check_keys(ref_text, hyp_text)
    refs = read_table(ref_text, allow_empty_value=True)
    hyps = read_table(hyp_text, allow_empty_value=True)
    spk = read_table(utt2spk)
    missing = sorted(set(refs) - set(spk))
    if missing:
        raise DataDirError(f"{utt2spk} lacks utterance(s) {missing[:5]}")
    written = {}
    for token_type in token_types:
        if token_type not in SCORE_DIRS:
            raise ValueError(f"unknown token type {token_type!r} (char, word or bpe)")
        tokenize_ref = build_tokenize(token_type, bpemodel, cleaner, nlsyms_txt)
        tokenize_hyp = build_tokenize(token_type, bpemodel, hyp_cleaner, nlsyms_txt)
        d = out_dir / SCORE_DIRS[token_type]
        d.mkdir(parents=True, exist_ok=True)
        sentences = [Sentence(utt, spk[utt], tokenize_ref(refs[utt]), tokenize_hyp(hyps[utt])) for utt in sorted(refs)]
        for name, attr in (("ref.trn", "ref"), ("hyp.trn", "hyp")):
            with open(d / name, "w", encoding="utf-8") as f:
                for s in sentences:
                    f.write(" ".join(getattr(s, attr)) + f"\t({s.spk}-{s.utt})\n")
        result = d / "result.txt"
        if sclite is not None:
            cmd = [*sclite, *score_opts, "-r", str(d / "ref.trn"), "trn", "-h", str(d / "hyp.trn"), "trn",
                   "-i", "rm", "-o", "all", "stdout"]
            with open(result, "w", encoding="utf-8") as f:
                proc = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                raise ValueError(f"{shlex.join(cmd)} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        else:
            for s in sentences:
                s.counts, s.ops = align(s.ref, s.hyp)
            name = str(d / "hyp.trn")
            result.write_text(FALLBACK_NOTE + "\n\n" + summary_table(sentences, name) + "\n"
                              + alignment_dump(sentences, name), encoding="utf-8")
        written[token_type] = result
    return written


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", type=Path, required=True, help="reference Kaldi text")
    p.add_argument("--hyp", type=Path, required=True, help="hypothesis Kaldi text")
    p.add_argument("--utt2spk", type=Path, required=True)
    p.add_argument("--out_dir", type=Path, required=True, help="score_<type>/ directories go here")
    p.add_argument("--token_types", default="char word", help="space-separated: char word bpe")
    p.add_argument("--bpemodel", default="none")
    p.add_argument("--cleaner", default="none", help="text cleaner of the references")
    p.add_argument("--hyp_cleaner", default="none", help="text cleaner of the hypotheses")
    p.add_argument("--nlsyms_txt", default="none")
    p.add_argument("--scorer", default="auto", help="auto (sclite when installed), sclite or python")
    p.add_argument("--score_opts", default="", help="extra sclite options (asr.sh --score_opts)")
    args = p.parse_args(argv)
    try:
        written = score(args.ref, args.hyp, args.utt2spk, args.out_dir, args.token_types.split(),
                        args.bpemodel, args.cleaner, args.nlsyms_txt, args.hyp_cleaner, args.scorer,
                        shlex.split(args.score_opts))
    except (DataDirError, ValueError) as e:
        sys.exit(f"score: {e}")
    for result in written.values():
        # What asr.sh shows of each result: sclite's header and Sum/Avg lines.
        print(f"Write {result.parent.name[len('score_'):]} result in {result}")
        shown = [line for line in result.read_text(encoding="utf-8").splitlines() if "SPKR" in line or "Avg" in line]
        print("\n".join(shown[:2]))


if __name__ == "__main__":
    main()
