"""Stage 15: the model card (``README.md``) for a packed model, in Hugging Face's format.

It follows ESPnet's model-card template (front matter with tags, the recipe command, RESULTS.md,
the training configs) and adds what a user of an espnet-ssm model needs: the encoder is not part of
ESPnet, so ``import espnet_ssm`` must run before the model is loaded. The usage example decodes as
the recipe did: with the packed language model when there is one, and with the options of the
decoding config (``--inference_config``) when it is given.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import yaml

CITATION = """```bibtex
@inproceedings{watanabe2018espnet,
  author={Shinji Watanabe and Takaaki Hori and Shigeki Karita and Tomoki Hayashi and Jiro Nishitoba and Yuya Unno and Nelson Yalta and Jahn Heymann and Matthew Wiesner and Nanxin Chen and Adithya Renduchintala and Tsubasa Ochiai},
  title={{ESPnet}: End-to-End Speech Processing Toolkit},
  year={2018},
  booktitle={Proceedings of Interspeech},
  pages={2207--2211},
  doi={10.21437/Interspeech.2018-1456},
}
```"""


def speech2text_arguments(meta: dict, inference_config: Optional[Path]) -> Dict[str, object]:
    """Keyword arguments of ``Speech2Text`` that decode as the recipe did."""
    args: Dict[str, object] = {
        "asr_train_config": meta["yaml_files"]["asr_train_config"],
        "asr_model_file": meta["files"]["asr_model_file"],
    }
    if meta["yaml_files"].get("lm_train_config") and meta["files"].get("lm_file"):
        args["lm_train_config"] = meta["yaml_files"]["lm_train_config"]
        args["lm_file"] = meta["files"]["lm_file"]
    if inference_config is None:
        args.update(ctc_weight=1.0, beam_size=1)
        return args
    if not inference_config.is_file():
        raise FileNotFoundError(f"--inference_config {inference_config} does not exist")
    options = yaml.safe_load(inference_config.read_text()) or {}
    if not isinstance(options, dict):
        raise ValueError(f"--inference_config {inference_config}: expected a YAML mapping")
    if "lm_file" not in args:  # the LM is not packed: its weight would have no model to apply to
        options.pop("lm_weight", None)
    args.update(options)
    return args


def render(asr_exp: Path, model_dir: Path, hf_repo: str, corpus: str, run_args: str, lang: str = "en",
           inference_config: Optional[Path] = None) -> str:
    meta_path = model_dir / "meta.yaml"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: unpack the model (stage 14's zip) into {model_dir} first")
    meta = yaml.safe_load(meta_path.read_text())
    config_file = meta["yaml_files"]["asr_train_config"]
    config = yaml.safe_load((model_dir / config_file).read_text())
    encoder = config.get("encoder", "?")
    results = (asr_exp / "RESULTS.md").read_text() if (asr_exp / "RESULTS.md").is_file() else "(no RESULTS.md)\n"
    config_text = (model_dir / config_file).read_text()
    call = "".join(f"    {k}={v!r},\n" for k, v in speech2text_arguments(meta, inference_config).items())
    lm_config = meta["yaml_files"].get("lm_train_config")
    lm_section = "" if not lm_config else f"""
## LM config

<details><summary>expand</summary>

```yaml
{(model_dir / lm_config).read_text().rstrip()}
```

</details>
"""
    return f"""---
tags:
- espnet
- espnet-ssm
- audio
- automatic-speech-recognition
language: {lang}
datasets:
- {corpus}
license: cc-by-4.0
---

## ESPnet2 ASR model with an espnet-ssm `{encoder}` encoder

### `{hf_repo}`

This model was trained with the `egs2/{corpus}/asr1` recipe of espnet-ssm, an ESPnet plugin
that adds state space model encoders. The `{encoder}` encoder is not part of ESPnet: **import `espnet_ssm` before
loading the model**, or ESPnet stops with `--encoder must be one of (...)`.

### Demo: how to use it

```bash
pip install espnet-ssm
```

```python
import soundfile
import espnet_ssm  # noqa: F401  (registers the espnet-ssm encoders; import it first)
from espnet2.bin.asr_inference import Speech2Text

speech2text = Speech2Text(
{call})
speech, rate = soundfile.read("speech.wav")  # 16 kHz mono
text, tokens, token_ids, hyp = speech2text(speech)[0]
print(text)
```

Paths are relative to this repository's root (also the root of the packed zip).

### Reproduce

```bash
cd egs2/{corpus}/asr1
{run_args.strip()}
```

{results}
## ASR config

<details><summary>expand</summary>

```yaml
{config_text.rstrip()}
```

</details>
{lm_section}
### Citing ESPnet

{CITATION}
"""


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--asr_exp", type=Path, required=True)
    p.add_argument("--model_dir", type=Path, required=True, help="the unpacked model (holds meta.yaml)")
    p.add_argument("--hf_repo", default="<user>/<repository>")
    p.add_argument("--corpus", default="librispeech")
    p.add_argument("--lang", default="en")
    p.add_argument("--run_args", default="./run.sh")
    p.add_argument("--inference_config", type=Path, default=None,
                   help="the decoding config whose options the usage example repeats")
    args = p.parse_args(argv)
    try:
        sys.stdout.write(render(args.asr_exp, args.model_dir, args.hf_repo, args.corpus, args.run_args, args.lang,
                                args.inference_config))
    except (FileNotFoundError, KeyError, ValueError) as e:
        sys.exit(f"model_card: {e}")


if __name__ == "__main__":
    main()
