r"""A pointwise (kernel-1) ``Conv1d`` held as a ``Linear``.

A kernel-1 convolution with g groups maps each frame by the block-diagonal matrix
:math:`W = \mathrm{diag}(W_1, .., W_g)`. :class:`PointwiseLinear` keeps that dense matrix in an
``nn.Linear`` and keeps the ``Conv1d`` calling convention, channels first: (B, C_in, T) ->
(B, C_out, T). It exists so that tools that handle ``Linear`` layers, dynamic quantization above
all, reach these layers too; the outputs are those of the convolution (the zero blocks add exact
zeros).
"""
from __future__ import annotations

import torch


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
