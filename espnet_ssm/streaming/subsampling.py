r"""An encoder's input layer (ESPnet subsampling + positional encoding) run chunk by chunk.

The conv2d front-ends are stacks of unpadded convolutions with strides :math:`s_i`; their output
frame j reads input frames :math:`f j .. f j + r` (:math:`f = \prod s_i`, r the right context,
see :mod:`espnet_ssm.layers.frontend`). Run on input frames starting at :math:`f j`, the stack
therefore yields exactly the offline frames j, j+1, ...: every stage's output grid stays aligned
because each stage's stride divides the offset. So the carried state is

* the input frames from :math:`f j` on (j = next output frame): at most :math:`f + r - 1`
  frames once the available outputs are emitted;
* j itself, the absolute position of the next output frame, which absolute positional
  encodings need: :math:`x \sqrt d + PE[j + t]` (``abs_pos``), :math:`x + \alpha PE[j + t]`
  (``scaled_abs_pos``); the relative encoding only scales x and leaves positions to attention.

Per chunk, the overlap recomputed is those :math:`\le f + r - 1` frames (10 for conv2d).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

import torch
from espnet.nets.pytorch_backend.transformer.embedding import (
    PositionalEncoding,
    RelPositionalEncoding,
    ScaledPositionalEncoding,
)

from espnet_ssm.layers.frontend import CONV2D_CLASSES, InputLayer


@dataclass
class InputLayerState:
    """Carried between chunks: unconsumed input frames (B, n, D) and the next output index."""

    buffer: torch.Tensor
    offset: int = 0


def split_input_layer(
    layer: InputLayer,
) -> Tuple[Callable[[torch.Tensor], torch.Tensor], torch.nn.Module]:
    """(position-independent part, positional encoding) of an input layer."""
    embed = layer.embed
    if layer.input_layer in CONV2D_CLASSES:
        if isinstance(embed.out, torch.nn.Sequential):  # Linear, then the positional encoding
            linear, pos_enc = embed.out[0], embed.out[1]
        else:  # Conv2dSubsampling8 keeps them apart
            linear, pos_enc = embed.out, embed.pos_enc

        def project(x: torch.Tensor) -> torch.Tensor:
            h = embed.conv(x.unsqueeze(1))  # (B, C, t, f)
            b, c, t, f = h.shape
            return linear(h.transpose(1, 2).reshape(b, t, c * f))

        return project, pos_enc
    if layer.input_layer == "linear":  # Linear, LayerNorm, Dropout, positional encoding
        return embed[:3], embed[3]
    return (lambda x: x), embed


def _grow_table(pos_enc: torch.nn.Module, needed: int, like: torch.Tensor) -> None:
    """Make the encoding's table cover ``needed`` positions, doubling to stay linear overall."""
    size = pos_enc.pe.size(1)
    if size < needed:
        pos_enc.extend_pe(like.new_empty(1, max(needed, 2 * size)))
    elif pos_enc.pe.dtype != like.dtype or pos_enc.pe.device != like.device:
        pos_enc.pe = pos_enc.pe.to(dtype=like.dtype, device=like.device)


def encode_positions(pos_enc: torch.nn.Module, x: torch.Tensor, offset: int) -> torch.Tensor:
    """``pos_enc`` applied to frames ``offset .. offset + t - 1`` (inference: no dropout)."""
    t = x.size(1)
    if isinstance(pos_enc, torch.nn.Identity):
        return x
    if isinstance(pos_enc, RelPositionalEncoding):
        return x * pos_enc.xscale
    if isinstance(pos_enc, ScaledPositionalEncoding):
        _grow_table(pos_enc, offset + t, x)
        return x + pos_enc.alpha * pos_enc.pe[:, offset : offset + t]
    if isinstance(pos_enc, PositionalEncoding):
        _grow_table(pos_enc, offset + t, x)
        return x * pos_enc.xscale + pos_enc.pe[:, offset : offset + t]
    raise ValueError(f"positional encoding {type(pos_enc).__name__} cannot stream")


def init_input_state(batch: int, input_size: int, device=None,
                     dtype: torch.dtype = torch.float32) -> InputLayerState:
    """State before the first frame of a stream of ``input_size``-dimensional features."""
    return InputLayerState(torch.zeros(batch, 0, input_size, device=device, dtype=dtype))


def input_layer_chunk(
    layer: InputLayer, xs: torch.Tensor, state: InputLayerState, output_size: int
) -> Tuple[torch.Tensor, InputLayerState]:
    """Feed feature frames xs (B, t, D); return the output frames they complete (B, t', d)."""
    sub = layer.subsampling
    buf = torch.cat([state.buffer, xs.to(state.buffer.dtype)], dim=1)
    n = buf.size(1)
    n_out = int(sub.output_lengths(torch.tensor([n]))[0]) if n >= sub.min_frames else 0
    if n_out <= 0:
        return buf.new_zeros(buf.size(0), 0, output_size), InputLayerState(buf, state.offset)
    project, pos_enc = split_input_layer(layer)
    used = sub.last_input_frame(n_out - 1) + 1
    ys = encode_positions(pos_enc, project(buf[:, :used]), state.offset)
    return ys, InputLayerState(buf[:, sub.factor * n_out :], state.offset + n_out)


def project_in_chunks(layer: InputLayer, xs: torch.Tensor, frames: int = 4096) -> torch.Tensor:
    """The input layer's position-independent part on a long input, ``frames`` at a time.

    Exactly ``project(xs)`` (same aligned windows as streaming), but the convolution stack's
    intermediate activations (channels x frames x features: several GB for an hour at conv2d)
    only ever exist for one window.
    """
    project, _ = split_input_layer(layer)
    sub = layer.subsampling
    n_out = int(sub.output_lengths(torch.tensor([xs.size(1)]))[0]) if xs.size(1) else 0
    if sub.factor == 1 and not sub.stages:
        return project(xs)
    step = max(1, frames // sub.factor)
    outs = [
        project(xs[:, sub.factor * j : sub.last_input_frame(min(j + step, n_out) - 1) + 1])
        for j in range(0, n_out, step)
    ]
    return torch.cat(outs, dim=1)

