"""Streaming speech recognition: audio chunks in, partial and final transcripts out.

:class:`StreamingSpeech2Text` runs a causal encoder chunk by chunk with carried state::

    import espnet_ssm  # noqa: F401 (registers the encoders)
    from espnet_ssm.streaming import StreamingSpeech2Text

    s2t = StreamingSpeech2Text("exp/asr/config.yaml", "exp/asr/valid.acc.ave.pth")
    for chunk in microphone_chunks():          # float32 samples in [-1, 1] at s2t.sample_rate
        partial = s2t(chunk)                   # best hypothesis so far
    final = s2t(last_chunk, is_final=True)     # n-best list; the object is ready for a new stream
    print(final[0].text, [(w.word, w.start, w.end) for w in final[0].words])

Each call: the streaming front-end turns the new samples into the feature frames they complete
(:class:`~espnet_ssm.streaming.frontend.StreamingFrontend`), the encoder's ``forward_chunk``
turns those into the encoder frames they complete (subsampling buffers, SSM states, convolution
tails and attention caches are carried in its state), and the CTC search consumes them. The
result equals decoding the whole utterance offline with the same model.

Every encoder family of this package streams when built with ``causal: true`` (``mh_ssm``,
``stateformer``, ``ssm_conformer``, ``speech_mamba``); others raise
:class:`StreamingNotSupported` here, naming the part that looks ahead, and can still use
long-form recognition.
"""
from __future__ import annotations

import logging
from typing import List, Optional

import torch

from espnet_ssm.encoders.chunk_capture import use_captured_chunks
from espnet_ssm.streaming.decoding import AttentionRescorer, Recognition, is_transducer
from espnet_ssm.layers.streaming import StreamingNotSupported, check_streamable
from espnet_ssm.streaming.frontend import StreamingFrontend, check_waveform
from espnet_ssm.streaming.recognizer import (  # noqa: F401  (re-exported)
    Recognizer,
    PathLike,
    empty_recognition,
    load_asr_model,
    prepare_model,
)


class StreamingSpeech2Text(Recognizer):
    """Chunk-by-chunk recognition with a causal encoder.

    Args:
        asr_train_config: the model's ``config.yaml`` (or pass ``asr_model``).
        asr_model_file: its weights (loaded strictly).
        ctc_weight: 1.0 = CTC only; < 1 rescores the final n-best with the attention decoder
            (``ctc_weight * ctc + (1 - ctc_weight) * attention``). Transducer models are
            decoded by their transducer search (``beam_size``, ``transducer_conf``).
        captured_chunks: replay the encoder blocks' chunk step from a trace of their own code
            once the chunk and state shapes repeat
            (:func:`~espnet_ssm.encoders.chunk_capture.use_captured_chunks`): the same
            operations without Python's cost per operation, about twice as fast at 160 ms; the
            first repeated shape is traced once (about a second for a paper-size model).
        **options: the model and search options of
            :class:`~espnet_ssm.streaming.recognizer.Recognizer` (``asr_model``,
            ``token_type``, ``bpemodel``, ``beam_size``, ``nbest``, ``length_bonus``,
            ``token_beam``, ``device``, and ESPnet's dynamic quantization options
            ``quantize_asr_model``, ``quantize_modules``, ``quantize_dtype``).
    """

    def __init__(
        self,
        asr_train_config: Optional[PathLike] = None,
        asr_model_file: Optional[PathLike] = None,
        ctc_weight: float = 1.0,
        captured_chunks: bool = True,
        **options,
    ):
        super().__init__(asr_train_config, asr_model_file, **options)
        asr_model = self.asr_model
        if not hasattr(asr_model.encoder, "forward_chunk"):
            raise StreamingNotSupported(
                f"{type(asr_model.encoder).__name__} is not one of this package's encoders "
                "(no forward_chunk); long-form recognition works with any encoder"
            )
        check_streamable(asr_model.encoder)
        use_captured_chunks(asr_model.encoder, captured_chunks)
        self.frontend = StreamingFrontend(asr_model.frontend, asr_model.normalize)
        self.rescorer = None
        if ctc_weight < 1.0 and is_transducer(asr_model):
            raise ValueError(f"ctc_weight={ctc_weight}: a transducer model is decoded by its "
                             "transducer search alone (leave ctc_weight at 1)")
        if ctc_weight < 1.0:
            if asr_model.decoder is None:
                raise ValueError("ctc_weight < 1 needs the model's attention decoder; it has none")
            self.rescorer = AttentionRescorer(asr_model.decoder, asr_model.sos, asr_model.eos,
                                              ctc_weight)
        self.reset()

    def reset(self) -> None:
        """Drop the current stream."""
        self.frontend.reset()
        self._encoder_state = None
        self.search.reset()
        self._enc_chunks: List[torch.Tensor] = []
        self.encoder_frames = 0

    @torch.inference_mode()
    def __call__(
        self, speech: torch.Tensor, is_final: bool = False, fs: Optional[int] = None,
        partial: bool = True,
    ) -> List[Recognition]:
        """Feed a chunk of samples (n,); return the current best (n-best at the end).

        Args:
            speech: mono float samples in [-1, 1] (may be empty).
            is_final: this chunk ends the stream (the final frames are flushed, the n-best
                list returned and the state reset).
            fs: sampling rate of ``speech``; if given it must equal :attr:`sample_rate`
                (resample whole recordings beforehand; chunk-wise resampling is not exact).
            partial: before the final chunk, build the current best hypothesis (with greedy
                search finished words are converted once, so a call costs about 4 ms after an
                hour of speech, mostly list copies; beam hypotheses are rebuilt); False returns
                an empty list instead, for callers that only want the final result.
        """
        if fs is not None and int(fs) != self.sample_rate:
            raise ValueError(
                f"audio at {fs} Hz given to a model trained at {self.sample_rate} Hz: resample "
                "it first (e.g. torchaudio.functional.resample on the whole recording)"
            )
        speech = check_waveform(speech)
        feats = self.frontend(speech, is_final=is_final).to(self.device)
        enc, self._encoder_state = self.asr_model.encoder.forward_chunk(
            feats[None], self._encoder_state, is_final=is_final, ctc=self.asr_model.ctc
        )
        enc = enc[0]  # (t', d)
        if enc.size(0):
            self.encoder_frames += enc.size(0)
            self.consume(enc)
            if self.rescorer is not None:
                self._enc_chunks.append(enc)
        if not is_final:
            return self.search.results(self.text, self.frame_seconds)[:1] if partial else []
        if self.encoder_frames == 0:
            logging.warning(
                "the stream (%d samples) is too short for one encoder frame: empty result",
                self.frontend.samples_received,
            )
            results = [empty_recognition()]
        else:
            enc_all = torch.cat(self._enc_chunks)[None] if self._enc_chunks else None
            results = self.search.results(self.text, self.frame_seconds, self.rescorer, enc_all)
        self.reset()
        return results

    def recognize(self, speech: torch.Tensor, chunk_samples: int = 0) -> List[Recognition]:
        """Recognise a whole recording, fed in chunks of ``chunk_samples`` (0: in one call)."""
        speech = check_waveform(speech, "speech")
        self.reset()
        if chunk_samples <= 0 or chunk_samples >= speech.numel():
            return self(speech, is_final=True)
        n = speech.numel()
        for start in range(0, n - chunk_samples, chunk_samples):
            self(speech[start : start + chunk_samples], partial=False)
        last = ((n - 1) // chunk_samples) * chunk_samples
        return self(speech[last:], is_final=True)
