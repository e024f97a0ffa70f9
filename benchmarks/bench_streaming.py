#!/usr/bin/env python3
"""Streaming and long-form benchmarks (issue 6). Prints markdown tables.

    python benchmarks/bench_streaming.py streaming [--seconds 30] [--chunks_ms 160 640]
        [--weights float32 int8 int8-conv] [--paths eager captured] [--repeats 3]
    python benchmarks/bench_streaming.py longform [--minutes 1 10 60] [--mem_cap_gb 12]
        [--time_cap_s 1800] [--encoders mh_ssm_causal conformer ...]

streaming: RTF and per-chunk latency of StreamingSpeech2Text (CTC greedy) for the causal
encoders on one CPU thread, with float32 weights and with int8 dynamic quantization
(``quantize_asr_model``; ``int8``: Linear layers and pointwise convolutions, ESPnet's default
``--quantize_modules Linear``; ``int8-conv``: also the subsampling's Conv2d, ``--quantize_modules
Linear Conv2d``), each through the eager path and with ``captured`` chunk steps
(``use_captured_chunks``: the blocks replayed from a trace once the chunk and state shapes
repeat; the recogniser's default); ``--paths``. Both run S4D chunks through the compiled
operator (``torch.ops.espnet_ssm.s4d_planar_steps``) when it is built. Each cell is the median
of ``--repeats`` streams (by RTF; its latencies with it). Latency per chunk is the compute time of
one call (the audio
itself adds the chunk duration plus the look-ahead: half an STFT window and the subsampling's
right context).

longform: one-pass recognition (LongFormSpeech2Text, CTC greedy) of 1/10/60-minute recordings
for each encoder at equal size (12 blocks, d = 256, 4 heads, 1024 feed-forward units), ESPnet's
Conformer included (through its own offline path, which is O(T^2)). Each run is a separate
process with an address-space cap (``--mem_cap_gb``) and a time cap; peak memory is the
process's maximum resident set size. Runs that hit a cap are reported as such.

WER of a trained model on original utterances vs the concatenated 45-60 s recordings:
``python -m espnet_ssm.streaming.longform_wer`` (see there).

Models are randomly initialised for timing (speed does not depend on the weights); the audio is
synthetic (tones in noise).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
FS = 16000
VOCAB = 5000  # LibriSpeech's BPE vocabulary size: the CTC head's cost is realistic

SIZE = dict(output_size=256, num_blocks=12, input_layer="conv2d")
COMMON = dict(SIZE, linear_units=1024)
ENCODERS: Dict[str, Tuple[str, dict]] = {
    "mh_ssm (causal)": ("mh_ssm", dict(COMMON, num_heads=4, causal=True, bidirectional=False)),
    "mh_ssm (bidirectional)": ("mh_ssm", dict(COMMON, num_heads=4)),
    "ssm_conformer (causal, left 64)": (
        "ssm_conformer", dict(COMMON, attention_heads=4, causal=True, attention_left_context=64)),
    "ssm_conformer (full attention)": ("ssm_conformer", dict(COMMON, attention_heads=4)),
    "stateformer": ("stateformer", dict(COMMON, attention_heads=4, ssm_heads=4)),
    "speech_mamba": ("speech_mamba", dict(SIZE, attention_heads=4)),  # no feed-forward
    "conformer (ESPnet)": ("conformer", dict(
        COMMON, attention_heads=4, normalize_before=True, macaron_style=True,
        rel_pos_type="latest", pos_enc_layer_type="rel_pos",
        selfattention_layer_type="rel_selfattn", activation_type="swish",
        use_cnn_module=True, cnn_module_kernel=31)),
}


def tuning_conf(name: str, **overrides) -> Tuple[str, dict]:
    """(encoder, encoder_conf) of a paper-scale config in conf/tuning, with overrides."""
    import yaml

    conf = yaml.safe_load((REPO / "conf" / "tuning" / f"train_asr_{name}.yaml").read_text())
    return conf["encoder"], dict(conf["encoder_conf"], **overrides)


ENCODERS.update({
    "mh_ssm (causal, paper size)": tuning_conf("mh_ssm", causal=True, bidirectional=False),
    "ssm_conformer_online (paper size, left 64)": tuning_conf(
        "ssm_conformer_online", attention_left_context=64),
    "ssm_conformer_online (paper size, unlimited left)": tuning_conf("ssm_conformer_online"),
})
STREAMING = ["mh_ssm (causal)", "ssm_conformer (causal, left 64)", "mh_ssm (causal, paper size)",
             "ssm_conformer_online (paper size, left 64)"]


def build_model(encoder: str, encoder_conf: dict, workdir: Path):
    """A randomly initialised ASR model (CTC only, global MVN) built by SSMASRTask."""
    return build_model_from_conf(dict(
        encoder=encoder, encoder_conf=encoder_conf, decoder="none", model_conf=dict(ctc_weight=1.0),
        frontend_conf=dict(n_fft=512, hop_length=160),
    ), workdir)


def build_model_from_conf(conf: dict, workdir: Path):
    """A randomly initialised model of the training config ``conf`` (SpecAugment dropped) with a
    ``VOCAB``-token list and global MVN, built by SSMASRTask; in eval mode."""
    import numpy as np
    import yaml

    from espnet_ssm.tasks import SSMASRTask

    workdir.mkdir(parents=True, exist_ok=True)
    tokens = workdir / "tokens.txt"
    tokens.write_text("\n".join(["<blank>", "<unk>"] + [f"t{i}" for i in range(VOCAB - 3)]
                                + ["<sos/eos>"]) + "\n")
    stats = workdir / "feats_stats.npz"
    np.savez(stats, count=np.array(1000.0), sum=np.full(80, -5000.0),
             sum_square=np.full(80, 34000.0))
    conf = dict(conf, normalize="global_mvn", normalize_conf=dict(stats_file=str(stats)),
                token_list=str(tokens), token_type="word")
    conf.pop("specaug", None)
    (workdir / "train.yaml").write_text(yaml.safe_dump(conf))
    SSMASRTask.main(cmd=["--config", str(workdir / "train.yaml"), "--dry_run", "true",
                         "--iterator_type", "none", "--output_dir", str(workdir / "exp")])
    model, _ = SSMASRTask.build_model_from_file(workdir / "exp" / "config.yaml", None, "cpu")
    return model.eval()


def time_stream(s2t, audio, chunk: int, **call_options) -> Tuple[float, List[float]]:
    """Feed ``audio`` to the recogniser in chunks of ``chunk`` samples (after a 5 s warm-up
    stream): (seconds in all, per-chunk latencies in ms)."""
    # warm-up (compilation, traces): long enough for a 64-frame attention context to fill
    s2t.recognize(audio[: FS * 5], chunk)
    lat = []
    t0 = time.perf_counter()
    n = audio.numel()
    for start in range(0, n, chunk):
        c0 = time.perf_counter()
        s2t(audio[start : start + chunk], is_final=start + chunk >= n, **call_options)
        lat.append(1000 * (time.perf_counter() - c0))
    return time.perf_counter() - t0, lat


def synthetic_audio(seconds: float, seed: int = 0):
    """Tones in noise, float32 in [-1, 1]."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n = int(seconds * FS)
    out = torch.empty(n)
    step = FS * 60  # build it a minute at a time: no big temporaries
    for a in range(0, n, step):
        t = torch.arange(a, min(a + step, n), dtype=torch.float64) / FS
        tone = 0.2 * torch.sin(2 * math.pi * (300 + 200 * torch.sin(0.5 * t)) * t)
        out[a : a + len(t)] = (tone + 0.05 * torch.randn(len(t), generator=g,
                                                          dtype=torch.float64)).float()
    return out


def percentile(xs: List[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def bench_streaming(args: argparse.Namespace) -> None:
    import torch

    from espnet_ssm.encoders.chunk_capture import use_captured_chunks
    from espnet_ssm.streaming import StreamingSpeech2Text

    torch.set_num_threads(1)
    audio = synthetic_audio(args.seconds)
    # the README's table: one row per encoder, weight type and path, a column pair per chunk
    # size (RTF below 0.1 in bold); rows are printed as they are measured
    head = "| encoder | params | weights | path | " + " | ".join(
        f"{ms} ms chunks: RTF | latency mean / p95" for ms in args.chunks_ms) + " |"
    print(head)
    print("|" + "---|" * (4 + 2 * len(args.chunks_ms)), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.encoders or STREAMING:
            encoder, conf = ENCODERS[name]
            model = build_model(encoder, conf, Path(tmp) / encoder)
            params = f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M"
            for w, weights in enumerate(args.weights):  # one (quantized) copy per weight type
                s2t = StreamingSpeech2Text(
                    asr_model=model, token_type="word", beam_size=1,
                    quantize_asr_model=weights != "float32",
                    quantize_modules=["Linear", "Conv2d"] if weights == "int8-conv" else ["Linear"])
                for i, path in enumerate(args.paths):
                    use_captured_chunks(s2t.asr_model.encoder, path == "captured")
                    cells = []
                    for ms in args.chunks_ms:
                        # the median of --repeats streams: the shared machine's speed drifts
                        runs = sorted((time_stream(s2t, audio, FS * ms // 1000)
                                       for _ in range(args.repeats)), key=lambda r: r[0])
                        seconds, lat = runs[len(runs) // 2]
                        rtf = f"{seconds / args.seconds:.3f}"
                        cells += [f"**{rtf}**" if float(rtf) < 0.1 else rtf,
                                  f"{sum(lat) / len(lat):.1f} / {percentile(lat, 0.95):.1f} ms"]
                    first = w == 0 and i == 0
                    print(f"| {name if first else ''} | {params if first else ''} | "
                          f"{weights if i == 0 else ''} | {path} | " + " | ".join(cells) + " |",
                          flush=True)


def longform_worker(name: str, minutes: float, mode: str, threads: int) -> None:
    """One long-form run in this process; prints a JSON line."""
    import torch

    from espnet_ssm.streaming import LongFormSpeech2Text

    torch.set_num_threads(threads)
    encoder, conf = ENCODERS[name]
    result = {"status": "ok"}
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(encoder, conf, Path(tmp))
        audio = synthetic_audio(60 * minutes)
        try:
            s2t = LongFormSpeech2Text(asr_model=model, token_type="word", mode=mode)
            result["mode"] = s2t.mode
            t0 = time.perf_counter()
            rec = s2t(audio)
            result["seconds"] = time.perf_counter() - t0
            result["tokens"] = len(rec.token_ids)
        except (MemoryError, RuntimeError) as e:  # the allocator's "can't allocate memory"
            if "memory" not in str(e).lower() and not isinstance(e, MemoryError):
                raise
            result = {"status": "out of memory", "error": str(e).splitlines()[0][:120]}
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps(result), flush=True)


def bench_longform(args: argparse.Namespace) -> None:
    print(f"\n### Long-form, one pass (CTC greedy, {args.threads} CPU thread(s); caps: "
          f"{args.mem_cap_gb:g} GB address space, {args.time_cap_s} s per run)\n")
    print("| encoder | mode | " + " | ".join(f"{m:g} min: time / peak mem" for m in args.minutes)
          + " | time(60)/time(10) |")
    print("|---|---|" + "---|" * len(args.minutes) + "---|")
    for name in args.encoders or list(ENCODERS):
        cells, times, mode = [], {}, "?"
        failed = False
        for m in args.minutes:
            if failed:  # a longer recording cannot fare better
                cells.append("not run")
                continue
            res = run_capped(name, m, args)
            print(f"<!-- {name}, {m:g} min: {json.dumps(res)} -->", flush=True)
            mode = res.get("mode", mode)
            if res["status"] == "ok":
                times[m] = res["seconds"]
                cells.append(f"{res['seconds']:.1f} s (RTF {res['seconds'] / (60 * m):.3f}) / "
                             f"{res['peak_rss_gb']:.2f} GB")
            else:
                failed = True
                cells.append(f"{res['status']} ({res.get('peak_rss_gb', float('nan')):.1f} GB)")
        ratio = f"{times[60] / times[10]:.2f}" if 60 in times and 10 in times else "n/a"
        print(f"| {name} | {mode} | " + " | ".join(cells) + f" | {ratio} |", flush=True)


def run_capped(name: str, minutes: float, args: argparse.Namespace) -> dict:
    cap = int(args.mem_cap_gb * 2**30)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    cmd = [sys.executable, __file__, "_worker", "--name", name, "--minutes", str(minutes),
           "--mode", args.mode, "--threads", str(args.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit,
                              timeout=args.time_cap_s, env=env)
    except subprocess.TimeoutExpired:
        return {"status": f"over {args.time_cap_s} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:100]
    return {"status": f"failed: {tail}"}


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("streaming")
    s.add_argument("--seconds", type=float, default=30.0)
    s.add_argument("--repeats", type=int, default=3,
                   help="streams per cell; the median one (by RTF) is reported")
    s.add_argument("--chunks_ms", type=int, nargs="+", default=[160, 640])
    s.add_argument("--weights", nargs="+", default=["float32", "int8", "int8-conv"],
                   choices=["float32", "int8", "int8-conv"])
    s.add_argument("--encoders", nargs="+", choices=list(ENCODERS))
    s.add_argument("--paths", nargs="+", default=["eager", "captured"],
                   choices=["eager", "captured"])
    lf = sub.add_parser("longform")
    lf.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    lf.add_argument("--mem_cap_gb", type=float, default=12.0)
    lf.add_argument("--time_cap_s", type=int, default=1800)
    lf.add_argument("--threads", type=int, default=1)
    lf.add_argument("--mode", default="auto", choices=["auto", "stream", "offline"])
    lf.add_argument("--encoders", nargs="+", choices=list(ENCODERS))
    w = sub.add_parser("_worker")
    w.add_argument("--name", required=True)
    w.add_argument("--minutes", type=float, required=True)
    w.add_argument("--mode", default="auto")
    w.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.cmd == "streaming":
        bench_streaming(args)
    elif args.cmd == "longform":
        bench_longform(args)
    else:
        longform_worker(args.name, args.minutes, args.mode, args.threads)


if __name__ == "__main__":
    main()
