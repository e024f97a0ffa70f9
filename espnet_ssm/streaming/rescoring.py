r"""Attention rescoring of CTC hypotheses at the end of an utterance.

For each hypothesis :math:`y = (y_1 .. y_U)` of the CTC search, the model's attention decoder
gives :math:`\log p_{att}(y) = \sum_{u=1}^{U+1} \log p(y_u \mid y_{<u}, h)` with
:math:`y_0 = \langle sos\rangle`, :math:`y_{U+1} = \langle eos\rangle` and h the encoder output of
the whole utterance. The final score is ESPnet's joint-decoding mixture

.. math::  s(y) = \lambda \log p_{ctc}(y) + (1 - \lambda) \log p_{att}(y)

with :math:`\lambda` = ``ctc_weight``. All hypotheses go through the decoder in one batch.
"""
from __future__ import annotations

from typing import List, Sequence

import torch


def attention_log_likelihoods(
    decoder: torch.nn.Module,
    enc: torch.Tensor,
    hyps: Sequence[Sequence[int]],
    sos: int,
    eos: int,
) -> List[float]:
    """log p_att(y) of every token sequence in ``hyps`` given ``enc`` (1, T, d)."""
    if enc.dim() != 3 or enc.size(0) != 1:
        raise ValueError(f"enc must be (1, T, d), got {tuple(enc.shape)}")
    if not hyps:
        return []
    n = len(hyps)
    lens = torch.tensor([len(h) + 1 for h in hyps], device=enc.device)
    width = int(lens.max())
    ys_in = torch.full((n, width), eos, dtype=torch.long, device=enc.device)
    ys_out = torch.full((n, width), -1, dtype=torch.long, device=enc.device)
    for i, h in enumerate(hyps):
        seq = torch.tensor(list(h), dtype=torch.long, device=enc.device)
        ys_in[i, 0] = sos
        ys_in[i, 1 : len(h) + 1] = seq
        ys_out[i, : len(h)] = seq
        ys_out[i, len(h)] = eos
    hs = enc.expand(n, -1, -1)
    hlens = torch.full((n,), enc.size(1), dtype=torch.long, device=enc.device)
    logits, _ = decoder(hs, hlens, ys_in, lens)
    logp = torch.log_softmax(logits.double(), dim=-1)
    valid = ys_out >= 0
    picked = logp.gather(-1, ys_out.clamp(min=0)[..., None])[..., 0]
    return (picked * valid).sum(-1).tolist()
