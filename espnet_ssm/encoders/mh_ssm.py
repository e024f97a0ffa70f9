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

from typing import List, Optional

from espnet.nets.pytorch_backend.transformer.repeat import repeat
from typeguard import typechecked

from espnet_ssm.encoders.base import SSMEncoderBase
from espnet_ssm.encoders.config import check_choice, strict_config
from espnet_ssm.encoders.macaron import MacaronBlock, build_feed_forward
from espnet_ssm.encoders.options import check_mhssm_options, mhssm_options
from espnet_ssm.layers.mh_ssm import MultiHeadSSM

ATTENTION_FREE_POS_ENC = ("none", "abs_pos", "scaled_abs_pos")


@strict_config
class MHSSMEncoder(SSMEncoderBase):
    """Attention-free multi-head SSM encoder.

    Args:
        input_size: feature dimension.
        output_size: model dimension d.
        num_heads: SSM heads H (divides d; even for ``inter_head`` gating).
        linear_units: hidden units of the feed-forward modules.
        num_blocks: number of blocks.
        dropout_rate: dropout of residual branches, feed-forward and input layer.
        positional_dropout_rate: dropout inside the positional encoding.
        input_layer: conv2d, conv2d1, conv2d2, conv2d6, conv2d8, linear or None.
        pos_enc_layer_type: ``none`` (default), ``abs_pos`` or ``scaled_abs_pos``.
        activation_type: feed-forward activation.
        d_state: SSM state size N per channel.
        ssm_init: s4d_lin, s4d_real or s4d_inv.
        dt_min, dt_max: Δ range, cut into one band per head.
        discretization: zoh or bilinear.
        gating: inter_head, glu or none.
        stack: SSM stages in series inside each head.
        ssm_activation: activation after each SSM stage.
        input_projection: linear map before the SSMs.
        bidirectional: forward + time-reversed SSM per head (offline).
        causal: nothing looks ahead (requires ``bidirectional: false``).
        ssm_lr: learning-rate hint for the SSM's A and Δ (null: the optimiser's).
        max_pos_emb_len: initial positional table length.
        interctc_layer_idx: 1-based blocks feeding intermediate CTC.
        interctc_use_conditioning: self-conditioned CTC.
    """

    @typechecked
    def __init__(
        self,
        input_size: int,
        output_size: int = 256,
        num_heads: int = 4,
        linear_units: int = 1024,
        num_blocks: int = 6,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        input_layer: Optional[str] = "conv2d",
        pos_enc_layer_type: str = "none",
        activation_type: str = "swish",
        d_state: int = 64,
        ssm_init: str = "s4d_lin",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        discretization: str = "zoh",
        gating: str = "inter_head",
        stack: int = 1,
        ssm_activation: str = "gelu",
        input_projection: bool = True,
        bidirectional: bool = True,
        causal: bool = False,
        ssm_lr: Optional[float] = None,
        max_pos_emb_len: int = 5000,
        interctc_layer_idx: List[int] = [],
        interctc_use_conditioning: bool = False,
    ):
        owner = type(self).__name__
        check_mhssm_options(owner, output_size, "num_heads", locals())
        # Attention-free: relative position tables have no consumer.
        check_choice(owner, "pos_enc_layer_type", pos_enc_layer_type, ATTENTION_FREE_POS_ENC)
        super().__init__(
            input_size, output_size, num_blocks, input_layer, pos_enc_layer_type,
            dropout_rate, positional_dropout_rate, max_pos_emb_len, interctc_layer_idx,
            interctc_use_conditioning, causal, -1,
        )
        layer_options = mhssm_options(locals())
        self.encoders = repeat(
            num_blocks,
            lambda _: MacaronBlock(
                output_size,
                [("sequence", MultiHeadSSM(output_size, num_heads, **layer_options))],
                build_feed_forward(output_size, linear_units, dropout_rate, activation_type),
                None,
                dropout_rate,
                final_norm=False,
            ),
        )
