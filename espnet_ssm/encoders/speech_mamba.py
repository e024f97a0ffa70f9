r"""Speech-Mamba encoder (registry name ``speech_mamba``): Mamba -> attention -> Mamba layers.

After "Speech-Mamba: Long-Context Speech Recognition with Selective State Spaces Models" (Gao &
Chen, SLT 2024) and its released recipe. One layer, on x (B, T, d):

.. math::

    \mathrm{MambaBlock}(h) &= h + \mathrm{Drop}(\mathrm{Mixer}(\mathrm{Norm}\,h)) \\
    h_1 &= \mathrm{MambaBlock}(x) \\
    h_2 &= h_1 + \mathrm{Drop}(\mathrm{MHA}(\mathrm{Norm}\,h_1)) \quad\text{(padding-masked)}\\
    x' &= \mathrm{MambaBlock}(h_2)

with no feed-forward module, RMSNorm (``norm_type``), Mamba's selective-scan mixer
(:class:`espnet_ssm.layers.mamba.MambaMixer`, left-to-right) and, after the last layer, a
LayerNorm. Positions: sinusoidal absolute encoding on ESPnet's subsampling front-end.

Initialisation (``mamba_init``): ``mamba`` (default) keeps Mamba's own (A_log = log(1..N),
Δ₀ log-uniform in [dt_min, dt_max]); ``release`` reproduces the release, which drew every
parameter of two or more dimensions from Xavier's normal distribution (A_log included, so
A ≈ -1 for every state) and left dt_proj's bias at PyTorch's default (Δ ≈ 0.6 .. 0.8); see
:mod:`espnet_ssm.layers.mamba_release_init`. The front-end's convolutions keep PyTorch's
default, as the release's CNN does.

Front-end size (``subsampling_channels``): ESPnet's conv2d has ``output_size`` channels
(7.3 M parameters at d = 512 and 80 features); the release's CNN has 64 (0.8 M with its Linear
1280 -> 512). A number of channels C gives conv2d's two 3x3 stride-2 convolutions C channels
and its Linear C·19 -> d inputs: the same frames and look-ahead, at the release's size.

Options beyond the release [ours]: ``bidirectional`` (a time-reversed scan too, outputs added or
concatenated and projected) and ``causal`` (causally masked attention, forward scans only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple, Union

import torch
from espnet.nets.pytorch_backend.transformer.layer_norm import LayerNorm

from espnet_ssm.encoders.base import EncoderContext, SSMEncoderBase
from espnet_ssm.encoders.options import EncoderConfigError, check_choice, check_positive
from espnet_ssm.encoders.macaron import build_self_attention
from espnet_ssm.encoders.options import (
    AttentionOptions,
    EncoderOptions,
    StateOptions,
    check_causal_direction,
    option,
)
from espnet_ssm.layers.attention import SelfAttention
from espnet_ssm.layers.mamba import BidirectionalMamba, MambaMixer
from espnet_ssm.layers.mamba_release_init import MAMBA_INITS, release_initialize

NORM_TYPES = ("rms_norm", "layer_norm")
COMBINES = ("add", "concat")


def build_norm(norm_type: str, size: int) -> torch.nn.Module:
    """RMSNorm (the release's) or ESPnet's LayerNorm over the last dimension."""
    if norm_type == "rms_norm":
        return torch.nn.RMSNorm(size, eps=1e-5)
    return LayerNorm(size)


class MambaResidual(torch.nn.Module):
    """``h + Drop(mixer(Norm h))`` with a Mamba mixer that zeroes padding itself."""

    def __init__(self, norm: torch.nn.Module, mixer: torch.nn.Module, dropout_rate: float):
        super().__init__()
        self.norm = norm
        self.mixer = mixer
        self.dropout = torch.nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, T, d); ``mask`` (B, T) True at real frames."""
        return x + self.dropout(self.mixer(self.norm(x), mask))

    def forward_chunk(self, x: torch.Tensor, state: Any = None) -> Tuple[torch.Tensor, Any]:
        """A chunk (B, t, d) continuing from the mixer's ``state`` -> ((B, t, d), new state)."""
        y, state = self.mixer.forward_chunk(self.norm(x), state)
        return x + self.dropout(y), state


class SpeechMambaLayer(torch.nn.Module):
    """Mamba block, attention, Mamba block (see the module docstring)."""

    def __init__(
        self,
        mamba_in: MambaResidual,
        attention: SelfAttention,
        attention_norm: torch.nn.Module,
        mamba_out: MambaResidual,
        dropout_rate: float,
    ):
        super().__init__()
        self.mamba_in = mamba_in
        self.attention_norm = attention_norm
        self.attention = attention
        self.mamba_out = mamba_out
        self.dropout = torch.nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor, ctx: EncoderContext) -> torch.Tensor:
        """(B, T, d) -> (B, T, d)."""
        return self._layer(
            x,
            lambda i, part, h: part(h, ctx.mask) if i != 1 else part(h, ctx.att_mask, ctx.pos_emb),
        )

    def forward_chunk(
        self, x: torch.Tensor, state: Optional[List[Any]] = None
    ) -> Tuple[torch.Tensor, List[Any]]:
        """A chunk (1, t, d) continuing from ``state`` (Mamba, attention, Mamba states; None:
        the start) -> ((1, t, d), new state)."""
        state = list(state) if state is not None else [None, None, None]

        def run(i: int, part: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
            y, state[i] = part.forward_chunk(h, state[i])
            return y

        return self._layer(x, run), state

    def _layer(self, x: torch.Tensor, run: Callable) -> torch.Tensor:
        """Mamba block, attention residual, Mamba block; part i applied as ``run(i, part, h)``."""
        x = run(0, self.mamba_in, x)
        x = x + self.dropout(run(1, self.attention, self.attention_norm(x)))
        return run(2, self.mamba_out, x)


@dataclass
class SpeechMambaOptions(StateOptions, AttentionOptions, EncoderOptions):
    """``speech_mamba`` keys: the shared groups and Mamba's own."""

    attention_use_sdpa: bool = option(
        True, "run selfattn through PyTorch's fused attention (same maths, attention memory "
        "linear in T on CPU and GPU)."
    )
    norm_type: str = option("rms_norm", "rms_norm (the release's) or layer_norm.")
    expand: int = option(2, "Mamba expansion E (inner width E d).")
    d_conv: int = option(4, "Mamba's causal depthwise convolution taps.")
    dt_rank: Union[int, str] = option("auto", "rank R of Δ's projection, or auto (ceil(d / 16)).")
    bidirectional: bool = option(False, "add a time-reversed Mamba scan (needs causal=false).")
    bidirectional_combine: str = option(
        "add", "add or concat (concat: projected back to output_size)."
    )
    mamba_init: str = option(
        "mamba", "mamba (Mamba's own init) or release (the released Speech-Mamba's: "
        "xavier_normal on every parameter of 2+ dimensions, A_log included, dt_proj's bias "
        "left at PyTorch's default; the front-end's convolutions keep theirs)."
    )
    subsampling_channels: Optional[int] = option(
        None, "channels of conv2d's two convolutions (null: output_size, ESPnet's; the "
        "release's CNN has 64). Needs input_layer: conv2d."
    )
    selfattention_layer_type: str = "selfattn"

    def check(self, owner: str) -> None:
        check_choice(owner, "norm_type", self.norm_type, NORM_TYPES)
        check_choice(owner, "mamba_init", self.mamba_init, MAMBA_INITS)
        if self.subsampling_channels is not None:
            check_positive(owner, "subsampling_channels", self.subsampling_channels)
            if self.input_layer != "conv2d":
                raise EncoderConfigError(
                    f"{owner}: subsampling_channels needs input_layer=conv2d, got "
                    f"{self.input_layer!r}"
                )
        check_choice(owner, "bidirectional_combine", self.bidirectional_combine, COMBINES)
        check_positive(owner, "expand", self.expand)
        check_positive(owner, "d_conv", self.d_conv)
        if self.dt_rank != "auto" and not (isinstance(self.dt_rank, int) and self.dt_rank >= 1):
            raise EncoderConfigError(f"{owner}: dt_rank={self.dt_rank!r} must be 'auto' or >= 1")
        check_causal_direction(owner, self.causal, self.bidirectional)


class SpeechMambaEncoder(SSMEncoderBase):
    """Speech-Mamba encoder: each block is Mamba, attention, Mamba.

    Keys: :class:`SpeechMambaOptions`.
    """

    Options = SpeechMambaOptions
    uses_attention = True

    def build_block(self, o: SpeechMambaOptions) -> SpeechMambaLayer:
        """Mamba block, MHSA, Mamba block."""
        return SpeechMambaLayer(
            self._mamba_block(o),
            build_self_attention(o, use_sdpa=o.attention_use_sdpa),
            build_norm(o.norm_type, o.output_size),
            self._mamba_block(o),
            o.dropout_rate,
        )

    def finish_build(self, o: SpeechMambaOptions) -> None:
        """Narrow the conv2d front-end (``subsampling_channels``), then apply ``mamba_init``."""
        if o.subsampling_channels is not None:
            narrow_conv2d(self.embed.embed, self.input_size, o.subsampling_channels)
        if o.mamba_init == "release":
            release_initialize(self, keep=("embed.embed.conv.",))

    @staticmethod
    def _mamba_block(o: SpeechMambaOptions) -> MambaResidual:
        mixer_options = dict(
            d_state=o.d_state, d_conv=o.d_conv, expand=o.expand, dt_rank=o.dt_rank,
            dt_min=o.dt_min, dt_max=o.dt_max,
        )
        if o.bidirectional:
            mixer = BidirectionalMamba(
                o.output_size, combine=o.bidirectional_combine, **mixer_options
            )
        else:
            mixer = MambaMixer(o.output_size, **mixer_options)
        return MambaResidual(build_norm(o.norm_type, o.output_size), mixer, o.dropout_rate)


def narrow_conv2d(subsampling: torch.nn.Module, idim: int, channels: int) -> None:
    """Give ESPnet's ``Conv2dSubsampling`` (two 3x3 stride-2 convolutions with ReLU, then
    Linear(C · f -> d), f = ((idim - 1) // 2 - 1) // 2 feature bins) C = ``channels`` channels
    in place; the time arithmetic and the positional encoding stay as they are."""
    linear = subsampling.out[0]
    bins = ((idim - 1) // 2 - 1) // 2
    subsampling.conv = torch.nn.Sequential(
        torch.nn.Conv2d(1, channels, 3, 2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(channels, channels, 3, 2),
        torch.nn.ReLU(),
    )
    subsampling.out[0] = torch.nn.Linear(channels * bins, linear.out_features)
