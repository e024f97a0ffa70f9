"""A value derived from a module's weights, kept until the weights change.

Streaming calls a layer on a few frames at a time, and values that depend only on the weights
(a discretised SSM, a kernel, a dense form of a grouped projection) would otherwise be rebuilt
on every call. A :class:`WeightCache` keeps one such value with the identity of the tensors it
came from: in-place updates (optimiser steps, ``load_state_dict``) bump a tensor's ``_version``
and a new tensor has a new storage. Inference tensors (made under ``torch.inference_mode``) have
no version counter and cannot be updated in place outside that mode, so their storage
identifies them. While autograd records, nothing is cached: the value must stay on the graph.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, Iterable, Optional, Sequence, Tuple, TypeVar

import torch

T = TypeVar("T")


def weights_key(tensors: Iterable[torch.Tensor]) -> Tuple[Tuple[int, int], ...]:
    """(storage address, version) of each tensor; version -1 for inference tensors."""
    return tuple((t.data_ptr(), -1 if t.is_inference() else t._version) for t in tensors)


class WeightCache(Generic[T]):
    """One value built from some weights; rebuilt when they change (not while autograd records).

    Copies and pickles of the owning module start empty (the copy has other weights).
    """

    def __init__(self) -> None:
        self._key: Optional[tuple] = None
        self._value: Optional[T] = None

    def get(self, weights: Sequence[Optional[torch.Tensor]], build: Callable[[], T],
            *extra: Any) -> T:
        """The value for ``weights`` (None entries skipped) and ``extra`` (e.g. dtype, device)."""
        tensors = [w for w in weights if w is not None]
        if torch.is_grad_enabled() and any(w.requires_grad for w in tensors):
            return build()
        key = (weights_key(tensors), extra)
        if key != self._key:
            with torch.no_grad():
                self._value = _detached(build())
            self._key = key
        return self._value  # type: ignore[return-value]

    def clear(self) -> None:
        """Forget the value."""
        self._key, self._value = None, None

    def __deepcopy__(self, memo: dict) -> "WeightCache[T]":
        return WeightCache()

    def __getstate__(self) -> dict:
        return {"_key": None, "_value": None}


def _detached(value: Any) -> Any:
    """``value`` with its tensors detached: a view of a parameter made under ``no_grad`` still
    reports ``requires_grad``, and a cached value must not look like part of a graph (a trace
    records cached values as constants, which may not require grad)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        items = [_detached(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [_detached(v) for v in value]
    return value
