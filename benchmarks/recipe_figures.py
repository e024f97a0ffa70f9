#!/usr/bin/env python3
"""README figures from a finished recipe run: read the run's outputs, print Markdown.

Nothing is trained or decoded here; the figures come from what ``demo.sh`` / ``run.sh`` wrote
under the recipe directory (``--recipe``, default ``egs2/librispeech/asr1``):

    time STAGE_TIMES [--brief]
        the wall time of each step of a demo run (``exp/demo_stage_times_<tag>.tsv``, written by
        demo.sh); ``--brief``: one line, the total and the training stage
    errors --header "CELLS" --row "CELLS = DECODE_DIR" ...
        a table with WER and CER columns; each row's error rates are the ``Err`` of the
        ``Sum/Avg`` line of ``DECODE_DIR/score_{wer,cer}/result.txt`` (stage 13's scoring, the
        numbers of RESULTS.md). CELLS are the leading cells, separated by " | "; DECODE_DIR is
        ``exp/<asr_exp>/<inference_tag>/<test_set>`` and may be a glob matching one directory
    examples DECODE_DIR [--n 3]
        the first reference / hypothesis pairs of a decoding (by utterance id)
    agree DECODE_DIR DECODE_DIR
        on how many utterances two decodings give the same hypothesis
    show FILE
        a Markdown table a recipe script recorded (e.g. ``local/score_longform.sh`` writes
        ``exp/<asr_exp>/longform_wer_<set>.md``)

Every input missing or malformed stops the script with an error naming the file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from espnet_ssm.recipe.datadir import read_table  # noqa: E402
from espnet_ssm.recipe.results import table_row  # noqa: E402
from espnet_ssm.recipe.summary import minutes, read_stage_times  # noqa: E402

RECIPE = REPO / "egs2" / "librispeech" / "asr1"
TRAINING_STEP = "stage 11"


def one_dir(recipe: Path, pattern: str) -> Path:
    """The one directory under ``recipe`` that ``pattern`` (a glob) names."""
    found = sorted(p for p in recipe.glob(pattern) if p.is_dir())
    if len(found) != 1:
        raise FileNotFoundError(f"{recipe / pattern}: expected one decoding directory, found {len(found)}")
    return found[0]


def error_rate(decode_dir: Path, kind: str) -> str:
    """The ``Err`` column (percent, as scored) of ``decode_dir/score_<kind>/result.txt``."""
    result = decode_dir / f"score_{kind}" / "result.txt"
    if not result.is_file():
        raise FileNotFoundError(f"{result} not found: was stage 13 run for this decoding?")
    row = table_row(result, decode_dir.parent)
    if row is None:
        raise ValueError(f"{result}: no Sum/Avg line")
    cells = row.strip("|").split("|")  # dataset, Snt, Wrd, Corr, Sub, Del, Ins, Err, S.Err
    if len(cells) != 9:
        raise ValueError(f"{result}: unexpected Sum/Avg line {row!r}")
    return cells[7]


def errors_table(recipe: Path, header: str, rows: Sequence[str]) -> str:
    """Markdown: the header's cells + WER + CER, one line per ``"CELLS = DECODE_DIR"`` row."""
    head = [c.strip() for c in header.split("|")]
    out = ["| " + " | ".join(head + ["WER", "CER"]) + " |", "|" + "---|" * (len(head) + 2)]
    for spec in rows:
        cells, sep, pattern = spec.rpartition("=")
        cells_list = [c.strip() for c in cells.split("|")]
        if not sep or len(cells_list) != len(head):
            raise ValueError(f"--row {spec!r}: expected {len(head)} cell(s) ' | '-separated, then '= DECODE_DIR'")
        d = one_dir(recipe, pattern.strip())
        rates = [f"{error_rate(d, k)} %" for k in ("wer", "cer")]
        out.append("| " + " | ".join(cells_list + rates) + " |")
    return "\n".join(out)


def time_table(stage_times: Path, brief: bool) -> str:
    """The wall time of each step of a demo run, or (``brief``) its total and training time."""
    rows = read_stage_times(stage_times)
    steps = dict(rows)
    if TRAINING_STEP not in steps or "corpus" not in steps:
        raise ValueError(f"{stage_times}: not a whole demo run (no 'corpus' or '{TRAINING_STEP}' "
                         "line; a later run of some stages only may have replaced it)")
    total = sum(s for _, s in rows)
    if brief:
        return f"{minutes(total)} in all (training, {TRAINING_STEP}: {minutes(steps[TRAINING_STEP])})"
    names = [step.replace("stage ", "") for step, _ in rows]
    return "\n".join([
        f"The run took {minutes(total)} (wall time of each step, in seconds; steps are recipe stages):",
        "",
        "| step | " + " | ".join(names) + " | total |",
        "|---|" + "---|" * (len(rows) + 1),
        "| seconds | " + " | ".join(str(s) for _, s in rows) + f" | {total} |",
    ])


def texts(decode_dir: Path) -> Dict[str, str]:
    """Utterance id -> hypothesis of a decoding directory (its ``text``)."""
    path = decode_dir / "text"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    return read_table(path, allow_empty_value=True)


def examples(decode_dir: Path, n: int) -> str:
    """The first ``n`` REF/HYP pairs as scored (indented: a code block in Markdown)."""
    refs, hyps = (trn(decode_dir / "score_wer" / f"{side}.trn") for side in ("ref", "hyp"))
    lines = []
    for key in sorted(refs)[:n]:
        lines += [f"    REF: {refs[key]}", f"    HYP: {hyps.get(key, '')}"]
    return "\n".join(lines)


def trn(path: Path) -> Dict[str, str]:
    """Key -> text of an sclite ``.trn`` file ("TEXT (key)" lines)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: was stage 13 run for this decoding?")
    out = {}
    for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text, sep, key = line.rstrip().rpartition("(")
        if not sep or not key.endswith(")"):
            raise ValueError(f"{path}:{k}: expected 'TEXT (key)', got {line!r}")
        out[key[:-1]] = text.strip()
    return out


def agreement(a: Path, b: Path) -> Tuple[int, int]:
    """(utterances with the same hypothesis in both decodings, utterances in the first)."""
    ta, tb = texts(a), texts(b)
    return sum(ta[u] == tb.get(u) for u in ta), len(ta)


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", type=Path, default=RECIPE, help="the recipe directory of the run")
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("time")
    t.add_argument("stage_times")
    t.add_argument("--brief", action="store_true")
    e = sub.add_parser("errors")
    e.add_argument("--header", required=True)
    e.add_argument("--row", action="append", required=True)
    x = sub.add_parser("examples")
    x.add_argument("decode_dir")
    x.add_argument("--n", type=int, default=3)
    a = sub.add_parser("agree")
    a.add_argument("decode_dirs", nargs=2)
    s = sub.add_parser("show")
    s.add_argument("file")
    args = p.parse_args(argv)
    recipe = args.recipe
    try:
        if args.what == "time":
            print(time_table(recipe / args.stage_times, args.brief))
        elif args.what == "errors":
            print(errors_table(recipe, args.header, args.row))
        elif args.what == "examples":
            print(examples(one_dir(recipe, args.decode_dir), args.n))
        elif args.what == "agree":
            same, n = agreement(*(one_dir(recipe, d) for d in args.decode_dirs))
            print(f"{same} of {n}")
        else:
            path = recipe / args.file
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found")
            print(path.read_text(encoding="utf-8").strip())
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"recipe_figures: {err}")


if __name__ == "__main__":
    main()
