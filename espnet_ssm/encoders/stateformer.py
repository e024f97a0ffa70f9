r"""Stateformer encoder (registry name ``stateformer``): a Conformer-style block with an MH-SSM.

After "Multi-Head State Space Model for Speech Recognition" (Fathullah et al., 2023), which
augments the Transformer block with MH-SSM layers. Our block (a :class:`MacaronBlock`):

.. math::

    x &\leftarrow x + \tfrac12\mathrm{FFN}(\mathrm{LN}\,x) \\
    x &\leftarrow x + \mathrm{MHSSM}(\mathrm{LN}\,x) \\
    x &\leftarrow x + \mathrm{MHSA}(\mathrm{LN}\,x) \quad\text{(relative positions)} \\
    x &\leftarrow x + \mathrm{Conv}(\mathrm{LN}\,x) \quad\text{(with use\_conv\_module)} \\
    x &\leftarrow x + \tfrac12\mathrm{FFN}(\mathrm{LN}\,x);\qquad x \leftarrow \mathrm{LN}\,x

``block_order: attention_first`` swaps the MH-SSM and MHSA lines. ``causal: true`` (with
``bidirectional: false``): forward-only SSMs, causally masked attention (optionally limited to
``attention_left_context`` frames), causal convolution.
"""
from __future__ import annotations

from dataclasses import dataclass

from espnet_ssm.encoders.base import SSMEncoderBase
from espnet_ssm.encoders.options import check_choice
from espnet_ssm.encoders.macaron import (
    MacaronBlock,
    build_conv_module,
    build_macaron_block,
    build_self_attention,
)
from espnet_ssm.encoders.options import ConformerOptions, MultiHeadSSMOptions, option
from espnet_ssm.layers.mh_ssm import MultiHeadSSM

BLOCK_ORDERS = ("ssm_first", "attention_first")


@dataclass
class StateformerOptions(MultiHeadSSMOptions, ConformerOptions):
    """``stateformer`` keys: the shared groups, the SSM head count and the block layout."""

    heads_key = "ssm_heads"
    ssm_heads: int = option(
        4, "MH-SSM heads (distinct Δ bands; divide output_size; even for inter_head gating)."
    )
    block_order: str = option("ssm_first", "ssm_first or attention_first.")
    use_conv_module: bool = option(False, "add the Conformer convolution module after the mixers.")

    def check(self, owner: str) -> None:
        check_choice(owner, "block_order", self.block_order, BLOCK_ORDERS)


class StateformerEncoder(SSMEncoderBase):
    """Conformer-style encoder with multi-head SSM and self-attention in every block.

    Keys: :class:`StateformerOptions`.
    """

    Options = StateformerOptions
    uses_attention = True

    def build_block(self, o: StateformerOptions) -> MacaronBlock:
        """[½FFN], MH-SSM and MHSA (in ``block_order``), [conv module], ½FFN, LayerNorm."""
        mixers = [
            ("sequence", MultiHeadSSM(o.output_size, o.ssm_heads, **o.mhssm_kwargs())),
            ("attention", build_self_attention(o)),
        ]
        if o.block_order == "attention_first":
            mixers.reverse()
        if o.use_conv_module:
            mixers.append(("sequence", build_conv_module(o)))
        return build_macaron_block(o, mixers, o.macaron_style)
