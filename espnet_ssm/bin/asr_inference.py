#!/usr/bin/env python3
"""Decode with an ASR model: ``espnet2.bin.asr_inference`` with strict model loading.

Same options as ESPnet's. Models are built by :class:`espnet_ssm.tasks.SSMASRTask`, which knows
our encoders and refuses checkpoints whose parameters do not match the config. Transducer models
(``model: espnet_ssm_transducer``) decode with ESPnet's ``BeamSearchTransducer``
(``--transducer_conf``; see ``conf/decode_asr_transducer.yaml``).
``--quantize_asr_model`` / ``--quantize_lm`` use
:func:`espnet_ssm.streaming.quantization.quantize_asr_model` (pointwise convolutions quantized
with the ``Linear`` layers; ``speech_mamba`` works), see ``espnet_quantization`` there.
"""
from typing import Optional, Sequence

import espnet2.bin.asr_inference as espnet_asr_inference

from espnet_ssm.tasks import strict_asr_loading
from espnet_ssm.streaming.quantization import espnet_quantization


def get_parser():
    """ESPnet's ASR inference parser."""
    return espnet_asr_inference.get_parser()


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Run ESPnet's ASR inference with strict loading of the model file (and this package's
    dynamic quantization)."""
    with strict_asr_loading(), espnet_quantization():
        espnet_asr_inference.main(cmd)


if __name__ == "__main__":
    main()
