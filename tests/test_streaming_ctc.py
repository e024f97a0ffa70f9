"""Incremental CTC decoders against the definitions, computed by plain loops in float64."""
from __future__ import annotations

import itertools
import math
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch

from espnet_ssm.streaming.ctc_greedy import StreamingCTCGreedy
from espnet_ssm.streaming.ctc_prefix_beam import StreamingCTCPrefixBeamSearch
from conftest import rng  # noqa: F401  (the seeded fixture; other tests import it from here)




def random_log_probs(rng, T, V, peaky=3.0):
    logits = torch.from_numpy(rng.normal(0, peaky, (T, V)))
    return torch.log_softmax(logits, dim=-1)


def random_chunks(rng, T) -> List[Tuple[int, int]]:
    cuts = sorted(set(rng.integers(0, T + 1, size=int(rng.integers(0, 6))).tolist()) | {0, T})
    bounds = list(zip(cuts[:-1], cuts[1:]))
    return bounds + [(T, T)]  # and an empty chunk at the end


def collapse(path, blank=0):
    out, prev = [], None
    for s in path:
        if s != prev and s != blank:
            out.append(s)
        prev = s
    return tuple(out)


def brute_force_labelling_probs(lp: torch.Tensor, blank=0) -> Dict[tuple, float]:
    """P(labelling) = sum over all V^T alignment paths that collapse to it."""
    T, V = lp.shape
    probs: Dict[tuple, float] = {}
    for path in itertools.product(range(V), repeat=T):
        p = math.exp(sum(float(lp[t, s]) for t, s in enumerate(path)))
        key = collapse(path, blank)
        probs[key] = probs.get(key, 0.0) + p
    return probs


def test_greedy_equals_argmax_loop_for_any_chunking(rng):
    for _ in range(5):
        T, V = int(rng.integers(1, 80)), int(rng.integers(2, 12))
        lp = random_log_probs(rng, T, V, peaky=1.0)
        path = [int(np.argmax(lp[t].numpy())) for t in range(T)]
        want = collapse(path)
        # runs of every emitted token on the path: [start, end)
        spans, prev = [], None
        for t, s in enumerate(path):
            if s != 0 and s == prev:
                spans[-1][2] = t + 1
            elif s != 0:
                spans.append([s, t, t + 1])
            prev = s
        dec = StreamingCTCGreedy(blank=0)
        emitted = []
        for a, b in random_chunks(rng, T):
            emitted += dec.step(lp[a:b])
        assert tuple(emitted) == want == tuple(dec.tokens)
        assert [[s.token, s.start, s.end] for s in dec.spans] == spans
        assert dec.score == pytest.approx(sum(float(lp[t, s]) for t, s in enumerate(path)),
                                          abs=1e-9)


def test_greedy_keeps_repeats_separated_by_blank():
    lp = torch.full((5, 3), -10.0)
    for t, s in enumerate([1, 1, 0, 1, 2]):
        lp[t, s] = 0.0
    dec = StreamingCTCGreedy()
    dec.step(lp[:2])
    dec.step(lp[2:])
    assert dec.tokens == [1, 1, 2]
    assert [(s.start, s.end) for s in dec.spans] == [(0, 2), (3, 4), (4, 5)]


@pytest.mark.parametrize("length_bonus", [0.0, 0.7])
def test_unpruned_prefix_search_gives_exact_ctc_probabilities(rng, length_bonus):
    T, V = int(rng.integers(3, 6)), 3
    lp = random_log_probs(rng, T, V, peaky=1.0)
    ref = brute_force_labelling_probs(lp)
    search = StreamingCTCPrefixBeamSearch(beam_size=10_000, length_bonus=length_bonus)
    for a, b in random_chunks(rng, T):
        search.step(lp[a:b])
    got = {h.tokens: math.exp(h.log_prob) for h in search.nbest(10_000)}
    assert set(got) == {k for k, p in ref.items() if p > 0}
    for k, p in ref.items():
        assert got[k] == pytest.approx(p, rel=1e-9, abs=1e-15)
    # ranking: probability plus the length bonus, best first
    ranked = [h.tokens for h in search.nbest(10_000)]
    scores = [math.log(ref[k]) + length_bonus * len(k) for k in ranked]
    assert scores == sorted(scores, reverse=True)


def test_chunked_beam_search_equals_whole_utterance(rng):
    T, V = int(rng.integers(20, 60)), int(rng.integers(4, 20))
    lp = random_log_probs(rng, T, V)
    beam, token_beam = int(rng.integers(2, 8)), int(rng.integers(1, V))
    whole = StreamingCTCPrefixBeamSearch(beam, token_beam=token_beam, length_bonus=0.3)
    whole.step(lp)
    chunked = StreamingCTCPrefixBeamSearch(beam, token_beam=token_beam, length_bonus=0.3)
    for a, b in random_chunks(rng, T):
        chunked.step(lp[a:b])
    assert [(h.tokens, h.frames, h.log_pb, h.log_pnb) for h in chunked.nbest(beam)] == [
        (h.tokens, h.frames, h.log_pb, h.log_pnb) for h in whole.nbest(beam)
    ]


def test_beam_search_on_peaky_posteriors_finds_the_greedy_labelling_and_its_frames(rng):
    T, V = 40, 6
    path = rng.integers(0, V, size=T)
    lp = torch.full((T, V), -30.0, dtype=torch.float64)
    lp[torch.arange(T), torch.from_numpy(path)] = 0.0
    lp = torch.log_softmax(lp, -1)
    search = StreamingCTCPrefixBeamSearch(beam_size=4)
    search.step(lp)
    best = search.nbest(1)[0]
    assert best.tokens == collapse(path.tolist())
    greedy = StreamingCTCGreedy()
    greedy.step(lp)
    assert list(best.frames) == [s.start for s in greedy.spans]


def test_beam_search_argument_checks():
    with pytest.raises(ValueError, match="beam_size"):
        StreamingCTCPrefixBeamSearch(beam_size=0)
    with pytest.raises(ValueError, match="token_beam"):
        StreamingCTCPrefixBeamSearch(token_beam=0)
    with pytest.raises(ValueError, match="frames, vocab"):
        StreamingCTCPrefixBeamSearch().step(torch.zeros(3))
    with pytest.raises(ValueError, match="frames, vocab"):
        StreamingCTCGreedy().step(torch.zeros(3))


def test_pruned_beam_never_holds_a_labelling_twice(rng):
    """A labelling whose node left the beam and is spelled again (through a re-created parent)
    merges with the one still in the beam: the n-best has distinct labellings."""
    for _ in range(10):
        search = StreamingCTCPrefixBeamSearch(beam_size=4, blank=0)
        log_probs = torch.log_softmax(torch.randn(100, 3, dtype=torch.float64), dim=-1)
        for row in log_probs:  # after every frame
            search.step(row[None])
            labellings = [h.tokens for h in search.nbest(4)]
            assert len(set(labellings)) == len(labellings), labellings
