"""RNN-Transducer training for any ESPnet encoder, with ``torchaudio.functional.rnnt_loss``.

``model: espnet_ssm_transducer`` with ``decoder: transducer`` and ``joint_net_conf`` in a training
config selects :class:`ESPnetSSMTransducerModel`; decoding goes through ESPnet's ``Speech2Text``
(``BeamSearchTransducer``, options in ``transducer_conf``).
"""
from espnet_ssm.transducer.loss import (
    TransducerInputError,
    check_transducer_inputs,
    joint_rnnt_loss,
    plan_slices,
    rnnt_loss,
)
from espnet_ssm.transducer.model import MODEL_NAME, ESPnetSSMTransducerModel

__all__ = [
    "MODEL_NAME",
    "ESPnetSSMTransducerModel",
    "TransducerInputError",
    "check_transducer_inputs",
    "joint_rnnt_loss",
    "plan_slices",
    "rnnt_loss",
]
