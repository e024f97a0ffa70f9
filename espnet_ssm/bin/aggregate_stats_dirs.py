#!/usr/bin/env python3
"""``espnet2.bin.aggregate_stats_dirs`` (same options).

It only sums statistics files and builds no model, so it does not import espnet_ssm (whose
encoder registration imports ``espnet2.tasks.asr``: about 10 s of start-up on a 2-core CPU).
"""
from espnet2.bin.aggregate_stats_dirs import get_parser, main

__all__ = ["get_parser", "main"]

if __name__ == "__main__":
    main()
