#!/usr/bin/env python3
"""Train an ASR model: ``espnet2.bin.asr_train`` with espnet_ssm encoders available.

Same options as ESPnet's; the task class is :class:`espnet_ssm.tasks.SSMASRTask`, so the encoders
are registered in this process and in every worker ESPnet spawns for multi-GPU training.
"""
from typing import Optional, Sequence

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
    SSMASRTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
