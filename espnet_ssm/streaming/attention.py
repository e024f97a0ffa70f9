r"""Causal self-attention over chunks with a cache of past keys and values.

ESPnet's attention modules take one sequence at a time. Streaming a causal, left-limited
attention (query i sees keys j with :math:`0 \le i - j \le L`) only needs the keys and values of
the last L frames: with the new chunk's queries :math:`q`, keys :math:`k` and values :math:`v`
(ESPnet's ``forward_qkv``) and the cache in front of them,

.. math::

    s_{ij} = \frac{(q_i + u)\cdot k_j + (q_i + v')\cdot P\,e(i - j)}{\sqrt{d_k}},\qquad
    y_i = W_o \sum_j \mathrm{softmax}_j(s_{ij})\, v_j

where the positional term (u, v', P, e of ``RelPositionMultiHeadedAttention``, "latest"
relative encodings; e(r) the row of ``RelPositionalEncoding``'s table for distance r) is present
only for ``rel_selfattn``; plain ``selfattn`` has :math:`s_{ij} = q_i \cdot k_j / \sqrt{d_k}`.
Masked scores are filled and zeroed as ESPnet's ``forward_attention`` does. With an unlimited
left context (L = -1) the cache keeps every frame: cost and memory then grow with the stream.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from espnet.nets.pytorch_backend.transformer.attention import RelPositionMultiHeadedAttention
from espnet.nets.pytorch_backend.transformer.embedding import RelPositionalEncoding

from espnet_ssm.streaming.weights_key import weights_key


@dataclass
class AttentionCache:
    """Keys and values (B, heads, C, d_k) of the last C frames before the next chunk."""

    key: Optional[torch.Tensor] = None
    value: Optional[torch.Tensor] = None

    @property
    def length(self) -> int:
        """Number of cached frames C."""
        return 0 if self.key is None else self.key.size(2)


def relative_embeddings(pos_enc: RelPositionalEncoding, max_distance: int,
                        like: torch.Tensor) -> torch.Tensor:
    """Rows e(0), e(1), .., e(max_distance) of the relative encoding table, (R + 1, d)."""
    have = (pos_enc.pe.size(1) + 1) // 2  # distances the table covers
    # grow by doubling: an unlimited context asks for one more distance every chunk
    pos_enc.extend_pe(like.new_empty(1, max(max_distance + 1, 2 * have)
                                     if have < max_distance + 1 else have))
    center = pos_enc.pe.size(1) // 2  # the table runs from +(n-1) down to -(n-1)
    return pos_enc.pe[0, center - max_distance : center + 1].flip(0)


_POS_PROJ: "weakref.WeakKeyDictionary[torch.nn.Module, Tuple[tuple, torch.Tensor]]" = (
    weakref.WeakKeyDictionary()
)


def projected_distances(attn: RelPositionMultiHeadedAttention, pos_enc: RelPositionalEncoding,
                        max_distance: int, like: torch.Tensor) -> torch.Tensor:
    """:math:`P\,e(r)` per head for r = 0 .. max_distance, (heads, R + 1, d_k).

    The projection depends only on the weights, so it is computed once per layer (for twice
    the distances asked, so that an unlimited context recomputes it only log-many times) and
    sliced per chunk: a bounded left context then costs nothing here.
    """
    # a quantized projection has no parameters and never changes: its key is empty
    key = (weights_key(attn.linear_pos.parameters()), like.dtype, like.device)
    hit = _POS_PROJ.get(attn)
    if hit is None or hit[0] != key or hit[1].size(1) <= max_distance:
        have = hit[1].size(1) if hit is not None and hit[0] == key else 0
        rows = max(max_distance + 1, 2 * have)
        with torch.no_grad():
            emb = relative_embeddings(pos_enc, rows - 1, like)
            proj = attn.linear_pos(emb).view(rows, attn.h, attn.d_k).transpose(0, 1)
        hit = (key, proj)
        _POS_PROJ[attn] = hit
    return hit[1][:, : max_distance + 1]


def attention_chunk(
    attn: torch.nn.Module,
    x: torch.Tensor,
    cache: AttentionCache,
    left_context: int,
    pos_enc: Optional[torch.nn.Module] = None,
) -> Tuple[torch.Tensor, AttentionCache]:
    """Causal attention of the chunk x (B, t, d) over the cache and itself.

    Args:
        attn: ESPnet ``MultiHeadedAttention`` or ``RelPositionMultiHeadedAttention`` (latest).
        x: the chunk's (normalised) input.
        cache: keys and values of the preceding frames.
        left_context: L, the frames of past a query may see (-1: all).
        pos_enc: the encoder's ``RelPositionalEncoding`` (needed for relative attention).

    Returns:
        (B, t, d) outputs and the cache for the next chunk.
    """
    t = x.size(1)
    q, k, v = attn.forward_qkv(x, x, x)  # (B, h, t, d_k)
    if cache.key is not None:
        k = torch.cat([cache.key, k], dim=2)
        v = torch.cat([cache.value, v], dim=2)
    c = k.size(2) - t  # cached frames
    # query i (chunk position) sits at key position c + i; distance to key j is c + i - j
    dist = (torch.arange(t, device=x.device)[:, None] + c) - torch.arange(c + t, device=x.device)
    allowed = dist >= 0
    if left_context >= 0:
        allowed &= dist <= left_context
    if isinstance(attn, RelPositionMultiHeadedAttention):
        if not isinstance(pos_enc, RelPositionalEncoding):
            raise ValueError("relative self-attention needs the encoder's RelPositionalEncoding")
        qt = q.transpose(1, 2)  # (B, t, h, d_k)
        q_u = (qt + attn.pos_bias_u).transpose(1, 2)
        q_v = (qt + attn.pos_bias_v).transpose(1, 2)
        p = projected_distances(attn, pos_enc, c + t - 1, x)  # (h, R+1, d_k)
        bd = torch.matmul(q_v, p.transpose(-2, -1))  # (B, h, t, R+1): by distance
        bd = bd.gather(-1, dist.clamp(min=0).expand(*bd.shape[:2], t, c + t))
        scores = (torch.matmul(q_u, k.transpose(-2, -1)) + bd) / math.sqrt(attn.d_k)
    else:
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(attn.d_k)
    out = attn.forward_attention(v, scores, allowed[None])
    keep = k.size(2) if left_context < 0 else min(left_context, k.size(2))
    new_cache = AttentionCache(k[:, :, k.size(2) - keep :], v[:, :, v.size(2) - keep :]) \
        if keep > 0 else AttentionCache()
    return out, new_cache
