#!/usr/bin/env python3
"""``espnet2.bin.asr_inference_maskctc`` (same options; asr.sh --use_maskctc true) with strict
model loading, so Mask-CTC models with our encoders decode."""
from typing import Optional, Sequence

import espnet2.bin.asr_inference_maskctc as espnet_maskctc_inference

from espnet_ssm.tasks import strict_asr_loading


def get_parser():
    """ESPnet's Mask-CTC inference parser."""
    return espnet_maskctc_inference.get_parser()


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Run ESPnet's Mask-CTC inference with strict loading of the model file."""
    with strict_asr_loading():
        espnet_maskctc_inference.main(cmd)


if __name__ == "__main__":
    main()
