#!/usr/bin/env python3
"""Peak memory and time of the transducer joint network + loss + backward: whole batch vs slices.

The joint output of a transducer has B x T x (U+1) x V values, and ``torchaudio``'s RNN-T loss
keeps a gradient of the same size from its forward to the backward pass.
:func:`espnet_ssm.transducer.joint_rnnt_loss` can run joint network and loss over slices of the
batch, recomputing each slice in the backward pass (``model_conf.transducer_batch_slices`` /
``transducer_max_joint_elements``). This script measures, for ESPnet's ``JointNetwork``
(encoder and prediction-network outputs of 512 dimensions, joint space 640, as in ESPnet's
LibriSpeech Conformer transducer) at T = 250 encoder frames, U = 100 labels, V = 5000 classes:

- peak memory of one joint + loss + backward: on CUDA ``torch.cuda.max_memory_allocated`` minus
  what was allocated before; on CPU each setting runs in a fresh subprocess and the peak is the
  process's high-water mark (``VmHWM`` in ``/proc/self/status``) minus its resident memory
  just before the step (inputs, weights and libraries already loaded);
- the time of that step: wall clock, and on CPU also the CPU time of the process (all its
  threads; other jobs on a shared machine inflate it less than wall-clock time); ``--reps``
  runs, the fastest;
- the loss and the norm of the gradients of the inputs and of the joint network, which must
  agree between the settings (slicing changes neither).

Usage::

    python benchmarks/bench_transducer_loss.py                  # B=2, slices 1 and 2, 2 threads
    python benchmarks/bench_transducer_loss.py --batch 8 --slices 1 2 4 8   # on a GPU
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(opts: argparse.Namespace, slices: int, device: str) -> Dict[str, float]:
    """One setting, in this process: returns peak MB, seconds, loss and gradient norms."""
    import torch
    from espnet2.asr_transducer.joint_network import JointNetwork

    from espnet_ssm.transducer import joint_rnnt_loss

    torch.set_num_threads(opts.threads)
    torch.manual_seed(0)
    joint = JointNetwork(opts.vocab, opts.enc_dim, opts.dec_dim, joint_space_size=opts.joint)
    joint = joint.to(device)

    def inputs(b: int, t: int, u: int):
        enc = torch.randn(b, t, opts.enc_dim, device=device, requires_grad=True)
        dec = torch.randn(b, u + 1, opts.dec_dim, device=device, requires_grad=True)
        targets = torch.randint(1, opts.vocab, (b, u), dtype=torch.int32, device=device)
        t_len = torch.full((b,), t, dtype=torch.int32, device=device)
        u_len = torch.full((b,), u, dtype=torch.int32, device=device)
        return enc, dec, targets, t_len, u_len

    def step(enc, dec, targets, t_len, u_len) -> float:
        for p in (enc, dec, *joint.parameters()):
            p.grad = None
        loss = joint_rnnt_loss(joint, enc, dec, targets, t_len, u_len, 0, batch_slices=slices)
        loss.backward()
        return float(loss)

    step(*inputs(opts.batch, 4, 2))  # warm-up: first-call set-up stays out of the measurement
    enc, dec, targets, t_len, u_len = inputs(opts.batch, opts.frames, opts.labels)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _status_kib("VmRSS") * 1024
    wall, cpu = [], []
    for _ in range(opts.reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        loss = step(enc, dec, targets, t_len, u_len)
        if cuda:
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    peak = torch.cuda.max_memory_allocated() if cuda else _status_kib("VmHWM") * 1024
    grads = [enc.grad, dec.grad, *(p.grad for p in joint.parameters())]
    return {
        "slices": slices,
        "peak_mb": (peak - base) / 2**20,
        "seconds": min(wall),
        "cpu_seconds": min(cpu),
        "loss": loss,
        "grad_norm": float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads))),
    }


def run_fresh(opts: argparse.Namespace, slices: int, device: str) -> Dict[str, float]:
    """:func:`measure` in a fresh interpreter (CPU: its own memory high-water mark)."""
    cmd = [sys.executable, __file__, "--_child", str(slices), "--_device", device]
    for key in ("batch", "frames", "labels", "vocab", "enc_dim", "dec_dim", "joint", "threads",
                "reps"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(opts, key))]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"slices={slices} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: List[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=250, help="T, encoder frames")
    p.add_argument("--labels", type=int, default=100, help="U, labels per utterance")
    p.add_argument("--vocab", type=int, default=5000, help="V, output classes incl. blank")
    p.add_argument("--enc-dim", type=int, default=512)
    p.add_argument("--dec-dim", type=int, default=512)
    p.add_argument("--joint", type=int, default=640, help="joint space size")
    p.add_argument("--slices", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--_child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_device", default=None, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)

    if opts._child is not None:
        print(json.dumps(measure(opts, opts._child, opts._device)))
        return

    import torch

    device = opts.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elements = opts.batch * opts.frames * (opts.labels + 1) * opts.vocab
    where = f"{opts.threads} threads" if device == "cpu" else torch.cuda.get_device_name()
    print(
        f"Transducer joint + loss + backward on {device} ({where})"
        + f": B={opts.batch}, T={opts.frames}, U={opts.labels}, V={opts.vocab}, joint space "
        f"{opts.joint}; joint output {elements / 1e6:.0f} M values "
        f"({elements * 4 / 2**30:.2f} GiB in float32)\n"
    )
    rows = [
        measure(opts, s, device) if device.startswith("cuda") else run_fresh(opts, s, device)
        for s in opts.slices
    ]
    naive = rows[0]
    print("| slices | utterances per slice | peak memory (MB) | vs 1 slice | wall time (s) | "
          "CPU time (s) | loss | gradient norm |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        per = opts.batch / r["slices"]
        cpu = f"{r['cpu_seconds']:.2f}" if device == "cpu" else "-"
        print(
            f"| {r['slices']} | {per:g} | {r['peak_mb']:.0f} | "
            f"{r['peak_mb'] / naive['peak_mb']:.2f} | {r['seconds']:.2f} | {cpu} | "
            f"{r['loss']:.6f} | {r['grad_norm']:.6f} |"
        )


if __name__ == "__main__":
    main()
