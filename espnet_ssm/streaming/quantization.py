r"""Dynamic quantization of a model for CPU inference, with ESPnet's options.

ESPnet's ``Speech2Text`` offers ``quantize_asr_model``, ``quantize_modules`` (names of
``torch.nn`` classes, default ``["Linear"]``) and ``quantize_dtype`` (``qint8`` or ``float16``),
applied with PyTorch's ``quantize_dynamic``: weights stored as int8 (or float16), activations
quantized on the fly from each call's observed range. :func:`quantize_asr_model` does the same,
with what this package's models add:

* pointwise (kernel-1) ``Conv1d`` layers (the multi-head SSM's head projection, the SSM
  convolution module's pointwise convolutions) are linear maps per frame that
  ``quantize_dynamic`` does not handle: when ``Linear`` is quantized they are first replaced by
  their :class:`~espnet_ssm.layers.conv_as_linear.PointwiseLinear`, so they are quantized too;
* ``Conv2d`` may be named too (an addition to ESPnet's list): the one-group convolutions with
  more than one input channel (the conv2d subsampling's second and later stages, about a third
  of a paper-size model's multiply-adds per frame) are replaced by their
  :class:`~espnet_ssm.layers.conv_as_linear.PatchLinear2d` (im2col) and quantized as ``Linear``
  layers. The first stage, nine taps of the raw features, stays in float;
* ``Linear`` layers whose weight a layer reads as a matrix (the Mamba mixer's ``dt_proj``,
  whose product feeds the selective scan with its bias kept apart) stay in float.

Why it matters for streaming on a CPU: a chunk of a few frames reads every weight once, so the
matrix products are bound by memory traffic, and int8 weights are a quarter of the bytes. With
int8 the outputs are no longer equal to the float model's: activation ranges are taken per call,
so a streamed chunk and the whole utterance round differently (relative error about 1e-2).
"""
from __future__ import annotations

import contextlib
import copy
import logging
from typing import Iterable, Iterator, List, Sequence

import torch
from torch.ao.quantization.quantize import quantize_dynamic  # bound now: see espnet_quantization

from espnet_ssm.layers.conv_as_linear import PatchLinear2d, PointwiseLinear, is_pointwise
from espnet_ssm.layers.mamba import MambaMixer

DTYPES = ("qint8", "float16")
# module classes torch's dynamic quantization converts (others would be left in float silently),
# and Conv2d, through PatchLinear2d
SUPPORTED = ("Linear", "LSTM", "GRU", "LSTMCell", "GRUCell", "RNNCell", "Conv2d")
# (layer class, attribute): Linear layers whose weight the layer reads as a tensor
KEEP_FLOAT = ((MambaMixer, "dt_proj"),)


def _is_dense_pointwise(m: torch.nn.Module) -> bool:
    """A pointwise ``Conv1d`` that is not depthwise (a depthwise one is a per-channel scale)."""
    return is_pointwise(m) and (m.groups == 1 or m.in_channels // m.groups > 1)


def _is_multichannel_conv2d(m: torch.nn.Module) -> bool:
    return (type(m) is torch.nn.Conv2d and m.groups == 1 and m.in_channels > 1
            and m.padding_mode == "zeros" and not isinstance(m.padding, str))


def _replace(model: torch.nn.Module, wanted, make) -> List[torch.nn.Module]:
    """Swap every child module for which ``wanted`` holds for ``make(child)``; the new ones."""
    swaps = [(parent, name, child) for parent in model.modules()
             for name, child in parent.named_children() if wanted(child)]
    new = []
    for parent, name, child in swaps:
        new.append(make(child))
        setattr(parent, name, new[-1])
    return new


def _float_only(model: torch.nn.Module) -> Iterable[torch.nn.Module]:
    for module in model.modules():
        for cls, attr in KEEP_FLOAT:
            if isinstance(module, cls):
                yield getattr(module, attr)


def quantize_asr_model(
    model: torch.nn.Module,
    modules: Sequence[str] = ("Linear",),
    dtype: str = "qint8",
) -> torch.nn.Module:
    """A dynamically quantized copy of ``model`` (the original is left as it is).

    Args:
        model: an ESPnet ASR model (or any module) in eval mode.
        modules: ``torch.nn`` class names to quantize, as ESPnet's ``--quantize_modules``
            (plus ``Conv2d``, see the module's docstring).
        dtype: ``qint8`` or ``float16``, as ESPnet's ``--quantize_dtype``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"quantize_dtype must be one of {DTYPES}, got {dtype!r}")
    unknown = [m for m in modules if m not in SUPPORTED]
    if unknown:
        raise ValueError(f"quantize_modules: {unknown} cannot be dynamically quantized; "
                         f"choose from {list(SUPPORTED)}")
    if not modules:
        raise ValueError("quantize_modules is empty: name at least one class, e.g. Linear")
    model = copy.deepcopy(model).eval()
    targets = set()
    if "Conv2d" in modules:
        patches = _replace(model, _is_multichannel_conv2d, PatchLinear2d)
        targets |= {id(m.linear) for m in patches}
        logging.info("quantization: %d Conv2d layer(s) held as Linear over patches", len(patches))
    if "Linear" in modules:
        n = len(_replace(model, _is_dense_pointwise, PointwiseLinear))
        logging.info("quantization: %d pointwise Conv1d layer(s) held as Linear", n)
    keep = {id(m) for m in _float_only(model)}
    classes = tuple(getattr(torch.nn, m) for m in modules if m != "Conv2d")
    qconfig = (torch.ao.quantization.default_dynamic_qconfig if dtype == "qint8"
               else torch.ao.quantization.float16_dynamic_qconfig)
    # per module name, so that the float-only ones can be left out
    spec = {name: qconfig for name, m in model.named_modules()
            if (isinstance(m, classes) and id(m) not in keep) or id(m) in targets}
    return quantize_dynamic(model, qconfig_spec=spec, inplace=True)


@contextlib.contextmanager
def espnet_quantization() -> Iterator[None]:
    """Within this block, ESPnet's ``--quantize_asr_model`` / ``--quantize_lm`` go through
    :func:`quantize_asr_model`.

    ESPnet's ``Speech2Text`` calls ``torch.quantization.quantize_dynamic(model, {classes},
    dtype)`` itself. On this package's models that leaves the pointwise convolutions in float
    and breaks ``speech_mamba`` (its ``dt_proj`` weight is read as a tensor, and a quantized
    layer has none). Calls of that form are redirected here; any other call is passed on.
    """
    original = torch.quantization.quantize_dynamic

    def redirected(model, qconfig_spec=None, dtype=torch.qint8, mapping=None, inplace=False):
        classes = qconfig_spec if isinstance(qconfig_spec, (set, list, tuple)) else ()
        names = [c.__name__ for c in classes if isinstance(c, type)]
        if (not names or len(names) != len(classes) or mapping is not None or inplace
                or dtype not in (torch.qint8, torch.float16)
                or any(n not in SUPPORTED for n in names)):
            return original(model, qconfig_spec, dtype, mapping, inplace)
        return quantize_asr_model(model, names, "qint8" if dtype == torch.qint8 else "float16")

    torch.quantization.quantize_dynamic = redirected
    try:
        yield
    finally:
        torch.quantization.quantize_dynamic = original
