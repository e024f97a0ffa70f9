"""Direct depthwise convolutions for short kernels (S4D "REP" layers, Mamba's local conv).

Kernels are given in lag order: K[h, l] multiplies u[h, t - l]. Causal form

    y[h, t] = Σ_{l=0}^{k-1} K[h, l] · u[h, t - l] (+ bias[h])

with the k-1 frames before the sequence taken from ``tail`` (zeros when not given), which is
what a streaming caller carries from one chunk to the next.

:func:`depthwise_conv_valid` is the channels-last, unpadded form that modules working on
(B, T, C) frames share between their offline and chunk paths.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from espnet_ssm.ops.tensor_checks import check_optional, check_tensor


def causal_depthwise_conv(
    u: torch.Tensor,
    K: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    tail: Optional[torch.Tensor] = None,
    return_tail: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Causal depthwise convolution of u (batch, H, L) with a lag-order kernel K (H, k).

    Args:
        u: (batch, H, L) input.
        K: (H, k) kernel, K[:, 0] applies to the current frame.
        bias: optional (H,).
        tail: optional (batch, H, k-1) inputs preceding u (oldest first).
        return_tail: also return the last k-1 inputs of ``cat(tail, u)`` (the next tail).

    Returns:
        y (batch, H, L), and the new tail (batch, H, k-1) if ``return_tail``.
    """
    fn = "causal_depthwise_conv"
    check_tensor(fn, "K", K, (None, None), "(H, k)")
    H, k = K.shape
    check_tensor(fn, "u", u, (None, H, None), "(batch, H, L)")
    check_optional(fn, "bias", bias, (H,), "(H,)")
    if tail is None:
        padded = F.pad(u, (k - 1, 0))
    else:
        check_tensor(fn, "tail", tail, (u.shape[0], H, k - 1), "(batch, H, k-1)")
        padded = torch.cat([tail.to(u.dtype), u], dim=-1)
    # conv1d is a cross-correlation: weight index j meets input t + j - (k-1), i.e. lag k-1-j
    y = F.conv1d(padded, K.flip(-1).unsqueeze(1).to(u.dtype), bias, groups=H)
    if return_tail:
        return y, padded[..., padded.shape[-1] - (k - 1) :]
    return y


def two_sided_depthwise_conv(u: torch.Tensor, K_fwd: torch.Tensor, K_bwd: torch.Tensor) -> torch.Tensor:
    """Non-causal depthwise convolution with S4's two-sided kernel convention:

        y[h, t] = Σ_{l=0}^{k-1} K_fwd[h, l] u[h, t-l] + Σ_{l=1}^{k-1} K_bwd[h, l-1] u[h, t+l]

    (the backward kernel starts at lag +1, so u_t is counted once; K_bwd[:, k-1] is unused).

    Args:
        u: (batch, H, L); K_fwd, K_bwd: (H, k).
    """
    fn = "two_sided_depthwise_conv"
    check_tensor(fn, "K_fwd", K_fwd, (None, None), "(H, k)")
    H, k = K_fwd.shape
    check_tensor(fn, "K_bwd", K_bwd, (H, k), "(H, k)")
    check_tensor(fn, "u", u, (None, H, None), "(batch, H, L)")
    # correlation weight over offsets -(k-1) .. +(k-1)
    weight = torch.cat([K_fwd.flip(-1), K_bwd[:, : k - 1]], dim=-1).unsqueeze(1).to(u.dtype)
    return F.conv1d(u, weight, padding=k - 1, groups=H)


# Up to this many output frames the windows are multiplied directly: ``conv1d`` has a large
# fixed cost per call, which dominates on the few frames of a streaming chunk.
SHORT_FRAMES = 32


def depthwise_conv_valid(h: torch.Tensor, weight: torch.Tensor,
                         bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Depthwise cross-correlation without padding, channels last.

    ``y[b, t, c] = bias[c] + Σ_{i<k} weight[c, 0, i] · h[b, t + i, c]``: h (B, t + k - 1, C) and
    a ``Conv1d`` weight (C, 1, k) give y (B, t, C), equal to ``conv1d(hᵀ, weight, bias,
    groups=C)ᵀ``; fewer than k frames give an empty output.
    """
    check_tensor("depthwise_conv_valid", "weight", weight, (h.shape[-1], 1, None), "(C, 1, k)")
    k = weight.size(-1)
    if h.size(1) < k:  # no complete window
        return h.new_zeros(h.size(0), 0, h.size(2))
    if h.size(1) - k + 1 > SHORT_FRAMES or torch.is_grad_enabled():
        return F.conv1d(h.transpose(1, 2), weight.to(h.dtype), bias, groups=h.size(-1)).transpose(1, 2)
    y = (h.unfold(1, k, 1) * weight[:, 0]).sum(-1)  # (B, t, C, k): frames t .. t + k - 1
    return y + bias if bias is not None else y
