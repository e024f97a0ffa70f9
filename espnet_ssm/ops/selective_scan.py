"""Selective scan (Mamba's S6) in pure PyTorch, with mamba_ssm's ``selective_scan_fn`` semantics.

Shapes: u, delta, z (batch, d, L); A (d, N) real; B, C (batch, N, L) or (batch, G, N, L) with
the d channels split into G contiguous groups (channel c uses group c // (d/G)); D, delta_bias (d,).

    Δ_t = softplus(delta_t + delta_bias) if delta_softplus else delta_t + delta_bias
    h_t[c, n] = exp(Δ_t[c] A[c, n]) h_{t-1}[c, n] + Δ_t[c] B_t[n] u_t[c]
    y_t[c]    = Σ_n C_t[n] h_t[c, n] + D[c] u_t[c];     if z: y_t ← y_t · SiLU(z_t)

with h_{-1} = initial_state (zeros by default); ``return_last_state`` also returns h_{L-1}.

Algorithm (chunked closed form). Within a chunk t = 0 .. T-1 starting from state h, with
a_t = Δ_t A and R_t = A · Σ_{k=1}^{t} Δ_k (cumulative log-decay after the first step),

    h_t = exp(R_t) ⊙ ( exp(a_0) h + Σ_{s<=t} exp(-R_s) ⊙ Δ_s B_s u_s )

i.e. one cumulative sum per chunk (a matmul with a triangular matrix of ones); chunks are
visited in order, carrying h. The factor exp(-R_s) overflows when the log-decay range of a
chunk is large, so every chunk is checked first: if max|A| · Σ_{k=t0+1}^{t1-1} |Δ_k| exceeds
a limit (60 in float32, 500 in float64) the chunk uses a Hillis-Steele scan on the decays
exp(Δ_t A) instead (log2 T vectorised steps, products of numbers <= 1 only), so any Δ and A
are safe. The backward pass is a custom autograd function that keeps only the inputs and one
state per segment of S frames (a few chunks), recomputes a segment at a time, and runs the
adjoint recurrence g_t = C_t dy_t + exp(Δ_{t+1} A) g_{t+1} backwards through it by the same
two methods. Memory beyond the (batch, d, L) inputs and outputs is O(batch·d·N·S) for one
segment plus O(batch·d·N·L/S) saved states (S·batch·d·N ≈ 2M elements, e.g. S = 64 for
batch·d·N = 32768), and O(batch·d·N·T) for one chunk without autograd: never O(batch·d·N·L).

The scan runs in float32 (float64 for float64 inputs) with autocast disabled; y is returned in
u's dtype and the last state in the compute dtype (as mamba_ssm does).

Backends (``backend``): on the CPU, the compiled kernel of :mod:`.cpu_kernels` (one fused
loop per channel, vectorised over the state, parallel over batch x channels; backward by
recomputing segments of S = max(64, N) frames from saved states) whenever it could be built;
on CUDA, mamba_ssm's fused kernel when that optional package is importable; everywhere else,
and as the reference, the chunked PyTorch scan above.
Reading: mamba_ssm ``ops/selective_scan_interface.py`` (selective_scan_ref) for the semantics.
"""
from __future__ import annotations

import functools
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from espnet_ssm.ops import cpu_kernels
from espnet_ssm.ops.tensor_checks import check_choice, check_optional, check_tensor

BACKENDS = ("auto", "torch", "cpu", "mamba_ssm")
# automatic chunk length: about this many state elements (T·batch·d·N) per chunk, so that a
# chunk's few temporaries stay in a CPU core's L2 cache
CHUNK_ELEMENTS = 1 << 17
# training keeps one state per segment of chunks with about this many state elements, and
# recomputes a segment at a time in the backward pass
SEGMENT_ELEMENTS = 1 << 21
# largest exponent range allowed inside one chunk (see module docstring)
_MAX_LOG_RANGE = {torch.float32: 60.0, torch.float64: 500.0}

ScanOut = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


# --------------------------------------------------------------------------- argument checks
def _check_bc(fn: str, name: str, x: torch.Tensor, batch: int, d: int, N: int, L: Optional[int]) -> None:
    """B/C: (batch, N, L) or (batch, G, N, L) with d % G == 0 (L = None: per-frame form)."""
    tail = (N,) if L is None else (N, L)
    words = "(batch, N)" if L is None else "(batch, N, L)"
    grouped = isinstance(x, torch.Tensor) and x.dim() == len(tail) + 2
    if grouped:
        check_tensor(fn, name, x, (batch, None) + tail, words.replace("batch, ", "batch, G, "))
        if d % x.shape[1] != 0:
            raise ValueError(f"{fn}: {name} has G={x.shape[1]} groups, which must divide d={d}")
    else:
        spec = f"{words} or {words.replace('batch, ', 'batch, G, ')}"
        check_tensor(fn, name, x, (batch,) + tail, spec)


def _grouped(x: torch.Tensor, per_frame: bool) -> torch.Tensor:
    """Insert the group axis for ungrouped B/C: (batch, N[, L]) -> (batch, 1, N[, L])."""
    return x.unsqueeze(1) if x.dim() == (2 if per_frame else 3) else x


def _compute_dtype(*xs: Optional[torch.Tensor]) -> torch.dtype:
    return torch.float64 if any(x is not None and x.dtype == torch.float64 for x in xs) else torch.float32


def _delta(delta: torch.Tensor, delta_bias: Optional[torch.Tensor], softplus: bool, dtype) -> torch.Tensor:
    """Δ from delta with channels last ((L, batch, d) or (batch, d)), in the compute dtype."""
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)
    return F.softplus(delta) if softplus else delta


def _finish(
    y: torch.Tensor, u: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor], shape_d
) -> torch.Tensor:
    """y + D u, then the SiLU(z) gate; all in y's (compute) dtype."""
    if D is not None:
        y = y + D.to(y.dtype).view(shape_d) * u.to(y.dtype)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


# --------------------------------------------------------------------------- chunk kernels
# Time-major layout: per chunk, uu/dt are (T, b, d), B/C (T, b, G, N), states (T, b, d, N).
class _Chunk:
    """Everything one chunk needs, computed once and shared by its forward and adjoint scans.

    ``closed`` chunks (log-decay range within the limit) use the closed form with
    E = exp(R), R_t = A·Σ_{k=1}^{t} Δ_k (dividing by E multiplies by exp(-R)); the others a
    Hillis-Steele scan on the decays exp(Δ_t A), which only multiplies numbers <= 1 and so is
    safe for any Δ·A.
    """

    def __init__(self, uu, dt, A, Bc, closed: bool, tril: torch.Tensor):
        T, b, d = dt.shape
        self.T, self.closed, self.tril, self.dt, self.A = T, closed, tril[:T, :T], dt, A
        self.x = _bcast(Bc, d) * (dt * uu)[..., None]  # Δ_t B_t u_t
        if closed:
            R = (torch.cumsum(dt, 0) - dt[:1])[..., None] * A
            self.E = R.exp_()  # >= exp(-limit) by the chunk plan, so dividing by it is safe
        else:
            self.decay = torch.exp(dt[..., None] * A)

    def first_decay(self) -> torch.Tensor:
        """exp(Δ_0 A), (b, d, N): maps the state before the chunk onto its first frame."""
        return self.decay[0] if not self.closed else torch.exp(self.dt[0][..., None] * self.A)

    def states(self, h: torch.Tensor, reuse_x: bool = False) -> torch.Tensor:
        """h_t for every frame of the chunk, from the state h before it."""
        T = self.T
        if self.closed:
            w = self.x.div_(self.E) if reuse_x else self.x / self.E
            w[0].addcmul_(self.first_decay(), h)
            return torch.matmul(self.tril, w.view(T, -1)).view_as(w).mul_(self.E)
        hs = self.x if reuse_x else self.x.clone()
        hs[0].addcmul_(self.decay[0], h)
        return _hillis_steele(self.decay[1:], hs, reverse=False)

    def adjoint(self, gy: torch.Tensor) -> torch.Tensor:
        """g_t = gy_t + exp(Δ_{t+1} A) g_{t+1} within the chunk (gy is overwritten)."""
        T = self.T
        if self.closed:
            gy.mul_(self.E)
            return torch.matmul(self.tril.t(), gy.view(T, -1)).view_as(gy).div_(self.E)
        return _hillis_steele(self.decay[1:], gy, reverse=True)


def _hillis_steele(decay: torch.Tensor, x: torch.Tensor, reverse: bool) -> torch.Tensor:
    """In-place linear scan on x (T, ...) in log2(T) vectorised steps.

    Forward:  x_t <- x_t + decay[t-1] x_{t-1}   (decay[t-1] = exp(Δ_t A), t >= 1)
    Reverse:  x_t <- x_t + decay[t] x_{t+1}     (decay[t] = exp(Δ_{t+1} A), t <= T-2)
    """
    T = x.shape[0]
    a = decay.clone()  # a[i] links frames i and i+1; accumulates products over 2^j links
    k = 1
    while k < T:
        if reverse:
            x[: T - k] += a[: T - k] * x[k:]
            if 2 * k < T:
                a[: T - 2 * k] = a[: T - 2 * k] * a[k : T - k]
        else:
            x[k:] += a[k - 1 :] * x[: T - k]
            if 2 * k < T:
                a[2 * k - 1 :] = a[2 * k - 1 :] * a[k - 1 : T - 1 - k]
        k *= 2
    return x


def _bcast(G: torch.Tensor, d: int) -> torch.Tensor:
    """(T, b, G, N) -> (T, b, d, N) by repeating each group over its d/G channels."""
    T, b, g, N = G.shape
    if g == 1:
        return G.expand(T, b, d, N)
    return G[:, :, :, None, :].expand(T, b, g, d // g, N).reshape(T, b, d, N)


def _contract(h: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Σ_n h[t, b, c, n] · G[t, b, group(c), n] -> (T, b, d)."""
    T, b, d, N = h.shape
    g = G.shape[2]
    return torch.matmul(h.view(T, b, g, d // g, N), G.unsqueeze(-1)).view(T, b, d)


def _group_sum(h: torch.Tensor, w: torch.Tensor, g: int) -> torch.Tensor:
    """Σ_{c in group} h[t, b, c, n] · w[t, b, c] -> (T, b, g, N)."""
    T, b, d, N = h.shape
    out = torch.matmul(w.view(T, b, g, 1, d // g), h.view(T, b, g, d // g, N))  # (T, b, g, 1, N)
    return out.view(T, b, g, N)


Plan = List[Tuple[int, int, bool]]


def _plan_chunks(dt: torch.Tensor, A: torch.Tensor, chunk: int) -> Plan:
    """Chunks (t0, t1, closed): closed iff max|A| · Σ_{k=t0+1}^{t1-1} |Δ_k| <= limit.

    dt: (L, b, d) time-major step sizes (contiguous).
    """
    L = dt.shape[0]
    full = L // chunk
    spans = []  # Σ|Δ| over each chunk but its first frame: (chunks, b, d)
    if full:
        spans.append(dt[: full * chunk].view(full, chunk, *dt.shape[1:])[:, 1:].abs().sum(1))
    if L % chunk:
        spans.append(dt[full * chunk + 1 :].abs().sum(0, keepdim=True))
    worst = (torch.cat(spans) * A.abs().amax(dim=1)).flatten(1).amax(dim=1)
    closed = (worst <= _MAX_LOG_RANGE[dt.dtype]).tolist()
    return [(t0, min(t0 + chunk, L), c) for t0, c in zip(range(0, L, chunk), closed)]


def _tril(plan: Plan, like: torch.Tensor) -> torch.Tensor:
    T = max(t1 - t0 for t0, t1, _ in plan)
    return torch.ones(T, T, dtype=like.dtype, device=like.device).tril_()


def _scan_forward(uu, dt, A, Bt, Ct, h, plan: Plan, keep_every: int = 0):
    """Run all chunks; returns y (L, b, d), the last state, and the states before every
    ``keep_every``-th chunk (none when 0)."""
    L, b, d = uu.shape
    y = uu.new_empty(L, b, d)
    tril = _tril(plan, uu)
    starts = []
    for i, (t0, t1, closed) in enumerate(plan):
        if keep_every and i % keep_every == 0:
            starts.append(h)
        hs = _Chunk(uu[t0:t1], dt[t0:t1], A, Bt[t0:t1], closed, tril).states(h, reuse_x=True)
        y[t0:t1] = _contract(hs, Ct[t0:t1])
        h = hs[-1].clone()  # not a view: lets the chunk's states be freed
    return y, h, starts


class _SelectiveScanFn(torch.autograd.Function):
    """y = Σ_n C h (no D, no gate) and the last state, with a recomputing backward.

    The forward keeps the state before every segment of ``per_segment`` chunks (about
    ``SEGMENT_ELEMENTS`` state elements); the backward recomputes one segment's chunks at a
    time, then runs the adjoint through them in reverse.
    """

    @staticmethod
    def forward(ctx, uu, dt, A, Bt, Ct, h0, chunk: int):
        plan = _plan_chunks(dt, A, chunk)
        per_segment = max(1, SEGMENT_ELEMENTS // (chunk * h0.numel()))
        y, last, starts = _scan_forward(uu, dt, A, Bt, Ct, h0, plan, keep_every=per_segment)
        ctx.plan, ctx.per_segment = plan, per_segment
        ctx.save_for_backward(uu, dt, A, Bt, Ct, *starts)
        return y, last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, dlast):
        uu, dt, A, Bt, Ct, *starts = ctx.saved_tensors
        L, b, d = uu.shape
        du, ddt = torch.empty_like(uu), torch.empty_like(dt)
        dB, dC = torch.empty_like(Bt), torch.empty_like(Ct)
        dA = torch.zeros_like(A)
        dy = torch.zeros_like(uu) if dy is None else dy
        carry = torch.zeros_like(starts[0]) if dlast is None else dlast.clone()  # dL/dh at chunk end
        tril = _tril(ctx.plan, uu)
        k = ctx.per_segment
        for first in reversed(range(0, len(ctx.plan), k)):
            h, segment = starts[first // k], []
            for t0, t1, closed in ctx.plan[first : first + k]:
                chunk = _Chunk(uu[t0:t1], dt[t0:t1], A, Bt[t0:t1], closed, tril)
                hs = chunk.states(h)
                segment.append((slice(t0, t1), chunk, hs))
                h = hs[-1]
            for sl, chunk, hs in reversed(segment):
                dt_c, u_c, dy_c = dt[sl], uu[sl], dy[sl]
                gy = _bcast(Ct[sl], d) * dy_c[..., None]  # ∂L/∂h_t through y_t
                gy[-1] += carry
                g = chunk.adjoint(gy)  # ∂L/∂h_t
                carry = chunk.first_decay() * g[0]
                q = g * (hs - chunk.x)  # ∂L/∂(Δ_t A) = g_t · exp(Δ_t A) h_{t-1}
                gB = _contract(g, Bt[sl])  # Σ_n g B
                du[sl] = dt_c * gB
                ddt[sl] = u_c * gB + (q * A).sum(-1)
                dA += q.mul_(dt_c[..., None]).sum((0, 1))
                dB[sl] = _group_sum(g, dt_c * u_c, Bt.shape[2])
                dC[sl] = _group_sum(hs, dy_c, Ct.shape[2])
        return du, ddt, dA, dB, dC, carry, None


# --------------------------------------------------------------------------- fused kernels
@functools.lru_cache(maxsize=1)
def _mamba_selective_scan_fn():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # not installed, or built for another torch/CUDA
        return None
    return selective_scan_fn


def _use_fused(fn: str, backend: str, u: torch.Tensor, A: torch.Tensor, initial_state) -> bool:
    if backend in ("torch", "cpu"):
        return False
    usable = u.is_cuda and initial_state is None and _mamba_selective_scan_fn() is not None
    if backend == "mamba_ssm" and not usable:
        raise ValueError(
            f"{fn}: backend='mamba_ssm' needs CUDA tensors, no initial_state and an importable "
            "mamba_ssm package"
        )
    return usable


def _cpu_kernel(fn: str, backend: str, device: torch.device):
    """The compiled CPU module when this call should use it, else None."""
    if backend == "cpu":
        if device.type != "cpu":
            raise ValueError(f"{fn}: backend='cpu' needs CPU tensors, got {device}")
        if torch.jit.is_tracing():
            raise ValueError(f"{fn}: backend='cpu' cannot be traced (a trace records torch "
                             "operations only); use backend='auto' or 'torch'")
        try:
            return cpu_kernels.require()
        except cpu_kernels.KernelUnavailable as e:
            raise ValueError(f"{fn}: backend='cpu': {e}") from None
    if backend == "auto" and device.type == "cpu" and not torch.jit.is_tracing():
        # (a trace would record the compiled kernel's outputs as constants)
        return cpu_kernels.kernel()
    return None


def _segment_frames(N: int) -> int:
    """Frames per saved state in training: S >= N keeps the saved states (batch·d·N·L/S)
    no larger than u itself, and a segment's recomputed states (S·N per thread) small."""
    return max(64, N)


class _CompiledScanFn(torch.autograd.Function):
    """The whole scan (Δ, D, gate included) in the compiled CPU kernel, forward and backward."""

    @staticmethod
    def forward(ctx, kernel, u, delta, A, Bt, Ct, D, z, delta_bias, h0, softplus: bool):
        # states for the backward only when something needs a gradient (inference keeps none)
        segment = _segment_frames(A.shape[1]) if any(ctx.needs_input_grad) else 0
        y, last, starts = kernel.forward(u, delta, A, Bt, Ct, D, z, delta_bias, softplus, h0, segment)
        ctx.kernel, ctx.softplus, ctx.segment = kernel, softplus, segment
        ctx.has_h0 = h0 is not None
        ctx.save_for_backward(u, delta, A, Bt, Ct, D, z, delta_bias, starts)
        return y, last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, dlast):
        u, delta, A, Bt, Ct, D, z, bias, starts = ctx.saved_tensors
        dy = torch.zeros_like(u) if dy is None else dy.contiguous()
        dlast = None if dlast is None else dlast.contiguous()
        du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = ctx.kernel.backward(
            u, delta, A, Bt, Ct, D, z, bias, ctx.softplus, starts, ctx.segment, dy, dlast
        )
        return (
            None, du, ddelta, dA, dB, dC,
            None if D is None else dD,
            None if z is None else dz,
            None if bias is None else dbias,
            dh0 if ctx.has_h0 else None,
            None,
        )


def _compiled_scan(kernel, u, delta, A, B, C, D, z, delta_bias, softplus, initial_state, dtype):
    """Cast and lay out the inputs as the kernel takes them (B/C time-major per group)."""

    def prep(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if x is None else x.to(dtype).contiguous()

    Bt = _grouped(B, False).to(dtype).transpose(2, 3).contiguous()  # (batch, G, L, N)
    Ct = _grouped(C, False).to(dtype).transpose(2, 3).contiguous()
    return _CompiledScanFn.apply(
        kernel, prep(u), prep(delta), prep(A), Bt, Ct, prep(D), prep(z), prep(delta_bias),
        prep(initial_state), bool(softplus),
    )


def _auto_chunk(state_elements: int) -> int:
    target = max(1, CHUNK_ELEMENTS // max(1, int(state_elements)))  # int(): traced sizes
    return min(64, max(2, 1 << (target.bit_length() - 1)))


# --------------------------------------------------------------------------- public API
def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    initial_state: Optional[torch.Tensor] = None,
    return_last_state: bool = False,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> ScanOut:
    """Selective scan over a whole sequence (module docstring for the maths).

    Args:
        u: (batch, d, L) input.
        delta: (batch, d, L) raw step sizes.
        A: (d, N) real state matrix diagonal (Mamba uses A = -exp(A_log)).
        B, C: (batch, N, L) or grouped (batch, G, N, L).
        D: optional (d,) skip.
        z: optional (batch, d, L) gate input (y · SiLU(z)).
        delta_bias: optional (d,) added to delta (before the softplus).
        delta_softplus: apply softplus to delta + delta_bias.
        initial_state: optional (batch, d, N) state before the first frame.
        return_last_state: also return the state after the last frame, (batch, d, N).
        chunk_size: frames per chunk (speed/memory trade-off, not semantics); None picks a
            power of two in [2, 64] with about ``CHUNK_ELEMENTS`` state elements per chunk.
        backend: ``"auto"`` (the compiled kernel for CPU inputs when it could be built,
            mamba_ssm's fused kernel for CUDA inputs when importable, else the PyTorch scan),
            ``"torch"`` (always the PyTorch scan), ``"cpu"`` (the compiled CPU kernel, else
            ValueError) or ``"mamba_ssm"`` (fused CUDA kernel, else ValueError).

    Returns:
        y (batch, d, L) in u's dtype, and the last state if requested.
    """
    fn = "selective_scan"
    check_choice(fn, "backend", backend, BACKENDS)
    check_tensor(fn, "u", u, (None, None, None), "(batch, d, L)")
    batch, d, L = u.shape
    check_tensor(fn, "delta", delta, (batch, d, L), "(batch, d, L)")
    if isinstance(A, torch.Tensor) and A.is_complex():
        raise ValueError(f"{fn}: A must be real (Mamba's A); use the S4D ops for complex modes")
    check_tensor(fn, "A", A, (d, None), "(d, N)")
    N = A.shape[1]
    _check_bc(fn, "B", B, batch, d, N, L)
    _check_bc(fn, "C", C, batch, d, N, L)
    check_optional(fn, "D", D, (d,), "(d,)")
    check_optional(fn, "z", z, (batch, d, L), "(batch, d, L)")
    check_optional(fn, "delta_bias", delta_bias, (d,), "(d,)")
    check_optional(fn, "initial_state", initial_state, (batch, d, N), "(batch, d, N)")
    if chunk_size is None:
        chunk_size = _auto_chunk(batch * d * N)
    elif not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{fn}: chunk_size must be None or a positive int, got {chunk_size!r}")

    if _use_fused(fn, backend, u, A, initial_state):
        return _mamba_selective_scan_fn()(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state
        )

    dtype = _compute_dtype(u, delta, A, B, C)
    kernel = _cpu_kernel(fn, backend, u.device) if L > 0 else None
    with torch.autocast(device_type=u.device.type, enabled=False):
        if kernel is not None:
            y, last = _compiled_scan(
                kernel, u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, dtype
            )
            y = y.to(u.dtype)
            return (y, last) if return_last_state else y
        # time-major copies: every chunk is then one contiguous slab (and so are the gradients)
        uu = u.to(dtype).permute(2, 0, 1).contiguous()
        dt = _delta(delta.permute(2, 0, 1).contiguous(), delta_bias, delta_softplus, dtype)
        Bt = _grouped(B, False).to(dtype).permute(3, 0, 1, 2).contiguous()
        Ct = _grouped(C, False).to(dtype).permute(3, 0, 1, 2).contiguous()
        A_ = A.to(dtype)
        h0 = u.new_zeros(batch, d, N, dtype=dtype) if initial_state is None else initial_state.to(dtype)
        if L == 0:
            y, last = uu, h0
        elif torch.is_grad_enabled() and any(
            t.requires_grad for t in (u, delta, A, B, C, h0, delta_bias) if t is not None
        ):
            y, last = _SelectiveScanFn.apply(uu, dt, A_, Bt, Ct, h0, chunk_size)
        else:
            y, last, _ = _scan_forward(uu, dt, A_, Bt, Ct, h0, _plan_chunks(dt, A_, chunk_size))
        y = _finish(y.permute(1, 2, 0), u, D, z, (d, 1)).to(u.dtype)
    return (y, last) if return_last_state else y


def selective_scan_step(
    state: torch.Tensor,
    u_t: torch.Tensor,
    delta_t: torch.Tensor,
    A: torch.Tensor,
    B_t: torch.Tensor,
    C_t: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z_t: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    backend: str = "auto",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One frame of :func:`selective_scan` (streaming).

    Args:
        state: (batch, d, N) state h_{t-1}.
        u_t, delta_t: (batch, d); z_t: optional (batch, d).
        A: (d, N) real; B_t, C_t: (batch, N) or (batch, G, N).
        D, delta_bias: optional (d,).
        backend: ``"auto"`` (the compiled CPU kernel for CPU inputs when available, no autograd),
            ``"torch"`` or ``"cpu"``; there is no CUDA kernel for one frame.

    Returns:
        (y_t (batch, d) in u_t's dtype, new state (batch, d, N) in the compute dtype).
    """
    fn = "selective_scan_step"
    check_tensor(fn, "u_t", u_t, (None, None), "(batch, d)")
    batch, d = u_t.shape
    check_tensor(fn, "delta_t", delta_t, (batch, d), "(batch, d)")
    check_tensor(fn, "A", A, (d, None), "(d, N)")
    N = A.shape[1]
    check_tensor(fn, "state", state, (batch, d, N), "(batch, d, N)")
    _check_bc(fn, "B_t", B_t, batch, d, N, None)
    _check_bc(fn, "C_t", C_t, batch, d, N, None)
    check_optional(fn, "D", D, (d,), "(d,)")
    check_optional(fn, "z_t", z_t, (batch, d), "(batch, d)")
    check_optional(fn, "delta_bias", delta_bias, (d,), "(d,)")
    check_choice(fn, "backend", backend, ("auto", "torch", "cpu"))
    dtype = _compute_dtype(u_t, delta_t, A, B_t, C_t, state)
    grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (state, u_t, delta_t, A, B_t, C_t, D, z_t, delta_bias) if t is not None
    )
    if grad and backend == "cpu":
        raise ValueError(f"{fn}: backend='cpu' has no gradient for one frame; use backend='torch'")
    kernel = None if grad else _cpu_kernel(fn, backend, u_t.device)
    with torch.autocast(device_type=u_t.device.type, enabled=False):
        if kernel is not None:

            def prep(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
                return None if x is None else x.to(dtype).contiguous()

            Bg, Cg = (_grouped(x, True).to(dtype).contiguous() for x in (B_t, C_t))
            y, new = kernel.step(
                prep(state), prep(u_t), prep(delta_t), prep(A), Bg, Cg, prep(D), prep(z_t),
                prep(delta_bias), bool(delta_softplus),
            )
            return y.to(u_t.dtype), new
        dt = _delta(delta_t, delta_bias, delta_softplus, dtype)  # (batch, d)
        Bg = _grouped(B_t, True).to(dtype)  # (batch, G, N)
        Cg = _grouped(C_t, True).to(dtype)
        # reuse the chunk helpers with T = 1
        Bx = _bcast(Bg[None], d)[0]  # (batch, d, N)
        new = torch.exp(dt[..., None] * A.to(dtype)) * state.to(dtype) + Bx * (dt * u_t.to(dtype))[..., None]
        y = _contract(new[None], Cg[None])[0]
        y = _finish(y, u_t, D, z_t, (d,)).to(u_t.dtype)
    return y, new
