"""Padding helpers against per-utterance Python loops."""
import pytest
import torch

from espnet_ssm.ops import lengths_to_mask, reverse_padded, zero_padded


def random_lengths(batch=5, max_len=13):
    lengths = torch.randint(0, max_len + 1, (batch,))
    lengths[0] = max_len
    return lengths


def test_lengths_to_mask():
    lengths = random_lengths()
    mask = lengths_to_mask(lengths)
    assert mask.dtype == torch.bool and mask.shape == (5, 13)
    for b, n in enumerate(lengths.tolist()):
        assert mask[b].tolist() == [t < n for t in range(13)]
    assert lengths_to_mask(lengths, 20).shape == (5, 20)
    with pytest.raises(ValueError, match="max_len=5 is shorter than the longest length 13"):
        lengths_to_mask(lengths, 5)
    with pytest.raises(ValueError, match="integer dtype"):
        lengths_to_mask(lengths.float())
    with pytest.raises(ValueError, match=">= 0"):
        lengths_to_mask(torch.tensor([3, -1]))


def test_lengths_to_mask_is_linear_in_memory():
    # one hour of 10 ms frames: an O(L²) mask would need 130 GB
    mask = lengths_to_mask(torch.tensor([360_000, 5]))
    assert mask.shape == (2, 360_000) and int(mask.sum()) == 360_005


def test_zero_padded():
    lengths = random_lengths()
    x = torch.randn(5, 13, 3)
    out = zero_padded(x, lengths_to_mask(lengths))
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(out[b, :n], x[b, :n]) and (out[b, n:] == 0).all()
    assert zero_padded(x, None) is x
    with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(batch, L\) = \(5, 13\)"):
        zero_padded(x, torch.ones(5, 12, dtype=torch.bool))


@pytest.mark.parametrize("shape", [(5, 13), (5, 13, 3), (5, 13, 2, 2)])
def test_reverse_padded(shape):
    lengths = random_lengths()
    x = torch.randn(shape, requires_grad=True)
    out = reverse_padded(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        for t in range(13):
            assert torch.equal(out[b, t], x[b, n - 1 - t] if t < n else x[b, t])
    assert torch.equal(reverse_padded(out, lengths), x)  # an involution
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones(shape))
    with pytest.raises(ValueError, match="lengths must be <= L=13"):
        reverse_padded(x, lengths + 1)
    with pytest.raises(ValueError, match="batch = len"):
        reverse_padded(x, lengths[:2])
