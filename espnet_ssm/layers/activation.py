"""Activations by name: ESPnet's ``get_activation`` plus GELU (the usual S4/MH-SSM choice)."""
from __future__ import annotations

import torch
from espnet.nets.pytorch_backend.nets_utils import get_activation

ACTIVATIONS = ("gelu", "swish", "relu", "tanh", "hardtanh", "selu")


def build_activation(name: str) -> torch.nn.Module:
    """A fresh activation module for ``name`` (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r}: choose one of {list(ACTIVATIONS)}")
    if name == "gelu":
        return torch.nn.GELU()
    return get_activation(name)
