r"""Convolutions on the few frames of a streaming chunk, channels last: (B, t, C).

``conv1d`` has a large fixed cost per call, which dominates on chunks of a few frames, and
works channels first, which costs two transposes per call. Here:

* :func:`pointwise`: a kernel-1 ``Conv1d`` with g groups maps each frame by a block-diagonal
  matrix :math:`W = \mathrm{diag}(W_1, .., W_g)`; one dense ``linear`` call (the zero blocks
  included) gives the same sums (the extra terms are exact zeros). The dense matrix is built
  once per layer and rebuilt only when the weights change; a layer already replaced by its
  :class:`~espnet_ssm.layers.conv_as_linear.PointwiseLinear` (quantized models) is called as is.
* :func:`depthwise_valid`: a depthwise convolution without padding,
  :math:`y_t = b + \sum_{i<k} w_i \odot h_{t+i}` (cross-correlation, as ``conv1d``), as one
  element-wise product and sum over a strided view of the k-frame windows.
"""
from __future__ import annotations

import weakref
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from espnet_ssm.layers.conv_as_linear import PointwiseLinear, is_pointwise, pointwise_matrix
from espnet_ssm.streaming.weights_key import weights_key

_DENSE: "weakref.WeakKeyDictionary[torch.nn.Conv1d, Tuple[tuple, torch.Tensor]]" = (
    weakref.WeakKeyDictionary()
)


def dense_weight(conv: torch.nn.Conv1d) -> torch.Tensor:
    """(out, in) matrix of a kernel-1 ``Conv1d`` (block-diagonal when grouped), cached."""
    if conv.groups == 1 and is_pointwise(conv):
        return conv.weight[:, :, 0]
    key = weights_key([conv.weight])
    hit = _DENSE.get(conv)
    if hit is None or hit[0] != key:
        hit = (key, pointwise_matrix(conv).detach())
        _DENSE[conv] = hit
    return hit[1]


def pointwise(conv: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv`` (a kernel-1 ``Conv1d`` or its :class:`PointwiseLinear`) on frames x
    (B, t, C_in) -> (B, t, C_out), i.e. conv(x^T)^T."""
    if isinstance(conv, PointwiseLinear):
        return conv.linear(x)
    return F.linear(x, dense_weight(conv), conv.bias)


def depthwise_valid(h: torch.Tensor, weight: torch.Tensor,
                    bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Depthwise cross-correlation of h (B, t + k - 1, C) with ``weight`` (C, 1, k) -> (B, t, C).

    Equal to ``conv1d(h^T, weight, bias, groups=C)^T`` (no padding).
    """
    k = weight.size(-1)
    if h.size(1) < k:  # no complete window: an empty chunk
        return h.new_zeros(h.size(0), 0, h.size(2))
    windows = h.unfold(1, k, 1)  # (B, t, C, k): frames t .. t + k - 1 per output frame t
    y = (windows * weight[:, 0]).sum(-1)
    return y + bias if bias is not None else y
