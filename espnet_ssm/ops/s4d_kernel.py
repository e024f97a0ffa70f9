"""Diagonal (S4D) state space kernels: discretisation, convolution kernel, recurrent step.

Per channel h with N diagonal modes and step Δ_h = exp(log_dt_h):

    x_k = Ā x_{k-1} + B̄ u_k,        y_k = Re(C x_k) + D u_k
    ZOH:       Ā = exp(ΔA),                 B̄ = (exp(ΔA) - 1) / A · B
    bilinear:  Ā = (1 + ΔA/2) / (1 - ΔA/2), B̄ = Δ B / (1 - ΔA/2)
    kernel:    K_l = Re( Σ_n C_n B̄_n Ā_n^l ),  l = 0 .. L-1     =>  y = causal_conv(u, K) + D u

There is no implicit factor 2: a caller that stores complex modes as conjugate pairs doubles C.
Powers are taken in log space, Ā^l = exp(l · log Ā), so |Ā| <= 1 never overflows however large
l or |ΔA| is. A with a positive real part is rejected with a ValueError (never clamped).

The Vandermonde matrix (H, N, L) is never built: with l = j·M + i (M ≈ √L),
K[h, jM + i] = Re(Σ_n (W Ā^{jM})[h,n,j] · Ā^i[h,n,i]), a batched real matmul over 2N.
Reading: state-spaces/s4 ``models/s4/s4d.py`` (S4DKernel) for the ZOH kernel.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from espnet_ssm.ops.tensor_checks import check_choice, check_optional, check_stable, check_tensor
from espnet_ssm.ops.depthwise_conv import causal_depthwise_conv

DISCRETIZATIONS = ("zoh", "bilinear")
# log|Ā| floor: Ā = 0 exactly (bilinear at ΔA = -2) would give 0·(-inf) = NaN at l = 0.
_LOG_FLOOR = -1e4
_NEGLIGIBLE_LOG = -35.0


def _phi1(z: torch.Tensor) -> torch.Tensor:
    """(exp(z) - 1) / z, equal to 1 at z = 0 (safe for gradients too)."""
    zero = z == 0
    z_safe = torch.where(zero, torch.ones_like(z), z)
    return torch.where(zero, torch.ones_like(z), torch.expm1(z_safe) / z_safe)


def _check_ssm(fn: str, log_dt, A, B) -> Tuple[int, int]:
    check_tensor(fn, "log_dt", log_dt, (None,), "(H,)")
    H = log_dt.shape[0]
    check_tensor(fn, "A", A, (H, None), "(H, N)", complex_ok=True)
    N = A.shape[1]
    check_tensor(fn, "B", B, (H, N), "(H, N)", complex_ok=True)
    check_stable(fn, A)
    return H, N


def _discretize_log(
    log_dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, discretization: str
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(log Ā, B̄), both (H, N). Real A with bilinear becomes complex (Ā may be negative)."""
    dtA = log_dt.exp()[:, None] * A
    if discretization == "zoh":
        log_dA = dtA
        dB = B * log_dt.exp()[:, None] * _phi1(dtA)
    else:
        if not dtA.is_complex():
            dtA = torch.complex(dtA, torch.zeros_like(dtA))
        log_dA = torch.log1p(dtA / 2) - torch.log1p(-dtA / 2)
        dB = B * log_dt.exp()[:, None] / (1 - dtA / 2)
    if log_dA.is_complex():
        log_dA = torch.complex(log_dA.real.clamp(min=_LOG_FLOOR), log_dA.imag)
    else:
        log_dA = log_dA.clamp(min=_LOG_FLOOR)
    return log_dA, dB


def s4d_discretize(
    log_dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, discretization: str = "zoh"
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Discretise a diagonal SSM: returns (Ā, B̄), both (H, N), for :func:`s4d_step`.

    Args:
        log_dt: (H,) log step sizes.
        A: (H, N) real or complex, Re(A) <= 0.
        B: (H, N) real or complex.
        discretization: ``"zoh"`` or ``"bilinear"`` (formulas in the module docstring).
    """
    check_choice("s4d_discretize", "discretization", discretization, DISCRETIZATIONS)
    _check_ssm("s4d_discretize", log_dt, A, B)
    log_dA, dB = _discretize_log(log_dt, A, B, discretization)
    return log_dA.exp(), dB


def _powers(log_dA: torch.Tensor, exponents: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(Re, Im) of Ā^e = exp(e · log Ā) for each exponent, shape (H, len(e), N).

    Written with real exp/cos/sin (vectorised, unlike complex exp); Im is None for real Ā.
    Powers below exp(-35) ≈ 6e-16 are set to 0: they are negligible even in float64, and
    products of such tiny numbers would be subnormal, which CPUs multiply very slowly.
    """
    e = exponents[:, None]
    log_mag = (log_dA.real if log_dA.is_complex() else log_dA)[:, None, :] * e
    magnitude = torch.where(log_mag < _NEGLIGIBLE_LOG, torch.zeros_like(log_mag), torch.exp(log_mag))
    if not log_dA.is_complex():
        return magnitude, None
    phase = log_dA.imag[:, None, :] * e
    return magnitude * torch.cos(phase), magnitude * torch.sin(phase)


def _powers_matmul(weight: torch.Tensor, log_dA: torch.Tensor, L: int) -> torch.Tensor:
    """Re(Σ_n weight[..., h, n] · Ā[h, n]^l) for l < L, shape (K, H, L).

    weight: (K, H, N); log_dA: (H, N). Uses the two-level split l = j·M + i (module doc):
    Re(w Ā^{jM} · Ā^i) = Re(w Ā^{jM})·Re(Ā^i) - Im(w Ā^{jM})·Im(Ā^i), one real matmul over 2N.
    """
    M = math.isqrt(L - 1) + 1
    J = -(-L // M)
    ar = torch.arange(max(M, J), device=log_dA.device, dtype=log_dA.real.dtype)
    in_re, in_im = _powers(log_dA, ar[:M])  # Ā^i, (H, M, N)
    out_re, out_im = _powers(log_dA, ar[:J] * M)  # Ā^{jM}, (H, J, N)
    w = weight[:, :, None, :]  # (K, H, 1, N)
    if weight.is_complex() or in_im is not None:
        w_re, w_im = (w.real, w.imag) if weight.is_complex() else (w, torch.zeros_like(w))
        if out_im is None:
            out_im, in_im = torch.zeros_like(out_re), torch.zeros_like(in_re)
        left_re = w_re * out_re - w_im * out_im  # (K, H, J, N)
        left_im = w_re * out_im + w_im * out_re
        left = torch.cat([left_re, -left_im], dim=-1)  # (K, H, J, 2N)
        right = torch.cat([in_re, in_im], dim=-1)  # (H, M, 2N)
    else:
        left, right = w * out_re, in_re
    out = torch.matmul(left, right.transpose(-1, -2))  # (K, H, J, M)
    return out.reshape(out.shape[0], out.shape[1], J * M)[..., :L]


def s4d_kernel(
    log_dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    L: int,
    discretization: str = "zoh",
) -> torch.Tensor:
    """Real S4D convolution kernel K[h, l] = Re(Σ_n C[h,n] B̄[h,n] Ā[h,n]^l), l < L.

    Args:
        log_dt: (H,) log step sizes.
        A: (H, N) real or complex state matrix diagonal, Re(A) <= 0 (else ValueError).
        B: (H, N) real or complex.
        C: (H, N), or (K, H, N) for K kernels sharing A, Δ, B (e.g. two directions).
        L: kernel length (>= 1).
        discretization: ``"zoh"`` or ``"bilinear"``.

    Returns:
        (H, L) real kernel, or (K, H, L) when C has a leading dimension.
    """
    fn = "s4d_kernel"
    check_choice(fn, "discretization", discretization, DISCRETIZATIONS)
    H, N = _check_ssm(fn, log_dt, A, B)
    if not isinstance(L, int) or L < 1:
        raise ValueError(f"{fn}: L must be a positive int, got {L!r}")
    squeeze = isinstance(C, torch.Tensor) and C.dim() == 2
    check_tensor(fn, "C", C, (H, N) if squeeze else (None, H, N), "(H, N) or (K, H, N)", complex_ok=True)
    with torch.autocast(device_type=log_dt.device.type, enabled=False):  # kernels in full precision
        log_dA, dB = _discretize_log(log_dt, A, B, discretization)
        K = _powers_matmul((C if not squeeze else C[None]) * dB, log_dA, L)
    return K[0] if squeeze else K


def s4d_step(
    state: torch.Tensor,
    u_t: torch.Tensor,
    dA: torch.Tensor,
    dB: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    check: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One recurrent step: x' = Ā x + B̄ u_t, y_t = Re(Σ_n C x') + D u_t.

    Args:
        state: (batch, H, N) previous state x (complex when A is complex).
        u_t: (batch, H) input frame.
        dA, dB: (H, N) from :func:`s4d_discretize`.
        C: (H, N).
        D: optional (H,) skip.
        check: validate the shapes; per-frame loops over already checked inputs pass False
            after the first frame (the checks cost about a quarter of a step).

    Returns:
        (y_t (batch, H), new_state (batch, H, N)).
    """
    if check:
        fn = "s4d_step"
        check_tensor(fn, "dA", dA, (None, None), "(H, N)", complex_ok=True)
        H, N = dA.shape
        check_tensor(fn, "dB", dB, (H, N), "(H, N)", complex_ok=True)
        check_tensor(fn, "C", C, (H, N), "(H, N)", complex_ok=True)
        check_tensor(fn, "u_t", u_t, (None, H), "(batch, H)")
        check_tensor(fn, "state", state, (u_t.shape[0], H, N), "(batch, H, N)", complex_ok=True)
        check_optional(fn, "D", D, (H,), "(H,)")
    new_state = dA * state + dB * u_t[..., None]
    y = (C * new_state).sum(-1)
    y = y.real if y.is_complex() else y
    if D is not None:
        y = y + D * u_t
    return y.to(u_t.dtype), new_state


def s4d_planar_steps(
    u: torch.Tensor,
    state: torch.Tensor,
    dA: torch.Tensor,
    dB: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """l recurrent steps in real arithmetic on planar (real, imaginary) arrays, no checks.

    The same maths as l calls of :func:`s4d_step`, written with real element-wise operations
    only: the reference of the compiled operator ``torch.ops.espnet_ssm.s4d_planar_steps``
    (``csrc/s4d_steps_cpu.cpp``), which S4D layers use on the CPU. A complex SSM passes ``dA``, ``dB``, ``C`` as
    (2, H, N) planes (real part, imaginary part) and its state as (B, 2, H, N); a real SSM
    passes (H, N) and (B, H, N).

    Returns:
        (y (B, l, H), the state after the chunk in the same layout).
    """
    ys = []
    if dA.dim() == 3:
        (ar, ai), (br, bi), (cr, ci) = dA, dB, C
        sr, si = state[:, 0], state[:, 1]
        for t in range(u.size(1)):
            ut = u[:, t, :, None]
            sr, si = ar * sr - ai * si + br * ut, ar * si + ai * sr + bi * ut
            ys.append((cr * sr - ci * si).sum(-1))  # Re(C x)
        state = torch.stack([sr, si], dim=1)
    else:
        for t in range(u.size(1)):
            state = dA * state + dB * u[:, t, :, None]
            ys.append((C * state).sum(-1))
    y = torch.stack(ys, dim=1)
    return (y + D * u if D is not None else y), state


def s4d_chunk(
    u: torch.Tensor,
    state: torch.Tensor,
    log_dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    discretization: str = "zoh",
    block: int = 256,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Causal S4D on a chunk that continues from a carried state (streaming).

    With state s = x_{-1} and chunk inputs u_0 .. u_{l-1}:

        y_t   = Re(Σ_n C_n Ā_n^{t+1} s_n) + (K * u)_t + D u_t
        s_new = Ā^l s + Σ_j Ā^{l-1-j} B̄ u_j

    computed in blocks of ``block`` frames (memory O(H·N·block)), so that feeding a sequence in
    chunks of any sizes gives exactly the full-sequence output.

    Args:
        u: (batch, H, l) chunk.
        state: (batch, H, N) carried state (zeros at the start; complex for complex A).
        log_dt, A, B, C, D, discretization: as in :func:`s4d_kernel` / :func:`s4d_step`.

    Returns:
        (y (batch, H, l), new_state (batch, H, N)).
    """
    fn = "s4d_chunk"
    check_choice(fn, "discretization", discretization, DISCRETIZATIONS)
    H, N = _check_ssm(fn, log_dt, A, B)
    check_tensor(fn, "C", C, (H, N), "(H, N)", complex_ok=True)
    check_tensor(fn, "u", u, (None, H, None), "(batch, H, l)")
    check_tensor(fn, "state", state, (u.shape[0], H, N), "(batch, H, N)", complex_ok=True)
    check_optional(fn, "D", D, (H,), "(H,)")
    with torch.autocast(device_type=u.device.type, enabled=False):
        return _chunk(u, state, log_dt, A, B, C, D, discretization, block)


def _chunk(u, state, log_dt, A, B, C, D, discretization, block):
    log_dA, dB = _discretize_log(log_dt, A, B, discretization)
    if log_dA.is_complex() and not state.is_complex():
        state = torch.complex(state, torch.zeros_like(state))
    ys = []
    for u_blk in u.split(block, dim=-1):
        n = u_blk.shape[-1]
        powers = torch.exp(log_dA[..., None] * torch.arange(n + 1, device=u.device, dtype=log_dA.real.dtype))
        kernel = _powers_matmul((C * dB)[None], log_dA, n)[0]  # (H, n)
        y = causal_depthwise_conv(u_blk, kernel.to(u.dtype))
        y_state = torch.einsum("hnt,bhn->bht", C[..., None] * powers[..., 1:], state.to(powers.dtype))
        y = y + (y_state.real if y_state.is_complex() else y_state).to(u.dtype)
        ys.append(y)
        # s_new = Ā^n s + Σ_j Ā^{n-1-j} B̄ u_j
        fold = dB[..., None] * powers[..., :n].flip(-1)  # (H, N, n)
        state = powers[..., n] * state + torch.einsum("bht,hnt->bhn", u_blk.to(fold.dtype), fold)
    y = torch.cat(ys, dim=-1)
    if D is not None:
        y = y + D[:, None] * u
    return y, state

