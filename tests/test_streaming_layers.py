"""Chunked input layers and cached causal attention against the offline modules.

Offline and streamed outputs are the same operations on the same numbers up to the grouping of
matrix products, so they agree to float32 rounding; the tolerance is 1e-5 (absolute, on
unit-scale activations).
"""
from __future__ import annotations


import numpy as np
import pytest
import torch
from espnet.nets.pytorch_backend.transformer.embedding import ScaledPositionalEncoding

from espnet_ssm.layers.attention import SelfAttention, attention_mask, build_pos_enc
from espnet_ssm.layers.frontend import InputLayer
from espnet_ssm.streaming.attention import AttentionCache, attention_chunk
from espnet_ssm.streaming.subsampling import (
    init_input_state,
    input_layer_chunk,
    project_in_chunks,
    split_input_layer,
)
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
        state = init_input_state(1, D)
        outs, start = [], 0
        for n in chunk_sizes(rng, T, int(rng.integers(1, 12))):
            y, state = input_layer_chunk(layer, xs[:, start : start + n], state, d)
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
    attn = SelfAttention(kind, heads, d, 0.0).eval()
    pos_enc = build_pos_enc("rel_pos", d, 0.0, max_len=4)
    x = torch.randn(1, T, d)
    with torch.no_grad():
        _, pos_emb = pos_enc(x)
        mask = attention_mask(torch.ones(1, T, dtype=torch.bool), True, left_context)
        ref = attn(x, mask, pos_emb if kind == "rel_selfattn" else None)
        cache, outs, start = AttentionCache(), [], 0
        for n in chunk_sizes(rng, T, int(rng.integers(1, 10))):
            if n == 0:
                continue
            y, cache = attention_chunk(attn.attn, x[:, start : start + n], cache, left_context,
                                       pos_enc)
            outs.append(y)
            start += n
            if left_context >= 0:
                assert cache.length <= left_context
    torch.testing.assert_close(torch.cat(outs, dim=1), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("input_layer", ["conv2d", "conv2d6", "conv2d8", "linear"])
def test_windowed_projection_of_long_inputs_equals_the_module(input_layer, rng):
    layer = InputLayer(input_layer, 20, 16, 0.0, build_pos_enc("rel_pos", 16, 0.0)).eval()
    xs = torch.randn(1, int(rng.integers(300, 900)), 20)
    with torch.no_grad():
        ref, _ = layer(xs)
        project_then_encode = split_input_layer(layer)[1](
            project_in_chunks(layer, xs, frames=int(rng.integers(8, 100)))
        )[0]
    torch.testing.assert_close(project_then_encode, ref, atol=ATOL, rtol=0)
