"""Depthwise 1-D convolution over time that respects padding and, optionally, causality.

    y[b, t, c] = bias[c] + sum_{i=0}^{k-1} w[c, i] * x[b, t - left + i, c]

with ``x`` zero outside an utterance's real frames. ``causal``: ``left = k - 1`` (output ``t``
depends on inputs ``t-k+1 .. t``); otherwise ``left = k // 2`` (centred for odd ``k``; for even
``k`` one more frame of past than of future). Padded frames are zeroed before the convolution, so
a padded batch gives each utterance what it gives alone.

Streaming (causal only): ``forward_chunk`` carries the last k-1 inputs; the offline pass pads
with k-1 zeros where the chunk pass puts them, and both run the same unpadded convolution.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from espnet_ssm.layers.streaming import require_streamable
from espnet_ssm.ops import depthwise_conv_valid

ConvTail = torch.Tensor  # (B, k-1, C): the last k-1 inputs, oldest first


class MaskedDepthwiseConv1d(torch.nn.Module):
    """(B, L, C) -> (B, L, C) depthwise convolution with kernel ``kernel_size``.

    Args:
        channels: number of channels C (one filter each).
        kernel_size: taps k >= 1.
        causal: look only at the current and past frames.
        bias: add a per-channel bias.
    """

    def __init__(self, channels: int, kernel_size: int, causal: bool, bias: bool = True):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size={kernel_size} must be >= 1")
        self.kernel_size = kernel_size
        self.causal = causal
        self.left = kernel_size - 1 if causal else kernel_size // 2
        self.right = kernel_size - 1 - self.left
        self.conv = torch.nn.Conv1d(
            channels, channels, kernel_size, groups=channels, bias=bias
        )

    def _valid(self, h: torch.Tensor) -> torch.Tensor:
        return depthwise_conv_valid(h, self.conv.weight, self.conv.bias)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``mask`` (B, L) bool, True = real frame; padded frames are zeroed first."""
        if mask is not None:
            x = x.masked_fill(~mask[..., None], 0.0)
        return self._valid(F.pad(x, (0, 0, self.left, self.right)))

    def forward_chunk(
        self, x: torch.Tensor, tail: Optional[ConvTail] = None
    ) -> Tuple[torch.Tensor, ConvTail]:
        """Chunk x (B, t, C) after the inputs in ``tail`` -> (y (B, t, C), the next tail)."""
        require_streamable(self)
        if tail is None:
            tail = x.new_zeros(x.size(0), self.kernel_size - 1, x.size(2))
        h = torch.cat([tail.to(x.dtype), x], dim=1)
        return self._valid(h), h[:, h.size(1) - (self.kernel_size - 1):]

    def streaming_obstacle(self) -> Optional[str]:
        """Why this convolution cannot stream (it looks ahead), or None."""
        return None if self.causal else f"looks ahead: non-causal {self.kernel_size}-tap convolution"
