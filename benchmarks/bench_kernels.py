"""Kernel benchmarks: selective scan, S4D FFT convolution, step mode. Prints markdown tables.

    python benchmarks/bench_kernels.py            # full tables (CPU; plus CUDA when available)
    python benchmarks/bench_kernels.py --quick    # small sizes, a smoke run

Every measurement runs in a fresh subprocess so that its peak memory can be read on its own:
on CPU, the growth of the process's peak resident set (``resource.getrusage`` ru_maxrss) from
just before the measured call to just after it; on CUDA, ``torch.cuda.max_memory_allocated``
above the memory held before the call. Times are the best of ``--repeats`` runs (wall clock).

The reference "loop" is a per-timestep PyTorch loop written the efficient way (one frame at a
time, ``unbind`` over time, autograd through it); where it would take too long it is timed at
a shorter L and extrapolated linearly, and the table says so. A second table times the
"indexed" loop of the usual pure-PyTorch reference scans (whole-sequence exp(ΔA) and Δ B u,
then per-frame indexing), whose backward pass is quadratic in L.

Workers import ``espnet_ssm.ops`` without running ``espnet_ssm/__init__.py``, whose ESPnet
registration (tens of seconds of imports) has nothing to do with the kernels.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import resource
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
TABLES = ("scan", "projections", "indexed", "memory", "s4d", "step", "short")


# ----------------------------------------------------------------------------- worker side
def _import_ops():
    """espnet_ssm.ops without the package's ESPnet registration."""
    if "espnet_ssm" not in sys.modules:
        pkg = types.ModuleType("espnet_ssm")
        pkg.__path__ = [str(REPO / "espnet_ssm")]
        sys.modules["espnet_ssm"] = pkg
    import espnet_ssm.ops as ops

    return ops


def _auto_chunk(state_elements: int) -> int:
    """The chunk length the scan picks for this many state elements per frame."""
    _import_ops()
    return importlib.import_module("espnet_ssm.ops.selective_scan")._auto_chunk(state_elements)


def _peak_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _measure(fn, device, repeats: int) -> Dict[str, float]:
    """Peak memory growth of the first call, then the best time over ``repeats`` calls."""
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2**20
    else:
        base = _peak_mb(device)
    fn()
    sync()
    peak = _peak_mb(device) - base
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return {"time_s": best, "peak_mb": peak}


def loop_scan(u, delta, A, B, C):
    """Per-timestep reference: h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t, y_t = C_t · h_t."""
    import torch

    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for u_t, d_t, B_t, C_t in zip(u.unbind(-1), delta.unbind(-1), B.unbind(-1), C.unbind(-1)):
        h = torch.exp(d_t[..., None] * A) * h + (d_t * u_t)[..., None] * B_t[:, None, :]
        ys.append(torch.einsum("bdn,bn->bd", h, C_t))
    return torch.stack(ys, dim=-1)


def indexed_loop_scan(u, delta, A, B, C):
    """The structure of the usual pure-PyTorch reference scans: exp(ΔA) and Δ B u for the whole
    sequence first (b, d, L, N), then one frame at a time by indexing. Autograd turns each
    indexing into a full-size gradient buffer, so its backward pass is quadratic in L."""
    import torch

    decay = torch.exp(delta[..., None] * A[:, None, :])
    inputs = (delta * u)[..., None] * B.transpose(1, 2)[:, None]
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[-1]):
        h = decay[:, :, t] * h + inputs[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    return torch.stack(ys, dim=-1)


def worker(spec: Dict) -> Dict:
    import torch

    ops = _import_ops()
    torch.manual_seed(0)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    kind = spec["kind"]
    if kind == "scan":
        b, d, N, L = spec["batch"], spec["d"], spec["N"], spec["L"]
        grad = spec["mode"] == "fwd_bwd"
        u = torch.randn(b, d, L, device=device, requires_grad=grad)
        delta = torch.randn(b, d, L, device=device, requires_grad=grad)
        A = (-torch.exp(torch.log(torch.arange(1, N + 1.0, device=device)).repeat(d, 1))).requires_grad_(grad)
        B = torch.randn(b, N, L, device=device, requires_grad=grad)
        C = torch.randn(b, N, L, device=device, requires_grad=grad)
        bias = torch.full((d,), -3.0, device=device)  # softplus(-3 + randn): Δ ≈ 0.05, Mamba-like
        if spec["impl"] in ("loop", "indexed_loop"):
            loop = loop_scan if spec["impl"] == "loop" else indexed_loop_scan
            run = lambda: loop(u, torch.nn.functional.softplus(delta + bias[:, None]), A, B, C)  # noqa: E731
        else:
            backend = {"ours": "auto", "torch": "torch", "fused": "mamba_ssm"}[spec["impl"]]
            run = lambda: ops.selective_scan(  # noqa: E731
                u, delta, A, B, C, delta_bias=bias, delta_softplus=True, backend=backend
            )

        def call():
            if grad:
                run().sum().backward()
            else:
                with torch.no_grad():
                    run()

        return _measure(call, device, spec["repeats"])
    if kind == "projections":
        # the matrix products of one Mamba layer of width d_model (d_inner = 2 d_model)
        from espnet_ssm.layers.mamba import MambaMixer

        layer = MambaMixer(spec["d_model"], d_state=spec["N"]).to(device)
        x = torch.randn(spec["batch"], spec["L"], spec["d_model"], device=device, requires_grad=True)

        def call():
            h, z = layer.in_proj(x).chunk(2, dim=-1)
            delta, B, C = layer._ssm_inputs(h)
            out = layer.out_proj(h * z)
            (out.sum() + delta.sum() + B.sum() + C.sum()).backward()

        return _measure(call, device, spec["repeats"])
    if kind == "s4d_conv":
        H, N, L, b = spec["H"], spec["N"], spec["L"], spec["batch"]
        log_dt = ops.init_log_dt(H).to(device)
        A = ops.s4d_lin_init(N).to(device).expand(H, N)
        B = torch.ones(H, N, dtype=torch.cfloat, device=device)
        C = torch.randn(H, N, dtype=torch.cfloat, device=device)
        u = torch.randn(b, H, L, device=device)
        with torch.no_grad():
            kernel = _measure(lambda: ops.s4d_kernel(log_dt, A, B, C, L), device, spec["repeats"])
            K = ops.s4d_kernel(log_dt, A, B, C, L)
            conv = _measure(lambda: ops.fft_causal_conv(u, K), device, spec["repeats"])
        peak = max(kernel["peak_mb"], conv["peak_mb"])
        return {"kernel_s": kernel["time_s"], "conv_s": conv["time_s"], "peak_mb": peak}
    if kind == "step":
        from espnet_ssm.layers.mamba import MambaMixer
        from espnet_ssm.layers.s4d import S4D

        frames, b = spec["frames"], spec["batch"]
        if spec["layer"] == "S4D":
            layer = S4D(spec["d_model"], d_state=spec["N"]).to(device)
        else:
            layer = MambaMixer(spec["d_model"], d_state=spec["N"]).to(device)
        x = torch.randn(b, frames, spec["d_model"], device=device)

        def steps():
            with torch.no_grad():
                state = layer.init_state(b, device=device)
                for t in range(frames):
                    _, state = layer.step(x[:, t], state)

        return {"per_frame_s": _measure(steps, device, spec["repeats"])["time_s"] / frames}
    if kind == "short_chunk":
        H, N, l = spec["H"], spec["N"], spec["frames"]
        log_dt = ops.init_log_dt(H).to(device)
        A = ops.s4d_lin_init(N).to(device).expand(H, N)
        B = torch.ones(H, N, dtype=torch.cfloat, device=device)
        C = torch.randn(H, N, dtype=torch.cfloat, device=device)
        dA, dB = ops.s4d_discretize(log_dt, A, B)
        tables = ops.s4d_short_chunk_tables(dA, dB, C, 16)
        u = torch.randn(1, l, H, device=device)
        state = torch.randn(1, H, N, dtype=torch.cfloat, device=device)

        def loop():
            x = state
            for t in range(l):
                _, x = ops.s4d_step(x, u[:, t], dA, dB, C, check=t == 0)

        with torch.no_grad():
            frame = _measure(lambda: [loop() for _ in range(20)], device, spec["repeats"])
            closed = _measure(lambda: [ops.s4d_short_chunk(u, state, tables) for _ in range(20)],
                              device, spec["repeats"])
        return {"loop_s": frame["time_s"] / 20, "closed_s": closed["time_s"] / 20}
    raise ValueError(f"unknown benchmark kind {kind!r}")


def run_worker(spec: Dict, timeout: float = 3600) -> Optional[Dict]:
    """Run one measurement in a fresh interpreter; None (and a note on stderr) if it fails."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = dict(os.environ)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        tail = (getattr(err, "stderr", "") or "")[-2000:]
        print(f"<!-- benchmark {spec} failed: {type(err).__name__} {tail} -->", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- tables
def fmt(x: Optional[float], scale: float = 1.0, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x * scale:.{digits}g}"


def scan_table(
    device: str, sizes: List[int], loop_max_L: int, repeats: int, threads: int
) -> Dict[int, Optional[Dict]]:
    """The main selective-scan table: what a user gets (on CPU the compiled kernel when it
    could be built), the chunked PyTorch scan, and the per-frame loop; returns ours by L."""
    b, d, N = 2, 1024, 16
    backend = _default_backend(device)
    print(f"\n### Selective scan, forward + backward ({device}; batch {b}, d {d}, N {N}, float32)\n")
    print(f"Default path on {device}: {backend}.\n")
    print(
        "| L | default path: time (s) | peak memory (MB) | PyTorch scan: time (s) | per-frame loop: time (s) "
        "| default vs loop | PyTorch scan vs loop |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    base = dict(kind="scan", device=device, batch=b, d=d, N=N, mode="fwd_bwd", threads=threads)
    ours, torch_at, loop_at = {}, {}, {}
    for L in sizes:
        ours[L] = run_worker(dict(base, L=L, impl="ours", repeats=repeats))
        torch_at[L] = run_worker(dict(base, L=L, impl="torch", repeats=repeats)) if backend != "PyTorch scan" else ours[L]
        if L <= loop_max_L:
            loop_at[L] = run_worker(dict(base, L=L, impl="loop", repeats=repeats))
    measured = max(loop_at) if loop_at else None
    for L in sizes:
        o, t = ours[L] or {}, torch_at[L] or {}
        if L in loop_at and loop_at[L]:
            lt, note = loop_at[L]["time_s"], ""
        elif measured and loop_at[measured]:
            lt, note = loop_at[measured]["time_s"] * L / measured, f" (extrapolated from L={measured})"
        else:
            lt, note = None, ""
        speed = None if (lt is None or not o) else lt / o["time_s"]
        speed_t = None if (lt is None or not t) else lt / t["time_s"]
        print(
            f"| {L} | {fmt(o.get('time_s'))} | {fmt(o.get('peak_mb'), digits=4)} | {fmt(t.get('time_s'))} | "
            f"{fmt(lt)}{note} | {fmt(speed)}× | {fmt(speed_t)}× |"
        )
    lo, hi = min(sizes), max(sizes)
    if ours.get(lo) and ours.get(hi):
        ratio = ours[hi]["time_s"] / ours[lo]["time_s"]
        print(f"\nScaling: time(L={hi}) / time(L={lo}) = {ratio:.2f} for a {hi // lo}× longer sequence.")
    return ours


def scan_vs_projections_table(device: str, L: int, loop_L: int, repeats: int, threads: int) -> None:
    """Speech-Mamba's layer (d_model 512, d_inner 1024) at N = 16 and N = 256: the scan per
    frame next to the layer's own matrix products per frame, forward + backward."""
    b, d_model = 2, 512
    d = 2 * d_model
    backend = _default_backend(device)
    print(
        f"\n### Selective scan vs the Mamba layer's projections, per frame ({device}; forward + backward, "
        f"batch {b}, L {L}, d_model {d_model}, d_inner {d}, float32; default path: {backend})\n"
    )
    print(
        "| N | scan (µs/frame) | projections (µs/frame) | scan / projections "
        f"| per-frame loop (µs/frame, L {loop_L}) | scan vs loop |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for N in (16, 256):
        base = dict(kind="scan", device=device, batch=b, d=d, N=N, mode="fwd_bwd", threads=threads)
        scan = run_worker(dict(base, L=L, impl="ours", repeats=repeats))
        loop = run_worker(dict(base, L=loop_L, impl="loop", repeats=repeats))
        proj = run_worker(
            dict(kind="projections", device=device, batch=b, d_model=d_model, N=N, L=L, threads=threads,
                 repeats=repeats)
        )
        per = lambda r, n: None if not r else r["time_s"] / (b * n) * 1e6  # noqa: E731
        s_us, p_us, l_us = per(scan, L), per(proj, L), per(loop, loop_L)
        ratio = None if s_us is None or p_us is None else s_us / p_us
        speed = None if s_us is None or l_us is None else l_us / s_us
        print(f"| {N} | {fmt(s_us)} | {fmt(p_us)} | {fmt(ratio)} | {fmt(l_us)} | {fmt(speed)}× |")


def _default_backend(device: str) -> str:
    if device != "cpu":
        return "mamba_ssm's fused kernel when installed, else the PyTorch scan"
    _import_ops()
    kernel = importlib.import_module("espnet_ssm.ops.cpu_kernels").kernel()
    return "compiled CPU kernel" if kernel is not None else "PyTorch scan"


def memory_table(device: str, cases: List[tuple], threads: int) -> None:
    b, d = 2, 1024
    print(f"\n### Selective scan inference memory ({device}; no grad, batch {b}, d {d}, float32)\n")
    print(
        "| L | N | all states b·d·N·L (MB) | one chunk of states T·b·d·N (MB) "
        "| peak memory growth during the call (MB) | growth / (b·d·L·4 bytes) |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for L, N in cases:
        # memory only: one call, no timed repeats
        spec = dict(kind="scan", device=device, batch=b, d=d, N=N, L=L, mode="fwd_nograd", impl="ours")
        r = run_worker(dict(spec, repeats=0, threads=threads))
        mb = 4 / 2**20
        chunk = _auto_chunk(b * d * N)
        growth = r and r["peak_mb"]
        per_io = None if growth is None else growth / (b * d * L * mb)
        states, one_chunk = b * d * N * L * mb, chunk * b * d * N * mb
        print(f"| {L} | {N} | {states:.0f} | {one_chunk:.1f} | {fmt(growth, digits=4)} | {fmt(per_io)} |")


def indexed_loop_table(
    device: str, sizes: List[int], threads: int, ours_at: Dict[int, Optional[Dict]]
) -> None:
    """The indexed loop at small L; at the longer L of ``ours_at`` (our scan-table times) its
    time is extrapolated linearly from the longest measured L, which understates it (its
    backward pass is quadratic in L)."""
    b, d, N = 2, 1024, 16
    print(f"\n### Indexed reference loop, forward + backward ({device}; batch {b}, d {d}, N {N})\n")
    print("| L | indexed loop: time (s) | indexed loop: peak memory (MB) | ours: time (s) | speed-up |")
    print("|---:|---:|---:|---:|---:|")
    for L in sizes:
        base = dict(kind="scan", device=device, batch=b, d=d, N=N, L=L, mode="fwd_bwd", threads=threads, repeats=1)
        loop, ours = run_worker(dict(base, impl="indexed_loop")), run_worker(dict(base, impl="ours"))
        speed = None if not (loop and ours) else loop["time_s"] / ours["time_s"]
        loop_t, loop_m = fmt(loop and loop["time_s"]), fmt(loop and loop["peak_mb"], digits=4)
        print(f"| {L} | {loop_t} | {loop_m} | {fmt(ours and ours['time_s'])} | {fmt(speed)}× |")
        last = (L, loop)
    L0, loop = last
    for L in sorted(x for x in ours_at if x > L0):
        if loop and ours_at[L]:
            t = loop["time_s"] * L / L0
            speed = fmt(t / ours_at[L]["time_s"])
            print(
                f"| {L} | {fmt(t)} (extrapolated linearly from L={L0}: a lower bound) | n/a | "
                f"{fmt(ours_at[L]['time_s'])} | ≥ {speed}× |"
            )


def s4d_table(device: str, sizes: List[int], repeats: int, threads: int) -> None:
    H, N, b = 512, 64, 1
    print(f"\n### S4D kernel + FFT convolution ({device}; batch {b}, H {H}, N {N} complex modes, float32)\n")
    print("| L | kernel (ms) | FFT conv (ms) | total (ms) | total per frame (µs) | peak memory (MB) |")
    print("|---:|---:|---:|---:|---:|---:|")
    totals = {}
    for L in sizes:
        r = run_worker(dict(kind="s4d_conv", device=device, H=H, N=N, L=L, batch=b, repeats=repeats, threads=threads))
        if r is None:
            print(f"| {L} | n/a | n/a | n/a | n/a | n/a |")
            continue
        totals[L] = r["kernel_s"] + r["conv_s"]
        print(
            f"| {L} | {fmt(r['kernel_s'], 1e3)} | {fmt(r['conv_s'], 1e3)} | {fmt(totals[L], 1e3)} | "
            f"{fmt(totals[L] / L, 1e6)} | {fmt(r['peak_mb'], digits=4)} |"
        )
    lo, hi = min(sizes), max(sizes)
    if lo in totals and hi in totals:
        ratio = totals[hi] / totals[lo]
        print(f"\nScaling: total(L={hi}) / total(L={lo}) = {ratio:.1f} for a {hi // lo}× longer sequence.")


def step_table(device: str, frames: int, repeats: int, threads: int) -> None:
    print(f"\n### Step (streaming) mode, cost per frame ({device}; batch 1, no grad)\n")
    print("| layer | config | µs / frame |")
    print("|---|---|---:|")
    for layer, d_model, N in (("S4D", 512, 64), ("MambaMixer", 256, 16), ("MambaMixer", 512, 256)):
        spec = dict(kind="step", device=device, layer=layer, d_model=d_model, N=N, batch=1, frames=frames)
        r = run_worker(dict(spec, repeats=repeats, threads=threads))
        print(f"| {layer} | d_model {d_model}, N {N} | {fmt(r and r['per_frame_s'], 1e6)} |")


def short_chunk_table(device: str, repeats: int, threads: int) -> None:
    H, N = 512, 32
    print(f"\n### S4D on streaming chunks: closed form vs frame loop ({device}; batch 1, H {H}, "
          f"N {N} complex modes, caches warm)\n")
    print("| frames per chunk | frame loop (µs) | closed form (µs) | loop / closed |")
    print("|---:|---:|---:|---:|")
    for frames in (4, 8, 16):
        r = run_worker(dict(kind="short_chunk", device=device, H=H, N=N, frames=frames,
                            repeats=repeats, threads=threads))
        ratio = None if r is None else r["loop_s"] / r["closed_s"]
        print(f"| {frames} | {fmt(r and r['loop_s'], 1e6, 4)} | {fmt(r and r['closed_s'], 1e6, 4)} | "
              f"{fmt(ratio)} |")


def fused_table(sizes: List[int], repeats: int) -> None:
    b, d, N = 2, 1024, 16
    print(
        "\n### Selective scan on CUDA: ours vs mamba_ssm fused kernel "
        f"(forward + backward; batch {b}, d {d}, N {N})\n"
    )
    print("| L | ours (ms) | mamba_ssm (ms) | ours / fused |")
    print("|---:|---:|---:|---:|")
    for L in sizes:
        base = dict(kind="scan", device="cuda", batch=b, d=d, N=N, L=L, mode="fwd_bwd", repeats=repeats)
        o, f = run_worker(dict(base, impl="ours")), run_worker(dict(base, impl="fused"))
        ratio = None if not (o and f) else o["time_s"] / f["time_s"]
        print(f"| {L} | {fmt(o and o['time_s'], 1e3)} | {fmt(f and f['time_s'], 1e3)} | {fmt(ratio)} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best is kept)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--tables",
        default=",".join(TABLES),
        help=f"comma-separated subset of {','.join(TABLES)} (default: all)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    import torch

    threads = args.threads or torch.get_num_threads()
    if args.quick:
        scan_sizes, loop_max, indexed_sizes, frames, repeats = [256, 1024], 1024, [64, 128], 50, 1
        proj_L, proj_loop_L = 256, 128
        mem_cases, s4d_sizes = [(256, 16), (1024, 16), (1024, 64)], [1024, 4096]
    else:
        scan_sizes, loop_max, indexed_sizes, frames, repeats = [1024, 4096, 16384], 4096, [128, 256], 500, args.repeats
        proj_L, proj_loop_L = 4096, 512
        mem_cases = [(1024, 16), (4096, 16), (16384, 16), (65536, 16), (16384, 64), (16384, 256)]
        s4d_sizes = [1024, 4096, 16384, 65536]
    tables = set(args.tables.split(","))
    unknown = tables - set(TABLES)
    if unknown:
        parser.error(f"--tables: unknown table(s) {sorted(unknown)}; choose from {list(TABLES)}")
    print(f"# Kernel benchmarks\n\ntorch {torch.__version__}, {threads} CPU thread(s), {os.cpu_count()} CPU core(s)")
    devices = [("cpu", threads)] + ([("cuda", 0)] if torch.cuda.is_available() else [])
    for device, n_threads in devices:
        if device == "cuda":
            print(f"\n## CUDA: {torch.cuda.get_device_name(0)}")
        ours_at = {}
        if "scan" in tables:
            ours_at = scan_table(device, scan_sizes, loop_max, repeats, n_threads)
        if "projections" in tables:
            scan_vs_projections_table(device, proj_L, proj_loop_L, repeats, n_threads)
        if "indexed" in tables and device == "cpu":
            indexed_loop_table(device, indexed_sizes, n_threads, ours_at)
        if "memory" in tables:
            memory_table(device, mem_cases, n_threads)
        if "s4d" in tables:
            s4d_table(device, s4d_sizes, repeats, n_threads)
        if "step" in tables:
            step_table(device, frames, repeats, n_threads)
        if "short" in tables:
            short_chunk_table(device, repeats, n_threads)
    if "scan" in tables and torch.cuda.is_available():
        try:
            import mamba_ssm  # noqa: F401

            fused_table(scan_sizes, repeats)
        except ImportError:
            print("\n(mamba_ssm is not installed: no comparison with its fused kernel)")


if __name__ == "__main__":
    main()
