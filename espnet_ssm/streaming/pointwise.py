r"""Kernel-1 ``Conv1d`` layers applied as one dense matrix product on (B, t, C) frames.

A pointwise convolution with g groups maps each frame by a block-diagonal matrix
:math:`W = \mathrm{diag}(W_1, .., W_g)`. On the few frames of a streaming chunk, one dense
``linear`` call (the zero blocks included) costs far less than ``conv1d``'s grouped path and
saves the two transposes around it; the outputs are the same sums (the extra terms are exact
zeros). The dense matrix is built once per layer and rebuilt only when the weights change.
"""
from __future__ import annotations

import weakref
from typing import Tuple

import torch
import torch.nn.functional as F

_DENSE: "weakref.WeakKeyDictionary[torch.nn.Conv1d, Tuple[tuple, torch.Tensor]]" = (
    weakref.WeakKeyDictionary()
)


def dense_weight(conv: torch.nn.Conv1d) -> torch.Tensor:
    """(out, in) matrix of a kernel-1 ``Conv1d`` (block-diagonal when grouped)."""
    if conv.kernel_size != (1,) or conv.stride != (1,) or conv.padding not in ((0,), "valid"):
        raise ValueError(f"not a pointwise convolution: {conv}")
    w = conv.weight
    if conv.groups == 1:
        return w[:, :, 0]
    key = (w.data_ptr(), w._version)
    hit = _DENSE.get(conv)
    if hit is None or hit[0] != key:
        blocks = w[:, :, 0].detach().chunk(conv.groups, dim=0)  # (out/g, in/g) each
        hit = (key, torch.block_diag(*blocks))
        _DENSE[conv] = hit
    return hit[1]


def pointwise(conv: torch.nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` on frames x (B, t, C_in) -> (B, t, C_out), i.e. conv(x^T)^T."""
    return F.linear(x, dense_weight(conv), conv.bias)
