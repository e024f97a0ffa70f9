#!/usr/bin/env python3
"""``espnet2.bin.lm_calc_perplexity`` (same options), run with espnet_ssm imported (see lm_train)."""
import espnet_ssm  # noqa: F401  (registers our encoders)
from espnet2.bin.lm_calc_perplexity import get_parser, main

__all__ = ["get_parser", "main"]

if __name__ == "__main__":
    main()
