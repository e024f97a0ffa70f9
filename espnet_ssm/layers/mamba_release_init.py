"""The released Speech-Mamba's initialisation (``mamba_init: release``), as an alternative to Mamba's.

The authors' release (SpeechBrain recipe of "Speech-Mamba", Gao & Chen, SLT 2024) builds its
Mamba blocks without Mamba's own initialisation and then draws every parameter of two or more
dimensions from Xavier's normal distribution:

.. math::

    W \sim \mathcal N\!\left(0,\ \frac{2}{\mathrm{fan_{in}} + \mathrm{fan_{out}}}\right)

A_log (E x N) included, so :math:`A = -e^{A_{log}} \approx -1` for all N states instead of
Mamba's :math:`A_n = -(n + 1)`; dt_proj's bias keeps PyTorch's Linear default
:math:`U(\pm R^{-1/2})` instead of :math:`\mathrm{softplus}^{-1}(\Delta_0)`, so that the initial
step is :math:`\Delta = \mathrm{softplus}(b) \approx 0.6 .. 0.8` rather than
:math:`\Delta_0 \in [10^{-3}, 10^{-1}]`; D = 1 and the conv bias keep their defaults.

:func:`release_initialize` applies this to a module; its Mamba mixers become
:class:`ReleaseInitMambaMixer`, whose ``espnet_initialization_fn`` re-draws the SSM parts the same
way after ESPnet's ``--init`` (the plain mixer would restore Mamba's).
"""
from __future__ import annotations

from typing import Sequence

import torch

from espnet_ssm.layers.mamba import MambaMixer

MAMBA_INITS = ("mamba", "release")


class ReleaseInitMambaMixer(MambaMixer):
    """:class:`MambaMixer` with the release's initialisation (same parameters, same maths)."""

    def reset_parameters(self) -> None:
        """Projections Xavier-normal, SSM parts as :meth:`espnet_initialization_fn`."""
        for m in (self.in_proj, self.x_proj, self.out_proj):
            m.reset_parameters()
            torch.nn.init.xavier_normal_(m.weight)
        self.espnet_initialization_fn()

    def espnet_initialization_fn(self) -> None:
        """conv, dt_proj and A_log weights Xavier-normal; biases PyTorch's defaults; D = 1."""
        self.conv1d.reset_parameters()
        self.dt_proj.reset_parameters()  # bias ~ U(±R^-1/2): no Δ initialisation
        with torch.no_grad():
            for w in (self.conv1d.weight, self.dt_proj.weight, self.A_log):
                torch.nn.init.xavier_normal_(w)
            self.D.fill_(1.0)


def release_initialize(module: torch.nn.Module, keep: Sequence[str] = ()) -> None:
    """Initialise ``module`` as the release does, in place.

    Every parameter of two or more dimensions whose name does not start with one of ``keep``
    is drawn from Xavier's normal distribution; every :class:`MambaMixer` inside becomes a
    :class:`ReleaseInitMambaMixer` (a class swap, since :class:`BidirectionalMamba` builds its
    mixers itself) and re-initialises its SSM parts.
    """
    keep = tuple(keep)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2 and not (keep and name.startswith(keep)):
                torch.nn.init.xavier_normal_(p)
    for m in module.modules():
        if type(m) is MambaMixer:
            m.__class__ = ReleaseInitMambaMixer
        if isinstance(m, ReleaseInitMambaMixer):
            m.espnet_initialization_fn()

