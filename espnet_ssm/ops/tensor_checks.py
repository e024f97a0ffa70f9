"""Argument checks shared by the ops: every message names the function, the argument and the
expected shape, so a wrong call fails at its source instead of deep inside a broadcast."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

Dim = Union[int, None]  # None: any size


def check_tensor(
    fn: str,
    name: str,
    x: object,
    shape: Sequence[Dim],
    spec: str,
    complex_ok: bool = False,
) -> torch.Tensor:
    """Check that ``x`` is a floating (or, if allowed, complex) tensor of the given shape.

    Args:
        fn: name of the public function, used in the message.
        name: argument name, used in the message.
        x: the value to check.
        shape: expected sizes; ``None`` matches any size.
        spec: the expected shape in words, e.g. ``"(batch, d, L)"``.
        complex_ok: accept complex dtypes too.

    Raises:
        ValueError: wrong type, dtype, number of dimensions or size.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{fn}: {name} must be a tensor of shape {spec}, got {type(x).__name__}")
    if not (x.is_floating_point() or (complex_ok and x.is_complex())):
        kinds = "floating or complex" if complex_ok else "floating"
        raise ValueError(f"{fn}: {name} must have a {kinds} dtype, got {x.dtype}")
    ok = x.dim() == len(shape) and all(e is None or e == s for e, s in zip(shape, x.shape))
    if not ok:
        want = tuple("?" if e is None else e for e in shape)
        raise ValueError(
            f"{fn}: {name} must have shape {spec} = {want}, got {tuple(x.shape)}".replace("'", "")
        )
    return x


def check_optional(
    fn: str, name: str, x: Optional[torch.Tensor], shape: Sequence[Dim], spec: str
) -> Optional[torch.Tensor]:
    """:func:`check_tensor` for an optional argument (``None`` passes)."""
    return None if x is None else check_tensor(fn, name, x, shape, spec)


def check_choice(fn: str, name: str, value: str, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{fn}: {name} must be one of {list(choices)}, got {value!r}")
    return value


def check_frames(fn: str, x: object, dim: int, size: int, name: str) -> None:
    """Layer inputs: (B, L, size) when ``dim`` is 3, one frame (B, size) when 2."""
    if not isinstance(x, torch.Tensor) or x.dim() != dim or x.shape[-1] != size:
        want = f"(B, L, {name})" if dim == 3 else f"(B, {name})"
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{fn}: x must have shape {want} with {name} = d_model = {size}, got {got}")


def check_stable(fn: str, A: torch.Tensor) -> None:
    """Reject state matrices with a positive real part: they grow without bound (Inf kernels)."""
    re = A.real if A.is_complex() else A
    if bool((re > 0).any()):
        raise ValueError(
            f"{fn}: A must have non-positive real parts (stable dynamics); "
            f"got max Re(A) = {float(re.max()):.4g}"
        )
