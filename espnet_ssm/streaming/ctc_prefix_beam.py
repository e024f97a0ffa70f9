r"""Incremental CTC prefix beam search (Hannun et al., 2014, "First-pass large vocabulary
continuous speech recognition using bi-directional recurrent DNNs", Algorithm 1).

A labelling :math:`\ell` (a prefix) has probability mass split by the last symbol of the
alignment paths that produce it: :math:`p_b(\ell)` for paths ending in blank,
:math:`p_{nb}(\ell)` for paths ending in the last token of :math:`\ell`. One frame with scores
:math:`y_t(k)` updates them (all in log space):

.. math::

    p_b^{t}(\ell) &\mathrel{+}= (p_b^{t-1}(\ell) + p_{nb}^{t-1}(\ell))\,y_t(\varnothing) \\
    p_{nb}^{t}(\ell) &\mathrel{+}= p_{nb}^{t-1}(\ell)\,y_t(\ell_{-1})
        \qquad\text{(the last token repeats: merged)} \\
    p_{nb}^{t}(\ell k) &\mathrel{+}= \big(p_b^{t-1}(\ell) + [k \ne \ell_{-1}]\,
        p_{nb}^{t-1}(\ell)\big)\,y_t(k)

and the ``beam_size`` prefixes with the highest
:math:`\log(p_b + p_{nb}) + \beta\,|\ell|` (β the length bonus) are kept. Without pruning
(``beam_size`` at least the number of prefixes, every token considered) the result at the last
frame is the exact CTC probability of every labelling. Frames only ever need the previous
frame's beam, so chunked input gives the same result as the whole utterance.

Prefixes are nodes of a trie (token, frame, parent), so extending one costs O(1) however long
the transcript: an hour of audio is decoded in time linear in its length. Each node carries a
rolling hash of its labelling, by which extensions merge: a labelling reached again after its
node left the beam (through a re-created parent) is still one prefix. Each node records the
frame of the most probable single emission of its token seen while the node was in the beam
(the frame the token "fires" at): time stamps for free.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

NEG_INF = float("-inf")


def log_add(*xs: float) -> float:
    """log(sum(exp(x))) of a few Python floats, -inf safe."""
    top = max(xs)
    if top == NEG_INF:
        return NEG_INF
    return top + math.log(sum(math.exp(x - top) for x in xs))


class PrefixNode:
    """A trie node: the labelling of its parent followed by ``token`` (root: the empty one)."""

    __slots__ = ("token", "frame", "parent", "length", "emission", "key")

    def __init__(self, token: int, frame: int, parent: Optional["PrefixNode"]):
        self.token, self.frame, self.parent = token, frame, parent
        self.length = 0 if parent is None else parent.length + 1
        self.key = 0 if parent is None else hash((parent.key, token))  # equal labellings, equal keys
        self.emission = NEG_INF  # log probability of the most probable emission of ``token``

    def path(self) -> List["PrefixNode"]:
        """Nodes from the first token to this one (the root excluded)."""
        out = []
        node: Optional[PrefixNode] = self
        while node is not None and node.parent is not None:
            out.append(node)
            node = node.parent
        return out[::-1]


class PrefixHyp:
    """One prefix of the beam.

    Attributes:
        node: its trie node.
        log_pb: log probability of the paths ending in blank.
        log_pnb: log probability of the paths ending in the last token.
    """

    __slots__ = ("node", "log_pb", "log_pnb")

    def __init__(self, node: PrefixNode, log_pb: float, log_pnb: float):
        self.node, self.log_pb, self.log_pnb = node, log_pb, log_pnb

    @property
    def log_prob(self) -> float:
        """log P(labelling so far) = log(p_b + p_nb)."""
        return log_add(self.log_pb, self.log_pnb)

    @property
    def tokens(self) -> Tuple[int, ...]:
        """The labelling."""
        return tuple(n.token for n in self.node.path())

    @property
    def frames(self) -> Tuple[int, ...]:
        """Frame at which each token was first emitted."""
        return tuple(n.frame for n in self.node.path())


class StreamingCTCPrefixBeamSearch:
    """CTC prefix beam search over encoder frames that arrive in chunks.

    Args:
        beam_size: prefixes kept after each frame.
        blank: index of the blank symbol.
        length_bonus: β, added per token to the ranking score (counters the bias of CTC
            toward short labellings when the beam is small); 0 ranks by probability alone.
        token_beam: per frame, only the ``token_beam`` best tokens (plus blank and each
            prefix's last token) are tried; None tries all.

    ``step(log_probs)`` consumes (t, V) frame log probabilities; ``nbest(n)`` returns the best
    prefixes, ranked; ``reset()`` starts a new utterance.
    """

    def __init__(
        self,
        beam_size: int = 10,
        blank: int = 0,
        length_bonus: float = 0.0,
        token_beam: Optional[int] = None,
    ):
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if token_beam is not None and token_beam < 1:
            raise ValueError(f"token_beam must be >= 1 or None, got {token_beam}")
        self.beam_size = beam_size
        self.blank = blank
        self.length_bonus = length_bonus
        self.token_beam = token_beam
        self.reset()

    def reset(self) -> None:
        """Start a new utterance: the beam holds the empty prefix with probability 1."""
        self.beam: List[PrefixHyp] = [PrefixHyp(PrefixNode(-1, -1, None), 0.0, NEG_INF)]
        self.frames = 0

    def rank_score(self, hyp: PrefixHyp) -> float:
        """log P(prefix) + length_bonus * len(prefix)."""
        return hyp.log_prob + self.length_bonus * hyp.node.length

    def _candidates(self, row: torch.Tensor) -> Sequence[int]:
        vocab = row.numel()
        if self.token_beam is None or self.token_beam >= vocab:
            return range(vocab)
        top = set(torch.topk(row, self.token_beam).indices.tolist())
        top.update(h.node.token for h in self.beam if h.node.parent is not None)
        top.add(self.blank)
        return sorted(top)

    def _frame(self, row: torch.Tensor, t: int) -> None:
        scores = row.tolist()
        # Labellings already in the beam, by key: an extension that spells one merges into it.
        nodes = {h.node.key: h.node for h in self.beam}
        acc: Dict[PrefixNode, List[float]] = {}  # node -> [p_b, p_nb]; insertion-ordered

        def add(node: PrefixNode, blank_end: bool, logp: float, extension: bool) -> None:
            e = acc.get(node)
            if e is None:
                e = acc[node] = [NEG_INF, NEG_INF]
            i = 0 if blank_end else 1
            e[i] = log_add(e[i], logp)
            if extension and logp > node.emission:  # the token fires here more than before
                node.emission, node.frame = logp, t

        candidates = self._candidates(row)
        for hyp in self.beam:
            node = hyp.node
            total = hyp.log_prob
            last = node.token if node.parent is not None else None
            for k in candidates:
                y = scores[k]
                if k == self.blank:
                    add(node, True, total + y, False)
                    continue
                key = hash((node.key, k))
                child = nodes.get(key)
                if child is None:
                    child = nodes[key] = PrefixNode(k, t, node)
                if k == last:  # a repeat merges unless a blank separates the two
                    add(node, False, hyp.log_pnb + y, False)
                    add(child, False, hyp.log_pb + y, True)
                else:
                    add(child, False, total + y, True)
        hyps = [PrefixHyp(n, e[0], e[1]) for n, e in acc.items()]
        hyps = [h for h in hyps if h.log_prob > NEG_INF]  # impossible labellings
        hyps.sort(key=lambda h: -self.rank_score(h))  # stable: ties keep insertion order
        self.beam = hyps[: self.beam_size]

    def step(self, log_probs: torch.Tensor) -> None:
        """Consume frames (t, V) of log probabilities."""
        if log_probs.dim() != 2:
            raise ValueError(f"log_probs must be (frames, vocab), got {tuple(log_probs.shape)}")
        rows = log_probs.detach().to("cpu", torch.float64)
        for row in rows:
            self._frame(row, self.frames)
            self.frames += 1

    def nbest(self, n: int = 1) -> List[PrefixHyp]:
        """The ``n`` best prefixes so far, best first."""
        return self.beam[:n]
