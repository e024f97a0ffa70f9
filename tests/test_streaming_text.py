"""Words and their times from decoded token spans (char and sentencepiece tokens)."""
from __future__ import annotations

import copy
import string

import numpy as np
import pytest
import torch

from espnet_ssm.streaming.ctc_greedy import TokenSpan
from espnet_ssm.streaming.decoding import CTCSearch, Recognition
from espnet_ssm.streaming.text import TokenText
from test_streaming_ctc import rng  # noqa: F401  (fixture)


def random_words(rng, vocab, n):
    return [vocab[i] for i in rng.integers(0, len(vocab), size=n)]


def spans_for(rng, ids):
    """Increasing, non-overlapping random frame spans, one per token."""
    spans, t = [], int(rng.integers(0, 5))
    for i in ids:
        t += int(rng.integers(0, 4))
        length = int(rng.integers(1, 4))
        spans.append(TokenSpan(i, t, t + length))
        t += length
    return spans


def test_char_tokens_group_at_space(rng):
    token_list = ["<blank>", "<unk>", "<space>"] + list(string.ascii_uppercase) + ["<sos/eos>"]
    text = TokenText(token_list, "char")
    vocab = ["".join(rng.choice(list("ABCDEFG"), size=rng.integers(1, 6))) for _ in range(20)]
    words = random_words(rng, vocab, int(rng.integers(1, 12)))
    ids, word_tokens = [], []
    for k, w in enumerate(words):
        if k:
            ids.append(token_list.index("<space>"))
        word_tokens.append((len(ids), len(ids) + len(w) - 1))
        ids += [token_list.index(c) for c in w]
    spans = spans_for(rng, ids)
    frame_seconds = float(rng.uniform(0.01, 0.08))
    got = text.words(spans, frame_seconds)
    assert [w.word for w in got] == words
    assert text.text(ids) == " ".join(words)
    for w, (a, b) in zip(got, word_tokens):
        assert w.start == pytest.approx(spans[a].start * frame_seconds)
        assert w.end == pytest.approx(spans[b].end * frame_seconds)


def sentencepiece_text(tmp_path, rng):
    """A small sentencepiece model over random words: (TokenText, token list, processor, words)."""
    spm = pytest.importorskip("sentencepiece")
    vocab = ["".join(rng.choice(list("ABCDEFGHIJ"), size=rng.integers(2, 8))) for _ in range(60)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(random_words(rng, vocab, 8)) for _ in range(300)))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp_path / "bpe"), vocab_size=40,
        model_type="unigram", character_coverage=1.0, bos_id=-1, eos_id=-1, unk_id=0,
        pad_id=-1, minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "bpe.model"))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    token_list = ["<blank>", "<unk>"] + pieces[1:] + ["<sos/eos>"]  # ESPnet's bpe token list
    return TokenText(token_list, "bpe", str(tmp_path / "bpe.model")), token_list, sp, vocab


def test_sentencepiece_tokens_group_at_word_starts(tmp_path, rng):
    text, token_list, sp, vocab = sentencepiece_text(tmp_path, rng)
    words = random_words(rng, vocab, int(rng.integers(1, 10)))
    ids, bounds = [], []
    for w in words:
        piece_ids = [token_list.index(p) for p in sp.encode(w, out_type=str)]
        bounds.append((len(ids), len(ids) + len(piece_ids) - 1))
        ids += piece_ids
    spans = spans_for(rng, ids)
    got = text.words(spans, 0.04)
    assert [w.word for w in got] == words
    assert text.text(ids) == " ".join(words)
    for w, (a, b) in zip(got, bounds):
        assert (w.start, w.end) == pytest.approx((spans[a].start * 0.04, spans[b].end * 0.04))


@pytest.mark.parametrize("token_type", ["char", "bpe", "word"])
def test_greedy_partial_results_equal_results_built_from_scratch(token_type, tmp_path, rng):
    """Partial results keep finished words between calls; they must equal a full rebuild, and
    what was handed out earlier must not change when the stream goes on."""
    if token_type == "bpe":
        text = sentencepiece_text(tmp_path, rng)[0]
    else:
        units = list(string.ascii_uppercase) if token_type == "char" else ["ab", "cd", "ef"]
        text = TokenText(["<blank>", "<unk>", "<space>"] + units + ["<sos/eos>"], token_type)
    V = len(text.converter.token_list)
    T = int(rng.integers(200, 400))
    peaky = torch.from_numpy(rng.normal(0, 1, (T, V))) * 4
    peaky[:, 0] += 3  # blanks between tokens, as CTC paths have
    log_probs = torch.log_softmax(peaky, dim=-1)
    search, frame_seconds = CTCSearch(blank=0), float(rng.uniform(0.01, 0.08))
    handed_out, t = [], 0
    while t < T:
        n = int(rng.integers(1, 12))
        search.step(log_probs[t : t + n])
        t += n
        got = search.results(text, frame_seconds)[0]
        greedy = search.search
        ids, spans = greedy.tokens, [TokenSpan(s.token, s.start, s.end) for s in greedy.spans]
        assert got == Recognition(text.text(ids), text.tokens(ids), ids, greedy.score, spans,
                                  text.words(spans, frame_seconds))
        handed_out.append((got, copy.deepcopy(got)))
    assert len(handed_out[-1][0].words) > 3
    for got, snapshot in handed_out:
        assert got == snapshot
