#!/usr/bin/env python3
"""``espnet2.bin.pack`` (same options).

Packing only copies files and writes ``meta.yaml``; it builds no model, so it does not import
espnet_ssm (about 10 s of start-up on a 2-core CPU). Loading the packed model needs it.
"""
from espnet2.bin.pack import get_parser, main

__all__ = ["get_parser", "main"]

if __name__ == "__main__":
    main()
