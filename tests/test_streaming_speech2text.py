"""Streaming and long-form recognition end to end: waveform chunks in, text out.

The reference is ESPnet's offline path of the same model (``ESPnetASRModel.encode`` on the whole
utterance, CTC posteriors, then the search). Models are small and randomly initialised: the
comparisons are about equality of the two paths, not about accuracy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
import torchaudio
import yaml
from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError

from espnet_ssm.streaming import (
    LongFormSpeech2Text,
    StreamingCTCGreedy,
    StreamingCTCPrefixBeamSearch,
    StreamingNotSupported,
    StreamingSpeech2Text,
)
from espnet_ssm.streaming.rescoring import attention_log_likelihoods
from espnet_ssm.tasks import SSMASRTask
from test_streaming_ctc import rng  # noqa: F401  (fixture)

TOKENS = ["<blank>", "<unk>", "<space>"] + list("ABCDEFGH") + ["<sos/eos>"]
CAUSAL_SSM_CONFORMER = dict(output_size=16, attention_heads=2, linear_units=24, num_blocks=2,
                            causal=True, attention_left_context=8)
CAUSAL_MH_SSM = dict(output_size=16, num_heads=2, linear_units=24, num_blocks=2, d_state=8,
                     causal=True, bidirectional=False)


def make_model_files(root: Path, encoder: str, encoder_conf: dict, decoder: bool = False,
                     overrides: Optional[dict] = None):
    """config.yaml (ESPnet dry run) and randomly initialised weights of a small model
    (``overrides``: further keys of the training config)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    stats = root / "feats_stats.npz"
    rng = np.random.default_rng(0)
    mean, var = rng.normal(-6, 1, 20), rng.uniform(2, 5, 20)
    np.savez(stats, count=np.array(100.0), sum=100 * mean, sum_square=100 * (var + mean**2))
    conf = dict(
        encoder=encoder, encoder_conf=encoder_conf,
        frontend_conf=dict(fs=8000, n_fft=256, hop_length=128, n_mels=20),
        normalize="global_mvn", normalize_conf=dict(stats_file=str(stats)),
        token_list=str(root / "tokens.txt"), token_type="char",
        decoder="transformer" if decoder else "none",
        decoder_conf=dict(num_blocks=1, linear_units=24, attention_heads=2) if decoder else {},
        model_conf=dict(ctc_weight=0.5 if decoder else 1.0),
    )
    conf.update(overrides or {})
    (root / "train.yaml").write_text(yaml.safe_dump(conf))
    SSMASRTask.main(cmd=["--config", str(root / "train.yaml"), "--dry_run", "true",
                         "--iterator_type", "none", "--output_dir", str(root / "exp")])
    config = root / "exp" / "config.yaml"
    model, _ = SSMASRTask.build_model_from_file(config, None)
    with torch.no_grad():  # a peaky CTC head, so that hypotheses are not empty
        if model.ctc is not None:
            model.ctc.ctc_lo.weight.mul_(8.0)
    torch.save(model.state_dict(), root / "exp" / "model.pth")
    return config, root / "exp" / "model.pth"


@pytest.fixture(scope="module")
def causal_files(tmp_path_factory):
    return make_model_files(tmp_path_factory.mktemp("causal"), "ssm_conformer",
                            CAUSAL_SSM_CONFORMER, decoder=True)


def waveform(rng, seconds):
    t = np.arange(int(seconds * 8000)) / 8000
    x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 900) * t * (1 + 0.3 * np.sin(3 * t)))
    return torch.from_numpy((x + 0.05 * rng.standard_normal(len(t))).astype(np.float32))


def offline_log_probs(model, speech):
    with torch.no_grad():
        enc, lens = model.encode(speech[None], torch.tensor([speech.numel()]))
        return model.ctc.log_softmax(enc)[0, : int(lens[0])]


def feed(s2t, speech, rng, max_chunk):
    start, n = 0, speech.numel()
    while True:
        c = int(rng.integers(0, max_chunk + 1))
        results = s2t(speech[start : start + c], is_final=start + c >= n)
        start += c
        if start >= n:
            return results


def test_streamed_greedy_equals_offline(causal_files, rng):
    config, model_file = causal_files
    s2t = StreamingSpeech2Text(config, model_file, beam_size=1)
    assert s2t.sample_rate == 8000
    speech = waveform(rng, rng.uniform(1.0, 2.0))
    lp = offline_log_probs(s2t.asr_model, speech)
    ref = StreamingCTCGreedy()
    ref.step(lp)
    assert ref.tokens  # the comparison below is not between two empty results
    # down to chunks of a few samples, up to several subsampled frames (4 x 128 samples)
    for max_chunk in (int(rng.integers(1, 64)), 512, int(rng.integers(513, 4000))):
        best = feed(s2t, speech, rng, max_chunk)[0]
        assert best.token_ids == ref.tokens
        assert best.score == pytest.approx(ref.score, abs=1e-3)
        assert best.text == s2t.text.text(ref.tokens)
        assert [(s.start, s.end) for s in best.spans] == [(s.start, s.end) for s in ref.spans]


@pytest.mark.parametrize("encoder, conf", [
    ("speech_mamba", dict(output_size=16, attention_heads=2, num_blocks=2, d_state=4,
                          causal=True, attention_left_context=6)),
    ("stateformer", dict(output_size=16, attention_heads=2, ssm_heads=2, linear_units=24,
                         num_blocks=2, d_state=4, causal=True, bidirectional=False)),
])
def test_every_causal_family_streams_like_offline(encoder, conf, tmp_path, rng):
    config, model_file = make_model_files(tmp_path, encoder, conf)
    s2t = StreamingSpeech2Text(config, model_file, beam_size=1)
    speech = waveform(rng, rng.uniform(1.0, 2.0))
    ref = StreamingCTCGreedy()
    ref.step(offline_log_probs(s2t.asr_model, speech))
    assert ref.tokens
    for max_chunk in (int(rng.integers(1, 64)), int(rng.integers(513, 4000))):
        best = feed(s2t, speech, rng, max_chunk)[0]
        assert best.token_ids == ref.tokens
        assert best.score == pytest.approx(ref.score, abs=1e-3)


def test_streamed_beam_search_equals_offline(causal_files, rng):
    config, model_file = causal_files
    s2t = StreamingSpeech2Text(config, model_file, beam_size=4, nbest=3, length_bonus=0.5)
    speech = waveform(rng, 1.5)
    ref = StreamingCTCPrefixBeamSearch(4, length_bonus=0.5, token_beam=4)
    ref.step(offline_log_probs(s2t.asr_model, speech))
    got = feed(s2t, speech, rng, 700)
    assert [r.token_ids for r in got] == [list(h.tokens) for h in ref.nbest(3)]


def test_partial_results_grow_into_the_final_one(causal_files, rng):
    config, model_file = causal_files
    s2t = StreamingSpeech2Text(config, model_file, beam_size=1)
    speech = waveform(rng, 1.5)
    partials = [s2t(speech[a : a + 1000])[0].token_ids for a in range(0, 11000, 1000)]
    final = s2t(speech[11000:], is_final=True)[0].token_ids
    for p in partials:
        assert final[: len(p)] == p
    # without partial results: nothing before the end, the same final result
    quiet = [s2t(speech[a : a + 1000], partial=False) for a in range(0, 11000, 1000)]
    assert quiet == [[]] * len(quiet)
    assert s2t(speech[11000:], is_final=True, partial=False)[0].token_ids == final


def test_attention_rescoring_uses_the_decoder_likelihood(causal_files, rng):
    config, model_file = causal_files
    s2t = StreamingSpeech2Text(config, model_file, beam_size=3, nbest=3, ctc_weight=0.3)
    speech = waveform(rng, 1.5)
    got = feed(s2t, speech, rng, 2000)
    ctc_only = StreamingSpeech2Text(config, model_file, beam_size=3, nbest=3)
    ctc_scores = {tuple(r.token_ids): r.score for r in feed(ctc_only, speech, rng, 2000)}
    model = s2t.asr_model
    with torch.no_grad():
        enc, _ = model.encode(speech[None], torch.tensor([speech.numel()]))
        for r in got:
            # log p_att(y) token by token with the decoder's incremental scorer
            ys, state, att = [model.sos], None, 0.0
            for tok in r.token_ids + [model.eos]:
                logp, state = model.decoder.score(torch.tensor(ys), state, enc[0])
                att += float(logp[tok])
                ys.append(tok)
            want = 0.3 * ctc_scores[tuple(r.token_ids)] + 0.7 * att
            assert r.score == pytest.approx(want, abs=1e-3)
            batched = attention_log_likelihoods(model.decoder, enc, [r.token_ids], model.sos,
                                                model.eos)[0]
            assert batched == pytest.approx(att, abs=1e-3)
    assert [r.score for r in got] == sorted([r.score for r in got], reverse=True)


@pytest.mark.parametrize("n", [0, 1, 300, 700])
def test_audio_too_short_for_one_encoder_frame_gives_an_empty_result(causal_files, n):
    config, model_file = causal_files
    s2t = StreamingSpeech2Text(config, model_file)
    # 700 samples = 6 feature frames (hop 128), one short of conv2d's 7
    res = s2t(torch.zeros(n) + 0.01, is_final=True)
    assert len(res) == 1 and res[0].token_ids == [] and res[0].text == ""
    # ... where the offline model refuses the input: below n_fft / 2 = 128 samples ESPnet's STFT
    # cannot pad it; above, its 1 + n // 128 frames are too few for conv2d
    if n > 128:
        expected = pytest.raises(TooShortUttError, match=f"has {1 + n // 128} frames.*at least 7")
    else:
        expected = pytest.raises(RuntimeError, match="[Pp]adding size")
    with expected:
        s2t.asr_model.encode(torch.zeros(1, max(n, 1)), torch.tensor([max(n, 1)]))


def test_wrong_sample_rate_is_an_error(causal_files):
    config, model_file = causal_files
    s2t = StreamingSpeech2Text(config, model_file)
    with pytest.raises(ValueError, match="16000 Hz.*8000 Hz"):
        s2t(torch.zeros(160), fs=16000)


def test_non_causal_model_cannot_stream(tmp_path):
    config, model_file = make_model_files(
        tmp_path, "mh_ssm", dict(CAUSAL_MH_SSM, causal=False, bidirectional=True))
    with pytest.raises(StreamingNotSupported, match="causal"):
        StreamingSpeech2Text(config, model_file)
    # ... but long-form recognition works, through the offline encoder pass
    assert LongFormSpeech2Text(config, model_file).mode == "offline"


def test_long_form_stream_and_offline_modes_agree_with_offline_decoding(tmp_path, rng):
    config, model_file = make_model_files(tmp_path, "mh_ssm", CAUSAL_MH_SSM)
    speech = waveform(rng, 6.0)
    stream = LongFormSpeech2Text(config, model_file, chunk_seconds=0.7)
    offline = LongFormSpeech2Text(config, model_file, mode="offline", chunk_seconds=0.9,
                                  ctc_slice_frames=7)
    assert stream.mode == "stream"
    ref = StreamingCTCGreedy()
    ref.step(offline_log_probs(stream.asr_model, speech))
    a, b = stream(speech), offline(speech)
    assert a.token_ids == b.token_ids == ref.tokens
    assert [(w.word, w.start, w.end) for w in a.words] == \
        [(w.word, w.start, w.end) for w in b.words]
    frame = 4 * 128 / 8000
    for w, (lo, hi) in zip(a.words, _word_frames(ref)):
        assert (w.start, w.end) == pytest.approx((lo * frame, hi * frame))
    # a 16 kHz copy is resampled to the model's 8 kHz before recognition
    up = torch.nn.functional.interpolate(speech[None, None], scale_factor=2, mode="linear")[0, 0]
    down = torchaudio.functional.resample(up, 16000, 8000)
    assert stream(up, fs=16000) == stream(down)


def _word_frames(greedy):
    """(first frame, end frame) of each word (char tokens; id 2 is <space>)."""
    words, cur = [], None
    for s in greedy.spans:
        if s.token == 2:
            cur = None
            continue
        if cur is None:
            cur = [s.start, s.end]
            words.append(cur)
        cur[1] = s.end
    return [tuple(w) for w in words]


def test_long_form_never_builds_quadratic_masks(tmp_path, rng, monkeypatch):
    """ESPnet's make_pad_mask (O(T^2) for 1-D lengths) must not be on the long-form path."""
    config, model_file = make_model_files(tmp_path, "mh_ssm",
                                          dict(CAUSAL_MH_SSM, causal=False, bidirectional=True))
    s2t = LongFormSpeech2Text(config, model_file)
    speech = waveform(rng, 3.0)
    ref = StreamingCTCGreedy()
    ref.step(offline_log_probs(s2t.asr_model, speech))

    def forbidden(*args, **kwargs):
        raise AssertionError("make_pad_mask called on the long-form path")

    import espnet.nets.pytorch_backend.nets_utils as nets_utils
    import espnet2.layers.global_mvn as global_mvn
    import espnet2.layers.log_mel as log_mel
    import espnet2.layers.stft as stft

    for mod in (nets_utils, global_mvn, log_mel, stft):
        monkeypatch.setattr(mod, "make_pad_mask", forbidden)
    assert s2t(speech).token_ids == ref.tokens
