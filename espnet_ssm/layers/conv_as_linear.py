r"""Convolutions held as ``Linear`` layers, with the convolutions' calling conventions.

They exist so that tools that handle ``Linear`` layers, dynamic quantization above all, reach
these layers too; the outputs are those of the convolutions.

* :class:`PointwiseLinear`: a kernel-1 ``Conv1d`` with g groups maps each frame by the
  block-diagonal matrix :math:`W = \mathrm{diag}(W_1, .., W_g)`, kept dense (the zero blocks add
  exact zeros); (B, C_in, T) -> (B, C_out, T).
* :class:`PatchLinear2d`: a ``Conv2d`` (one group) is a matrix product over its input patches
  (im2col): each output position is :math:`W\,\mathrm{vec}(x_{patch}) + b` with W the
  (C_out, k_h k_w C_in) reshaped kernel; (B, C_in, H, W) -> (B, C_out, H', W'). Patches are
  gathered channels last, (k_h, k_w, C_in) with the channels innermost, so that building the
  (positions, k_h k_w C_in) matrix copies contiguous runs of channels: ``F.unfold`` gives the
  transposed layout, and making it row-major took 11 ms for the 512-channel subsampling of a
  640 ms chunk, against 0.6 ms this way.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from espnet_ssm.layers.weight_cache import WeightCache
from espnet_ssm.ops.depthwise_conv import SHORT_FRAMES


def is_pointwise(conv: torch.nn.Module) -> bool:
    """Whether ``conv`` is a kernel-1, stride-1, unpadded, undilated ``Conv1d``."""
    return (
        type(conv) is torch.nn.Conv1d
        and conv.kernel_size == (1,)
        and conv.stride == (1,)
        and conv.dilation == (1,)
        and conv.padding in ((0,), "valid")
    )


def pointwise_matrix(conv: torch.nn.Conv1d) -> torch.Tensor:
    """The (C_out, C_in) matrix of a pointwise ``Conv1d`` (block-diagonal when grouped)."""
    if not is_pointwise(conv):
        raise ValueError(f"not a pointwise convolution: {conv}")
    w = conv.weight[:, :, 0]
    if conv.groups == 1:
        return w
    return torch.block_diag(*w.chunk(conv.groups, dim=0))  # (out/g, in/g) blocks


def pointwise_frames(
    conv: torch.nn.Module, x: torch.Tensor, dense: Optional[WeightCache] = None
) -> torch.Tensor:
    """A pointwise ``Conv1d`` (or its :class:`PointwiseLinear`) on frames, channels last:
    x (B, t, C_in) -> (B, t, C_out), i.e. ``conv(xᵀ)ᵀ``.

    A grouped convolution on a few frames outside autograd is one dense ``linear`` with its
    block-diagonal matrix, kept in ``dense`` (``conv1d``'s fixed cost per call dominates on the
    frames of a streaming chunk); otherwise the grouped convolution itself runs.
    """
    if isinstance(conv, PointwiseLinear):
        return conv.linear(x)
    if conv.groups == 1:
        return F.linear(x, conv.weight[:, :, 0], conv.bias)
    if dense is None or x.size(1) > SHORT_FRAMES or torch.is_grad_enabled():
        return conv(x.transpose(1, 2)).transpose(1, 2)
    return F.linear(x, dense.get([conv.weight], lambda: pointwise_matrix(conv)), conv.bias)


class PointwiseLinear(torch.nn.Module):
    """The map of a pointwise ``Conv1d``, as a ``Linear`` over channels.

    Args:
        conv: the convolution to copy (its weights are copied, not shared).
    """

    def __init__(self, conv: torch.nn.Conv1d):
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.linear = torch.nn.Linear(conv.in_channels, conv.out_channels,
                                      bias=conv.bias is not None,
                                      device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            self.linear.weight.copy_(pointwise_matrix(conv))
            if conv.bias is not None:
                self.linear.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, T) -> (B, C_out, T), as the convolution."""
        return self.linear(x.transpose(1, 2)).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}"


class PatchLinear2d(torch.nn.Module):
    """A ``Conv2d`` (one group) computed as a ``Linear`` over its unfolded input patches.

    Args:
        conv: the convolution to copy (its weights are copied, not shared).
    """

    def __init__(self, conv: torch.nn.Conv2d):
        super().__init__()
        if type(conv) is not torch.nn.Conv2d or conv.groups != 1 or conv.padding_mode != "zeros" \
                or isinstance(conv.padding, str):
            raise ValueError(f"PatchLinear2d needs a one-group Conv2d with numeric zero padding, "
                             f"got {conv}")
        self.out_channels = conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        w = conv.weight
        self.linear = torch.nn.Linear(w[0].numel(), conv.out_channels, bias=conv.bias is not None,
                                      device=w.device, dtype=w.dtype)
        with torch.no_grad():  # (C_out, C_in, kh, kw) -> (C_out, kh kw C_in): channels innermost
            self.linear.weight.copy_(w.permute(0, 2, 3, 1).reshape(conv.out_channels, -1))
            if conv.bias is not None:
                self.linear.bias.copy_(conv.bias)

    def _out_size(self, n: int, i: int) -> int:
        k = self.dilation[i] * (self.kernel_size[i] - 1) + 1
        return (n + 2 * self.padding[i] - k) // self.stride[i] + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W'), as the convolution."""
        b = x.size(0)
        h, w = self._out_size(x.size(2), 0), self._out_size(x.size(3), 1)
        if h <= 0 or w <= 0:  # as conv2d, an input smaller than the kernel is an error
            raise ValueError(f"input {tuple(x.shape)} is smaller than the kernel "
                             f"{self.kernel_size}")
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        if any(self.padding):
            x = F.pad(x, (self.padding[1], self.padding[1], self.padding[0], self.padding[0]))
        x = x.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C_in)
        windows = x.unfold(1, dh * (kh - 1) + 1, sh).unfold(2, dw * (kw - 1) + 1, sw)
        windows = windows[..., ::dh, ::dw]  # (B, H', W', C_in, kh, kw)
        patches = windows.permute(0, 1, 2, 4, 5, 3).reshape(b, h * w, -1)
        y = self.linear(patches)  # (B, H' W', C_out)
        return y.view(b, h, w, self.out_channels).permute(0, 3, 1, 2)  # channels-last memory

    def extra_repr(self) -> str:
        return (f"{self.linear.in_features}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
