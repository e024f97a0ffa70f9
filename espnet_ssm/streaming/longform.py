"""Single-pass recognition of long recordings (an hour or more) in memory linear in their length.

ESPnet's batch path cannot do this: ``make_pad_mask`` (used by ``LogMel``, ``GlobalMVN`` and
the encoders) allocates an O(T²) matrix for 1-D lengths, and attention encoders are O(T²)
themselves. :class:`LongFormSpeech2Text` avoids every such path:

* ``mode="stream"`` (the default for encoders that stream, unless the model normalises per
  utterance): the recording is pushed through
  :class:`~espnet_ssm.streaming.speech2text.StreamingSpeech2Text` in chunks of
  ``chunk_seconds``; memory is constant apart from the transcript.
* ``mode="offline"`` (any other encoder): features are computed in chunks
  (:func:`~espnet_ssm.streaming.frontend.extract_features`), the encoder runs once on the whole
  sequence (batch 1), and the CTC head and search consume its output in slices, so the
  (T, vocabulary) posterior matrix never exists at once. This is linear for attention-free
  encoders (``mh_ssm``; our encoders build masks as ``arange(T) < length``); an encoder with
  full self-attention stays O(T²) in its attention.

The transcript comes with word time stamps from the CTC path (greedy) or the beam's emission
frames: frame j starts at ``j * subsampling * hop / fs`` seconds.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch
from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError

from espnet_ssm.layers.streaming import streaming_obstacle
from espnet_ssm.streaming.decoding import Recognition
from espnet_ssm.streaming.frontend import FeatureNormalizer, check_waveform, extract_features
from espnet_ssm.streaming.io import resample
from espnet_ssm.streaming.recognizer import Recognizer, PathLike, empty_recognition
from espnet_ssm.streaming.speech2text import StreamingSpeech2Text

MODES = ("auto", "stream", "offline")


def streams(encoder: torch.nn.Module) -> bool:
    """True when ``encoder`` can run chunk by chunk with carried state."""
    return hasattr(encoder, "forward_chunk") and streaming_obstacle(encoder) is None


class LongFormSpeech2Text(Recognizer):
    """Recognise a long recording in one pass; the result carries word time stamps.

    Args:
        asr_train_config, asr_model_file: the model (loaded strictly), or pass ``asr_model``.
        mode: ``auto`` (stream when the encoder can), ``stream`` or ``offline``.
        chunk_seconds: audio per step in ``stream`` mode; in ``offline`` mode, per front-end
            step.
        ctc_slice_frames: encoder frames per CTC step in ``offline`` mode.
        **options: the model and search options of
            :class:`~espnet_ssm.streaming.recognizer.Recognizer` (``asr_model``,
            ``token_type``, ``bpemodel``, ``beam_size``, ``length_bonus``, ``token_beam``,
            ``device``, ``quantize_asr_model``, ``quantize_modules``, ``quantize_dtype``); one
            hypothesis is returned.
    """

    def __init__(
        self,
        asr_train_config: Optional[PathLike] = None,
        asr_model_file: Optional[PathLike] = None,
        mode: str = "auto",
        chunk_seconds: float = 30.0,
        ctc_slice_frames: int = 4096,
        **options,
    ):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: choose one of {list(MODES)}")
        if chunk_seconds <= 0 or ctc_slice_frames <= 0:
            raise ValueError("chunk_seconds and ctc_slice_frames must be > 0")
        if options.get("nbest", 1) != 1:
            raise ValueError("long-form recognition returns one hypothesis (nbest=1)")
        super().__init__(asr_train_config, asr_model_file, **options)
        asr_model = self.asr_model
        if mode == "auto":  # utterance MVN needs every frame first: no streaming then
            can = streams(asr_model.encoder) and FeatureNormalizer(asr_model.normalize).streamable
            mode = "stream" if can else "offline"
        self.mode = mode
        self.chunk_samples = int(chunk_seconds * self.sample_rate)
        self.ctc_slice_frames = ctc_slice_frames
        if mode == "stream":  # the same (already quantized) model, converter and search options
            self.streamer = StreamingSpeech2Text(**dict(
                options, asr_model=asr_model, quantize_asr_model=False,
                token_type=self.text.token_type,
                bpemodel=self.text.bpemodel))

    @torch.inference_mode()
    def __call__(self, speech: torch.Tensor, fs: Optional[int] = None) -> Recognition:
        """Recognise ``speech`` (n,) recorded at ``fs`` Hz (default: the model's rate)."""
        speech = check_waveform(speech, "speech")
        speech = resample(speech, fs or self.sample_rate, self.sample_rate)
        if self.mode == "stream":
            return self.streamer.recognize(speech, self.chunk_samples)[0]
        return self._offline(speech)

    def _offline(self, speech: torch.Tensor) -> Recognition:
        model = self.asr_model
        feats = extract_features(model.frontend, model.normalize, speech, self.chunk_samples)
        if feats.size(0) == 0:
            return empty_recognition()
        feats = feats.to(self.device)
        try:
            # our input layers convolve long inputs window by window: memory stays linear
            enc, enc_lens, _ = model.encoder(
                feats[None], torch.tensor([feats.size(0)], device=self.device)
            )
        except TooShortUttError as e:
            logging.warning("too short for the encoder: %s; empty result", e)
            return empty_recognition()
        if isinstance(enc, tuple):  # intermediate CTC outputs: keep the final one
            enc = enc[0]
        enc = enc[0, : int(enc_lens[0])]
        self.search.reset()
        for start in range(0, enc.size(0), self.ctc_slice_frames):
            piece = enc[start : start + self.ctc_slice_frames]
            self.consume(piece)
        return self.search.results(self.text, self.frame_seconds)[0]
