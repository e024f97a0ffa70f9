#!/usr/bin/env python3
"""``espnet2.bin.launch`` (same options), run with espnet_ssm imported."""
import espnet_ssm  # noqa: F401  (registers our encoders)
from espnet2.bin.launch import get_parser, main

__all__ = ["get_parser", "main"]

if __name__ == "__main__":
    main()
