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
LayerNorm. Positions: sinusoidal absolute encoding on ESPnet's subsampling front-end. The
release overwrote Mamba's A and Δ initialisation with Xavier; we keep Mamba's own.

Options beyond the release [ours]: ``bidirectional`` (a time-reversed scan too, outputs added or
concatenated and projected) and ``causal`` (causally masked attention, forward scans only).
"""
from __future__ import annotations

from typing import List, Optional, Union

import torch
from espnet.nets.pytorch_backend.transformer.layer_norm import LayerNorm
from espnet.nets.pytorch_backend.transformer.repeat import repeat
from typeguard import typechecked

from espnet_ssm.encoders.base import EncoderContext, SSMEncoderBase
from espnet_ssm.encoders.config import (
    EncoderConfigError,
    check_choice,
    check_positive,
    strict_config,
)
from espnet_ssm.encoders.options import (
    check_attention_options,
    check_causal_direction,
    check_dt_range,
)
from espnet_ssm.layers.attention import SelfAttention
from espnet_ssm.layers.mamba import BidirectionalMamba, MambaMixer

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
        x = self.mamba_in(x, ctx.mask)
        x = x + self.dropout(self.attention(self.attention_norm(x), ctx.att_mask, ctx.pos_emb))
        return self.mamba_out(x, ctx.mask)


@strict_config
class SpeechMambaEncoder(SSMEncoderBase):
    """Speech-Mamba encoder.

    Args:
        input_size: feature dimension.
        output_size: model dimension d.
        attention_heads: self-attention heads.
        num_blocks: number of layers (each: Mamba, attention, Mamba).
        dropout_rate: dropout of residual branches and the input layer.
        positional_dropout_rate: dropout inside the positional encoding.
        attention_dropout_rate: attention-weight dropout.
        input_layer: conv2d, conv2d1, conv2d2, conv2d6, conv2d8, linear or None.
        pos_enc_layer_type: abs_pos (the release's), scaled_abs_pos, none, or rel_pos with
            rel_selfattn.
        selfattention_layer_type: selfattn or rel_selfattn.
        attention_use_sdpa: run ``selfattn`` through PyTorch's fused attention (same maths,
            attention memory linear in T on CPU and GPU).
        norm_type: rms_norm (the release's) or layer_norm.
        d_state: Mamba state size N.
        expand: Mamba expansion E (inner width E d).
        d_conv: Mamba's causal depthwise convolution taps.
        dt_rank: rank R of Δ's projection, or "auto" (ceil(d / 16)).
        dt_min, dt_max: range of Mamba's initial Δ.
        bidirectional: add a time-reversed Mamba scan.
        bidirectional_combine: add or concat (concat: projected back to d).
        causal: nothing looks ahead (causally masked attention; requires
            ``bidirectional: false``).
        attention_left_context: frames of past each query may attend (-1: unlimited).
        max_pos_emb_len: initial positional table length.
        interctc_layer_idx: 1-based layers feeding intermediate CTC.
        interctc_use_conditioning: self-conditioned CTC.
    """

    uses_attention = True

    @typechecked
    def __init__(
        self,
        input_size: int,
        output_size: int = 256,
        attention_heads: int = 4,
        num_blocks: int = 6,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
        input_layer: Optional[str] = "conv2d",
        pos_enc_layer_type: str = "abs_pos",
        selfattention_layer_type: str = "selfattn",
        attention_use_sdpa: bool = True,
        norm_type: str = "rms_norm",
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        dt_rank: Union[int, str] = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = False,
        bidirectional_combine: str = "add",
        causal: bool = False,
        attention_left_context: int = -1,
        max_pos_emb_len: int = 5000,
        interctc_layer_idx: List[int] = [],
        interctc_use_conditioning: bool = False,
    ):
        owner = type(self).__name__
        check_attention_options(owner, output_size, locals())
        check_choice(owner, "norm_type", norm_type, NORM_TYPES)
        check_choice(owner, "bidirectional_combine", bidirectional_combine, COMBINES)
        for key in ("d_state", "expand", "d_conv"):
            check_positive(owner, key, locals()[key])
        if dt_rank != "auto" and not (isinstance(dt_rank, int) and dt_rank >= 1):
            raise EncoderConfigError(f"{owner}: dt_rank={dt_rank!r} must be 'auto' or >= 1")
        check_dt_range(owner, dt_min, dt_max)
        check_causal_direction(owner, causal, bidirectional)
        super().__init__(
            input_size, output_size, num_blocks, input_layer, pos_enc_layer_type,
            dropout_rate, positional_dropout_rate, max_pos_emb_len, interctc_layer_idx,
            interctc_use_conditioning, causal, attention_left_context,
        )
        mixer_options = dict(
            d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank,
            dt_min=dt_min, dt_max=dt_max,
        )

        def mamba_block() -> MambaResidual:
            if bidirectional:
                mixer = BidirectionalMamba(
                    output_size, combine=bidirectional_combine, **mixer_options
                )
            else:
                mixer = MambaMixer(output_size, **mixer_options)
            return MambaResidual(build_norm(norm_type, output_size), mixer, dropout_rate)

        def layer(_: int) -> SpeechMambaLayer:
            attention = SelfAttention(
                selfattention_layer_type,
                attention_heads,
                output_size,
                attention_dropout_rate,
                use_sdpa=attention_use_sdpa,
            )
            return SpeechMambaLayer(
                mamba_block(),
                attention,
                build_norm(norm_type, output_size),
                mamba_block(),
                dropout_rate,
            )

        self.encoders = repeat(num_blocks, layer)
