r"""Multi-head state space layer (MH-SSM): a drop-in replacement for multi-head self-attention.

After "Multi-Head State Space Model for Speech Recognition" (Fathullah et al., 2023). The paper
does not publish the layer's internals; this is our reading (every choice is an argument).

The d channels are split into H heads of d/H channels, like multi-head attention. Each channel
runs a diagonal SSM (:class:`espnet_ssm.layers.s4d.S4D`, state size N). Heads differ in their
timescales: the log-range ``[log dt_min, log dt_max]`` of the step Δ is cut into H contiguous
bands, head 0 taking the largest steps (the most local memory) and head H-1 the smallest (the
most global). For input x (B, L, d):

.. math::

    u &= x W_{in}                                                 \quad\text{(optional)}\\
    v^{\rightarrow} &= \mathrm{SSM}(u),\qquad
    v^{\leftarrow} = \mathrm{Rev}\,\mathrm{SSM}'(\mathrm{Rev}\,u)  \quad\text{(bidirectional)}\\
    u^{(h)} &\leftarrow W^{(h)}\,\sigma\big([v^{\rightarrow (h)}; v^{\leftarrow (h)}]\big)
        \quad\text{per head } h \text{ (a (2d/H) \to d/H linear map)}

repeated ``stack`` times (SSMs in series inside each head), with Rev the time reversal of each
utterance's real frames (padding stays in place, so padded frames never reach real ones) and σ
an activation. Then the heads are mixed:

* ``inter_head``: heads are paired, head i (local) with head i + H/2 (global), and one gates the
  other: :math:`y = u^{(<H/2)} \odot \mathrm{sigmoid}(u^{(\geq H/2)})`, then
  :math:`W_o: d/2 \to d`;
* ``glu``: an input-driven gate :math:`y = u \odot \mathrm{sigmoid}(x W_g)`, then :math:`W_o`;
* ``none``: :math:`y = u W_o`.

``bidirectional=False`` gives a causal layer (each output frame depends on past frames only),
which also runs chunk by chunk (``forward_chunk``, carrying each stage's SSM state) through the
same code as ``forward``.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch

from espnet_ssm.layers.activation import build_activation
from espnet_ssm.layers.conv_as_linear import pointwise_frames
from espnet_ssm.layers.s4d import S4D
from espnet_ssm.layers.streaming import require_streamable
from espnet_ssm.layers.weight_cache import WeightCache
from espnet_ssm.ops.padding import reverse_padded

GATINGS = ("inter_head", "glu", "none")


class HeadSSMStage(torch.nn.Module):
    """One SSM stage of every head: SSM per direction, activation, per-head linear map.

    Args:
        d_model: channels d.
        num_heads: heads H (contiguous channel groups with distinct Δ bands).
        bidirectional: add a time-reversed SSM and concatenate its output per head.
        activation: name of σ.
        **s4d_kwargs: options of :class:`S4D` (d_state, init, dt_min, dt_max, ...).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        bidirectional: bool,
        activation: str,
        **s4d_kwargs,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.forward_ssm = S4D(d_model, n_bands=num_heads, **s4d_kwargs)
        self.backward_ssm = (
            S4D(d_model, n_bands=num_heads, **s4d_kwargs) if bidirectional else None
        )
        self.activation = build_activation(activation)
        n_dir = 2 if bidirectional else 1
        # Grouped 1x1 convolution = an independent (n_dir d/H -> d/H) linear map per head.
        self.head_proj = torch.nn.Conv1d(n_dir * d_model, d_model, 1, groups=num_heads)
        self._dense_head_proj: WeightCache = WeightCache()  # its block-diagonal matrix

    def forward(self, u: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L, d) -> (B, L, d); ``mask`` (B, L) True at real frames, ``lengths`` (B,)."""
        outs = [self.forward_ssm(u, mask)]
        if self.backward_ssm is not None:
            rev = reverse_padded(u, lengths)
            outs.append(reverse_padded(self.backward_ssm(rev, mask), lengths))
        return self._mix_heads(outs)

    def forward_chunk(
        self, u: torch.Tensor, state: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """A chunk (B, t, d) continuing from the forward SSM's ``state`` -> (output, state)."""
        require_streamable(self)
        y, state = self.forward_ssm.forward_chunk(u, state)
        return self._mix_heads([y]), state

    def _mix_heads(self, outs: List[torch.Tensor]) -> torch.Tensor:
        """Each head's direction outputs side by side, σ, then the per-head linear map."""
        v = outs[0]
        if len(outs) > 1:  # (B, L, H, n_dir, d/H): each head's directions side by side
            b, t, d = v.shape
            v = torch.stack([o.view(b, t, self.num_heads, d // self.num_heads) for o in outs],
                            dim=3).reshape(b, t, -1)
        v = self.activation(v)
        return pointwise_frames(self.head_proj, v, self._dense_head_proj)

    def streaming_obstacle(self) -> Optional[str]:
        """Why this stage cannot stream (a time-reversed SSM looks ahead), or None."""
        return "looks ahead: time-reversed SSM (bidirectional)" if self.backward_ssm else None


class MultiHeadSSM(torch.nn.Module):
    """Multi-head SSM layer, (B, L, d) -> (B, L, d). See the module docstring for the maths.

    Args:
        d_model: model dimension d.
        num_heads: heads H; must divide d (and be even for ``inter_head`` gating).
        d_state: state size N per channel.
        ssm_init: ``s4d_lin``, ``s4d_real`` or ``s4d_inv``.
        dt_min, dt_max: the Δ range cut into one band per head.
        bidirectional: forward and time-reversed SSMs (offline); False = causal.
        gating: ``inter_head``, ``glu`` or ``none``.
        stack: SSM stages in series inside each head.
        activation: activation after each stage's SSMs.
        input_projection: apply a d x d linear map before the SSMs.
        discretization: ``zoh`` or ``bilinear``.
        ssm_lr: learning rate hint for the SSM's A, Δ (None: the optimiser's).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_state: int = 64,
        ssm_init: str = "s4d_lin",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = True,
        gating: str = "inter_head",
        stack: int = 1,
        activation: str = "gelu",
        input_projection: bool = True,
        discretization: str = "zoh",
        ssm_lr: Optional[float] = None,
    ):
        super().__init__()
        if num_heads < 1 or d_model % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide d_model={d_model}")
        if gating not in GATINGS:
            raise ValueError(f"gating={gating!r}: choose one of {list(GATINGS)}")
        if gating == "inter_head" and num_heads % 2:
            raise ValueError(f"gating=inter_head pairs heads: num_heads={num_heads} must be even")
        if stack < 1:
            raise ValueError(f"stack={stack} must be >= 1")
        self.num_heads = num_heads
        self.gating = gating
        self.bidirectional = bidirectional
        self.in_proj = torch.nn.Linear(d_model, d_model) if input_projection else None
        self.stages = torch.nn.ModuleList(
            HeadSSMStage(
                d_model,
                num_heads,
                bidirectional,
                activation,
                d_state=d_state,
                init=ssm_init,
                discretization=discretization,
                dt_min=dt_min,
                dt_max=dt_max,
                lr=ssm_lr,
            )
            for _ in range(stack)
        )
        self.gate_proj = torch.nn.Linear(d_model, d_model) if gating == "glu" else None
        gated_dim = d_model // 2 if gating == "inter_head" else d_model
        self.out_proj = torch.nn.Linear(gated_dim, d_model)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, lengths: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """(B, L, d) -> (B, L, d); ``mask`` (B, L) bool True at real frames."""
        if lengths is None:
            lengths = mask.sum(-1)
        return self._layer(x, lambda i, stage, u: stage(u, mask, lengths))

    def forward_chunk(
        self, x: torch.Tensor, state: Optional[List[torch.Tensor]] = None
    ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """A chunk (B, t, d) continuing from ``state`` (one per stage; None: the start) ->
        ((B, t, d), new state)."""
        state = list(state) if state is not None else [None] * len(self.stages)

        def run(i: int, stage: HeadSSMStage, u: torch.Tensor) -> torch.Tensor:
            y, state[i] = stage.forward_chunk(u, state[i])
            return y

        return self._layer(x, run), state

    def _layer(self, x: torch.Tensor, run_stage: Callable) -> torch.Tensor:
        """in_proj -> stages (``run_stage(i, stage, u)``) -> gating -> out_proj."""
        u = self.in_proj(x) if self.in_proj is not None else x
        for i, stage in enumerate(self.stages):
            u = run_stage(i, stage, u)
        if self.gating == "inter_head":
            half = u.size(-1) // 2  # heads are contiguous: the first half is heads 0 .. H/2-1
            u = u[..., :half] * torch.sigmoid(u[..., half:])
        elif self.gating == "glu":
            u = u * torch.sigmoid(self.gate_proj(x))
        return self.out_proj(u)
