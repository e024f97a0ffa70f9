"""S4DStream (discretised once; frame recurrence, tabulated closed form or blocked chunks) against
the offline layer.

Streamed outputs sum the same terms as the FFT convolution in another order; float32 results
agree within 1e-4 (unit-scale inputs, outputs of order 10), float64 within 1e-9.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from espnet_ssm.layers.s4d import S4D
from espnet_ssm.streaming.s4d_stream import S4DStream
from test_streaming_ctc import rng  # noqa: F401  (fixture)


def streamed(stream: S4DStream, x: torch.Tensor, sizes) -> torch.Tensor:
    state = stream.init_state(x.size(0))
    outs, start = [], 0
    for n in sizes:
        y, state = stream(x[:, start : start + n], state)
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
    H, N, T = int(rng.integers(2, 9)), int(rng.integers(1, 9)), int(rng.integers(30, 90))
    layer = S4D(H, N, init=init, kernel_size=kernel_size, discretization=discretization).eval()
    # chunk lengths up to loop_frames: frame loop; up to max_frames: closed form; beyond: blocked
    stream = S4DStream(layer, max_frames=int(rng.integers(1, 12)),
                       loop_frames=int(rng.integers(0, 4)))
    x = torch.randn(int(rng.integers(1, 3)), T, H)
    with torch.no_grad():
        ref = layer(x)
        for max_chunk in (1, int(rng.integers(2, 12)), T):  # T: cut into max_frames pieces
            got = streamed(stream, x, random_sizes(rng, T, max_chunk))
            torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


def test_float64_stream_matches_a_plain_recurrence(rng):
    """x_t = Ā x_{t-1} + B̄ u_t, y_t = Re(C x_t) + D u_t, written as a Python loop."""
    H, N, T = 3, 4, 25
    layer = S4D(H, N, init="s4d_lin").double().eval()
    u = torch.randn(1, T, H, dtype=torch.float64)
    with torch.no_grad():
        A, B, C = layer._ssm()
        dt = layer.log_dt.exp()[:, None]
        dA = torch.exp(dt * A)
        dB = (dA - 1) / A * B  # zero-order hold
        x = torch.zeros(H, N, dtype=torch.complex128)
        ref = []
        for t in range(T):
            x = dA * x + dB * u[0, t][:, None]
            ref.append((C[0] * x).sum(-1).real + layer.D * u[0, t])
        ref = torch.stack(ref)[None]
        got = streamed(S4DStream(layer, max_frames=4), u, random_sizes(rng, T, 7))
    torch.testing.assert_close(got, ref, atol=1e-9, rtol=0)


def test_shared_instance_follows_parameter_changes(rng):
    layer = S4D(4, 3).eval()
    first = S4DStream.of(layer)
    assert S4DStream.of(layer) is first  # one per layer while the parameters stay
    with torch.no_grad():
        layer.C.mul_(float(rng.uniform(1.5, 3.0)))
        x = torch.randn(1, 6, 4)
        second = S4DStream.of(layer)
        assert second is not first
        got, _ = second(x, second.init_state(1))
        torch.testing.assert_close(got, layer(x), atol=1e-4, rtol=0)


def test_bidirectional_layers_are_refused():
    with pytest.raises(ValueError, match="causal"):
        S4DStream(S4D(4, 2, bidirectional=True))


def test_empty_chunk_keeps_the_state():
    layer = S4D(3, 2).eval()
    stream = S4DStream(layer)
    state = torch.randn(1, 3, 2, dtype=torch.complex64)
    y, new = stream(torch.zeros(1, 0, 3), state)
    assert y.shape == (1, 0, 3)
    assert torch.equal(new, state)
    np.testing.assert_equal(new.numpy(), state.numpy())
