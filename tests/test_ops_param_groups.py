"""Optimizer groups built from parameter hints."""
import pytest
import torch

from espnet_ssm.ops import set_optim_hint, ssm_param_groups


def model_with_hints():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    set_optim_hint(model[0].weight, weight_decay=0.0)
    set_optim_hint(model[1].weight, weight_decay=0.0, lr=1e-4)
    set_optim_hint(model[1].bias, lr=None)  # a None hint is no hint
    model[0].bias.requires_grad_(False)
    return model


def test_groups_follow_hints():
    model = model_with_hints()
    groups = ssm_param_groups(model, base_lr=1e-2, weight_decay=0.05)
    assert groups[0]["lr"] == 1e-2 and groups[0]["weight_decay"] == 0.05  # the default group first
    as_sets = {(g["lr"], g["weight_decay"]): {id(p) for p in g["params"]} for g in groups}
    assert as_sets == {
        (1e-2, 0.05): {id(model[1].bias)},
        (1e-2, 0.0): {id(model[0].weight)},
        (1e-4, 0.0): {id(model[1].weight)},
    }


def test_groups_drive_an_optimizer():
    model = model_with_hints()
    opt = torch.optim.AdamW(ssm_param_groups(model, base_lr=1e-2, weight_decay=0.5), lr=123.0, weight_decay=9.0)
    before = model[0].weight.detach().clone(), model[1].bias.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradients: only weight decay moves parameters
    assert torch.equal(model[0].weight, before[0])
    assert torch.allclose(model[1].bias, before[1] * (1 - 1e-2 * 0.5))


def test_unknown_hint_rejected():
    with pytest.raises(ValueError, match="unknown hint"):
        set_optim_hint(torch.nn.Parameter(torch.ones(1)), momentum=0.9)
