"""Reading recordings for the inference command lines, and writing their results.

Input is ESPnet's ``--data_path_and_name_and_type <wav.scp>,speech,sound``, read with ESPnet's
``SoundScpReader`` (float32 samples in [-1, 1], as in training). A recording at another rate than
the model's is resampled as a whole (torchaudio); that is exact up to the resampling filter,
whereas resampling chunk by chunk would not be.

Output follows ``espnet2.bin.asr_inference``: ``<output_dir>/<n>best_recog/{text,token,token_int,
score}``, plus, for long-form recognition, ``words`` (``<key> <word>@<start>-<end> ...``) and a CTM
file (``<key> 1 <start> <duration> <word>`` per word, the NIST format).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from espnet2.fileio.datadir_writer import DatadirWriter
from espnet2.fileio.read_text import read_2columns_text
from espnet2.fileio.sound_scp import SoundScpReader
from espnet2.utils.types import str2bool, str2triple_str, str_or_none
from espnet2.utils.nested_dict_action import NestedDictAction

from espnet_ssm.streaming.decoding import Recognition


class RecordingError(ValueError):
    """A recording cannot be read or used (names the recording and the problem)."""


def resample(speech: torch.Tensor, fs: int, target: int) -> torch.Tensor:
    """Resample a whole recording from ``fs`` to ``target`` Hz (band-limited, torchaudio)."""
    if fs <= 0:
        raise ValueError(f"sampling rate must be > 0, got {fs}")
    if fs == target:
        return speech
    import torchaudio.functional as AF

    logging.info("resampling %d Hz -> %d Hz", fs, target)
    return AF.resample(speech, int(fs), int(target))


def sound_input(data_path_and_name_and_type: Sequence[Tuple[str, str, str]]) -> str:
    """The wav.scp path of a ``speech`` input of type ``sound`` (the only kind supported)."""
    entries = list(data_path_and_name_and_type)
    if len(entries) != 1:
        raise ValueError(
            f"--data_path_and_name_and_type: give exactly one input '<wav.scp>,speech,sound', "
            f"got {len(entries)}"
        )
    path, name, kind = entries[0]
    if name != "speech" or kind != "sound":
        raise ValueError(
            f"--data_path_and_name_and_type {path},{name},{kind}: only '<wav.scp>,speech,sound' "
            "is supported (features cannot be streamed through the model's front-end)"
        )
    return path


def read_recordings(
    wav_scp: str, target_fs: int, key_file: Optional[str] = None, resample_audio: bool = True
) -> Iterator[Tuple[str, torch.Tensor, int]]:
    """Yield ``(key, samples (n,) float32 at target_fs, original rate)`` for each recording.

    A rate different from ``target_fs`` is resampled (``resample_audio``) or an error naming
    the recording. Multi-channel audio is an error.
    """
    reader = SoundScpReader(wav_scp, dtype="float32")
    keys: List[str] = list(reader.keys())
    if key_file is not None:
        wanted = list(read_2columns_text(key_file).keys()) if Path(key_file).is_file() else None
        if wanted is None:
            raise FileNotFoundError(f"--key_file {key_file} does not exist")
        unknown = [k for k in wanted if k not in reader.data]
        if unknown:
            raise KeyError(
                f"--key_file lists {len(unknown)} key(s) not in {wav_scp}: {unknown[:5]}"
            )
        keys = wanted
    for key in keys:
        try:
            rate, array = reader[key]
        except Exception as e:  # soundfile's errors vary by format; name the recording
            raise RecordingError(f"{wav_scp}: cannot read recording '{key}': {e}") from e
        array = np.asarray(array)
        if array.ndim != 1:
            raise RecordingError(
                f"{wav_scp}: recording '{key}' has {array.shape[1]} channels; expected mono"
            )
        speech = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if rate != target_fs:
            if not resample_audio:
                raise RecordingError(
                    f"{wav_scp}: recording '{key}' is sampled at {rate} Hz but the model expects "
                    f"{target_fs} Hz (enable resampling or resample the data)"
                )
            logging.warning("%s: %d Hz, resampled to %d Hz", key, rate, target_fs)
            speech = resample(speech, rate, target_fs)
        yield key, speech, rate


def write_results(
    writer: DatadirWriter, key: str, results: Sequence[Recognition], with_words: bool = False
) -> None:
    """Write an n-best list the way ``espnet2.bin.asr_inference`` does."""
    for n, res in enumerate(results, start=1):
        w = writer[f"{n}best_recog"]
        w["token"][key] = " ".join(res.tokens)
        w["token_int"][key] = " ".join(map(str, res.token_ids))
        w["score"][key] = str(res.score)
        if res.text is not None:
            w["text"][key] = res.text
        if with_words:
            w["words"][key] = " ".join(f"{x.word}@{x.start:.2f}-{x.end:.2f}" for x in res.words)


def ctm_lines(key: str, result: Recognition) -> List[str]:
    """NIST CTM lines ``<key> 1 <start> <duration> <word>`` of a result's words."""
    return [f"{key} 1 {w.start:.2f} {w.end - w.start:.2f} {w.word}" for w in result.words]


def inference_parser(description: str, beam_size: int) -> argparse.ArgumentParser:
    """ESPnet-style parser (``--config`` YAML) with the options every inference CLI shares."""
    from espnet2.utils import config_argparse

    parser = config_argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_io_arguments(parser)
    add_search_arguments(parser, beam_size)
    return parser


def add_io_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by the inference command lines (named as in ESPnet's)."""
    parser.add_argument("--log_level", type=lambda x: x.upper(), default="INFO",
                        choices=("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET"))
    parser.add_argument("--output_dir", type=str, required=True)
    parser.add_argument("--ngpu", type=int, default=0, help="0: CPU, 1: one GPU")
    group = parser.add_argument_group("Input data related")
    group.add_argument("--data_path_and_name_and_type", type=str2triple_str, required=True,
                       action="append", help="<wav.scp>,speech,sound")
    group.add_argument("--key_file", type=str_or_none)
    group.add_argument("--resample", type=str2bool, default=True,
                       help="resample recordings at another rate than the model's (else error)")
    group = parser.add_argument_group("The model configuration related")
    group.add_argument("--asr_train_config", type=str, required=True)
    group.add_argument("--asr_model_file", type=str, required=True)
    group.add_argument("--quantize_asr_model", type=str2bool, default=False,
                       help="apply dynamic quantization to the ASR model (CPU)")
    group.add_argument("--quantize_modules", type=str, nargs="*", default=["Linear"],
                       help="torch.nn classes to quantize dynamically, e.g. Linear")
    group.add_argument("--quantize_dtype", type=str, default="qint8",
                       choices=["float16", "qint8"], help="dtype for dynamic quantization")
    group = parser.add_argument_group("Text converter related")
    group.add_argument("--token_type", type=str_or_none, default=None,
                       choices=["char", "bpe", "word", None])
    group.add_argument("--bpemodel", type=str_or_none, default=None)


def add_search_arguments(parser: argparse.ArgumentParser, beam_size: int) -> None:
    """Search options (``--penalty`` is CTC's per-token length bonus, as in ESPnet)."""
    group = parser.add_argument_group("Search related")
    group.add_argument("--beam_size", type=int, default=beam_size,
                       help="1: CTC greedy; >1: CTC prefix beam search")
    group.add_argument("--token_beam", type=int, default=None,
                       help="tokens tried per frame by the beam search (default: beam_size)")
    group.add_argument("--penalty", type=float, default=0.0, help="per-token length bonus")
    group.add_argument("--transducer_conf", action=NestedDictAction, default=None,
                       help="transducer models: search options (ESPnet's keys search_type "
                       "(tsd for beam_size > 1), max_sym_exp, score_norm)")


def device_of(ngpu: int) -> str:
    """``cuda`` for ``--ngpu 1``, ``cpu`` for 0; more devices are an error."""
    if ngpu > 1:
        raise ValueError(f"--ngpu {ngpu}: only single-device decoding is supported")
    return "cuda" if ngpu >= 1 else "cpu"


def recognizer_options(args: argparse.Namespace) -> dict:
    """The model, text and search options of a parsed command line, as keyword arguments of
    :class:`~espnet_ssm.streaming.recognizer.Recognizer`'s subclasses."""
    return dict(
        asr_train_config=args.asr_train_config, asr_model_file=args.asr_model_file,
        token_type=args.token_type, bpemodel=args.bpemodel, beam_size=args.beam_size,
        length_bonus=args.penalty, token_beam=args.token_beam, device=device_of(args.ngpu),
        quantize_asr_model=args.quantize_asr_model, quantize_modules=args.quantize_modules,
        quantize_dtype=args.quantize_dtype, transducer_conf=args.transducer_conf,
    )


def recordings_of(args: argparse.Namespace,
                  sample_rate: int) -> Iterator[Tuple[str, torch.Tensor, int]]:
    """The recordings named by a parsed command line (``read_recordings`` of its wav.scp)."""
    wav_scp = sound_input(args.data_path_and_name_and_type)
    return read_recordings(wav_scp, sample_rate, args.key_file, args.resample)


def run_cli(
    parser: argparse.ArgumentParser,
    inference: Callable[[argparse.Namespace], None],
    cmd: Optional[Sequence[str]] = None,
) -> None:
    """Parse ``cmd``, set up logging and run ``inference``; user errors exit 1 with a message."""
    from espnet.utils.cli_utils import get_commandline_args

    print(get_commandline_args(), file=sys.stderr)
    args = parser.parse_args(cmd)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    import espnet_ssm  # noqa: F401  (registers the encoders)
    from espnet_ssm.loading import CheckpointMismatchError

    try:
        with torch.inference_mode():
            inference(args)
    except (ValueError, KeyError, FileNotFoundError, CheckpointMismatchError) as e:
        logging.error("%s", e)
        sys.exit(1)
