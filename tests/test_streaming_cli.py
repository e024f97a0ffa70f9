"""The streaming and long-form inference command lines (run in-process)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from espnet_ssm.bin import asr_inference_longform, asr_inference_streaming
from espnet_ssm.streaming import LongFormSpeech2Text, StreamingSpeech2Text
from test_streaming_speech2text import CAUSAL_MH_SSM, make_model_files, waveform
from test_streaming_ctc import rng  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model_files(tmp_path_factory.mktemp("cli"), "mh_ssm", CAUSAL_MH_SSM)


def write_scp(root, rng, rates=(8000, 8000, 16000)):
    """wav.scp of a few recordings; the one at 16 kHz must be resampled to the model's 8 kHz."""
    lines, audio = [], {}
    for i, rate in enumerate(rates):
        key = f"utt{i}"
        x = waveform(rng, rng.uniform(0.8, 2.0)).numpy()
        if rate != 8000:
            x = np.interp(np.arange(0, len(x), 8000 / rate), np.arange(len(x)), x)
        sf.write(root / f"{key}.wav", x.astype(np.float32), rate, subtype="PCM_16")
        lines.append(f"{key} {root / f'{key}.wav'}")
        audio[key] = (sf.read(root / f"{key}.wav", dtype="float32")[0], rate)
    (root / "wav.scp").write_text("\n".join(lines) + "\n")
    return root / "wav.scp", audio


def io_args(model_files, scp, out):
    """The model, input and output options every inference command line takes."""
    config, model_file = model_files
    return ["--asr_train_config", str(config), "--asr_model_file", str(model_file),
            "--data_path_and_name_and_type", f"{scp},speech,sound", "--output_dir", str(out)]


def read_table(path):
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        out[key] = value
    return out


def test_streaming_cli_writes_espnet_outputs(model, tmp_path, rng, caplog):
    config, model_file = model
    scp, audio = write_scp(tmp_path, rng)
    out = tmp_path / "decode"
    chunk = int(rng.integers(100, 3000))
    with caplog.at_level(logging.INFO):
        asr_inference_streaming.main([
            "--asr_train_config", str(config), "--asr_model_file", str(model_file),
            "--data_path_and_name_and_type", f"{scp},speech,sound", "--output_dir", str(out),
            "--sim_chunk_length", str(chunk), "--beam_size", "3", "--nbest", "2",
        ])
    s2t = StreamingSpeech2Text(config, model_file, beam_size=3, nbest=2)
    for n in (1, 2):
        texts = read_table(out / f"{n}best_recog" / "text")
        ids = read_table(out / f"{n}best_recog" / "token_int")
        assert set(texts) == set(audio) == set(read_table(out / f"{n}best_recog" / "score"))
        for key, (x, rate) in audio.items():
            x = torch.from_numpy(x)
            if rate != 8000:
                import torchaudio.functional as AF

                x = AF.resample(x, rate, 8000)
            want = s2t.recognize(x, chunk)[n - 1]
            assert ids[key] == " ".join(map(str, want.token_ids))
            assert texts[key] == want.text
    assert "RTF" in caplog.text and "latency per chunk" in caplog.text


def test_long_form_cli_writes_words_and_ctm(model, tmp_path, rng):
    config, model_file = model
    scp, audio = write_scp(tmp_path, rng, rates=(8000, 8000))
    out = tmp_path / "decode"
    asr_inference_longform.main([
        *io_args(model, scp, out), "--chunk_seconds", "0.5",
    ])
    s2t = LongFormSpeech2Text(config, model_file)
    ctm = (out / "1best_recog" / "ctm").read_text().splitlines()
    texts = read_table(out / "1best_recog" / "text")
    for key, (x, _) in audio.items():
        res = s2t(torch.from_numpy(x))
        assert texts[key] == res.text
        mine = [line.split() for line in ctm if line.startswith(key + " ")]
        assert [m[4] for m in mine] == [w.word for w in res.words]
        for m, w in zip(mine, res.words):
            assert float(m[2]) == pytest.approx(w.start, abs=0.006)
            assert float(m[3]) == pytest.approx(w.end - w.start, abs=0.011)


def test_cli_errors_name_the_problem(model, tmp_path, rng, caplog):
    config, model_file = model
    scp, _ = write_scp(tmp_path, rng, rates=(8000, 16000))
    base = ["--asr_train_config", str(config), "--asr_model_file", str(model_file),
            "--output_dir", str(tmp_path / "out")]
    cases = [
        (["--data_path_and_name_and_type", f"{scp},speech,sound", "--resample", "false"],
         "utt1' is sampled at 16000 Hz"),
        (["--data_path_and_name_and_type", f"{scp},speech,kaldi_ark"], "speech,sound"),
        (["--data_path_and_name_and_type", f"{scp},speech,sound", "--batch_size", "2"],
         "--batch_size"),
        (["--data_path_and_name_and_type", f"{scp},speech,sound", "--lm_file", "x.pth"],
         "language models"),
    ]
    (tmp_path / "bad.scp").write_text(f"gone {tmp_path / 'missing.wav'}\n")
    cases.append((["--data_path_and_name_and_type", f"{tmp_path / 'bad.scp'},speech,sound"],
                  "cannot read recording 'gone'"))
    for extra, message in cases:
        caplog.clear()
        with pytest.raises(SystemExit) as e:
            asr_inference_streaming.main(base + extra)
        assert e.value.code == 1
        assert message in caplog.text
