r"""Mamba decoder (registry name ``mamba``): the released Speech-Mamba's attention decoder.

After the decoder of the Speech-Mamba release (Gao & Chen, SLT 2024; its SpeechBrain
recipe): self-attention is replaced by Mamba's selective scan, which is causal by construction,
and there is no feed-forward module. On tokens :math:`y_1 .. y_U` and encoder output
:math:`h` (T frames):

.. math::

    x^{(0)}_u &= \sqrt d\, E[y_u] + PE_u \\
    \mathrm{MambaBlock}(x) &= x + \mathrm{Drop}(\mathrm{Mixer}(\mathrm{Norm}\,x)) \\
    a &= \mathrm{MambaBlock}(x^{(l)}) \\
    b &= a + \mathrm{Drop}(\mathrm{MHA}(q = \mathrm{Norm}\,a,\ k = v = h)) \quad
        \text{(encoder padding masked)} \\
    x^{(l+1)} &= \mathrm{MambaBlock}(b) \\
    \mathrm{logits}_u &= W_o\, \mathrm{LayerNorm}(x^{(L)}_u) + b_o

with RMSNorm (``norm_type``), Mamba's mixer (:class:`espnet_ssm.layers.mamba.MambaMixer`) and
ESPnet's ``MultiHeadedAttention``. :math:`PE` is the sinusoidal table of ESPnet's
``PositionalEncoding`` (the release's ``NormalizedEmbedding`` also scales by :math:`\sqrt d`).

Scoring (ESPnet's ``BatchScorerInterface``): a hypothesis's state is the conv and SSM state of
each of its 2L Mamba mixers (``conv (E, d_conv)``, ``ssm (E, N)``); the token at position
:math:`u` is embedded with :math:`PE_u`, advances every mixer by one step
(:meth:`MambaMixer.step`) and attends to the whole encoder output. Nothing of the prefix is
recomputed, so a step costs the same at any length. ``batch_score`` stacks the states of the
hypotheses along a batch dimension and splits them again; with no state (the first call, or a
caller that keeps none) the whole prefix is run at once through ``forward_chunk``.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask
from espnet.nets.pytorch_backend.transformer.attention import MultiHeadedAttention
from espnet.nets.pytorch_backend.transformer.embedding import PositionalEncoding
from espnet.nets.pytorch_backend.transformer.layer_norm import LayerNorm
from espnet.nets.scorer_interface import BatchScorerInterface
from espnet2.asr.decoder.abs_decoder import AbsDecoder
from typeguard import typechecked

from espnet_ssm.encoders.options import check_choice, check_divides, check_positive, check_rate
from espnet_ssm.encoders.speech_mamba import NORM_TYPES, MambaResidual, build_norm
from espnet_ssm.layers.mamba import MambaMixer, MambaState
from espnet_ssm.layers.mamba_release_init import MAMBA_INITS, release_initialize

# One hypothesis's state: (conv, ssm) of each mixer, layer by layer, without a batch dimension.
DecoderState = List[torch.Tensor]


class MambaDecoderLayer(torch.nn.Module):
    """Mamba block, cross-attention to the encoder output, Mamba block (no self-attention)."""

    def __init__(
        self,
        mamba_in: MambaResidual,
        src_norm: torch.nn.Module,
        src_attn: MultiHeadedAttention,
        mamba_out: MambaResidual,
        dropout_rate: float,
    ):
        super().__init__()
        self.mamba_in = mamba_in
        self.src_norm = src_norm
        self.src_attn = src_attn
        self.mamba_out = mamba_out
        self.dropout = torch.nn.Dropout(dropout_rate)

    def cross_attend(
        self, x: torch.Tensor, memory: torch.Tensor, memory_mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """``x + Drop(MHA(Norm x, memory, memory))``; memory_mask (B, 1, T) True at real frames."""
        q = self.src_norm(x)
        return x + self.dropout(self.src_attn(q, memory, memory, memory_mask))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
    ) -> torch.Tensor:
        """x (B, U, d) with ``mask`` (B, U) True at real tokens -> (B, U, d)."""
        x = self.mamba_in(x, mask)
        return self.mamba_out(self.cross_attend(x, memory, memory_mask), mask)

    def forward_chunk(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: Optional[torch.Tensor],
        state: Sequence[Optional[MambaState]],
    ) -> Tuple[torch.Tensor, List[MambaState]]:
        """Tokens x (B, l, d) continuing from ``state`` (the two mixers' states; None: the
        start) -> ((B, l, d), new states). One token takes the mixers' single-step path."""
        x, s_in = _advance(self.mamba_in, x, state[0])
        x = self.cross_attend(x, memory, memory_mask)
        x, s_out = _advance(self.mamba_out, x, state[1])
        return x, [s_in, s_out]


def _advance(
    block: MambaResidual, x: torch.Tensor, state: Optional[MambaState]
) -> Tuple[torch.Tensor, MambaState]:
    """``block`` on a chunk x (B, l, d) from the mixer ``state``; one frame through ``step``
    (no scan set-up), longer chunks through ``forward_chunk``."""
    if x.size(1) != 1 or state is None:
        return block.forward_chunk(x, state)
    y, state = block.mixer.step(block.norm(x[:, 0]), state)
    return x + block.dropout(y[:, None]), state


class MambaDecoder(AbsDecoder, BatchScorerInterface):
    """Attention decoder of N x [Mamba -> cross-attention -> Mamba] (see the module docstring).

    Args:
        vocab_size: output vocabulary V (ESPnet passes it).
        encoder_output_size: model dimension d, the encoder's output size (ESPnet passes it).
        attention_heads: heads of the cross-attention (divide d).
        num_blocks: decoder layers N.
        dropout_rate: dropout of every residual branch.
        positional_dropout_rate: dropout after embedding + positions.
        src_attention_dropout_rate: attention-weight dropout of the cross-attention.
        norm_type: ``rms_norm`` (the release's) or ``layer_norm`` before each mixer and the
            attention query.
        d_state: SSM state size N.
        expand: Mamba expansion E (inner width E d).
        d_conv: taps of Mamba's causal depthwise convolution.
        dt_rank: rank R of Δ's projection, or ``auto`` (ceil(d / 16)).
        dt_min, dt_max: range of the initial Δ (Mamba's initialisation).
        mamba_init: ``mamba`` (Mamba's own) or ``release`` (Xavier-normal on every parameter of
            two or more dimensions but the output layer; dt_proj's bias left at PyTorch's default).
        use_output_layer: end with the Linear d -> V (else return the final-norm hidden states).
    """

    @typechecked
    def __init__(
        self,
        vocab_size: int,
        encoder_output_size: int,
        attention_heads: int = 4,
        num_blocks: int = 3,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        src_attention_dropout_rate: float = 0.0,
        norm_type: str = "rms_norm",
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        dt_rank: Union[int, str] = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        mamba_init: str = "mamba",
        use_output_layer: bool = True,
    ):
        super().__init__()
        owner = type(self).__name__
        d = encoder_output_size
        check_divides(owner, "attention_heads", attention_heads, "encoder_output_size", d)
        check_positive(owner, "num_blocks", num_blocks)
        for key, rate in (("dropout_rate", dropout_rate),
                          ("positional_dropout_rate", positional_dropout_rate),
                          ("src_attention_dropout_rate", src_attention_dropout_rate)):
            check_rate(owner, key, rate)
        check_choice(owner, "norm_type", norm_type, NORM_TYPES)
        check_choice(owner, "mamba_init", mamba_init, MAMBA_INITS)
        self.odim = vocab_size
        self.embed = torch.nn.Embedding(vocab_size, d)
        self.pos_enc = PositionalEncoding(d, positional_dropout_rate)
        mixer_options = dict(
            d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank, dt_min=dt_min,
            dt_max=dt_max,
        )

        def mamba_block() -> MambaResidual:
            return MambaResidual(
                build_norm(norm_type, d), MambaMixer(d, **mixer_options), dropout_rate
            )

        self.decoders = torch.nn.ModuleList(
            MambaDecoderLayer(
                mamba_block(),
                build_norm(norm_type, d),
                MultiHeadedAttention(attention_heads, d, src_attention_dropout_rate),
                mamba_block(),
                dropout_rate,
            )
            for _ in range(num_blocks)
        )
        self.after_norm = LayerNorm(d)
        self.output_layer = torch.nn.Linear(d, vocab_size) if use_output_layer else None
        if mamba_init == "release":
            # the release's output layer sits outside its Xavier-initialised Transformer
            release_initialize(self, keep=("output_layer.",))

    # ------------------------------------------------------------------ pieces
    def _embed(self, ys: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Token ids (B, l) at positions offset .. offset + l - 1 -> (B, l, d):
        :math:`\\sqrt d E[y] + PE`, then dropout."""
        x = self.embed(ys)
        pe = self.pos_enc
        pe.extend_pe(x.new_empty(1, offset + ys.size(1)))
        return pe.dropout(x * pe.xscale + pe.pe[:, offset: offset + ys.size(1)])

    def _output(self, x: torch.Tensor) -> torch.Tensor:
        """Final LayerNorm and output layer."""
        x = self.after_norm(x)
        return self.output_layer(x) if self.output_layer is not None else x

    # ------------------------------------------------------------------ training
    def forward(
        self,
        hs_pad: torch.Tensor,
        hlens: torch.Tensor,
        ys_in_pad: torch.Tensor,
        ys_in_lens: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced decoding of a padded batch.

        Args:
            hs_pad: encoder output (B, T, d).
            hlens: encoder output lengths (B,).
            ys_in_pad: input token ids (B, U) (<sos> + labels, padded).
            ys_in_lens: input lengths (B,).

        Returns:
            logits (B, U, V) (before softmax; anything at padded tokens) and ``ys_in_lens``.
        """
        mask = ~make_pad_mask(ys_in_lens, maxlen=ys_in_pad.size(1)).to(ys_in_pad.device)
        memory_mask = (~make_pad_mask(hlens, maxlen=hs_pad.size(1)))[:, None, :].to(
            hs_pad.device
        )
        x = self._embed(ys_in_pad)
        for layer in self.decoders:
            x = layer(x, mask, hs_pad, memory_mask)
        return self._output(x), ys_in_lens

    # ------------------------------------------------------------------ scoring
    def init_state(self, x: torch.Tensor) -> Optional[DecoderState]:
        """No state before the first token (the first ``score`` starts the mixers at zero)."""
        return None

    def score(
        self, ys: torch.Tensor, state: Optional[DecoderState], x: torch.Tensor
    ) -> Tuple[torch.Tensor, DecoderState]:
        """Log-probabilities (V,) of the token after prefix ``ys`` (U,), given the encoder
        output x (T, d) and the prefix's ``state`` (None: run the whole prefix)."""
        logp, states = self.batch_score(ys[None], [state], x[None])
        return logp[0], states[0]

    def batch_score(
        self,
        ys: torch.Tensor,
        states: List[Optional[DecoderState]],
        xs: torch.Tensor,
        return_hs: bool = False,
    ) -> Tuple[Any, List[DecoderState]]:
        """Score the next token of n hypotheses at once.

        Args:
            ys: prefixes (n, U), all of one length.
            states: each prefix's state, from the previous call (all None: run the prefixes).
            xs: encoder output (n, T, d).
            return_hs: also return the final-norm hidden states (n, d) (ESPnet's option).

        Returns:
            log-probabilities (n, V) (``(logp, hidden)`` with ``return_hs``) and the states of
            the prefixes extended by their last token, one per hypothesis.
        """
        n, u = ys.shape
        have = [s is not None for s in states]
        if any(have) and not all(have):
            raise ValueError("MambaDecoder.batch_score: either every hypothesis has a state or none")
        if all(have):  # only the newest token advances the states
            tokens, offset, batch_state = ys[:, -1:], u - 1, self._stack(states)
        else:
            tokens, offset, batch_state = ys, 0, [None] * (2 * len(self.decoders))
        x = self._embed(tokens, offset)
        new_state: List[MambaState] = []
        for i, layer in enumerate(self.decoders):
            x, s = layer.forward_chunk(x, xs, None, batch_state[2 * i: 2 * i + 2])
            new_state.extend(s)
        hidden = self.after_norm(x[:, -1])
        logp = torch.log_softmax(self.output_layer(hidden), dim=-1)
        flat = [t for s in new_state for t in s]
        out_states = [[t[b] for t in flat] for b in range(n)]
        return ((logp, hidden) if return_hs else logp), out_states

    @staticmethod
    def _stack(states: List[DecoderState]) -> List[MambaState]:
        """Per-hypothesis flat states -> one (conv, ssm) pair per mixer with a batch dimension."""
        flat = [torch.stack(parts) for parts in zip(*states)]
        return [(flat[k], flat[k + 1]) for k in range(0, len(flat), 2)]
