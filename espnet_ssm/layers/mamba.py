"""Mamba selective-SSM mixer and a bidirectional wrapper, (B, L, D) -> (B, L, D).

Mixer (Gu & Dao 2023, arXiv 2312.00752; the block of mamba_ssm's ``mamba_simple.py``), with
E·D inner channels:

    x, z   = in_proj(u)                                  D -> 2·E·D
    x      = SiLU(causal depthwise conv_k(x))            kernel k = d_conv
    δ, B, C = x_proj(x)                                  E·D -> R + 2N
    Δ      = softplus(dt_proj.weight δ + dt_proj.bias)
    y      = selective_scan(x, Δ, A = -exp(A_log), B, C, D) ⊙ SiLU(z)
    out    = out_proj(y)                                 E·D -> D

Initialisation (Mamba's): A_log[c, n] = log(n+1), D = 1, dt_proj.weight ~ U(±R^-1/2),
dt_proj.bias = softplus⁻¹(Δ₀) with Δ₀ log-uniform in [dt_min, dt_max] floored at dt_init_floor;
projections and the conv use PyTorch's defaults. A_log, D and dt_proj.bias carry a
no-weight-decay hint for ``espnet_ssm.ops.ssm_param_groups``. ``espnet_initialization_fn`` restores the SSM
parts (conv, dt_proj, A_log, D) after ESPnet's ``--init`` and keeps its choice for the
projections; ``reset_parameters`` re-initialises everything.

Streaming state: ``conv_state`` (B, E·D, d_conv) holds the last d_conv conv inputs (oldest
first) and ``ssm_state`` (B, E·D, N) the scan state; ``step`` and ``forward_chunk`` advance it
and equal ``forward`` on the concatenated input.

Bidirectional (:class:`BidirectionalMamba`): flip-scan-flip. A second mixer runs on each
utterance reversed in place (``reverse_padded``, padding stays at the end), its output is
reversed back and combined by sum or by concatenation + linear; the backward pass includes u_t.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from espnet_ssm.ops import (
    causal_depthwise_conv,
    reverse_padded,
    selective_scan,
    selective_scan_step,
    set_optim_hint,
    zero_padded,
)
from espnet_ssm.ops.tensor_checks import check_choice, check_frames

MambaState = Tuple[torch.Tensor, torch.Tensor]


class MambaMixer(torch.nn.Module):
    """Mamba selective-SSM mixer, (B, L, D) -> (B, L, D), standard Mamba init.

    Args:
        d_model: model dimension D.
        d_state: SSM state size N.
        d_conv: depthwise causal conv kernel size.
        expand: inner expansion E (E·D scan channels).
        dt_rank: rank R of the Δ projection, or ``"auto"`` = ceil(D / 16).
        dt_min, dt_max, dt_init_floor: Δ initialisation range and floor.
        conv_bias: bias in the depthwise conv.
        bias: bias in in_proj and out_proj.
        use_fast_path: allow mamba_ssm's fused CUDA scan when it is installed.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: Union[int, str] = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        use_fast_path: bool = True,
    ):
        super().__init__()
        if dt_rank == "auto":
            dt_rank = math.ceil(d_model / 16)
        if not isinstance(dt_rank, int) or dt_rank < 1:
            raise ValueError(f"MambaMixer: dt_rank must be a positive int or 'auto', got {dt_rank!r}")
        for name, value in (("d_model", d_model), ("d_state", d_state), ("d_conv", d_conv), ("expand", expand)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MambaMixer: {name} must be a positive int, got {value!r}")
        if not (0 < dt_min <= dt_max):
            raise ValueError(f"MambaMixer: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.use_fast_path = use_fast_path
        E = self.d_inner
        self.in_proj = torch.nn.Linear(d_model, 2 * E, bias=bias)
        # padding is done by causal_depthwise_conv (with a streaming tail), not by the module
        self.conv1d = torch.nn.Conv1d(E, E, d_conv, groups=E, bias=conv_bias)
        self.x_proj = torch.nn.Linear(E, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = torch.nn.Linear(dt_rank, E, bias=True)
        self.A_log = torch.nn.Parameter(torch.empty(E, d_state))
        self.D = torch.nn.Parameter(torch.empty(E))
        self.out_proj = torch.nn.Linear(E, d_model, bias=bias)
        for p in (self.A_log, self.D, self.dt_proj.bias):
            set_optim_hint(p, weight_decay=0.0)  # as Mamba trains them; see ssm_param_groups
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self) -> None:
        """Re-initialise every parameter (projections with PyTorch defaults, SSM parts as Mamba)."""
        for m in (self.in_proj, self.x_proj, self.out_proj):
            m.reset_parameters()
        self.espnet_initialization_fn()

    def espnet_initialization_fn(self) -> None:
        """Restore the SSM parameters (conv, dt_proj, A_log, D) after ESPnet's ``--init``."""
        E, N = self.d_inner, self.d_state
        self.conv1d.reset_parameters()
        with torch.no_grad():
            std = self.dt_rank**-0.5
            self.dt_proj.weight.uniform_(-std, std)
            log_lo, log_hi = math.log(self.dt_min), math.log(self.dt_max)
            dt = torch.exp(torch.rand(E, dtype=torch.float64) * (log_hi - log_lo) + log_lo)
            dt = dt.clamp(min=self.dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
            self.A_log.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float64)).expand(E, N))
            self.D.fill_(1.0)

    # ------------------------------------------------------------------ pieces
    def _conv_kernel(self) -> torch.Tensor:
        """conv1d weight in lag order (E, d_conv): [:, 0] applies to the current frame."""
        return self.conv1d.weight[:, 0].flip(-1)

    def _ssm_inputs(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (..., E) -> (δ·W_dt (..., E), B (..., N), C (..., N))."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.linear(dt, self.dt_proj.weight), B, C

    def _mix(self, u: torch.Tensor, conv_tail: Optional[torch.Tensor], ssm_state: Optional[torch.Tensor]):
        """Mixer on (B, L, D) from optional streaming state; returns (out, conv input, last ssm state)."""
        x_in, z = self.in_proj(u).transpose(1, 2).chunk(2, dim=1)  # (B, E, L) each
        x = F.silu(causal_depthwise_conv(x_in, self._conv_kernel(), self.conv1d.bias, tail=conv_tail))
        delta, B, C = self._ssm_inputs(x.transpose(1, 2))
        y, last = selective_scan(
            x,
            delta.transpose(1, 2),
            -torch.exp(self.A_log),
            B.transpose(1, 2),
            C.transpose(1, 2),
            self.D,
            z,
            self.dt_proj.bias,
            delta_softplus=True,
            initial_state=ssm_state,
            return_last_state=True,
            backend="auto" if self.use_fast_path else "torch",
        )
        return self.out_proj(y.transpose(1, 2)), x_in, last

    # ------------------------------------------------------------------ full sequence
    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, L, D), mask (B, L) True at valid frames -> (B, L, D), zero at padded frames."""
        self._check_input("forward", x, 3)
        out, _, _ = self._mix(zero_padded(x, mask), None, None)
        return zero_padded(out, mask)

    # ------------------------------------------------------------------ streaming
    def init_state(self, batch: int, device=None, dtype=None) -> MambaState:
        """Zero (conv_state (B, E·D, d_conv), ssm_state (B, E·D, N)); the scan state is float32
        at least (the scan's compute dtype)."""
        device = self.A_log.device if device is None else device
        dtype = self.A_log.dtype if dtype is None else dtype
        ssm_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        return (
            torch.zeros(batch, self.d_inner, self.d_conv, device=device, dtype=dtype),
            torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=ssm_dtype),
        )

    def step(self, x_t: torch.Tensor, state: MambaState) -> Tuple[torch.Tensor, MambaState]:
        """One frame x_t (B, D) -> (y_t (B, D), new state)."""
        self._check_input("step", x_t, 2)
        conv_state, ssm_state = self._check_state(state, x_t.shape[0])
        x, z = self.in_proj(x_t).chunk(2, dim=-1)  # (B, E)
        conv_state = torch.cat([conv_state[..., 1:], x[..., None].to(conv_state.dtype)], dim=-1)
        x = (conv_state.to(x.dtype) * self.conv1d.weight[:, 0]).sum(-1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = F.silu(x)
        delta, B, C = self._ssm_inputs(x)
        y, ssm_state = selective_scan_step(
            ssm_state,
            x,
            delta,
            -torch.exp(self.A_log),
            B,
            C,
            self.D,
            z,
            self.dt_proj.bias,
            delta_softplus=True,
        )
        return self.out_proj(y), (conv_state, ssm_state)

    def forward_chunk(
        self, x: torch.Tensor, state: Optional[MambaState] = None
    ) -> Tuple[torch.Tensor, MambaState]:
        """A chunk x (B, l, D) continuing from ``state`` (None: zeros) -> (y (B, l, D), new state)."""
        self._check_input("forward_chunk", x, 3)
        if state is None:
            state = self.init_state(x.size(0), x.device, x.dtype)
        if x.size(1) == 0:
            return x, state
        conv_state, ssm_state = self._check_state(state, x.shape[0])
        out, x_in, last = self._mix(x, conv_state[..., 1:], ssm_state)
        conv_state = torch.cat([conv_state, x_in.to(conv_state.dtype)], dim=-1)[..., -self.d_conv :]
        return out, (conv_state, last)

    # ------------------------------------------------------------------ checks
    def _check_input(self, fn: str, x: torch.Tensor, dim: int) -> None:
        check_frames(f"MambaMixer.{fn}", x, dim, self.d_model, "D")

    def _check_state(self, state: MambaState, batch: int) -> MambaState:
        want = ((batch, self.d_inner, self.d_conv), (batch, self.d_inner, self.d_state))
        if (
            not isinstance(state, (tuple, list))
            or len(state) != 2
            or tuple(state[0].shape) != want[0]
            or tuple(state[1].shape) != want[1]
        ):
            got = [tuple(s.shape) for s in state] if isinstance(state, (tuple, list)) else type(state).__name__
            raise ValueError(
                f"MambaMixer: state must be (conv_state {want[0]}, ssm_state {want[1]}) "
                f"as from init_state, got {got}"
            )
        return state[0], state[1]


class BidirectionalMamba(torch.nn.Module):
    """Forward + backward Mamba mixers (flip-scan-flip on each utterance's real frames).

    Args:
        d_model: model dimension D.
        combine: ``"add"`` (sum of both directions) or ``"concat"`` (concatenate, Linear 2D -> D).
        **mixer_kwargs: passed to both :class:`MambaMixer`.
    """

    def __init__(self, d_model: int, combine: str = "add", **mixer_kwargs):
        super().__init__()
        check_choice("BidirectionalMamba", "combine", combine, ("add", "concat"))
        self.combine = combine
        self.forward_mixer = MambaMixer(d_model, **mixer_kwargs)
        self.backward_mixer = MambaMixer(d_model, **mixer_kwargs)
        self.proj = torch.nn.Linear(2 * d_model, d_model) if combine == "concat" else None

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, L, D), mask (B, L) True at valid frames -> (B, L, D), zero at padded frames."""
        if mask is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        else:
            lengths = mask.sum(dim=1)
        x = zero_padded(x, mask)
        fwd = self.forward_mixer(x, mask)
        bwd = reverse_padded(self.backward_mixer(reverse_padded(x, lengths), mask), lengths)
        out = fwd + bwd if self.proj is None else self.proj(torch.cat([fwd, bwd], dim=-1))
        return zero_padded(out, mask)

    def streaming_obstacle(self) -> Optional[str]:
        """Always a reason: the backward scan looks ahead."""
        return "looks ahead: time-reversed Mamba scan (bidirectional)"
