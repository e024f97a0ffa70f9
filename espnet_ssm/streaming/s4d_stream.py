r"""Streaming a causal S4D layer with its discretisation computed once per stream.

``S4D.forward_chunk`` rebuilds :math:`\bar A, \bar B` and the chunk's power table
:math:`\bar A^k` from the parameters on every call; at inference the parameters do not change,
and for the short chunks of live streaming (a few frames) that rebuilding is most of the cost.
:class:`S4DStream` discretises once and, for chunks of up to ``step_frames`` frames, runs the
recurrence :math:`x_t = \bar A x_{t-1} + \bar B u_t,\; y_t = \mathrm{Re}(C x_t) + D u_t`
(``ops.s4d_step``) frame by frame; longer chunks go through ``S4D.forward_chunk`` (blocked
convolution, whose set-up cost is then amortised). Both continue the same state, so chunk sizes
can vary freely; REP layers (``kernel_size`` set) always use ``forward_chunk``.
"""
from __future__ import annotations

from typing import Tuple

import torch

from espnet_ssm.layers.s4d import S4D
from espnet_ssm.ops import s4d_discretize, s4d_step


class S4DStream:
    """One stream through a causal :class:`S4D` layer.

    Args:
        layer: the layer (``bidirectional=False``).
        step_frames: chunks up to this length use the frame recurrence.
    """

    def __init__(self, layer: S4D, step_frames: int = 16):
        if layer.bidirectional:
            raise ValueError("S4D streaming needs a causal layer (bidirectional=False)")
        self.layer = layer
        self.step_frames = step_frames if layer.kernel_size is None else 0
        if self.step_frames:
            with torch.no_grad():
                A, B, C = layer._ssm()
                self.dA, self.dB = s4d_discretize(layer.log_dt, A, B, layer.discretization)
                self.C, self.D = C[0], layer.D

    def init_state(self, batch: int, device=None) -> torch.Tensor:
        """The layer's zero state."""
        return self.layer.init_state(batch, device)

    def __call__(self, x: torch.Tensor, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """x (B, l, H) continuing from ``state`` -> (y (B, l, H), new state)."""
        if x.size(1) > self.step_frames:
            return self.layer.forward_chunk(x, state)
        ys = []
        for t in range(x.size(1)):
            y, state = s4d_step(state, x[:, t], self.dA, self.dB, self.C, self.D)
            ys.append(y)
        return torch.stack(ys, dim=1), state
