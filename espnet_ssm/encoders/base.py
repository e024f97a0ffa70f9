"""What every encoder of this package shares: ESPnet's encoder contract around a stack of blocks.

``SSMEncoderBase.forward(xs_pad, ilens, prev_states=None, ctc=None)``:

1. checks the batch: shapes, lengths within the padded axis, no utterance too short for the
   subsampling (``TooShortUttError``, which ESPnet's inference catches), finite features;
2. runs the input layer (ESPnet subsampling + positional encoding) and computes each row's
   output length from the subsampling formula, so a padded batch and a batch of one agree;
3. runs the blocks, each ``block(x, ctx)`` with ``ctx`` an :class:`EncoderContext` (frame mask,
   lengths, attention mask, relative position table);
4. InterCTC: after the 1-based blocks in ``interctc_layer_idx`` the normalised hidden state is
   kept, and with ``interctc_use_conditioning`` the CTC posteriors are fed back through
   ``conditioning_layer`` (a ``Linear(vocab, d)`` that ESPnet's model attaches);
5. returns ``(out, olens, None)``, or ``((out, [(idx, hidden), ...]), olens, None)``.

Outputs (final and intermediate) are zero at padded frames.

``SSMEncoderBase.forward_chunk(xs, state=None, is_final=False, ctc=None)`` runs a causal
encoder chunk by chunk: each part (input layer, blocks and their layers) continues from its own
state through its ``forward_chunk``, which shares its code with its ``forward``; the
concatenated outputs over a stream equal ``forward`` on the whole input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, List, Optional, Tuple, Union

import torch
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet.nets.pytorch_backend.transformer.layer_norm import LayerNorm
from espnet.nets.pytorch_backend.transformer.repeat import repeat
from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError

from espnet_ssm.encoders.chunk_capture import ChunkCapture
from espnet_ssm.encoders.options import EncoderConfigError
from espnet_ssm.encoders.options import (
    EncoderOptions,
    options_signature,
    parse_options,
)
from espnet_ssm.layers.attention import attention_mask, build_pos_enc
from espnet_ssm.layers.frontend import InputLayer, InputLayerState
from espnet_ssm.layers.streaming import check_streamable
from espnet_ssm.ops.padding import lengths_to_mask

EncoderOutput = Tuple[
    Union[torch.Tensor, Tuple[torch.Tensor, List[Tuple[int, torch.Tensor]]]],
    torch.Tensor,
    None,
]


@dataclass
class EncoderContext:
    """Per-batch tensors every block may need.

    Attributes:
        mask: (B, T) bool, True at real frames.
        lengths: (B,) number of real frames per utterance.
        att_mask: attention mask, (B, 1, T) or (B, T, T), True = may attend; None without attention.
        pos_emb: relative position table of ``rel_pos`` encodings, else None.
    """

    mask: torch.Tensor
    lengths: torch.Tensor
    att_mask: Optional[torch.Tensor] = None
    pos_emb: Optional[torch.Tensor] = None


@dataclass
class EncoderStreamState:
    """One stream's state: the input layer's and each block's (opaque to callers)."""

    input: Optional[InputLayerState] = None
    blocks: List[Any] = field(default_factory=list)


class SSMEncoderBase(AbsEncoder):
    """Front-end, InterCTC and input checks shared by the encoder families.

    A family sets ``Options`` (a dataclass combining the groups of
    :mod:`espnet_ssm.encoders.options` with its own keys), ``uses_attention`` when its blocks
    attend, and ``build_block(o)``, which makes one block ``block(x, ctx) -> x`` from the parsed
    options ``o``. The constructor ``cls(input_size, **encoder_conf)`` parses and checks the
    options into ``self.options``, builds the input layer and ``num_blocks`` blocks. A family
    that does not define ``__init__`` gets one carrying the signature of its ``Options`` (every
    key, with its default), which ESPnet's tools read; one that does keeps its own.
    """

    Options: ClassVar[type] = EncoderOptions
    uses_attention: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls):
            return

        def __init__(self, input_size: int, **options: Any) -> None:
            SSMEncoderBase.__init__(self, input_size, **options)

        # a function of its own, so that inspect.signature(cls.__init__) lists cls's keys
        __init__.__signature__ = options_signature(cls.Options)
        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        __init__.__doc__ = f"Build from ``input_size`` and the keys of ``{cls.Options.__name__}``."
        cls.__init__ = __init__

    def build_block(self, o: Any) -> torch.nn.Module:
        """One block ``block(x, ctx) -> x`` from the parsed options (defined by each family)."""
        raise NotImplementedError

    def finish_build(self, o: Any) -> None:
        """Called once the input layer and the blocks exist (a family may adjust them here)."""

    def __init__(self, input_size: int, **options: Any):
        super().__init__()
        owner = type(self).__name__
        self.options = o = parse_options(self.Options, owner, options)
        self._output_size = o.output_size
        self.input_size = input_size
        pos_enc = build_pos_enc(
            o.pos_enc_layer_type, o.output_size, o.positional_dropout_rate, o.max_pos_emb_len
        )
        try:
            self.embed = InputLayer(
                o.input_layer, input_size, o.output_size, o.dropout_rate, pos_enc
            )
        except ValueError as e:
            raise EncoderConfigError(f"{owner}: {e}") from None
        self.after_norm = LayerNorm(o.output_size)
        self.interctc_layer_idx = list(o.interctc_layer_idx)
        self.interctc_use_conditioning = o.interctc_use_conditioning
        self.conditioning_layer: Optional[torch.nn.Module] = None  # set by ESPnetASRModel
        self.causal = o.causal
        self.attention_left_context = getattr(o, "attention_left_context", -1)
        self.encoders = repeat(o.num_blocks, lambda _: self.build_block(o))
        # streaming: the blocks' chunk step replayed from traces (use_captured_chunks), or None
        self.chunk_capture: Optional[ChunkCapture] = None
        self.finish_build(o)

    def output_size(self) -> int:
        """Model dimension d of the encoder output."""
        return self._output_size

    def check_inputs(
        self, xs_pad: torch.Tensor, ilens: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Validate a padded batch; return it trimmed to its longest row, and the lengths.

        Padded frames are zeroed so that whatever they held cannot reach real frames.
        """
        if xs_pad.dim() != 3 or xs_pad.size(-1) != self.input_size:
            raise ValueError(
                f"{type(self).__name__}: expected features (batch, frames, {self.input_size}), "
                f"got shape {tuple(xs_pad.shape)}"
            )
        ilens = ilens.to(device=xs_pad.device, dtype=torch.long)
        if ilens.shape != (xs_pad.size(0),):
            raise ValueError(
                f"ilens must have shape ({xs_pad.size(0)},), got {tuple(ilens.shape)}"
            )
        too_long = (ilens > xs_pad.size(1)).nonzero().flatten().tolist()
        if too_long:
            raise ValueError(
                f"utterance(s) {too_long} of the batch have lengths "
                f"{ilens[too_long].tolist()} beyond the padded length {xs_pad.size(1)}"
            )
        limit = self.embed.subsampling.min_frames
        short = (ilens < limit).nonzero().flatten().tolist()
        if short:
            n = int(ilens[short[0]])
            raise TooShortUttError(
                f"utterance {short[0]} of the batch has {n} frames and is too short for "
                f"subsampling {self.embed.input_layer} (it needs at least {limit} frames), "
                "return empty results",
                n,
                limit,
            )
        xs = xs_pad[:, : int(ilens.max())]
        valid = lengths_to_mask(ilens, xs.size(1))
        xs = xs.masked_fill(~valid[..., None], 0.0)
        bad = ((~torch.isfinite(xs)).any(-1) & valid).any(-1).nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"non-finite (NaN or Inf) input features in utterance(s) {bad} of the batch"
            )
        return xs, ilens

    def _finish(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.after_norm(x).masked_fill(~mask[..., None], 0.0)

    def forward(
        self,
        xs_pad: torch.Tensor,
        ilens: torch.Tensor,
        prev_states: Optional[torch.Tensor] = None,
        ctc: Optional[torch.nn.Module] = None,
    ) -> EncoderOutput:
        """Encode a padded batch.

        Args:
            xs_pad: (B, T, input_size) features.
            ilens: (B,) frames per utterance.
            prev_states: unused (kept third for ESPnet's positional calls).
            ctc: ESPnet's CTC module, needed with ``interctc_use_conditioning``.

        Returns:
            ``(out, olens, None)`` with out (B, T', d), or ``((out, intermediates), olens, None)``
            when ``interctc_layer_idx`` is set.
        """
        xs, ilens = self.check_inputs(xs_pad, ilens)
        x, pos_emb = self.embed(xs)
        olens = self.embed.subsampling.output_lengths(ilens)
        if x.size(1) != int(olens.max()):  # the formula and ESPnet's module must agree
            raise RuntimeError(
                f"input layer gave {x.size(1)} frames, length formula {int(olens.max())}"
            )
        mask = lengths_to_mask(olens, x.size(1))
        att_mask = (
            attention_mask(mask, self.causal, self.attention_left_context)
            if self.uses_attention
            else None
        )
        ctx = EncoderContext(mask, olens, att_mask, pos_emb)

        intermediates: List[Tuple[int, torch.Tensor]] = []
        out = self._run_blocks(
            x, lambda i, block, h: block(h, ctx), lambda h: self._finish(h, mask), ctc,
            intermediates,
        )
        if intermediates:
            return (out, intermediates), olens, None
        return out, olens, None

    def _run_blocks(
        self,
        x: torch.Tensor,
        run_block: Callable,
        finish: Callable[[torch.Tensor], torch.Tensor],
        ctc: Optional[torch.nn.Module],
        intermediates: Optional[List[Tuple[int, torch.Tensor]]] = None,
    ) -> torch.Tensor:
        """The blocks (block i as ``run_block(i, block, x)``) with InterCTC after the listed
        ones, then ``finish`` (the final norm); intermediate outputs go to ``intermediates``."""
        for idx, block in enumerate(self.encoders, start=1):
            x = run_block(idx - 1, block, x)
            if idx not in self.interctc_layer_idx:
                continue
            if intermediates is None and not self.interctc_use_conditioning:
                continue  # nobody reads this layer's output
            hidden = finish(x)
            if intermediates is not None:
                intermediates.append((idx, hidden))
            if self.interctc_use_conditioning:
                if ctc is None or self.conditioning_layer is None:
                    raise RuntimeError(
                        "interctc_use_conditioning needs the model's CTC module "
                        "(ctc_weight > 0) and its conditioning_layer"
                    )
                x = x + self.conditioning_layer(ctc.softmax(hidden))
        return finish(x)

    # ------------------------------------------------------------------ streaming
    def forward_chunk(
        self,
        xs: torch.Tensor,
        state: Optional[EncoderStreamState] = None,
        is_final: bool = False,
        ctc: Optional[torch.nn.Module] = None,
    ) -> Tuple[torch.Tensor, Optional[EncoderStreamState]]:
        """Encode the next chunk of a stream (inference: no dropout).

        Args:
            xs: (B, t, input_size) normalised feature frames (t may be 0); usually B = 1.
            state: what the previous call returned; None starts a stream.
            is_final: the stream ends here (the returned state is None).
            ctc: ESPnet's CTC module, needed with ``interctc_use_conditioning``.

        Returns:
            (B, t', d) encoder frames that are final after this chunk (t' may be 0), and the
            state for the next call.

        Raises:
            StreamingNotSupported: the encoder looks ahead (named part and reason).
        """
        if state is None:
            check_streamable(self)
            state = EncoderStreamState(None, [None] * len(self.encoders))
        if xs.dim() != 3 or xs.size(-1) != self.input_size:
            raise ValueError(
                f"{type(self).__name__}.forward_chunk: expected features (batch, frames, "
                f"{self.input_size}), got shape {tuple(xs.shape)}"
            )
        if not torch.isfinite(xs).all():
            raise ValueError(f"{type(self).__name__}.forward_chunk: non-finite (NaN or Inf) "
                             "input features")
        x, input_state = self.embed.forward_chunk(xs, state.input)
        blocks = state.blocks
        if x.size(1):
            capture = getattr(self, "chunk_capture", None)  # absent in older pickles
            if capture is not None:
                x, blocks = capture.run(self, self._blocks_chunk, x, blocks, ctc)
            else:
                x, blocks = self._blocks_chunk(x, blocks, ctc)
        return x, (None if is_final else EncoderStreamState(input_state, blocks))

    def _blocks_chunk(
        self, x: torch.Tensor, blocks: List[Any], ctc: Optional[torch.nn.Module]
    ) -> Tuple[torch.Tensor, List[Any]]:
        """The blocks (and the final norm) on a chunk of encoder frames, each continuing from
        its state in ``blocks``; returns the output and the blocks' new states."""
        blocks = list(blocks)

        def run(i: int, block: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
            y, blocks[i] = block.forward_chunk(h, blocks[i])
            return y

        return self._run_blocks(x, run, self.after_norm, ctc), blocks

    def streaming_obstacle(self) -> Optional[str]:
        """Why this encoder cannot stream as configured (``causal: false``), or None."""
        if self.causal:
            return None
        return "causal: false (only encoders built with causal: true run chunk by chunk)"
