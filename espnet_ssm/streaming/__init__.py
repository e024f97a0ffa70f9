"""Streaming recognition with carried state, and single-pass long-form recognition.

* :class:`StreamingSpeech2Text`: ``s2t(chunk, is_final=False)`` with a causal encoder; results
  equal offline decoding of the whole utterance.
* :class:`LongFormSpeech2Text`: one pass over a recording of an hour or more, memory linear in
  its length, word time stamps from the CTC path.
* Building blocks: :class:`StreamingFrontend` (chunked STFT/log-mel/MVN equal to ESPnet's),
  :class:`StreamingCTCGreedy`, :class:`StreamingCTCPrefixBeamSearch`.
"""
from espnet_ssm.streaming.ctc_greedy import StreamingCTCGreedy, TokenSpan
from espnet_ssm.streaming.ctc_prefix_beam import StreamingCTCPrefixBeamSearch
from espnet_ssm.streaming.decoding import Recognition
from espnet_ssm.layers.streaming import StreamingNotSupported
from espnet_ssm.streaming.frontend import StreamingFrontend, extract_features
from espnet_ssm.streaming.longform import LongFormSpeech2Text
from espnet_ssm.streaming.speech2text import StreamingSpeech2Text
from espnet_ssm.streaming.text import WordStamp

__all__ = [
    "LongFormSpeech2Text",
    "Recognition",
    "StreamingCTCGreedy",
    "StreamingCTCPrefixBeamSearch",
    "StreamingFrontend",
    "StreamingNotSupported",
    "StreamingSpeech2Text",
    "TokenSpan",
    "WordStamp",
    "extract_features",
]
