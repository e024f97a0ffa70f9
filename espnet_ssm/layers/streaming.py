"""The streaming contract every chunk-capable module of this package follows.

A module that can run chunk by chunk, continuing from a carried state, has

* ``forward_chunk(x, state=None) -> (y, new_state)``: x (B, t, C) the next t frames, ``state``
  what the previous call returned (None: the start of a stream); y the t output frames (fewer
  for the input layer, which buffers frames its subsampling cannot use yet). The state type is
  the module's own and is opaque to its callers. Over a stream, the concatenated outputs equal
  ``forward`` on the concatenated input.
* ``streaming_obstacle() -> Optional[str]``: why this module (not its children) cannot stream,
  e.g. "looks ahead: bidirectional SSM"; None when it can.

:func:`streaming_obstacle` walks a model's modules and names the first part that looks ahead.
"""
from __future__ import annotations

from typing import Optional

import torch


class StreamingNotSupported(ValueError):
    """A module asked to run chunk by chunk looks ahead in time."""


def streaming_obstacle(model: torch.nn.Module) -> Optional[str]:
    """``"<module path> (<Class>): <reason>"`` for the first part of ``model`` that cannot
    stream, or None."""
    for name, module in model.named_modules():
        check = getattr(module, "streaming_obstacle", None)
        reason = check() if callable(check) else None
        if reason is not None:
            return f"{name or type(model).__name__} ({type(module).__name__}): {reason}"
    return None


def check_streamable(model: torch.nn.Module) -> None:
    """Raise :class:`StreamingNotSupported` naming the part of ``model`` that looks ahead."""
    reason = streaming_obstacle(model)
    if reason is not None:
        raise StreamingNotSupported(f"{type(model).__name__} cannot stream: {reason}")


def require_streamable(module: torch.nn.Module) -> None:
    """Raise :class:`StreamingNotSupported` when ``module`` itself cannot stream (its own
    ``streaming_obstacle``); for a module's ``forward_chunk`` to call first."""
    reason = module.streaming_obstacle()
    if reason is not None:
        raise StreamingNotSupported(f"{type(module).__name__}: {reason}")
