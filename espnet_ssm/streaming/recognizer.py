"""What every recogniser of this package shares: the model, its text converter, the search.

:class:`Recognizer` loads the model (strictly) or takes a built one, builds the token-to-text
converter (token type and sentencepiece model default to the training config's) and the search
over encoder frames: for a CTC model greedy (``beam_size == 1``) or prefix beam search, for a
transducer model greedy or time-synchronous beam search (:func:`frame_search`).
:class:`~espnet_ssm.streaming.speech2text.StreamingSpeech2Text` and
:class:`~espnet_ssm.streaming.longform.LongFormSpeech2Text` build on it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import torch

from espnet_ssm.streaming.decoding import Recognition, frame_search, subsampling_factor
from espnet_ssm.streaming.frontend import check_streamable_frontend, frontend_sample_rate
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
    quantize_asr_model: bool = False,
    quantize_modules: Sequence[str] = ("Linear",),
    quantize_dtype: str = "qint8",
) -> Tuple[torch.nn.Module, TokenText]:
    """The model (loaded from files unless given) in eval mode on ``device``, dynamically
    quantized if asked (a copy: a given model is left as it is), and its text converter (token
    type and sentencepiece model default to the training config's)."""
    if quantize_asr_model and device != "cpu":
        raise ValueError(f"quantize_asr_model: dynamic quantization runs on the CPU only, "
                         f"not on {device}")
    args = None
    if asr_model is None:
        if asr_train_config is None:
            raise ValueError("give asr_train_config (and asr_model_file) or asr_model")
        asr_model, args = load_asr_model(asr_train_config, asr_model_file, device)
    if token_type is None and args is not None:
        token_type = args.token_type
    if bpemodel is None and args is not None:
        bpemodel = args.bpemodel
    asr_model = asr_model.to(device).eval()
    if quantize_asr_model:
        from espnet_ssm.streaming.quantization import quantize_asr_model as quantize

        asr_model = quantize(asr_model, quantize_modules, quantize_dtype)
    return asr_model, TokenText(asr_model.token_list, token_type, bpemodel)


def empty_recognition() -> Recognition:
    """The result for audio too short to give one encoder frame."""
    return Recognition("", [], [], 0.0)


class Recognizer:
    """A model, its text converter and its search over encoder frames.

    Args:
        asr_train_config: the model's ``config.yaml`` (or pass ``asr_model``).
        asr_model_file: its weights (loaded strictly).
        asr_model: an already built ``ESPnetASRModel`` (instead of the two files).
        token_type: ``bpe``/``char``/...; default: the training config's.
        bpemodel: sentencepiece model; default: the training config's.
        beam_size: 1 for greedy search, else the beam (CTC prefix beam search, or a transducer's
            time-synchronous decoding).
        nbest: hypotheses returned at the end of a recording.
        length_bonus: per-token bonus of the CTC prefix beam search.
        token_beam: tokens tried per frame by the CTC beam search (default: ``beam_size``).
        transducer_conf: search options of a transducer model (ESPnet's keys ``search_type``,
            ``max_sym_exp``, ``score_norm``).
        device: ``cpu`` or ``cuda``.
        quantize_asr_model: dynamically quantize the model (CPU only; see
            :mod:`espnet_ssm.streaming.quantization`), as ESPnet's ``Speech2Text``.
        quantize_modules: ``torch.nn`` classes to quantize (ESPnet's default: ``Linear``).
        quantize_dtype: ``qint8`` or ``float16``.
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
        length_bonus: float = 0.0,
        token_beam: Optional[int] = None,
        device: str = "cpu",
        quantize_asr_model: bool = False,
        quantize_modules: Sequence[str] = ("Linear",),
        quantize_dtype: str = "qint8",
        transducer_conf: Optional[dict] = None,
    ):
        self.asr_model, self.text = prepare_model(
            asr_train_config, asr_model_file, asr_model, token_type, bpemodel, device,
            quantize_asr_model, quantize_modules, quantize_dtype,
        )
        self.device = device
        self.search = frame_search(self.asr_model, beam_size, nbest, length_bonus, token_beam,
                                   transducer_conf)
        frontend = check_streamable_frontend(self.asr_model.frontend)
        self.sample_rate = frontend_sample_rate(frontend)
        # an encoder frame spans ``subsampling`` feature frames of ``hop`` samples each
        self.frame_seconds = (
            subsampling_factor(self.asr_model.encoder) * frontend.hop_length / self.sample_rate
        )

    def consume(self, enc: torch.Tensor) -> None:
        """Feed encoder frames (t, D) to the search."""
        self.search.consume(self.asr_model, enc)
