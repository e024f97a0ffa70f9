"""``forward_chunk`` == ``forward`` for every causal encoder family, feature chunks down to a
single frame.

Encoder outputs agree within 1e-4 (float32; the chunked path sums the same terms in another
order: SSM recurrence vs FFT convolution, partial attention rows), CTC greedy hypotheses exactly.
"""
from __future__ import annotations


import pytest
import torch
from espnet2.asr.ctc import CTC
from espnet2.tasks.asr import encoder_choices

import espnet_ssm  # noqa: F401  (registers the encoders)
from espnet_ssm.streaming.ctc_greedy import StreamingCTCGreedy
from espnet_ssm.layers.streaming import StreamingNotSupported
from test_streaming_ctc import rng  # noqa: F401  (fixture)

ATOL = 1e-4
D_IN = 20
VOCAB = 7

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
SPEECH_MAMBA = [
    dict(),
    dict(attention_left_context=5, norm_type="layer_norm", pos_enc_layer_type="rel_pos",
         selfattention_layer_type="rel_selfattn", input_layer="conv2d8"),
]
CONDITIONING = dict(interctc_layer_idx=[1], interctc_use_conditioning=True)
CASES = [("ssm_conformer", dict(attention_heads=2, **c)) for c in SSM_CONFORMER] + [
    ("mh_ssm", dict(num_heads=4, bidirectional=False, d_state=8, **c)) for c in MH_SSM
] + [
    ("stateformer", dict(attention_heads=2, ssm_heads=2, bidirectional=False, d_state=4,
                         attention_left_context=4)),
    ("stateformer", dict(attention_heads=2, ssm_heads=2, bidirectional=False, d_state=4,
                         block_order="attention_first", use_conv_module=True, **CONDITIONING)),
] + [("speech_mamba", dict(attention_heads=2, d_state=4, **c)) for c in SPEECH_MAMBA] + [
    ("ssm_conformer", dict(attention_heads=2, num_blocks=3, interctc_layer_idx=[1, 2],
                           interctc_use_conditioning=True)),
    ("mh_ssm", dict(num_heads=2, bidirectional=False, d_state=4, **CONDITIONING)),
    ("speech_mamba", dict(attention_heads=2, d_state=4, **CONDITIONING)),
]


def build(name, conf):
    cls = encoder_choices.get_class(name)
    conf = dict(dict(output_size=16, num_blocks=2, causal=True), **conf)
    if name != "speech_mamba":  # no feed-forward modules
        conf.setdefault("linear_units", 24)
    enc = cls(D_IN, **conf).eval()
    if enc.interctc_use_conditioning:  # what ESPnet's model attaches
        enc.conditioning_layer = torch.nn.Linear(VOCAB, 16).eval()
    with torch.no_grad():  # non-trivial norm statistics and biases
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return enc


def stream(enc, xs, rng, max_chunk, ctc=None):
    state, outs, start, T = None, [], 0, xs.size(1)
    while start < T:
        n = int(rng.integers(1, max_chunk + 1))
        y, state = enc.forward_chunk(xs[:, start : start + n], state,
                                     is_final=start + n >= T, ctc=ctc)
        outs.append(y[0])
        start += n
    assert state is None  # is_final ends the stream
    return torch.cat(outs)


@pytest.mark.parametrize("name, conf", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_streamed_encoder_equals_offline(name, conf, rng):
    enc = build(name, conf)
    ctc = CTC(odim=VOCAB, encoder_output_size=16).eval()
    T = int(rng.integers(30, 90))
    xs = torch.randn(1, T, D_IN)
    with torch.no_grad():
        ref, lens, _ = enc(xs, torch.tensor([T]), ctc=ctc)
        if isinstance(ref, tuple):  # intermediate CTC outputs
            ref = ref[0]
        ref = ref[0, : int(lens[0])]
        factor = enc.embed.subsampling.factor
        for max_chunk in (1, factor, int(rng.integers(factor, 4 * factor + 1)), T):
            got = stream(enc, xs, rng, max_chunk, ctc)
            assert got.shape == ref.shape
            torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
            hyp_stream, hyp_ref = StreamingCTCGreedy(), StreamingCTCGreedy()
            hyp_stream.step(ctc.log_softmax(got[None])[0])
            hyp_ref.step(ctc.log_softmax(ref[None])[0])
            assert hyp_stream.tokens == hyp_ref.tokens


def test_state_does_not_grow_with_a_limited_left_context(rng):
    enc = build("ssm_conformer", dict(attention_heads=2, attention_left_context=5))
    state = None
    with torch.no_grad():
        for _ in range(30):
            _, state = enc.forward_chunk(torch.randn(1, 8, D_IN), state)
        sizes = [t.numel() for t in _tensors(state)]
        for _ in range(30):
            _, state = enc.forward_chunk(torch.randn(1, 8, D_IN), state)
    assert [t.numel() for t in _tensors(state)] == sizes


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
    with torch.no_grad():
        y, state = enc.forward_chunk(torch.randn(1, 6, D_IN), is_final=True)  # conv2d needs 7
    assert y.shape == (1, 0, 16) and state is None


def test_conditioning_without_the_ctc_module_is_refused():
    enc = build("mh_ssm", dict(num_heads=2, bidirectional=False, **CONDITIONING))
    with pytest.raises(RuntimeError, match="CTC module"), torch.no_grad():
        enc.forward_chunk(torch.randn(1, 20, D_IN))


@pytest.mark.parametrize(
    "name, conf, part",
    [("ssm_conformer", dict(attention_heads=2, causal=False), "causal: false"),
     ("mh_ssm", dict(num_heads=2), "causal: false"),
     ("stateformer", dict(attention_heads=2, ssm_heads=2), "causal: false"),
     ("speech_mamba", dict(attention_heads=2), "causal: false")],
)
def test_non_causal_encoders_refuse_to_stream(name, conf, part):
    cls = encoder_choices.get_class(name)
    enc = cls(D_IN, output_size=16, num_blocks=1, **conf)
    with pytest.raises(StreamingNotSupported, match=part):
        enc.forward_chunk(torch.randn(1, 10, D_IN))


def test_a_part_that_looks_ahead_is_named():
    """An encoder flagged causal whose layer is not (built by hand) names that layer."""
    enc = build("ssm_conformer", dict(attention_heads=2))
    enc.encoders[1].mixers[0].causal = False
    with pytest.raises(StreamingNotSupported, match=r"encoders\.1\.mixers\.0 \(SelfAttention\)"):
        enc.forward_chunk(torch.randn(1, 10, D_IN))
