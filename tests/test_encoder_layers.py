"""Building blocks of the encoders: input-layer arithmetic, attention masks, masked convolution."""
from __future__ import annotations

import pytest
import torch
from espnet.nets.pytorch_backend.transformer.subsampling import check_short_utt

from espnet_ssm.encoders.config import EncoderConfigError, strict_config
from espnet_ssm.layers.attention import attention_mask
from espnet_ssm.layers.depthwise_conv import MaskedDepthwiseConv1d
from espnet_ssm.layers.frontend import CONV2D_CLASSES, InputLayer

CONV_LAYERS = sorted(CONV2D_CLASSES)


def _input_layer(name, idim=20, odim=8):
    torch.manual_seed(0)
    return InputLayer(name, idim, odim, 0.0, torch.nn.Identity()).eval()


@pytest.mark.parametrize("name", CONV_LAYERS)
def test_length_formula_matches_espnet_module(name):
    layer = _input_layer(name)
    for t in range(layer.subsampling.min_frames, 60):
        with torch.no_grad():
            out, _ = layer(torch.randn(1, t, 20))
        expected = int(layer.subsampling.output_lengths(torch.tensor([t]))[0])
        assert out.size(1) == expected, (name, t)


@pytest.mark.parametrize("name", CONV_LAYERS)
def test_min_frames_matches_espnet_check(name):
    layer = _input_layer(name)
    limit = layer.subsampling.min_frames
    assert check_short_utt(layer.embed, limit) == (False, -1)
    assert check_short_utt(layer.embed, limit - 1)[0]
    assert int(layer.subsampling.output_lengths(torch.tensor([limit]))[0]) == 1
    assert int(layer.subsampling.output_lengths(torch.tensor([limit - 1]))[0]) == 0


@pytest.mark.parametrize("name", CONV_LAYERS)
def test_receptive_field_end_is_exact(name):
    """Output j changes when input frame last_input_frame(j) changes, never for later frames."""
    layer = _input_layer(name)
    sub = layer.subsampling
    t = sub.min_frames + 6 * sub.factor
    x = torch.randn(1, t, 20)
    with torch.no_grad():
        ref, _ = layer(x)
        for j in range(ref.size(1)):
            last = sub.last_input_frame(j)
            later = x.clone()
            later[:, last + 1 :] = torch.randn_like(later[:, last + 1 :])
            out, _ = layer(later)
            assert torch.equal(out[:, j], ref[:, j]), (name, j)
            at = x.clone()
            at[:, last] += 1.0
            out, _ = layer(at)
            assert not torch.allclose(out[:, j], ref[:, j]), (name, j)


def test_known_conv2d_receptive_field():
    """The documented conv2d look-ahead: output frame j ends at input frame 4j + 6."""
    sub = _input_layer("conv2d").subsampling
    assert [sub.last_input_frame(j) for j in range(3)] == [6, 10, 14]
    assert sub.factor == 4


def test_output_lengths_independent_of_padding():
    sub = _input_layer("conv2d6").subsampling
    lengths = torch.randint(11, 200, (16,))
    batch = sub.output_lengths(lengths)
    alone = torch.stack([sub.output_lengths(n[None])[0] for n in lengths])
    assert torch.equal(batch, alone)


def test_input_layer_none_needs_matching_size():
    with pytest.raises(ValueError, match="input_size == output_size"):
        InputLayer(None, 20, 8, 0.0, torch.nn.Identity())


def test_input_layer_rejects_too_few_feature_bins():
    with pytest.raises(ValueError, match="feature bins"):
        InputLayer("conv2d8", 10, 8, 0.0, torch.nn.Identity())


def _mask_loop(valid, causal, left):
    b, t = valid.shape
    m = torch.zeros(b, t, t, dtype=torch.bool)
    for n in range(b):
        for i in range(t):
            for j in range(t):
                ok = bool(valid[n, j])
                if valid[n, i]:
                    ok = ok and (not causal or j <= i) and (left < 0 or i - j <= left)
                m[n, i, j] = ok
    return m


@pytest.mark.parametrize("causal,left", [(True, -1), (True, 2), (False, 3), (False, -1)])
def test_attention_mask_matches_definition(causal, left):
    lengths = torch.tensor([7, 3, 5])
    valid = torch.arange(7)[None] < lengths[:, None]
    got = attention_mask(valid, causal, left)
    expected = _mask_loop(valid, causal, left)
    assert torch.equal(got.expand(-1, 7, -1), expected)
    assert got.any(-1).all(), "every query row must see at least one key"


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("k", [1, 2, 4, 5])
def test_masked_depthwise_conv_matches_loop(causal, k):
    torch.manual_seed(k)
    conv = MaskedDepthwiseConv1d(3, k, causal).double()
    lengths = torch.tensor([9, 5])
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    valid = torch.arange(9)[None] < lengths[:, None]
    x_dirty = x.masked_fill(~valid[..., None], 1e3)  # garbage in padding must not matter
    y = conv(x_dirty, valid)
    w, bias = conv.conv.weight[:, 0].detach(), conv.conv.bias.detach()
    left = k - 1 if causal else k // 2
    expected = torch.zeros_like(y)
    for b in range(2):
        for t in range(9):
            for c in range(3):
                acc = float(bias[c])
                for i in range(k):
                    s = t - left + i
                    if 0 <= s < int(lengths[b]):
                        acc += float(w[c, i]) * float(x[b, s, c])
                expected[b, t, c] = acc
    real = valid[..., None].expand_as(y)
    assert torch.allclose(y[real], expected[real], atol=1e-12)


def test_strict_config_names_the_key_and_suggests():
    @strict_config
    class Toy:
        def __init__(self, input_size: int, num_blocks: int = 2, dropout_rate: float = 0.1):
            pass

    Toy(input_size=3, num_blocks=4)
    with pytest.raises(EncoderConfigError) as e:
        Toy(input_size=3, num_blokcs=4)
    msg = str(e.value)
    assert "'num_blokcs'" in msg and "did you mean 'num_blocks'" in msg
    assert "dropout_rate" in msg and "input_size" in msg
