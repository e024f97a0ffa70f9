"""Construction-time validation of encoder options.

ESPnet builds an encoder as ``cls(input_size=..., **encoder_conf)``. A misspelled key would
otherwise surface as Python's bare ``TypeError: __init__() got an unexpected keyword argument``;
:func:`unknown_keys_error` replaces that with an error that names the key, suggests the
closest valid spelling and lists every valid key. The ``check_*`` helpers give the same
treatment to values, so that an inconsistent configuration fails when the model is built, not
at its first batch.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable, List, Sequence


class EncoderConfigError(ValueError):
    """An encoder option (a key of ``encoder_conf``) is unknown or has an invalid value."""


def _suggestion(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_keys_error(
    owner: str, unknown: Sequence[str], valid: Sequence[str]
) -> EncoderConfigError:
    """The error for ``unknown`` keys: each with its closest valid spelling, then all valid keys."""
    lines = [f"'{k}'{_suggestion(k, valid)}" for k in unknown]
    return EncoderConfigError(
        f"{owner}: unknown encoder_conf key(s): {', '.join(lines)}. "
        f"Valid keys: {', '.join(sorted(valid))}"
    )


def check_choice(owner: str, key: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        hint = _suggestion(value, [str(c) for c in choices]) if isinstance(value, str) else ""
        raise EncoderConfigError(
            f"{owner}: {key}={value!r} is not valid{hint}; choose one of {list(choices)}"
        )


def check_divides(owner: str, key: str, divisor: int, dim_key: str, dim: int) -> None:
    """Raise unless ``divisor`` (a count such as heads) divides ``dim`` exactly."""
    if divisor < 1 or dim % divisor != 0:
        raise EncoderConfigError(
            f"{owner}: {key}={divisor} must be a positive divisor of {dim_key}={dim}"
        )


def check_positive(owner: str, key: str, value: int) -> None:
    """Raise unless ``value`` >= 1."""
    if value < 1:
        raise EncoderConfigError(f"{owner}: {key}={value} must be >= 1")


def check_rate(owner: str, key: str, value: float) -> None:
    """Raise unless ``0 <= value < 1`` (dropout-like rates)."""
    if not 0.0 <= value < 1.0:
        raise EncoderConfigError(f"{owner}: {key}={value} must be in [0, 1)")


def check_interctc_layers(owner: str, layer_idx: List[int], num_blocks: int) -> None:
    """InterCTC taps are 1-based block indices before the last block (ESPnet's convention)."""
    bad = [i for i in layer_idx if not 0 < i < num_blocks]
    if bad:
        raise EncoderConfigError(
            f"{owner}: interctc_layer_idx entries {bad} out of range; each must satisfy "
            f"0 < idx < num_blocks={num_blocks} (the last block is the encoder output)"
        )
    if len(set(layer_idx)) != len(layer_idx):
        raise EncoderConfigError(f"{owner}: interctc_layer_idx {layer_idx} has duplicates")
