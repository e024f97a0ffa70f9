"""Streamed == offline for the causal encoders, feature chunks down to a single frame.

Encoder outputs agree within 1e-4 (float32; the chunked path sums the same terms in another
order: SSM recurrence vs FFT convolution, partial attention rows), CTC greedy hypotheses exactly.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch
from espnet2.asr.ctc import CTC
from espnet2.tasks.asr import encoder_choices

import espnet_ssm  # noqa: F401  (registers the encoders)
from espnet_ssm.streaming.ctc_greedy import StreamingCTCGreedy
from espnet_ssm.streaming.encoder import EncoderStream, StreamingNotSupported, check_streamable
from test_streaming_ctc import rng  # noqa: F401  (fixture)

ATOL = 1e-4
D_IN = 20

SSM_CONFORMER = [
    dict(ssm_mode="com"),
    dict(ssm_mode="dir", ssm_init="s4d_lin"),
    dict(ssm_mode="rep", rep_kernel_size=5, attention_left_context=3),
    dict(ssm_mode="conv", cnn_module_kernel=7, attention_left_context=0),
    dict(ssm_mode="com", pos_enc_layer_type="abs_pos", selfattention_layer_type="selfattn",
         attention_left_context=6, input_layer="conv2d6"),
    dict(ssm_mode="com", conv_norm="batch_norm", macaron_style=False, input_layer="linear"),
]
MH_SSM = [
    dict(),
    dict(gating="glu", stack=2, ssm_init="s4d_real", input_layer="conv2d2"),
    dict(gating="none", input_projection=False, pos_enc_layer_type="scaled_abs_pos",
         discretization="bilinear"),
]
CASES = [("ssm_conformer", dict(attention_heads=2, **c)) for c in SSM_CONFORMER] + [
    ("mh_ssm", dict(num_heads=4, bidirectional=False, d_state=8, **c)) for c in MH_SSM
] + [("stateformer", dict(attention_heads=2, ssm_heads=2, bidirectional=False, d_state=4,
                          attention_left_context=4))]


def build(name, conf):
    cls = encoder_choices.get_class(name)
    enc = cls(D_IN, output_size=16, linear_units=24, num_blocks=2, causal=True, **conf).eval()
    with torch.no_grad():  # non-trivial norm statistics and biases
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return enc


def stream(enc, xs, rng, max_chunk):
    s = EncoderStream(enc)
    outs, start, T = [], 0, xs.size(1)
    while start < T:
        n = int(rng.integers(1, max_chunk + 1))
        outs.append(s(xs[0, start : start + n], is_final=start + n >= T))
        start += n
    return torch.cat(outs)


@pytest.mark.parametrize("name, conf", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_streamed_encoder_equals_offline(name, conf, rng):
    enc = build(name, conf)
    ctc = CTC(odim=7, encoder_output_size=16).eval()
    T = int(rng.integers(30, 90))
    xs = torch.randn(1, T, D_IN)
    with torch.no_grad():
        ref, lens, _ = enc(xs, torch.tensor([T]))
        ref = ref[0, : int(lens[0])]
        factor = enc.embed.subsampling.factor
        for max_chunk in (1, factor, int(rng.integers(factor, 4 * factor + 1)), T):
            got = stream(enc, xs, rng, max_chunk)
            assert got.shape == ref.shape
            torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
            hyp_stream, hyp_ref = StreamingCTCGreedy(), StreamingCTCGreedy()
            hyp_stream.step(ctc.log_softmax(got[None])[0])
            hyp_ref.step(ctc.log_softmax(ref[None])[0])
            assert hyp_stream.tokens == hyp_ref.tokens


def test_state_does_not_grow_with_a_limited_left_context(rng):
    enc = build("ssm_conformer", dict(attention_heads=2, attention_left_context=5))
    s = EncoderStream(enc)
    with torch.no_grad():
        for _ in range(30):
            s(torch.randn(8, D_IN))
    sizes = [t.numel() for t in _tensors(s.state)]
    with torch.no_grad():
        for _ in range(30):
            s(torch.randn(8, D_IN))
    assert [t.numel() for t in _tensors(s.state)] == sizes


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif hasattr(obj, "__dict__"):
        for o in vars(obj).values():
            yield from _tensors(o)


def test_too_few_frames_give_no_output():
    enc = build("ssm_conformer", dict(attention_heads=2))
    s = EncoderStream(enc)
    with torch.no_grad():
        assert s(torch.randn(6, D_IN), is_final=True).shape == (0, 16)  # conv2d needs 7


@pytest.mark.parametrize(
    "name, conf",
    [("ssm_conformer", dict(attention_heads=2, causal=False)),
     ("mh_ssm", dict(num_heads=2)),
     ("stateformer", dict(attention_heads=2, ssm_heads=2)),
     ("speech_mamba", dict(attention_heads=2))],
)
def test_non_causal_encoders_refuse_to_stream(name, conf):
    cls = encoder_choices.get_class(name)
    enc = cls(D_IN, output_size=16, num_blocks=1, **conf)
    with pytest.raises(StreamingNotSupported, match="causal"):
        check_streamable(enc)
