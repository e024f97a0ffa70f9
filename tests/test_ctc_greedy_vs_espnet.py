"""Our greedy CTC decoder against ESPnet's own ``Speech2Text`` with ``ctc_weight: 1.0,
beam_size: 1`` (no LM, no decoder).

The two searches differ in what they maximise: greedy CTC takes the best *path* (argmax per
frame, then merge repeats and drop blanks); ESPnet's beam 1 extends the best *prefix* by CTC
prefix probability (summed over paths), label by label, until <eos> scores best. They agree
when the posteriors are peaky (one label holds almost all the mass at every frame), and not in
general. To control the posteriors exactly, the model's encoder output is replaced by designed
frames and its CTC output layer (``ctc.ctc_lo``) is set by hand to read them as logits; ESPnet's
search, CTC scorer and token conversion then run unchanged, as does our ``CTCSearch``.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import pytest
import torch
from espnet2.bin.asr_inference import Speech2Text

from espnet_ssm.streaming.decoding import CTCSearch
from test_streaming_speech2text import CAUSAL_MH_SSM, TOKENS, make_model_files

BLANK, EOS = 0, len(TOKENS) - 1
LABELS = list(range(1, EOS))  # <unk>, <space>, A .. H: all but blank and <sos/eos>


@pytest.fixture(scope="module")
def espnet_beam1(tmp_path_factory) -> Speech2Text:
    """ESPnet's Speech2Text, CTC only, beam 1, no LM, over a model whose CTC output layer
    passes the first len(TOKENS) encoder channels through as logits."""
    config, model_file = make_model_files(tmp_path_factory.mktemp("beam1"), "mh_ssm",
                                          CAUSAL_MH_SSM)
    s2t = Speech2Text(asr_train_config=str(config), asr_model_file=str(model_file),
                      ctc_weight=1.0, beam_size=1, nbest=1, lm_train_config=None, device="cpu")
    ctc_lo = s2t.asr_model.ctc.ctc_lo
    assert ctc_lo.out_features == len(TOKENS) <= ctc_lo.in_features
    with torch.no_grad():
        ctc_lo.weight.zero_()
        ctc_lo.weight[:, : len(TOKENS)] = torch.eye(len(TOKENS))
        ctc_lo.bias.zero_()
    return s2t


def decode_both(s2t: Speech2Text, logits: torch.Tensor) -> Tuple[List[int], List[int]]:
    """(ESPnet beam-1 token ids, our greedy token ids) for CTC logits (T, V)."""
    model = s2t.asr_model
    frames = torch.zeros(1, logits.size(0), model.ctc.ctc_lo.in_features)
    frames[0, :, : logits.size(1)] = logits
    model.encode = lambda speech, speech_lengths: (frames, torch.tensor([logits.size(0)]))
    with torch.no_grad():
        (_, _, espnet_ids, _), = s2t(torch.zeros(1600))
        ours = CTCSearch(blank=BLANK, beam_size=1)
        ours.consume(model, frames[0])
    (our_ids, _, _), = ours.hypotheses()
    return list(espnet_ids), our_ids


def peaky_logits(rng: np.random.Generator, frames: int, margin: float = 12.0) -> Tuple[torch.Tensor, List[int]]:
    """Logits whose argmax follows a random path (half blanks, repeats included) by ``margin``
    nats over every other label, and the labelling of that path."""
    path = [BLANK if rng.random() < 0.5 else int(rng.choice(LABELS)) for _ in range(frames)]
    for t in range(1, frames):  # make repeats (merged) and blank-separated repeats likely
        if rng.random() < 0.25:
            path[t] = path[t - 1]
    path[-1] = BLANK  # fewer labels than frames: ESPnet's output length limit never cuts
    logits = torch.from_numpy(rng.uniform(0.0, 1.0, (frames, len(TOKENS))))
    logits[:, EOS] = -30.0  # CTC never emits <sos/eos> itself
    logits[torch.arange(frames), path] = margin + 1.0
    labelling, prev = [], None
    for s in path:
        if s != prev and s != BLANK:
            labelling.append(s)
        prev = s
    return logits, labelling


def test_beam1_equals_greedy_on_peaky_posteriors(espnet_beam1, rng):
    """Several random utterances: ESPnet's beam-1 tokens == our greedy tokens == the path's."""
    for _ in range(6):
        logits, labelling = peaky_logits(rng, int(rng.integers(5, 40)))
        assert labelling  # not a comparison of two empty results
        espnet_ids, our_ids = decode_both(espnet_beam1, logits)
        assert espnet_ids == our_ids == labelling


def test_they_differ_on_flat_posteriors(espnet_beam1):
    """Two frames with p(blank) = 0.4, p(A) = 0.35, p(B) = 0.25 (then frames of certain blank,
    so that ESPnet's output length limit of one label per frame does not cut the search): the
    best path is all blanks (empty labelling, probability 0.16), while the labelling "A" has
    probability 0.35^2 + 2 * 0.4 * 0.35 = 0.4025 (and "B" 0.2625): ESPnet's prefix search says
    A, greedy says nothing. This is why the agreement above needs peaky posteriors."""
    a, b = TOKENS.index("A"), TOKENS.index("B")
    probs = torch.full((6, len(TOKENS)), 1e-12, dtype=torch.float64)
    probs[:2, BLANK], probs[:2, a], probs[:2, b] = 0.4, 0.35, 0.25
    probs[2:, BLANK] = 1.0
    espnet_ids, our_ids = decode_both(espnet_beam1, probs.log().float())
    assert our_ids == [] and espnet_ids == [a]
