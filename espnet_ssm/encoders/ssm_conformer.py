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

from typing import List, Optional

from espnet.nets.pytorch_backend.transformer.repeat import repeat
from typeguard import typechecked

from espnet_ssm.encoders.base import SSMEncoderBase
from espnet_ssm.encoders.config import check_choice, check_positive, strict_config
from espnet_ssm.encoders.macaron import MacaronBlock, build_feed_forward
from espnet_ssm.encoders.options import check_attention_options, check_dt_range, check_ssm_init
from espnet_ssm.layers.activation import build_activation
from espnet_ssm.layers.attention import SelfAttention
from espnet_ssm.layers.ssm_conv_module import CONV_NORMS, SSM_MODES, SSMConvolutionModule


@strict_config
class SSMConformerEncoder(SSMEncoderBase):
    """Conformer encoder whose convolution module holds an S4D layer.

    Args:
        input_size: feature dimension.
        output_size: model dimension d.
        attention_heads: self-attention heads.
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
        ssm_mode: dir, com, rep or conv.
        ssm_init: s4d_real, s4d_lin or s4d_inv.
        d_state: SSM state size N per channel.
        pre_conv_kernel: taps of COM's depthwise convolution.
        rep_kernel_size: taps of REP's SSM kernel.
        cnn_module_kernel: taps of the ``conv`` mode.
        conv_norm: normalisation after the temporal mixer (layer_norm or batch_norm).
        dt_min, dt_max: SSM step range.
        ssm_lr: learning-rate hint for the SSM's A and Δ (null: the optimiser's).
        causal: online encoder; nothing looks ahead.
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
        ssm_mode: str = "com",
        ssm_init: str = "s4d_real",
        d_state: int = 4,
        pre_conv_kernel: int = 4,
        rep_kernel_size: int = 16,
        cnn_module_kernel: int = 31,
        conv_norm: str = "layer_norm",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        ssm_lr: Optional[float] = None,
        causal: bool = False,
        attention_left_context: int = -1,
        max_pos_emb_len: int = 5000,
        interctc_layer_idx: List[int] = [],
        interctc_use_conditioning: bool = False,
    ):
        owner = type(self).__name__
        check_attention_options(owner, output_size, locals())
        check_choice(owner, "ssm_mode", ssm_mode, SSM_MODES)
        check_ssm_init(owner, "ssm_init", ssm_init)
        check_choice(owner, "conv_norm", conv_norm, CONV_NORMS)
        for key in ("d_state", "pre_conv_kernel", "rep_kernel_size", "cnn_module_kernel"):
            check_positive(owner, key, locals()[key])
        check_dt_range(owner, dt_min, dt_max)
        super().__init__(
            input_size, output_size, num_blocks, input_layer, pos_enc_layer_type,
            dropout_rate, positional_dropout_rate, max_pos_emb_len, interctc_layer_idx,
            interctc_use_conditioning, causal, attention_left_context,
        )

        def feed_forward():
            return build_feed_forward(output_size, linear_units, dropout_rate, activation_type)

        def block(_: int) -> MacaronBlock:
            attention = SelfAttention(
                selfattention_layer_type, attention_heads, output_size, attention_dropout_rate
            )
            conv = SSMConvolutionModule(
                output_size,
                mode=ssm_mode,
                activation=build_activation(activation_type),
                causal=causal,
                d_state=d_state,
                ssm_init=ssm_init,
                pre_conv_kernel=pre_conv_kernel,
                rep_kernel_size=rep_kernel_size,
                kernel_size=cnn_module_kernel,
                norm=conv_norm,
                dt_min=dt_min,
                dt_max=dt_max,
                ssm_lr=ssm_lr,
            )
            return MacaronBlock(
                output_size,
                [("attention", attention), ("sequence", conv)],
                feed_forward(),
                feed_forward() if macaron_style else None,
                dropout_rate,
            )

        self.encoders = repeat(num_blocks, block)
