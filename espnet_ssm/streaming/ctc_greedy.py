r"""Incremental CTC greedy decoding with token time stamps.

Greedy CTC picks :math:`\pi_t = \arg\max_k \log p_t(k)` per frame and reads the labelling off the
path by merging repeats and removing blanks. Both steps only look one frame back, so feeding the
frames in chunks gives exactly the offline result as long as the last symbol of the previous
chunk is carried. The path also gives every token's frames: it is emitted at the first frame of
its run and lasts until the run ends.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import torch


@dataclass
class TokenSpan:
    """A decoded token and the encoder frames of its run on the CTC path (``end`` exclusive)."""

    token: int
    start: int
    end: int


@dataclass
class CTCGreedyState:
    """What greedy decoding carries between chunks."""

    spans: List[TokenSpan] = field(default_factory=list)
    last: int = -1  # symbol on the previous frame (-1 before the first frame)
    frames: int = 0  # frames consumed
    score: float = 0.0  # log probability of the greedy path


class StreamingCTCGreedy:
    """Greedy CTC over encoder frames that arrive in chunks.

    Args:
        blank: index of the blank symbol.

    ``step(log_probs)`` consumes (t, V) frame scores and returns the tokens newly emitted;
    ``tokens`` and ``spans`` give the hypothesis so far; ``reset()`` starts a new utterance.
    """

    def __init__(self, blank: int = 0):
        self.blank = blank
        self.reset()

    def reset(self) -> None:
        """Start a new utterance."""
        self.state = CTCGreedyState()

    @property
    def tokens(self) -> List[int]:
        """Token ids decoded so far."""
        return [s.token for s in self.state.spans]

    @property
    def spans(self) -> List[TokenSpan]:
        """Decoded tokens with their frame spans (the last one may still grow)."""
        return list(self.state.spans)

    @property
    def score(self) -> float:
        """Log probability of the greedy path so far."""
        return self.state.score

    def step(self, log_probs: torch.Tensor) -> List[int]:
        """Consume frames (t, V); return the token ids emitted by them."""
        if log_probs.dim() != 2:
            raise ValueError(f"log_probs must be (frames, vocab), got {tuple(log_probs.shape)}")
        st = self.state
        if log_probs.size(0) == 0:
            return []
        best, path = log_probs.max(dim=-1)
        st.score += float(best.double().sum())
        symbols, counts = torch.unique_consecutive(path, return_counts=True)
        new: List[int] = []
        t = st.frames
        for sym, count in zip(symbols.tolist(), counts.tolist()):
            if sym == st.last:  # only the first run can continue the previous chunk's run
                if sym != self.blank:
                    st.spans[-1].end += count
            elif sym != self.blank:
                st.spans.append(TokenSpan(sym, t, t + count))
                new.append(sym)
            st.last = sym
            t += count
        st.frames = t
        return new
