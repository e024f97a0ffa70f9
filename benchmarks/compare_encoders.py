#!/usr/bin/env python3
"""Encoder families side by side on the demo corpus, trained and decoded by the recipe itself.

For every family (ESPnet's Conformer and E-Branchformer, and ssm_conformer, mh_ssm, stateformer,
speech_mamba) its demo config in ``conf/demo/`` (all at the Conformer's parameter count, within
``TOLERANCE``; checked before anything is trained) is trained with each seed and decoded with
greedy CTC (beam 1, no LM) on the dev and test parts. Everything runs through the recipe's own
entry point, ``egs2/librispeech/asr1/demo.sh``, exactly as a user runs it:

1. once: the demo corpus and recipe stages 1-5 and 10 (data preparation, token list, feature
   statistics), ``demo.sh --stop_stage 10 --use_lm false``;
2. per family and seed: stages 11-13, ``demo.sh --stage 11 --stop_stage 13 --use_lm false
   --asr_config <family config> --asr_tag compare_<family>_seed<N>_ep<E> --asr_args "--seed <N>
   --max_epoch <E>" --inference_config conf/demo/decode_asr_demo.yaml --eval_valid_set true``.

The training budget (epochs, batches, optimiser, frontend, token unit) is the demo's: the
configs share its training settings (tests/test_compare_encoders.py checks) and the token unit
is demo.sh's. The work goes to a copy of the recipe directory made of symbolic links
(``--workdir``), so that its data/, dump/ and exp/ do not touch the recipe's own; a finished run
(scored dev and test) is not trained again, so an interrupted comparison resumes.

Prints the parameter counts and progress on stderr, then on stdout a Markdown table: family,
parameters, seconds per training epoch (wall clock, mean over epochs and seeds), and CER / WER
of every decoded set as mean ± spread over the seeds, where the spread is half the range (every
seed lies within mean ± spread). The table is also written to ``<workdir>/compare_encoders.md``
(a variant's to ``compare_encoders_<variant>.md``).

Usage::

    benchmarks/compare_encoders.sh                       # all families, seeds 0 1, the demo's epochs
    benchmarks/compare_encoders.sh --quick               # smoke test: tiny corpus, 1 epoch, 1 seed
    benchmarks/compare_encoders.sh --families conformer,mh_ssm --seeds 0,1,2 --epochs 6
    benchmarks/compare_encoders.sh --params-only         # the parameter counts alone
    benchmarks/compare_encoders.sh --table-only          # the table from finished runs
    benchmarks/compare_encoders.sh --longform            # long recordings: see below

Long context (``--longform``, trains nothing): every finished run is scored by the recipe's
``local/score_longform.sh <exp> dump/raw/test_synth`` (greedy CTC, no LM, one pass per recording:
the test part's utterances as they are and concatenated per speaker into 45-60 s recordings;
the result goes to ``<exp>/longform_wer_test_synth.md``, and a run scored before is not scored
again), and a second table is printed instead of the first: WER on the utterances that the long
recordings contain, WER on the long recordings, and their difference, mean ± spread over seeds.
With ``--table-only`` it is printed from the recorded results, nothing is decoded.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from espnet_ssm.streaming.longform_wer import SetScore

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "egs2" / "librispeech" / "asr1"
# family -> demo config (relative to the recipe directory); the first is the reference of the
# parameter-count check.
FAMILIES: Dict[str, str] = {
    "conformer": "conf/demo/train_asr_demo_conformer.yaml",
    "e_branchformer": "conf/demo/train_asr_demo_e_branchformer.yaml",
    "ssm_conformer": "conf/demo/train_asr_demo_ssm_conformer.yaml",
    "mh_ssm": "conf/demo/train_asr_demo_ssm.yaml",
    "stateformer": "conf/demo/train_asr_demo_stateformer.yaml",
    "speech_mamba": "conf/demo/train_asr_demo_speech_mamba.yaml",
}
REFERENCE = "conformer"
TOLERANCE = 0.05  # largest relative difference of a family's parameter count from the reference's
DECODE_CONFIG = "conf/demo/decode_asr_demo.yaml"  # greedy CTC: beam 1, CTC weight 1, no LM
LONGFORM_SET = "dump/raw/test_synth"  # long recordings made from it by local/score_longform.sh
# Recipe outputs, not linked into the working copy.
OUTPUTS = ("data", "dump", "exp", "downloads", "demo_corpus")
# Quick mode: utterances per part (the training part first, then every other part of demo.sh).
QUICK_TRAIN, QUICK_OTHER = 40, 10


def default_epochs() -> int:
    """The demo's training epochs (``max_epoch`` of demo.sh's default config)."""
    import yaml

    conf = yaml.safe_load((RECIPE / demo_default("asr_config")).read_text(encoding="utf-8"))
    return int(conf["max_epoch"])


def demo_default(option: str) -> str:
    """The default value of a demo.sh option, as its help text states it."""
    proc = subprocess.run(["./demo.sh", "--help"], cwd=RECIPE, capture_output=True, text=True)
    m = re.search(rf"--{option}\b.*?\(default: ([^)]*)\)", proc.stdout + proc.stderr)
    if not m:
        raise SystemExit(f"demo.sh --help does not state a default for --{option}")
    return m.group(1).strip().strip('"')


def quick_sizes() -> str:
    """``--sizes`` for quick mode: as many numbers as demo.sh has parts, all small."""
    n = len(demo_default("sizes").split())
    return " ".join([str(QUICK_TRAIN)] + [str(QUICK_OTHER)] * (n - 1))


def recipe_copy(workdir: Path) -> Path:
    """``workdir`` as a copy of the recipe directory made of symbolic links (path.sh finds the
    checkout through them), its outputs its own."""
    workdir.mkdir(parents=True, exist_ok=True)
    for item in RECIPE.iterdir():
        link = workdir / item.name
        if item.name not in OUTPUTS and not link.exists() and not link.is_symlink():
            link.symlink_to(item)
    return workdir


def synthetic_token_list(path: Path, size: int = 31) -> Path:
    """A token list of ``size`` entries (the demo's character list has 31)."""
    path.write_text("\n".join(["<blank>", "<unk>"] + [f"t{i}" for i in range(size - 3)] + ["<sos/eos>"]) + "\n")
    return path


def parameter_counts(families: Sequence[str], token_list: Optional[Path] = None,
                     encoder_conf: Sequence[str] = ()) -> Dict[str, int]:
    """Parameters of the whole model each family's demo config builds (SSMASRTask), with
    ``token_list`` (default: a synthetic 31-token list) and the ``key=value`` overrides of its
    ``encoder_conf`` (a variant's)."""
    with contextlib.redirect_stdout(sys.stderr):  # ESPnet's import-time notices
        import espnet_ssm  # noqa: F401
        from espnet_ssm.tasks import SSMASRTask

    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        tokens = token_list or synthetic_token_list(Path(tmp) / "tokens.txt")
        for name in families:
            args = SSMASRTask.get_parser().parse_args(
                ["--config", str(RECIPE / FAMILIES[name]), "--token_list", str(tokens), "--output_dir", tmp,
                 *encoder_conf_args(encoder_conf)]
            )
            counts[name] = sum(p.numel() for p in SSMASRTask.build_model(args).parameters())
    return counts


def encoder_conf_args(encoder_conf: Sequence[str]) -> List[str]:
    """ESPnet's command-line form of ``key=value`` overrides of ``encoder_conf`` (merged into the
    config's)."""
    return [arg for kv in encoder_conf for arg in ("--encoder_conf", kv)]


def variant_suffix(encoder_conf: Sequence[str]) -> str:
    """The tag part of a variant: ``dt_min=0.01`` -> ``_dt_min0.01`` ('' for none)."""
    return "".join("_" + kv.replace("=", "") for kv in encoder_conf)


def trained_token_list(asr_exp: Path, path: Path) -> Path:
    """The token list an experiment was trained with (its config.yaml), written to ``path``."""
    import yaml

    conf = yaml.safe_load((asr_exp / "config.yaml").read_text(encoding="utf-8"))
    path.write_text("\n".join(conf["token_list"]) + "\n")
    return path


def unequal_counts(counts: Dict[str, int], reference: int) -> List[str]:
    """Families whose count differs from ``reference`` by more than ``TOLERANCE``, with why."""
    return [f"{name}: {n} parameters, {n / reference - 1:+.1%} from {REFERENCE}'s {reference}"
            for name, n in counts.items() if abs(n / reference - 1) > TOLERANCE]


def parameter_lines(counts: Dict[str, int], reference: int) -> List[str]:
    return [f"  {name:<15} {n:>10,}  ({n / reference - 1:+.1%})" for name, n in counts.items()]


def seconds(span: str) -> float:
    """ESPnet's epoch time ('1 minute and 7.03 seconds', '59.27 seconds') in seconds."""
    import humanfriendly

    return sum(humanfriendly.parse_timespan(p) for p in re.split(r", | and ", span) if p.strip())


def epoch_seconds(train_log: Path) -> List[float]:
    """Wall-clock training time of each epoch in ESPnet's ``train.log`` (validation excluded)."""
    from espnet_ssm.recipe.progress import RESULT, parse_results

    out = []
    for line in train_log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = RESULT.search(line)
        if m:
            out.append(seconds(parse_results(m.group(2))["train"]["time"]))
    return out


def error_rates(asr_exp: Path, decode_config: str = DECODE_CONFIG) -> Dict[str, Dict[str, float]]:
    """{decoded set: {'cer': %, 'wer': %}} from the result.txt files of one experiment decoded
    with ``decode_config`` and no LM (asr.sh's inference tag ``<config name>_asr_model_<model>``;
    the valid set's results are under ``<inference_tag>/org/``)."""
    from espnet_ssm.recipe.results import table_row

    out: Dict[str, Dict[str, float]] = {}
    for result in sorted(asr_exp.glob(f"{Path(decode_config).stem}_asr_model_*/**/score_[cw]er/result.txt")):
        row = table_row(result, asr_exp)
        if row is None:
            raise SystemExit(f"{result}: no Sum/Avg line")
        err = float(row.strip("|").split("|")[7])  # dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err
        out.setdefault(result.parent.parent.name, {})[result.parent.name[len("score_"):]] = err
    return out


@dataclass
class Run:
    family: str
    seed: int
    tag: str
    epochs: List[float] = field(default_factory=list)
    rates: Dict[str, Dict[str, float]] = field(default_factory=dict)
    label: str = ""  # the table's name of the row: the family, and a variant's overrides


def finished(asr_exp: Path) -> bool:
    """Whether an experiment has scored CER and WER on the dev and at least one test part."""
    rates = error_rates(asr_exp) if asr_exp.is_dir() else {}
    return len([s for s, r in rates.items() if {"cer", "wer"} <= set(r)]) >= 2


def note(text: str, stream=sys.stderr) -> None:
    """Progress and parameter counts (on stderr, so that stdout is the table alone)."""
    print(text, file=stream, flush=True)


def run_logged(cmd: Sequence[str], workdir: Path, log: Path) -> None:
    """A recipe command in ``workdir``, output to ``log``; stops naming the log on failure."""
    start = time.time()
    note(f"  $ {shlex.join(cmd)}   (log: {log})")
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=workdir, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"{cmd[0]} failed (exit {proc.returncode}); last lines of {log}:\n" + "\n".join(tail))
    note(f"    done in {time.time() - start:.0f} s")


def demo(workdir: Path, log: Path, *options: str) -> None:
    """``./demo.sh <options>`` in ``workdir``, output to ``log``."""
    run_logged(["./demo.sh", *options], workdir, log)


def mean_spread(values: Sequence[float], fmt: str) -> str:
    """'m ± s' with s half the range of ``values`` ('m' alone for one value)."""
    if not values:
        return "n/a"
    m = statistics.fmean(values)
    return format(m, fmt) if len(values) == 1 else f"{m:{fmt}} ± {(max(values) - min(values)) / 2:{fmt}}"


def table(runs: Sequence[Run], counts: Dict[str, int]) -> str:
    """The Markdown table of finished runs (each family's row over its seeds)."""
    sets = sorted({s for r in runs for s in r.rates}, key=lambda s: (not s.startswith("dev"), s))
    head = "| family | parameters | seeds | s / epoch | " + " | ".join(f"{s} CER % | {s} WER %" for s in sets) + " |"
    lines = [head, "|---|---:|---:|---:|" + "---:|---:|" * len(sets)]
    for label in dict.fromkeys(r.label or r.family for r in runs):
        mine = [r for r in runs if (r.label or r.family) == label]
        cells = [label, f"{counts[mine[0].family] / 1e6:.3f} M", ",".join(str(r.seed) for r in mine),
                 mean_spread([statistics.fmean(r.epochs) for r in mine], ".0f")]
        for s in sets:
            for unit in ("cer", "wer"):
                cells.append(mean_spread([r.rates[s][unit] for r in mine if unit in r.rates.get(s, {})], ".1f"))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    seeds = ", ".join(str(s) for s in sorted({r.seed for r in runs}))
    lines.append(f"Greedy CTC (beam 1), no LM; seeds {seeds}; mean ± half the range over a row's seeds; seconds "
                 "per epoch: wall clock of the training part of an epoch (each seed's mean over its epochs).")
    return "\n".join(lines)


def longform_result(asr_exp: Path) -> Path:
    return asr_exp / f"longform_wer_{Path(LONGFORM_SET).name}.md"


def read_longform(path: Path) -> Tuple[SetScore, SetScore]:
    """(the utterances the long recordings hold, the long recordings) from the table that
    ``local/score_longform.sh`` recorded."""
    from espnet_ssm.streaming.longform_wer import read_table, same_utterances_name

    name = Path(LONGFORM_SET).name
    rows = {score.name: score for score in read_table(path)}
    keys = (same_utterances_name(name), f"{name}_long45")
    missing = [k for k in keys if k not in rows]
    if missing:
        raise SystemExit(f"{path}: no row for {', '.join(missing)}")
    return rows[keys[0]], rows[keys[1]]


def score_longform(workdir: Path, asr_exp: Path, log: Path) -> None:
    """``local/score_longform.sh <exp> <LONGFORM_SET>`` in ``workdir``, with this interpreter."""
    run_logged(["local/score_longform.sh", str(asr_exp.relative_to(workdir)), LONGFORM_SET,
                "valid.loss.ave.pth", sys.executable], workdir, log)


def longform_table(runs: Sequence[Run], scores: Dict[str, Tuple[SetScore, SetScore]]) -> str:
    """The Markdown table of the long-form scores (each family's row over its seeds)."""
    lines = ["| family | seeds | utterances WER % | 45-60 s recordings WER % | recordings - utterances (points) |",
             "|---|---:|---:|---:|---:|"]
    for label in dict.fromkeys(r.label or r.family for r in runs):
        scored = [r for r in runs if (r.label or r.family) == label and r.tag in scores]
        if not scored:
            continue
        mine = [scores[r.tag] for r in scored]
        seeds = ",".join(str(r.seed) for r in scored)
        utt = [u.wer for u, _ in mine]
        rec = [r.wer for _, r in mine]
        diff = [b - a for a, b in zip(utt, rec)]
        lines.append(f"| {label} | {seeds} | {mean_spread(utt, '.1f')} | {mean_spread(rec, '.1f')} | "
                     f"{mean_spread(diff, '.1f')} |")
    some_utt, some_rec = next(iter(scores.values()))
    lines += ["", f"{Path(LONGFORM_SET).name}: greedy CTC, no LM, every recording in one pass; the long "
              f"recordings are the test utterances concatenated per speaker (mean {some_rec.mean_seconds:.1f} s; "
              f"{some_utt.words} reference words, the same in both columns); mean ± half the range over "
              "a row's seeds."]
    return "\n".join(lines)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default=",".join(FAMILIES),
                   help=f"comma-separated, from {', '.join(FAMILIES)} (default: all)")
    p.add_argument("--seeds", default="0,1", help="comma-separated training seeds (default: 0,1)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo's)")
    p.add_argument("--nj", type=int, default=2, help="parallel jobs of data preparation and decoding")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: {QUICK_TRAIN} training and {QUICK_OTHER} dev/test utterances, 1 epoch, "
                        "the first seed (own default workdir)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="recipe copy holding data/, dump/, exp/ (default: benchmarks/results/compare_encoders, "
                        "or compare_encoders_quick with --quick)")
    p.add_argument("--params-only", action="store_true", help="print the parameter counts and stop")
    p.add_argument("--table-only", action="store_true", help="print the table of finished runs, train nothing")
    p.add_argument("--encoder_conf", action="append", default=[], metavar="KEY=VALUE",
                   help="a variant: override this key of every family's encoder_conf (repeatable); its runs "
                        "have their own tags (e.g. compare_ssm_conformer_dt_min0.01_seed0_ep4) and table rows")
    p.add_argument("--longform", action="store_true",
                   help="score the finished runs on long recordings (unless --table-only; trains nothing) "
                        "and print that table instead")
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise SystemExit(f"--families: unknown {unknown or 'empty list'}; choose from {', '.join(FAMILIES)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    epochs = args.epochs if args.epochs is not None else (1 if args.quick else default_epochs())
    if args.quick:
        seeds = seeds[:1]
    workdir = (args.workdir or REPO / "benchmarks" / "results"
               / ("compare_encoders_quick" if args.quick else "compare_encoders")).resolve()

    bad_kv = [kv for kv in args.encoder_conf if "=" not in kv or not kv.split("=", 1)[0]]
    if bad_kv:
        raise SystemExit(f"--encoder_conf: expected KEY=VALUE, got {bad_kv}")
    reference = parameter_counts([REFERENCE])[REFERENCE]
    counts = parameter_counts(families, encoder_conf=args.encoder_conf)
    note("Parameters (with a 31-token list):\n" + "\n".join(parameter_lines(counts, reference)),
         sys.stdout if args.params_only else sys.stderr)
    bad = unequal_counts(counts, reference)
    if bad:
        raise SystemExit(f"parameter counts differ by more than {TOLERANCE:.0%}:\n  " + "\n  ".join(bad))
    if args.params_only:
        return

    recipe_copy(workdir)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    common = ["--use_lm", "false", "--nj", str(args.nj)]
    if args.quick:
        common += ["--sizes", quick_sizes()]
    # seed-major: an interrupted comparison has every family at the first seed before any second
    suffix = variant_suffix(args.encoder_conf)
    label = (lambda f: f"{f} ({', '.join(args.encoder_conf)})") if args.encoder_conf else (lambda f: f)
    runs = [Run(f, s, f"compare_{f}{suffix}_seed{s}_ep{epochs}", label=label(f)) for s in seeds for f in families]
    if not args.table_only and not args.longform:
        note(f"Data preparation in {workdir}")
        demo(workdir, logs / "prepare.log", "--stop_stage", "10", "--asr_config", FAMILIES[families[0]], *common)
        for run in runs:
            if finished(workdir / "exp" / f"asr_{run.tag}"):
                note(f"{run.tag}: finished before, kept")
                continue
            note(f"{run.family}, seed {run.seed}, {epochs} epoch(s)")
            demo(workdir, logs / f"{run.tag}.log", "--stage", "11", "--stop_stage", "13",
                 "--asr_config", FAMILIES[run.family], "--asr_tag", run.tag,
                 "--asr_args", shlex.join(["--seed", str(run.seed), "--max_epoch", str(epochs),
                                           *encoder_conf_args(args.encoder_conf)]),
                 "--inference_config", DECODE_CONFIG, "--eval_valid_set", "true", *common)
    done = []
    for run in runs:
        asr_exp = workdir / "exp" / f"asr_{run.tag}"
        if not finished(asr_exp):
            note(f"{run.tag}: not finished ({asr_exp}), left out of the table")
            continue
        run.epochs, run.rates = epoch_seconds(asr_exp / "train.log"), error_rates(asr_exp)
        done.append(run)
    if not done:
        raise SystemExit(f"no finished run under {workdir / 'exp'}")
    if args.longform:
        scores = {}
        for run in done:
            asr_exp = workdir / "exp" / f"asr_{run.tag}"
            if not longform_result(asr_exp).is_file() and not args.table_only:
                note(f"{run.tag}: long-form scoring")
                score_longform(workdir, asr_exp, logs / f"{run.tag}_longform.log")
            if longform_result(asr_exp).is_file():
                scores[run.tag] = read_longform(longform_result(asr_exp))
            else:
                note(f"{run.tag}: not scored on long recordings, left out of the table")
        if not scores:
            raise SystemExit("no run scored on long recordings")
        text = longform_table(done, scores)
        (workdir / f"compare_encoders{suffix}_longform.md").write_text(text + "\n")
        print(text)
        return
    with tempfile.TemporaryDirectory() as tmp:  # the counts of the models as trained
        tokens = trained_token_list(workdir / "exp" / f"asr_{done[0].tag}", Path(tmp) / "tokens.txt")
        counts = parameter_counts(families, tokens, args.encoder_conf)
    text = table(done, counts)
    (workdir / f"compare_encoders{suffix}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
