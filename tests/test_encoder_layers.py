"""Building blocks of the encoders: input-layer arithmetic, attention masks, masked convolution."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch
from espnet.nets.pytorch_backend.transformer.subsampling import check_short_utt

from espnet_ssm.encoders.options import EncoderConfigError
from espnet_ssm.encoders.options import (
    EncoderOptions,
    StateOptions,
    option,
    option_doc,
    options_signature,
    parse_options,
)
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


@dataclass
class _ToyOptions(StateOptions, EncoderOptions):
    """A family's options: two shared groups, one own key, one overridden default."""

    toy_width: int = option(3, "width of the toy.")
    d_state: int = 7


def test_parse_options_names_unknown_keys_and_suggests():
    with pytest.raises(EncoderConfigError) as e:
        parse_options(_ToyOptions, "Toy", {"num_blokcs": 4})
    msg = str(e.value)
    assert "'num_blokcs'" in msg and "did you mean 'num_blocks'" in msg
    assert "toy_width" in msg and "dropout_rate" in msg and "input_size" in msg


def test_parse_options_checks_types_and_every_group():
    with pytest.raises(EncoderConfigError, match=r'invalid encoder_conf value.*"toy_width"'):
        parse_options(_ToyOptions, "Toy", {"toy_width": "3"})
    with pytest.raises(EncoderConfigError, match=r"d_state=0 must be >= 1"):  # StateOptions
        parse_options(_ToyOptions, "Toy", {"d_state": 0})
    with pytest.raises(EncoderConfigError, match=r"num_blocks=0 must be >= 1"):  # EncoderOptions
        parse_options(_ToyOptions, "Toy", {"num_blocks": 0})
    opts = parse_options(_ToyOptions, "Toy", {"toy_width": 5, "interctc_layer_idx": [1]})
    assert (opts.toy_width, opts.d_state, opts.interctc_layer_idx) == (5, 7, [1])
    assert parse_options(_ToyOptions, "Toy", {}).interctc_layer_idx == []  # not shared


def test_options_signature_and_docs_cover_every_key():
    sig = options_signature(_ToyOptions).parameters
    keys = [f.name for f in dataclasses.fields(_ToyOptions)]
    assert list(sig) == ["self", "input_size"] + keys
    defaults = parse_options(_ToyOptions, "Toy", {})
    assert all(sig[k].default == getattr(defaults, k) for k in keys)
    assert all(len(option_doc(_ToyOptions, k)) > 3 for k in keys)
    assert option_doc(_ToyOptions, "toy_width") == "width of the toy."
    # an overridden default keeps the meaning given by the group that introduced the key
    assert option_doc(_ToyOptions, "d_state") == option_doc(StateOptions, "d_state") != ""


def _causal_ssm_loop(u, K, D, n):
    """y_t = sum_{s<=t} K[t-s] u_s + D u_t over the first n frames of one channel."""
    return [sum(K[t - s] * u[s] for s in range(t + 1)) + D * u[t] for t in range(n)]


def _s4d_kernel_loop(ssm, L):
    """K[c][l] = Re(Σ_n C B̄ Ā^l) of a one-directional S4D from its parameters, in Python complex
    arithmetic: A = -exp(log_A_real) + i A_imag, Δ = exp(log_dt); zoh: Ā = exp(ΔA),
    B̄ = (Ā - 1) / A · B; bilinear: Ā = (1 + ΔA/2) / (1 - ΔA/2), B̄ = Δ B / (1 - ΔA/2)."""
    import cmath
    import math

    def as_complex(p):  # complex parameters are stored as (..., 2) real tensors
        return [complex(*v) for v in p.tolist()] if ssm.is_complex else p.tolist()

    K = []
    for c in range(ssm.log_dt.numel()):
        dt = math.exp(float(ssm.log_dt[c]))
        A_re = [-math.exp(v) for v in ssm.log_A_real[c].tolist()]
        A = [complex(a, v) for a, v in zip(A_re, ssm.A_imag[c].tolist())] if ssm.is_complex \
            else A_re
        B, C = as_complex(ssm.B[c]), as_complex(ssm.C[0, c])
        row = [0.0] * L
        for a, b, cc in zip(A, B, C):
            if ssm.discretization == "zoh":
                dA = cmath.exp(dt * a)
                dB = (dA - 1) / a * b
            else:
                dA = (1 + dt * a / 2) / (1 - dt * a / 2)
                dB = dt * b / (1 - dt * a / 2)
            for l in range(L):
                row[l] += (cc * dB * dA**l).real
        K.append(row)
    return K


def _mhssm_loop(layer, x, lengths):
    """MultiHeadSSM from its definition, in float64 Python loops (S4D kernels from the SSM
    parameters by :func:`_s4d_kernel_loop`)."""
    import math

    b_sz, t_max, d = x.shape
    H = layer.num_heads
    dh = d // H
    out = torch.zeros(b_sz, t_max, d, dtype=torch.float64)
    for b in range(b_sz):
        n = int(lengths[b])
        u = [[float(v) for v in x[b, t]] for t in range(n)]
        if layer.in_proj is not None:
            W, bias = layer.in_proj.weight, layer.in_proj.bias
            u = [
                [sum(W[o, i] * u[t][i] for i in range(d)) + bias[o] for o in range(d)]
                for t in range(n)
            ]
        for stage in layer.stages:
            dirs = [stage.forward_ssm] + ([stage.backward_ssm] if stage.backward_ssm else [])
            per_dir = []
            for k, ssm in enumerate(dirs):
                assert ssm.C.shape[0] == 1  # one direction per S4D
                K = _s4d_kernel_loop(ssm, t_max)
                cols = []
                for c in range(d):
                    seq = [u[t][c] for t in range(n)]
                    if k == 1:
                        seq = seq[::-1]
                    y = _causal_ssm_loop(seq, K[c], float(ssm.D[c]), n)
                    cols.append(y[::-1] if k == 1 else y)
                per_dir.append(cols)  # [c][t]
            W, bias = stage.head_proj.weight[:, :, 0], stage.head_proj.bias
            new = [[0.0] * d for _ in range(n)]
            for t in range(n):
                for h in range(H):
                    # head h's input: each direction's channels of head h, side by side
                    z = [
                        per_dir[k][c][t]
                        for k in range(len(dirs))
                        for c in range(h * dh, (h + 1) * dh)
                    ]
                    z = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in z]  # GELU
                    for o in range(h * dh, (h + 1) * dh):
                        new[t][o] = sum(W[o, i] * z[i] for i in range(len(z))) + bias[o]
            u = new
        for t in range(n):
            if layer.gating == "inter_head":
                g = [u[t][c] / (1 + math.exp(-u[t][c + d // 2])) for c in range(d // 2)]
            elif layer.gating == "glu":
                Wg, bg = layer.gate_proj.weight, layer.gate_proj.bias
                gate = [
                    sum(Wg[o, i] * float(x[b, t, i]) for i in range(d)) + bg[o] for o in range(d)
                ]
                g = [u[t][c] / (1 + math.exp(-gate[c])) for c in range(d)]
            else:
                g = u[t]
            Wo, bo = layer.out_proj.weight, layer.out_proj.bias
            for o in range(d):
                out[b, t, o] = sum(Wo[o, i] * g[i] for i in range(len(g))) + bo[o]
    return out


@pytest.mark.parametrize(
    "options",
    [
        dict(gating="inter_head", bidirectional=True),
        dict(gating="glu", bidirectional=False, stack=2, ssm_init="s4d_real"),
        dict(gating="none", bidirectional=True, input_projection=False, ssm_init="s4d_inv",
             discretization="bilinear"),
    ],
)
def test_multi_head_ssm_matches_loop(options):
    from espnet_ssm.layers.mh_ssm import MultiHeadSSM

    torch.manual_seed(3)
    layer = MultiHeadSSM(8, 4, d_state=3, **options).double().eval()
    lengths = torch.tensor([7, 4])
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    valid = torch.arange(7)[None] < lengths[:, None]
    with torch.no_grad():
        got = layer(x, valid)
        expected = _mhssm_loop(layer, x, lengths)
    real = valid[..., None].expand_as(got)
    assert torch.allclose(got[real], expected[real], atol=1e-10, rtol=1e-10)


def test_multi_head_ssm_heads_have_distinct_bands():
    """Head h's channels hold Δ from the h-th band: head 0 the largest (most local)."""
    from espnet_ssm.layers.mh_ssm import MultiHeadSSM

    layer = MultiHeadSSM(16, 4, d_state=2, dt_min=1e-3, dt_max=1e-1)
    log_dt = layer.stages[0].forward_ssm.log_dt.detach().view(4, 4)
    lo, hi = torch.log(torch.tensor(1e-3)), torch.log(torch.tensor(1e-1))
    edges = torch.linspace(float(hi), float(lo), 5)  # band h covers [edges[h+1], edges[h]]
    for h in range(4):
        assert (log_dt[h] <= edges[h] + 1e-6).all() and (log_dt[h] >= edges[h + 1] - 1e-6).all()


@pytest.mark.parametrize("causal", [True, False])
def test_rep_conv_module_has_finite_context(causal):
    """REP: output t depends on inputs t-k+1 .. t (causal) or t-k+1 .. t+k-1 (two-sided) only."""
    from espnet_ssm.layers.ssm_conv_module import SSMConvolutionModule

    torch.manual_seed(0)
    k, t = 5, 12
    module = SSMConvolutionModule(6, mode="rep", causal=causal, rep_kernel_size=k).double().eval()
    x = torch.randn(1, 25, 6, dtype=torch.float64)
    lo, hi = t - k + 1, (t if causal else t + k - 1)
    outside = x.clone()
    outside[:, :lo] += torch.randn_like(outside[:, :lo])
    outside[:, hi + 1 :] += torch.randn_like(outside[:, hi + 1 :])
    inside = x.clone()
    inside[:, lo] += 1.0
    with torch.no_grad():
        ref = module(x)
        assert torch.allclose(module(outside)[:, t], ref[:, t], atol=1e-12)
        assert not torch.allclose(module(inside)[:, t], ref[:, t], atol=1e-6)


def test_batch_norm_conv_module_state_round_trips_through_a_plain_dict():
    """``conv_norm: batch_norm`` keeps no ``num_batches_tracked``; a state dict rebuilt key by
    key (no version metadata, for which PyTorch's BatchNorm loader adds the counter) loads
    strictly and restores the running statistics."""
    from espnet_ssm.layers.ssm_conv_module import SSMConvolutionModule

    src = SSMConvolutionModule(6, mode="conv", kernel_size=3, norm="batch_norm")
    src.norm.running_mean.normal_()
    dst = SSMConvolutionModule(6, mode="conv", kernel_size=3, norm="batch_norm")
    plain = {k: v.clone() for k, v in src.state_dict().items()}
    assert not any(k.endswith("num_batches_tracked") for k in plain)
    dst.load_state_dict(plain, strict=True)
    assert torch.equal(dst.norm.running_mean, src.norm.running_mean)
    with pytest.raises(RuntimeError, match="Unexpected key.*num_batches_tracked"):
        dst.load_state_dict(dict(plain, **{"norm.num_batches_tracked": torch.tensor(3)}))
