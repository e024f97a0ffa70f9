"""Driving an encoder chunk by chunk.

An encoder streams when it implements

* ``supports_streaming`` (property): True when every part of it can run on chunks with carried
  state (our causal ``ssm_conformer`` and ``mh_ssm``);
* ``init_streaming_state(device)``: the state before the first frame;
* ``forward_chunk(xs, state, is_final) -> (ys, state)``: ``xs`` (1, t, input_size) are the next
  feature frames (t may be 0), ``ys`` (1, t', d) the encoder frames they complete. Over a stream,
  the concatenated ``ys`` equal the offline ``forward`` of the concatenated ``xs``.

:class:`EncoderStream` holds that state for one stream.
"""
from __future__ import annotations

from typing import Any

import torch


class StreamingNotSupported(ValueError):
    """The model's encoder cannot run chunk by chunk."""


def check_streamable(encoder: torch.nn.Module) -> None:
    """Raise :class:`StreamingNotSupported` (saying why) unless ``encoder`` streams."""
    name = type(encoder).__name__
    if not hasattr(encoder, "forward_chunk") or not hasattr(encoder, "init_streaming_state"):
        raise StreamingNotSupported(
            f"encoder {name} has no chunk-by-chunk inference; streaming needs one of this "
            "package's causal encoders (ssm_conformer or mh_ssm with causal: true). Long-form "
            "recognition (espnet_ssm.streaming.longform) works with any encoder."
        )
    if not encoder.supports_streaming:
        reason = getattr(encoder, "streaming_unsupported_reason", lambda: "it is not causal")()
        raise StreamingNotSupported(
            f"encoder {name} cannot stream: {reason}. Train it with causal: true "
            "(and bidirectional: false for mh_ssm)."
        )


class EncoderStream:
    """One stream through a streaming encoder: feature frames in, encoder frames out."""

    def __init__(self, encoder: torch.nn.Module, device: Any = "cpu"):
        check_streamable(encoder)
        self.encoder = encoder
        self.device = device
        self.reset()

    def reset(self) -> None:
        """Start a new stream."""
        self.state = self.encoder.init_streaming_state(self.device)

    def __call__(self, feats: torch.Tensor, is_final: bool = False) -> torch.Tensor:
        """(t, input_size) feature frames -> (t', d) encoder frames completed by them."""
        ys, self.state = self.encoder.forward_chunk(feats[None], self.state, is_final)
        if is_final:
            self.reset()
        return ys[0]
