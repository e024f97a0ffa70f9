"""ESPnet ASR task with our encoders registered, also in spawned worker processes.

``SSMASRTask`` is ESPnet's ``ASRTask`` with three differences:

* defining it imports :mod:`espnet_ssm`, so every process that unpickles
  ``SSMASRTask.main_worker`` (the target ESPnet's trainer spawns for ``--ngpu > 1`` with
  ``--multiprocessing_distributed true``) registers our encoders before it builds a model;
* ``build_model`` writes the resolved constructor arguments of our encoders back into
  ``args.encoder_conf``, so ``config.yaml`` records every default and a later release that changes
  a default cannot silently change the architecture of an old checkpoint;
* ``build_model_from_file`` loads weights strictly (see :mod:`espnet_ssm.loading`) and
  ``build_optimizers`` honours per-parameter optimiser hints of the SSM layers.

:func:`strict_asr_loading` makes ESPnet's ``Speech2Text`` build its model through this task.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
from espnet2.tasks.asr import ASRTask, encoder_choices

import espnet_ssm  # noqa: F401  (registers our encoders; must precede any model building)
from espnet_ssm.loading import load_state_dict_strict
from espnet_ssm.registry import our_encoders


def resolved_encoder_conf(encoder_class: type, given: Dict[str, Any]) -> Dict[str, Any]:
    """The constructor defaults of ``encoder_class`` updated with the user's ``given`` keys.

    ``input_size`` is left out: ESPnet passes it from the frontend. Values that YAML cannot hold
    (modules, classes) keep their given form only.
    """
    resolved: Dict[str, Any] = {}
    for name, p in inspect.signature(encoder_class.__init__).parameters.items():
        if name in ("self", "input_size") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is not inspect.Parameter.empty and isinstance(
            p.default, (bool, int, float, str, list, tuple, type(None))
        ):
            resolved[name] = list(p.default) if isinstance(p.default, tuple) else p.default
    resolved.update(given)
    return resolved


class SSMASRTask(ASRTask):
    """``ASRTask`` that knows our encoders in every process and loads models strictly."""

    @classmethod
    def build_model(cls, args: argparse.Namespace):
        encoder_name = getattr(args, "encoder", None)
        if encoder_name is not None and encoder_name.lower() in our_encoders():
            encoder_class = encoder_choices.get_class(encoder_name.lower())
            args.encoder_conf = resolved_encoder_conf(
                encoder_class, dict(getattr(args, "encoder_conf", None) or {})
            )
        return super().build_model(args)

    @classmethod
    def build_model_from_file(
        cls,
        config_file: Optional[Union[Path, str]] = None,
        model_file: Optional[Union[Path, str]] = None,
        device: str = "cpu",
    ) -> Tuple[torch.nn.Module, argparse.Namespace]:
        """Build from ``config.yaml`` and load ``model_file``, failing on missing or extra keys."""
        model, args = super().build_model_from_file(config_file, None, device)
        if model_file is not None:
            load_state_dict_strict(model, model_file, device=device)
        return model, args

    @classmethod
    def build_optimizers(
        cls, args: argparse.Namespace, model: torch.nn.Module
    ) -> List[torch.optim.Optimizer]:
        from espnet_ssm.ops.param_groups import HINT_ATTR, ssm_param_groups

        if not any(hasattr(p, HINT_ATTR) for p in model.parameters()):
            return super().build_optimizers(args, model)  # ESPnet's own behaviour, options and all
        if args.sharded_ddp or args.exclude_weight_decay:
            raise ValueError(
                "--sharded_ddp / --exclude_weight_decay cannot be combined with the per-parameter "
                "optimiser settings of SSM layers; the SSM layers already exclude A, dt and B "
                "from weight decay."
            )
        from espnet2.tasks.abs_task import optim_classes

        optim_class = optim_classes.get(args.optim)
        if optim_class is None:
            raise ValueError(f"--optim must be one of {list(optim_classes)}: {args.optim}")
        groups = ssm_param_groups(
            model,
            base_lr=args.optim_conf.get("lr", 1e-3),
            weight_decay=args.optim_conf.get("weight_decay", 0.0),
        )
        return [optim_class(groups, **args.optim_conf)]


@contextlib.contextmanager
def strict_asr_loading() -> Iterator[None]:
    """Within this block, ESPnet's ``Speech2Text`` builds models through ``SSMASRTask``.

    ``espnet2.bin.asr_inference.Speech2Text`` looks its task class up in its module globals;
    pointing that name at :class:`espnet_ssm.tasks.SSMASRTask` gives it our registry and strict
    loading. The original is restored on exit.
    """
    import espnet2.bin.asr_inference as espnet_asr_inference

    original = espnet_asr_inference.ASRTask
    espnet_asr_inference.ASRTask = SSMASRTask
    try:
        yield
    finally:
        espnet_asr_inference.ASRTask = original


def load_speech2text(**kwargs: Any):
    """``espnet2.bin.asr_inference.Speech2Text(**kwargs)`` built with strict loading."""
    from espnet2.bin.asr_inference import Speech2Text

    with strict_asr_loading():
        return Speech2Text(**kwargs)
