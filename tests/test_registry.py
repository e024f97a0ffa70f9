"""Registration of our encoders in ESPnet's registries."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from typing import Dict, Optional

import pytest
import torch

import espnet_ssm
from espnet_ssm.registry import ENCODER_REGISTRIES, RegistryCollisionError, register_encoders

NAMES = ("mh_ssm", "stateformer", "speech_mamba", "ssm_conformer")


def _run_fresh(code: str, stdin: bytes = b"", env: Optional[Dict[str, str]] = None) -> str:
    """Run ``code`` in a fresh interpreter and return its stdout (fails the test on error)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        input=stdin, capture_output=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return proc.stdout.decode()


def test_names_resolve_in_fresh_interpreter_after_import_only():
    out = _run_fresh(
        f"""
        import espnet_ssm
        import importlib
        for module, attr in {list(ENCODER_REGISTRIES)!r}:
            choices = getattr(importlib.import_module(module), attr)
            for name in {list(NAMES)!r}:
                cls = choices.get_class(name)
                print("REG", module, name, cls.__module__ + "." + cls.__name__)
        """
    )
    lines = [l for l in out.splitlines() if l.startswith("REG ")]  # ESPnet prints to stdout too
    assert len(lines) == len(ENCODER_REGISTRIES) * len(NAMES)
    for line in lines:
        _, module, name, qualname = line.split()
        assert qualname.startswith("espnet_ssm.encoders."), line


def test_spawned_worker_target_registers_on_unpickling():
    """ESPnet's multi-GPU training spawns ``cls.main_worker``; the child only unpickles it."""
    from espnet_ssm.tasks import SSMASRTask

    payload = pickle.dumps(SSMASRTask.main_worker)
    out = _run_fresh(
        """
        import pickle, sys
        import espnet2.tasks.asr as asr
        before = set(asr.encoder_choices.classes)
        target = pickle.loads(sys.stdin.buffer.read())   # what a spawned child does first
        after = set(asr.encoder_choices.classes)
        print(sorted(after - before), target.__qualname__)
        """,
        stdin=payload,
        # without the start-up hook, which would register as soon as espnet2.tasks.asr is imported
        env=dict(os.environ, ESPNET_SSM_AUTOREGISTER="0"),
    )
    for name in NAMES:
        assert f"'{name}'" in out
    assert "main_worker" in out


def test_registration_is_idempotent():
    import espnet2.tasks.asr as asr

    snapshot = dict(asr.encoder_choices.classes)
    assert register_encoders(espnet_ssm.our_encoders()) == []  # already present: nothing added
    assert asr.encoder_choices.classes == snapshot


def test_collision_with_espnet_name_names_both_classes():
    from espnet2.asr.encoder.abs_encoder import AbsEncoder

    class Impostor(AbsEncoder):
        def output_size(self) -> int:
            return 1

        def forward(self, xs_pad, ilens, prev_states=None):
            return xs_pad, ilens, None

    with pytest.raises(RegistryCollisionError) as err:
        register_encoders({"conformer": Impostor})
    msg = str(err.value)
    assert "Impostor" in msg and "ConformerEncoder" in msg and "'conformer'" in msg


def test_rejects_non_encoder_and_bad_names():
    with pytest.raises(TypeError, match="AbsEncoder"):
        register_encoders({"my_linear": torch.nn.Linear})
    cls = espnet_ssm.our_encoders()["mh_ssm"]
    with pytest.raises(ValueError, match="lower-case"):
        register_encoders({"MH_SSM": cls})
    with pytest.raises(ValueError, match="none"):
        register_encoders({"none": cls})


def test_unknown_encoder_message_lists_our_names():
    import espnet2.tasks.asr as asr

    with pytest.raises(ValueError) as err:
        asr.encoder_choices.get_class("mh_sm")
    for name in NAMES:
        assert name in str(err.value)


def test_every_registered_class_is_an_abs_encoder():
    from espnet2.asr.encoder.abs_encoder import AbsEncoder

    encoders = espnet_ssm.our_encoders()
    assert sorted(encoders) == sorted(NAMES)
    for cls in encoders.values():
        assert issubclass(cls, AbsEncoder)
