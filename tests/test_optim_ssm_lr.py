"""``ssm_lr`` and the SSM weight-decay exemption reach ESPnet's optimiser.

The model and optimiser are built as ``asr_train`` builds them: a YAML parsed by our task's
parser (ESPnet's options ``--optim``, ``--optim_conf``, ``--scheduler``), then
``SSMASRTask.build_model``, ``build_optimizers`` and ESPnet's scheduler class for
``--scheduler``. One AdamW step on
gradients of ones moves every weight by lr_group (1 + tiny) plus the decoupled decay
lr_group · wd_group · w: the step of each parameter shows which group it trained in.
"""
from __future__ import annotations

import pytest
import torch
import yaml

from espnet_ssm.tasks import SSMASRTask

SSM_LR, LR, WD = 3e-4, 2e-3, 0.05
SSM_KEYS = ("log_dt", "log_A_real", "A_imag", "B")  # S4D's Δ, A, B: ssm_lr and no decay


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("optim")
    (root / "tokens.txt").write_text("\n".join(["<blank>", "<unk>", "a", "b", "<sos/eos>"]) + "\n")
    conf = dict(
        encoder="ssm_conformer",
        encoder_conf=dict(output_size=16, attention_heads=2, linear_units=16, num_blocks=2,
                          ssm_mode="com", ssm_lr=SSM_LR),
        decoder="none", model_conf=dict(ctc_weight=1.0),
        frontend_conf=dict(n_fft=128, hop_length=64, n_mels=20),
        optim="adamw", optim_conf=dict(lr=LR, weight_decay=WD),
        scheduler="warmuplr", scheduler_conf=dict(warmup_steps=4),
    )
    (root / "train.yaml").write_text(yaml.safe_dump(conf))
    args = SSMASRTask.get_parser().parse_args(
        ["--config", str(root / "train.yaml"), "--token_list", str(root / "tokens.txt"),
         "--output_dir", str(root / "exp")])
    model = SSMASRTask.build_model(args)
    (optim,) = SSMASRTask.build_optimizers(args, model)
    return args, model, optim


def role(name: str) -> str:
    """Which group a parameter belongs in, from its name: an S4D's Δ, A, B, or the rest."""
    return "ssm" if ".ssm." in name and name.rsplit(".", 1)[-1] in SSM_KEYS else "other"


def test_groups_reach_espnets_adamw(built):
    args, model, optim = built
    assert type(optim) is torch.optim.AdamW
    names = {id(p): n for n, p in model.named_parameters()}
    seen = [names[id(p)] for g in optim.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(names.values())  # every parameter once
    per_role = {}
    for g in optim.param_groups:
        for p in g["params"]:
            per_role.setdefault(role(names[id(p)]), set()).add((g["lr"], g["weight_decay"]))
    assert per_role == {"ssm": {(SSM_LR, 0.0)}, "other": {(LR, WD)}}


def test_one_adamw_step_moves_each_parameter_by_its_groups_lr(built):
    args, model, optim = built
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    # ESPnet's warm-up scheduler scales every group from its own initial lr
    from espnet2.tasks.abs_task import scheduler_classes

    scheduler_classes[args.scheduler](optim, **args.scheduler_conf)
    factor = optim.param_groups[0]["lr"] / LR
    assert factor < 1
    optim.step()
    lr = {"ssm": SSM_LR * factor, "other": LR * factor}
    wd = {"ssm": 0.0, "other": WD}
    for n, p in model.named_parameters():
        r, w = role(n), before[n].double()
        # AdamW: w <- w (1 - lr wd) - lr m / (sqrt(v) + eps), m / sqrt(v) = 1 on the first step
        want = w * (1 - lr[r] * wd[r]) - lr[r] * (1 / (1 + 1e-8))
        torch.testing.assert_close(p.detach().double(), want, rtol=0, atol=1e-6, msg=n)
