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

from typing import List, Optional

from espnet.nets.pytorch_backend.transformer.repeat import repeat
from typeguard import typechecked

from espnet_ssm.encoders.base import SSMEncoderBase
from espnet_ssm.encoders.config import check_choice, check_positive, strict_config
from espnet_ssm.encoders.macaron import MacaronBlock, build_feed_forward
from espnet_ssm.encoders.options import (
    check_attention_options,
    check_mhssm_options,
    mhssm_options,
)
from espnet_ssm.layers.activation import build_activation
from espnet_ssm.layers.attention import SelfAttention
from espnet_ssm.layers.mh_ssm import MultiHeadSSM
from espnet_ssm.layers.ssm_conv_module import CONV_NORMS, SSMConvolutionModule

BLOCK_ORDERS = ("ssm_first", "attention_first")


@strict_config
class StateformerEncoder(SSMEncoderBase):
    """Conformer-style encoder with multi-head SSM and self-attention in every block.

    Args:
        input_size: feature dimension.
        output_size: model dimension d.
        attention_heads: self-attention heads.
        ssm_heads: MH-SSM heads (distinct Δ bands; even for ``inter_head`` gating).
        linear_units: hidden units of each feed-forward module.
        num_blocks: number of blocks.
        dropout_rate: dropout of residual branches, feed-forward and input layer.
        positional_dropout_rate: dropout inside the positional encoding.
        attention_dropout_rate: attention-weight dropout.
        input_layer: conv2d, conv2d1, conv2d2, conv2d6, conv2d8, linear or None.
        pos_enc_layer_type: rel_pos (with rel_selfattn), abs_pos or scaled_abs_pos.
        selfattention_layer_type: rel_selfattn or selfattn.
        activation_type: feed-forward and convolution-module activation.
        macaron_style: two half-step feed-forward modules (else one, after the mixers).
        block_order: ssm_first or attention_first.
        use_conv_module: add the Conformer convolution module after the mixers.
        cnn_module_kernel: its depthwise kernel size.
        conv_norm: its normalisation (layer_norm or batch_norm).
        d_state, ssm_init, dt_min, dt_max, discretization, gating, stack, ssm_activation,
        input_projection, bidirectional, ssm_lr: the MH-SSM's options (see ``mh_ssm``).
        causal: nothing looks ahead (requires ``bidirectional: false``).
        attention_left_context: frames of past each query may attend (-1: unlimited).
        max_pos_emb_len: initial positional table length.
        interctc_layer_idx: 1-based blocks feeding intermediate CTC.
        interctc_use_conditioning: self-conditioned CTC.
    """

    uses_attention = True

    @typechecked
    def __init__(
        self,
        input_size: int,
        output_size: int = 256,
        attention_heads: int = 4,
        ssm_heads: int = 4,
        linear_units: int = 1024,
        num_blocks: int = 6,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
        input_layer: Optional[str] = "conv2d",
        pos_enc_layer_type: str = "rel_pos",
        selfattention_layer_type: str = "rel_selfattn",
        activation_type: str = "swish",
        macaron_style: bool = True,
        block_order: str = "ssm_first",
        use_conv_module: bool = False,
        cnn_module_kernel: int = 31,
        conv_norm: str = "layer_norm",
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
        attention_left_context: int = -1,
        ssm_lr: Optional[float] = None,
        max_pos_emb_len: int = 5000,
        interctc_layer_idx: List[int] = [],
        interctc_use_conditioning: bool = False,
    ):
        owner = type(self).__name__
        check_mhssm_options(owner, output_size, "ssm_heads", locals())
        check_attention_options(owner, output_size, locals())
        check_choice(owner, "block_order", block_order, BLOCK_ORDERS)
        check_choice(owner, "conv_norm", conv_norm, CONV_NORMS)
        check_positive(owner, "cnn_module_kernel", cnn_module_kernel)
        super().__init__(
            input_size, output_size, num_blocks, input_layer, pos_enc_layer_type,
            dropout_rate, positional_dropout_rate, max_pos_emb_len, interctc_layer_idx,
            interctc_use_conditioning, causal, attention_left_context,
        )
        layer_options = mhssm_options(locals())

        def feed_forward():
            return build_feed_forward(output_size, linear_units, dropout_rate, activation_type)

        def block(_: int) -> MacaronBlock:
            mixers = [
                ("sequence", MultiHeadSSM(output_size, ssm_heads, **layer_options)),
                (
                    "attention",
                    SelfAttention(
                        selfattention_layer_type,
                        attention_heads,
                        output_size,
                        attention_dropout_rate,
                    ),
                ),
            ]
            if block_order == "attention_first":
                mixers.reverse()
            if use_conv_module:
                conv = SSMConvolutionModule(
                    output_size,
                    mode="conv",
                    activation=build_activation(activation_type),
                    causal=causal,
                    kernel_size=cnn_module_kernel,
                    norm=conv_norm,
                )
                mixers.append(("sequence", conv))
            return MacaronBlock(
                output_size,
                mixers,
                feed_forward(),
                feed_forward() if macaron_style else None,
                dropout_rate,
            )

        self.encoders = repeat(num_blocks, block)
