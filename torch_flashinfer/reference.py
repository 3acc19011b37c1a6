"""The reference implementation of the ``flashinfer`` ops: plain PyTorch, fp32 accumulation.

It is the CPU implementation of the ops and the semantics every kernel must reproduce:

- query ``i`` of a sequence with ``seqlen_q`` queries and ``seqlen_k`` keys sits at key
  position ``i + seqlen_k - seqlen_q`` (bottom-right alignment);
- ``causal`` keeps keys ``j <= pos``; the window ``(left, right)`` keeps
  ``pos - left <= j <= pos + right`` (``-1`` = unbounded on that side);
- logit = ``softcap(scale * q.k) - slope * |pos - j|`` with ``softcap(x) = c * tanh(x / c)``
  when ``c > 0``;
- a query that sees no key gets zeros and ``lse = -inf``; ``lse`` is the natural log.

Memory stays bounded: queries and keys are processed in chunks with an online softmax,
so no ``seqlen_q x seqlen_k`` matrix is ever held (a chunk holds at most
``_CHUNK_ELEMENTS`` fp32 scores).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

Tensor = torch.Tensor

_CHUNK_ELEMENTS = 1 << 22  # 16 MiB of fp32 scores per (query chunk x key chunk) step
_Q_CHUNK = 1024


def _attend_one(q: Tensor, k: Tensor, v: Tensor, slopes: Optional[Tensor], scale: float, causal: bool,
                window_left: int, window_right: int, softcap: float) -> tuple[Tensor, Tensor]:
    """Attention of one sequence. q: (sq, hq, d); k, v: (sk, hk, d). Returns out (sq, hq, d) fp32, lse (hq, sq)."""
    sq, hq, d = q.shape
    sk, hk, _ = k.shape
    groups = hq // hk
    device = q.device
    out = torch.zeros(sq, hq, d, dtype=torch.float32, device=device)
    lse = torch.full((hq, sq), -math.inf, dtype=torch.float32, device=device)
    if sq == 0 or sk == 0:
        return out, lse
    kf = k.float().permute(1, 0, 2)  # [hk, sk, d]
    vf = v.float().permute(1, 0, 2)  # [hk, sk, d]
    # Query head h reads K/V head h // groups: view queries as [hk, groups, sq, d].
    qf = q.float().permute(1, 0, 2).reshape(hk, groups, sq, d)
    slopes_g = None if slopes is None else slopes.float().reshape(hk, groups, 1, 1)
    right = window_right if window_right >= 0 else None  # None: keys to the right are unbounded
    if causal:
        right = 0 if right is None else min(right, 0)
    shift = sk - sq
    q_chunk = min(sq, _Q_CHUNK)
    k_chunk = max(16, _CHUNK_ELEMENTS // (hq * q_chunk))
    for q0 in range(0, sq, q_chunk):
        q1 = min(sq, q0 + q_chunk)
        pos = torch.arange(q0, q1, device=device) + shift  # key position of each query
        lo = 0 if window_left < 0 else max(0, q0 + shift - window_left)
        hi = sk if right is None else max(0, min(sk, q1 + shift + right))
        m = torch.full((hk, groups, q1 - q0, 1), -math.inf, device=device)
        l = torch.zeros((hk, groups, q1 - q0, 1), device=device)
        acc = torch.zeros((hk, groups, q1 - q0, d), device=device)
        for k0 in range(lo, hi, k_chunk):
            k1 = min(hi, k0 + k_chunk)
            s = torch.matmul(qf[:, :, q0:q1], kf[:, None, k0:k1].transpose(-1, -2)) * scale
            if softcap > 0:
                s = torch.tanh(s / softcap) * softcap
            j = torch.arange(k0, k1, device=device)
            dist = pos[:, None] - j[None, :]  # [q, k]
            if slopes_g is not None:
                s = s - slopes_g * dist.abs().float()
            allowed = torch.ones_like(dist, dtype=torch.bool)
            if right is not None:
                allowed &= dist >= -right
            if window_left >= 0:
                allowed &= dist <= window_left
            s = s.masked_fill(~allowed, -math.inf)
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
            p = torch.exp(s - m_safe)
            alpha = torch.exp(m - m_safe)
            l = l * alpha + p.sum(dim=-1, keepdim=True)
            acc = acc * alpha + torch.matmul(p, vf[:, None, k0:k1])
            m = m_new
        seen = l > 0
        acc = torch.where(seen, acc / torch.where(seen, l, torch.ones_like(l)), torch.zeros_like(acc))
        row_lse = torch.where(seen, m + torch.log(torch.where(seen, l, torch.ones_like(l))), torch.full_like(l, -math.inf))
        out[q0:q1] = acc.reshape(hq, q1 - q0, d).permute(1, 0, 2)
        lse[:, q0:q1] = row_lse.reshape(hq, q1 - q0)
    return out, lse


def _keys_of(k: Tensor, b: int, kv_layout: str, cu_k: Optional[list], lens: Optional[list],
             pads: Optional[list], block_table: Optional[Tensor]) -> Tensor:
    """The valid keys (or values) of sequence ``b`` as (seqlen_k, hk, d)."""
    if kv_layout == "varlen":
        return k[cu_k[b]:cu_k[b + 1]]
    if kv_layout == "paged":
        page = k.shape[1]
        n_pages = -(-lens[b] // page)
        keys = k[block_table[b, :n_pages].long()].reshape(n_pages * page, *k.shape[2:])
    else:
        keys = k[b]
    end = lens[b] if lens is not None else keys.shape[0]
    start = pads[b] if pads is not None else 0
    return keys[start:end]


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Optional[Tensor] = None,
    cu_seqlens_k: Optional[Tensor] = None,
    cache_seqlens: Optional[Tensor] = None,
    cache_leftpad: Optional[Tensor] = None,
    block_table: Optional[Tensor] = None,
    alibi_slopes: Optional[Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_left: int = -1,
    window_right: int = -1,
    softcap: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Reference attention on any device; arguments and layouts as ``torch.ops.flashinfer.fwd``.

    Returns ``out`` (dtype of q, q's shape) and ``lse`` (fp32; (batch, heads_q, seqlen_q)
    for dense q, (heads_q, total_q) for packed q).
    """
    varlen_q = cu_seqlens_q is not None
    kv_layout = "paged" if block_table is not None else "varlen" if cu_seqlens_k is not None else "dense"
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    cu_q = cu_seqlens_q.tolist() if varlen_q else None
    cu_k = cu_seqlens_k.tolist() if cu_seqlens_k is not None else None
    lens = cache_seqlens.tolist() if cache_seqlens is not None else None
    pads = cache_leftpad.tolist() if cache_leftpad is not None else None
    batch = len(cu_q) - 1 if varlen_q else q.shape[0]

    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if varlen_q:
        lse = torch.empty((q.shape[1], q.shape[0]), dtype=torch.float32, device=q.device)
    else:
        lse = torch.empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32, device=q.device)
    for b in range(batch):
        qb = q[cu_q[b]:cu_q[b + 1]] if varlen_q else q[b]
        kb = _keys_of(k, b, kv_layout, cu_k, lens, pads, block_table)
        vb = _keys_of(v, b, kv_layout, cu_k, lens, pads, block_table)
        slopes = None
        if alibi_slopes is not None:
            slopes = alibi_slopes[b] if alibi_slopes.dim() == 2 else alibi_slopes
        ob, lseb = _attend_one(qb, kb, vb, slopes, scale, causal, window_left, window_right, softcap)
        if varlen_q:
            out[cu_q[b]:cu_q[b + 1]] = ob.to(q.dtype)
            lse[:, cu_q[b]:cu_q[b + 1]] = lseb
        else:
            out[b] = ob.to(q.dtype)
            lse[b] = lseb
    return out, lse


def append_kv(k_cache: Tensor, v_cache: Tensor, k: Tensor, v: Tensor, cache_seqlens: Tensor,
              block_table: Optional[Tensor] = None) -> None:
    """Write new tokens k, v (batch, s_new, hk, d) into the caches at positions cache_seqlens[b] + i."""
    batch, s_new = k.shape[:2]
    if s_new == 0:
        return
    lens = cache_seqlens.tolist()
    for b in range(batch):
        pos = torch.arange(lens[b], lens[b] + s_new, device=k.device)
        if block_table is None:
            k_cache[b, pos] = k[b]
            v_cache[b, pos] = v[b]
        else:
            page = k_cache.shape[1]
            blocks = block_table[b].long()[pos // page]
            k_cache[blocks, pos % page] = k[b]
            v_cache[blocks, pos % page] = v[b]
