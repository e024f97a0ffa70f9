#!/usr/bin/env python3
"""``espnet2.bin.lm_train`` (same options), run with espnet_ssm imported.

The LM task needs none of our encoders; it goes through this package only so that every stage of
the recipe calls ``python -m espnet_ssm.bin.<name>`` the same way.
"""
import espnet_ssm  # noqa: F401  (registers our encoders)
from espnet2.bin.lm_train import get_parser, main

__all__ = ["get_parser", "main"]

if __name__ == "__main__":
    main()
