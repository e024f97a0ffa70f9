r"""Streaming a causal S4D layer with per-chunk-length matrices computed once per model.

For a chunk :math:`u_0 .. u_{l-1}` continuing from the state s (the state after the previous
frame), each channel of a causal S4D layer computes

.. math::

    y_t &= \sum_{j \le t} K_{t-j} u_j + \mathrm{Re}\sum_n C_n \bar A_n^{t+1} s_n + D u_t,
    \qquad K_k = \mathrm{Re}\sum_n C_n \bar B_n \bar A_n^k \\
    s' &= \bar A^l s + \sum_j \bar A^{l-1-j} \bar B u_j

which is linear in :math:`(u, s)` with matrices that depend only on the parameters and on l.
:class:`S4DStream` builds them (in float64, from :math:`\bar A, \bar B, C`) the first time a chunk
length occurs, so a chunk costs two small per-channel matrix-vector products and an element-wise
product, whatever its length up to ``max_frames``; longer chunks are cut into such pieces.
A complex state is handled through its real view (interleaved real and imaginary parts), with
:math:`\mathrm{Re}(p\,s) = p_r s_r - p_i s_i`.

REP layers (``kernel_size`` k) are a causal depthwise convolution with the kernel truncated to k
taps, computed once; the state is the last k-1 inputs.

:meth:`S4DStream.of` returns one instance per layer, shared by every stream and rebuilt only when
a parameter changes (in-place updates bump ``Tensor._version``).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

from espnet_ssm.layers.s4d import S4D
from espnet_ssm.ops import s4d_discretize
from espnet_ssm.streaming.conv_frames import depthwise_valid


@dataclass
class _ChunkPlan:
    """The linear map of one chunk length l for all H channels."""

    out: torch.Tensor  # (H, l, l + S): [Toeplitz K | state -> output], S = N (real) or 2N
    fold: torch.Tensor  # (H, S, l): inputs -> state increment
    decay: torch.Tensor  # (H, N): Ā^l (complex for a complex state)


_INSTANCES: "weakref.WeakKeyDictionary[S4D, Tuple[tuple, S4DStream]]" = weakref.WeakKeyDictionary()


def _param_key(layer: torch.nn.Module) -> tuple:
    return tuple((p.data_ptr(), p._version) for p in layer.parameters())


class S4DStream:
    """Chunk-by-chunk inference of a causal :class:`S4D` layer.

    Args:
        layer: the layer (``bidirectional=False``).
        max_frames: longest chunk mapped by one cached plan; longer chunks are cut.
    """

    def __init__(self, layer: S4D, max_frames: int = 16):
        if layer.bidirectional:
            raise ValueError("S4D streaming needs a causal layer (bidirectional=False)")
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self._layer = weakref.ref(layer)  # the shared-instance cache must not keep it alive
        self.max_frames = max_frames
        self._plans: Dict[int, _ChunkPlan] = {}
        with torch.no_grad():
            dtype = self.dtype = layer.log_dt.dtype
            self.D = layer.D.detach() if layer.D is not None else None
            if layer.kernel_size is not None:
                K = layer.kernel(layer.kernel_size)  # (H, k), lag order
                self.rep_weight: Optional[torch.Tensor] = K.flip(-1).unsqueeze(1).to(dtype)
                return
            self.rep_weight = None
            A, B, C = layer._ssm()
            wide = torch.complex128 if layer.is_complex else torch.float64
            dA, dB = s4d_discretize(layer.log_dt.double(), A.to(wide), B.to(wide),
                                    layer.discretization)
            if not layer.is_complex and dA.is_complex():  # bilinear: real Ā, maybe < 0
                dA, dB = dA.real, dB.real
            self._dA, self._dB, self._C = dA, dB, C[0].to(wide)

    @classmethod
    def of(cls, layer: S4D) -> "S4DStream":
        """The shared instance for ``layer`` (rebuilt when its parameters changed)."""
        key = _param_key(layer)
        hit = _INSTANCES.get(layer)
        if hit is None or hit[0] != key:
            hit = (key, cls(layer))
            _INSTANCES[layer] = hit
        return hit[1]

    def init_state(self, batch: int, device=None) -> torch.Tensor:
        """The layer's zero state."""
        layer = self._layer()
        if layer is None:
            raise RuntimeError("the S4D layer of this stream no longer exists")
        return layer.init_state(batch, device)

    def _plan(self, l: int, device) -> _ChunkPlan:
        plan = self._plans.get(l)
        if plan is not None:
            return plan
        dA, dB, C = self._dA, self._dB, self._C  # (H, N)
        H, N = dA.shape
        k = torch.arange(l + 1, device=dA.device, dtype=torch.float64)
        pw = dA[..., None] ** k  # Ā^k, (H, N, l + 1)
        K = (C[..., None] * dB[..., None] * pw[..., :l]).sum(1)  # (H, l)
        K = K.real if K.is_complex() else K
        ar = torch.arange(l, device=dA.device)
        lag = ar[:, None] - ar[None, :]  # t - j
        toeplitz = torch.where(lag >= 0, K[:, lag.clamp(min=0)], torch.zeros((), dtype=K.dtype))
        p = (C[..., None] * pw[..., 1:]).transpose(1, 2)  # C Ā^{t+1}, (H, l, N)
        f = dB[..., None] * pw[..., :l].flip(-1)  # B̄ Ā^{l-1-j}, (H, N, l)
        if p.is_complex():  # interleaved real view of the state: (re_0, im_0, re_1, ...)
            p = torch.stack([p.real, -p.imag], dim=-1).reshape(H, l, 2 * N)
            f = torch.stack([f.real, f.imag], dim=2).reshape(H, 2 * N, l)
        real = self.dtype
        decay = pw[..., l].to(torch.complex64 if real == torch.float32 else torch.complex128) \
            if pw.is_complex() else pw[..., l].to(real)
        plan = _ChunkPlan(torch.cat([toeplitz, p], dim=-1).to(device, real),
                          f.to(device, real), decay.to(device))
        self._plans[l] = plan
        return plan

    def __call__(self, x: torch.Tensor, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """x (B, l, H) continuing from ``state`` -> (y (B, l, H), new state)."""
        if self.rep_weight is not None:
            h = torch.cat([state.transpose(1, 2), x], dim=1)  # the last k-1 inputs, the chunk
            y = depthwise_valid(h, self.rep_weight)
            if self.D is not None:
                y = y + self.D * x
            return y, h[:, h.size(1) - state.size(-1) :].transpose(1, 2)
        if x.size(1) > self.max_frames:
            ys = []
            for piece in x.split(self.max_frames, dim=1):
                y, state = self(piece, state)
                ys.append(y)
            return torch.cat(ys, dim=1), state
        b, l, _ = x.shape
        if l == 0:
            return x, state
        plan = self._plan(l, x.device)
        u = x.transpose(1, 2)  # (B, H, l)
        flat = torch.view_as_real(state) if state.is_complex() else state  # (B, H, N[, 2])
        z = torch.cat([u, flat.reshape(b, flat.size(1), -1)], dim=-1)  # (B, H, l + S)
        y = torch.einsum("hls,bhs->blh", plan.out, z)  # (B, l, H)
        if self.D is not None:
            y = y + self.D * x
        inc = torch.einsum("hsl,bhl->bhs", plan.fold, u)  # (B, H, S)
        if state.is_complex():
            inc = torch.view_as_complex(inc.reshape(b, inc.size(1), -1, 2))
        return y, plan.decay * state + inc
