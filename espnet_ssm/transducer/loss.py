"""RNN-Transducer loss on ``torchaudio.functional.rnnt_loss``, with a memory-bounded path.

With encoder frames h_t, prediction-network outputs g_u and ``lp = log_softmax(joint(h_t, g_u))``,
the loss of one utterance is ``-log P(y|x) = -(alpha[T-1, U] + lp[T-1, U][blank])`` with
``alpha[0, 0] = 0`` and ``alpha[t, u] = logaddexp(alpha[t-1, u] + lp[t-1, u][blank],
alpha[t, u-1] + lp[t, u-1][y_u])``. ``reduction="mean"`` averages over the batch (not over
labels), as ESPnet's transducer loss does.

The joint output has B x T x (U+1) x V values, and torchaudio keeps a gradient of the same size
from the forward pass to the backward pass. :func:`joint_rnnt_loss` can therefore evaluate the
joint network and the loss over slices of the batch, each trimmed to its own longest utterance and
transcript, recomputing each slice during the backward pass (activation checkpointing), so that
only one slice's lattice is alive at a time. Slicing changes neither the loss nor its gradients
(up to float rounding).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch.utils.checkpoint import checkpoint
from torchaudio.functional import rnnt_loss as torchaudio_rnnt_loss


class TransducerInputError(ValueError):
    """Input the transducer loss cannot be computed on; the message names the utterance."""


def _name(index: int, utt_ids: Optional[Sequence[str]]) -> str:
    if utt_ids is not None and index < len(utt_ids):
        return f"utterance '{utt_ids[index]}' (batch index {index})"
    return f"batch index {index}"


def check_transducer_inputs(
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    vocab_size: int,
    blank_id: int,
    utt_ids: Optional[Sequence[str]] = None,
) -> None:
    """Raise :class:`TransducerInputError` for input that would give a wrong or silent loss.

    torchaudio's kernel does not check label ids (an id outside the vocabulary reads outside the
    joint output) and returns a loss of 0 for an utterance without frames. Checked, per
    utterance: at least one encoder frame, a non-empty transcript, label ids in
    ``[0, vocab_size)`` other than the blank.

    Args:
        targets: (B, U) label ids, padded.
        logit_lengths: (B,) encoder frames per utterance.
        target_lengths: (B,) labels per utterance.
        vocab_size: number of output classes, blank included.
        blank_id: index of the blank class.
        utt_ids: utterance keys, used in the messages when given.
    """
    short = (logit_lengths < 1).nonzero().flatten().tolist()
    if short:
        i = short[0]
        raise TransducerInputError(
            f"{_name(i, utt_ids)} has {int(logit_lengths[i])} encoder frames: the utterance is "
            "shorter than the encoder's subsampling needs; remove it from the data (e.g. with a "
            "larger minimum duration) or use an input layer with less subsampling."
        )
    empty = (target_lengths < 1).nonzero().flatten().tolist()
    if empty:
        raise TransducerInputError(
            f"{_name(empty[0], utt_ids)} has an empty transcript; the transducer needs at least "
            "one label per utterance. Remove the utterance or give it its transcript."
        )
    positions = torch.arange(targets.size(1), device=targets.device)
    in_transcript = positions[None, :] < target_lengths[:, None]
    bad = in_transcript & ((targets < 0) | (targets >= vocab_size) | (targets == blank_id))
    rows = bad.any(dim=1).nonzero().flatten().tolist()
    if rows:
        i = rows[0]
        ids = sorted(set(targets[i][bad[i]].tolist()))
        raise TransducerInputError(
            f"{_name(i, utt_ids)} has label ids {ids} outside the vocabulary of {vocab_size} "
            f"classes or equal to the blank id {blank_id}: does the token list belong to this "
            "data?"
        )


def rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank_id: int,
    reduction: str = "mean",
) -> torch.Tensor:
    """``torchaudio.functional.rnnt_loss`` in float32 with the types it needs.

    Args:
        logits: (B, T, U+1, V) joint output, unnormalised (log-softmax is fused in the kernel);
            any floating dtype, computed in float32 (also under autocast).
        targets: (B, U) label ids.
        logit_lengths, target_lengths: (B,) lengths; their maxima must be T and U.
        blank_id: index of the blank class.
        reduction: ``"mean"`` (over the batch), ``"sum"`` or ``"none"``.

    Returns:
        The loss, float32.
    """
    # The kernel needs contiguous float32 logits and int32 targets and lengths.
    return torchaudio_rnnt_loss(
        logits.float().contiguous(),
        targets.int().contiguous(),
        logit_lengths.int().contiguous(),
        target_lengths.int().contiguous(),
        blank=blank_id,
        reduction=reduction,
    )


def plan_slices(
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    vocab_size: int,
    batch_slices: int = 1,
    max_joint_elements: Optional[int] = None,
) -> List[slice]:
    """Cut a batch into consecutive slices for :func:`joint_rnnt_loss`.

    ``batch_slices`` cuts it into that many slices of (nearly) equal size; ``max_joint_elements``
    additionally bounds each slice's joint output, ``b * max(T) * (max(U) + 1) * V`` over the
    slice's own utterances (an utterance that alone exceeds the bound gets a slice of its own).

    Returns:
        Slices that cover ``range(B)`` in order.
    """
    if batch_slices < 1:
        raise ValueError(f"transducer_batch_slices must be >= 1, got {batch_slices}")
    if max_joint_elements is not None and max_joint_elements < 1:
        raise ValueError(f"transducer_max_joint_elements must be >= 1, got {max_joint_elements}")
    batch = int(logit_lengths.numel())
    n = min(batch_slices, batch)
    bounds = [round(k * batch / n) for k in range(n + 1)]
    slices = [slice(bounds[k], bounds[k + 1]) for k in range(n)]
    if max_joint_elements is None:
        return slices
    t_len = logit_lengths.tolist()
    u_len = target_lengths.tolist()
    budgeted: List[slice] = []
    for sl in slices:
        start, t_max, u_max = sl.start, 0, 0
        for i in range(sl.start, sl.stop):
            t2, u2 = max(t_max, t_len[i]), max(u_max, u_len[i])
            if i > start and (i + 1 - start) * t2 * (u2 + 1) * vocab_size > max_joint_elements:
                budgeted.append(slice(start, i))
                start, t2, u2 = i, t_len[i], u_len[i]
            t_max, u_max = t2, u2
        budgeted.append(slice(start, sl.stop))
    return budgeted


def _slice_loss_sum(
    joint_network: torch.nn.Module,
    enc_proj: torch.Tensor,
    dec_proj: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank_id: int,
) -> torch.Tensor:
    """Summed loss of one slice from the projected encoder and decoder outputs."""
    logits = joint_network(enc_proj.unsqueeze(2), dec_proj.unsqueeze(1), no_projection=True)
    return rnnt_loss(logits, targets, logit_lengths, target_lengths, blank_id, reduction="sum")


def joint_rnnt_loss(
    joint_network: torch.nn.Module,
    enc_out: torch.Tensor,
    dec_out: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank_id: int,
    batch_slices: int = 1,
    max_joint_elements: Optional[int] = None,
    utt_ids: Optional[Sequence[str]] = None,
) -> torch.Tensor:
    """Joint network + RNN-T loss, averaged over the batch, optionally in slices of the batch.

    Args:
        joint_network: ESPnet's ``JointNetwork`` (``lin_enc``, ``lin_dec``, ``forward(...,
            no_projection=True)``).
        enc_out: (B, T, D_enc) encoder output, T = max(logit_lengths).
        dec_out: (B, U+1, D_dec) prediction-network output over the blank-prefixed labels.
        targets: (B, U) label ids; logit_lengths, target_lengths: (B,).
        blank_id: index of the blank class.
        batch_slices, max_joint_elements: see :func:`plan_slices`. With the defaults (one slice,
            no bound) the joint network runs on the whole batch exactly as ESPnet does.
        utt_ids: utterance keys for error messages.

    Returns:
        Scalar float32 loss, ``sum_b loss_b / B``.

    Raises:
        TransducerInputError: see :func:`check_transducer_inputs`.
    """
    vocab_size = joint_network.lin_out.out_features
    check_transducer_inputs(targets, logit_lengths, target_lengths, vocab_size, blank_id, utt_ids)
    slices = plan_slices(
        logit_lengths, target_lengths, vocab_size, batch_slices, max_joint_elements
    )
    if len(slices) == 1:
        # ESPnet's computation; the trim only matters for an encoder output longer than its
        # longest length, which torchaudio's kernel would refuse.
        t_max, u_max = int(logit_lengths.max()), int(target_lengths.max())
        enc_out, dec_out = enc_out[:, :t_max], dec_out[:, : u_max + 1]
        logits = joint_network(enc_out.unsqueeze(2), dec_out.unsqueeze(1))
        return rnnt_loss(logits, targets[:, :u_max], logit_lengths, target_lengths, blank_id)

    # The projections are small (B x T x J, B x (U+1) x J); only the broadcast sum, activation
    # and output layer are per slice, and only those are recomputed in the backward pass.
    enc_proj = joint_network.lin_enc(enc_out)
    dec_proj = joint_network.lin_dec(dec_out)
    recompute = torch.is_grad_enabled() and (enc_proj.requires_grad or dec_proj.requires_grad)
    total = enc_proj.new_zeros((), dtype=torch.float32)
    for sl in slices:
        t_max = int(logit_lengths[sl].max())
        u_max = int(target_lengths[sl].max())
        args = (
            joint_network,
            enc_proj[sl, :t_max],
            dec_proj[sl, : u_max + 1],
            targets[sl, :u_max],
            logit_lengths[sl],
            target_lengths[sl],
            blank_id,
        )
        # Non-reentrant checkpointing keeps one autograd graph, so each parameter's gradient is
        # accumulated once per step (as DistributedDataParallel expects) and the backward pass
        # sees the loss scale of AMP's GradScaler, as the unsliced path does.
        part = checkpoint(_slice_loss_sum, *args, use_reentrant=False) if recompute else (
            _slice_loss_sum(*args)
        )
        total = total + part
    return total / enc_out.size(0)
