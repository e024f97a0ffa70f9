"""Entry points: config dry runs, distributed training, strict loading, CLI errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, TinyASRData, ddp_training, run_ddp
from espnet_ssm.loading import CheckpointMismatchError
from espnet_ssm.tasks import load_speech2text
from espnet_ssm.tasks import SSMASRTask

TRAIN_CONFIGS = sorted(
    p for p in (REPO / "conf").rglob("train*.yaml") if "lm" not in p.name.split("_")[:2]
)

# A small model of ours, given on the command line (independent of the shipped configs).
TINY_MODEL_ARGS = [
    "--encoder", "mh_ssm",
    "--encoder_conf", "output_size=32", "--encoder_conf", "num_blocks=1",
    "--encoder_conf", "num_heads=2", "--encoder_conf", "linear_units=32",
    "--encoder_conf", "d_state=8",
    "--decoder", "transformer", "--decoder_conf", "num_blocks=1",
    "--decoder_conf", "linear_units=32", "--decoder_conf", "attention_heads=2",
    "--frontend_conf", "n_fft=256", "--frontend_conf", "hop_length=128",
    "--frontend_conf", "n_mels=20",
]


def _token_list(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.txt"
    path.write_text("\n".join(["<blank>", "<unk>", "A", "B", "<sos/eos>"]) + "\n")
    return path


def test_some_training_configs_are_shipped():
    names = {p.name for p in TRAIN_CONFIGS}
    for family in ("mh_ssm", "stateformer", "speech_mamba", "ssm_conformer"):
        assert f"train_asr_{family}.yaml" in names, f"missing paper-scale config for {family}"


@pytest.mark.parametrize("config", TRAIN_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_config_dry_run(config: Path, tmp_path: Path):
    """As ESPnet's CI does for its own configs: parse and build, no data."""
    out = tmp_path / "exp"
    cfg = yaml.safe_load(config.read_text())
    SSMASRTask.main(
        cmd=[
            "--config", str(config), "--dry_run", "true", "--iterator_type", "none",
            "--output_dir", str(out), "--token_list", str(_token_list(tmp_path)),
        ]
    )
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["encoder"] == cfg["encoder"]
    if cfg["encoder"] in ("mh_ssm", "stateformer", "speech_mamba", "ssm_conformer"):
        # every constructor default is recorded, so old checkpoints keep their architecture
        assert set(cfg.get("encoder_conf", {})) <= set(written["encoder_conf"])
        assert len(written["encoder_conf"]) > len(cfg.get("encoder_conf", {}))


def test_unknown_encoder_on_command_line_lists_ours(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "espnet_ssm.bin.asr_train", "--encoder", "mh_sm",
         "--dry_run", "true", "--iterator_type", "none", "--output_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "invalid choice: 'mh_sm'" in proc.stderr
    for name in ("mh_ssm", "stateformer", "speech_mamba", "ssm_conformer"):
        assert f"'{name}'" in proc.stderr


def test_two_process_cpu_distributed_training(tiny_asr_data: TinyASRData, tmp_path: Path):
    """torchrun starts two gloo workers of our entry point; ESPnet's DDP trains one epoch."""
    out = tmp_path / "exp"
    logs = tmp_path / "logs"
    cmd = ddp_training("espnet_ssm.bin.asr_train",
                       [*tiny_asr_data.train_args(), *TINY_MODEL_ARGS], out, logs)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = run_ddp(cmd, [out, logs], timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # both workers ran our entry point to the end
    rank_logs = sorted(logs.rglob("stderr.log"))
    assert len(rank_logs) == 2, rank_logs
    for log in rank_logs:
        text = log.read_text()
        assert "espnet_ssm" in text and "Traceback" not in text, text[-2000:]
    # rank 0 reports a finished epoch with at least one training step per worker
    assert "1epoch results: [train]" in proc.stderr
    state = torch.load(out / "latest.pth", map_location="cpu", weights_only=False)
    assert any(k.startswith("encoder.") for k in state)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["encoder"] == "mh_ssm"


@pytest.fixture
def trained_files(tmp_path: Path, tiny_asr_data: TinyASRData):
    """config.yaml and a model file of a small model of ours (weights after 1 step)."""
    out = tmp_path / "exp"
    SSMASRTask.main(
        cmd=[*tiny_asr_data.train_args(), *TINY_MODEL_ARGS, "--output_dir", str(out),
             "--ngpu", "0", "--max_epoch", "1", "--batch_type", "unsorted", "--batch_size", "8",
             "--num_workers", "0", "--use_tensorboard", "false", "--num_att_plot", "0"]
    )
    return out / "config.yaml", out / "latest.pth", tiny_asr_data


def test_strict_loading(trained_files, tmp_path: Path):
    config, model_file, data = trained_files
    model, _ = SSMASRTask.build_model_from_file(config, model_file)
    saved = torch.load(model_file, map_location="cpu", weights_only=False)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k

    # a renamed encoder parameter: missing + unexpected, both named
    broken = dict(saved)
    victim = next(k for k in broken if k.startswith("encoder.") and k.endswith("weight"))
    broken[victim.replace("weight", "weigth")] = broken.pop(victim)
    bad_file = tmp_path / "renamed.pth"
    torch.save(broken, bad_file)
    with pytest.raises(CheckpointMismatchError) as err:
        SSMASRTask.build_model_from_file(config, bad_file)
    msg = str(err.value)
    assert victim in msg and "missing in 'encoder'" in msg and "unexpected in 'encoder'" in msg
    assert str(bad_file) in msg

    # Speech2Text through our loader is strict too, and the good model decodes
    with pytest.raises(CheckpointMismatchError):
        load_speech2text(asr_train_config=str(config), asr_model_file=str(bad_file))
    s2t = load_speech2text(
        asr_train_config=str(config), asr_model_file=str(model_file), beam_size=2, ctc_weight=0.5
    )
    import soundfile as sf

    from espnet2.bin.asr_inference import Speech2Text

    wav, _ = sf.read(data.wav_scp.read_text().split()[1])
    speech = torch.tensor(wav, dtype=torch.float32)
    results = s2t(speech)
    # the same n-best as ESPnet's own Speech2Text on the same files
    espnet_s2t = Speech2Text(
        asr_train_config=str(config), asr_model_file=str(model_file), beam_size=2, ctc_weight=0.5
    )
    def nbest(rs):
        return [(text, tokens, ids, float(hyp.score)) for text, tokens, ids, hyp in rs]

    assert nbest(results) == nbest(espnet_s2t(speech))
    text, tokens, token_ids = results[0][:3]
    assert tokens == [s2t.asr_model.token_list[i] for i in token_ids]
    assert text == "".join(tokens).replace("<space>", " ")


def test_inference_entry_point_refuses_mismatched_checkpoint(trained_files, tmp_path: Path):
    config, model_file, data = trained_files
    saved = torch.load(model_file, map_location="cpu", weights_only=False)
    missing = {k: v for k, v in saved.items() if not k.startswith("encoder.embed")}
    bad_file = tmp_path / "missing.pth"
    torch.save(missing, bad_file)
    proc = subprocess.run(
        [sys.executable, "-m", "espnet_ssm.bin.asr_inference", "--asr_train_config", str(config),
         "--asr_model_file", str(bad_file), "--output_dir", str(tmp_path / "dec"),
         "--data_path_and_name_and_type", f"{data.wav_scp},speech,sound", "--ngpu", "0"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "CheckpointMismatchError" in proc.stderr and "missing in 'encoder'" in proc.stderr
