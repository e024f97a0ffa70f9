"""RNN-Transducer ASR model for ESPnet's ``asr`` task, with the loss of torchaudio.

ESPnet's ``ASRTask.build_model`` builds a transducer when the config has ``decoder: transducer``
(an LSTM/GRU prediction network) and ``joint_net_conf`` (a ``JointNetwork``), and hands both to
the model class chosen by ``model:``. ESPnet's own ``ESPnetASRModel`` then needs
``warprnnt_pytorch`` for the loss. :class:`ESPnetSSMTransducerModel` (``model:
espnet_ssm_transducer``) is that model with ``torchaudio.functional.rnnt_loss`` instead, and
everything else unchanged: the total loss ``loss_transducer + ctc_weight * loss_ctc`` (with
InterCTC folded into ``loss_ctc``), the stats ``loss``, ``loss_transducer``, ``loss_ctc``,
``cer_ctc``, ``cer_transducer``, ``wer_transducer``, the CER/WER of ESPnet's
``ErrorCalculatorTransducer`` on validation, and decoding by ESPnet's ``Speech2Text`` with
``BeamSearchTransducer``. Two options of ``model_conf`` bound the memory of the joint network
(see :func:`espnet_ssm.transducer.loss.joint_rnnt_loss`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from espnet.nets.e2e_asr_common import ErrorCalculator
from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError
from espnet2.asr.ctc import CTC
from espnet2.asr.decoder.abs_decoder import AbsDecoder
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.asr.transducer.error_calculator import ErrorCalculatorTransducer
from espnet2.asr_transducer.joint_network import JointNetwork
from espnet2.asr_transducer.utils import get_transducer_task_io
from typeguard import typechecked

from espnet_ssm.transducer.loss import check_transducer_inputs, joint_rnnt_loss

MODEL_NAME = "espnet_ssm_transducer"


class ESPnetSSMTransducerModel(ESPnetASRModel):
    """ESPnet's transducer ASR model with ``torchaudio.functional.rnnt_loss``.

    Takes the arguments of ``ESPnetASRModel`` (``model_conf``), plus:

    Args:
        transducer_batch_slices: evaluate the joint network and the loss in this many slices of
            the batch, each recomputed in the backward pass; 1 (default) runs them on the whole
            batch as ESPnet does.
        transducer_max_joint_elements: bound each slice's joint output (B_slice x T x (U+1) x V
            values, T and U the slice's own maxima); None: no bound. 2.5e8 float32 values are
            about 1 GB for the logits plus 1 GB for their gradient.
    """

    @typechecked
    def __init__(
        self,
        vocab_size: int,
        token_list: Union[Tuple[str, ...], List[str]],
        decoder: Optional[AbsDecoder],
        ctc: CTC,
        joint_network: Optional[torch.nn.Module],
        ctc_weight: float = 0.5,
        report_cer: bool = True,
        report_wer: bool = True,
        sym_space: str = "<space>",
        sym_blank: str = "<blank>",
        transducer_batch_slices: int = 1,
        transducer_max_joint_elements: Optional[int] = None,
        **kwargs: Any,
    ):
        if not isinstance(joint_network, JointNetwork) or decoder is None:
            raise ValueError(
                f"model: {MODEL_NAME} is a transducer: it needs 'decoder: transducer' (with "
                "decoder_conf) and 'joint_net_conf' in the config, got decoder "
                f"{type(decoder).__name__} and joint network {type(joint_network).__name__}."
            )
        if kwargs.get("transducer_multi_blank_durations"):
            raise ValueError(
                f"transducer_multi_blank_durations is not supported by model: {MODEL_NAME}; "
                "ESPnet's multi-blank transducer is 'model: espnet'."
            )
        if transducer_batch_slices < 1 or (
            transducer_max_joint_elements is not None and transducer_max_joint_elements < 1
        ):
            raise ValueError(
                "transducer_batch_slices and transducer_max_joint_elements must be positive, got "
                f"{transducer_batch_slices} and {transducer_max_joint_elements}"
            )
        # Built as a model without joint network (ESPnet would import warprnnt_pytorch for
        # one), then given the transducer parts exactly as ESPnetASRModel sets them up.
        super().__init__(
            vocab_size=vocab_size,
            token_list=token_list,
            decoder=decoder,
            ctc=ctc,
            joint_network=None,
            ctc_weight=ctc_weight,
            report_cer=report_cer,
            report_wer=report_wer,
            sym_space=sym_space,
            sym_blank=sym_blank,
            **kwargs,
        )
        blank_of_decoder = getattr(decoder, "blank_id", self.blank_id)
        if self.blank_id != blank_of_decoder:
            raise ValueError(
                f"'{sym_blank}' is token {self.blank_id} of the token list, but ESPnet's "
                f"transducer decoder and beam search use token {blank_of_decoder} as the blank: "
                f"put '{sym_blank}' first in the token list."
            )
        if hasattr(self, "criterion_att"):
            del self.criterion_att
        self.use_transducer_decoder = True
        self.decoder = decoder
        self.joint_network = joint_network
        self.transducer_batch_slices = transducer_batch_slices
        self.transducer_max_joint_elements = transducer_max_joint_elements
        self.error_calculator = None
        self.error_calculator_trans = None
        if report_cer or report_wer:
            self.error_calculator_trans = ErrorCalculatorTransducer(
                decoder, joint_network, token_list, sym_space, sym_blank,
                report_cer=report_cer, report_wer=report_wer,
            )
        elif self.ctc_weight != 0:
            self.error_calculator = ErrorCalculator(
                token_list, sym_space, sym_blank, report_cer, report_wer
            )
        self._utt_ids: Optional[Sequence[str]] = None

    @contextlib.contextmanager
    def _utterances(self, utt_ids: Optional[Sequence[str]]) -> Iterator[None]:
        """Make the batch's utterance keys available to error messages during one forward."""
        self._utt_ids = utt_ids
        try:
            yield
        finally:
            self._utt_ids = None

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        **kwargs: Any,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """ESPnet's ``ESPnetASRModel.forward``; errors about bad input name the utterances.

        ``kwargs`` may hold ``utt_id`` (ESPnet's trainer passes the batch's keys).
        """
        utt_ids = kwargs.get("utt_id")
        with self._utterances(utt_ids):
            try:
                return super().forward(speech, speech_lengths, text, text_lengths, **kwargs)
            except TooShortUttError as e:
                if utt_ids is None:
                    raise
                # The encoder knows batch indices only; give the keys that go with them.
                keys = ", ".join(f"{i}={k!r}" for i, k in enumerate(utt_ids))
                raise TooShortUttError(
                    f"{e} [keys of this batch by index: {keys}]", e.actual_size, e.limit
                ) from e

    def _calc_transducer_loss(
        self,
        encoder_out: torch.Tensor,
        encoder_out_lens: torch.Tensor,
        labels: torch.Tensor,
    ) -> Tuple[torch.Tensor, Optional[float], Optional[float]]:
        """Transducer loss (mean over the batch) and, on validation, its CER and WER.

        Args:
            encoder_out: (B, T, D_enc); encoder_out_lens: (B,); labels: (B, L), padded with
                ``ignore_id``.

        Returns:
            loss_transducer (float32), cer_transducer, wer_transducer (None while training).
        """
        decoder_in, target, t_len, u_len = get_transducer_task_io(
            labels, encoder_out_lens, ignore_id=self.ignore_id, blank_id=self.blank_id
        )
        # Before the prediction network: its embedding would fail on an out-of-range id
        # without naming the utterance.
        check_transducer_inputs(
            target, t_len, u_len, self.vocab_size, self.blank_id, self._utt_ids
        )
        self.decoder.set_device(encoder_out.device)
        decoder_out = self.decoder(decoder_in)
        loss_transducer = joint_rnnt_loss(
            self.joint_network,
            encoder_out,
            decoder_out,
            target,
            t_len,
            u_len,
            self.blank_id,
            batch_slices=self.transducer_batch_slices,
            max_joint_elements=self.transducer_max_joint_elements,
            utt_ids=self._utt_ids,
        )
        cer_transducer, wer_transducer = None, None
        if not self.training and self.error_calculator_trans is not None:
            cer_transducer, wer_transducer = self.error_calculator_trans(encoder_out, target)
        return loss_transducer, cer_transducer, wer_transducer
