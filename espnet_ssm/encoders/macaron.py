r"""Conformer-style (macaron) pre-norm block with a configurable sequence of token mixers.

.. math::

    x &\leftarrow x + \tfrac12\,\mathrm{Drop}(\mathrm{FFN}_1(\mathrm{LN}\,x))  \\
    x &\leftarrow x + \mathrm{Drop}(m_k(\mathrm{LN}_k\,x)) \qquad k = 1..K \text{ (in order)} \\
    x &\leftarrow x + \tfrac12\,\mathrm{Drop}(\mathrm{FFN}_2(\mathrm{LN}\,x)) \\
    x &\leftarrow \mathrm{LN}\,x \qquad \text{(optional)}

ESPnet's Conformer layer is the case ``[attention, convolution]``; Stateformer inserts the
multi-head SSM, the SSM-augmented Conformer swaps the convolution module. Without ``macaron``
the first FFN is dropped and the second has weight 1 (ESPnet's ``macaron_style: false``); the
MH-SSM encoder's block is ``[multi-head SSM]`` that way, without the final LayerNorm.
Mixers are of two kinds: ``attention`` (called with the attention mask and relative position
table) and ``sequence`` (called with the frame mask; they zero padding themselves).

The ``build_*`` helpers make the modules the encoder families share from their parsed options
(:mod:`espnet_ssm.encoders.options`).
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from espnet.nets.pytorch_backend.transformer.layer_norm import LayerNorm
from espnet.nets.pytorch_backend.transformer.positionwise_feed_forward import (
    PositionwiseFeedForward,
)

from espnet_ssm.encoders.base import EncoderContext
from espnet_ssm.encoders.options import AttentionOptions, ConvModuleOptions, FeedForwardOptions
from espnet_ssm.layers.activation import build_activation
from espnet_ssm.layers.attention import SelfAttention
from espnet_ssm.layers.ssm_conv_module import SSMConvolutionModule

MIXER_KINDS = ("attention", "sequence")


def build_feed_forward(o: FeedForwardOptions) -> PositionwiseFeedForward:
    """ESPnet's position-wise feed-forward module d -> linear_units -> d."""
    return PositionwiseFeedForward(
        o.output_size, o.linear_units, o.dropout_rate, build_activation(o.activation_type)
    )


def build_self_attention(o: AttentionOptions, use_sdpa: bool = False) -> SelfAttention:
    """ESPnet's (relative-position) multi-head self-attention of the options ``o``."""
    return SelfAttention(
        o.selfattention_layer_type, o.attention_heads, o.output_size, o.attention_dropout_rate,
        use_sdpa=use_sdpa, causal=o.causal, left_context=o.attention_left_context,
    )


def build_conv_module(
    o: ConvModuleOptions, mode: str = "conv", **ssm_kwargs: Any
) -> SSMConvolutionModule:
    """The Conformer convolution module (``mode`` and S4D options as in SSMConvolutionModule)."""
    return SSMConvolutionModule(
        o.output_size,
        mode=mode,
        activation=build_activation(o.activation_type),
        causal=o.causal,
        kernel_size=o.cnn_module_kernel,
        norm=o.conv_norm,
        **ssm_kwargs,
    )


def build_macaron_block(
    o: FeedForwardOptions,
    mixers: Sequence[Tuple[str, torch.nn.Module]],
    macaron: bool,
    final_norm: bool = True,
) -> "MacaronBlock":
    """A :class:`MacaronBlock` around ``mixers`` with the feed-forward modules of ``o``."""
    return MacaronBlock(
        o.output_size,
        mixers,
        build_feed_forward(o),
        build_feed_forward(o) if macaron else None,
        o.dropout_rate,
        final_norm=final_norm,
    )


class MacaronBlock(torch.nn.Module):
    """Pre-norm residual block: [½FFN] -> mixers -> ½FFN (or FFN) -> LayerNorm.

    Args:
        size: model dimension d.
        mixers: ``(kind, module)`` pairs applied in order; kind ``attention`` or ``sequence``.
        feed_forward: the final feed-forward module.
        feed_forward_macaron: the first feed-forward module, or None (no macaron).
        dropout_rate: dropout on every residual branch.
        final_norm: end with a LayerNorm (the Conformer's ``norm_final``).
    """

    def __init__(
        self,
        size: int,
        mixers: Sequence[Tuple[str, torch.nn.Module]],
        feed_forward: torch.nn.Module,
        feed_forward_macaron: Optional[torch.nn.Module],
        dropout_rate: float,
        final_norm: bool = True,
    ):
        super().__init__()
        for kind, _ in mixers:
            if kind not in MIXER_KINDS:
                raise ValueError(f"mixer kind {kind!r}: choose one of {list(MIXER_KINDS)}")
        self.mixer_kinds = tuple(kind for kind, _ in mixers)
        self.mixers = torch.nn.ModuleList(m for _, m in mixers)
        self.mixer_norms = torch.nn.ModuleList(LayerNorm(size) for _ in mixers)
        self.feed_forward_macaron = feed_forward_macaron
        self.norm_ff_macaron = LayerNorm(size) if feed_forward_macaron is not None else None
        self.feed_forward = feed_forward
        self.norm_ff = LayerNorm(size)
        self.ff_scale = 0.5 if feed_forward_macaron is not None else 1.0
        self.norm_final = LayerNorm(size) if final_norm else None
        self.dropout = torch.nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor, ctx: EncoderContext) -> torch.Tensor:
        """(B, T, d) -> (B, T, d)."""

        def mix(i: int, kind: str, mixer: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
            if kind == "attention":
                return mixer(h, ctx.att_mask, ctx.pos_emb)
            return mixer(h, ctx.mask)

        return self._block(x, mix)

    def forward_chunk(
        self, x: torch.Tensor, state: Optional[List[Any]] = None
    ) -> Tuple[torch.Tensor, List[Any]]:
        """A chunk (1, t, d) continuing from ``state`` (one entry per mixer; None: the start)
        -> ((1, t, d), new state). Inference only (dropout is not applied)."""
        state = list(state) if state is not None else [None] * len(self.mixers)

        def mix(i: int, kind: str, mixer: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
            y, state[i] = mixer.forward_chunk(h, state[i])
            return y

        return self._block(x, mix), state

    def _block(self, x: torch.Tensor, mix: Callable) -> torch.Tensor:
        """The block's maths, with mixer i applied as ``mix(i, kind, mixer, normed x)``."""
        if self.feed_forward_macaron is not None:
            x = x + self.ff_scale * self.dropout(
                self.feed_forward_macaron(self.norm_ff_macaron(x))
            )
        for i, (kind, mixer, norm) in enumerate(
            zip(self.mixer_kinds, self.mixers, self.mixer_norms)
        ):
            x = x + self.dropout(mix(i, kind, mixer, norm(x)))
        x = x + self.ff_scale * self.dropout(self.feed_forward(self.norm_ff(x)))
        return self.norm_final(x) if self.norm_final is not None else x
