"""SSM kernels: S4D kernels and convolutions, the selective scan, padding helpers, init, optim groups.

Everything public is re-exported here; each sub-module holds one idea:

- :mod:`.s4d_init`: S4D-Real/Lin/Inv initialisers and banded log-uniform Δ.
- :mod:`.s4d_kernel`: discretisation (ZOH, bilinear), the convolution kernel, the recurrent step
  and chunked streaming with a carried state.
- :mod:`.s4d_short_chunk`: S4D on chunks of a few frames in closed form (streaming).
- :mod:`.fftconv`: causal and bidirectional (two-sided kernel) FFT convolutions.
- :mod:`.depthwise_conv`: direct depthwise convolutions for short kernels, with a streaming tail.
- :mod:`.selective_scan`: Mamba's selective scan (chunked closed form) and its one-frame step.
- :mod:`.padding`: linear-memory masks, zeroing and per-utterance reversal of padded batches.
- :mod:`.param_groups`: optimizer hints on parameters and the groups built from them.
"""
from espnet_ssm.ops.depthwise_conv import (
    causal_depthwise_conv,
    depthwise_conv_valid,
    two_sided_depthwise_conv,
)
from espnet_ssm.ops.fftconv import fft_bidirectional_conv, fft_causal_conv
from espnet_ssm.ops.padding import lengths_to_mask, reverse_padded, zero_padded
from espnet_ssm.ops.param_groups import set_optim_hint, ssm_param_groups
from espnet_ssm.ops.s4d_init import S4D_INITS, init_log_dt, s4d_init, s4d_inv_init, s4d_lin_init, s4d_real_init
from espnet_ssm.ops.s4d_kernel import (
    s4d_chunk,
    s4d_discretize,
    s4d_kernel,
    s4d_planar_steps,
    s4d_step,
)
from espnet_ssm.ops.s4d_short_chunk import ShortChunkTables, s4d_short_chunk, s4d_short_chunk_tables
from espnet_ssm.ops.selective_scan import selective_scan, selective_scan_step

__all__ = [
    "S4D_INITS",
    "ShortChunkTables",
    "causal_depthwise_conv",
    "depthwise_conv_valid",
    "fft_bidirectional_conv",
    "fft_causal_conv",
    "init_log_dt",
    "lengths_to_mask",
    "reverse_padded",
    "s4d_chunk",
    "s4d_discretize",
    "s4d_init",
    "s4d_inv_init",
    "s4d_kernel",
    "s4d_lin_init",
    "s4d_real_init",
    "s4d_planar_steps",
    "s4d_short_chunk",
    "s4d_short_chunk_tables",
    "s4d_step",
    "selective_scan",
    "selective_scan_step",
    "set_optim_hint",
    "ssm_param_groups",
    "two_sided_depthwise_conv",
    "zero_padded",
]
