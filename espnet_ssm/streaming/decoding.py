"""Searches over encoder frames fed in pieces, and the recognition results they yield.

:class:`CTCSearch` picks greedy decoding (``beam_size == 1``) or prefix beam search, consumes
CTC log probabilities chunk by chunk and, at the end, optionally rescores its n-best list with
the attention decoder. :class:`TransducerSearch` does the same for transducer models with
greedy or time-synchronous beam search over the encoder frames themselves. :func:`frame_search`
picks the one a model needs. :class:`Recognition` is one result: text, tokens, ids, score and
word time stamps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import torch

from espnet_ssm.layers.frontend import CONV2D_CLASSES, Subsampling
from espnet_ssm.streaming.ctc_greedy import StreamingCTCGreedy, TokenSpan
from espnet_ssm.streaming.ctc_prefix_beam import StreamingCTCPrefixBeamSearch
from espnet_ssm.streaming.rescoring import attention_log_likelihoods
from espnet_ssm.streaming.text import TokenText, WordStamp
from espnet_ssm.streaming.transducer_search import (
    StreamingTransducerBeam,
    StreamingTransducerGreedy,
)


@dataclass
class Recognition:
    """One hypothesis.

    Attributes:
        text: detokenised text (None when the model has no tokenizer).
        tokens: token strings.
        token_ids: token ids.
        score: log score (CTC, or the CTC/attention mixture after rescoring).
        spans: encoder-frame span of every token.
        words: words with start and end times in seconds.
    """

    text: Optional[str]
    tokens: List[str]
    token_ids: List[int]
    score: float
    spans: List[TokenSpan] = field(default_factory=list)
    words: List[WordStamp] = field(default_factory=list)


def subsampling_factor(encoder: torch.nn.Module) -> int:
    """Frame-rate reduction of an encoder's input layer (ours, or ESPnet's conv2d classes)."""
    embed = getattr(encoder, "embed", None)
    sub = getattr(embed, "subsampling", None)
    if isinstance(sub, Subsampling):
        return sub.factor
    for cls, stages in CONV2D_CLASSES.values():
        if type(embed) is cls:
            return Subsampling(stages).factor
    return 1


def is_transducer(model: torch.nn.Module) -> bool:
    """Whether an ESPnet ASR model decodes with a transducer (prediction + joint network)."""
    return bool(getattr(model, "use_transducer_decoder", False))


class CTCSearch:
    """Greedy or prefix-beam CTC search with optional attention rescoring at the end.

    Args:
        blank: blank id.
        beam_size: 1 for greedy decoding, else the prefix beam width.
        nbest: hypotheses returned.
        length_bonus: per-token bonus of the prefix beam search.
        token_beam: tokens tried per frame by the beam search (default: ``beam_size``; the
            vocabulary size tries all).
    """

    def __init__(self, blank: int, beam_size: int = 1, nbest: int = 1,
                 length_bonus: float = 0.0, token_beam: Optional[int] = None):
        if nbest < 1:
            raise ValueError(f"nbest must be >= 1, got {nbest}")
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if nbest > beam_size:
            raise ValueError(f"nbest={nbest} cannot exceed beam_size={beam_size}")
        self.nbest = nbest
        if beam_size == 1:
            self.search = StreamingCTCGreedy(blank)
        else:
            self.search = StreamingCTCPrefixBeamSearch(
                beam_size, blank, length_bonus, token_beam if token_beam else beam_size
            )
        self._greedy: Optional[_GreedyResult] = None

    def reset(self) -> None:
        """Start a new utterance."""
        self.search.reset()
        self._greedy = None

    def step(self, log_probs: torch.Tensor) -> None:
        """Consume (t, V) CTC log probabilities."""
        self.search.step(log_probs)

    def consume(self, model: torch.nn.Module, enc: torch.Tensor) -> None:
        """Consume encoder frames (t, D) of ``model`` (through its CTC head)."""
        self.step(model.ctc.log_softmax(enc[None])[0])

    def hypotheses(self) -> List[tuple]:
        """(token ids, spans, CTC score) of the current n-best list, best first."""
        if isinstance(self.search, StreamingCTCGreedy):
            spans = self.search.spans
            return [([s.token for s in spans], spans, self.search.score)]
        out = []
        for h in self.search.nbest(self.nbest):
            spans = [TokenSpan(tok, f, f + 1) for tok, f in zip(h.tokens, h.frames)]
            out.append((list(h.tokens), spans, self.search.rank_score(h)))
        return out

    def results(
        self,
        text: TokenText,
        frame_seconds: float,
        rescorer: Optional["AttentionRescorer"] = None,
        enc: Optional[torch.Tensor] = None,
    ) -> List[Recognition]:
        """The n-best list as :class:`Recognition` objects (rescored when ``rescorer`` given).

        Greedy search converts each finished word once per utterance (:class:`_GreedyResult`),
        so that partial results of a long live stream do not cost time in proportion to the
        whole transcript's words; beam hypotheses can change anywhere and are rebuilt.
        """
        if isinstance(self.search, StreamingCTCGreedy) and rescorer is None:
            if self._greedy is None or not self._greedy.serves(text, frame_seconds):
                self._greedy = _GreedyResult(text, frame_seconds)
            return [self._greedy.update(self.search.state.spans, self.search.score)]
        hyps = self.hypotheses()
        scores = [score for _, _, score in hyps]
        if rescorer is not None and enc is not None and enc.size(1) > 0:
            scores = rescorer([ids for ids, _, _ in hyps], scores, enc)
            order = sorted(range(len(hyps)), key=lambda i: -scores[i])
            hyps, scores = [hyps[i] for i in order], [scores[i] for i in order]
        return [
            Recognition(text.text(ids), text.tokens(ids), list(ids), float(score), list(spans),
                        text.words(spans, frame_seconds))
            for (ids, spans, _), score in zip(hyps, scores)
        ]


class TransducerSearch:
    """Greedy or time-synchronous beam search of a transducer model over its encoder frames.

    Args:
        model: the ASR model (its ``decoder``, ``joint_network`` and ``blank_id``).
        beam_size: 1 for greedy search, else the beam of time-synchronous decoding.
        nbest: hypotheses returned.
        max_sym_exp: labels per frame + 1 (ESPnet's ``transducer_conf`` key; 2: one label per
            frame, as ESPnet's greedy search).
        score_norm: rank the final n-best list by score per label (ESPnet's default).
    """

    def __init__(self, model: torch.nn.Module, beam_size: int = 1, nbest: int = 1,
                 max_sym_exp: int = 2, score_norm: bool = True):
        if nbest < 1 or nbest > beam_size:
            raise ValueError(f"need 1 <= nbest <= beam_size, got nbest={nbest}, "
                             f"beam_size={beam_size}")
        args = (model.decoder, model.joint_network, model.blank_id)
        if beam_size == 1:
            self.search = StreamingTransducerGreedy(*args, max_sym_exp=max_sym_exp)
        else:
            self.search = StreamingTransducerBeam(*args, beam_size, max_sym_exp=max_sym_exp)
        self.nbest, self.score_norm = nbest, score_norm
        self._greedy: Optional[_GreedyResult] = None

    def reset(self) -> None:
        """Start a new utterance."""
        self.search.reset()
        self._greedy = None

    def consume(self, model: torch.nn.Module, enc: torch.Tensor) -> None:
        """Consume encoder frames (t, D)."""
        self.search.step(enc)

    def results(self, text: TokenText, frame_seconds: float, rescorer: None = None,
                enc: Optional[torch.Tensor] = None) -> List[Recognition]:
        """The n-best list as :class:`Recognition` objects; each label's span is the frame
        that emitted it."""
        if rescorer is not None:
            raise ValueError("transducer models are not rescored with an attention decoder")
        if isinstance(self.search, StreamingTransducerGreedy):  # labels are only appended
            if self._greedy is None or not self._greedy.serves(text, frame_seconds):
                self._greedy = _GreedyResult(text, frame_seconds)
            hyp = self.search.hyp
            return [self._greedy.update(self.search.spans, hyp.score if hyp else 0.0)]
        out = []
        for hyp in self.search.nbest(self.nbest, self.score_norm):
            spans = hyp.prefix.spans()
            ids = [s.token for s in spans]
            out.append(Recognition(text.text(ids), text.tokens(ids), ids, float(hyp.score),
                                   spans, text.words(spans, frame_seconds)))
        return out


def frame_search(model: torch.nn.Module, beam_size: int = 1, nbest: int = 1,
                 length_bonus: float = 0.0, token_beam: Optional[int] = None,
                 transducer_conf: Optional[dict] = None):
    """The search a model decodes with: :class:`TransducerSearch` for transducer models
    (``transducer_conf``: ESPnet's keys ``search_type`` (``tsd`` or, with beam 1, ``greedy``
    or ``default``), ``max_sym_exp``, ``score_norm``), else :class:`CTCSearch`."""
    if not is_transducer(model):
        if model.ctc is None:
            raise ValueError("CTC decoding needs a model with a CTC head (ctc_weight > 0)")
        if transducer_conf:
            raise ValueError("transducer_conf is given but the model has no transducer decoder")
        return CTCSearch(model.blank_id, beam_size, nbest, length_bonus, token_beam)
    if length_bonus or token_beam:
        raise ValueError("the transducer search has no length bonus (--penalty) or token beam "
                         "(--token_beam); it tries beam_size labels per hypothesis")
    conf = dict(transducer_conf or {})
    search_type = conf.pop("search_type", "tsd" if beam_size > 1 else "greedy")
    if beam_size > 1 and search_type != "tsd":
        raise ValueError(
            f"transducer_conf.search_type={search_type!r}: chunk-by-chunk decoding runs the "
            "frame-synchronous search, search_type: tsd (time-synchronous decoding)")
    unknown = sorted(set(conf) - {"max_sym_exp", "score_norm"})
    if unknown:
        raise ValueError(f"transducer_conf keys {unknown} do not apply to streaming decoding "
                         "(known: search_type, max_sym_exp, score_norm)")
    return TransducerSearch(model, beam_size, nbest, **conf)


class _GreedyResult:
    """The greedy hypothesis of one utterance as a :class:`Recognition`, kept up to date.

    Greedy CTC only appends tokens (and lengthens the last token's frame span), so token
    strings are converted once, and so is every word followed by a word boundary: it can no
    longer change. Only the last, unfinished word is regrouped on each call. Equal to
    ``Recognition`` built from scratch (tests).
    """

    def __init__(self, text: TokenText, frame_seconds: float):
        self.text, self.frame_seconds = text, frame_seconds
        self.ids: List[int] = []
        self.tokens: List[str] = []
        self.done = 0  # spans[:done] form finished words
        self.words: List[WordStamp] = []

    def serves(self, text: TokenText, frame_seconds: float) -> bool:
        return text is self.text and frame_seconds == self.frame_seconds

    def update(self, spans: List[TokenSpan], score: float) -> Recognition:
        """The current hypothesis from the search's spans (not modified)."""
        new = [s.token for s in spans[len(self.ids):]]
        self.ids += new
        self.tokens += self.text.tokens(new)
        boundary = next((i for i in range(len(self.tokens) - 1, self.done, -1)
                         if self.text.starts_word(self.tokens[i])), self.done)
        if boundary > self.done:  # words before the last boundary are final
            self.words += self.text.words(spans[self.done : boundary], self.frame_seconds)
            self.done = boundary
        own = list(spans)
        if own:  # the last span may still grow: hand out a copy of it
            own[-1] = TokenSpan(own[-1].token, own[-1].start, own[-1].end)
        return Recognition(
            self.text.text_of_tokens(self.tokens), list(self.tokens), list(self.ids),
            float(score), own,
            self.words + self.text.words(spans[self.done :], self.frame_seconds),
        )


class AttentionRescorer:
    """Mixes CTC scores with the attention decoder's: ``w * ctc + (1 - w) * att``."""

    def __init__(self, decoder: torch.nn.Module, sos: int, eos: int, ctc_weight: float):
        if not 0.0 <= ctc_weight < 1.0:
            raise ValueError(f"attention rescoring needs 0 <= ctc_weight < 1, got {ctc_weight}")
        self.decoder, self.sos, self.eos, self.ctc_weight = decoder, sos, eos, ctc_weight

    def __call__(self, hyps: List[List[int]], ctc_scores: List[float],
                 enc: torch.Tensor) -> List[float]:
        att = attention_log_likelihoods(self.decoder, enc, hyps, self.sos, self.eos)
        w = self.ctc_weight
        return [w * c + (1 - w) * a for c, a in zip(ctc_scores, att)]
