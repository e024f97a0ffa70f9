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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
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

    def forward(self, xs: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(B, T, input_size) -> ((B, T', output_size), relative position table or None)."""
        if self.input_layer in CONV2D_CLASSES:
            out, _ = self.embed(xs, None)
        else:
            out = self.embed(xs)
        if isinstance(out, tuple):
            return out[0], out[1]
        return out, None
