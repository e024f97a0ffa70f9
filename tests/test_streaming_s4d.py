"""S4D.forward_chunk (frame recurrence, tabulated closed form or blocked chunks, REP's tail)
against the offline layer and against a plain recurrence.

Streamed outputs sum the same terms as the FFT convolution in another order; float32 results
agree within 1e-4 (unit-scale inputs, outputs of order 10), float64 within 1e-9.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from espnet_ssm.layers.s4d import S4D
from espnet_ssm.layers.streaming import StreamingNotSupported
from test_streaming_ctc import rng  # noqa: F401  (fixture)


def streamed(layer: S4D, x: torch.Tensor, sizes) -> torch.Tensor:
    state, outs, start = None, [], 0
    for n in sizes:
        y, state = layer.forward_chunk(x[:, start : start + n], state)
        assert y.shape == (x.size(0), min(n, x.size(1) - start), x.size(2))
        outs.append(y)
        start += n
    return torch.cat(outs, dim=1)


def random_sizes(rng, total: int, max_chunk: int):
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(rng.integers(0, max_chunk + 1)))
    return sizes


@pytest.mark.parametrize("init", ["s4d_lin", "s4d_real", "s4d_inv"])
@pytest.mark.parametrize("kernel_size", [None, 5])
@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_chunks_equal_the_offline_layer(init, kernel_size, discretization, rng):
    H, N, T = int(rng.integers(2, 9)), int(rng.integers(1, 9)), int(rng.integers(60, 120))
    layer = S4D(H, N, init=init, kernel_size=kernel_size, discretization=discretization).eval()
    x = torch.randn(int(rng.integers(1, 3)), T, H)
    with torch.no_grad():
        ref = layer(x)
        # up to LOOP_FRAMES: frame loop; up to TABLE_FRAMES: closed form; beyond: blocked
        for max_chunk in (1, S4D.LOOP_FRAMES + 1, S4D.TABLE_FRAMES, T):
            got = streamed(layer, x, random_sizes(rng, T, max_chunk))
            torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("init", ["s4d_lin", "s4d_real"])
def test_float64_stream_matches_a_plain_recurrence(init, rng):
    """x_t = Ā x_{t-1} + B̄ u_t, y_t = Re(C x_t) + D u_t, written as a Python loop (ZOH)."""
    H, N, T = 3, 4, 60
    layer = S4D(H, N, init=init).double().eval()
    u = torch.randn(1, T, H, dtype=torch.float64)
    with torch.no_grad():
        A = -torch.exp(layer.log_A_real)
        B, C = layer.B, layer.C[0]
        if layer.is_complex:
            A = torch.complex(A, layer.A_imag)
            B, C = torch.view_as_complex(B), torch.view_as_complex(C)
        dt = layer.log_dt.exp()[:, None]
        dA = torch.exp(dt * A)
        dB = (dA - 1) / A * B  # zero-order hold
        x = torch.zeros(H, N, dtype=dA.dtype)
        ref = []
        for t in range(T):
            x = dA * x + dB * u[0, t][:, None]
            y = (C * x).sum(-1)
            ref.append((y.real if y.is_complex() else y) + layer.D * u[0, t])
        ref = torch.stack(ref)[None]
        got = streamed(layer, u, random_sizes(rng, T, 2 * S4D.TABLE_FRAMES))
    torch.testing.assert_close(got, ref, atol=1e-9, rtol=0)


@pytest.mark.parametrize("kernel_size", [None, 4])
def test_cached_discretisation_follows_parameter_changes(kernel_size, rng):
    layer = S4D(4, 3, kernel_size=kernel_size).eval()
    x = torch.randn(1, 6, 4)
    with torch.no_grad():
        layer.forward_chunk(x)  # fills the cache
        layer.C.mul_(float(rng.uniform(1.5, 3.0)))
        layer.log_dt.add_(float(rng.uniform(0.2, 0.5)))
        got, _ = layer.forward_chunk(x)
        torch.testing.assert_close(got, layer(x), atol=1e-4, rtol=0)


def test_chunks_carry_gradients():
    """Outside inference the chunk path stays differentiable (no cached, detached tables)."""
    layer = S4D(3, 2, init="s4d_real")
    y, _ = layer.forward_chunk(torch.randn(1, 5, 3))
    y.sum().backward()
    assert layer.log_dt.grad is not None and layer.log_dt.grad.abs().sum() > 0


def test_bidirectional_layers_are_refused():
    with pytest.raises(StreamingNotSupported, match="bidirectional"):
        S4D(4, 2, bidirectional=True).forward_chunk(torch.zeros(1, 3, 4))


def test_empty_chunk_keeps_the_state():
    layer = S4D(3, 2).eval()
    state = torch.randn(1, 3, 2, dtype=torch.complex64)
    y, new = layer.forward_chunk(torch.zeros(1, 0, 3), state)
    assert y.shape == (1, 0, 3)
    np.testing.assert_equal(new.numpy(), state.numpy())
