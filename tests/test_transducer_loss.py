"""The transducer loss (``espnet_ssm.transducer.loss``) against the RNN-T definition.

Reference: the alpha recursion of the RNN-T loss written out in float64 (``reference_nll``):
``alpha[0, 0] = 0``, ``alpha[t, u] = logaddexp(alpha[t-1, u] + lp[t-1, u][blank],
alpha[t, u-1] + lp[t, u-1][y_u])``, ``-log P(y|x) = -(alpha[T-1, U] + lp[T-1, U][blank])`` with
``lp = log_softmax(logits)``, one utterance at a time on its own T and U (padding ignored).

What is checked:
- the loss (torchaudio's float32 kernel behind our ``rnnt_loss``) equals the reference on random
  lattices with several T, U, V, padded batches of different lengths and blank ids 0, 2, V-1;
- gradients: the float64 reference passes ``torch.autograd.gradcheck`` (its autograd gradient
  equals finite differences, checked along random directions: ``fast_mode``); torchaudio's
  analytic gradient equals that reference gradient element by element; and ``gradcheck`` of our
  loss itself (float32 inside; full Jacobian) against finite differences, with tolerances for
  float32 rounding (torchaudio has no float64 kernel);
- joint network + loss in slices of the batch == on the whole batch: loss and gradients of the
  encoder output, the prediction-network output and every joint-network parameter, also under
  autocast, without gradients and with a memory bound;
- bad input raises ``TransducerInputError`` naming the utterance.

Random draws are seeded; the seed is in the test id and in every assertion message.
"""
from __future__ import annotations

from typing import List

import pytest
import torch
from espnet2.asr_transducer.joint_network import JointNetwork

from espnet_ssm.transducer import (
    TransducerInputError,
    check_transducer_inputs,
    joint_rnnt_loss,
    plan_slices,
    rnnt_loss,
)


def reference_nll(
    logits: torch.Tensor, targets: torch.Tensor, t_len: List[int], u_len: List[int], blank: int
) -> torch.Tensor:
    """Per-utterance -log P(y|x) from the alpha recursion, in the dtype of ``logits``."""
    lp = logits.log_softmax(dim=-1)
    losses = []
    for b, (n_t, n_u) in enumerate(zip(t_len, u_len)):
        alpha = [[None] * (n_u + 1) for _ in range(n_t)]
        for t in range(n_t):
            for u in range(n_u + 1):
                if t == 0 and u == 0:
                    alpha[t][u] = lp.new_zeros(())
                    continue
                paths = []
                if t > 0:  # blank at (t-1, u): advance in time
                    paths.append(alpha[t - 1][u] + lp[b, t - 1, u, blank])
                if u > 0:  # label y_u at (t, u-1): advance in the transcript
                    paths.append(alpha[t][u - 1] + lp[b, t, u - 1, int(targets[b, u - 1])])
                alpha[t][u] = torch.logsumexp(torch.stack(paths), dim=0)
        losses.append(-(alpha[n_t - 1][n_u] + lp[b, n_t - 1, n_u, blank]))
    return torch.stack(losses)


def random_lattice(seed: int, batch: int, t_max: int, u_max: int, vocab: int, blank: int):
    """Logits (float64) and valid targets/lengths; the first utterance has the maximal T and U."""
    g = torch.Generator().manual_seed(seed)
    t_len = torch.randint(1, t_max + 1, (batch,), generator=g)
    u_len = torch.randint(1, u_max + 1, (batch,), generator=g)
    t_len[0], u_len[0] = t_max, u_max
    labels = [c for c in range(vocab) if c != blank]
    targets = torch.tensor(labels)[torch.randint(0, len(labels), (batch, u_max), generator=g)]
    targets = targets.masked_fill(torch.arange(u_max)[None] >= u_len[:, None], blank)
    logits = torch.randn(batch, t_max, u_max + 1, vocab, generator=g, dtype=torch.float64) * 2
    return logits, targets.int(), t_len.int(), u_len.int()


LATTICES = [  # (seed, batch, T, U, V, blank)
    (11, 1, 1, 1, 2, 0),
    (12, 3, 4, 3, 5, 0),
    (13, 4, 6, 2, 7, 2),
    (14, 2, 3, 5, 6, 5),  # more labels than frames; blank = V - 1
    (15, 5, 7, 4, 9, 8),
]


@pytest.mark.parametrize("seed,batch,t_max,u_max,vocab,blank", LATTICES)
def test_loss_equals_float64_alpha_recursion(seed, batch, t_max, u_max, vocab, blank):
    logits, targets, t_len, u_len = random_lattice(seed, batch, t_max, u_max, vocab, blank)
    ref = reference_nll(logits, targets, t_len.tolist(), u_len.tolist(), blank)
    got = rnnt_loss(logits, targets, t_len, u_len, blank, reduction="none")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5, msg=f"seed {seed}")
    mean = rnnt_loss(logits, targets, t_len, u_len, blank)  # reduction="mean": over the batch
    torch.testing.assert_close(mean.double(), ref.mean(), rtol=1e-5, atol=1e-5, msg=f"seed {seed}")


@pytest.mark.parametrize(
    "seed,batch,t_max,u_max,vocab,blank", [LATTICES[1], LATTICES[3], (16, 2, 3, 2, 4, 1)]
)
def test_gradient_equals_reference_and_finite_differences(seed, batch, t_max, u_max, vocab, blank):
    logits, targets, t_len, u_len = random_lattice(seed, batch, t_max, u_max, vocab, blank)
    lengths = (t_len.tolist(), u_len.tolist())

    def reference(x: torch.Tensor) -> torch.Tensor:
        return reference_nll(x, targets, *lengths, blank).mean()

    def ours(x: torch.Tensor) -> torch.Tensor:
        return rnnt_loss(x, targets, t_len, u_len, blank).double()

    x = logits.clone().requires_grad_(True)
    # fast mode: one random direction per input/output pair instead of the full Jacobian
    assert torch.autograd.gradcheck(reference, (x,), fast_mode=True), f"seed {seed}"
    (ref_grad,) = torch.autograd.grad(reference(x), x)
    (our_grad,) = torch.autograd.grad(ours(x), x)
    torch.testing.assert_close(our_grad, ref_grad, rtol=1e-4, atol=1e-6, msg=f"seed {seed}")
    # float32 inside: a wide step keeps rounding (~1e-7 x loss / eps) below the tolerance
    assert torch.autograd.gradcheck(ours, (x,), eps=1e-2, atol=2e-3, rtol=1e-2), f"seed {seed}"


# ----------------------------------------------------------------------------- slices
def joint_case(seed: int, batch: int = 5, vocab: int = 11, blank: int = 0):
    """A random JointNetwork and encoder/decoder outputs of a padded batch."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    joint = JointNetwork(vocab, 12, 10, joint_space_size=16)
    t_len = torch.randint(1, 9, (batch,), generator=g).int()
    u_len = torch.randint(1, 5, (batch,), generator=g).int()
    t_max, u_max = int(t_len.max()), int(u_len.max())
    enc = torch.randn(batch, t_max, 12, generator=g, requires_grad=True)
    dec = torch.randn(batch, u_max + 1, 10, generator=g, requires_grad=True)
    targets = torch.randint(1, vocab, (batch, u_max), generator=g).int()
    targets = targets.masked_fill(torch.arange(u_max)[None] >= u_len[:, None], blank)
    return joint, enc, dec, targets, t_len, u_len


def loss_and_grads(joint, enc, dec, targets, t_len, u_len, **slicing):
    params = [enc, dec, *joint.parameters()]
    loss = joint_rnnt_loss(joint, enc, dec, targets, t_len, u_len, 0, **slicing)
    return loss.detach(), torch.autograd.grad(loss, params)


@pytest.mark.parametrize("seed", [21, 22, 23])
@pytest.mark.parametrize(
    "slicing",
    [dict(batch_slices=2), dict(batch_slices=5), dict(batch_slices=9), dict(max_joint_elements=1),
     dict(batch_slices=2, max_joint_elements=600)],
    ids=["2-slices", "per-utterance", "more-slices-than-utterances", "budget-1", "2-and-budget"],
)
def test_sliced_loss_and_gradients_equal_whole_batch(seed, slicing):
    case = joint_case(seed)
    loss, grads = loss_and_grads(*case)
    joint, enc, dec, targets, t_len, u_len = case
    # the whole-batch path is ESPnet's: joint network on the padded batch, then the loss
    logits = joint(enc.unsqueeze(2), dec.unsqueeze(1))
    torch.testing.assert_close(loss, rnnt_loss(logits, targets, t_len, u_len, 0).detach())
    sliced_loss, sliced_grads = loss_and_grads(*case, **slicing)
    torch.testing.assert_close(sliced_loss, loss, rtol=1e-6, atol=1e-6, msg=f"seed {seed}")
    names = ["encoder output", "decoder output"] + [n for n, _ in joint.named_parameters()]
    for name, a, b in zip(names, sliced_grads, grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"seed {seed}: {name}")


def test_sliced_loss_without_gradients_and_under_autocast():
    joint, enc, dec, targets, t_len, u_len = joint_case(31)
    args = (joint, enc, dec, targets, t_len, u_len, 0)
    with torch.no_grad():
        whole = joint_rnnt_loss(*args)
        torch.testing.assert_close(joint_rnnt_loss(*args, batch_slices=3), whole, rtol=1e-6, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, low_grads = loss_and_grads(*args[:-1])
        sliced, sliced_grads = loss_and_grads(*args[:-1], batch_slices=3)
    assert low.dtype == sliced.dtype == torch.float32  # the loss itself runs in float32
    assert torch.isfinite(low) and abs(float(low) - float(whole)) < 0.05 * float(whole)
    torch.testing.assert_close(sliced, low, rtol=1e-5, atol=1e-5)
    for a, b in zip(sliced_grads, low_grads):  # recomputation replays autocast
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)


def test_plan_slices_covers_the_batch_within_the_bound():
    t_len = torch.tensor([10, 9, 9, 3, 2, 2, 1])
    u_len = torch.tensor([4, 5, 1, 1, 2, 1, 1])
    vocab = 10
    assert plan_slices(t_len, u_len, vocab) == [slice(0, 7)]
    assert plan_slices(t_len, u_len, vocab, batch_slices=3) == [
        slice(0, 2), slice(2, 5), slice(5, 7)
    ]
    for bound in (1, 300, 600, 1000, 10**6):
        slices = plan_slices(t_len, u_len, vocab, max_joint_elements=bound)
        assert [i for sl in slices for i in range(sl.start, sl.stop)] == list(range(7))
        for sl in slices:
            size = (sl.stop - sl.start) * int(t_len[sl].max()) * (int(u_len[sl].max()) + 1) * vocab
            assert size <= bound or sl.stop - sl.start == 1, (bound, sl)
    with pytest.raises(ValueError, match="transducer_batch_slices must be >= 1"):
        plan_slices(t_len, u_len, vocab, batch_slices=0)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "t_len,u_len,targets,index,what",
    [
        ([3, 0], [2, 1], [[1, 2], [1, 0]], 1, r"has 0 encoder frames: the utterance is shorter"),
        ([3, 3], [2, 0], [[1, 2], [0, 0]], 1, r"has an empty transcript"),
        ([3, 3], [2, 1], [[1, 7], [1, 0]], 0, r"has label ids \[7\] outside the vocabulary of 5"),
        ([3, 3], [2, 2], [[1, 2], [-3, 0]], 1, r"has label ids \[-3, 0\] .*blank id 0"),
    ],
    ids=["too-short", "empty-transcript", "id-above-vocab", "negative-and-blank"],
)
def test_bad_input_names_the_utterance(t_len, u_len, targets, index, what):
    t_len, u_len, targets = torch.tensor(t_len), torch.tensor(u_len), torch.tensor(targets)
    key = ["a", "b"][index]
    named = rf"^utterance '{key}' \(batch index {index}\) {what}"
    with pytest.raises(TransducerInputError, match=named):
        check_transducer_inputs(targets, t_len, u_len, 5, 0, ["a", "b"])
    joint = JointNetwork(5, 4, 4, joint_space_size=4)
    enc, dec = torch.randn(2, 3, 4), torch.randn(2, targets.size(1) + 1, 4)
    with pytest.raises(TransducerInputError, match=rf"^batch index {index} {what}"):
        joint_rnnt_loss(joint, enc, dec, targets, t_len, u_len, 0)  # without keys
