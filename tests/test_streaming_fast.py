"""The compiled streaming path (``use_compiled_steps``) equals the eager reference.

S4D layers switched to compiled steps run chunks of up to ``S4D.LOOP_FRAMES`` frames through one
``torch.compile``d kernel (real arithmetic on planar state) instead of the frame loop; chunks of
other lengths and the state they carry go through the reference paths, so random chunkings mix
both. Float32 outputs agree within 1e-4 with the eager stream and with the offline ``forward``.
The seed of each test is printed (``rng`` fixture) for replay.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from espnet_ssm.layers.s4d import S4D, use_compiled_steps
from espnet_ssm.ops import s4d_planar_steps
from test_streaming_ctc import rng  # noqa: F401  (fixture)
from test_streaming_encoder import build, stream
from test_streaming_s4d import random_sizes, streamed

ATOL = 1e-4


@pytest.mark.parametrize("init", ["s4d_lin", "s4d_real"])
def test_compiled_steps_equal_the_frame_loop(init, rng):
    layer = S4D(24, 6, init=init).eval()
    x = torch.randn(2, 60, 24)
    # mostly short chunks (compiled), some longer ones (tables, blocked) between them
    sizes = random_sizes(rng, 60, 4) if rng.random() < 0.5 else random_sizes(rng, 60, 20)
    with torch.inference_mode():
        ref = layer(x)
        eager = streamed(layer, x, sizes)
        assert use_compiled_steps(layer) == 1
        fast = streamed(layer, x, sizes)
    torch.testing.assert_close(fast, eager, atol=ATOL, rtol=0, msg=lambda m: f"{sizes}: {m}")
    torch.testing.assert_close(fast, ref, atol=ATOL, rtol=0)


def test_planar_steps_are_the_recurrence():
    """The kernel itself (uncompiled) against the complex step loop, in float64."""
    layer = S4D(8, 4, init="s4d_lin").double().eval()
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    with torch.no_grad():
        ref, ref_state = layer.forward_chunk(x)
        dA, dB, C = layer._planar_weights()
        y, state = s4d_planar_steps(x, torch.zeros(1, 2, 8, 4, dtype=torch.float64), dA, dB, C,
                                    layer.D)
    torch.testing.assert_close(y, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.complex(state[:, 0], state[:, 1]), ref_state, atol=1e-12,
                               rtol=0)


CASES = [
    ("mh_ssm", dict(num_heads=4, bidirectional=False, d_state=8)),
    ("ssm_conformer", dict(attention_heads=2, ssm_mode="com", attention_left_context=5)),
]


@pytest.mark.parametrize("name, conf", CASES, ids=[n for n, _ in CASES])
def test_compiled_encoder_stream_equals_eager(name, conf, rng):
    enc = build(name, conf)
    T = int(rng.integers(40, 90))
    xs = torch.randn(1, T, enc.input_size)
    factor = enc.embed.subsampling.factor
    with torch.no_grad():
        ref = enc(xs, torch.tensor([T]))[0][0]
        seed = int(rng.integers(2**31))
        eager = stream(enc, xs, np.random.default_rng(seed), 4 * factor)
        assert use_compiled_steps(enc) > 0
        fast = stream(enc, xs, np.random.default_rng(seed), 4 * factor)
        use_compiled_steps(enc, False)
    torch.testing.assert_close(fast, eager, atol=ATOL, rtol=0)
    torch.testing.assert_close(fast, ref[: fast.size(0)], atol=ATOL, rtol=0)


def test_training_and_gradients_keep_the_reference_path():
    layer = S4D(8, 4)
    use_compiled_steps(layer)
    x = torch.randn(1, 3, 8, requires_grad=True)
    y, _ = layer.forward_chunk(x)
    y.sum().backward()  # the frame loop / blocked path records; nothing compiled
    assert x.grad is not None and layer.log_dt.grad is not None
