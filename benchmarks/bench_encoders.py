#!/usr/bin/env python3
"""Paper-scale encoders vs ESPnet's Conformer: parameters, forward time and peak memory on CPU.

Prints:

1. parameters of every paper-scale config in ``conf/tuning/`` (encoder alone, and the whole
   CTC/attention model with a 5000-token vocabulary, the LibriSpeech recipe's BPE size);
2. forward time of each encoder (batch 1, ``no_grad``, eval mode, 80-dim features at 100
   frames/s) on 10 s / 60 s / 240 s inputs, and its ratio to the Conformer's. Time is the CPU
   time of the measuring process (``time.process_time``, all its threads), which other jobs on a
   shared machine do not inflate the way they inflate wall-clock time; wall-clock time is
   printed as well. Both are the minimum over ``--reps`` rounds; a round measures every model
   once, in turn, so that a change of load on a shared machine hits all models alike (inputs of
   120 s and more get one round);
3. peak memory of the same runs: each (encoder, duration) runs in a fresh subprocess whose
   peak resident memory is read from ``/proc/self/status`` (``VmHWM``, the high-water mark of
   the process's own address space; ``ru_maxrss`` would inherit the parent's peak across
   fork + exec); "activations" is that peak minus the resident memory right after the encoder
   was built (weights, libraries). A run may use ``--memory-budget-gb`` beyond its built
   encoder (less if the machine has less available); one that needs more stops with an
   allocation error, reported under "Failures", rather than calling in the OOM killer.

Targets from the project: within 1.5x of the Conformer's time at 10 s; attention-free MH-SSM
at least 5x faster than the Conformer at 240 s.

Usage::

    python benchmarks/bench_encoders.py                 # 10/60/240 s, 3 rounds below 120 s
    python benchmarks/bench_encoders.py --quick         # 10/60 s, 1 round
    python benchmarks/bench_encoders.py --params-only   # just the parameter table
    python benchmarks/bench_encoders.py --speed-only    # just the speed and memory tables
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
TUNING = REPO / "conf" / "tuning"
# name -> paper-scale config; the first is the reference of every ratio.
CONFIGS = {
    "conformer": "train_asr_conformer.yaml",
    "mh_ssm": "train_asr_mh_ssm.yaml",
    "stateformer": "train_asr_stateformer.yaml",
    "speech_mamba": "train_asr_speech_mamba.yaml",
    "ssm_conformer": "train_asr_ssm_conformer.yaml",
    "ssm_conformer_online": "train_asr_ssm_conformer_online.yaml",
    "e_branchformer": "train_asr_e_branchformer.yaml",
}
REFERENCE = "conformer"
FEATURE_DIM = 80
FRAMES_PER_SECOND = 100


def load_config(name: str) -> dict:
    import yaml

    with open(TUNING / CONFIGS[name]) as f:
        return yaml.safe_load(f)


def build_encoder(name: str):
    """The config's encoder alone, built the way ESPnet's ASR task builds it."""
    import espnet_ssm  # noqa: F401  (registers our encoders)
    from espnet2.tasks.asr import encoder_choices

    config = load_config(name)
    cls = encoder_choices.get_class(config["encoder"])
    return cls(input_size=FEATURE_DIM, **config.get("encoder_conf", {}))


def proc_status_mb(field: str) -> float:
    """A memory field of /proc/self/status (``VmRSS``: now, ``VmHWM``: peak) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    """Restart ``VmHWM`` from the current RSS (Linux: write 5 to clear_refs), if permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # the peak then includes the encoder's construction


def limit_memory(budget_gb: float) -> float:
    """Cap this process's further address space at ``budget_gb`` (less when the machine has
    less available), so that an encoder needing more fails with an allocation error instead of
    waking the kernel's OOM killer on a shared machine. Returns the budget applied, in GB."""
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    budget = min(budget_gb, info["MemAvailable"] / 2**20 - 2.0)
    here = proc_status_mb("VmSize") * 2**20
    limit = int(here + max(budget, 0.5) * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return budget


def worker(name: str, seconds: float, threads: int, budget_gb: float) -> dict:
    """One measurement in this (fresh) process; returns times and memory."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    encoder = build_encoder(name).eval()
    built_mb = proc_status_mb("VmRSS")
    reset_peak_rss()
    budget = limit_memory(budget_gb)
    frames = int(seconds * FRAMES_PER_SECOND)
    x = torch.randn(1, frames, FEATURE_DIM)
    lengths = torch.tensor([frames])
    with torch.no_grad():
        warm = min(frames, 1000)  # first-call costs, without doubling the long runs
        encoder(x[:, :warm], torch.tensor([warm]))
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        try:
            encoder(x, lengths)
        except RuntimeError as e:
            if "allocate" not in str(e):  # only the allocator's error means "over budget"
                raise
            raise SystemExit(f"out of the {budget:.1f} GB memory budget: {str(e)[:120]}")
        cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start_wall
    peak_mb = proc_status_mb("VmHWM")
    return {
        "cpu_s": cpu, "wall_s": wall, "peak_mb": peak_mb, "activations_mb": peak_mb - built_mb,
    }


def measure(
    name: str, seconds: float, threads: int, budget_gb: float, timeout: float
) -> Optional[dict]:
    """Run :func:`worker` in a subprocess; ``{"error": why}`` when it fails."""
    cmd = [
        sys.executable, __file__, "--_worker", name, str(seconds), str(threads), str(budget_gb)
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        return {"error": f"exit code {proc.returncode}: {tail[0]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best_of(a: Optional[dict], b: dict) -> dict:
    """Merge two rounds: the fastest times and the largest memory peaks; errors only if both."""
    if a is None or "error" in a:
        return b
    if "error" in b:
        return a
    return {k: (max if k.endswith("_mb") else min)(a[k], b[k]) for k in a}


def parameter_table(names: List[str]) -> str:
    """Encoder and whole-model parameter counts (millions), from the configs."""
    with contextlib.redirect_stdout(sys.stderr):  # ESPnet's import-time notices, not the table
        import espnet_ssm  # noqa: F401
        from espnet_ssm.tasks import SSMASRTask

    rows = ["| model | config | encoder params (M) | model params, 5000 BPE (M) |",
            "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        tokens = Path(tmp) / "tokens.txt"
        tokens.write_text(
            "\n".join(["<blank>", "<unk>"] + [f"t{i}" for i in range(4997)] + ["<sos/eos>"])
        )
        for name in names:
            args = SSMASRTask.get_parser().parse_args(
                ["--config", str(TUNING / CONFIGS[name]), "--token_list", str(tokens),
                 "--output_dir", tmp]
            )
            model = SSMASRTask.build_model(args)
            enc = sum(p.numel() for p in model.encoder.parameters()) / 1e6
            total = sum(p.numel() for p in model.parameters()) / 1e6
            rows.append(f"| {name} | conf/tuning/{CONFIGS[name]} | {enc:.2f} | {total:.2f} |")
            del model
    return "\n".join(rows)


def ratio(value: Optional[float], ref: Optional[float]) -> str:
    return f"{value / ref:.2f}x" if value is not None and ref else "n/a"


def results_tables(results: Dict[str, Dict[float, dict]], durations: List[float]) -> str:
    head = "| model | " + " | ".join(f"{d:g} s | ratio" for d in durations) + " |"
    sep = "|---|" + "---|---|" * len(durations)
    out = []
    for title, key, fmt in (
        ("Forward CPU time (s), batch 1, no_grad; ratio = model / conformer", "cpu_s", "{:.3f}"),
        ("Forward wall-clock time (s); ratio = model / conformer", "wall_s", "{:.3f}"),
        ("Peak resident memory (MB); ratio = model / conformer", "peak_mb", "{:.0f}"),
        ("Activation memory (MB) = peak - after build; ratio = model / conformer",
         "activations_mb", "{:.0f}"),
    ):
        out += ["", f"**{title}**", "", head, sep]
        for name, per in results.items():
            cells = []
            for d in durations:
                v = per[d].get(key)
                ref = results[REFERENCE][d].get(key)
                cells += [fmt.format(v) if v is not None else "failed", ratio(v, ref)]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    failures = [
        f"- {name} {d:g} s: {per[d]['error']}"
        for name, per in results.items() for d in durations if "error" in per[d]
    ]
    if failures:
        out += ["", "**Failures**", ""] + failures
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s and 60 s, one round")
    parser.add_argument("--durations", type=float, nargs="+", default=None,
                        help="input durations in seconds (default 10 60 240)")
    parser.add_argument(
        "--models", nargs="+", default=[n for n in CONFIGS if n != "e_branchformer"],
        choices=list(CONFIGS), help="configs to measure (conformer is the reference)",
    )
    parser.add_argument("--reps", type=int, default=None, help="rounds (the fastest is kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument(
        "--memory-budget-gb", type=float, default=16.0,
        help="memory a run may use beyond its built encoder (capped by what the machine has)",
    )
    parser.add_argument("--params-only", action="store_true", help="only the parameter table")
    parser.add_argument("--speed-only", action="store_true", help="only the speed and memory tables")
    parser.add_argument("--_worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._worker:
        name, seconds, threads, budget_gb = args._worker
        print(json.dumps(worker(name, float(seconds), int(threads), float(budget_gb))))
        return

    models = list(dict.fromkeys([REFERENCE] + args.models))
    if args.params_only:  # the bare table (README.md prints it as is)
        print(parameter_table(models))
        return
    if not args.speed_only:
        print("## Parameters\n")
        print(parameter_table(models))
    durations = args.durations or ([10, 60] if args.quick else [10, 60, 240])
    reps = args.reps or (1 if args.quick else 3)
    print(f"\n## Speed and memory ({args.threads} thread(s), best of {reps} round(s) below 120 s)")
    results: Dict[str, Dict[float, dict]] = {n: {} for n in models}
    for d in durations:
        for _ in range(reps if d < 120 else 1):
            for name in models:
                run = measure(name, d, args.threads, args.memory_budget_gb, args.timeout)
                print(f"  measured {name} {d:g} s: {run}", file=sys.stderr, flush=True)
                results[name][d] = best_of(results[name].get(d), run)
    print(results_tables(results, durations))


if __name__ == "__main__":
    main()
