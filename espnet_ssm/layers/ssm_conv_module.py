r"""Conformer convolution module whose depthwise convolution is an SSM, a conv or both.

ESPnet's ``ConvolutionModule`` computes, on (B, T, d),

    pointwise conv (d -> 2d) -> GLU -> depthwise conv -> norm -> activation -> pointwise conv.

:class:`SSMConvolutionModule` keeps that structure and ESPnet's two pointwise convolutions and
replaces the temporal mixer (``depthwise_conv``), following "Augmenting conformers with
structured state-space sequence models for online speech recognition" (Shan et al., 2024):

* ``dir``: an S4D layer replaces the depthwise convolution (unlimited left context);
* ``com``: a small depthwise convolution (``pre_conv_kernel`` taps) followed by the S4D layer;
* ``rep``: the depthwise kernel *is* the S4D kernel truncated to ``rep_kernel_size`` taps,
  :math:`w_{c,l} = \mathrm{Re}\sum_n C_{c,n}\bar B_{c,n}\bar A_{c,n}^l` (finite context; plain
  convolution cost at inference);
* ``conv``: a plain depthwise convolution of ``kernel_size`` taps (the Conformer's own, but
  padding-aware and optionally causal).

Unlike ESPnet's module, padding is zeroed before the temporal mixer, so padded frames (which the
first pointwise convolution's bias makes non-zero) never leak into real frames. The paper's
"post-SSM normalisation" is ``norm``: ``layer_norm`` over channels (default: per frame,
padding- and batch-independent, causal) or ESPnet's ``batch_norm`` (its integer
``num_batches_tracked`` counter is dropped: checkpoint averaging would sum it; the momentum
update does not use it). With ``causal`` every part looks only at the past: the convolutions
pad on the left and the SSM runs forward only; otherwise the SSM is bidirectional. A causal
module streams (``forward_chunk``) through the same code, carrying its temporal mixer's state.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from espnet.nets.pytorch_backend.conformer.convolution import ConvolutionModule
from espnet.nets.pytorch_backend.transformer.layer_norm import LayerNorm

from espnet_ssm.layers.conv_as_linear import pointwise_frames
from espnet_ssm.layers.depthwise_conv import MaskedDepthwiseConv1d
from espnet_ssm.layers.s4d import S4D

SSM_MODES = ("dir", "com", "rep", "conv")
CONV_NORMS = ("layer_norm", "batch_norm")


class CounterFreeBatchNorm1d(torch.nn.BatchNorm1d):
    """``BatchNorm1d`` without the integer ``num_batches_tracked`` counter (the momentum update
    does not read it; checkpoint averaging would sum it).

    PyTorch's loader adds the counter to a state dict without version metadata (a plain dict,
    e.g. one rebuilt key by key), which strict loading would then reject as unexpected; this
    module loads such dicts as any other module does.
    """

    def __init__(self, channels: int):
        super().__init__(channels)
        self.register_buffer("num_batches_tracked", None)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        torch.nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)


class ComposedMixer(torch.nn.Module):
    """COM: a short depthwise convolution, then the SSM, both padding-aware."""

    def __init__(self, conv: MaskedDepthwiseConv1d, ssm: S4D):
        super().__init__()
        self.conv = conv
        self.ssm = ssm

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)."""
        return self.ssm(self.conv(x, mask), mask)

    def forward_chunk(self, x: torch.Tensor, state: Optional[tuple] = None) -> Tuple[torch.Tensor, tuple]:
        """A chunk (B, t, C) continuing from ``(conv tail, SSM state)`` -> (output, new state)."""
        conv_state, ssm_state = state if state is not None else (None, None)
        h, conv_state = self.conv.forward_chunk(x, conv_state)
        y, ssm_state = self.ssm.forward_chunk(h, ssm_state)
        return y, (conv_state, ssm_state)


class SSMConvolutionModule(ConvolutionModule):
    """ESPnet's Conformer convolution module with an SSM temporal mixer.

    Args:
        channels: model dimension d.
        mode: ``dir``, ``com``, ``rep`` or ``conv`` (see the module docstring).
        activation: activation module after the norm (ESPnet's Conformer: Swish).
        causal: left context only.
        d_state: S4D state size N per channel.
        ssm_init: ``s4d_real``, ``s4d_lin`` or ``s4d_inv``.
        pre_conv_kernel: taps of COM's depthwise convolution.
        rep_kernel_size: taps of REP's SSM-parameterised kernel.
        kernel_size: taps of the plain ``conv`` mode.
        norm: ``layer_norm`` or ``batch_norm``.
        dt_min, dt_max: S4D step range.
        bias: biases of the pointwise convolutions (and of COM's depthwise one).
        ssm_lr: learning rate hint for the SSM's A, Δ.
    """

    def __init__(
        self,
        channels: int,
        mode: str = "com",
        activation: Optional[torch.nn.Module] = None,
        causal: bool = False,
        d_state: int = 4,
        ssm_init: str = "s4d_real",
        pre_conv_kernel: int = 4,
        rep_kernel_size: int = 16,
        kernel_size: int = 31,
        norm: str = "layer_norm",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bias: bool = True,
        ssm_lr: Optional[float] = None,
    ):
        if mode not in SSM_MODES:
            raise ValueError(f"ssm_mode={mode!r}: choose one of {list(SSM_MODES)}")
        if norm not in CONV_NORMS:
            raise ValueError(f"conv norm={norm!r}: choose one of {list(CONV_NORMS)}")
        # ESPnet's constructor builds a 1-tap depthwise conv that is replaced right below.
        super().__init__(
            channels, 1, activation if activation is not None else torch.nn.ReLU(), bias
        )
        self.mode = mode
        self.causal = causal
        ssm_kwargs = dict(
            d_state=d_state,
            init=ssm_init,
            dt_min=dt_min,
            dt_max=dt_max,
            bidirectional=not causal,
            lr=ssm_lr,
        )
        if mode == "dir":
            self.depthwise_conv = S4D(channels, **ssm_kwargs)
        elif mode == "com":
            self.depthwise_conv = ComposedMixer(
                MaskedDepthwiseConv1d(channels, pre_conv_kernel, causal, bias),
                S4D(channels, **ssm_kwargs),
            )
        elif mode == "rep":
            self.depthwise_conv = S4D(channels, kernel_size=rep_kernel_size, **ssm_kwargs)
        else:
            self.depthwise_conv = MaskedDepthwiseConv1d(channels, kernel_size, causal, bias)
        if norm == "layer_norm":
            self.norm = LayerNorm(channels, dim=1)  # over channels of (B, C, T), per frame
        else:
            self.norm = CounterFreeBatchNorm1d(channels)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, T, d) -> (B, T, d); ``mask`` (B, T) bool, True at real frames."""
        return self._module(x, mask, lambda h: self.depthwise_conv(h, mask))

    def forward_chunk(self, x: torch.Tensor, state: Any = None) -> Tuple[torch.Tensor, Any]:
        """A chunk (B, t, d) continuing from the temporal mixer's ``state`` (None: the start)
        -> ((B, t, d), new state)."""
        new = [state]

        def mix(h: torch.Tensor) -> torch.Tensor:
            y, new[0] = self.depthwise_conv.forward_chunk(h, state)
            return y

        return self._module(x, None, mix), new[0]

    def _module(self, x: torch.Tensor, mask: Optional[torch.Tensor], mix: Callable) -> torch.Tensor:
        """pointwise -> GLU -> (zero padding) -> ``mix`` -> norm -> activation -> pointwise, on
        frames (B, T, C), channels last throughout."""
        h = F.glu(pointwise_frames(self.pointwise_conv1, x), dim=-1)
        if mask is not None:
            h = h.masked_fill(~mask[..., None], 0.0)
        h = mix(h)
        if isinstance(self.norm, torch.nn.LayerNorm):  # over channels: per frame
            h = F.layer_norm(h, self.norm.normalized_shape, self.norm.weight, self.norm.bias,
                             self.norm.eps)
        else:
            h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        return pointwise_frames(self.pointwise_conv2, self.activation(h))
