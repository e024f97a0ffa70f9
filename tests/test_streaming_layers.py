"""Each streaming module's ``forward_chunk`` against its own ``forward``: input layers, cached
causal attention, causal convolution, the multi-head SSM, the SSM convolution module, the Mamba
mixer and the blocks built from them.

Offline and streamed outputs are the same operations on the same numbers up to the grouping of
sums (and, for SSMs, recurrence vs convolution), so they agree to float32 rounding; the
tolerance is 1e-5 (absolute, on unit-scale activations) for layers without an SSM, 1e-4 with.
"""
from __future__ import annotations

import re

import pytest
import torch
from espnet.nets.pytorch_backend.transformer.embedding import ScaledPositionalEncoding

from espnet_ssm.encoders.base import EncoderContext
from espnet_ssm.encoders.macaron import MacaronBlock
from espnet_ssm.encoders.speech_mamba import MambaResidual, SpeechMambaLayer
from espnet_ssm.layers.attention import SelfAttention, attention_mask, build_pos_enc
from espnet_ssm.layers.depthwise_conv import MaskedDepthwiseConv1d
from espnet_ssm.layers.frontend import InputLayer
from espnet_ssm.layers.mamba import BidirectionalMamba, MambaMixer
from espnet_ssm.layers.mh_ssm import MultiHeadSSM
from espnet_ssm.layers.ssm_conv_module import SSMConvolutionModule
from espnet_ssm.layers.streaming import StreamingNotSupported, check_streamable
from test_streaming_ctc import rng  # noqa: F401  (fixture)

ATOL = 1e-5


def chunk_sizes(rng, total, max_chunk):
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(rng.integers(0, max_chunk + 1)))
    return sizes


@pytest.mark.parametrize("input_layer", ["conv2d", "conv2d2", "conv2d6", "conv2d8", "linear", None])
@pytest.mark.parametrize("pos", ["none", "abs_pos", "scaled_abs_pos", "rel_pos"])
def test_input_layer_chunks_equal_offline(input_layer, pos, rng):
    d, D = 16, 16 if input_layer is None else 20
    layer = InputLayer(input_layer, D, d, 0.0, build_pos_enc(pos, d, 0.0, max_len=8)).eval()
    for m in layer.modules():
        if isinstance(m, ScaledPositionalEncoding):  # a non-trivial learnt scale
            with torch.no_grad():
                m.alpha.fill_(float(rng.uniform(0.5, 2.0)))
    T = int(rng.integers(40, 120))
    xs = torch.randn(1, T, D)
    with torch.no_grad():
        ref, _ = layer(xs)
        state, outs, start = None, [], 0
        for n in chunk_sizes(rng, T, int(rng.integers(1, 12))):
            y, state = layer.forward_chunk(xs[:, start : start + n], state)
            outs.append(y)
            start += n
    got = torch.cat(outs, dim=1)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    # what is left over can never make another frame
    assert state.buffer.size(1) < layer.subsampling.min_frames + layer.subsampling.factor


@pytest.mark.parametrize("kind", ["selfattn", "rel_selfattn"])
@pytest.mark.parametrize("left_context", [-1, 0, 3, 17])
def test_cached_attention_equals_causal_offline_attention(kind, left_context, rng):
    d, heads, T = 32, 4, int(rng.integers(20, 70))
    attn = SelfAttention(kind, heads, d, 0.0, causal=True, left_context=left_context).eval()
    pos_enc = build_pos_enc("rel_pos", d, 0.0, max_len=4)
    x = torch.randn(1, T, d)
    with torch.no_grad():
        _, pos_emb = pos_enc(x)
        mask = attention_mask(torch.ones(1, T, dtype=torch.bool), True, left_context)
        ref = attn(x, mask, pos_emb if kind == "rel_selfattn" else None)
        cache, outs, start = None, [], 0
        for n in chunk_sizes(rng, T, int(rng.integers(1, 10))):
            if n == 0:
                continue
            y, cache = attn.forward_chunk(x[:, start : start + n], cache)
            outs.append(y)
            start += n
            if left_context > 0:  # the steady shape from the first chunk on
                assert cache.key.size(2) == left_context == cache.filled.numel()
                assert int(cache.filled.sum()) == min(start, left_context)
            elif left_context == 0:
                assert cache.key is None
    torch.testing.assert_close(torch.cat(outs, dim=1), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("input_layer", ["conv2d", "conv2d6", "conv2d8", "linear"])
def test_windowed_projection_of_long_inputs_equals_the_module(input_layer, rng):
    layer = InputLayer(input_layer, 20, 16, 0.0, build_pos_enc("rel_pos", 16, 0.0)).eval()
    xs = torch.randn(1, int(rng.integers(300, 900)), 20)
    with torch.no_grad():
        ref, _ = layer(xs)  # one window
        layer.window_frames = int(rng.integers(8, 100))
        windowed, _ = layer(xs)
    torch.testing.assert_close(windowed, ref, atol=ATOL, rtol=0)


def chunked(module, x, rng, max_chunk):
    """``module.forward_chunk`` over random chunks (empty ones included), concatenated."""
    state, outs, start = None, [], 0
    for n in chunk_sizes(rng, x.size(1), max_chunk):
        y, state = module.forward_chunk(x[:, start : start + n], state)
        outs.append(y)
        start += n
    return torch.cat(outs, dim=1)


def _ctx(T, d, causal_left=-1):
    mask = torch.ones(1, T, dtype=torch.bool)
    _, pos_emb = build_pos_enc("rel_pos", d, 0.0)(torch.zeros(1, T, d))
    return EncoderContext(mask, torch.tensor([T]), attention_mask(mask, True, causal_left), pos_emb)


D = 16
MODULES = {
    "depthwise conv": lambda: MaskedDepthwiseConv1d(D, 5, causal=True),
    "mh_ssm inter_head stack 2": lambda: MultiHeadSSM(D, 4, d_state=4, bidirectional=False,
                                                      stack=2),
    "mh_ssm glu s4d_real": lambda: MultiHeadSSM(D, 2, d_state=3, bidirectional=False,
                                                gating="glu", ssm_init="s4d_real"),
    "mh_ssm none bilinear": lambda: MultiHeadSSM(D, 4, d_state=2, bidirectional=False,
                                                 gating="none", discretization="bilinear"),
    "conv module dir": lambda: SSMConvolutionModule(D, "dir", causal=True),
    "conv module com batch_norm": lambda: SSMConvolutionModule(D, "com", causal=True,
                                                               norm="batch_norm"),
    "conv module rep": lambda: SSMConvolutionModule(D, "rep", causal=True, rep_kernel_size=6),
    "conv module conv": lambda: SSMConvolutionModule(D, "conv", causal=True, kernel_size=7),
    "mamba mixer": lambda: MambaMixer(D, d_state=4),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_module_chunks_equal_its_forward(name, rng):
    module = MODULES[name]().eval()
    with torch.no_grad():
        for m in module.modules():  # non-trivial norm statistics
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
        T = int(rng.integers(30, 80))
        x = torch.randn(1, T, D)
        ref = module(x, torch.ones(1, T, dtype=torch.bool))
        for max_chunk in (1, int(rng.integers(2, 20)), T):
            torch.testing.assert_close(chunked(module, x, rng, max_chunk), ref, atol=1e-4,
                                       rtol=0)


def _macaron():
    mixers = [("sequence", MultiHeadSSM(D, 2, d_state=4, bidirectional=False)),
              ("attention", SelfAttention("rel_selfattn", 2, D, 0.0, causal=True, left_context=5)),
              ("sequence", SSMConvolutionModule(D, "com", causal=True))]
    ff = lambda: torch.nn.Sequential(torch.nn.Linear(D, 24), torch.nn.ReLU(),  # noqa: E731
                                     torch.nn.Linear(24, D))
    return MacaronBlock(D, mixers, ff(), ff(), 0.0), 5


def _speech_mamba_layer():
    return SpeechMambaLayer(
        MambaResidual(torch.nn.RMSNorm(D), MambaMixer(D, d_state=4), 0.0),
        SelfAttention("rel_selfattn", 2, D, 0.0, causal=True, left_context=-1),
        torch.nn.RMSNorm(D),
        MambaResidual(torch.nn.RMSNorm(D), MambaMixer(D, d_state=4), 0.0),
        0.0,
    ), -1


@pytest.mark.parametrize("build", [_macaron, _speech_mamba_layer], ids=["macaron", "speech_mamba"])
def test_block_chunks_equal_its_forward(build, rng):
    block, left = build()
    block.eval()
    T = int(rng.integers(30, 70))
    x = torch.randn(1, T, D)
    with torch.no_grad():
        ref = block(x, _ctx(T, D, left))
        for max_chunk in (1, int(rng.integers(2, 12)), T):
            torch.testing.assert_close(chunked(block, x, rng, max_chunk), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("module, part", [
    (MaskedDepthwiseConv1d(D, 5, causal=False), "non-causal 5-tap convolution"),
    (MultiHeadSSM(D, 2, d_state=2, bidirectional=True), "stages.0 (HeadSSMStage): looks ahead"),
    (SSMConvolutionModule(D, "com", causal=False), "depthwise_conv.conv (MaskedDepthwiseConv1d)"),
    (SSMConvolutionModule(D, "dir", causal=False), "depthwise_conv (S4D): looks ahead"),
    (SelfAttention("selfattn", 2, D, 0.0), "full (non-causal) self-attention"),
    (BidirectionalMamba(D, d_state=2), "time-reversed Mamba scan"),
])
def test_parts_that_look_ahead_are_named(module, part):
    with pytest.raises(StreamingNotSupported, match=re.escape(part)):
        check_streamable(module)
