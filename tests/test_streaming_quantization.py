"""Dynamic quantization (ESPnet's ``--quantize_asr_model``) of this package's models.

Quantized outputs are not equal to the float model's (int8 weights, activations rounded per
call), so the checks are: the pointwise-convolution rewrite is exact in float64; the quantized
copy holds int8 layers where it should and float ones where it must; its outputs, streamed in
random chunks or offline, stay within a relative error of 5e-2 of the float model's (int8
rounding gives about 1e-2; a wrong weight or a skipped layer gives order 1); bad options are
named.
"""
from __future__ import annotations


import pytest
import torch
from espnet2.tasks.asr import encoder_choices
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

import espnet_ssm  # noqa: F401  (registers the encoders)
from espnet_ssm.bin import asr_inference, asr_inference_longform, asr_inference_streaming
from espnet_ssm.layers.conv_as_linear import PatchLinear2d, PointwiseLinear, is_pointwise
from espnet_ssm.streaming import LongFormSpeech2Text, StreamingSpeech2Text
from espnet_ssm.streaming import quantization
from espnet_ssm.streaming.quantization import quantize_asr_model
from espnet_ssm.streaming.recognizer import prepare_model
from espnet_ssm.streaming.rescoring import attention_log_likelihoods
from test_streaming_cli import read_table, write_scp
from test_streaming_ctc import rng  # noqa: F401  (fixture)
from test_streaming_encoder import CASES, D_IN, build, stream
from test_streaming_speech2text import CAUSAL_MH_SSM, CAUSAL_SSM_CONFORMER, make_model_files

REL_TOL = 5e-2


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_pointwise_linear_equals_the_convolution(groups, rng):
    conv = torch.nn.Conv1d(8, 12, 1, groups=groups).double()
    x = torch.randn(3, 8, int(rng.integers(1, 20)), dtype=torch.float64)
    torch.testing.assert_close(PointwiseLinear(conv)(x), conv(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("stride, padding, dilation", [(2, 0, 1), (1, 1, 1), ((3, 2), (0, 1), 2)])
def test_patch_linear_equals_the_2d_convolution(stride, padding, dilation, rng):
    conv = torch.nn.Conv2d(3, 5, (3, 2), stride, padding, dilation).double()
    x = torch.randn(2, 3, int(rng.integers(7, 15)), int(rng.integers(7, 15)), dtype=torch.float64)
    torch.testing.assert_close(PatchLinear2d(conv)(x), conv(x), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        PatchLinear2d(torch.nn.Conv2d(3, 5, 3))(torch.zeros(1, 3, 2, 9))


def test_quantized_copy_has_int8_layers_and_leaves_the_original_alone():
    name, conf = CASES[0]  # ssm_conformer: attention, feed-forward, SSM conv module
    enc = build(name, conf)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    q = quantize_asr_model(enc)
    assert all(torch.equal(v, before[k]) for k, v in enc.state_dict().items())
    assert any(is_pointwise(m) for m in enc.modules())  # the original keeps its convolutions
    assert not any(type(m) is torch.nn.Linear for m in q.modules())
    assert not any(is_pointwise(m) for m in q.modules())
    n_pointwise = sum(isinstance(m, PointwiseLinear) for m in q.modules())
    assert n_pointwise == 2 * conf.get("num_blocks", 2)  # pointwise_conv1/2 of each block
    assert sum(isinstance(m, DynamicQuantizedLinear) for m in q.modules()) > n_pointwise


@pytest.mark.parametrize("case", [0, 2, 6, 7, 9], ids=lambda i: f"{CASES[i][0]}-{i}")
def test_quantized_stream_stays_close_to_the_float_model(case, rng):
    name, conf = CASES[case]
    enc = build(name, conf)
    q = quantize_asr_model(enc)
    T = int(rng.integers(40, 90))
    xs = torch.randn(1, T, D_IN)
    with torch.no_grad():
        ref, lens, _ = enc(xs, torch.tensor([T]))
        ref = ref[0, : int(lens[0])]
        offline_q, _, _ = q(xs, torch.tensor([T]))
        assert rel_err(offline_q[0, : int(lens[0])], ref) < REL_TOL
        for max_chunk in (1, int(rng.integers(2, 12))):
            got = stream(q, xs, rng, max_chunk)
            assert got.shape == ref.shape
            assert rel_err(got, ref) < REL_TOL


def test_quantized_subsampling_convolutions_stream_close_to_the_float_model(rng):
    name, conf = CASES[6]  # mh_ssm with conv2d subsampling
    enc = build(name, conf)
    q = quantize_asr_model(enc, modules=["Linear", "Conv2d"])
    convs = [m for m in q.embed.modules() if isinstance(m, (torch.nn.Conv2d, PatchLinear2d))]
    # the first stage (one input channel) stays a float Conv2d, the second is int8 patches
    assert type(convs[0]) is torch.nn.Conv2d and isinstance(convs[1], PatchLinear2d)
    assert isinstance(convs[1].linear, DynamicQuantizedLinear)
    T = int(rng.integers(40, 90))
    xs = torch.randn(1, T, D_IN)
    with torch.no_grad():
        ref, lens, _ = enc(xs, torch.tensor([T]))
        got = stream(q, xs, rng, int(rng.integers(1, 12)))
    assert got.shape == ref[0, : int(lens[0])].shape
    assert rel_err(got, ref[0, : int(lens[0])]) < REL_TOL


def test_float16_weights_stream_close_to_the_float_model(rng):
    name, conf = CASES[0]
    enc = build(name, conf)
    q = quantize_asr_model(enc, dtype="float16")
    assert any(type(m) is DynamicQuantizedLinear for m in q.modules())
    xs = torch.randn(1, 60, D_IN)
    with torch.no_grad():
        ref, lens, _ = enc(xs, torch.tensor([60]))
        got = stream(q, xs, rng, int(rng.integers(1, 12)))
    assert rel_err(got, ref[0, : int(lens[0])]) < 1e-2  # float16 weights: about 1e-3


def test_speech_mamba_keeps_dt_proj_in_float(rng):
    cls = encoder_choices.get_class("speech_mamba")
    enc = cls(D_IN, output_size=16, num_blocks=2, attention_heads=2, d_state=4).eval()
    q = quantize_asr_model(enc)
    dt = [m.dt_proj for m in q.modules() if hasattr(m, "dt_proj")]
    assert dt and all(type(m) is torch.nn.Linear for m in dt)
    xs = torch.randn(2, 50, D_IN)
    lens = torch.tensor([50, 37])
    with torch.no_grad():
        ref, ref_lens, _ = enc(xs, lens)
        got, got_lens, _ = q(xs, lens)
    assert torch.equal(ref_lens, got_lens)
    for b, n in enumerate(ref_lens.tolist()):
        assert rel_err(got[b, :n], ref[b, :n]) < REL_TOL


@pytest.mark.parametrize("kwargs, match", [
    (dict(modules=["Conv3d"]), "quantize_modules"),
    (dict(modules=[]), "quantize_modules"),
    (dict(dtype="int4"), "quantize_dtype"),
])
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        quantize_asr_model(torch.nn.Linear(2, 2), **kwargs)


def test_quantization_is_refused_off_the_cpu():
    with pytest.raises(ValueError, match="quantize_asr_model.*CPU"):
        prepare_model(None, None, torch.nn.Linear(2, 2), None, None, "cuda",
                      quantize_asr_model=True)


def test_streaming_cli_decodes_with_the_quantized_model(tmp_path, rng):
    config, model_file = make_model_files(tmp_path, "mh_ssm", CAUSAL_MH_SSM)
    scp, audio = write_scp(tmp_path, rng, rates=(8000, 8000))
    chunk = int(rng.integers(100, 3000))
    out = tmp_path / "decode"
    asr_inference_streaming.main([
        "--asr_train_config", str(config), "--asr_model_file", str(model_file),
        "--data_path_and_name_and_type", f"{scp},speech,sound", "--output_dir", str(out),
        "--sim_chunk_length", str(chunk), "--beam_size", "1", "--quantize_asr_model", "true",
    ])
    s2t = StreamingSpeech2Text(config, model_file, beam_size=1, quantize_asr_model=True)
    assert any(isinstance(m, DynamicQuantizedLinear) for m in s2t.asr_model.modules())
    ids = read_table(out / "1best_recog" / "token_int")
    for key, (x, _) in audio.items():
        want = s2t.recognize(torch.from_numpy(x), chunk)[0]
        assert ids[key] == " ".join(map(str, want.token_ids))


def test_windowed_offline_encoder_of_the_quantized_model_stays_close(rng):
    """Long-form offline mode: the input layer in windows, the encoder in one pass."""
    name, conf = CASES[6]
    enc = build(name, conf)
    q = quantize_asr_model(enc, modules=["Linear", "Conv2d"])
    T = int(rng.integers(60, 120))
    xs = torch.randn(1, T, D_IN)
    with torch.no_grad():
        ref, lens, _ = enc(xs, torch.tensor([T]))
        q.embed.window_frames = int(rng.integers(8, 40))  # several windows
        got, got_lens, _ = q(xs, torch.tensor([T]))
    assert torch.equal(lens, got_lens)
    assert rel_err(got[0, : int(lens[0])], ref[0, : int(lens[0])]) < REL_TOL


def test_long_form_cli_decodes_offline_with_the_quantized_model(tmp_path, rng):
    config, model_file = make_model_files(tmp_path, "mh_ssm", CAUSAL_MH_SSM)
    scp, audio = write_scp(tmp_path, rng, rates=(8000, 8000))
    out = tmp_path / "decode"
    asr_inference_longform.main([
        "--asr_train_config", str(config), "--asr_model_file", str(model_file),
        "--data_path_and_name_and_type", f"{scp},speech,sound", "--output_dir", str(out),
        "--mode", "offline", "--quantize_asr_model", "true",
        "--quantize_modules", "Linear", "Conv2d",
    ])
    s2t = LongFormSpeech2Text(config, model_file, mode="offline", quantize_asr_model=True,
                              quantize_modules=["Linear", "Conv2d"])
    assert any(isinstance(m, PatchLinear2d) for m in s2t.asr_model.modules())
    ids = read_table(out / "1best_recog" / "token_int")
    for key, (x, _) in audio.items():
        assert ids[key] == " ".join(map(str, s2t(torch.from_numpy(x)).token_ids))


def test_quantized_model_rescores_with_its_quantized_decoder(tmp_path, rng, monkeypatch):
    """Attention rescoring at the end of a stream runs on the quantized copy's decoder: each
    final score is 0.3 log p_ctc + 0.7 log p_att, with log p_att summed token by token by that
    decoder over the streamed encoder output."""
    config, model_file = make_model_files(tmp_path, "ssm_conformer", CAUSAL_SSM_CONFORMER,
                                          decoder=True)
    s2t = StreamingSpeech2Text(config, model_file, beam_size=3, nbest=3, ctc_weight=0.3,
                               quantize_asr_model=True)
    decoder = s2t.asr_model.decoder
    assert any(isinstance(m, DynamicQuantizedLinear) for m in decoder.modules())
    chunks, forward_chunk = [], s2t.asr_model.encoder.forward_chunk

    def recording(*args, **kwargs):
        enc, state = forward_chunk(*args, **kwargs)
        chunks.append(enc)
        return enc, state

    monkeypatch.setattr(s2t.asr_model.encoder, "forward_chunk", recording)
    speech = torch.from_numpy(rng.uniform(-0.5, 0.5, 12000).astype("float32"))
    chunk = int(rng.integers(500, 3000))
    results = s2t.recognize(speech, chunk)
    ctc_only = StreamingSpeech2Text(config, model_file, beam_size=3, nbest=3,
                                    quantize_asr_model=True)
    ctc_scores = {tuple(r.token_ids): r.score for r in ctc_only.recognize(speech, chunk)}
    enc = torch.cat(chunks, dim=1)
    model = s2t.asr_model
    assert len(results) >= 1
    with torch.no_grad():
        # the n-best goes through the decoder in one batch; a quantized layer rounds its input
        # per call, so the reference scores the same batch; token by token within REL_TOL
        att = dict(zip(ctc_scores, attention_log_likelihoods(
            decoder, enc, [list(y) for y in ctc_scores], model.sos, model.eos)))
        for r in results:
            y = tuple(r.token_ids)
            assert r.score == pytest.approx(0.3 * ctc_scores[y] + 0.7 * att[y], abs=1e-6)
            ys, state, stepwise = [model.sos], None, 0.0
            for tok in r.token_ids + [model.eos]:
                logp, state = decoder.score(torch.tensor(ys), state, enc[0])
                stepwise += float(logp[tok])
                ys.append(tok)
            assert stepwise == pytest.approx(att[y], rel=REL_TOL)
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)


def test_espnet_inference_quantizes_speech_mamba_through_this_package(tmp_path, rng,
                                                                      monkeypatch):
    """ESPnet's own quantize_dynamic call breaks speech_mamba (dt_proj's weight is read as a
    tensor); our asr_inference entry point routes --quantize_asr_model to quantize_asr_model."""
    original = torch.quantization.quantize_dynamic
    config, model_file = make_model_files(
        tmp_path, "speech_mamba", dict(output_size=16, num_blocks=2, attention_heads=2, d_state=4))
    scp, audio = write_scp(tmp_path, rng, rates=(8000, 8000))
    out = tmp_path / "decode"
    quantized = []

    def watched(*args, **kwargs):
        quantized.append(quantize_asr_model(*args, **kwargs))
        return quantized[-1]

    monkeypatch.setattr(quantization, "quantize_asr_model", watched)
    asr_inference.main([
        "--asr_train_config", str(config), "--asr_model_file", str(model_file),
        "--data_path_and_name_and_type", f"{scp},speech,sound", "--output_dir", str(out),
        "--beam_size", "1", "--ctc_weight", "1.0", "--quantize_asr_model", "true",
    ])
    assert torch.quantization.quantize_dynamic is original  # restored afterwards
    # the model that decoded was our quantized copy: int8 Linear layers, dt_proj left in float
    (model,) = quantized
    assert sum(isinstance(m, DynamicQuantizedLinear) for m in model.encoder.modules()) > 0
    assert all(type(m.dt_proj) is torch.nn.Linear for m in model.encoder.modules()
               if hasattr(m, "dt_proj"))
    assert set(read_table(out / "1best_recog" / "token_int")) == set(audio)
