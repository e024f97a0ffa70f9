"""The ``encoder_conf`` options of our encoders: names, defaults and meanings, read from the code.

Every key an encoder accepts is a field of its ``Options`` dataclass
(:mod:`espnet_ssm.encoders.options`), which holds the key's default and its meaning. This module
reads them, so the option reference (``python -m espnet_ssm.bin.describe_encoder``,
``docs/encoder_options.md``) can never drift from the code, and :func:`undocumented_options` lets
a test insist that every option is explained.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, List

import yaml

from espnet_ssm.encoders.options import option_default, option_doc
from espnet_ssm.registry import our_encoders


@dataclass(frozen=True)
class EncoderOption:
    """One ``encoder_conf`` key."""

    name: str
    default: Any
    required: bool
    doc: str


def encoder_options(name: str) -> List[EncoderOption]:
    """The options of the encoder registered as ``name``, in constructor order.

    ``input_size`` is left out: ESPnet fills it in from the front-end.
    """
    encoders = our_encoders()
    if name not in encoders:
        raise KeyError(f"unknown encoder {name!r}; ours are: {', '.join(sorted(encoders))}")
    options = encoders[name].Options
    return [
        EncoderOption(f.name, option_default(f), False, option_doc(options, f.name))
        for f in dataclasses.fields(options)
    ]


def undocumented_options(name: str) -> List[str]:
    """Options of encoder ``name`` whose meaning is not documented."""
    return [o.name for o in encoder_options(name) if not o.doc]


def _yaml_value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text[:-4].strip() if text.endswith("\n...") or text.endswith(" ...") else text


def yaml_template(name: str) -> str:
    """A training-YAML ``encoder``/``encoder_conf`` block with every default and its meaning."""
    lines = [f"encoder: {name}", "encoder_conf:"]
    for opt in encoder_options(name):
        value = "<required>" if opt.required else _yaml_value(opt.default)
        comment = f"  # {opt.doc}" if opt.doc else ""
        lines.append(f"    {opt.name}: {value}{comment}")
    return "\n".join(lines) + "\n"


def markdown_reference() -> str:
    """The option reference of all our encoders as markdown (``docs/encoder_options.md``)."""
    out = [
        "# Encoder options",
        "",
        "Every key of `encoder_conf` for each encoder, with its default. Generated from the code by",
        "`python -m espnet_ssm.bin.describe_encoder --markdown > docs/encoder_options.md`;",
        "`python -m espnet_ssm.bin.describe_encoder <name>` prints the same as a YAML template.",
        "Unknown or misspelled keys are rejected when the model is built, with the closest valid key.",
        "",
    ]
    for name, cls in sorted(our_encoders().items()):
        summary = inspect.cleandoc(cls.__doc__ or "").splitlines()[0]
        out += [f"## `{name}`", "", f"`{cls.__module__}.{cls.__name__}`: {summary}", ""]
        out += ["| key | default | meaning |", "|---|---|---|"]
        for opt in encoder_options(name):
            value = "required" if opt.required else f"`{_yaml_value(opt.default)}`"
            out.append(f"| `{opt.name}` | {value} | {opt.doc.replace('|', '/')} |")
        out.append("")
    return "\n".join(out)
