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

Only causal encoders stream (``ssm_conformer`` and ``mh_ssm`` trained with ``causal: true``);
others raise :class:`StreamingNotSupported` here and can still use long-form recognition.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Tuple, Union

import torch

from espnet_ssm.streaming.decoding import (
    AttentionRescorer,
    CTCSearch,
    Recognition,
    subsampling_factor,
)
from espnet_ssm.streaming.encoder import EncoderStream, check_streamable
from espnet_ssm.streaming.frontend import StreamingFrontend, check_waveform
from espnet_ssm.streaming.text import TokenText

PathLike = Union[str, Path]


def load_asr_model(
    asr_train_config: PathLike, asr_model_file: Optional[PathLike], device: str = "cpu"
):
    """Build the model from its config and load its weights strictly; returns (model, args)."""
    from espnet_ssm.tasks import SSMASRTask

    model, args = SSMASRTask.build_model_from_file(asr_train_config, asr_model_file, device)
    model.eval()
    return model, args


def prepare_model(
    asr_train_config: Optional[PathLike],
    asr_model_file: Optional[PathLike],
    asr_model: Optional[torch.nn.Module],
    token_type: Optional[str],
    bpemodel: Optional[str],
    device: str,
) -> Tuple[torch.nn.Module, TokenText]:
    """The model (loaded from files unless given) in eval mode on ``device``, and its text
    converter (token type and sentencepiece model default to the training config's)."""
    args = None
    if asr_model is None:
        if asr_train_config is None:
            raise ValueError("give asr_train_config (and asr_model_file) or asr_model")
        asr_model, args = load_asr_model(asr_train_config, asr_model_file, device)
    if asr_model.ctc is None:
        raise ValueError("CTC decoding needs a model with a CTC head (ctc_weight > 0)")
    if token_type is None and args is not None:
        token_type = args.token_type
    if bpemodel is None and args is not None:
        bpemodel = args.bpemodel
    return asr_model.to(device).eval(), TokenText(asr_model.token_list, token_type, bpemodel)


def empty_recognition() -> Recognition:
    """The result for audio too short to give one encoder frame."""
    return Recognition("", [], [], 0.0)


class StreamingSpeech2Text:
    """Chunk-by-chunk recognition with a causal encoder.

    Args:
        asr_train_config: the model's ``config.yaml`` (or pass ``asr_model``).
        asr_model_file: its weights (loaded strictly).
        asr_model: an already built ``ESPnetASRModel`` (instead of the two files).
        token_type: ``bpe``/``char``/...; default: the training config's.
        bpemodel: sentencepiece model; default: the training config's.
        beam_size: 1 for greedy CTC, else CTC prefix beam search of that width.
        nbest: hypotheses returned at the end of a stream.
        ctc_weight: 1.0 = CTC only; < 1 rescores the final n-best with the attention decoder
            (``ctc_weight * ctc + (1 - ctc_weight) * attention``).
        length_bonus: per-token bonus of the prefix beam search.
        token_beam: tokens tried per frame by the beam search (default: ``beam_size``).
        device: ``cpu`` or ``cuda``.
    """

    def __init__(
        self,
        asr_train_config: Optional[PathLike] = None,
        asr_model_file: Optional[PathLike] = None,
        asr_model: Optional[torch.nn.Module] = None,
        token_type: Optional[str] = None,
        bpemodel: Optional[str] = None,
        beam_size: int = 1,
        nbest: int = 1,
        ctc_weight: float = 1.0,
        length_bonus: float = 0.0,
        token_beam: Optional[int] = None,
        device: str = "cpu",
    ):
        asr_model, self.text = prepare_model(
            asr_train_config, asr_model_file, asr_model, token_type, bpemodel, device
        )
        self.asr_model = asr_model
        self.device = device
        check_streamable(asr_model.encoder)
        self.frontend = StreamingFrontend(asr_model.frontend, asr_model.normalize)
        self.encoder = EncoderStream(asr_model.encoder, device, asr_model.ctc)
        self.search = CTCSearch(asr_model.blank_id, beam_size, nbest, length_bonus, token_beam)
        self.rescorer = None
        if ctc_weight < 1.0:
            if asr_model.decoder is None:
                raise ValueError("ctc_weight < 1 needs the model's attention decoder; it has none")
            self.rescorer = AttentionRescorer(asr_model.decoder, asr_model.sos, asr_model.eos,
                                              ctc_weight)
        self.frame_seconds = (
            subsampling_factor(asr_model.encoder) * self.frontend.hop / self.frontend.sample_rate
        )
        self.reset()

    @property
    def sample_rate(self) -> int:
        """Sampling rate the model expects."""
        return self.frontend.sample_rate

    def reset(self) -> None:
        """Drop the current stream."""
        self.frontend.reset()
        self.encoder.reset()
        self.search.reset()
        self._enc_chunks: List[torch.Tensor] = []
        self.encoder_frames = 0

    @torch.inference_mode()
    def __call__(
        self, speech: torch.Tensor, is_final: bool = False, fs: Optional[int] = None
    ) -> List[Recognition]:
        """Feed a chunk of samples (n,); return the current best (n-best at the end).

        Args:
            speech: mono float samples in [-1, 1] (may be empty).
            is_final: this chunk ends the stream (the final frames are flushed, the n-best
                list returned and the state reset).
            fs: sampling rate of ``speech``; if given it must equal :attr:`sample_rate`
                (resample whole recordings beforehand; chunk-wise resampling is not exact).
        """
        if fs is not None and int(fs) != self.sample_rate:
            raise ValueError(
                f"audio at {fs} Hz given to a model trained at {self.sample_rate} Hz: resample "
                "it first (e.g. torchaudio.functional.resample on the whole recording)"
            )
        speech = check_waveform(speech)
        feats = self.frontend(speech, is_final=is_final).to(self.device)
        enc = self.encoder(feats, is_final=is_final)  # (t', d)
        if enc.size(0):
            self.encoder_frames += enc.size(0)
            self.search.step(self.asr_model.ctc.log_softmax(enc[None])[0])
            if self.rescorer is not None:
                self._enc_chunks.append(enc)
        if not is_final:
            return self.search.results(self.text, self.frame_seconds)[:1]
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
            self(speech[start : start + chunk_samples])
        last = ((n - 1) // chunk_samples) * chunk_samples
        return self(speech[last:], is_final=True)
