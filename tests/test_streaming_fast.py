"""The compiled S4D streaming operator (``torch.ops.espnet_ssm.s4d_planar_steps``) equals the
recurrence, and S4D layers that use it stream as the reference paths do.

On the CPU, S4D chunks of up to ``S4D.TABLE_FRAMES`` frames go through the operator (state on
real and imaginary planes); without it (the library unbuilt) they take the frame loop and the
closed-form tables. Random chunkings mix both with the blocked path of longer chunks. The
operator is checked against the float64 recurrence written from the maths (1e-12) and the eager
reference in float32 (1e-5); streams against the eager stream and the offline ``forward``
(1e-4, float32). The seed of each test is printed (``rng`` fixture) for replay.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import espnet_ssm.layers.s4d as s4d_module
from espnet_ssm.layers.s4d import S4D
from espnet_ssm.ops import s4d_planar_steps
from espnet_ssm.ops.cpu_kernels import s4d_steps_op
from test_streaming_ctc import rng  # noqa: F401  (fixture)
from test_streaming_encoder import build, stream
from test_streaming_s4d import random_sizes, streamed

ATOL = 1e-4


@pytest.fixture
def op():
    """The compiled operator; ``make setup`` builds it, so only a machine without a C++
    compiler may skip."""
    found = s4d_steps_op()
    if found is None:
        pytest.skip("no C++ compiler: the compiled CPU kernels cannot be built here")
    return found


@pytest.fixture
def without_op(monkeypatch):
    """S4D layers as on a machine without the compiled library."""
    monkeypatch.setattr(s4d_module, "s4d_steps_op", lambda: None)


def recurrence(u, state, dA, dB, C, D):
    """x_t = Ā x_{t-1} + B̄ u_t, y_t = Re(Σ_n C x_t) + D u_t: plain loops in complex128."""
    B, l, H = u.shape
    x = state.clone()
    y = torch.zeros(B, l, H, dtype=torch.float64)
    for b in range(B):
        for t in range(l):
            for h in range(H):
                x[b, h] = dA[h] * x[b, h] + dB[h] * u[b, t, h]
                y[b, t, h] = (C[h] * x[b, h]).sum().real + (D[h] * u[b, t, h] if D is not None else 0)
    return y, x


@pytest.mark.parametrize("complex_modes", [True, False])
@pytest.mark.parametrize("with_d", [True, False])
def test_operator_is_the_recurrence(op, complex_modes, with_d, rng):
    H, N, B, l = int(rng.integers(1, 9)), int(rng.integers(1, 20)), int(rng.integers(1, 3)), \
        int(rng.integers(1, 7))
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))

    def randc(*shape):
        z = torch.randn(*shape, 2, generator=g, dtype=torch.float64)
        return torch.view_as_complex(z) if complex_modes else z[..., 0].to(torch.complex128)

    z = randc(H, N)
    dA = 0.99 * z / (1 + z.abs())  # |Ā| < 1 (stable)
    dB, C, state = randc(H, N), randc(H, N), randc(B, H, N)
    u = torch.randn(B, l, H, generator=g, dtype=torch.float64)
    D = torch.randn(H, generator=g, dtype=torch.float64) if with_d else None
    want_y, want_x = recurrence(u, state, dA, dB, C, D)
    if complex_modes:
        planes = [torch.stack([t.real, t.imag]) for t in (dA, dB, C)]
        y, x = op(u, torch.stack([state.real, state.imag], dim=1), *planes, D)
        x = torch.complex(x[:, 0], x[:, 1])
    else:
        y, x = op(u, state.real, dA.real, dB.real, C.real, D)
    torch.testing.assert_close(y, want_y, atol=1e-12, rtol=0)
    torch.testing.assert_close(x.to(torch.complex128), want_x, atol=1e-12, rtol=0)
    # float32 against the eager real-arithmetic reference of the same maths
    args32 = [t.float() if t is not None else None for t in (u, *(
        [torch.stack([state.real, state.imag], 1), *planes] if complex_modes
        else [state.real, dA.real, dB.real, C.real]), D)]
    got, ref = op(*args32), s4d_planar_steps(*args32)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_operator_names_bad_shapes(op):
    planes = torch.zeros(2, 4, 3)
    with pytest.raises(RuntimeError, match="state must be"):
        op(torch.zeros(1, 2, 4), torch.zeros(1, 4, 3), planes, planes, planes, None)
    with pytest.raises(RuntimeError, match="channels"):
        op(torch.zeros(1, 2, 5), torch.zeros(1, 2, 4, 3), planes, planes, planes, None)


@pytest.mark.parametrize("init", ["s4d_lin", "s4d_real"])
def test_layer_with_the_operator_streams_as_the_reference_paths(op, init, rng, monkeypatch):
    layer = S4D(24, 6, init=init).eval()
    x = torch.randn(2, 60, 24)
    # short chunks (the operator), then longer ones (the operator up to 16 frames, blocked
    # beyond), then short ones again: the state passes between the paths
    sizes = []
    for end, longest in ((20, 4), (40, 40), (60, 4)):
        if sum(sizes) < end:
            sizes += random_sizes(rng, end - sum(sizes), longest)
    with torch.inference_mode():
        ref = layer(x)
        fast = streamed(layer, x, sizes)
        monkeypatch.setattr(s4d_module, "s4d_steps_op", lambda: None)
        eager = streamed(layer, x, sizes)
    torch.testing.assert_close(fast, eager, atol=ATOL, rtol=0, msg=lambda m: f"{sizes}: {m}")
    torch.testing.assert_close(fast, ref, atol=ATOL, rtol=0)


CASES = [
    ("mh_ssm", dict(num_heads=4, bidirectional=False, d_state=8)),
    ("ssm_conformer", dict(attention_heads=2, ssm_mode="com", attention_left_context=5)),
]


@pytest.mark.parametrize("name, conf", CASES, ids=[n for n, _ in CASES])
def test_encoder_stream_without_the_operator_equals_offline(name, conf, rng, without_op):
    """The reference paths (frame loop, tables) still stream whole encoders exactly."""
    enc = build(name, conf)
    T = int(rng.integers(40, 90))
    xs = torch.randn(1, T, enc.input_size)
    factor = enc.embed.subsampling.factor
    with torch.no_grad():
        ref = enc(xs, torch.tensor([T]))[0][0]
        got = stream(enc, xs, np.random.default_rng(int(rng.integers(2**31))), 4 * factor)
    torch.testing.assert_close(got, ref[: got.size(0)], atol=ATOL, rtol=0)


def test_training_and_gradients_keep_the_reference_path(op):
    layer = S4D(8, 4)
    x = torch.randn(1, 3, 8, requires_grad=True)
    y, state = layer.forward_chunk(x)
    assert state.dim() == 3  # not the operator's planar state
    y.sum().backward()
    assert x.grad is not None and layer.log_dt.grad is not None
