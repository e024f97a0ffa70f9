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


@pytest.mark.parametrize("name", NAMES)
def test_registered_class_keeps_espnet_encoder_contract(name):
    """What ESPnet's registry hands out for our name encodes like ESPnet's ConformerEncoder:
    ``(out, olens, None)``, out (B, T', output_size()) zero past each length, and the same
    output lengths (conv2d subsampling) as ESPnet gives each utterance on its own."""
    import espnet2.tasks.asr as asr
    from espnet2.asr.encoder.conformer_encoder import ConformerEncoder

    small = {} if name == "speech_mamba" else dict(linear_units=32)
    enc = asr.encoder_choices.get_class(name)(input_size=20, output_size=16, num_blocks=1,
                                              **small).eval()
    ref = ConformerEncoder(input_size=20, output_size=16, num_blocks=1, linear_units=32).eval()
    ilens = torch.tensor([53, 20, 7, 38])
    xs = torch.randn(len(ilens), int(ilens.max()), 20)
    with torch.no_grad():
        out, olens, states = enc(xs, ilens)
        ref_olens = torch.cat([ref(xs[b : b + 1, :n], ilens[b : b + 1])[1]
                               for b, n in enumerate(ilens.tolist())])
    assert states is None and enc.output_size() == 16
    assert olens.tolist() == ref_olens.tolist() == [((int(n) - 1) // 2 - 1) // 2 for n in ilens]
    assert out.shape == (len(ilens), int(olens.max()), 16)
    for b, n in enumerate(olens.tolist()):
        assert not out[b, n:].any() and out[b, :n].abs().amax(dim=-1).gt(0).all()
