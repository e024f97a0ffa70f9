"""Strict model loading.

ESPnet's ``build_model_from_file`` loads checkpoints with ``strict=False``: a checkpoint whose
encoder parameters were renamed, or that belongs to another architecture, loads without a word
and leaves those parameters randomly initialised. Everything in this package that loads a trained
model goes through :func:`load_state_dict_strict` instead. Pure state-dict checks: nothing here
imports ESPnet (the task that uses them is :mod:`espnet_ssm.tasks`).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Union

import torch


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's parameter names do not match the model built from its config."""


def _by_module(keys: Iterable[str]) -> Dict[str, List[str]]:
    groups: Dict[str, List[str]] = defaultdict(list)
    for k in sorted(keys):
        groups[k.split(".", 1)[0]].append(k)
    return groups


def _describe(kind: str, keys: List[str], limit: int = 20) -> List[str]:
    lines = []
    for module, names in _by_module(keys).items():
        shown = ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
        lines.append(f"  {kind} in '{module}' ({len(names)}): {shown}")
    return lines


def check_state_dict(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state_dict`` has exactly ``model``'s keys.

    The message lists missing and unexpected keys grouped by top-level module (``encoder``,
    ``decoder``, ``ctc``, ...) and names ``source``. Shape mismatches are reported too.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and hasattr(state_dict[k], "shape") and state_dict[k].shape != v.shape
    ]
    if not (missing or unexpected or shapes):
        return
    lines = [
        f"{source} does not match the model built from its config "
        "(refusing to continue with randomly initialised parameters):"
    ]
    lines += _describe("missing", missing)
    lines += _describe("unexpected", unexpected)
    lines += [f"  shape mismatch {s}" for s in shapes[:20]]
    lines.append(
        "Check that the config.yaml belongs to this model file and that the same espnet_ssm "
        "version (and encoder_conf) was used for training."
    )
    raise CheckpointMismatchError("\n".join(lines))


def load_state_dict_strict(
    model: torch.nn.Module, model_file: Union[str, Path], device: str = "cpu"
) -> torch.nn.Module:
    """Load ``model_file`` into ``model``; fail loudly on any missing or unexpected key."""
    map_location = "cpu" if device == "mps" else device
    if device == "cuda":
        map_location = f"cuda:{torch.cuda.current_device()}"
    state_dict = torch.load(model_file, map_location=map_location, weights_only=False)
    if isinstance(state_dict, dict) and "module" in state_dict and not any(
        k.startswith("module.") for k in model.state_dict()
    ):
        state_dict = state_dict["module"]  # DeepSpeed checkpoints, as ESPnet handles them
    check_state_dict(model, state_dict, source=f"Model file '{model_file}'")
    model.load_state_dict(state_dict, strict=True)
    return model
