"""Self-attention and positional encodings from ESPnet, with causal / left-limited masks.

ESPnet's attention modules accept a mask of shape (B, 1, T) (key padding) or (B, T, T) (one row
per query). :func:`attention_mask` builds either: full attention over valid keys, or, with
``causal``, query ``i`` sees keys ``j <= i`` (and ``j >= i - left_context`` when a left context
is set). Rows of padded queries see every valid key, so that no row is fully masked (a fully
masked row makes PyTorch's fused attention return NaN); their outputs are never used.

Streaming (:meth:`SelfAttention.forward_chunk`, causal layers only): a causal, left-limited
attention (query i sees keys j with :math:`0 \le i - j \le L`) only needs the keys and values of
the last L frames. With the chunk's queries q, keys k and values v (ESPnet's ``forward_qkv``)
after that cache,

.. math::

    s_{ij} = \frac{(q_i + u)\cdot k_j + (q_i + v')\cdot P\,e(i - j)}{\sqrt{d_k}},\qquad
    y_i = W_o \sum_j \mathrm{softmax}_j(s_{ij})\, v_j

where the positional term (u, v', P of ``RelPositionMultiHeadedAttention``, e(r) the row of
ESPnet's latest ``RelPositionalEncoding`` table for distance r) is present only for
``rel_selfattn``; ``selfattn`` has :math:`s_{ij} = q_i \cdot k_j / \sqrt{d_k}`. Masked scores are
filled and zeroed by ESPnet's ``forward_attention``, as offline. A limited left context keeps a
cache of exactly L frames from the first chunk on, with a mask of the frames that exist (the
empty slots of a young stream are masked keys, which contribute exact zeros), so that every
chunk after the first has the same shapes and a captured chunk step replays from the start of
a stream. With an unlimited left context (L = -1) the cache keeps every frame: cost and memory
then grow with the stream.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

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

from espnet_ssm.layers.streaming import require_streamable
from espnet_ssm.layers.weight_cache import WeightCache

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


@dataclass
class AttentionCache:
    """Keys and values (B, heads, C, d_k) of the last C frames before the next chunk, and which
    of them exist, (C,) bool (all of them with an unlimited left context)."""

    key: Optional[torch.Tensor] = None
    value: Optional[torch.Tensor] = None
    filled: Optional[torch.Tensor] = None


class SelfAttention(torch.nn.Module):
    """ESPnet multi-head self-attention taking ``(x, att_mask, pos_emb)``.

    Args:
        kind: ``selfattn`` (``MultiHeadedAttention``; ``use_sdpa`` runs PyTorch's fused
            scaled-dot-product attention, same maths, less memory) or ``rel_selfattn``
            (``RelPositionMultiHeadedAttention``, needs the ``rel_pos`` table).
        heads: number of heads (must divide ``size``).
        size: model dimension.
        dropout_rate: attention-weight dropout.
        causal: queries see no later keys (the encoder's mask says so offline; this layer's
            ``forward_chunk`` needs it).
        left_context: past frames a causal query sees (-1: all), as the encoder's mask.
    """

    def __init__(
        self, kind: str, heads: int, size: int, dropout_rate: float, use_sdpa: bool = False,
        causal: bool = False, left_context: int = -1,
    ):
        super().__init__()
        self.kind = kind
        self.causal, self.left_context = causal, left_context
        if kind == "selfattn":
            self.attn = MultiHeadedAttention(heads, size, dropout_rate, use_sdpa=use_sdpa)
        elif kind == "rel_selfattn":
            self.attn = RelPositionMultiHeadedAttention(heads, size, dropout_rate)
        else:
            raise ValueError(f"attention type {kind!r}: choose one of {list(ATTENTION_TYPES)}")
        self._projected: WeightCache = WeightCache()  # P e(r) per head, for chunks
        self._geometry: Dict[tuple, Tuple[torch.Tensor, torch.Tensor]] = {}  # masks, for chunks

    def forward(
        self, x: torch.Tensor, att_mask: torch.Tensor, pos_emb: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); ``att_mask`` is (B, 1, T) or (B, T, T), True = attend."""
        if self.kind == "rel_selfattn":
            return self.attn(x, x, x, pos_emb, att_mask)
        return self.attn(x, x, x, att_mask)

    def forward_chunk(
        self, x: torch.Tensor, cache: Optional[AttentionCache] = None
    ) -> Tuple[torch.Tensor, AttentionCache]:
        """Causal attention of the chunk x (B, t, D) over the cached frames and itself ->
        ((B, t, D), the cache for the next chunk)."""
        require_streamable(self)
        attn, t = self.attn, int(x.size(1))  # int(): a size is a tensor while tracing
        q, k, v = attn.forward_qkv(x, x, x)  # (B, h, t, d_k)
        if (cache is None or cache.key is None) and self.left_context > 0:
            # the steady shape from the start: L empty slots, masked until frames fill them
            empty = k.new_zeros(k.size(0), k.size(1), self.left_context, k.size(3))
            cache = AttentionCache(empty, empty, torch.zeros(self.left_context, dtype=torch.bool,
                                                             device=x.device))
        exists = torch.ones(t, dtype=torch.bool, device=x.device)
        if cache is not None and cache.key is not None:
            k = torch.cat([cache.key, k], dim=2)
            v = torch.cat([cache.value, v], dim=2)
            exists = torch.cat([cache.filled, exists])
        c = int(k.size(2)) - t  # cached frames (int(): a size is a tensor while tracing)
        in_reach, dist = self._chunk_geometry(t, c, x.device)
        allowed = in_reach & exists
        if self.kind == "rel_selfattn":
            q_u = q + attn.pos_bias_u[:, None]  # (h, d_k) biases, broadcast over frames
            q_v = q + attn.pos_bias_v[:, None]
            p = self._projected_distances(c + t - 1, x)  # (h, R + 1, d_k)
            bd = torch.matmul(q_v, p.transpose(-2, -1))  # (B, h, t, R + 1): by distance
            bd = bd.gather(-1, dist.expand(*bd.shape[:2], t, c + t))
            scores = (torch.matmul(q_u, k.transpose(-2, -1)) + bd) / math.sqrt(attn.d_k)
        else:
            scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(attn.d_k)
        out = attn.forward_attention(v, scores, allowed[None])
        keep = c + t if self.left_context < 0 else min(self.left_context, c + t)
        if keep == 0:
            return out, AttentionCache()
        return out, AttentionCache(k[:, :, c + t - keep:], v[:, :, c + t - keep:],
                                   exists[c + t - keep:])

    def _chunk_geometry(self, t: int, c: int, device: torch.device
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
        """For t chunk queries after c cached keys: which keys are within reach (t, c + t) and
        the distances (t, c + t), clamped at 0 for later keys (they are masked).

        Query i sits at key position c + i, so its distance to key j is c + i - j. Kept per
        (t, c, device), a handful in a stream: in a captured chunk step they are constants.
        """
        key = (t, c, device)
        if key not in self._geometry:
            dist = (torch.arange(t, device=device)[:, None] + c) - torch.arange(c + t,
                                                                                device=device)
            in_reach = dist >= 0
            if self.left_context >= 0:
                in_reach &= dist <= self.left_context
            if len(self._geometry) >= 16:
                self._geometry.clear()
            self._geometry[key] = (in_reach, dist.clamp(min=0))
        return self._geometry[key]

    def _projected_distances(self, max_distance: int, like: torch.Tensor) -> torch.Tensor:
        """:math:`P\,e(r)` per head for r = 0 .. max_distance, (heads, R + 1, d_k).

        It depends only on the weights, so it is computed once per weight version for a power
        of two of distances (an unlimited context recomputes it only log-many times) and sliced.
        e(r) is ESPnet's own table, built as the encoder's input layer builds it.
        """
        rows = max(64, 1 << (max_distance + 1).bit_length())
        attn = self.attn

        def build() -> torch.Tensor:
            # ESPnet's table runs from distance +(n-1) down to -(n-1); rows e(0) .. e(rows - 1)
            table = RelPositionalEncoding(attn.d_k * attn.h, 0.0, max_len=rows).pe[0]
            emb = table[: rows].flip(0).to(like)
            return attn.linear_pos(emb).view(rows, attn.h, attn.d_k).transpose(0, 1)

        proj = self._projected.get(list(attn.linear_pos.parameters()), build, rows, like.dtype,
                                   like.device)
        return proj[:, : max_distance + 1]

    def streaming_obstacle(self) -> Optional[str]:
        """Why this layer cannot stream (attention to later frames), or None."""
        return None if self.causal else "looks ahead: full (non-causal) self-attention"


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
