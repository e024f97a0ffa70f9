"""Long convolutions of (batch, H, L) inputs with per-channel kernels via the FFT.

Causal:          y[h, t] = Σ_{l=0}^{t} K[h, l] u[h, t-l]  (+ D[h] u[h, t])
Bidirectional:   y[h, t] = Σ_{l>=0} K_fwd[h, l] u[h, t-l] + Σ_{l>=1} K_bwd[h, l-1] u[h, t+l]  (+ D u)

The bidirectional form is S4's two-sided kernel: the backward kernel starts at lag +1, so u_t
is counted once (by K_fwd[0]); both kernels fit in one circular convolution of size >= 2L-1
with K_fwd at the front and K_bwd reversed at the back. Zero-padded frames after an utterance
contribute nothing to its real frames in either direction, so padded batches need no reversal.

FFTs run in float32 (float64 for float64 inputs) with autocast disabled; the result is cast
back to the input dtype.
"""
from __future__ import annotations

from typing import Optional

import torch

from espnet_ssm.ops.tensor_checks import check_optional, check_tensor


def fft_size(m: int) -> int:
    """Smallest n >= m of the form 2^a·3^b (fast sizes for pocketfft and cuFFT)."""
    best, p3 = 1 << max(0, (m - 1).bit_length()), 1
    while p3 < best:
        n = p3
        while n < m:
            n *= 2
        best = min(best, n)
        p3 *= 3
    return best


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _circular_conv(u: torch.Tensor, k_circ: torch.Tensor, n: int, D: Optional[torch.Tensor]) -> torch.Tensor:
    """First L outputs of the size-n circular convolution of zero-padded u with k_circ (H, n)."""
    L = u.shape[-1]
    dtype = _compute_dtype(u)
    with torch.autocast(device_type=u.device.type, enabled=False):
        uf = torch.fft.rfft(u.to(dtype), n=n)
        kf = torch.fft.rfft(k_circ.to(dtype), n=n)
        y = torch.fft.irfft(uf * kf, n=n)[..., :L]
        if D is not None:
            y = y + D.to(dtype)[:, None] * u.to(dtype)
    return y.to(u.dtype)


def fft_causal_conv(u: torch.Tensor, K: torch.Tensor, D: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Causal convolution of u (batch, H, L) with K (H, Lk) (taps beyond L are unused).

    Args:
        u: (batch, H, L).
        K: (H, Lk), K[:, 0] applies to the current frame.
        D: optional (H,) skip connection.

    Returns:
        (batch, H, L).
    """
    fn = "fft_causal_conv"
    check_tensor(fn, "K", K, (None, None), "(H, Lk)")
    H = K.shape[0]
    check_tensor(fn, "u", u, (None, H, None), "(batch, H, L)")
    check_optional(fn, "D", D, (H,), "(H,)")
    L = u.shape[-1]
    K = K[:, :L]
    n = fft_size(L + K.shape[-1] - 1)
    return _circular_conv(u, K, n, D)


def fft_bidirectional_conv(
    u: torch.Tensor, K_fwd: torch.Tensor, K_bwd: torch.Tensor, D: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Two-sided convolution (module docstring) of u (batch, H, L) with K_fwd, K_bwd (H, >=L).

    Args:
        u: (batch, H, L).
        K_fwd: (H, Lk) causal kernel (lags 0, 1, ...).
        K_bwd: (H, Lk) anti-causal kernel, K_bwd[:, 0] applies to lag +1.
        D: optional (H,) skip.
    """
    fn = "fft_bidirectional_conv"
    check_tensor(fn, "K_fwd", K_fwd, (None, None), "(H, Lk)")
    H, Lk = K_fwd.shape
    check_tensor(fn, "K_bwd", K_bwd, (H, Lk), "(H, Lk)")
    check_tensor(fn, "u", u, (None, H, None), "(batch, H, L)")
    check_optional(fn, "D", D, (H,), "(H,)")
    L = u.shape[-1]
    if Lk < L:
        raise ValueError(f"{fn}: kernels must have at least L={L} taps, got {Lk}")
    n = fft_size(2 * L - 1)
    gap = torch.zeros(H, n - 2 * L + 1, dtype=K_fwd.dtype, device=K_fwd.device)
    # position n - l holds K_bwd[l-1] for l = 1 .. L-1
    k_circ = torch.cat([K_fwd[:, :L], gap, K_bwd[:, : L - 1].flip(-1)], dim=-1)
    return _circular_conv(u, k_circ, n, D)
