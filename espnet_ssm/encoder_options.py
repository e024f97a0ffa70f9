"""The ``encoder_conf`` options of our encoders: names, defaults and meanings, read from the code.

Every option an encoder accepts is a keyword argument of its constructor, documented in the
``Args:`` section of its class docstring (one ``name: meaning`` entry, or several names sharing one
entry as ``a, b: meaning``). This module reads both, so the option reference
(``python -m espnet_ssm.bin.describe_encoder``, ``docs/encoder_options.md``) can never drift from
the code, and :func:`undocumented_options` lets a test insist that every option is explained.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import yaml

from espnet_ssm.registry import our_encoders

_ENTRY = re.compile(r"^(\s*)([A-Za-z_][\w]*(?:,\s*[A-Za-z_][\w]*)*,?):\s*(.*)$")
_SEE_ALSO = re.compile(r"\(see ``(\w+)``\)")


@dataclass(frozen=True)
class EncoderOption:
    """One ``encoder_conf`` key."""

    name: str
    default: Any
    required: bool
    doc: str


def _args_section(docstring: str) -> Dict[str, str]:
    """``{name: meaning}`` from a Google-style ``Args:`` section.

    An entry starts at the section's indentation; deeper lines continue it, and so does a line
    at the same indentation when the entry so far is a comma-ended list of names.
    """
    lines = inspect.cleandoc(docstring or "").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:") + 1
    except StopIteration:
        return {}
    entries: List[str] = []
    indent0: Optional[int] = None
    for line in lines[start:]:
        if not line.strip():
            break
        indent = len(line) - len(line.lstrip())
        if indent0 is None:
            indent0 = indent
        if indent < indent0:
            break
        open_list = bool(entries) and ":" not in entries[-1] and entries[-1].endswith(",")
        if indent == indent0 and not open_list:
            entries.append(line.strip())
        elif entries:
            entries[-1] = f"{entries[-1]} {line.strip()}"
    docs: Dict[str, str] = {}
    for entry in entries:
        match = _ENTRY.match(entry)
        if match:
            for name in (n.strip() for n in match.group(2).split(",")):
                if name:
                    docs[name] = match.group(3).strip()
    return docs


def encoder_options(name: str) -> List[EncoderOption]:
    """The options of the encoder registered as ``name``, in constructor order.

    ``input_size`` is left out: ESPnet fills it in from the front-end.
    """
    encoders = our_encoders()
    if name not in encoders:
        raise KeyError(f"unknown encoder {name!r}; ours are: {', '.join(sorted(encoders))}")
    cls = encoders[name]
    docs = _args_section(cls.__doc__ or "")
    options = []
    for pname, param in inspect.signature(cls.__init__).parameters.items():
        if pname in ("self", "input_size") or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        required = param.default is inspect.Parameter.empty
        default = None if required else param.default
        if isinstance(default, tuple):
            default = list(default)
        doc = docs.get(pname, "")
        see = _SEE_ALSO.search(doc)
        if see and see.group(1) != name and see.group(1) in encoders:
            shared = _args_section(encoders[see.group(1)].__doc__ or "").get(pname)
            doc = shared or doc
        options.append(EncoderOption(pname, default, required, doc))
    return options


def undocumented_options(name: str) -> List[str]:
    """Options of encoder ``name`` that its docstring does not explain."""
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
