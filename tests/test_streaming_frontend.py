"""The chunked front-end against ESPnet's offline one (DefaultFrontend + GlobalMVN/UtteranceMVN).

Tolerance: the streamed frames are computed by the same ``torch.stft``/log-mel/MVN operations on
the same samples, only batched differently, so they agree to float32 rounding (<= 1e-5 absolute
on features of magnitude ~10).
"""
from __future__ import annotations


import numpy as np
import pytest
import torch
from espnet2.asr.frontend.default import DefaultFrontend
from espnet2.layers.global_mvn import GlobalMVN
from espnet2.layers.utterance_mvn import UtteranceMVN

from espnet_ssm.streaming.frontend import (
    FrontendConfigError,
    StreamingFrontend,
    extract_features,
)
from test_streaming_ctc import rng  # noqa: F401  (fixture)

ATOL = 1e-5
STFT_CONFIGS = [
    dict(n_fft=512, hop_length=160),
    dict(n_fft=400, win_length=320, hop_length=160),
    dict(n_fft=512, hop_length=128, n_mels=40),
    dict(n_fft=512, hop_length=160, center=False),
]


def global_mvn(tmp_path, rng, n_mels):
    stats = tmp_path / "feats_stats.npz"
    count = 1000.0
    mean = rng.normal(-5.0, 2.0, n_mels)
    var = rng.uniform(1.0, 9.0, n_mels)
    np.savez(stats, count=np.array(count), sum=mean * count, sum_square=(var + mean**2) * count)
    return GlobalMVN(stats)


def offline(frontend, normalize, x):
    feats, lens = frontend(x[None], torch.tensor([x.numel()]))
    if normalize is not None:
        feats, lens = normalize(feats, lens)
    return feats[0, : int(lens[0])]


def stream(sf, x, rng, max_chunk):
    outs, i, n = [], 0, x.numel()
    while True:
        c = int(rng.integers(0, max_chunk + 1))  # empty chunks included
        outs.append(sf(x[i : i + c], is_final=i + c >= n))
        i += c
        if i >= n:
            return torch.cat(outs)


@pytest.mark.parametrize("conf", STFT_CONFIGS)
def test_streamed_features_equal_offline(conf, tmp_path, rng):
    fe = DefaultFrontend(fs=16000, **conf).eval()
    mvn = global_mvn(tmp_path, rng, fe.output_size())
    sf = StreamingFrontend(fe, mvn)
    for n in [int(rng.integers(600, 30000)), 16000]:
        x = torch.from_numpy(rng.normal(0, 0.1, n).astype(np.float32))
        ref = offline(fe, mvn, x)
        for max_chunk in (1 + int(rng.integers(0, 50)), int(rng.integers(100, 4000))):
            got = stream(sf, x, rng, max_chunk)
            assert got.shape == ref.shape
            torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
            assert sf.frames_emitted == 0 and sf.samples_received == 0  # reset after the end


def test_frames_are_emitted_as_soon_as_their_samples_arrive(rng):
    fe = DefaultFrontend(fs=16000, n_fft=512, hop_length=160).eval()
    sf = StreamingFrontend(fe, None)
    n, p = 8000, 256
    x = torch.from_numpy(rng.normal(0, 0.1, n).astype(np.float32))
    seen = 0
    for i in range(0, n, 100):
        seen += sf(x[i : i + 100]).size(0)
        received = min(i + 100, n)
        # frame t needs padded samples up to t*hop + n_fft - 1, i.e. real ones up to t*hop + p - 1
        expect = 0 if received <= p else (received + p - 512) // 160 + 1
        assert seen == max(expect, 0)
    tail = sf(x[:0], is_final=True)
    assert seen + tail.size(0) == n // 160 + 1


def test_buffer_stays_bounded_on_a_long_stream(rng):
    fe = DefaultFrontend(fs=16000, n_fft=512, hop_length=160).eval()
    sf = StreamingFrontend(fe, None)
    chunk = torch.from_numpy(rng.normal(0, 0.1, 1600).astype(np.float32))
    for _ in range(300):  # 30 s
        sf(chunk)
        assert sf._buf.numel() <= 512 + 1600


@pytest.mark.parametrize("n", [1, 100, 256])
def test_audio_within_the_reflection_pad_gives_no_frames(n):
    fe = DefaultFrontend(fs=16000, n_fft=512, hop_length=160).eval()
    sf = StreamingFrontend(fe, None)
    x = torch.randn(n) * 0.1
    assert sf(x, is_final=True).shape == (0, 80)
    assert sf.num_frames(n) == 0
    with pytest.raises(RuntimeError):  # what the offline path does with it
        fe(x[None], torch.tensor([n]))


def test_shortest_reflectable_audio_matches_offline():
    fe = DefaultFrontend(fs=16000, n_fft=512, hop_length=160).eval()
    x = torch.randn(257) * 0.1
    sf = StreamingFrontend(fe, None)
    got = torch.cat([sf(x[:200]), sf(x[200:], is_final=True)])
    torch.testing.assert_close(got, offline(fe, None, x), atol=ATOL, rtol=0)


def test_empty_stream():
    fe = DefaultFrontend(fs=16000).eval()
    sf = StreamingFrontend(fe, None)
    assert sf(torch.zeros(0), is_final=True).shape == (0, 80)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(100, 2), "mono"),
        (torch.zeros(100, dtype=torch.int16), "floating-point"),
        (torch.tensor([0.0, float("nan"), 0.0]), "NaN"),
    ],
)
def test_bad_audio_is_rejected(bad, match):
    sf = StreamingFrontend(DefaultFrontend(fs=16000).eval(), None)
    with pytest.raises(ValueError, match=match):
        sf(bad)


def test_utterance_mvn_cannot_stream_but_long_form_supports_it(rng):
    fe = DefaultFrontend(fs=16000, n_fft=512, hop_length=160).eval()
    x = torch.from_numpy(rng.normal(0, 0.1, 20000).astype(np.float32))
    for norm_vars in (False, True):
        mvn = UtteranceMVN(norm_means=True, norm_vars=norm_vars)
        with pytest.raises(FrontendConfigError, match="utterance_mvn"):
            StreamingFrontend(fe, mvn)(x)
        got = extract_features(fe, mvn, x, chunk_samples=int(rng.integers(100, 5000)))
        torch.testing.assert_close(got, offline(fe, mvn, x.clone()), atol=ATOL, rtol=0)


def test_extract_features_equals_offline(tmp_path, rng):
    fe = DefaultFrontend(fs=16000, n_fft=512, hop_length=160).eval()
    mvn = global_mvn(tmp_path, rng, 80)
    x = torch.from_numpy(rng.normal(0, 0.1, 40000).astype(np.float32))
    got = extract_features(fe, mvn, x, chunk_samples=int(rng.integers(100, 9000)))
    torch.testing.assert_close(got, offline(fe, mvn, x), atol=ATOL, rtol=0)


def test_unsupported_frontends_are_named():
    with pytest.raises(FrontendConfigError, match="default"):
        StreamingFrontend(None, None)
    with pytest.raises(FrontendConfigError, match="normalize"):
        StreamingFrontend(DefaultFrontend(fs=16000), torch.nn.Identity())
