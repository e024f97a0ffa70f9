"""The demo's closing report: error-rate tables, example transcripts and where the outputs are."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_ssm.recipe.datadir import read_table


def tables(results_md: Path) -> Dict[str, List[str]]:
    """'WER' / 'CER' / 'TER' -> the Markdown table lines of the first experiment in RESULTS.md."""
    out: Dict[str, List[str]] = {}
    current = None
    for line in results_md.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^### (WER|CER|TER)$", line)
        if m:
            current = m.group(1)
            if current in out:  # a second experiment section starts: keep the first
                break
            out[current] = []
        elif line.startswith("## "):
            current = None if out else current
        elif current and line.startswith("|"):
            out[current].append(line)
    return out


def examples(ref: Path, hyp: Path, n: int) -> List[str]:
    refs = read_table(ref, allow_empty_value=True)
    hyps = read_table(hyp, allow_empty_value=True)
    lines = []
    for utt in sorted(refs)[:n]:
        mark = "" if refs[utt] == hyps.get(utt, "") else "   (differs)"
        lines += [f"  {utt}{mark}", f"    REF: {refs[utt]}", f"    HYP: {hyps.get(utt, '')}"]
    return lines


def minutes(seconds: float) -> str:
    """125 -> '2 min 5 s'."""
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def read_stage_times(stage_times: Path) -> List[Tuple[str, int]]:
    """(step, seconds) pairs from a file of '<step>\\t<seconds>' lines (demo.sh writes one)."""
    rows = []
    for k, line in enumerate(stage_times.read_text(encoding="utf-8").splitlines(), 1):
        step, sep, seconds = line.rpartition("\t")
        if not sep or not seconds.strip().isdigit():
            raise ValueError(f"{stage_times}:{k}: expected '<step>\\t<seconds>', got {line!r}")
        rows.append((step, int(seconds)))
    return rows


def time_table(stage_times: Path) -> List[str]:
    """Lines of a wall-time table from a file of '<step>\\t<seconds>' lines."""
    rows = read_stage_times(stage_times)
    width = max([len(step) for step, _ in rows] + [len("total")])
    lines = [f"  {step:<{width}}  {minutes(sec):>12}" for step, sec in rows]
    return lines + [f"  {'total':<{width}}  {minutes(sum(sec for _, sec in rows)):>12}"]


def report(asr_exp: Path, data_feats: Path, elapsed: float, n: int = 5,
           stage_times: Optional[Path] = None, decode_config: Optional[Path] = None) -> str:
    """The closing report; ``stage_times`` adds a wall-time table (see :func:`time_table`);
    ``decode_config`` gives the search settings of the Speech2Text example (default: greedy CTC)."""
    results = asr_exp / "RESULTS.md"
    if not results.is_file():
        raise FileNotFoundError(f"{results} not found: did stage 13 run?")
    out = ["", "=" * 78, f"Demo finished in {minutes(elapsed)}", ""]
    if stage_times is not None:
        out += [f"Wall time per step ({stage_times}):"] + time_table(stage_times) + [""]
    for kind, name in (("WER", "Word error rate"), ("CER", "Character error rate")):
        rows = tables(results).get(kind, [])
        if rows:
            out += [f"{name} ({results}):"] + ["  " + r for r in rows] + [""]
    for decode_dir in sorted(p.parent for p in asr_exp.glob("*/*/text")):
        test_set = decode_dir.name
        ref = data_feats / test_set / "text"
        if ref.is_file():
            out += [f"Examples from {test_set} ({decode_dir}/text):"] + examples(ref, decode_dir / "text", n) + [""]
        rtf = decode_dir / "logdir" / "calculate_rtf.log"
        if rtf.is_file():
            out.append(f"Decoding speed ({rtf}): " + ", ".join(rtf.read_text().strip().splitlines()))
            out.append("")
    zips = sorted(asr_exp.glob("*.zip"))
    for z in zips:
        out.append(f"Packed model:    {z} ({z.stat().st_size / 1e6:.1f} MB)")
    images = asr_exp / "images"
    if images.is_dir():
        pngs = {p.name for p in images.glob("*.png")}
        main = [p for p in ("loss.png", "cer_ctc.png", "acc.png", "optim0_lr0.png") if p in pngs]
        out.append(f"Training curves: {images}/ ({', '.join(main)} and {len(pngs) - len(main)} more)")
    if (asr_exp / "tensorboard").is_dir():
        out.append(f"TensorBoard:     tensorboard --logdir {asr_exp / 'tensorboard'}")
    out.append(f"Training log:    {asr_exp / 'train.log'}")
    if zips:
        out += [
            "",
            "Decode your own 16 kHz wav with the packed model (ESPnet's Speech2Text):",
            "  import soundfile, espnet_ssm  # espnet_ssm first: it registers the encoder",
            "  from espnet2.bin.asr_inference import Speech2Text",
            "  from espnet2.main_funcs.pack_funcs import unpack",
            f"  s2t = Speech2Text(**unpack('{zips[0]}', 'unpacked'), {search_settings(decode_config)})",
            "  print(s2t(soundfile.read('my.wav')[0])[0][0])",
        ]
    out.append("=" * 78)
    return "\n".join(out) + "\n"


def search_settings(decode_config: Optional[Path]) -> str:
    """'ctc_weight=1.0, beam_size=10, ...' from a decoding config (the packed zip may hold an LM,
    which Speech2Text would otherwise weigh with its default lm_weight)."""
    if decode_config is None:
        return "ctc_weight=1.0, beam_size=1"
    import yaml

    conf = yaml.safe_load(decode_config.read_text()) or {}
    keys = ("ctc_weight", "beam_size", "lm_weight", "penalty")
    return ", ".join(f"{k}={conf[k]}" for k in keys if k in conf)


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--asr_exp", type=Path, required=True)
    p.add_argument("--data_feats", type=Path, default=Path("dump/raw"))
    p.add_argument("--elapsed", type=float, default=0.0, help="seconds the demo took")
    p.add_argument("--n_examples", type=int, default=5)
    p.add_argument("--stage_times", type=Path, default=None,
                   help="file of '<step>\\t<seconds>' lines to show as a wall-time table")
    p.add_argument("--decode_config", type=Path, default=None, help="the decoding config (search settings)")
    args = p.parse_args(argv)
    try:
        sys.stdout.write(report(args.asr_exp, args.data_feats, args.elapsed, args.n_examples, args.stage_times,
                                args.decode_config))
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"summary: {e}")


if __name__ == "__main__":
    main()
