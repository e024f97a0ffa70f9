"""The parameter table of ``benchmarks/bench_encoders.py`` (README "Paper-scale configs:
parameter counts") holds the counts of the models ESPnet builds from the configs.

* Each row the script prints equals the parameter count, rounded to 0.01 M, of the model that
  ESPnet's own ``ASRTask`` (not the script's ``SSMASRTask``) builds from that YAML with the
  vocabulary size the header states: for the ``_tiny`` twins of the configs here, for the
  paper-size configs themselves in a slow test (which also checks the Conformer row against the
  116.15 M that ESPnet publishes for that recipe).
* Independently of any builder, closed-form counts from the layer shapes of the Conformer and
  the SSM-augmented Conformer (:func:`conformer_encoder_params`) equal the built encoders at
  paper size.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TUNING = REPO / "conf" / "tuning"
FEATURE_DIM = 80  # the fbank dimension ESPnet's default frontend gives
HEADER = re.compile(r"model params, (\d+) BPE")


def load_bench():
    spec = importlib.util.spec_from_file_location(
        "bench_encoders", REPO / "benchmarks" / "bench_encoders.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_table(table: str) -> Tuple[int, Dict[str, Tuple[str, float, float]]]:
    """(vocabulary size of the header, {model: (config, encoder M, model M)})."""
    lines = table.strip().splitlines()
    vocab = HEADER.search(lines[0])
    assert vocab, lines[0]
    rows = {}
    for line in lines[2:]:
        name, config, enc, total = [c.strip() for c in line.strip("|").split("|")]
        rows[name] = (config, float(enc), float(total))
    return int(vocab.group(1)), rows


def espnet_counts(config: Path, vocab: int, tmp_path: Path) -> Tuple[int, int]:
    """(encoder, whole model) parameters of what ESPnet's ASRTask builds from ``config``."""
    import espnet_ssm  # noqa: F401  (registers our encoders and decoders in ESPnet)
    from espnet2.tasks.asr import ASRTask

    tokens = tmp_path / f"tokens{vocab}.txt"
    tokens.write_text("\n".join(["<blank>", "<unk>"] + [f"w{i}" for i in range(vocab - 3)]
                                + ["<sos/eos>"]) + "\n")
    args = ASRTask.get_parser().parse_args(
        ["--config", str(config), "--token_list", str(tokens), "--output_dir", str(tmp_path)]
    )
    model = ASRTask.build_model(args)
    assert model.vocab_size == vocab
    return (sum(p.numel() for p in model.encoder.parameters()),
            sum(p.numel() for p in model.parameters()))


def check_table(table: str, tmp_path: Path) -> List[str]:
    vocab, rows = parse_table(table)
    assert vocab == 5000  # the LibriSpeech recipe's BPE size, as the README says
    for name, (config, enc, total) in rows.items():
        want_enc, want_total = espnet_counts(REPO / config, vocab, tmp_path)
        assert (enc, total) == (round(want_enc / 1e6, 2), round(want_total / 1e6, 2)), name
    return list(rows)


def test_table_rows_are_espnet_built_tiny_twins(monkeypatch, tmp_path):
    """The script's table, pointed at the ``_tiny`` twin of each config that has one, gives the
    counts of ESPnet's builds of those YAMLs."""
    bench = load_bench()
    tiny = {}
    for name, config in bench.CONFIGS.items():
        twin = config.replace(".yaml", "_tiny.yaml")
        if (TUNING / twin).exists():
            tiny[name] = twin
    assert {"conformer", "mh_ssm", "stateformer", "speech_mamba", "ssm_conformer"} <= set(tiny)
    monkeypatch.setattr(bench, "CONFIGS", tiny)
    table = bench.parameter_table(list(tiny))
    assert check_table(table, tmp_path) == list(tiny)


@pytest.mark.slow
def test_paper_size_table_rows_are_espnet_built_models(tmp_path):
    """The paper-size table for every config the script knows (the README's rows, printed by
    ``--params-only``, and e_branchformer): each row is ESPnet's build of the named YAML; the
    Conformer row is ESPnet's published 116.15 M."""
    bench = load_bench()
    table = bench.parameter_table(list(bench.CONFIGS))
    assert check_table(table, tmp_path) == list(bench.CONFIGS)
    assert parse_table(table)[1]["conformer"][2] == 116.15


# ----------------------------------------------------------------------------- closed form
def s4d_params(channels: int, d_state: int, init: str, directions: int) -> int:
    """Diagonal SISO SSM per channel: step Δ, A, B, one C per direction and the skip D;
    A, B and C complex (two reals each) except for S4D-Real."""
    width = 1 if init == "s4d_real" else 2
    return channels * (1 + width * d_state * (2 + directions) + 1)


def conformer_encoder_params(conf: dict, input_size: int = FEATURE_DIM) -> int:
    """Parameters of a Conformer encoder (ESPnet's ``conformer``, or ``ssm_conformer`` whose
    convolution module mixes time with ``ssm_mode``) from the layer shapes.

    conv2d subsampling: two 3x3 convolutions (1 -> d, d -> d) and a linear layer over the d
    channels times the frequency bins left by two stride-2 unpadded convolutions; per block:
    one or two feed-forward modules d -> units -> d, self-attention (q, k, v, out with bias;
    relative position: a bias-free position projection and the biases u, v), the convolution
    module (pointwise d -> 2d, temporal mixer, norm, pointwise d -> d), one LayerNorm per module
    and a final one; a LayerNorm after the blocks.
    """
    d, units, blocks = conf["output_size"], conf["linear_units"], conf["num_blocks"]
    assert conf.get("input_layer", "conv2d") == "conv2d"
    macaron = conf.get("macaron_style", True)
    bins = ((input_size - 1) // 2 - 1) // 2
    subsampling = (9 * d + d) + (9 * d * d + d) + (bins * d * d + d)
    ffn = (d * units + units) + (units * d + d)
    attention = 4 * (d * d + d)
    if conf.get("selfattention_layer_type", "rel_selfattn") == "rel_selfattn":
        attention += d * d + 2 * d
    mode = conf.get("ssm_mode", "conv")
    directions = 1 if conf.get("causal", False) else 2
    ssm = s4d_params(d, conf.get("d_state", 4), conf.get("ssm_init", "s4d_real"), directions)
    mixer = {
        "conv": d * conf.get("cnn_module_kernel", 31) + d,
        "com": d * conf.get("pre_conv_kernel", 4) + d + ssm,
        "dir": ssm,
        "rep": ssm,
    }[mode]
    conv_module = (d * 2 * d + 2 * d) + mixer + 2 * d + (d * d + d)
    norms = 2 * d * (4 + macaron)
    block = ffn * (1 + macaron) + attention + conv_module + norms
    return subsampling + blocks * block + 2 * d


@pytest.mark.parametrize(
    "config, mode",
    [("train_asr_conformer.yaml", None), ("train_asr_ssm_conformer.yaml", None),
     ("train_asr_ssm_conformer_online.yaml", None), ("train_asr_ssm_conformer_tiny.yaml", "dir"),
     ("train_asr_ssm_conformer_tiny.yaml", "rep"), ("train_asr_ssm_conformer_tiny.yaml", "conv")],
)
def test_closed_form_counts_equal_built_encoders(config, mode):
    """Paper-size encoders (and the tiny twin in the other ``ssm_mode`` values), built through
    ESPnet's encoder registry, have exactly the closed-form number of parameters."""
    import espnet_ssm  # noqa: F401
    import torch
    from espnet2.tasks.asr import encoder_choices

    spec = yaml.safe_load((TUNING / config).read_text())
    conf = dict(spec["encoder_conf"])
    if mode is not None:
        conf["ssm_mode"] = mode
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        encoder = encoder_choices.get_class(spec["encoder"])(input_size=FEATURE_DIM, **conf)
    assert sum(p.numel() for p in encoder.parameters()) == conformer_encoder_params(conf)
