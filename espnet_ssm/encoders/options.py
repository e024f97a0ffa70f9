"""Encoder options: one dataclass per group of ``encoder_conf`` keys, validated at construction.

ESPnet builds an encoder as ``cls(input_size=..., **encoder_conf)``. Each family declares its
keys as a dataclass that combines the groups it uses with its own keys:

* :class:`EncoderOptions`: every family (model size, front-end, dropout, InterCTC, causality);
* :class:`AttentionOptions`: the families that attend;
* :class:`FeedForwardOptions`, :class:`ConvModuleOptions`: feed-forward and Conformer
  convolution modules; :class:`ConformerOptions`: all of the above, as a Conformer has them;
* :class:`StateOptions` < :class:`S4DOptions` < :class:`MultiHeadSSMOptions`: the SSMs.

The group that introduces a key holds its type, default and meaning (a family may override the
default), and a ``check`` method validating it. :func:`parse_options` turns keyword arguments
into such a dataclass: unknown keys are named with the closest valid spelling, and values of the
wrong type or inconsistent values raise :class:`EncoderConfigError` before any layer is built.
:func:`options_signature` gives an encoder's constructor the signature of its keys, so that
tools reading constructor defaults (the ASR task writing them into ``config.yaml``) see every
key with its default; :func:`option_doc` and :func:`option_default` serve the option reference
(:mod:`espnet_ssm.encoders.reference`).
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Iterable, List, Mapping, Optional, Sequence, Type, TypeVar

from typeguard import TypeCheckError, check_type

from espnet_ssm.layers.activation import ACTIVATIONS
from espnet_ssm.layers.attention import ATTENTION_TYPES, POS_ENC_TYPES
from espnet_ssm.layers.frontend import INPUT_LAYERS
from espnet_ssm.layers.mh_ssm import GATINGS
from espnet_ssm.layers.ssm_conv_module import CONV_NORMS
from espnet_ssm.ops.s4d_init import S4D_INITS
from espnet_ssm.ops.s4d_kernel import DISCRETIZATIONS

O = TypeVar("O", bound="EncoderOptions")


# ----------------------------------------------------------------------------- checks
# A misspelled key would otherwise surface as Python's bare "TypeError: __init__() got an
# unexpected keyword argument"; the error names the key, suggests the closest valid spelling and
# lists every valid key. The check_* helpers do the same for values, so that an inconsistent
# configuration fails when the model is built, not at its first batch.
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



def option(default: Any, doc: str) -> Any:
    """A dataclass field with its meaning (``doc``) attached; lists get a fresh copy each time."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


def check_causal_direction(owner: str, causal: bool, bidirectional: bool) -> None:
    """A causal encoder cannot hold a backward (time-reversed) SSM."""
    if causal and bidirectional:
        raise EncoderConfigError(
            f"{owner}: causal=true needs bidirectional=false (a backward SSM looks ahead)"
        )


# ----------------------------------------------------------------------------- groups
@dataclass
class EncoderOptions:
    """Keys of every encoder family."""

    output_size: int = option(256, "model dimension d.")
    num_blocks: int = option(6, "number of blocks.")
    dropout_rate: float = option(
        0.1, "dropout of residual branches, feed-forward modules and the input layer."
    )
    positional_dropout_rate: float = option(0.1, "dropout inside the positional encoding.")
    input_layer: Optional[str] = option(
        "conv2d", "ESPnet subsampling: conv2d, conv2d1, conv2d2, conv2d6, conv2d8, linear or null."
    )
    pos_enc_layer_type: str = option(
        "abs_pos",
        "positional encoding: none, abs_pos, scaled_abs_pos or rel_pos (with rel_selfattn).",
    )
    causal: bool = option(
        False,
        "nothing looks ahead: causal masks, convolutions and forward-only SSMs (the "
        "subsampling keeps its finite look-ahead: conv2d's output frame j ends at input frame "
        "4j + 6).",
    )
    max_pos_emb_len: int = option(5000, "initial positional table length (grown on demand).")
    interctc_layer_idx: List[int] = option([], "1-based blocks feeding intermediate CTC losses.")
    interctc_use_conditioning: bool = option(
        False, "self-conditioned CTC (needs the model's CTC module)."
    )

    def check(self, owner: str) -> None:
        check_positive(owner, "output_size", self.output_size)
        check_positive(owner, "num_blocks", self.num_blocks)
        check_choice(owner, "input_layer", self.input_layer, INPUT_LAYERS)
        check_choice(owner, "pos_enc_layer_type", self.pos_enc_layer_type, POS_ENC_TYPES)
        check_rate(owner, "dropout_rate", self.dropout_rate)
        check_rate(owner, "positional_dropout_rate", self.positional_dropout_rate)
        check_interctc_layers(owner, list(self.interctc_layer_idx), self.num_blocks)


@dataclass
class AttentionOptions:
    """Self-attention keys (combined with :class:`EncoderOptions`)."""

    attention_heads: int = option(4, "self-attention heads (divide output_size).")
    attention_dropout_rate: float = option(0.0, "attention-weight dropout.")
    selfattention_layer_type: str = option(
        "rel_selfattn", "rel_selfattn (with rel_pos) or selfattn."
    )
    attention_left_context: int = option(
        -1, "frames of past each query may attend with causal=true (-1: unlimited)."
    )

    def check(self, owner: str) -> None:
        heads = self.attention_heads
        check_divides(owner, "attention_heads", heads, "output_size", self.output_size)
        check_rate(owner, "attention_dropout_rate", self.attention_dropout_rate)
        attn, pos = self.selfattention_layer_type, self.pos_enc_layer_type
        check_choice(owner, "selfattention_layer_type", attn, ATTENTION_TYPES)
        if (attn == "rel_selfattn") != (pos == "rel_pos"):
            raise EncoderConfigError(
                f"{owner}: selfattention_layer_type=rel_selfattn and pos_enc_layer_type=rel_pos "
                f"go together; got {attn} with {pos}"
            )
        if self.attention_left_context < -1:
            raise EncoderConfigError(
                f"{owner}: attention_left_context={self.attention_left_context} must be -1 "
                "(unlimited) or >= 0"
            )


@dataclass
class FeedForwardOptions:
    """Position-wise feed-forward keys."""

    linear_units: int = option(1024, "hidden units of each feed-forward module.")
    activation_type: str = option(
        "swish", "activation of the feed-forward (and convolution) modules."
    )

    def check(self, owner: str) -> None:
        check_positive(owner, "linear_units", self.linear_units)
        check_choice(owner, "activation_type", self.activation_type, ACTIVATIONS)


@dataclass
class ConvModuleOptions(FeedForwardOptions):
    """Conformer-style block keys: macaron feed-forward and the convolution module."""

    macaron_style: bool = option(
        True, "two half-step feed-forward modules (else one, after the mixers)."
    )
    cnn_module_kernel: int = option(31, "taps of the plain depthwise convolution module.")
    conv_norm: str = option(
        "layer_norm", "normalisation after the convolution module's temporal mixer "
        "(layer_norm or batch_norm)."
    )

    def check(self, owner: str) -> None:
        check_positive(owner, "cnn_module_kernel", self.cnn_module_kernel)
        check_choice(owner, "conv_norm", self.conv_norm, CONV_NORMS)


@dataclass
class ConformerOptions(ConvModuleOptions, AttentionOptions, EncoderOptions):
    """Keys of a Conformer-style encoder (relative-position attention by default)."""

    pos_enc_layer_type: str = "rel_pos"


@dataclass
class StateOptions:
    """Keys of every SSM: state size and the range of the step Δ."""

    d_state: int = option(16, "SSM state size N per channel.")
    dt_min: float = option(1e-3, "smallest initial SSM step Δ.")
    dt_max: float = option(1e-1, "largest initial SSM step Δ.")

    def check(self, owner: str) -> None:
        check_positive(owner, "d_state", self.d_state)
        if not 0.0 < self.dt_min < self.dt_max:
            raise EncoderConfigError(
                f"{owner}: dt_min={self.dt_min}, dt_max={self.dt_max} must satisfy "
                "0 < dt_min < dt_max"
            )


@dataclass
class S4DOptions(StateOptions):
    """S4D keys: initialisation and learning-rate hint."""

    ssm_init: str = option("s4d_lin", "S4D initialisation: s4d_lin, s4d_real or s4d_inv.")
    ssm_lr: Optional[float] = option(
        None, "learning-rate hint for the SSM's A and Δ (null: the optimiser's)."
    )

    def check(self, owner: str) -> None:
        check_choice(owner, "ssm_init", self.ssm_init, tuple(S4D_INITS))

    def s4d_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of the S4D-holding layers (MultiHeadSSM, SSMConvolutionModule)."""
        return dict(
            d_state=self.d_state, ssm_init=self.ssm_init, dt_min=self.dt_min,
            dt_max=self.dt_max, ssm_lr=self.ssm_lr,
        )


@dataclass
class MultiHeadSSMOptions(S4DOptions):
    """Multi-head SSM keys; the family names its head count ``heads_key``."""

    heads_key: ClassVar[str] = "num_heads"
    d_state: int = 64
    discretization: str = option("zoh", "zoh or bilinear.")
    gating: str = option("inter_head", "inter_head, glu or none.")
    stack: int = option(1, "SSM stages in series inside each head.")
    ssm_activation: str = option("gelu", "activation after each SSM stage.")
    input_projection: bool = option(True, "linear map before the SSMs.")
    bidirectional: bool = option(
        True, "forward + time-reversed SSM per head (offline; needs causal=false)."
    )

    def check(self, owner: str) -> None:
        heads = getattr(self, self.heads_key)
        check_divides(owner, self.heads_key, heads, "output_size", self.output_size)
        check_choice(owner, "gating", self.gating, GATINGS)
        if self.gating == "inter_head" and heads % 2:
            raise EncoderConfigError(
                f"{owner}: gating=inter_head pairs the heads, so {self.heads_key}={heads} "
                "must be even"
            )
        check_choice(owner, "discretization", self.discretization, DISCRETIZATIONS)
        check_choice(owner, "ssm_activation", self.ssm_activation, ACTIVATIONS)
        check_positive(owner, "stack", self.stack)
        check_causal_direction(owner, self.causal, self.bidirectional)

    def mhssm_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of :class:`espnet_ssm.layers.mh_ssm.MultiHeadSSM` but d, heads."""
        return dict(
            self.s4d_kwargs(), discretization=self.discretization, gating=self.gating,
            stack=self.stack, activation=self.ssm_activation,
            input_projection=self.input_projection, bidirectional=self.bidirectional,
        )


# ----------------------------------------------------------------------------- parsing
def parse_options(options_class: Type[O], owner: str, given: Mapping[str, Any]) -> O:
    """``options_class(**given)``, with every key, type and value checked.

    Raises:
        EncoderConfigError: an unknown key (named, with the closest valid one), a value of the
            wrong type, or an invalid value (from the groups' ``check`` methods).
    """
    fields = dataclasses.fields(options_class)
    valid = ["input_size"] + [f.name for f in fields]
    unknown = [k for k in given if k not in valid]
    if unknown:
        raise unknown_keys_error(owner, unknown, valid)
    hints = typing.get_type_hints(options_class)
    for name, value in given.items():
        try:
            check_type(value, hints[name])
        except TypeCheckError as e:
            raise EncoderConfigError(
                f'{owner}: invalid encoder_conf value: "{name}" = {value!r}: {e}'
            ) from None
    opts = options_class(**given)
    # every group's own check, the common groups first
    for klass in reversed(options_class.__mro__):
        check = vars(klass).get("check")
        if check is not None:
            check(opts, owner)
    return opts


def option_doc(options_class: type, name: str) -> str:
    """The meaning of key ``name``: from the most derived group that documents it."""
    for klass in options_class.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and "doc" in f.metadata:
            return f.metadata["doc"]
    return ""


def option_default(f: dataclasses.Field) -> Any:
    """The default of an options field (a fresh list for list defaults)."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def options_signature(options_class: type) -> inspect.Signature:
    """``(self, input_size: int, *, <key>: <type> = <default>, ...)`` of an encoder."""
    P = inspect.Parameter
    params = [
        P("self", P.POSITIONAL_OR_KEYWORD),
        P("input_size", P.POSITIONAL_OR_KEYWORD, annotation=int),
    ]
    params += [
        P(f.name, P.KEYWORD_ONLY, default=option_default(f), annotation=f.type)
        for f in dataclasses.fields(options_class)
    ]
    return inspect.Signature(params)
