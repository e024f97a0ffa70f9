"""The four encoder families inside ESPnet: built from our YAML configs through our task class.

Every family and variant (`VARIANTS`) is checked for: building from YAML, forward/backward with
finite gradients reaching every parameter, padded batch == each utterance alone, no integer
buffers, autocast. Then per family: every input layer, InterCTC with and without conditioning,
``--init xavier_uniform`` keeping SSM parameters valid, causality of the ``causal`` variants, a
short training run whose loss falls, and the errors for bad configurations and bad input.
"""
from __future__ import annotations

import inspect
import math
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import torch
from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError

from espnet_ssm.encoders import (
    MHSSMEncoder,
    SpeechMambaEncoder,
    SSMConformerEncoder,
    StateformerEncoder,
)
from espnet_ssm.encoders.options import EncoderConfigError
from espnet_ssm.layers.frontend import INPUT_LAYERS, subsampling_of
from espnet_ssm.layers.mamba import MambaMixer
from espnet_ssm.layers.s4d import S4D
from espnet_ssm.ops.s4d_init import s4d_init
from espnet_ssm.tasks import SSMASRTask

REPO = Path(__file__).resolve().parents[1]
TUNING = REPO / "conf" / "tuning"
FAMILIES = {
    "mh_ssm": MHSSMEncoder,
    "stateformer": StateformerEncoder,
    "speech_mamba": SpeechMambaEncoder,
    "ssm_conformer": SSMConformerEncoder,
}
# variant id -> encoder_conf overrides of the family's tiny YAML (family = id before "/")
VARIANTS: Dict[str, dict] = {
    "mh_ssm/default": {},
    "mh_ssm/glu-stack2": {"gating": "glu", "stack": 2},
    "mh_ssm/none-inv-abs_pos": {
        "gating": "none", "ssm_init": "s4d_inv", "pos_enc_layer_type": "abs_pos",
    },
    "mh_ssm/real-bilinear-noproj": {
        "ssm_init": "s4d_real", "discretization": "bilinear", "input_projection": False,
    },
    "mh_ssm/causal": {"causal": True, "bidirectional": False},
    "stateformer/default": {},
    "stateformer/attention_first-conv": {"block_order": "attention_first", "use_conv_module": True},
    "stateformer/abs_pos-no_macaron": {
        "pos_enc_layer_type": "abs_pos", "selfattention_layer_type": "selfattn",
        "macaron_style": False,
    },
    "stateformer/causal": {
        "causal": True, "bidirectional": False, "use_conv_module": True,
        "attention_left_context": 3,
    },
    "speech_mamba/default": {},
    "speech_mamba/bidirectional-add": {"bidirectional": True},
    "speech_mamba/bidirectional-concat-rel_pos": {
        "bidirectional": True, "bidirectional_combine": "concat", "pos_enc_layer_type": "rel_pos",
        "selfattention_layer_type": "rel_selfattn", "norm_type": "layer_norm",
    },
    "speech_mamba/causal": {"causal": True},
    "ssm_conformer/com": {},
    "ssm_conformer/dir-lin": {"ssm_mode": "dir", "ssm_init": "s4d_lin"},
    "ssm_conformer/rep-inv": {"ssm_mode": "rep", "ssm_init": "s4d_inv", "rep_kernel_size": 8},
    "ssm_conformer/conv-batch_norm": {"ssm_mode": "conv", "conv_norm": "batch_norm"},
    "ssm_conformer/causal-com": {"causal": True},
    "ssm_conformer/causal-dir": {"causal": True, "ssm_mode": "dir", "d_state": 2},
    "ssm_conformer/causal-rep-left": {
        "causal": True, "ssm_mode": "rep", "attention_left_context": 4,
    },
}
CAUSAL_VARIANTS = [v for v, conf in VARIANTS.items() if conf.get("causal")]


def family_of(variant: str) -> str:
    return variant.split("/")[0]


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def token_list(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens.txt"
    path.write_text("\n".join(["<blank>", "<unk>", "a", "b", "c", "d", "e", "<sos/eos>"]) + "\n")
    return path


def yaml_args(config: Path, token_list: Path, overrides: Optional[dict] = None, **top):
    """Parse ``config`` with our task's parser, as ``asr_train --config`` does."""
    args = SSMASRTask.get_parser().parse_args(
        ["--config", str(config), "--token_list", str(token_list), "--output_dir", "unused"]
    )
    args.encoder_conf = {**args.encoder_conf, **(overrides or {})}
    for key, value in top.items():
        setattr(args, key, value)
    return args


def build_model(variant: str, token_list: Path, overrides: Optional[dict] = None, **top):
    config = TUNING / f"train_asr_{family_of(variant)}_tiny.yaml"
    torch.manual_seed(0)
    conf = {**VARIANTS[variant], **(overrides or {})}
    return SSMASRTask.build_model(yaml_args(config, token_list, conf, **top))


def build_encoder(variant: str, dtype=torch.float32, **overrides) -> torch.nn.Module:
    """The variant's encoder alone, tiny (d=32), from the same keys as its YAML."""
    family = family_of(variant)
    conf = dict(output_size=32, num_blocks=2)
    conf.update(VARIANTS[variant])
    conf.update(overrides)
    torch.manual_seed(0)
    return FAMILIES[family](input_size=conf.pop("input_size", 20), **conf).to(dtype).eval()


def random_batch(lengths: List[int], dim: int = 20, dtype=torch.float32):
    x = torch.randn(len(lengths), max(lengths), dim, dtype=dtype)
    return x, torch.tensor(lengths)


def asr_batch(vocab: int, n: int = 3, seed: int = 0):
    """Waveforms of 0.4-1.0 s and random token sequences, padded as ESPnet's collate does."""
    g = torch.Generator().manual_seed(seed)
    samples = torch.randint(6400, 16000, (n,), generator=g)
    speech = torch.randn(n, int(samples.max()), generator=g) * 0.1
    speech = speech * (torch.arange(speech.size(1))[None] < samples[:, None])
    text_lengths = torch.randint(2, 6, (n,), generator=g)
    text = torch.randint(1, vocab - 1, (n, int(text_lengths.max())), generator=g)
    text = text.masked_fill(torch.arange(text.size(1))[None] >= text_lengths[:, None], -1)
    return dict(speech=speech, speech_lengths=samples, text=text, text_lengths=text_lengths)


def assert_all_grads_finite(model: torch.nn.Module) -> None:
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient (unused under DDP): {missing}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad}"


# ----------------------------------------------------------------------------- per variant
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_builds_from_yaml_forward_backward(variant, token_list):
    model = build_model(variant, token_list)
    family = family_of(variant)
    assert type(model.encoder) is FAMILIES[family]
    model.train()
    batch = asr_batch(len(model.token_list))
    loss, stats, _ = model(**batch)
    assert torch.isfinite(loss)
    loss.backward()
    assert_all_grads_finite(model)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_padded_batch_equals_each_utterance_alone(variant):
    enc = build_encoder(variant, torch.float64)
    x, lengths = random_batch([97, 60, 31], dtype=torch.float64)
    x[1, 60:] = 1e3  # garbage in the padding must not matter
    x[2, 31:] = float("nan")
    with torch.no_grad():
        out, olens, _ = enc(x, lengths)
        for b, n in enumerate(lengths.tolist()):
            alone, alone_len, _ = enc(x[b : b + 1, :n], lengths[b : b + 1])
            assert int(olens[b]) == int(alone_len[0]) == alone.size(1)
            torch.testing.assert_close(out[b, : olens[b]], alone[0], atol=1e-9, rtol=1e-9)
            assert not out[b, olens[b] :].any(), "padded output frames must be zero"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_no_integer_buffers_and_autocast(variant):
    enc = build_encoder(variant)
    ints = [k for k, v in enc.state_dict().items() if not (v.is_floating_point() or v.is_complex())]
    assert not ints, f"integer tensors are summed by ESPnet's checkpoint averaging: {ints}"
    x, lengths = random_batch([80, 50])
    with torch.no_grad():
        ref, _, _ = enc(x, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, _, _ = enc(x, lengths)
    assert torch.isfinite(low).all()
    rel = (low.float() - ref).norm() / ref.norm()
    assert rel < 0.1, f"bf16 autocast output deviates by {float(rel):.3f} (relative)"


# ----------------------------------------------------------------------------- per family
def default_variant(family: str) -> str:
    return next(v for v in VARIANTS if family_of(v) == family)


@pytest.mark.parametrize("input_layer", INPUT_LAYERS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_input_layers(family, input_layer):
    input_size = 32 if input_layer is None else 20  # None: features already d-dimensional
    enc = build_encoder(default_variant(family), input_layer=input_layer, input_size=input_size)
    sub = subsampling_of(input_layer)
    lengths = [sub.min_frames + 40, sub.min_frames + 3, sub.min_frames]
    x, ilens = random_batch(lengths, input_size)
    with torch.no_grad():
        out, olens, _ = enc(x, ilens)
    expected = [int(sub.output_lengths(torch.tensor([n]))[0]) for n in lengths]
    assert olens.tolist() == expected and out.shape == (3, max(expected), 32)
    assert torch.isfinite(out).all()
    if sub.min_frames > 1:
        with pytest.raises(TooShortUttError, match="utterance 1 of the batch") as e:
            enc(*random_batch([sub.min_frames + 5, sub.min_frames - 1], input_size))
        assert (e.value.actual_size, e.value.limit) == (sub.min_frames - 1, sub.min_frames)


@pytest.mark.parametrize("conditioning", [False, True])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_interctc(family, conditioning, token_list):
    model = build_model(
        default_variant(family),
        token_list,
        {"interctc_layer_idx": [1], "interctc_use_conditioning": conditioning},
        model_conf={"ctc_weight": 0.3, "lsm_weight": 0.1, "interctc_weight": 0.5},
    )
    assert (model.encoder.conditioning_layer is not None) == conditioning
    batch = asr_batch(len(model.token_list))
    model.train()
    loss, stats, _ = model(**batch)
    assert "loss_interctc_layer1" in stats and torch.isfinite(stats["loss_interctc_layer1"])
    loss.backward()
    assert_all_grads_finite(model)

    model.eval()
    with torch.no_grad():
        (out, inter), olens = model.encode(batch["speech"], batch["speech_lengths"])
        assert [i for i, _ in inter] == [1] and inter[0][1].shape == out.shape
        if conditioning:
            # The posteriors of block 1 feed block 2: changing the conditioning layer changes
            # the final output, not the tapped hidden state.
            layer = model.encoder.conditioning_layer
            layer.weight.add_(torch.randn_like(layer.weight))
            (out2, inter2), _ = model.encode(batch["speech"], batch["speech_lengths"])
            torch.testing.assert_close(inter2[0][1], inter[0][1])
            assert not torch.allclose(out2, out, atol=1e-4)


def _check_s4d_valid(m: S4D) -> None:
    dt = m.log_dt.exp()
    assert (dt >= m.dt_min * (1 - 1e-5)).all() and (dt <= m.dt_max * (1 + 1e-5)).all()
    A = s4d_init(m.init, m.d_state)
    A_real = A.real if A.is_complex() else A
    torch.testing.assert_close(-m.log_A_real.exp(), A_real.expand_as(m.log_A_real))
    if m.A_imag is not None:
        torch.testing.assert_close(m.A_imag, A.imag.expand_as(m.A_imag))
    B = m.B[..., 0] if m.is_complex else m.B
    assert torch.equal(B, torch.ones_like(B))
    if m.n_bands > 1:  # band 0 (head 0) the most local: mean log Δ decreasing over bands
        means = m.log_dt.view(m.n_bands, -1).mean(1)
        assert (means[1:] < means[:-1]).all()


def _check_mamba_valid(m: MambaMixer) -> None:
    N = m.d_state
    expected = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).expand_as(m.A_log)
    torch.testing.assert_close(m.A_log, expected)
    assert torch.equal(m.D, torch.ones_like(m.D))
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert (dt >= min(m.dt_min, m.dt_init_floor) * (1 - 1e-4)).all()
    assert (dt <= m.dt_max * (1 + 1e-4)).all()


@pytest.mark.parametrize(
    "variant",
    [
        "mh_ssm/default", "stateformer/causal", "speech_mamba/bidirectional-add",
        "ssm_conformer/com", "ssm_conformer/rep-inv",
    ],
)
def test_xavier_init_keeps_ssm_parameters_valid(variant, token_list):
    model = build_model(variant, token_list, init="xavier_uniform")
    s4ds = [m for m in model.modules() if isinstance(m, S4D)]
    mambas = [m for m in model.modules() if isinstance(m, MambaMixer)]
    assert s4ds or mambas
    for m in s4ds:
        _check_s4d_valid(m)
    for m in mambas:
        _check_mamba_valid(m)


def test_xavier_without_the_hooks_breaks_the_ssm_parameters():
    """Negative control for the test above: ESPnet's xavier step alone invalidates S4D and Mamba."""
    torch.manual_seed(0)
    s4d, mamba = S4D(8, 4, n_bands=2), MambaMixer(8, d_state=4)
    for module in (s4d, mamba):
        for p in module.parameters():
            if p.dim() > 1:
                torch.nn.init.xavier_uniform_(p.data)
    with pytest.raises(AssertionError):
        _check_s4d_valid(s4d)
    with pytest.raises(AssertionError):
        _check_mamba_valid(mamba)


@pytest.mark.parametrize("variant", CAUSAL_VARIANTS)
def test_causal_variants_do_not_look_ahead(variant):
    enc = build_encoder(variant, torch.float64)
    sub = enc.embed.subsampling
    x, lengths = random_batch([160], dtype=torch.float64)
    with torch.no_grad():
        ref, _, _ = enc(x, lengths)
        for t in (40, 75, 130):
            changed = x.clone()
            changed[:, t:] = torch.randn_like(changed[:, t:])
            out, _, _ = enc(changed, lengths)
            past = [j for j in range(ref.size(1)) if sub.last_input_frame(j) < t]
            torch.testing.assert_close(out[:, past], ref[:, past], atol=1e-10, rtol=1e-10)
            assert not torch.allclose(out[:, len(past) :], ref[:, len(past) :])


def test_lookahead_check_detects_offline_encoders():
    """The causality check above is not vacuous: an offline encoder fails it."""
    enc = build_encoder("mh_ssm/default", torch.float64)
    x, lengths = random_batch([160], dtype=torch.float64)
    with torch.no_grad():
        ref, _, _ = enc(x, lengths)
        changed = x.clone()
        changed[:, 100:] += 1.0
        out, _, _ = enc(changed, lengths)
    assert not torch.allclose(out[:, :5], ref[:, :5], atol=1e-10)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_few_training_steps_reduce_the_loss(family, token_list):
    model = build_model(default_variant(family), token_list, specaug=None)
    model.train()
    batch = asr_batch(len(model.token_list), n=4, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss, _, _ = model(**batch)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0], losses


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("config", sorted(p.name for p in TUNING.glob("train_asr_*.yaml")))
def test_every_tuning_config_builds(config, token_list):
    """Every shipped config parses and builds (paper-scale ones included), in-process."""
    args = yaml_args(TUNING / config, token_list)
    model = SSMASRTask.build_model(args)
    assert model.encoder.output_size() == args.encoder_conf["output_size"]
    if args.encoder in FAMILIES:  # resolved defaults are written back for config.yaml
        params = inspect.signature(FAMILIES[args.encoder].__init__).parameters
        assert set(args.encoder_conf) == set(params) - {"self", "input_size"}


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(p.name for p in TUNING.glob("train_asr_*.yaml")))
def test_every_tuning_config_dry_runs_through_the_entry_point(config, token_list, tmp_path):
    """ESPnet CI's check: ``asr_train --dry_run true --iterator_type none`` on each config."""
    cmd = [
        sys.executable, "-m", "espnet_ssm.bin.asr_train", "--config", str(TUNING / config),
        "--dry_run", "true", "--iterator_type", "none", "--output_dir", str(tmp_path / "exp"),
        "--token_list", str(token_list),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "variant,overrides,match",
    [
        (
            "mh_ssm/default", {"num_blokcs": 2},
            r"'num_blokcs' \(did you mean 'num_blocks'\?\).*Valid keys",
        ),
        ("ssm_conformer/com", {"ssm_moed": "dir"}, r"'ssm_moed' \(did you mean 'ssm_mode'"),
        ("mh_ssm/default", {"num_heads": 3}, r"num_heads=3 must be a positive divisor of output_s"),
        ("mh_ssm/default", {"num_heads": 1}, r"inter_head pairs the heads"),
        ("stateformer/default", {"attention_heads": 5}, r"attention_heads=5"),
        ("speech_mamba/default", {"attention_heads": 6}, r"attention_heads=6"),
        ("ssm_conformer/com", {"ssm_mode": "direct"}, r"ssm_mode='direct' is not valid.*'dir', 'c"),
        ("ssm_conformer/com", {"ssm_init": "s4d"}, r"ssm_init='s4d'"),
        ("mh_ssm/default", {"causal": True}, r"causal=true needs bidirectional=false"),
        ("stateformer/default", {"selfattention_layer_type": "selfattn"}, r"rel_selfattn and pos"),
        ("speech_mamba/default", {"interctc_layer_idx": [2]}, r"interctc_layer_idx entries \[2\]"),
        ("mh_ssm/default", {"pos_enc_layer_type": "rel_pos"}, r"pos_enc_layer_type='rel_pos'"),
        ("mh_ssm/default", {"input_layer": "conv2d4"}, r"input_layer='conv2d4'"),
        ("mh_ssm/default", {"dt_min": 0.2}, r"0 < dt_min < dt_max"),
        ("stateformer/default", {"num_blocks": "2"}, r'invalid encoder_conf value.*"num_blocks"'),
    ],
)
def test_bad_configuration_fails_at_construction(variant, overrides, match, token_list):
    with pytest.raises(EncoderConfigError, match=match):
        build_model(variant, token_list, overrides)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_name_the_utterance(bad):
    enc = build_encoder("ssm_conformer/com")
    x, lengths = random_batch([50, 40, 30])
    x[1, 7, 3] = bad
    with pytest.raises(ValueError, match=r"non-finite .* utterance\(s\) \[1\]"):
        enc(x, lengths)


def test_wrong_feature_dimension_is_reported():
    enc = build_encoder("mh_ssm/default")
    with pytest.raises(ValueError, match="expected features"):
        enc(*random_batch([50], dim=21))
