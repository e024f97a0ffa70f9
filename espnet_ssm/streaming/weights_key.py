"""Identity of a set of weights, to know when a cache built from them is stale.

In-place updates (optimiser steps, ``load_state_dict``) bump a tensor's ``_version``; a new
tensor has a new storage. Inference tensors (made under ``torch.inference_mode``) have no version
counter, and cannot be updated in place outside that mode, so their storage identifies them.
"""
from __future__ import annotations

from typing import Iterable, Tuple

import torch


def weights_key(tensors: Iterable[torch.Tensor]) -> Tuple[Tuple[int, int], ...]:
    """(storage address, version) of each tensor; version -1 for inference tensors."""
    return tuple((t.data_ptr(), -1 if t.is_inference() else t._version) for t in tensors)
