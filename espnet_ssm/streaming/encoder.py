"""Running this package's causal encoders chunk by chunk with carried state.

The offline encoders (:mod:`espnet_ssm.encoders`) are stacks of blocks around ESPnet's input
layer. Streaming walks the same modules with the same weights, one chunk of feature frames at a
time, carrying for each part what its future frames need:

* input layer: the unconsumed feature frames and the next output position
  (:mod:`espnet_ssm.streaming.subsampling`);
* self-attention: the keys and values of the last ``attention_left_context`` frames
  (:mod:`espnet_ssm.streaming.attention`);
* S4D layers: the SSM state x (or REP's input tail), discretised once per stream
  (:mod:`espnet_ssm.streaming.s4d_stream`);
* causal depthwise convolutions: their last k-1 inputs;
* everything else (feed-forward, norms, gates, projections) is per frame and carries nothing.

An encoder streams when it is causal and built from those parts: ``ssm_conformer`` and
``mh_ssm`` (and ``stateformer``) with ``causal: true``. Over a stream the concatenated outputs
equal the offline ``forward`` of the concatenated input (tests: within 1e-4).

:class:`EncoderStream` holds one stream's state: ``stream(feats, is_final) -> frames``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F

from espnet_ssm.encoders.base import SSMEncoderBase
from espnet_ssm.encoders.macaron import MacaronBlock
from espnet_ssm.layers.depthwise_conv import MaskedDepthwiseConv1d
from espnet_ssm.layers.mh_ssm import MultiHeadSSM
from espnet_ssm.layers.s4d import S4D
from espnet_ssm.layers.ssm_conv_module import ComposedMixer, SSMConvolutionModule
from espnet_ssm.streaming.attention import AttentionCache, attention_chunk
from espnet_ssm.streaming.conv_frames import depthwise_valid, pointwise
from espnet_ssm.streaming.s4d_stream import S4DStream
from espnet_ssm.streaming.subsampling import (
    InputLayerState,
    init_input_state,
    input_layer_chunk,
    split_input_layer,
)


class StreamingNotSupported(ValueError):
    """The model's encoder cannot run chunk by chunk."""


def _unsupported_part(module: torch.nn.Module) -> Optional[str]:
    """Name of the first part of ``module`` that cannot stream, or None."""
    if isinstance(module, MacaronBlock):
        for kind, mixer in zip(module.mixer_kinds, module.mixers):
            if kind != "attention" and _unsupported_part(mixer):
                return _unsupported_part(mixer)
        return None
    if isinstance(module, MultiHeadSSM):
        return "a bidirectional multi-head SSM" if module.bidirectional else None
    if isinstance(module, SSMConvolutionModule):
        return _unsupported_part(module.depthwise_conv)
    if isinstance(module, ComposedMixer):
        return _unsupported_part(module.conv) or _unsupported_part(module.ssm)
    if isinstance(module, S4D):
        return "a bidirectional S4D layer" if module.bidirectional else None
    if isinstance(module, MaskedDepthwiseConv1d):
        return None if module.causal else "a non-causal convolution"
    return f"{type(module).__name__} (no chunk-by-chunk inference)"


def streaming_unsupported_reason(encoder: torch.nn.Module) -> Optional[str]:
    """Why ``encoder`` cannot stream, or None when it can."""
    if not isinstance(encoder, SSMEncoderBase):
        return f"{type(encoder).__name__} is not one of this package's encoders"
    if not encoder.causal:
        return "it is not causal (causal: false)"
    for block in encoder.encoders:
        part = _unsupported_part(block)
        if part is not None:
            return f"it contains {part}"
    return None


def check_streamable(encoder: torch.nn.Module) -> None:
    """Raise :class:`StreamingNotSupported` (saying why) unless ``encoder`` streams."""
    reason = streaming_unsupported_reason(encoder)
    if reason is not None:
        raise StreamingNotSupported(
            f"encoder {type(encoder).__name__} cannot stream: {reason}. Streaming needs "
            "ssm_conformer, mh_ssm or stateformer trained with causal: true (and "
            "bidirectional: false for the multi-head SSM); long-form recognition "
            "(espnet_ssm.streaming.LongFormSpeech2Text) works with any encoder."
        )


# ------------------------------------------------------------------ per-part state and step
def _init(module: torch.nn.Module, device) -> Any:
    if isinstance(module, MacaronBlock):
        return [AttentionCache() if kind == "attention" else _init(m, device)
                for kind, m in zip(module.mixer_kinds, module.mixers)]
    if isinstance(module, MultiHeadSSM):
        return [_init(stage.forward_ssm, device) for stage in module.stages]
    if isinstance(module, SSMConvolutionModule):
        return _init(module.depthwise_conv, device)
    if isinstance(module, ComposedMixer):
        return (_init(module.conv, device), _init(module.ssm, device))
    if isinstance(module, S4D):
        stream = S4DStream.of(module)  # shared by every stream of this model
        return (stream, stream.init_state(1, device))
    if isinstance(module, MaskedDepthwiseConv1d):
        w = module.conv.weight
        return torch.zeros(1, module.kernel_size - 1, w.size(0), device=device, dtype=w.dtype)
    raise StreamingNotSupported(f"{type(module).__name__} cannot stream")


@dataclass
class _Chunk:
    """What the blocks share for one chunk."""

    left_context: int
    pos_enc: Optional[torch.nn.Module]


def _step(
    module: torch.nn.Module, x: torch.Tensor, state: Any, ctx: _Chunk
) -> Tuple[torch.Tensor, Any]:
    """The module on chunk x (1, t, C) continuing from ``state`` (inference: no dropout)."""
    if isinstance(module, MacaronBlock):  # the maths of MacaronBlock.forward
        if module.feed_forward_macaron is not None:
            x = x + module.ff_scale * module.feed_forward_macaron(module.norm_ff_macaron(x))
        new = []
        for kind, mixer, norm, s in zip(module.mixer_kinds, module.mixers, module.mixer_norms,
                                        state):
            if kind == "attention":
                h, s = attention_chunk(mixer.attn, norm(x), s, ctx.left_context, ctx.pos_enc)
            else:
                h, s = _step(mixer, norm(x), s, ctx)
            new.append(s)
            x = x + h
        x = x + module.ff_scale * module.feed_forward(module.norm_ff(x))
        return (module.norm_final(x) if module.norm_final is not None else x), new
    if isinstance(module, MultiHeadSSM):  # in_proj -> stages -> gate -> out_proj
        u = module.in_proj(x) if module.in_proj is not None else x
        new = []
        for stage, s in zip(module.stages, state):
            y, s = _step(stage.forward_ssm, u, s, ctx)
            u = pointwise(stage.head_proj, stage.activation(y))
            new.append(s)
        if module.gating == "inter_head":
            half = u.size(-1) // 2
            u = u[..., :half] * torch.sigmoid(u[..., half:])
        elif module.gating == "glu":
            u = u * torch.sigmoid(module.gate_proj(x))
        return module.out_proj(u), new
    if isinstance(module, SSMConvolutionModule):  # pointwise -> GLU -> mixer -> norm -> pointwise
        h = F.glu(pointwise(module.pointwise_conv1, x), dim=-1)
        h, state = _step(module.depthwise_conv, h, state, ctx)
        norm = module.norm
        if isinstance(norm, torch.nn.LayerNorm):  # over channels: per frame, no transposes
            h = F.layer_norm(h, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        else:
            h = norm(h.transpose(1, 2)).transpose(1, 2)
        return pointwise(module.pointwise_conv2, module.activation(h)), state
    if isinstance(module, ComposedMixer):
        h, conv_state = _step(module.conv, x, state[0], ctx)
        y, ssm_state = _step(module.ssm, h, state[1], ctx)
        return y, (conv_state, ssm_state)
    if isinstance(module, S4D):
        stream, s = state
        y, s = stream(x, s)
        return y, (stream, s)
    if isinstance(module, MaskedDepthwiseConv1d):
        h = torch.cat([state, x], dim=1)  # the last k-1 inputs, then the chunk
        y = depthwise_valid(h, module.conv.weight, module.conv.bias)
        return y, h[:, h.size(1) - (module.kernel_size - 1) :]
    raise StreamingNotSupported(f"{type(module).__name__} cannot stream")


@dataclass
class EncoderState:
    """One stream's state: the input layer's and each block's."""

    input: InputLayerState
    blocks: List[Any] = field(default_factory=list)


def init_encoder_state(encoder: SSMEncoderBase, device=None) -> EncoderState:
    """The state before the first frame."""
    check_streamable(encoder)
    dev = device if device is not None else next(encoder.parameters()).device
    return EncoderState(init_input_state(1, encoder.input_size, dev),
                        [_init(block, dev) for block in encoder.encoders])


def encoder_chunk(
    encoder: SSMEncoderBase, xs: torch.Tensor, state: EncoderState,
    ctc: Optional[torch.nn.Module] = None,
) -> Tuple[torch.Tensor, EncoderState]:
    """Feature frames xs (1, t, D) -> the encoder frames (1, t', d) they complete."""
    x, inp = input_layer_chunk(encoder.embed, xs, state.input, encoder.output_size())
    if x.size(1) == 0:
        return x, EncoderState(inp, state.blocks)
    ctx = _Chunk(encoder.attention_left_context, split_input_layer(encoder.embed)[1])
    blocks = []
    for idx, (block, s) in enumerate(zip(encoder.encoders, state.blocks), start=1):
        x, s = _step(block, x, s, ctx)
        blocks.append(s)
        if idx in encoder.interctc_layer_idx and encoder.interctc_use_conditioning:
            if ctc is None or encoder.conditioning_layer is None:
                raise ValueError("interctc_use_conditioning needs the model's CTC module")
            x = x + encoder.conditioning_layer(ctc.softmax(encoder.after_norm(x)))
    return encoder.after_norm(x), EncoderState(inp, blocks)


class EncoderStream:
    """One stream through a streaming encoder: feature frames in, encoder frames out.

    Args:
        encoder: a causal encoder of this package.
        device: where the state lives.
        ctc: the model's CTC module (needed only with ``interctc_use_conditioning``).
    """

    def __init__(self, encoder: torch.nn.Module, device: Any = None,
                 ctc: Optional[torch.nn.Module] = None):
        check_streamable(encoder)
        self.encoder, self.device, self.ctc = encoder, device, ctc
        self.reset()

    def reset(self) -> None:
        """Start a new stream."""
        self.state = init_encoder_state(self.encoder, self.device)

    def __call__(self, feats: torch.Tensor, is_final: bool = False) -> torch.Tensor:
        """(t, input_size) feature frames -> (t', d) encoder frames completed by them."""
        ys, self.state = encoder_chunk(self.encoder, feats[None], self.state, self.ctc)
        if is_final:
            self.reset()
        return ys[0]
