#!/usr/bin/env python3
"""Long-form ASR inference: each recording (up to hours) recognised in one pass, with word times.

    python -m espnet_ssm.bin.asr_inference_longform \\
        --asr_train_config exp/asr/config.yaml --asr_model_file exp/asr/valid.acc.ave.pth \\
        --data_path_and_name_and_type data/test_clean_long60min/wav.scp,speech,sound \\
        --output_dir exp/asr/decode_longform/test_clean_long60min

Uses :class:`espnet_ssm.streaming.LongFormSpeech2Text` (memory linear in the recording's
length; no segmentation). Outputs: ``<output_dir>/1best_recog/{text,token,token_int,score}``
like ``espnet2.bin.asr_inference``, plus ``words`` (``word@start-end``) and ``ctm`` (NIST CTM,
times in seconds). The log gives each recording's real-time factor.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Optional, Sequence

from espnet2.fileio.datadir_writer import DatadirWriter

from espnet_ssm.streaming import io as cli_io


def get_parser() -> argparse.ArgumentParser:
    """Options of long-form inference."""
    parser = cli_io.inference_parser(
        "Single-pass long-form ASR decoding with word time stamps", beam_size=1
    )
    parser.add_argument("--mode", default="auto", choices=["auto", "stream", "offline"],
                        help="stream: chunked causal encoder; offline: one encoder pass; "
                        "auto: stream when the encoder can")
    parser.add_argument("--chunk_seconds", type=float, default=30.0,
                        help="audio per step (stream mode) / per front-end step (offline mode)")
    return parser


def inference(args: argparse.Namespace) -> None:
    """Recognise every recording of the input and write the results."""
    from espnet_ssm.streaming.longform import LongFormSpeech2Text

    s2t = LongFormSpeech2Text(mode=args.mode, chunk_seconds=args.chunk_seconds,
                              **cli_io.recognizer_options(args))
    logging.info("long-form mode: %s", s2t.mode)
    ctm = []
    with DatadirWriter(args.output_dir) as writer:
        for key, speech, _ in cli_io.recordings_of(args, s2t.sample_rate):
            t0 = time.perf_counter()
            result = s2t(speech)
            elapsed = time.perf_counter() - t0
            seconds = speech.numel() / s2t.sample_rate
            logging.info("%s: %.1f s of audio decoded in %.2f s (RTF %.4f), %d words",
                         key, seconds, elapsed, elapsed / max(seconds, 1e-9), len(result.words))
            cli_io.write_results(writer, key, [result], with_words=True)
            ctm += cli_io.ctm_lines(key, result)
    out = Path(args.output_dir) / "1best_recog"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ctm").write_text("".join(line + "\n" for line in ctm), encoding="utf-8")


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Command-line entry point."""
    cli_io.run_cli(get_parser(), inference, cmd)


if __name__ == "__main__":
    main()
