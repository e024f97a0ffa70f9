"""Stage 15's model card: the usage example decodes as the recipe did (LM, decoding options)."""
from __future__ import annotations

import re

import pytest
import yaml

from espnet_ssm.recipe.model_card import main, render


def unpacked_model(root, with_lm: bool):
    asr_dir = root / "exp" / "asr_x"
    asr_dir.mkdir(parents=True)
    (asr_dir / "config.yaml").write_text("encoder: ssm_conformer\nencoder_conf:\n  output_size: 96\n")
    (asr_dir / "RESULTS.md").write_text("# RESULTS\n|dataset|Err|\n|test|12.3|\n")
    meta = {"files": {"asr_model_file": "exp/asr_x/valid.loss.ave.pth"},
            "yaml_files": {"asr_train_config": "exp/asr_x/config.yaml"}}
    if with_lm:
        (root / "exp" / "lm_y").mkdir()
        (root / "exp" / "lm_y" / "config.yaml").write_text("lm: seq_rnn\nlm_conf:\n  unit: 128\n")
        meta["files"]["lm_file"] = "exp/lm_y/2epoch.pth"
        meta["yaml_files"]["lm_train_config"] = "exp/lm_y/config.yaml"
    (root / "meta.yaml").write_text(yaml.safe_dump(meta))
    decode = root / "decode.yaml"
    decode.write_text("beam_size: 10\nctc_weight: 0.3\nlm_weight: 1.2\npenalty: 1.0\n")
    return asr_dir, decode


def example_call(card: str) -> dict:
    """The keyword arguments of the card's Speech2Text(...) call, evaluated."""
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    compile(code, "card", "exec")  # the snippet is valid Python
    body = re.search(r"Speech2Text\(\n(.*?)\)\n", code, re.S).group(1)
    return eval(f"dict({body})")  # noqa: S307 (our own output)


def test_card_with_lm_decodes_as_the_recipe(tmp_path):
    asr_dir, decode = unpacked_model(tmp_path, with_lm=True)
    card = render(asr_dir, tmp_path, "me/model", "librispeech", "./run.sh", inference_config=decode)
    assert example_call(card) == {
        "asr_train_config": "exp/asr_x/config.yaml", "asr_model_file": "exp/asr_x/valid.loss.ave.pth",
        "lm_train_config": "exp/lm_y/config.yaml", "lm_file": "exp/lm_y/2epoch.pth",
        "beam_size": 10, "ctc_weight": 0.3, "lm_weight": 1.2, "penalty": 1.0,
    }
    assert "## LM config" in card and "lm: seq_rnn" in card
    assert "|test|12.3|" in card and "encoder: ssm_conformer" in card


def test_card_without_lm_drops_the_lm_weight(tmp_path):
    asr_dir, decode = unpacked_model(tmp_path, with_lm=False)
    call = example_call(render(asr_dir, tmp_path, "me/model", "librispeech", "./run.sh",
                               inference_config=decode))
    assert "lm_file" not in call and "lm_weight" not in call and call["beam_size"] == 10
    card = render(asr_dir, tmp_path, "me/model", "librispeech", "./run.sh")
    assert example_call(card)["beam_size"] == 1 and "## LM config" not in card


def test_missing_inference_config_is_named(tmp_path, capsys):
    asr_dir, _ = unpacked_model(tmp_path, with_lm=True)
    with pytest.raises(SystemExit, match="inference_config .*nope.yaml does not exist"):
        main(["--asr_exp", str(asr_dir), "--model_dir", str(tmp_path),
              "--inference_config", str(tmp_path / "nope.yaml")])
