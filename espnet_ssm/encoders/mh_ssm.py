r"""MH-SSM encoder (registry name ``mh_ssm``): a Transformer with a multi-head SSM for attention.

After "Multi-Head State Space Model for Speech Recognition" (Fathullah et al., Interspeech 2023).
Each block, on x (B, T, d):

.. math::

    x &\leftarrow x + \mathrm{Drop}(\mathrm{MHSSM}(\mathrm{LN}\,x)) \\
    x &\leftarrow x + \mathrm{Drop}(\mathrm{FFN}(\mathrm{LN}\,x))

followed, after the last block, by a LayerNorm. MHSSM is
:class:`espnet_ssm.layers.mh_ssm.MultiHeadSSM` (heads with distinct Δ bands, gating, optional
stacking, bidirectional or causal). No positional encoding by default: the SSM is order-aware.

With ``causal: true`` (and ``bidirectional: false``) no block looks ahead; the only look-ahead
left is the subsampling's finite one (conv2d: output frame j ends at input frame 4j + 6).
"""
from __future__ import annotations

from dataclasses import dataclass

from espnet_ssm.encoders.base import SSMEncoderBase
from espnet_ssm.encoders.options import check_choice
from espnet_ssm.encoders.macaron import MacaronBlock, build_macaron_block
from espnet_ssm.encoders.options import (
    EncoderOptions,
    FeedForwardOptions,
    MultiHeadSSMOptions,
    option,
)
from espnet_ssm.layers.mh_ssm import MultiHeadSSM

ATTENTION_FREE_POS_ENC = ("none", "abs_pos", "scaled_abs_pos")


@dataclass
class MHSSMOptions(MultiHeadSSMOptions, FeedForwardOptions, EncoderOptions):
    """``mh_ssm`` keys: the shared groups and the head count."""

    num_heads: int = option(4, "SSM heads H (divide output_size; even for inter_head gating).")
    pos_enc_layer_type: str = option(
        "none", "none (default: the SSM is order-aware), abs_pos or scaled_abs_pos."
    )

    def check(self, owner: str) -> None:
        # attention-free: relative position tables have no consumer
        check_choice(owner, "pos_enc_layer_type", self.pos_enc_layer_type, ATTENTION_FREE_POS_ENC)


class MHSSMEncoder(SSMEncoderBase):
    """Attention-free multi-head SSM encoder.

    Keys: :class:`MHSSMOptions`.
    """

    Options = MHSSMOptions

    def build_block(self, o: MHSSMOptions) -> MacaronBlock:
        """[MH-SSM] then one feed-forward module, no final LayerNorm."""
        mixer = MultiHeadSSM(o.output_size, o.num_heads, **o.mhssm_kwargs())
        return build_macaron_block(o, [("sequence", mixer)], macaron=False, final_norm=False)
