#!/usr/bin/env python3
"""Streaming ASR inference with a causal SSM encoder, shaped like ESPnet's.

    python -m espnet_ssm.bin.asr_inference_streaming \\
        --asr_train_config exp/asr/config.yaml --asr_model_file exp/asr/valid.acc.ave.pth \\
        --data_path_and_name_and_type data/test/wav.scp,speech,sound \\
        --output_dir exp/asr/decode_streaming/test --sim_chunk_length 2560 --beam_size 10

Each recording is fed to :class:`espnet_ssm.streaming.StreamingSpeech2Text` in chunks of
``--sim_chunk_length`` samples (0: the whole recording at once), as a live stream would be.
Outputs, like ``espnet2.bin.asr_inference``: ``<output_dir>/<n>best_recog/{text,token,
token_int,score}``. The log gives each recording's real-time factor and per-chunk latency.

Search: CTC greedy (``--beam_size 1``) or CTC prefix beam search; ``--penalty`` is its per-token
length bonus; ``--ctc_weight`` below 1 rescores the final n-best list with the attention decoder.
``--maxlenratio``/``--minlenratio`` are accepted so that ESPnet decode configs load; the CTC
search does not use them. Language models are not supported. On a CPU, ``--quantize_asr_model
true`` decodes with an int8 copy of the model (ESPnet's option; ``--quantize_modules Linear
Conv2d`` quantizes the conv2d subsampling too), see :mod:`espnet_ssm.streaming.quantization`.
"""
from __future__ import annotations

import argparse
import logging
import time
from typing import List, Optional, Sequence

from espnet2.fileio.datadir_writer import DatadirWriter
from espnet2.torch_utils.set_all_random_seed import set_all_random_seed
from espnet2.utils.types import str2bool

from espnet_ssm.streaming import io as cli_io


def get_parser() -> argparse.ArgumentParser:
    """Options of ESPnet's streaming inference that apply to CTC streaming decoding."""
    parser = cli_io.inference_parser("Streaming ASR decoding with a causal SSM encoder",
                                     beam_size=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", choices=["float32"],
                        help="only float32 is supported")
    parser.add_argument("--num_workers", type=int, default=1, help="accepted; audio is read inline")
    parser.add_argument("--allow_variable_data_keys", type=str2bool, default=False)
    parser.add_argument("--sim_chunk_length", type=int, default=0,
                        help="samples per chunk fed to the recogniser (0: whole recording)")
    parser.add_argument("--captured_chunks", type=str2bool, default=True,
                        help="replay the encoder blocks' chunk step from a trace once chunk "
                             "and state shapes repeat (false: run every chunk eagerly)")
    parser.add_argument("--lm_train_config", type=str, help="not supported")
    parser.add_argument("--lm_file", type=str, help="not supported")
    parser.add_argument("--batch_size", type=int, default=1, help="must be 1")
    parser.add_argument("--nbest", type=int, default=1)
    parser.add_argument("--ctc_weight", type=float, default=1.0,
                        help="1: CTC only; <1: attention rescoring of the final n-best list")
    parser.add_argument("--lm_weight", type=float, default=0.0, help="not supported (must be 0)")
    parser.add_argument("--maxlenratio", type=float, default=0.0, help="unused by CTC search")
    parser.add_argument("--minlenratio", type=float, default=0.0, help="unused by CTC search")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Reject options this decoder cannot honour, naming them."""
    if args.batch_size != 1:
        raise ValueError(f"--batch_size {args.batch_size}: streaming decodes one stream (use 1)")
    if args.lm_train_config or args.lm_file or args.lm_weight not in (0.0, None):
        raise ValueError("language models are not supported by the streaming CTC decoder "
                         "(drop --lm_train_config/--lm_file and set --lm_weight 0)")
    if args.sim_chunk_length < 0:
        raise ValueError(f"--sim_chunk_length must be >= 0, got {args.sim_chunk_length}")


def chunk_bounds(n: int, chunk: int) -> List[int]:
    """Start offsets of the chunks of a recording of n samples (at least one chunk)."""
    if chunk <= 0 or n <= chunk:
        return [0]
    return list(range(0, n, chunk))


def inference(args: argparse.Namespace) -> None:
    """Decode every recording of the input and write the results."""
    from espnet_ssm.streaming.speech2text import StreamingSpeech2Text

    check_args(args)
    set_all_random_seed(args.seed)
    s2t = StreamingSpeech2Text(ctc_weight=args.ctc_weight, nbest=args.nbest,
                               captured_chunks=args.captured_chunks,
                               **cli_io.recognizer_options(args))
    total_audio = total_time = 0.0
    with DatadirWriter(args.output_dir) as writer:
        for key, speech, _ in cli_io.recordings_of(args, s2t.sample_rate):
            starts = chunk_bounds(speech.numel(), args.sim_chunk_length)
            # the two lines the recipe's real-time-factor report reads, as ESPnet's inference
            logging.info("speech length: %d", speech.numel())
            latencies = []
            t0 = time.perf_counter()
            for i, start in enumerate(starts):
                end = starts[i + 1] if i + 1 < len(starts) else speech.numel()
                c0 = time.perf_counter()
                results = s2t(speech[start:end], is_final=i + 1 == len(starts))
                latencies.append(time.perf_counter() - c0)
            elapsed = time.perf_counter() - t0
            logging.info("best hypo: %s", results[0].text)
            seconds = speech.numel() / s2t.sample_rate
            total_audio += seconds
            total_time += elapsed
            logging.info(
                "%s: %.2f s of audio in %d chunk(s), decoded in %.3f s (RTF %.4f), latency per "
                "chunk mean %.1f ms max %.1f ms",
                key, seconds, len(starts), elapsed, elapsed / max(seconds, 1e-9),
                1000 * sum(latencies) / len(latencies), 1000 * max(latencies),
            )
            cli_io.write_results(writer, key, results)
    if total_audio > 0:
        logging.info("total: %.2f s of audio decoded in %.2f s, RTF %.4f",
                     total_audio, total_time, total_time / total_audio)


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Command-line entry point."""
    cli_io.run_cli(get_parser(), inference, cmd)


if __name__ == "__main__":
    main()
