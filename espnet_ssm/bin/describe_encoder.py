#!/usr/bin/env python3
"""Print the ``encoder_conf`` options of our encoders.

    python -m espnet_ssm.bin.describe_encoder mh_ssm      # a YAML template with every default
    python -m espnet_ssm.bin.describe_encoder --markdown  # the reference of all encoders
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from espnet_ssm.encoders.reference import markdown_reference, yaml_template
from espnet_ssm.registry import our_encoders


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("encoder", nargs="?", choices=sorted(our_encoders()), help="registry name")
    parser.add_argument("--markdown", action="store_true", help="markdown reference of all encoders")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown_reference())
    elif args.encoder:
        sys.stdout.write(yaml_template(args.encoder))
    else:
        parser.error("give an encoder name or --markdown")


if __name__ == "__main__":
    main()
