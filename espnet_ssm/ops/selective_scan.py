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

i.e. one cumulative sum per chunk; chunks are visited in order, carrying h. exp(-R_s) is
bounded by exp(M) by construction: a chunk whose worst-case log-decay range max|A|·ΣΔ exceeds
M (40 in float32, 300 in float64) is split in halves until it does not (a single frame always
qualifies), so the closed form never overflows whatever Δ and A are. The backward pass is a
custom autograd function that keeps only the inputs and one state per chunk, recomputes each
chunk, and runs the adjoint recurrence g_t = C_t dy_t + exp(a_{t+1}) g_{t+1} in the same
closed form backwards. Memory is O(batch·d·N·T) per chunk plus O(batch·d·N·L/T) saved states,
never O(batch·d·N·L).

The scan runs in float32 (float64 for float64 inputs) with autocast disabled; y is returned in
u's dtype and the last state in the compute dtype (as mamba_ssm does). On CUDA, when the
optional ``mamba_ssm`` package is importable, the fused kernel is used instead (``backend``).
Reading: mamba_ssm ``ops/selective_scan_interface.py`` (selective_scan_ref) for the semantics.
"""
from __future__ import annotations

import functools
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from espnet_ssm.ops._checks import check_choice, check_optional, check_tensor

BACKENDS = ("auto", "torch", "mamba_ssm")
DEFAULT_CHUNK = 32
# largest exponent range allowed inside one chunk (see module docstring)
_MAX_LOG_RANGE = {torch.float32: 40.0, torch.float64: 300.0}

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
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None] if delta.dim() == 3 else delta + delta_bias.to(dtype)
    return F.softplus(delta) if softplus else delta


def _finish(y: torch.Tensor, u: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor], shape_d) -> torch.Tensor:
    """y + D u, then the SiLU(z) gate; all in y's (compute) dtype."""
    if D is not None:
        y = y + D.to(y.dtype).view(shape_d) * u.to(y.dtype)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


# --------------------------------------------------------------------------- chunk kernels
def _chunk_states(
    h: torch.Tensor,
    uu: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    Bc: torch.Tensor,
    tril: torch.Tensor,
    for_backward: bool = False,
):
    """States of one chunk in closed form (time-major).

    Args:
        h: (b, d, N) state before the chunk; uu, dt: (T, b, d); A: (d, N); Bc: (T, b, G, N);
        tril: (>=T, >=T) lower-triangular ones (the cumulative sum as one matmul).
        for_backward: also return x = Δ B u, E = exp(R) and 1/E.

    Returns:
        hs (T, b, d, N), or (hs, x, E, Einv).
    """
    T, b, d = dt.shape
    lam = torch.cumsum(dt, 0) - dt[:1]  # Σ_{k=1}^{t} Δ_k
    E = torch.exp(lam[..., None] * A)  # >= exp(-M): the chunk plan bounds the range
    Einv = torch.reciprocal(E)
    x = _bcast(Bc, d) * (dt * uu)[..., None]
    w = x * Einv if for_backward else x.mul_(Einv)
    w[0].addcmul_(torch.exp(dt[0][..., None] * A), h)
    hs = torch.matmul(tril[:T, :T], w.view(T, -1)).view(T, b, d, -1).mul_(E)
    return (hs, x, E, Einv) if for_backward else hs


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
    return torch.einsum("tbgcn,tbgn->tbgc", h.view(T, b, g, d // g, N), G).reshape(T, b, d)


def _group_sum(h: torch.Tensor, w: torch.Tensor, g: int) -> torch.Tensor:
    """Σ_{c in group} h[t, b, c, n] · w[t, b, c] -> (T, b, g, N)."""
    T, b, d, N = h.shape
    out = torch.matmul(w.view(T, b, g, 1, d // g), h.view(T, b, g, d // g, N))  # (T, b, g, 1, N)
    return out.view(T, b, g, N)


def _plan_chunks(dt: torch.Tensor, A: torch.Tensor, chunk: int) -> List[Tuple[int, int]]:
    """Chunk boundaries such that max|A| · Σ_{k=t0+1}^{t1-1} Δ_k <= M in every chunk.

    dt: (L, b, d) time-major step sizes (>= 0 expected; negative Δ only loosens nothing).
    """
    L = dt.shape[0]
    limit = _MAX_LOG_RANGE[dt.dtype]
    a_max = A.abs().amax(dim=1)  # (d,)
    prefix = torch.cumsum(F.pad(dt.abs().double(), (0, 0, 0, 0, 1, 0)), 0)  # prefix[i] = Σ_{k<i} |Δ_k|
    bounds = list(range(0, L, chunk)) + [L]

    def worst(t0: torch.Tensor, t1: torch.Tensor) -> List[float]:
        span = prefix[t1] - prefix[torch.clamp(t0 + 1, max=L)]  # Σ over t0+1 .. t1-1
        return (span * a_max).flatten(1).amax(dim=1).tolist()

    todo = list(zip(bounds[:-1], bounds[1:]))
    plan: List[Tuple[int, int]] = []
    while todo:
        starts = torch.tensor([t0 for t0, _ in todo])
        ends = torch.tensor([t1 for _, t1 in todo])
        nxt = []
        for (t0, t1), r in zip(todo, worst(starts, ends)):
            if r <= limit or t1 - t0 == 1:
                plan.append((t0, t1))
            else:
                mid = (t0 + t1) // 2
                nxt += [(t0, mid), (mid, t1)]
        todo = nxt
    return sorted(plan)


def _scan_forward(uu, dt, A, Bt, Ct, h, plan, keep_states: bool):
    """Run all chunks; returns y (L, b, d), last state, and the chunk start states if kept."""
    L, b, d = uu.shape
    y = uu.new_empty(L, b, d)
    tril = _tril(plan, uu)
    starts = []
    for t0, t1 in plan:
        if keep_states:
            starts.append(h)
        hs = _chunk_states(h, uu[t0:t1], dt[t0:t1], A, Bt[t0:t1], tril)
        y[t0:t1] = _contract(hs, Ct[t0:t1])
        h = hs[-1].clone()  # not a view: keeps the chunk's states collectable
    return y, h, starts


def _tril(plan: List[Tuple[int, int]], like: torch.Tensor) -> torch.Tensor:
    T = max(t1 - t0 for t0, t1 in plan)
    return torch.ones(T, T, dtype=like.dtype, device=like.device).tril_()


class _SelectiveScanFn(torch.autograd.Function):
    """y = Σ_n C h (no D, no gate) and the last state, with a recomputing backward."""

    @staticmethod
    def forward(ctx, uu, dt, A, Bt, Ct, h0, chunk: int):
        plan = _plan_chunks(dt, A, chunk)
        y, last, starts = _scan_forward(uu, dt, A, Bt, Ct, h0, plan, keep_states=True)
        ctx.plan = plan
        ctx.save_for_backward(uu, dt, A, Bt, Ct, *starts)
        return y, last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, dlast):
        uu, dt, A, Bt, Ct, *starts = ctx.saved_tensors
        L, b, d = uu.shape
        gB_, gC_ = Bt.shape[2], Ct.shape[2]
        du, ddt = torch.empty_like(uu), torch.empty_like(dt)
        dB, dC = torch.empty_like(Bt), torch.empty_like(Ct)
        dA = torch.zeros_like(A)
        dy = torch.zeros_like(uu) if dy is None else dy
        carry = torch.zeros_like(starts[0]) if dlast is None else dlast.clone()  # dL/dh_{t1-1}
        tril = _tril(ctx.plan, uu)
        for (t0, t1), h in zip(reversed(ctx.plan), reversed(starts)):
            sl, T = slice(t0, t1), t1 - t0
            hs, x, E, Einv = _chunk_states(h, uu[sl], dt[sl], A, Bt[sl], tril, for_backward=True)
            gy = _bcast(Ct[sl], d) * dy[sl][..., None]
            gy[-1] += carry
            # g_t = exp(-R_t) Σ_{s>=t} exp(R_s) gy_s  (reverse cumulative sum: upper triangle)
            g = torch.matmul(tril[:T, :T].t(), gy.mul_(E).reshape(T, -1)).view_as(gy).mul_(Einv)
            carry = torch.exp(dt[t0][..., None] * A) * g[0]
            q = g * (hs - x)  # dL/da_t, a_t = Δ_t A
            gB = _contract(g, Bt[sl])  # Σ_n g B
            du[sl] = dt[sl] * gB
            ddt[sl] = uu[sl] * gB + (q * A).sum(-1)
            dA += torch.einsum("tbcn,tbc->cn", q, dt[sl])
            dB[sl] = _group_sum(g, dt[sl] * uu[sl], gB_)
            dC[sl] = _group_sum(hs, dy[sl], gC_)
        return du, ddt, dA, dB, dC, carry, None


# --------------------------------------------------------------------------- fused kernel
@functools.lru_cache(maxsize=1)
def _mamba_selective_scan_fn():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # not installed, or built for another torch/CUDA
        return None
    return selective_scan_fn


def _use_fused(fn: str, backend: str, u: torch.Tensor, A: torch.Tensor, initial_state) -> bool:
    if backend == "torch":
        return False
    usable = u.is_cuda and initial_state is None and _mamba_selective_scan_fn() is not None
    if backend == "mamba_ssm" and not usable:
        raise ValueError(
            f"{fn}: backend='mamba_ssm' needs CUDA tensors, no initial_state and an importable "
            "mamba_ssm package"
        )
    return usable


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
    chunk_size: int = DEFAULT_CHUNK,
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
        chunk_size: frames per closed-form chunk (memory/speed trade-off; not semantics).
        backend: ``"auto"`` (mamba_ssm's fused kernel for CUDA inputs when importable),
            ``"torch"`` (always this implementation) or ``"mamba_ssm"`` (fused, else ValueError).

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
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{fn}: chunk_size must be a positive int, got {chunk_size!r}")

    if _use_fused(fn, backend, u, A, initial_state):
        return _mamba_selective_scan_fn()(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state
        )

    dtype = _compute_dtype(u, delta, A, B, C)
    with torch.autocast(device_type=u.device.type, enabled=False):
        dt = _delta(delta, delta_bias, delta_softplus, dtype)
        # time-major copies: every chunk is then one contiguous slab
        uu = u.to(dtype).permute(2, 0, 1).contiguous()
        dt = dt.permute(2, 0, 1).contiguous()
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
            y, last, _ = _scan_forward(uu, dt, A_, Bt, Ct, h0, _plan_chunks(dt, A_, chunk_size), False)
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
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One frame of :func:`selective_scan` (streaming).

    Args:
        state: (batch, d, N) state h_{t-1}.
        u_t, delta_t: (batch, d); z_t: optional (batch, d).
        A: (d, N) real; B_t, C_t: (batch, N) or (batch, G, N).
        D, delta_bias: optional (d,).

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
    dtype = _compute_dtype(u_t, delta_t, A, B_t, C_t, state)
    with torch.autocast(device_type=u_t.device.type, enabled=False):
        dt = _delta(delta_t, delta_bias, delta_softplus, dtype)  # (batch, d)
        Bg = _grouped(B_t, True).to(dtype)  # (batch, G, N)
        Cg = _grouped(C_t, True).to(dtype)
        # reuse the chunk helpers with T = 1
        Bx = _bcast(Bg[None], d)[0]  # (batch, d, N)
        new = torch.exp(dt[..., None] * A.to(dtype)) * state.to(dtype) + Bx * (dt * u_t.to(dtype))[..., None]
        y = _contract(new[None], Cg[None])[0]
        y = _finish(y, u_t, D, z_t, (d,)).to(u_t.dtype)
    return y, new
