"""Self-attention and positional encodings from ESPnet, with causal / left-limited masks.

ESPnet's attention modules accept a mask of shape (B, 1, T) (key padding) or (B, T, T) (one row
per query). :func:`attention_mask` builds either: full attention over valid keys, or, with
``causal``, query ``i`` sees keys ``j <= i`` (and ``j >= i - left_context`` when a left context
is set). Rows of padded queries see every valid key, so that no row is fully masked (a fully
masked row makes PyTorch's fused attention return NaN); their outputs are never used.
"""
from __future__ import annotations

from typing import Optional

import torch
from espnet.nets.pytorch_backend.transformer.attention import (
    MultiHeadedAttention,
    RelPositionMultiHeadedAttention,
)
from espnet.nets.pytorch_backend.transformer.embedding import (
    PositionalEncoding,
    RelPositionalEncoding,
    ScaledPositionalEncoding,
)

POS_ENC_TYPES = ("none", "abs_pos", "scaled_abs_pos", "rel_pos")
ATTENTION_TYPES = ("selfattn", "rel_selfattn")


def build_pos_enc(
    kind: str, size: int, dropout_rate: float, max_len: int = 5000
) -> torch.nn.Module:
    """ESPnet's positional encoding ``kind`` (``none``: identity, for order-aware SSM encoders).

    ``rel_pos`` is ESPnet's latest ``RelPositionalEncoding``; it must pair with ``rel_selfattn``.
    """
    if kind == "none":
        return torch.nn.Identity()
    if kind == "abs_pos":
        return PositionalEncoding(size, dropout_rate, max_len)
    if kind == "scaled_abs_pos":
        return ScaledPositionalEncoding(size, dropout_rate, max_len)
    if kind == "rel_pos":
        return RelPositionalEncoding(size, dropout_rate, max_len)
    raise ValueError(f"pos_enc_layer_type={kind!r}: choose one of {list(POS_ENC_TYPES)}")


class SelfAttention(torch.nn.Module):
    """ESPnet multi-head self-attention taking ``(x, att_mask, pos_emb)``.

    Args:
        kind: ``selfattn`` (``MultiHeadedAttention``; ``use_sdpa`` runs PyTorch's fused
            scaled-dot-product attention, same maths, less memory) or ``rel_selfattn``
            (``RelPositionMultiHeadedAttention``, needs the ``rel_pos`` table).
        heads: number of heads (must divide ``size``).
        size: model dimension.
        dropout_rate: attention-weight dropout.
    """

    def __init__(
        self, kind: str, heads: int, size: int, dropout_rate: float, use_sdpa: bool = False
    ):
        super().__init__()
        self.kind = kind
        if kind == "selfattn":
            self.attn = MultiHeadedAttention(heads, size, dropout_rate, use_sdpa=use_sdpa)
        elif kind == "rel_selfattn":
            self.attn = RelPositionMultiHeadedAttention(heads, size, dropout_rate)
        else:
            raise ValueError(f"attention type {kind!r}: choose one of {list(ATTENTION_TYPES)}")

    def forward(
        self, x: torch.Tensor, att_mask: torch.Tensor, pos_emb: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); ``att_mask`` is (B, 1, T) or (B, T, T), True = attend."""
        if self.kind == "rel_selfattn":
            return self.attn(x, x, x, pos_emb, att_mask)
        return self.attn(x, x, x, att_mask)


def attention_mask(
    valid: torch.Tensor, causal: bool = False, left_context: int = -1
) -> torch.Tensor:
    """Attention mask from the frame mask ``valid`` (B, T) (True = real frame).

    Returns (B, 1, T) for full attention, else (B, T, T) where query ``i`` may attend key ``j``
    iff ``j`` is valid, ``j <= i`` when ``causal`` and ``j >= i - left_context`` when
    ``left_context >= 0``. Memory is O(B T^2) bool, like the attention scores themselves.
    """
    if not causal and left_context < 0:
        return valid[:, None, :]
    t = valid.size(1)
    pos = torch.arange(t, device=valid.device)
    rel = pos[:, None] - pos[None, :]  # i - j
    allowed = torch.ones(t, t, dtype=torch.bool, device=valid.device)
    if causal:
        allowed &= rel >= 0
    if left_context >= 0:
        allowed &= rel <= left_context
    # Padded query rows attend to all valid keys: never an empty row.
    allowed = allowed[None] | ~valid[:, :, None]
    return allowed & valid[:, None, :]
