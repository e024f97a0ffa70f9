r"""S4D on short chunks (a few frames) in closed form, from tables built once per layer.

Streaming feeds an S4D layer chunks of l frames (4 at 160 ms, 16 at 640 ms with 4x
subsampling). Run frame by frame (:func:`~espnet_ssm.ops.s4d_kernel.s4d_step`) that is about
five small element-wise operations per frame, and at these sizes a call's fixed cost is most of
its time. Unrolling the recurrence :math:`x_t = \bar A x_{t-1} + \bar B u_t,\;
y_t = \mathrm{Re}(C x_t) + D u_t` over the chunk, from the carried state :math:`x_{-1}`:

.. math::

    y_t &= \mathrm{Re}\Big(\sum_n C_n \bar A_n^{t+1} x_{-1,n}\Big)
          + \sum_{s \le t} K_{t-s}\, u_s + D u_t,
    \qquad K_j = \mathrm{Re}\Big(\sum_n C_n \bar A_n^j \bar B_n\Big), \\
    x_{l-1} &= \bar A^l x_{-1} + \sum_{s<l} \bar A^{l-1-s} \bar B\, u_s .

With :math:`C\bar A^{t+1}`, the Toeplitz matrix of K and :math:`\bar A^{j}\bar B` tabulated up to
``max_len`` frames (:func:`s4d_short_chunk_tables`, in float64 then cast), a chunk is three
products-and-sums over (H, l, 2N) or (H, l, l) real arrays (:func:`s4d_short_chunk`): a complex
state is handled as its interleaved (real, imaginary) view, with
:math:`\mathrm{Re}(c\,x) = \mathrm{Re}(c)\mathrm{Re}(x) - \mathrm{Im}(c)\mathrm{Im}(x)`.

Measured (``benchmarks/bench_kernels.py --tables short --threads 1``: H = 512, N = 32 complex,
caches warm), frame loop vs closed form: 4 frames 281 vs 309 µs (the loop wins), 8 frames 542 vs
374 µs (1.45x), 16 frames 1038 vs 593 µs (1.75x).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch

from espnet_ssm.ops.tensor_checks import check_optional, check_tensor


class ShortChunkTables(NamedTuple):
    """Per-layer tables for chunks of up to ``max_len`` frames (real arrays, the layer's dtype).

    * ``c_powers``: (H, max_len, N') rows :math:`C\bar A^{t+1}` (N' = 2N, interleaved, with the
      imaginary part negated, when complex);
    * ``toeplitz``: (H, max_len, max_len), entry [t, s] = :math:`K_{t-s}` for s <= t, else 0;
    * ``b_powers``: (H, max_len, N') rows :math:`\bar A^{max\_len-1-s}\bar B` (interleaved);
    * ``a_powers``: (H, max_len + 1, N) :math:`\bar A^j` (complex when Ā is).
    """

    c_powers: torch.Tensor
    toeplitz: torch.Tensor
    b_powers: torch.Tensor
    a_powers: torch.Tensor

    @property
    def max_len(self) -> int:
        return self.toeplitz.size(-1)


def _interleaved(z: torch.Tensor) -> torch.Tensor:
    """(..., N) complex -> (..., 2N) real (re, im pairs); real tensors unchanged."""
    return torch.view_as_real(z).flatten(-2) if z.is_complex() else z


def s4d_short_chunk_tables(
    dA: torch.Tensor, dB: torch.Tensor, C: torch.Tensor, max_len: int = 16
) -> ShortChunkTables:
    """Tables for :func:`s4d_short_chunk` from Ā, B̄ (:func:`s4d_discretize`) and C, (H, N)."""
    fn = "s4d_short_chunk_tables"
    check_tensor(fn, "dA", dA, (None, None), "(H, N)", complex_ok=True)
    H, N = dA.shape
    check_tensor(fn, "dB", dB, (H, N), "(H, N)", complex_ok=True)
    check_tensor(fn, "C", C, (H, N), "(H, N)", complex_ok=True)
    if not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"{fn}: max_len must be a positive int, got {max_len!r}")
    real = dA.real.dtype if dA.is_complex() else dA.dtype
    if all(not t.is_complex() or t.imag.abs().max() <= 1e-6 * t.abs().max() for t in (dA, dB, C)):
        # a real SSM (the bilinear discretisation returns real A as complex, with rounding
        # noise in the imaginary parts): real tables, a real state, half the arithmetic
        dA, dB, C = (t.real if t.is_complex() else t for t in (dA, dB, C))
    wide = torch.complex128 if any(t.is_complex() for t in (dA, dB, C)) else torch.float64
    with torch.no_grad():
        a, b, c = (t.detach().to(wide) for t in (dA, dB, C))
        j = torch.arange(max_len + 1, device=dA.device, dtype=torch.float64)
        powers = torch.exp(torch.log(a)[:, None, :] * j[None, :, None]) if a.is_complex() \
            else a[:, None, :] ** j[None, :, None]  # (H, max_len + 1, N): Ā^j
        c_powers = c[:, None, :] * powers[:, 1:]  # C Ā^{t+1}
        ab = powers[:, :max_len] * b[:, None, :]  # Ā^j B̄
        k = (c[:, None, :] * ab).sum(-1)
        k = k.real if k.is_complex() else k  # (H, max_len): K_j
        t = torch.arange(max_len, device=dA.device)
        lag = t[:, None] - t[None, :]
        toeplitz = torch.where(lag >= 0, k[:, lag.clamp(min=0)], torch.zeros((), dtype=k.dtype,
                                                                             device=k.device))
        return ShortChunkTables(
            c_powers=_interleaved(c_powers.conj().resolve_conj() if c_powers.is_complex()
                                     else c_powers).to(real),
            toeplitz=toeplitz.to(real),
            b_powers=_interleaved(ab.flip(1)).to(real).contiguous(),
            a_powers=powers.to(real.to_complex() if powers.is_complex() else real),
        )


def s4d_short_chunk(
    u: torch.Tensor,
    state: torch.Tensor,
    tables: ShortChunkTables,
    D: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """S4D on a chunk u (B, l, H), l <= ``tables.max_len``, continuing from ``state`` (B, H, N).

    Returns (y (B, l, H), the state after the chunk), equal to l steps of ``s4d_step``. The state
    is complex when the tables are (a real state is promoted, as ``s4d_step`` does), real when
    they are real.
    """
    fn = "s4d_short_chunk"
    H = tables.toeplitz.size(0)
    check_tensor(fn, "u", u, (None, None, H), "(B, l, H)")
    l = u.size(1)
    if not 1 <= l <= tables.max_len:
        raise ValueError(f"{fn}: chunk of {l} frames; the tables cover 1 .. {tables.max_len}")
    check_tensor(fn, "state", state, (u.size(0), H, tables.a_powers.size(-1)), "(B, H, N)",
                 complex_ok=True)
    check_optional(fn, "D", D, (H,), "(H,)")
    if tables.a_powers.is_complex() and not state.is_complex():
        state = state.to(tables.a_powers.dtype)
    elif state.is_complex() and not tables.a_powers.is_complex():
        # a real SSM whose state another path (complex arithmetic) returned as complex
        state = state.real
    ut = u.transpose(1, 2)  # (B, H, l)
    x = _interleaved(state)  # (B, H, N')
    y = (tables.c_powers[:, :l] * x[:, :, None]).sum(-1)  # the state's part: Re(C Ā^{t+1} x)
    y = y + (tables.toeplitz[:, :l, :l] * ut[:, :, None, :]).sum(-1)  # the chunk's own inputs
    if D is not None:
        y = y + D[:, None] * ut
    # Σ_s Ā^{l-1-s} B̄ u_s
    drive = (tables.b_powers[:, tables.max_len - l :] * ut[..., None]).sum(2)
    if state.is_complex():
        drive = torch.view_as_complex(drive.unflatten(-1, (-1, 2)))
    new_state = tables.a_powers[:, l] * state + drive
    return y.transpose(1, 2).to(u.dtype), new_state
