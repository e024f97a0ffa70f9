#!/usr/bin/env python3
"""Transducer benchmarks: streaming speed, and training step time against CTC/attention.

    python benchmarks/bench_transducer.py streaming [--seconds 30] [--chunks_ms 160 640]
        [--weights float32 int8 int8-conv] [--beams 1 4]
    python benchmarks/bench_transducer.py train_step [--config ssm_conformer_online]
        [--batch 4] [--seconds 10] [--threads 2]

streaming: RTF and per-chunk latency of ``StreamingSpeech2Text`` decoding a transducer model
chunk by chunk on one CPU thread: the paper-size online SSMformer transducer
(``conf/tuning/train_asr_ssm_conformer_online_transducer.yaml``, 5000 output units, attention
left context 64 frames so that a chunk's cost does not grow with the stream), greedy search and
time-synchronous beam search (``--beams``), with float32 weights and ESPnet's int8 dynamic
quantization (``int8``: Linear layers, LSTM kept float; ``int8-conv``: also the subsampling's
Conv2d). Latency is the compute time of one call.

train_step: the time of one training step (forward, backward) of a model with a given encoder,
as a transducer (the ``_transducer`` config) and as CTC/attention (the same encoder, ESPnet's
Transformer decoder and CTC weight 0.3, as the package's CTC/attention configs), on the same
random batch, and their ratio.

Models are randomly initialised and the audio is synthetic. The search's cost depends on how
often it emits labels, so the joint network's blank bias is set first so that greedy search
emits ``--labels_per_second`` labels (3.5: about LibriSpeech's rate of 5000-unit BPE labels)
on that audio.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_streaming import (  # noqa: E402
    FS,
    VOCAB,
    build_model_from_conf,
    percentile,
    synthetic_audio,
    time_stream,
)


def tuning(name: str) -> dict:
    return yaml.safe_load((REPO / "conf" / "tuning" / f"train_asr_{name}.yaml").read_text())


def calibrate_blank(model, audio, labels_per_second: float) -> float:
    """Shift the joint network's blank bias (bisection) until greedy search emits about
    ``labels_per_second`` labels per second of ``audio``; returns the rate reached."""
    import torch

    from espnet_ssm.streaming.transducer_search import StreamingTransducerGreedy

    with torch.no_grad():
        enc, lens = model.encode(audio[None], torch.tensor([audio.numel()]))
        enc = enc[0, : int(lens[0])]
        bias = model.joint_network.lin_out.bias
        base = float(bias[model.blank_id])
        lo, hi, rate = -50.0, 50.0, 0.0
        search = StreamingTransducerGreedy(model.decoder, model.joint_network, model.blank_id)
        for _ in range(20):
            mid = (lo + hi) / 2
            bias[model.blank_id] = base + mid
            search.reset()
            search.step(enc)
            rate = len(search.spans) / (audio.numel() / FS)
            lo, hi = (mid, hi) if rate > labels_per_second else (lo, mid)
    return rate


def bench_streaming(args: argparse.Namespace) -> None:
    import torch

    from espnet_ssm.streaming import StreamingSpeech2Text

    torch.set_num_threads(1)
    audio = synthetic_audio(args.seconds)
    conf = tuning("ssm_conformer_online_transducer")
    conf["encoder_conf"]["attention_left_context"] = 64
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model_from_conf(conf, Path(tmp))
        rate = calibrate_blank(model, audio[: 4 * FS], args.labels_per_second)
        print(f"\n### Streaming transducer (1 CPU thread, {args.seconds:g} s of audio, greedy "
              f"search emitting {rate:.1f} labels/s)\n")
        print("| model | params | weights | search | chunk | RTF | latency/chunk mean | p95 |")
        print("|---|---|---|---|---|---|---|---|")
        params = sum(p.numel() for p in model.parameters()) / 1e6
        for weights in args.weights:
            quantized = None
            for beam in args.beams:
                s2t = StreamingSpeech2Text(
                    asr_model=quantized or model, token_type="word", beam_size=beam,
                    quantize_asr_model=weights != "float32" and quantized is None,
                    quantize_modules=["Linear", "Conv2d"] if weights == "int8-conv" else ["Linear"],
                    transducer_conf=dict(max_sym_exp=3) if beam > 1 else None)
                quantized = s2t.asr_model if weights != "float32" else None
                search = "greedy" if beam == 1 else f"tsd, beam {beam}"
                for ms in args.chunks_ms:
                    seconds, lat = time_stream(s2t, audio, FS * ms // 1000, partial=False)
                    rtf = seconds / args.seconds
                    print(f"| online SSMformer transducer, paper size | {params:.1f} M | "
                          f"{weights} | {search} | {ms} ms | {rtf:.3f} | "
                          f"{sum(lat) / len(lat):.1f} ms | {percentile(lat, 0.95):.1f} ms |",
                          flush=True)


def bench_train_step(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    rnnt = tuning(f"{args.config}_transducer")
    ctc_att = dict(rnnt, decoder="transformer",
                   decoder_conf=dict(attention_heads=4, linear_units=1024, num_blocks=3),
                   model="espnet", model_conf=dict(ctc_weight=0.3, lsm_weight=0.1))
    ctc_att.pop("joint_net_conf")
    g = torch.Generator().manual_seed(0)
    speech = torch.randn(args.batch, int(args.seconds * FS), generator=g) * 0.1
    lengths = torch.full((args.batch,), speech.size(1))
    labels = int(args.seconds * args.labels_per_second)
    text = torch.randint(2, VOCAB - 1, (args.batch, labels), generator=g)
    text_lengths = torch.full((args.batch,), labels)
    print(f"\n### Training step ({args.config}, batch {args.batch} x {args.seconds:g} s, "
          f"{labels} labels each, {args.threads} CPU threads)\n")
    print("| model | params | forward + backward | ratio |")
    print("|---|---|---|---|")
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, conf in (("CTC/attention", ctc_att), ("transducer", rnnt)):
            model = build_model_from_conf(conf, Path(tmp) / name.replace("/", "_")).train()
            params = sum(p.numel() for p in model.parameters()) / 1e6
            best = float("inf")
            for _ in range(args.reps + 1):  # the fastest of reps + 1 runs (the first warms up)
                model.zero_grad()
                t0 = time.perf_counter()
                loss, _, _ = model(speech, lengths, text, text_lengths)
                loss.backward()
                best = min(best, time.perf_counter() - t0)
            times[name] = best
            ratio = best / times["CTC/attention"]
            print(f"| {name} | {params:.1f} M | {best:.2f} s | {ratio:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("streaming")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--chunks_ms", type=int, nargs="+", default=[160, 640])
    p.add_argument("--weights", nargs="+", default=["float32", "int8", "int8-conv"],
                   choices=["float32", "int8", "int8-conv"])
    p.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    p.add_argument("--labels_per_second", type=float, default=3.5)
    p = sub.add_parser("train_step")
    p.add_argument("--config", default="ssm_conformer_online",
                   help="conf/tuning/train_asr_<config>_transducer.yaml")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--labels_per_second", type=float, default=3.0,
                   help="about LibriSpeech's rate of 5000-unit BPE labels")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    (bench_streaming if args.cmd == "streaming" else bench_train_step)(args)


if __name__ == "__main__":
    main()
