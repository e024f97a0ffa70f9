r"""Frame-synchronous transducer search over encoder frames that arrive in chunks.

An RNN-Transducer scores, for encoder frame :math:`h_t` and the prediction network's output
:math:`g_u` after the labels so far, :math:`\log p(k \mid t, u) = \log\mathrm{softmax}(
\mathrm{joint}(h_t, g_u))_k`; blank moves to frame t + 1, a label k extends the sequence and
stays on frame t. Both searches here consume one frame at a time and keep everything they need
between frames, so feeding the frames in chunks gives exactly the result of feeding them at once:

* :class:`StreamingTransducerGreedy`: per frame, emit the best label while it is not blank, at
  most ``max_sym_exp - 1`` labels per frame (ESPnet's greedy search, ``beam_size: 1``, is the
  case ``max_sym_exp = 2``).
* :class:`StreamingTransducerBeam`: time-synchronous decoding (Saon et al., "Alignment-length
  synchronous decoding for RNN transducer", ICASSP 2020; ESPnet's ``search_type: tsd``): per
  frame, up to ``max_sym_exp - 1`` rounds of label expansions of the beam (the best ``beam``
  labels of each hypothesis, the best ``beam`` expansions kept); every hypothesis of every round
  also ends the frame with blank, and those frame-final hypotheses are merged by label sequence
  (log-add of their scores) and pruned to ``beam``.

Label sequences are linked prefixes (:class:`Prefix`): extending one is O(1) and hypotheses are
merged by a rolling hash of their labels, so a long stream costs the same per frame at its end as
at its start. Each hypothesis keeps the prediction network's output and state after its labels;
the prediction network runs once per new label, batched over the expansions of a frame.
The prediction network and joint network are ESPnet's (``decoder: transducer``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from espnet_ssm.streaming.ctc_greedy import TokenSpan

DecState = Tuple[torch.Tensor, Optional[torch.Tensor]]  # ((layers, 1, D), (layers, 1, D) or None)


@dataclass(frozen=True)
class Prefix:
    """A label sequence as a linked list: its last label, the frame that emitted it, the rest."""

    token: int
    frame: int
    parent: Optional["Prefix"]
    key: int  # rolling hash of the labels (equal sequences, equal keys)
    length: int

    def extend(self, token: int, frame: int) -> "Prefix":
        return Prefix(token, frame, self, hash((self.key, token)), self.length + 1)

    def spans(self) -> List[TokenSpan]:
        """Every label with its emitting frame, oldest first."""
        out, node = [], self
        while node is not None and node.length > 0:
            out.append(TokenSpan(node.token, node.frame, node.frame + 1))
            node = node.parent
        return out[::-1]


EMPTY = Prefix(-1, -1, None, 0, 0)


@dataclass
class TransducerHypothesis:
    """A label sequence, its log score and the prediction network after its labels."""

    prefix: Prefix
    score: float
    dec_proj: torch.Tensor  # (D_joint,): the prediction network's output in the joint space
    dec_state: DecState

    @property
    def tokens(self) -> List[int]:
        return [s.token for s in self.prefix.spans()]


class _TransducerNetworks:
    """ESPnet's prediction network run one label at a time (batched over hypotheses), and its
    joint network with both inputs projected once: the encoder frames of a chunk together, each
    prediction output when it is made (``JointNetwork(..., no_projection=True)``)."""

    def __init__(self, decoder: torch.nn.Module, joint_network: torch.nn.Module, blank: int):
        self.decoder, self.joint, self.blank = decoder, joint_network, blank

    def start(self, device: torch.device) -> Tuple[torch.Tensor, DecState]:
        """Projected output and state after the blank that starts every sequence (as ESPnet's
        search)."""
        self.decoder.set_device(device)
        out, states = self.step([self.blank], [self.decoder.init_state(1)])
        return out[0], states[0]

    def step(self, labels: List[int], states: List[DecState]) -> Tuple[torch.Tensor,
                                                                       List[DecState]]:
        """Each state advanced by its label -> (projected outputs (n, D_joint), new states)."""
        dec = self.decoder
        batch = dec.create_batch_states(None, states)
        emb = dec.embed(torch.tensor(labels, dtype=torch.long, device=dec.device)[:, None])
        # oneDNN's LSTM re-lays its weights out on every call: 10x slower for one step on a CPU
        with torch.backends.mkldnn.flags(enabled=False, deterministic=None, allow_tf32=None,
                                         fp32_precision=None):
            out, new = dec.rnn_forward(emb, batch)  # out (n, 1, D_dec)
        return self.joint.lin_dec(out[:, 0]), [dec.select_state(new, i) for i in range(len(labels))]

    def project_frames(self, enc: torch.Tensor) -> torch.Tensor:
        """Encoder frames (t, D_enc) in the joint space (t, D_joint)."""
        return self.joint.lin_enc(enc)

    def log_probs(self, enc_proj: torch.Tensor, dec_proj: torch.Tensor) -> torch.Tensor:
        """log softmax of the joint network on projected inputs (n or 1, D_joint) -> (n, V)."""
        return torch.log_softmax(self.joint(enc_proj, dec_proj, no_projection=True), dim=-1)


class StreamingTransducerGreedy:
    """Greedy transducer search over frames fed in chunks.

    Args:
        decoder: ESPnet's ``TransducerDecoder`` (prediction network).
        joint_network: ESPnet's ``JointNetwork``.
        blank: blank id.
        max_sym_exp: labels per frame + 1 (2: at most one label per frame, as ESPnet's greedy).
    """

    def __init__(self, decoder: torch.nn.Module, joint_network: torch.nn.Module, blank: int,
                 max_sym_exp: int = 2):
        if max_sym_exp < 2:
            raise ValueError(f"max_sym_exp must be >= 2 (labels per frame + 1), got {max_sym_exp}")
        self.net = _TransducerNetworks(decoder, joint_network, blank)
        self.blank, self.max_labels = blank, max_sym_exp - 1
        self.reset()

    def reset(self) -> None:
        """Start a new utterance."""
        self.hyp: Optional[TransducerHypothesis] = None
        self.spans: List[TokenSpan] = []  # the hypothesis' labels, appended as they come
        self.frames = 0

    @torch.no_grad()
    def step(self, enc: torch.Tensor) -> None:
        """Consume encoder frames (t, D_enc)."""
        if self.hyp is None:
            out, state = self.net.start(enc.device)
            self.hyp = TransducerHypothesis(EMPTY, 0.0, out, state)
        hyp = self.hyp
        for h_t in self.net.project_frames(enc):
            for _ in range(self.max_labels):  # the label limit may end a frame without blank
                # two-dimensional inputs: quantized linear layers need them
                lp, k = self.net.log_probs(h_t[None], hyp.dec_proj[None])[0].max(dim=-1)
                if int(k) == self.blank:
                    hyp.score += float(lp)
                    break
                out, states = self.net.step([int(k)], [hyp.dec_state])
                hyp = TransducerHypothesis(hyp.prefix.extend(int(k), self.frames),
                                           hyp.score + float(lp), out[0], states[0])
                self.spans.append(TokenSpan(int(k), self.frames, self.frames + 1))
            self.frames += 1
        self.hyp = hyp

    def nbest(self, n: int = 1, score_norm: bool = False) -> List[TransducerHypothesis]:
        """The hypothesis (greedy search has one)."""
        return [self.hyp] if self.hyp is not None else []


class StreamingTransducerBeam:
    """Time-synchronous transducer beam search over frames fed in chunks.

    Args:
        decoder: ESPnet's ``TransducerDecoder`` (prediction network).
        joint_network: ESPnet's ``JointNetwork``.
        blank: blank id.
        beam_size: hypotheses kept per frame (and labels tried per hypothesis).
        max_sym_exp: expansion rounds per frame + 1 (2: at most one label per frame).
    """

    def __init__(self, decoder: torch.nn.Module, joint_network: torch.nn.Module, blank: int,
                 beam_size: int, max_sym_exp: int = 2):
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if max_sym_exp < 2:
            raise ValueError(f"max_sym_exp must be >= 2 (labels per frame + 1), got {max_sym_exp}")
        self.net = _TransducerNetworks(decoder, joint_network, blank)
        self.blank = blank
        self.beam, self.max_sym_exp = beam_size, max_sym_exp
        self.reset()

    def reset(self) -> None:
        """Start a new utterance."""
        self.hyps: List[TransducerHypothesis] = []
        self.frames = 0

    @torch.no_grad()
    def step(self, enc: torch.Tensor) -> None:
        """Consume encoder frames (t, D_enc)."""
        if not self.hyps:
            out, state = self.net.start(enc.device)
            self.hyps = [TransducerHypothesis(EMPTY, 0.0, out, state)]
        for h_t in self.net.project_frames(enc):
            self.hyps = self._frame(h_t)
            self.frames += 1

    def _frame(self, h_t: torch.Tensor) -> List[TransducerHypothesis]:
        ended: Dict[int, TransducerHypothesis] = {}  # by label sequence, ending with blank
        current = self.hyps
        for round_ in range(self.max_sym_exp):
            logp = self.net.log_probs(h_t[None], torch.stack([h.dec_proj for h in current]))
            vocab = logp.size(-1)
            blank_lp = logp[:, self.blank].tolist()
            for hyp, lp in zip(current, blank_lp):
                score = hyp.score + lp
                same = ended.get(hyp.prefix.key)
                if same is None:
                    ended[hyp.prefix.key] = TransducerHypothesis(hyp.prefix, score, hyp.dec_proj,
                                                                 hyp.dec_state)
                else:  # another alignment of the same labels
                    same.score = float(np.logaddexp(same.score, score))
            if round_ == self.max_sym_exp - 1:
                break
            # the best `beam` labels of each hypothesis, then the best `beam` of those
            labels = logp.clone()
            labels[:, self.blank] = -float("inf")
            top_lp, top_k = labels.topk(min(self.beam, vocab - 1), dim=-1)
            scores = torch.tensor([h.score for h in current], dtype=torch.float64)
            cand = (scores[:, None] + top_lp.double()).flatten()
            keep = cand.topk(min(self.beam, cand.numel())).indices.tolist()
            width = top_k.size(1)
            parents = [current[i // width] for i in keep]
            tokens = [int(top_k[i // width, i % width]) for i in keep]
            outs, states = self.net.step(tokens, [p.dec_state for p in parents])
            current = [
                TransducerHypothesis(p.prefix.extend(k, self.frames), float(cand[i]), outs[j],
                                     states[j])
                for j, (i, p, k) in enumerate(zip(keep, parents, tokens))
            ]
        best = sorted(ended.values(), key=lambda h: h.score, reverse=True)
        return best[: self.beam]

    def nbest(self, n: int, score_norm: bool = False) -> List[TransducerHypothesis]:
        """The n best hypotheses, by score (per label, counting the start, with
        ``score_norm``, as ESPnet's final sorting)."""
        key = (lambda h: h.score / (h.prefix.length + 1)) if score_norm else (lambda h: h.score)
        return sorted(self.hyps, key=key, reverse=True)[:n]
