"""Padding helpers for padded batches of utterances (batch, L, ...).

Masks are True at valid frames and are built in O(batch·L) memory: ESPnet's ``make_pad_mask``
takes an O(L²) path for 1-D lengths, which long-form inputs cannot afford.
"""
from __future__ import annotations

from typing import Optional

import torch


def _check_lengths(fn: str, lengths: torch.Tensor) -> None:
    if not isinstance(lengths, torch.Tensor) or lengths.dim() != 1:
        raise ValueError(f"{fn}: lengths must be a 1-D tensor of shape (batch,), got {lengths!r}")
    if lengths.is_floating_point() or lengths.is_complex():
        raise ValueError(f"{fn}: lengths must have an integer dtype, got {lengths.dtype}")
    if lengths.numel() and int(lengths.min()) < 0:
        raise ValueError(f"{fn}: lengths must be >= 0, got min {int(lengths.min())}")


def lengths_to_mask(lengths: torch.Tensor, max_len: Optional[int] = None) -> torch.Tensor:
    """(batch, max_len) bool mask, True at valid frames: ``arange(max_len)[None] < lengths[:, None]``.

    Args:
        lengths: (batch,) integer lengths.
        max_len: mask width; defaults to ``lengths.max()``. Must be >= every length.
    """
    fn = "lengths_to_mask"
    _check_lengths(fn, lengths)
    longest = int(lengths.max()) if lengths.numel() else 0
    if max_len is None:
        max_len = longest
    elif max_len < longest:
        raise ValueError(f"{fn}: max_len={max_len} is shorter than the longest length {longest}")
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def zero_padded(x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """x (batch, L, ...) with the frames where ``mask`` (batch, L) is False set to 0."""
    if mask is None:
        return x
    if mask.dtype != torch.bool or mask.shape != x.shape[:2]:
        raise ValueError(
            f"zero_padded: mask must be a bool tensor of shape (batch, L) = {tuple(x.shape[:2])}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    return x.masked_fill(~mask.view(mask.shape + (1,) * (x.dim() - 2)), 0)


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each utterance's real frames in time; padded frames stay where they are.

    out[b, t] = x[b, lengths[b] - 1 - t] for t < lengths[b], and x[b, t] otherwise. The map is
    its own inverse, so ``reverse_padded(f(reverse_padded(x)))`` runs f backwards in time.

    Args:
        x: (batch, L, ...).
        lengths: (batch,) integer lengths, each <= L.
    """
    fn = "reverse_padded"
    _check_lengths(fn, lengths)
    if x.dim() < 2 or lengths.shape[0] != x.shape[0]:
        raise ValueError(
            f"reverse_padded: x must have shape (batch, L, ...) with batch = len(lengths) = "
            f"{lengths.shape[0]}, got {tuple(x.shape)}"
        )
    L = x.shape[1]
    if lengths.numel() and int(lengths.max()) > L:
        raise ValueError(f"reverse_padded: lengths must be <= L={L}, got max {int(lengths.max())}")
    t = torch.arange(L, device=x.device)[None, :]
    lengths = lengths.to(x.device)[:, None]
    index = torch.where(t < lengths, lengths - 1 - t, t)  # (batch, L)
    index = index.view(index.shape + (1,) * (x.dim() - 2)).expand_as(x)
    return torch.gather(x, 1, index)
