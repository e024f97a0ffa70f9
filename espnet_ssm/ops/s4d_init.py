"""S4D initialisers for the diagonal state matrix A and the step size Δ.

For modes n = 0 .. N-1 (Gu et al., "On the Parameterization and Initialization of Diagonal State
Space Models", arXiv 2206.11893):

    S4D-Real:  A_n = -(n + 1)
    S4D-Lin:   A_n = -1/2 + i·π·n
    S4D-Inv:   A_n = -1/2 + i·(N/π)·(N/(2n+1) - 1)

Δ is drawn log-uniformly from [dt_min, dt_max]. With ``n_bands > 1`` the channels are split into
contiguous bands that cover disjoint sub-intervals of the log-range, band 0 taking the largest Δ
(fast decay: local context) and the last band the smallest Δ (slow decay: global context).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import torch


def _check_modes(fn: str, N: int) -> None:
    if not isinstance(N, int) or N < 1:
        raise ValueError(f"{fn}: N (number of state modes) must be a positive int, got {N!r}")


def s4d_real_init(N: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """S4D-Real: real A_n = -(n+1), shape (N,)."""
    _check_modes("s4d_real_init", N)
    return -torch.arange(1, N + 1, dtype=dtype)


def s4d_lin_init(N: int, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """S4D-Lin: complex A_n = -1/2 + iπn, shape (N,)."""
    _check_modes("s4d_lin_init", N)
    n = torch.arange(N, dtype=torch.float64)
    return torch.complex(torch.full_like(n, -0.5), math.pi * n).to(dtype)


def s4d_inv_init(N: int, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """S4D-Inv: complex A_n = -1/2 + i(N/π)(N/(2n+1) - 1), shape (N,)."""
    _check_modes("s4d_inv_init", N)
    n = torch.arange(N, dtype=torch.float64)
    imag = (N / math.pi) * (N / (2 * n + 1) - 1)
    return torch.complex(torch.full_like(n, -0.5), imag).to(dtype)


S4D_INITS: Dict[str, Callable[[int], torch.Tensor]] = {
    "s4d_real": s4d_real_init,
    "s4d_lin": s4d_lin_init,
    "s4d_inv": s4d_inv_init,
}


def s4d_init(name: str, N: int) -> torch.Tensor:
    """A for the named initialisation (``s4d_real`` | ``s4d_lin`` | ``s4d_inv``), shape (N,)."""
    if name not in S4D_INITS:
        raise ValueError(f"s4d_init: init must be one of {sorted(S4D_INITS)}, got {name!r}")
    return S4D_INITS[name](N)


def init_log_dt(
    H: int,
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    n_bands: int = 1,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """log Δ for H channels, log-uniform in [dt_min, dt_max], shape (H,).

    With ``n_bands = G > 1`` the channels are split into G contiguous groups (``tensor_split``
    sizes: the first ``H mod G`` groups get one channel more) and group g samples uniformly from

        [log dt_max - (g+1)·w, log dt_max - g·w],     w = (log dt_max - log dt_min) / G,

    so group 0 has the largest Δ (most local) and group G-1 the smallest (most global).
    """
    if not (0 < dt_min <= dt_max):
        raise ValueError(f"init_log_dt: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    if not isinstance(n_bands, int) or not 1 <= n_bands <= H:
        raise ValueError(f"init_log_dt: n_bands must be an int in [1, H={H}], got {n_bands!r}")
    lo, hi = math.log(dt_min), math.log(dt_max)
    width = (hi - lo) / n_bands
    uniform = torch.rand(H, generator=generator, dtype=torch.float64)
    bands = torch.cat(
        [torch.full((len(idx),), g, dtype=torch.float64) for g, idx in enumerate(torch.arange(H).tensor_split(n_bands))]
    )
    return (hi - (bands + uniform) * width).to(dtype)
