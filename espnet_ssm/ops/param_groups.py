"""Optimizer parameter groups for SSM parameters (A, Δ, B: no weight decay, own learning rate).

A layer marks a parameter with :func:`set_optim_hint`, which stores a dict on the parameter
(``p._optim = {"weight_decay": 0.0, "lr": 1e-3}``); :func:`ssm_param_groups` turns a model into
``torch.optim`` parameter groups, one per distinct hint.

Use from ESPnet: ``AbsTask.build_optimizers`` calls ``optim_class(model.parameters(), **optim_conf)``.
A task that overrides it passes the groups instead::

    groups = ssm_param_groups(model, optim_conf["lr"], optim_conf.get("weight_decay", 0.0))
    optim = optim_class(groups, **optim_conf)

Values in a group override the constructor's defaults, so hinted parameters keep their own lr and
weight decay while everything else uses ``optim_conf``. ESPnet's schedulers (WarmupLR, ...) scale
each group from its own initial lr, so the ratio between groups is kept during warm-up/decay.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

HINT_ATTR = "_optim"
_HINT_KEYS = ("lr", "weight_decay")


def set_optim_hint(param: torch.nn.Parameter, **hints: Any) -> torch.nn.Parameter:
    """Attach optimizer hints (``lr`` and/or ``weight_decay``; ``None`` values are dropped)."""
    unknown = set(hints) - set(_HINT_KEYS)
    if unknown:
        raise ValueError(f"set_optim_hint: unknown hint(s) {sorted(unknown)}; allowed: {list(_HINT_KEYS)}")
    merged = dict(getattr(param, HINT_ATTR, {}))
    merged.update({k: v for k, v in hints.items() if v is not None})
    setattr(param, HINT_ATTR, merged)
    return param


def ssm_param_groups(
    model: torch.nn.Module, base_lr: float, weight_decay: float = 0.0
) -> List[Dict[str, Any]]:
    """Parameter groups: one for unhinted parameters, one per distinct hint.

    Args:
        model: any module; parameters with ``requires_grad=False`` are left out.
        base_lr: learning rate of unhinted parameters and of hints without ``lr``.
        weight_decay: weight decay of unhinted parameters and of hints without ``weight_decay``.

    Returns:
        A list of dicts ``{"params": [...], "lr": ..., "weight_decay": ...}`` (the default group
        first; empty groups are omitted), ready for any ``torch.optim`` optimizer.
    """
    groups: Dict[tuple, Dict[str, Any]] = {}
    for p in model.parameters():  # yields each shared parameter once
        if not p.requires_grad:
            continue
        hint: Optional[Dict[str, Any]] = getattr(p, HINT_ATTR, None)
        settings = {"lr": base_lr, "weight_decay": weight_decay}
        settings.update(hint or {})
        key = tuple(sorted(settings.items()))
        groups.setdefault(key, dict(settings, params=[]))["params"].append(p)
    default_key = tuple(sorted({"lr": base_lr, "weight_decay": weight_decay}.items()))
    ordered = sorted(groups, key=lambda k: k != default_key)  # stable: default group first
    return [groups[k] for k in ordered]
