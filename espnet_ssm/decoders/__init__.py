"""Attention decoders for ESPnet's ASR task (``decoder: <name>`` in a training YAML).

* :class:`MambaDecoder` (``mamba``): N x [Mamba -> cross-attention -> Mamba], the released
  Speech-Mamba's decoder, with incremental (state-carrying) beam-search scoring.
"""
from espnet_ssm.decoders.mamba_decoder import MambaDecoder

__all__ = ["MambaDecoder"]
