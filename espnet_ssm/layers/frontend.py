"""ESPnet's input layers (subsampling front-ends) with exact, per-utterance output lengths.

The modules themselves are ESPnet's (``Conv2dSubsampling*`` or ``Linear -> LayerNorm -> Dropout``),
built with the positional-encoding module the encoder asks for (``torch.nn.Identity()`` for
encoders without position encodings). What we add is arithmetic: ESPnet 202511 derives output
lengths by slicing the padded mask, which gives a shorter utterance in a padded batch one frame
more than it gets alone; here every length comes from the convolution formula applied per row.

Each conv2d variant is a stack of unpadded convolutions with (kernel, stride) along time
``(k_1, s_1), ..., (k_m, s_m)``. One stage maps ``T -> floor((T - k) / s) + 1`` frames, and its
output frame ``j`` covers input frames ``s j .. s j + k - 1``. Composing the stages:

* output length  ``T' = f_m(... f_1(T))``;
* minimum input length: the smallest ``T`` with ``T' >= 1``;
* output frame ``j`` depends on input frames up to ``factor * j + right_context``, where
  ``factor = prod(s_i)``; e.g. conv2d (two 3x3 stride-2 convs): ``4 j + 6``. That is the
  subsampling's finite look-ahead, the only one a ``causal: true`` encoder keeps.

Chunk by chunk (:meth:`InputLayer.forward_chunk`): run on input frames starting at ``factor j``,
the stack yields exactly the offline frames j, j+1, ... (each stage's stride divides the offset,
so every stage's output grid stays aligned). The carried state is therefore the input frames
from ``factor j`` on (j the next output frame; at most ``factor + right_context - 1`` frames once
the available outputs are emitted) and j itself, the absolute position that absolute positional
encodings need: :math:`x \sqrt d + PE[j + t]` (``abs_pos``), :math:`x + \alpha PE[j + t]`
(``scaled_abs_pos``); the relative encoding only scales x and leaves positions to attention.
The same windows bound memory offline: inputs longer than ``window_frames`` go through the
convolution stack a window at a time (without it, the first convolution of conv2d alone holds
256 channels x T/2 frames x 39 bins, about 7 GB for an hour of audio).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from espnet.nets.pytorch_backend.transformer.embedding import (
    PositionalEncoding,
    RelPositionalEncoding,
    ScaledPositionalEncoding,
)
from espnet.nets.pytorch_backend.transformer.subsampling import (
    Conv2dSubsampling,
    Conv2dSubsampling1,
    Conv2dSubsampling2,
    Conv2dSubsampling6,
    Conv2dSubsampling8,
)


@dataclass(frozen=True)
class Subsampling:
    """Time-axis arithmetic of one input layer: a stack of (kernel, stride) convolutions."""

    stages: Tuple[Tuple[int, int], ...]

    @property
    def factor(self) -> int:
        """Frame-rate reduction: the product of the strides."""
        f = 1
        for _, s in self.stages:
            f *= s
        return f

    @property
    def right_context(self) -> int:
        """Input frames beyond ``factor * j`` that output frame ``j`` depends on."""
        last = 0  # last input frame of output frame 0, walked back stage by stage
        for k, s in reversed(self.stages):
            last = last * s + k - 1
        return last

    @property
    def min_frames(self) -> int:
        """Smallest input length that yields one output frame."""
        need = 1
        for k, s in reversed(self.stages):
            need = (need - 1) * s + k
        return need

    def last_input_frame(self, j: int) -> int:
        """Index of the last input frame that output frame ``j`` depends on."""
        return self.factor * j + self.right_context

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Per-utterance output lengths (same for an utterance alone or in a padded batch)."""
        out = lengths
        for k, s in self.stages:
            out = torch.div(out - k, s, rounding_mode="floor") + 1
        return out


# ESPnet's conv2d front-ends; both 2-D convolutions of a stage act on time with these (k, s).
CONV2D_CLASSES: Dict[str, Tuple[type, Tuple[Tuple[int, int], ...]]] = {
    "conv2d": (Conv2dSubsampling, ((3, 2), (3, 2))),
    "conv2d1": (Conv2dSubsampling1, ((3, 1), (3, 1))),
    "conv2d2": (Conv2dSubsampling2, ((3, 2), (3, 1))),
    "conv2d6": (Conv2dSubsampling6, ((3, 2), (5, 3))),
    "conv2d8": (Conv2dSubsampling8, ((3, 2), (3, 2), (3, 2))),
}
INPUT_LAYERS = (*CONV2D_CLASSES, "linear", None)


def subsampling_of(input_layer: Optional[str]) -> Subsampling:
    """The time-axis arithmetic of ``input_layer`` (identity for ``linear`` and ``None``)."""
    if input_layer in CONV2D_CLASSES:
        return Subsampling(CONV2D_CLASSES[input_layer][1])
    return Subsampling(())


class InputLayer(torch.nn.Module):
    """ESPnet's input layer for ``input_layer`` followed by ``pos_enc``.

    ``forward(xs)`` returns ``(x, pos_emb)``: ``pos_emb`` is the relative position table of a
    relative positional encoding, else ``None``. Lengths come from :attr:`subsampling`.

    Args:
        input_layer: ``conv2d``, ``conv2d1``, ``conv2d2``, ``conv2d6``, ``conv2d8``, ``linear``
            or ``None`` (no layer: ``input_size`` must equal ``output_size``).
        input_size: feature dimension.
        output_size: model dimension.
        dropout_rate: dropout of the ``linear`` layer (ESPnet passes it to the conv2d classes too).
        pos_enc: positional encoding module applied after the layer.
    """

    def __init__(
        self,
        input_layer: Optional[str],
        input_size: int,
        output_size: int,
        dropout_rate: float,
        pos_enc: torch.nn.Module,
    ):
        super().__init__()
        if input_layer not in INPUT_LAYERS:
            raise ValueError(f"input_layer={input_layer!r}: choose one of {list(INPUT_LAYERS)}")
        self.input_layer = input_layer
        self.output_size = output_size
        self.subsampling = subsampling_of(input_layer)
        if input_layer in CONV2D_CLASSES:
            # The conv stack shrinks the feature axis with the same arithmetic as time.
            if input_size < self.subsampling.min_frames:
                raise ValueError(
                    f"input_layer={input_layer} needs input_size >= "
                    f"{self.subsampling.min_frames} feature bins, got {input_size}"
                )
            self.embed = CONV2D_CLASSES[input_layer][0](
                input_size, output_size, dropout_rate, pos_enc
            )
        elif input_layer == "linear":
            self.embed = torch.nn.Sequential(
                torch.nn.Linear(input_size, output_size),
                torch.nn.LayerNorm(output_size),
                torch.nn.Dropout(dropout_rate),
                pos_enc,
            )
        else:
            if input_size != output_size:
                raise ValueError(
                    f"input_layer=None needs input_size == output_size, got {input_size} != "
                    f"{output_size}"
                )
            self.embed = pos_enc

    # ------------------------------------------------------------------ parts
    @property
    def pos_enc(self) -> torch.nn.Module:
        """The positional encoding applied after the position-independent part."""
        if self.input_layer in CONV2D_CLASSES:
            out = self.embed.out
            # Linear then the encoding, except Conv2dSubsampling8, which keeps them apart
            return out[1] if isinstance(out, torch.nn.Sequential) else self.embed.pos_enc
        return self.embed[3] if self.input_layer == "linear" else self.embed

    def _project(self, xs: torch.Tensor) -> torch.Tensor:
        """The position-independent part (B, T, input_size) -> (B, T', output_size)."""
        if self.input_layer in CONV2D_CLASSES:
            out = self.embed.out
            linear = out[0] if isinstance(out, torch.nn.Sequential) else out
            h = self.embed.conv(xs.unsqueeze(1))  # (B, C, t, f)
            b, c, t, f = h.shape
            return linear(h.transpose(1, 2).reshape(b, t, c * f))
        return self.embed[:3](xs) if self.input_layer == "linear" else xs

    def project(self, xs: torch.Tensor) -> torch.Tensor:
        """:meth:`_project` a window of ``window_frames`` input frames at a time.

        The windows start at multiples of the subsampling factor and overlap by its right
        context, so they give exactly the frames of one pass, the convolutions' intermediate
        activations existing for one window only.
        """
        sub = self.subsampling
        if xs.size(1) <= self.window_frames or (sub.factor == 1 and not sub.stages):
            return self._project(xs)
        n_out = int(sub.output_lengths(torch.tensor([xs.size(1)]))[0])
        step = max(1, self.window_frames // sub.factor)
        outs = [
            self._project(xs[:, sub.factor * j: sub.last_input_frame(min(j + step, n_out) - 1) + 1])
            for j in range(0, n_out, step)
        ]
        return torch.cat(outs, dim=1)

    # Long inputs (more than 41 s at a 10 ms hop) go through the convolutions in windows.
    window_frames: int = 4096

    # ------------------------------------------------------------------ offline
    def forward(self, xs: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(B, T, input_size) -> ((B, T', output_size), relative position table or None)."""
        out = self.pos_enc(self.project(xs))
        if isinstance(out, tuple):
            return out[0], out[1]
        return out, None

    # ------------------------------------------------------------------ streaming
    def forward_chunk(
        self, xs: torch.Tensor, state: Optional["InputLayerState"] = None
    ) -> Tuple[torch.Tensor, "InputLayerState"]:
        """Feed feature frames xs (B, t, input_size); return the output frames they complete
        (B, t', output_size) and the state (unconsumed frames, next output position)."""
        if state is None:
            state = InputLayerState(xs.new_zeros(xs.size(0), 0, xs.size(2)))
        sub = self.subsampling
        buf = torch.cat([state.buffer, xs.to(state.buffer.dtype)], dim=1)
        n = buf.size(1)
        n_out = int(sub.output_lengths(torch.tensor([n]))[0]) if n >= sub.min_frames else 0
        if n_out <= 0:
            return buf.new_zeros(buf.size(0), 0, self.output_size), InputLayerState(buf, state.offset)
        used = sub.last_input_frame(n_out - 1) + 1
        ys = self._positions_at(self.project(buf[:, :used]), state.offset)
        return ys, InputLayerState(buf[:, sub.factor * n_out:], state.offset + n_out)

    def _positions_at(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        """The positional encoding of frames ``offset .. offset + t - 1`` (no dropout)."""
        pos_enc, t = self.pos_enc, x.size(1)
        if isinstance(pos_enc, torch.nn.Identity):
            return x
        if isinstance(pos_enc, RelPositionalEncoding):  # positions are the attention's
            return x * pos_enc.xscale
        if not isinstance(pos_enc, (PositionalEncoding, ScaledPositionalEncoding)):
            raise ValueError(f"positional encoding {type(pos_enc).__name__} cannot stream")
        size = pos_enc.pe.size(1)
        if size < offset + t:  # doubling keeps a long stream's cost linear
            pos_enc.extend_pe(x.new_empty(1, max(offset + t, 2 * size)))
        pe = pos_enc.pe[:, offset: offset + t].to(x)
        if isinstance(pos_enc, ScaledPositionalEncoding):
            return x + pos_enc.alpha * pe
        return x * pos_enc.xscale + pe


@dataclass
class InputLayerState:
    """Carried between chunks: unconsumed input frames (B, n, D) and the next output index."""

    buffer: torch.Tensor
    offset: int = 0
