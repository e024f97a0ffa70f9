"""Chunk-by-chunk transducer decoding: the searches of
:mod:`espnet_ssm.streaming.transducer_search` fed in chunks == fed at once == ESPnet's offline
``BeamSearchTransducer`` (greedy; ``search_type: tsd``); recognisers, command line and long-form
recognition with transducer models.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from espnet2.asr.transducer.beam_search_transducer import BeamSearchTransducer

from espnet_ssm.bin import asr_inference_streaming
from espnet_ssm.streaming import LongFormSpeech2Text, StreamingSpeech2Text
from espnet_ssm.streaming.transducer_search import (
    StreamingTransducerBeam,
    StreamingTransducerGreedy,
)
from test_streaming_cli import io_args, read_table, write_scp
from test_streaming_ctc import rng  # noqa: F401  (fixture)
from test_streaming_speech2text import make_model_files, waveform

ENCODER = dict(output_size=16, attention_heads=2, linear_units=24, num_blocks=2, d_state=4,
               causal=True, attention_left_context=8)
TRANSDUCER = dict(
    model="espnet_ssm_transducer", decoder="transducer",
    decoder_conf=dict(rnn_type="lstm", num_layers=1, hidden_size=16),
    joint_net_conf=dict(joint_space_size=16), model_conf=dict(ctc_weight=0.0),
)


@pytest.fixture(scope="module")
def transducer_files(tmp_path_factory):
    config, model_file = make_model_files(tmp_path_factory.mktemp("rnnt"), "ssm_conformer",
                                          ENCODER, overrides=TRANSDUCER)
    # a joint network that emits labels often, so that hypotheses are long and differ
    model = torch.load(model_file)
    gen = torch.Generator().manual_seed(0)
    for k in model:
        if k.startswith("joint_network.lin_out"):
            model[k] = torch.randn(model[k].shape, generator=gen) * 3.0
    torch.save(model, model_file)
    return config, model_file


def encoder_frames(s2t, speech):
    with torch.no_grad():
        enc, lens = s2t.asr_model.encode(speech[None], torch.tensor([speech.numel()]))
    return enc[0, : int(lens[0])]


def in_chunks(search, enc, rng):
    search.reset()
    start = 0
    while start < enc.size(0):
        n = int(rng.integers(0, 5))
        search.step(enc[start : start + n])
        start += n
    return search


def espnet_search(model, **kwargs):
    return BeamSearchTransducer(model.decoder, model.joint_network, **kwargs)


@pytest.mark.parametrize("max_sym_exp", [2, 3])
def test_greedy_in_chunks_equals_at_once_and_espnet(transducer_files, rng, max_sym_exp):
    s2t = StreamingSpeech2Text(*transducer_files, beam_size=1)
    model = s2t.asr_model
    enc = encoder_frames(s2t, waveform(rng, rng.uniform(1.5, 2.5)))
    with torch.no_grad():
        whole = StreamingTransducerGreedy(model.decoder, model.joint_network, model.blank_id,
                                          max_sym_exp)
        whole.step(enc)
        chunked = in_chunks(StreamingTransducerGreedy(model.decoder, model.joint_network,
                                                      model.blank_id, max_sym_exp), enc, rng)
        assert len(whole.hyp.tokens) >= 3  # the comparisons below are not between empty results
        assert chunked.hyp.tokens == whole.hyp.tokens
        assert chunked.hyp.score == pytest.approx(whole.hyp.score, abs=1e-4)
        assert [(s.token, s.start) for s in chunked.spans] == [
            (s.token, s.start) for s in whole.hyp.prefix.spans()]
        if max_sym_exp == 2:  # ESPnet's greedy search emits at most one label per frame
            ref = espnet_search(model, beam_size=1)(enc)[0]
            assert whole.hyp.tokens == ref.yseq[1:]
        else:
            assert max(np.bincount([s.start for s in whole.spans])) <= max_sym_exp - 1


@pytest.mark.parametrize("beam, max_sym_exp", [(2, 2), (4, 2), (3, 3)])
def test_time_synchronous_beam_in_chunks_equals_at_once_and_espnet_tsd(transducer_files, rng,
                                                                       beam, max_sym_exp):
    s2t = StreamingSpeech2Text(*transducer_files, beam_size=1)
    model = s2t.asr_model
    enc = encoder_frames(s2t, waveform(rng, rng.uniform(1.0, 2.0)))
    args = (model.decoder, model.joint_network, model.blank_id, beam, max_sym_exp)
    with torch.no_grad():
        whole = StreamingTransducerBeam(*args)
        whole.step(enc)
        chunked = in_chunks(StreamingTransducerBeam(*args), enc, rng)
        mine = whole.nbest(beam)
        assert len(mine[0].tokens) >= 3
        assert [h.tokens for h in chunked.nbest(beam)] == [h.tokens for h in mine]
        np.testing.assert_allclose([h.score for h in chunked.nbest(beam)],
                                   [h.score for h in mine], atol=1e-4)
        ref = espnet_search(model, beam_size=beam, search_type="tsd", max_sym_exp=max_sym_exp,
                            score_norm=False, nbest=beam)(enc)
    assert [h.tokens for h in mine] == [h.yseq[1:] for h in ref]
    np.testing.assert_allclose([h.score for h in mine], [h.score for h in ref], atol=1e-3)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_streaming_recogniser_equals_offline_search(transducer_files, rng, beam_size):
    s2t = StreamingSpeech2Text(*transducer_files, beam_size=beam_size, nbest=beam_size)
    speech = waveform(rng, rng.uniform(1.0, 2.0))
    enc = encoder_frames(s2t, speech)
    s2t.search.reset()
    s2t.consume(enc)
    ref = s2t.search.results(s2t.text, s2t.frame_seconds)
    s2t.reset()
    for chunk in (int(rng.integers(1, 200)), int(rng.integers(800, 3000))):
        got = s2t.recognize(speech, chunk)
        assert [r.token_ids for r in got] == [r.token_ids for r in ref]
        assert got[0].token_ids and got[0].words  # word times from the emitting frames
        assert got[0].words[-1].end <= speech.numel() / s2t.sample_rate + s2t.frame_seconds


def test_cli_and_long_form_decode_transducer_models(transducer_files, tmp_path, rng):
    config, model_file = transducer_files
    scp, audio = write_scp(tmp_path, rng, rates=(8000, 8000))
    out = tmp_path / "decode"
    asr_inference_streaming.main([
        *io_args(transducer_files, scp, out),
        "--sim_chunk_length", "700", "--beam_size", "3", "--transducer_conf", "max_sym_exp=3",
    ])
    ids = read_table(out / "1best_recog" / "token_int")
    s2t = StreamingSpeech2Text(config, model_file, beam_size=3,
                               transducer_conf=dict(max_sym_exp=3))
    for mode in ("stream", "offline"):
        longform = LongFormSpeech2Text(config, model_file, mode=mode, beam_size=3,
                                       transducer_conf=dict(max_sym_exp=3), chunk_seconds=0.3)
        for key, (x, _) in audio.items():
            want = s2t.recognize(torch.from_numpy(x))[0]
            assert ids[key] == " ".join(map(str, want.token_ids))
            assert longform(torch.from_numpy(x)).token_ids == want.token_ids


def test_options_that_do_not_apply_are_refused(transducer_files):
    with pytest.raises(ValueError, match="search_type: tsd"):
        StreamingSpeech2Text(*transducer_files, beam_size=3,
                             transducer_conf=dict(search_type="default"))
    with pytest.raises(ValueError, match="penalty"):
        StreamingSpeech2Text(*transducer_files, beam_size=3, length_bonus=0.5)
    with pytest.raises(ValueError, match="ctc_weight"):
        StreamingSpeech2Text(*transducer_files, ctc_weight=0.3)
