"""Neural network layers built on :mod:`espnet_ssm.ops`."""
from espnet_ssm.layers.mamba import BidirectionalMamba, MambaMixer
from espnet_ssm.layers.s4d import S4D

__all__ = ["BidirectionalMamba", "MambaMixer", "S4D"]
