"""Options shared by several encoder families, validated once, at construction.

``mh_ssm`` and ``stateformer`` both expose the multi-head SSM's knobs under the same
``encoder_conf`` names; :func:`check_mhssm_options` validates them and :func:`mhssm_options`
maps them onto :class:`espnet_ssm.layers.mh_ssm.MultiHeadSSM` arguments.
:func:`check_attention_options` does the same for the attention knobs of the families that attend.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

from espnet_ssm.encoders.config import (
    EncoderConfigError,
    check_choice,
    check_divides,
    check_positive,
    check_rate,
)
from espnet_ssm.layers.activation import ACTIVATIONS
from espnet_ssm.layers.attention import ATTENTION_TYPES
from espnet_ssm.layers.mh_ssm import GATINGS
from espnet_ssm.ops.s4d_init import S4D_INITS
from espnet_ssm.ops.s4d_kernel import DISCRETIZATIONS

# encoder_conf key -> MultiHeadSSM argument
MHSSM_KEYS = {
    "d_state": "d_state",
    "ssm_init": "ssm_init",
    "dt_min": "dt_min",
    "dt_max": "dt_max",
    "discretization": "discretization",
    "gating": "gating",
    "stack": "stack",
    "ssm_activation": "activation",
    "input_projection": "input_projection",
    "bidirectional": "bidirectional",
    "ssm_lr": "ssm_lr",
}


def check_causal_direction(owner: str, causal: bool, bidirectional: bool) -> None:
    """A causal encoder cannot hold a backward (time-reversed) SSM."""
    if causal and bidirectional:
        raise EncoderConfigError(
            f"{owner}: causal=true needs bidirectional=false (a backward SSM looks ahead)"
        )


def check_dt_range(owner: str, dt_min: float, dt_max: float) -> None:
    """The SSM step range must satisfy 0 < dt_min < dt_max."""
    if not 0.0 < dt_min < dt_max:
        raise EncoderConfigError(
            f"{owner}: dt_min={dt_min}, dt_max={dt_max} must satisfy 0 < dt_min < dt_max"
        )


def check_ssm_init(owner: str, key: str, value: str) -> None:
    """``value`` names an S4D initialisation."""
    check_choice(owner, key, value, tuple(S4D_INITS))


def check_mhssm_options(owner: str, d_model: int, heads_key: str, conf: Mapping[str, Any]) -> None:
    """Validate the multi-head SSM keys of ``conf`` (an encoder's constructor arguments)."""
    heads = conf[heads_key]
    check_divides(owner, heads_key, heads, "output_size", d_model)
    check_choice(owner, "gating", conf["gating"], GATINGS)
    if conf["gating"] == "inter_head" and heads % 2:
        raise EncoderConfigError(
            f"{owner}: gating=inter_head pairs the heads, so {heads_key}={heads} must be even"
        )
    check_ssm_init(owner, "ssm_init", conf["ssm_init"])
    check_choice(owner, "discretization", conf["discretization"], DISCRETIZATIONS)
    check_choice(owner, "ssm_activation", conf["ssm_activation"], ACTIVATIONS)
    check_positive(owner, "d_state", conf["d_state"])
    check_positive(owner, "stack", conf["stack"])
    check_dt_range(owner, conf["dt_min"], conf["dt_max"])
    check_causal_direction(owner, conf["causal"], conf["bidirectional"])


def mhssm_options(conf: Mapping[str, Any]) -> Dict[str, Any]:
    """``MultiHeadSSM`` keyword arguments from an encoder's constructor arguments."""
    return {arg: conf[key] for key, arg in MHSSM_KEYS.items()}


def check_attention_options(owner: str, d_model: int, conf: Mapping[str, Any]) -> None:
    """Validate ``attention_heads``, the attention type and its positional encoding."""
    check_divides(owner, "attention_heads", conf["attention_heads"], "output_size", d_model)
    check_rate(owner, "attention_dropout_rate", conf["attention_dropout_rate"])
    attn = conf["selfattention_layer_type"]
    check_choice(owner, "selfattention_layer_type", attn, ATTENTION_TYPES)
    pos = conf["pos_enc_layer_type"]
    if (attn == "rel_selfattn") != (pos == "rel_pos"):
        raise EncoderConfigError(
            f"{owner}: selfattention_layer_type=rel_selfattn and pos_enc_layer_type=rel_pos go "
            f"together; got {attn} with {pos}"
        )
