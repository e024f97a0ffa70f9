#!/usr/bin/env python3
"""Train an ASR model: ``espnet2.bin.asr_train`` with espnet_ssm encoders available.

Same options as ESPnet's; the task class is :class:`espnet_ssm.tasks.SSMASRTask`, so the encoders
are registered in this process and in every worker ESPnet spawns for multi-GPU training.
"""
from typing import Optional, Sequence

import torch.distributed

from espnet_ssm.tasks import SSMASRTask


def get_parser():
    """ESPnet's ASR training parser, with our encoder names among the ``--encoder`` choices."""
    return SSMASRTask.get_parser()


def main(cmd: Optional[Sequence[str]] = None) -> None:
    r"""ASR training.

    Example:
        % python -m espnet_ssm.bin.asr_train --print_config --encoder mh_ssm
        % python -m espnet_ssm.bin.asr_train --config conf/tuning/train_asr_mh_ssm.yaml ...
    """
    try:
        SSMASRTask.main(cmd=cmd)
    finally:
        # ESPnet leaves the process group alive; a gloo worker that exits with it can abort
        # at interpreter shutdown ("terminate called without an active exception"), now and
        # then. Tear it down while the interpreter is still whole.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
