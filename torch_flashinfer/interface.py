"""flash-attn compatible entry points over ``torch.ops.flashinfer``.

Argument names and meanings follow the ``flash_attn`` package's forward functions where they
overlap; ``algo=`` picks the kernel family (``"auto"``, ``"fa1"``, ``"fa2"``, ``"fa3"``, ...). Inference only:
``dropout_p`` must be 0 and nothing here records autograd history.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from . import ops

Tensor = torch.Tensor


def _check_no_dropout(dropout_p: float) -> None:
    if dropout_p != 0.0:
        raise ValueError(f"flashinfer: dropout_p must be 0.0 (inference-only kernels), got {dropout_p}")


def _pack_result(out: Tensor, lse: Tensor, return_attn_probs: bool, return_softmax_lse: bool):
    if return_attn_probs:
        return out, lse, None  # flash-attn's third value (dropout mask) does not exist here
    if return_softmax_lse:
        return out, lse
    return out


def flash_attn_func(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Optional[Tensor] = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    *,
    return_softmax_lse: bool = False,
    algo: str = "auto",
):
    """Dense attention.

    Args:
        q: ``(batch, seqlen_q, heads_q, head_dim)``, fp16/bf16 (fp32 too on CPU).
        k, v: ``(batch, seqlen_k, heads_k, head_dim)``; ``heads_q % heads_k == 0`` (GQA/MQA).
            Any strides with a contiguous last dim, e.g. ``cache.transpose(1, 2)`` of a
            ``(batch, heads, seq, dim)`` cache.
        softmax_scale: defaults to ``head_dim ** -0.5``.
        causal: bottom-right aligned: query ``i`` sees keys ``j <= i + seqlen_k - seqlen_q``.
        window_size: ``(left, right)`` keys around the aligned position, ``-1`` = unbounded.
        softcap: logits become ``softcap * tanh(logit / softcap)`` when > 0.
        alibi_slopes: fp32 ``(heads_q,)`` or ``(batch, heads_q)``; adds ``-slope * |i_aligned - j|``.
        deterministic: accepted for compatibility; the forward pass is always deterministic.
        return_attn_probs: return ``(out, lse, None)`` like flash-attn.
        return_softmax_lse: return ``(out, lse)``.
        algo: kernel family, ``"auto"`` picks the fastest.

    Returns:
        ``out`` ``(batch, seqlen_q, heads_q, head_dim)`` in q's dtype; with lse requested also
        ``lse`` fp32 ``(batch, heads_q, seqlen_q)``, natural log, ``-inf`` for rows that see no key.
    """
    del deterministic
    _check_no_dropout(dropout_p)
    out, lse = ops.fwd(
        q, k, v, alibi_slopes=alibi_slopes, softmax_scale=softmax_scale, causal=causal,
        window_left=window_size[0], window_right=window_size[1], softcap=softcap, algo=algo,
        return_lse=return_attn_probs or return_softmax_lse)
    return _pack_result(out, lse, return_attn_probs, return_softmax_lse)


def flash_attn_varlen_func(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Optional[Tensor] = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    block_table: Optional[Tensor] = None,
    *,
    return_softmax_lse: bool = False,
    algo: str = "auto",
):
    """Packed variable-length attention: many sequences of different lengths in one launch.

    Args:
        q: ``(total_q, heads_q, head_dim)``: the sequences' queries concatenated.
        k, v: ``(total_k, heads_k, head_dim)``; or, with ``block_table``, a paged cache
            ``(num_blocks, page_size, heads_k, head_dim)``.
        cu_seqlens_q, cu_seqlens_k: int32 ``(batch + 1,)`` prefix sums of the sequence lengths
            (with ``block_table``, ``cu_seqlens_k`` gives each sequence's cached length).
        max_seqlen_q, max_seqlen_k: the longest sequence of each.
        block_table: int32 ``(batch, max_blocks)``: page indices of each sequence's keys.
        Other arguments: as :func:`flash_attn_func`.

    Returns:
        ``out`` ``(total_q, heads_q, head_dim)``; lse, when requested, fp32 ``(heads_q, total_q)``.
    """
    del deterministic
    _check_no_dropout(dropout_p)
    cache_seqlens = None
    if block_table is not None:
        cache_seqlens = cu_seqlens_k[1:] - cu_seqlens_k[:-1]
        cu_seqlens_k = None
    out, lse = ops.fwd(
        q, k, v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, max_seqlen_q=max_seqlen_q,
        max_seqlen_k=max_seqlen_k, cache_seqlens=cache_seqlens, block_table=block_table,
        alibi_slopes=alibi_slopes, softmax_scale=softmax_scale, causal=causal,
        window_left=window_size[0], window_right=window_size[1], softcap=softcap, algo=algo,
        return_lse=return_attn_probs or return_softmax_lse)
    return _pack_result(out, lse, return_attn_probs, return_softmax_lse)


def flash_attn_with_kvcache(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    k: Optional[Tensor] = None,
    v: Optional[Tensor] = None,
    rotary_cos: Optional[Tensor] = None,
    rotary_sin: Optional[Tensor] = None,
    cache_seqlens: Optional[Union[int, Tensor]] = None,
    cache_batch_idx: Optional[Tensor] = None,
    cache_leftpad: Optional[Tensor] = None,
    block_table: Optional[Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    rotary_interleaved: bool = True,
    alibi_slopes: Optional[Tensor] = None,
    num_splits: int = 0,
    return_softmax_lse: bool = False,
    *,
    algo: str = "auto",
):
    """Attention over a KV cache (decode and chunked prefill), optionally appending new tokens first.

    Args:
        q: ``(batch, seqlen_q, heads_q, head_dim)``; ``seqlen_q`` is 1 for decode.
        k_cache, v_cache: dense ``(batch, capacity, heads_k, head_dim)`` (any strides with a
            contiguous last dim, e.g. a transformers ``(batch, heads, seq, dim)`` cache
            transposed) or paged ``(num_blocks, page_size, heads_k, head_dim)`` with ``block_table``.
        k, v: optional new tokens ``(batch, seqlen_new, heads_k, head_dim)``, written into the
            cache at ``cache_seqlens`` (in place) before attending.
        cache_seqlens: int or int32 ``(batch,)``: tokens already in the cache (before k, v).
            ``None`` means the whole dense cache is valid.
        cache_leftpad: int32 ``(batch,)``: cache rows before it are padding and ignored.
        block_table: int32 ``(batch, max_blocks)`` for a paged cache.
        num_splits: split the keys across this many CTAs (decode); 0 = heuristic.
        causal, window_size, softcap, alibi_slopes, softmax_scale: as :func:`flash_attn_func`;
            causal alignment counts the appended tokens as the last ``seqlen_q`` keys.
        rotary_cos, rotary_sin, rotary_interleaved, cache_batch_idx: not supported (apply
            rotary embeddings before the call; index the cache yourself).

    Returns:
        ``out`` like q; with ``return_softmax_lse`` also lse fp32 ``(batch, heads_q, seqlen_q)``.
    """
    del rotary_interleaved
    if rotary_cos is not None or rotary_sin is not None:
        raise NotImplementedError("flashinfer: rotary embedding inside the kernel is not supported; "
                                  "apply RoPE to q and k before the call")
    if cache_batch_idx is not None:
        raise NotImplementedError("flashinfer: cache_batch_idx is not supported; index the cache before the call")
    if (k is None) != (v is None):
        raise ValueError("flashinfer: pass both k and v (new tokens) or neither")
    if isinstance(cache_seqlens, int):
        cache_seqlens = torch.full((q.shape[0],), cache_seqlens, dtype=torch.int32, device=q.device)
    if k is not None:
        if cache_seqlens is None:
            raise ValueError("flashinfer: appending k, v needs cache_seqlens (where the new tokens go)")
        torch.ops.flashinfer.append_kv.default(k_cache, v_cache, k, v, cache_seqlens, block_table)
        cache_seqlens = cache_seqlens + k.shape[1]
    out, lse = ops.fwd(
        q, k_cache, v_cache, cache_seqlens=cache_seqlens, cache_leftpad=cache_leftpad,
        block_table=block_table, alibi_slopes=alibi_slopes, softmax_scale=softmax_scale, causal=causal,
        window_left=window_size[0], window_right=window_size[1], softcap=softcap, num_splits=num_splits,
        algo=algo, return_lse=return_softmax_lse)
    return (out, lse) if return_softmax_lse else out
