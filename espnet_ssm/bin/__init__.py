"""Command-line entry points mirroring ``espnet2.bin`` with our encoders registered.

Each ``python -m espnet_ssm.bin.<name>`` takes exactly the options of ``espnet2.bin.<name>``.
"""
