"""Registration of our encoders in ESPnet's class registries.

ESPnet chooses an encoder by name through ``ClassChoices`` objects that live at module level in
each task module (``espnet2.tasks.asr.encoder_choices`` and friends). ``ClassChoices`` checks the
type of its classes only in its constructor, keeps its keys lower-case and indexes them without
lower-casing in ``get_class``; so we check the type ourselves, register lower-case names only, and
never overwrite a name ESPnet already defines.

``espnet2.tasks.enh_s2t`` deep-copies the ASR registry when it is imported, so that copy is
registered separately; the same holds for every task module listed in :data:`ENCODER_REGISTRIES`.
Model classes (``model: <name>``) are registered the same way in :data:`MODEL_REGISTRIES`, and
decoder classes (``decoder: <name>``) in :data:`DECODER_REGISTRIES`.
"""
from __future__ import annotations

import importlib
import logging
from typing import Dict, Iterable, List, Tuple

# (task module, attribute) pairs that hold an ASR-style encoder registry.
ENCODER_REGISTRIES: Tuple[Tuple[str, str], ...] = (
    ("espnet2.tasks.asr", "encoder_choices"),
    ("espnet2.tasks.st", "encoder_choices"),
    ("espnet2.tasks.s2t", "encoder_choices"),
    ("espnet2.tasks.slu", "encoder_choices"),
    ("espnet2.tasks.enh_s2t", "asr_encoder_choices"),
)


# (task module, attribute) pairs that hold an ASR model registry (``model:`` in a config).
MODEL_REGISTRIES: Tuple[Tuple[str, str], ...] = (("espnet2.tasks.asr", "model_choices"),)

# (task module, attribute) pairs that hold an ASR attention-decoder registry (``decoder:``);
# enh_s2t deep-copies the ASR one.
DECODER_REGISTRIES: Tuple[Tuple[str, str], ...] = (
    ("espnet2.tasks.asr", "decoder_choices"),
    ("espnet2.tasks.enh_s2t", "asr_decoder_choices"),
)


class RegistryCollisionError(ValueError):
    """A name we register is already taken in an ESPnet registry by a different class."""


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _register_one(
    choices, registry_label: str, name: str, cls: type, kind: str = "encoder"
) -> bool:
    """Add ``name -> cls`` to one ``ClassChoices``; return True when it was added now."""
    existing = choices.classes.get(name)
    if existing is cls:
        return False  # idempotent: already ours
    if existing is not None:
        raise RegistryCollisionError(
            f"Cannot register {kind} '{name}' ({_qualname(cls)}) in {registry_label}: "
            f"the name is already taken by {_qualname(existing)}."
        )
    choices.classes[name] = cls
    return True


def register_encoders(
    encoders: Dict[str, type],
    registries: Iterable[Tuple[str, str]] = ENCODER_REGISTRIES,
) -> List[str]:
    """Register ``{name: encoder_class}`` in every ESPnet encoder registry that is installed.

    Args:
        encoders: lower-case registry names mapped to ``AbsEncoder`` subclasses.
        registries: ``(module, attribute)`` pairs naming ``ClassChoices`` objects.

    Returns:
        The ``"module.attribute:name"`` entries added by this call (empty when all were present).

    Raises:
        ValueError: a name is not lower-case or is reserved.
        TypeError: a class does not subclass ESPnet's ``AbsEncoder``.
        RegistryCollisionError: a name is already used by another class.
    """
    from espnet2.asr.encoder.abs_encoder import AbsEncoder

    return _register("encoder", AbsEncoder, encoders, registries)


def _register(kind: str, base: type, classes: Dict[str, type],
              registries: Iterable[Tuple[str, str]]) -> List[str]:
    """Check ``{name: class}`` (lower-case names, subclasses of ``base``), then add each to every
    installed registry of ``registries``; returns the entries added now."""
    for name, cls in classes.items():
        if name != name.lower() or name in ("none", "nil", "null"):
            raise ValueError(
                f"{kind.capitalize()} registry names must be lower-case and not none/nil/null, "
                f"got '{name}'"
            )
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(
                f"{kind.capitalize()} '{name}' ({cls!r}) must subclass {_qualname(base)}"
            )
    added: List[str] = []
    for module_name, attr in registries:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:  # an optional task whose extra dependencies are missing
            logging.debug("espnet_ssm: not registering in %s (%s)", module_name, e)
            continue
        choices = getattr(module, attr)
        label = f"{module_name}.{attr}"
        for name, cls in classes.items():
            if _register_one(choices, label, name, cls, kind):
                added.append(f"{label}:{name}")
    return added


def our_encoders() -> Dict[str, type]:
    """The encoder classes this package provides, by registry name (those that exist)."""
    found: Dict[str, type] = {}
    try:
        from espnet_ssm import encoders
    except ImportError as e:
        # Only a genuinely absent encoders package is tolerated; errors inside it propagate.
        if e.name not in ("espnet_ssm.encoders",):
            raise
        return found
    for name, cls_name in (
        ("mh_ssm", "MHSSMEncoder"),
        ("stateformer", "StateformerEncoder"),
        ("speech_mamba", "SpeechMambaEncoder"),
        ("ssm_conformer", "SSMConformerEncoder"),
    ):
        cls = getattr(encoders, cls_name, None)
        if cls is not None:
            found[name] = cls
    return found


def register_models(
    models: Dict[str, type],
    registries: Iterable[Tuple[str, str]] = MODEL_REGISTRIES,
) -> List[str]:
    """Register ``{name: model_class}`` in ESPnet's ASR model registry (``model:`` in a config).

    Same rules as :func:`register_encoders`: lower-case names only, idempotent, never replacing a
    class ESPnet (or anybody else) registered under the same name.

    Raises:
        ValueError: a name is not lower-case or is reserved.
        TypeError: a class does not subclass ESPnet's ``ESPnetASRModel``.
        RegistryCollisionError: a name is already used by another class.
    """
    # ASRTask.build_model is type-checked to return an ESPnetASRModel.
    from espnet2.asr.espnet_model import ESPnetASRModel

    return _register("model", ESPnetASRModel, models, registries)


def our_models() -> Dict[str, type]:
    """The ASR model classes this package provides, by registry name."""
    from espnet_ssm.transducer.model import MODEL_NAME, ESPnetSSMTransducerModel

    return {MODEL_NAME: ESPnetSSMTransducerModel}


def register_decoders(
    decoders: Dict[str, type],
    registries: Iterable[Tuple[str, str]] = DECODER_REGISTRIES,
) -> List[str]:
    """Register ``{name: decoder_class}`` in ESPnet's ASR decoder registries (``decoder:``).

    Same rules as :func:`register_encoders`: lower-case names only, idempotent, never replacing a
    class ESPnet (or anybody else) registered under the same name.

    Raises:
        ValueError: a name is not lower-case or is reserved.
        TypeError: a class does not subclass ESPnet's ``AbsDecoder``.
        RegistryCollisionError: a name is already used by another class.
    """
    from espnet2.asr.decoder.abs_decoder import AbsDecoder

    return _register("decoder", AbsDecoder, decoders, registries)


def our_decoders() -> Dict[str, type]:
    """The attention decoder classes this package provides, by registry name."""
    from espnet_ssm.decoders import MambaDecoder

    return {"mamba": MambaDecoder}
