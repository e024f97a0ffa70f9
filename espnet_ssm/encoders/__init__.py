"""The four encoder families as ESPnet ``AbsEncoder`` subclasses (registry name: class, block).

- ``mh_ssm``: :class:`MHSSMEncoder`, [multi-head SSM, feed-forward] (attention-free);
- ``stateformer``: :class:`StateformerEncoder`, macaron [FFN/2, MH-SSM, MHSA, (conv), FFN/2];
- ``speech_mamba``: :class:`SpeechMambaEncoder`, [Mamba, MHSA, Mamba];
- ``ssm_conformer``: :class:`SSMConformerEncoder`, Conformer with an S4D convolution module.

All share :class:`espnet_ssm.encoders.base.SSMEncoderBase` (ESPnet's input layers, per-utterance
output lengths, InterCTC, input checks) and reject unknown ``encoder_conf`` keys by name.
"""
from espnet_ssm.encoders.mh_ssm import MHSSMEncoder
from espnet_ssm.encoders.speech_mamba import SpeechMambaEncoder
from espnet_ssm.encoders.ssm_conformer import SSMConformerEncoder
from espnet_ssm.encoders.stateformer import StateformerEncoder

__all__ = ["MHSSMEncoder", "StateformerEncoder", "SpeechMambaEncoder", "SSMConformerEncoder"]
