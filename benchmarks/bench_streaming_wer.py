#!/usr/bin/env python3
"""WER / CER of a trained causal model decoded chunk by chunk, float32 and int8. Prints Markdown.

    python benchmarks/bench_streaming_wer.py --exp_dir exp/<asr_exp> --data dump/raw/test_synth \\
        [--chunks_ms 0 160 640] [--weights float32 int8 int8-conv] [--limit N]

Paths are relative to the recipe directory (``--recipe``, default ``egs2/librispeech/asr1``: the
paths in a model's ``config.yaml`` are). Every recording of ``--data`` (``wav.scp`` and ``text``, e.g. the recipe's
``dump/raw/test_synth``) is recognised by :class:`~espnet_ssm.streaming.StreamingSpeech2Text`
with the model ``EXP/config.yaml`` + ``EXP/<--model_file>`` (CTC greedy, or the transducer's
search with ``--beam_size``), fed in chunks of each ``--chunks_ms`` (0: the whole utterance in one
call), with float32 weights and with ESPnet's int8 dynamic quantization (``int8``:
``--quantize_modules Linear``; ``int8-conv``: also the subsampling's ``Conv2d``). One row per
(weights, chunk): WER and CER with jiwer, how many hypotheses equal those of the whole-utterance
float32 decoding, and the real-time factor (compute time / audio duration, one CPU thread unless
``--threads``).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import jiwer
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RECIPE = REPO / "egs2" / "librispeech" / "asr1"

QUANTIZE = {
    "float32": {},
    "int8": {"quantize_asr_model": True, "quantize_modules": ["Linear"]},
    "int8-conv": {"quantize_asr_model": True, "quantize_modules": ["Linear", "Conv2d"]},
}


def decode(s2t, recordings: List[Tuple[str, torch.Tensor]], chunk_samples: int) -> Tuple[Dict[str, str], float]:
    """Hypotheses by key and the compute seconds of decoding every recording."""
    hyps, seconds = {}, 0.0
    for key, speech in recordings:
        start = time.perf_counter()
        hyps[key] = s2t.recognize(speech, chunk_samples)[0].text or ""
        seconds += time.perf_counter() - start
    return hyps, seconds


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", type=Path, default=RECIPE, help="the directory the paths start from")
    p.add_argument("--exp_dir", type=Path, required=True, help="has config.yaml")
    p.add_argument("--model_file", default="valid.loss.ave.pth", help="in --exp_dir")
    p.add_argument("--data", type=Path, required=True, help="data directory: wav.scp and text")
    p.add_argument("--chunks_ms", type=int, nargs="+", default=[0, 160, 640])
    p.add_argument("--weights", nargs="+", default=list(QUANTIZE), choices=list(QUANTIZE))
    p.add_argument("--beam_size", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help="only the first N recordings (0: all)")
    args = p.parse_args(argv)
    os.chdir(args.recipe)
    for path in (args.exp_dir / "config.yaml", args.exp_dir / args.model_file,
                 args.data / "wav.scp", args.data / "text"):
        if not path.is_file():
            p.error(f"{path} not found")
    torch.set_num_threads(args.threads)
    with contextlib.redirect_stdout(sys.stderr):  # ESPnet's import-time notices, not the table
        import espnet_ssm  # noqa: F401
        from espnet_ssm.recipe.datadir import read_table
        from espnet_ssm.streaming import StreamingSpeech2Text
        from espnet_ssm.streaming.io import read_recordings

    refs = read_table(args.data / "text", allow_empty_value=True)
    recordings: List[Tuple[str, torch.Tensor]] = []
    whole: Optional[Dict[str, str]] = None  # whole-utterance float32 hypotheses
    rows = []
    for weights in args.weights:
        s2t = StreamingSpeech2Text(args.exp_dir / "config.yaml", args.exp_dir / args.model_file,
                                   beam_size=args.beam_size, **QUANTIZE[weights])
        if not recordings:
            recordings = [(k, x) for k, x, _ in read_recordings(str(args.data / "wav.scp"), s2t.sample_rate)]
            recordings = recordings[: args.limit] if args.limit else recordings
            missing = [k for k, _ in recordings if k not in refs]
            if missing:
                p.error(f"{args.data / 'text'}: no transcript for {missing[:3]}")
            audio_s = sum(x.numel() for _, x in recordings) / s2t.sample_rate
        keys = [k for k, _ in recordings]
        truth = [refs[k] for k in keys]
        for ms in args.chunks_ms:
            hyps, seconds = decode(s2t, recordings, s2t.sample_rate * ms // 1000)
            said = [hyps[k] for k in keys]
            if weights == "float32" and ms == 0:
                whole = hyps
            same = "—" if whole is None or hyps is whole else f"{sum(hyps[k] == whole[k] for k in keys)} / {len(keys)}"
            chunk = "whole utterance" if ms == 0 else f"{ms} ms"
            rows.append(f"| {chunk} | {weights} | {100 * jiwer.wer(truth, said):.2f} % | "
                        f"{100 * jiwer.cer(truth, said):.2f} % | {same} | {seconds / audio_s:.3f} |")
            print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    print(f"{len(recordings)} recordings, {audio_s:.0f} s of audio, {args.exp_dir.name}/{args.model_file}, "
          f"{'greedy search' if args.beam_size == 1 else f'beam {args.beam_size}'}, {args.threads} CPU thread(s):\n")
    print("| chunks | weights | WER | CER | hypotheses equal to whole-utterance float32 | RTF |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
