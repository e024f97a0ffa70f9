"""Captured chunk steps (``use_captured_chunks``) equal the eager chunk path, for every causal
encoder family and streaming variant, and fall back to it when they must.

The replay runs the operations the eager path ran when it was traced, so the outputs agree to
float32 rounding (1e-5 here; they are usually bit-identical).
"""
from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import NamedTuple, Optional

import pytest
import torch
from espnet2.asr.ctc import CTC

import espnet_ssm  # noqa: F401  (registers the encoders)
from espnet_ssm.encoders.chunk_capture import flatten_state, unflatten_state, use_captured_chunks
from test_streaming_encoder import CASES, D_IN, VOCAB, build

ATOL = 1e-5


def stream_fixed(enc, xs, sizes, ctc=None):
    """Feed xs (1, T, D_IN) in chunks of the given sizes, cycled; the concatenated output."""
    state, outs, start, i, T = None, [], 0, 0, xs.size(1)
    while start < T:
        n = sizes[i % len(sizes)]
        y, state = enc.forward_chunk(xs[:, start:start + n], state, is_final=start + n >= T,
                                     ctc=ctc)
        outs.append(y[0])
        start, i = start + n, i + 1
    return torch.cat(outs)


@pytest.mark.parametrize("name, conf", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_captured_stream_equals_eager_stream(name, conf, rng):
    enc = build(name, conf)
    ctc = CTC(odim=VOCAB, encoder_output_size=16).eval()
    factor = enc.embed.subsampling.factor
    xs = torch.randn(1, int(rng.integers(160, 220)), D_IN)
    # steady chunks of one and of three encoder frames, then a change of size mid-stream
    sizes = [factor, factor, factor, factor, factor, factor, 3 * factor, 3 * factor,
             3 * factor, 3 * factor]
    with torch.inference_mode():
        ref = stream_fixed(enc, xs, sizes, ctc)
        assert use_captured_chunks(enc) == 1
        got = stream_fixed(enc, xs, sizes, ctc)
        again = stream_fixed(enc, xs, sizes, ctc)  # a second stream reuses the traces
    if enc.uses_attention and enc.attention_left_context < 0:
        # an unlimited left context: the attention cache grows with every chunk, no signature
        # repeats, and every chunk runs eagerly
        assert enc.chunk_capture.replays == 0
    else:
        assert enc.chunk_capture.replays > 0, "nothing was replayed"
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(again, ref, atol=ATOL, rtol=0)


def test_a_limited_attention_context_replays_from_the_third_chunk():
    """The attention cache has its steady shape from the first chunk (masked empty slots), so a
    young stream, whose context is still filling, replays too."""
    enc = build("ssm_conformer", dict(attention_heads=2, attention_left_context=40))
    factor = enc.embed.subsampling.factor
    n_chunks = 12  # 12 frames: far fewer than the 40-frame context
    xs = torch.randn(1, enc.embed.subsampling.min_frames + factor * (n_chunks - 1), D_IN)
    sizes = [enc.embed.subsampling.min_frames] + [factor] * (n_chunks - 1)
    with torch.inference_mode():
        ref = stream_fixed(enc, xs, sizes)
        use_captured_chunks(enc)
        got = stream_fixed(enc, xs, sizes)
    # chunk 1 has no state and chunk 2 shows the steady signature once: eager; the last chunk
    # (is_final) has the same shapes and replays
    assert enc.chunk_capture.replays == n_chunks - 2
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


def _mh_ssm():
    return build("mh_ssm", dict(num_heads=4, bidirectional=False, d_state=8))


def test_changed_weights_drop_the_traces(rng):
    enc = _mh_ssm()
    xs = torch.randn(1, 120, D_IN)
    use_captured_chunks(enc)
    with torch.no_grad():
        stream_fixed(enc, xs, [4])
        assert enc.chunk_capture.replays > 0
        for p in enc.parameters():  # an in-place update (an optimiser step, load_state_dict)
            p.add_(0.05 * torch.randn(p.shape, dtype=p.dtype))
        got = stream_fixed(enc, xs, [4])
        use_captured_chunks(enc, False)
        ref = stream_fixed(enc, xs, [4])
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


def test_recording_autograd_runs_eagerly():
    enc = _mh_ssm()
    use_captured_chunks(enc)
    xs = torch.randn(1, 120, D_IN)
    y = stream_fixed(enc, xs, [4])
    assert enc.chunk_capture.replays == 0
    y.sum().backward()  # the graph reaches the weights
    assert enc.encoders[0].mixers[0].out_proj.weight.grad is not None


def test_switching_off_runs_eagerly_and_copies_start_empty():
    enc = _mh_ssm()
    assert use_captured_chunks(enc) == 1
    with torch.no_grad():
        stream_fixed(enc, torch.randn(1, 120, D_IN), [4])
    assert enc.chunk_capture.replays > 0
    for other in (copy.deepcopy(enc), pickle.loads(pickle.dumps(enc))):
        assert other.chunk_capture is not None and other.chunk_capture.replays == 0
        assert not other.chunk_capture._traces
    use_captured_chunks(enc, False)
    assert enc.chunk_capture is None


class _Pair(NamedTuple):
    a: torch.Tensor
    b: Optional[torch.Tensor]


@dataclasses.dataclass
class _Box:
    items: list
    offset: int = 0


def test_state_flattening_round_trip():
    t = [torch.randn(2, 3) for _ in range(4)]
    state = [_Pair(t[0], None), (t[1], 3), _Box([t[2], _Pair(t[3], t[0])], 7), None]
    leaves, spec = flatten_state(state)
    assert [x.data_ptr() for x in leaves] == [x.data_ptr() for x in (t[0], t[1], t[2], t[3],
                                                                       t[0])]
    back = unflatten_state(spec, iter(leaves))
    assert type(back[0]) is _Pair and back[0].b is None and back[1][1] == 3
    assert isinstance(back[2], _Box) and back[2].offset == 7 and back[2].items[1].b is t[0]
    assert back[3] is None
    # shapes and non-tensor values are part of the spec (the signature)
    assert flatten_state([torch.zeros(2, 4)])[1] != flatten_state([torch.zeros(2, 3)])[1]
    assert flatten_state(_Box([], 1))[1] != flatten_state(_Box([], 2))[1]


def test_a_state_of_unknown_type_runs_eagerly():
    enc = _mh_ssm()
    use_captured_chunks(enc)
    calls = []

    def run(x, state, ctc):
        calls.append(state)
        return x, state

    x = torch.randn(1, 2, 16)
    with torch.no_grad():
        for _ in range(3):
            enc.chunk_capture.run(enc, run, x, [object()], None)
    assert len(calls) == 3 and enc.chunk_capture.replays == 0
