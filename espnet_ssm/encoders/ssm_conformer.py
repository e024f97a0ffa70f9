r"""SSM-augmented Conformer, "SSMformer" (registry name ``ssm_conformer``).

After "Augmenting conformers with structured state-space sequence models for online speech
recognition" (Shan et al., ICASSP 2024). ESPnet's Conformer block (macaron feed-forward,
relative-position self-attention, convolution module) with the convolution module's depthwise
convolution replaced by an S4D layer (:class:`SSMConvolutionModule`):

* ``ssm_mode: dir``: the SSM replaces the depthwise convolution;
* ``ssm_mode: com`` (default; the paper's best): a ``pre_conv_kernel``-tap depthwise
  convolution, then the SSM;
* ``ssm_mode: rep``: the depthwise kernel is the SSM kernel truncated to ``rep_kernel_size`` taps;
* ``ssm_mode: conv``: the plain (padding-aware) Conformer convolution, for comparison.

The paper reports small states (N = 2-4) and S4D-Real working best, hence the defaults
``d_state: 4``, ``ssm_init: s4d_real``. The paper's SSM mixes channels through full B, C and D
matrices; ours is diagonal per channel (single-input single-output), the channel mixing being
left to the module's pointwise convolutions.

``causal: true`` makes the encoder online: causal convolutions, forward-only SSMs and causally
masked self-attention (optionally limited to ``attention_left_context`` past frames). The input
layer keeps its finite look-ahead (conv2d: output frame j ends at input frame 4j + 6).
"""
from __future__ import annotations

from dataclasses import dataclass

from espnet_ssm.encoders.base import SSMEncoderBase
from espnet_ssm.encoders.options import check_choice, check_positive
from espnet_ssm.encoders.macaron import (
    MacaronBlock,
    build_conv_module,
    build_macaron_block,
    build_self_attention,
)
from espnet_ssm.encoders.options import ConformerOptions, S4DOptions, option
from espnet_ssm.layers.ssm_conv_module import SSM_MODES


@dataclass
class SSMConformerOptions(S4DOptions, ConformerOptions):
    """``ssm_conformer`` keys: the shared groups and the SSM convolution module's layout."""

    ssm_mode: str = option("com", "dir, com, rep or conv (see the module docstring).")
    pre_conv_kernel: int = option(4, "taps of COM's depthwise convolution.")
    rep_kernel_size: int = option(16, "taps of REP's SSM kernel.")
    d_state: int = 4
    ssm_init: str = "s4d_real"

    def check(self, owner: str) -> None:
        check_choice(owner, "ssm_mode", self.ssm_mode, SSM_MODES)
        check_positive(owner, "pre_conv_kernel", self.pre_conv_kernel)
        check_positive(owner, "rep_kernel_size", self.rep_kernel_size)


class SSMConformerEncoder(SSMEncoderBase):
    """Conformer encoder whose convolution module holds an S4D layer.

    Keys: :class:`SSMConformerOptions`.
    """

    Options = SSMConformerOptions
    uses_attention = True

    def build_block(self, o: SSMConformerOptions) -> MacaronBlock:
        """ESPnet's Conformer block: [½FFN], MHSA, SSM convolution module, ½FFN, LayerNorm."""
        conv = build_conv_module(
            o, o.ssm_mode, pre_conv_kernel=o.pre_conv_kernel,
            rep_kernel_size=o.rep_kernel_size, **o.s4d_kwargs(),
        )
        return build_macaron_block(
            o, [("attention", build_self_attention(o)), ("sequence", conv)], o.macaron_style
        )
