"""Argument checks shared by every implementation of the ``flashinfer`` ops.

Written once and called by the fake (meta) implementation, the CPU reference and the
CUDA binding, so a bad call raises the same error whichever path runs it.

Two kinds of checks:
- metadata (shape, dtype, device, stride, option values): always, also on fake tensors;
- data (``cu_seqlens`` monotonic, ``block_table`` in range, cache overflow): they read
  tensor values, so they run on CPU tensors, and on CUDA tensors only when
  ``TORCH_FLASHINFER_CHECK_DATA=1`` (a host sync per call; never while a CUDA graph is
  being captured). Kernels never read outside the tensors they are given either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch

HEAD_DIMS = (32, 64, 96, 128, 160, 192, 224, 256)
ALGOS = ("auto", "fa1", "fa2", "fa3", "split_kv")
GPU_DTYPES = (torch.float16, torch.bfloat16)
CPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

Tensor = torch.Tensor


@dataclass(frozen=True)
class FwdLayout:
    """What the arguments of ``fwd`` describe, derived once from their shapes."""

    batch: int
    heads_q: int
    heads_k: int
    head_dim: int
    varlen_q: bool  # q is (total_q, heads_q, d) with cu_seqlens_q
    kv_layout: str  # "dense" (b, s, hk, d) | "varlen" (total_k, hk, d) | "paged" (blocks, page, hk, d)
    total_q: int  # queries of all sequences: q.shape[0] for varlen q, else batch * seqlen_q


def _fail(op: str, msg: str, exc=ValueError):
    raise exc(f"flashinfer.{op}: {msg}")


def _check_index_tensor(op: str, name: str, t: Tensor, device, numel: Optional[int] = None, ndim: int = 1,
                        like_name: str = "q"):
    if t.dtype != torch.int32:
        _fail(op, f"{name} must be int32, got {t.dtype}")
    if t.dim() != ndim:
        _fail(op, f"{name} must have {ndim} dim(s), got shape {tuple(t.shape)}")
    if t.device != device:
        _fail(op, f"{name} is on {t.device} but {like_name} is on {device}")
    if numel is not None and t.shape[0] != numel:
        _fail(op, f"{name} must have {numel} entries along dim 0, got {t.shape[0]}")
    if t.stride(-1) != 1:
        _fail(op, f"{name} must be contiguous in its last dim")


def _check_qkv_tensor(op: str, name: str, t: Tensor, like: Tensor, ndim: int, like_name: str = "q"):
    if t.dim() != ndim:
        _fail(op, f"{name} must have {ndim} dims, got shape {tuple(t.shape)}")
    if t.dtype != like.dtype:
        _fail(op, f"{name} has dtype {t.dtype} but {like_name} has {like.dtype}")
    if t.device != like.device:
        _fail(op, f"{name} is on {t.device} but {like_name} is on {like.device}")
    if t.stride(-1) != 1:
        _fail(op, f"{name} must be contiguous in its last dim (head_dim), got strides {tuple(t.stride())}")
    if t.device.type == "cuda":
        # The kernels copy rows in 16-byte chunks: every row must start on a 16-byte boundary.
        elems = 16 // t.element_size()
        if t.storage_offset() % elems or any(n > 1 and s % elems for n, s in zip(t.shape[:-1], t.stride()[:-1])):
            _fail(op, f"{name}'s rows must be 16-byte aligned: its strides {tuple(t.stride())} and storage offset "
                      f"{t.storage_offset()} must be multiples of {elems} elements (e.g. pass {name}.contiguous())")


def _check_head_dim(op: str, head_dim: int):
    if head_dim not in HEAD_DIMS:
        _fail(op, f"head_dim {head_dim} is not supported; supported: {', '.join(map(str, HEAD_DIMS))}")


def _check_dtype(op: str, q: Tensor):
    allowed = CPU_DTYPES if q.device.type in ("cpu", "meta") else GPU_DTYPES
    if q.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        _fail(op, f"dtype {q.dtype} is not supported on {q.device.type}; supported: {names}")


# Read once: the decode hot path must not touch os.environ per call.
CHECK_CUDA_DATA = os.environ.get("TORCH_FLASHINFER_CHECK_DATA") == "1"


def check_data_enabled(t: Tensor) -> bool:
    """Whether value-reading checks may run for tensors on ``t``'s device."""
    device_type = t.device.type
    if device_type == "cpu":
        return not isinstance(t, torch._subclasses.FakeTensor)
    if device_type == "cuda" and CHECK_CUDA_DATA:
        return not torch.cuda.is_current_stream_capturing()
    return False


def check_fwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Optional[Tensor],
    cu_seqlens_k: Optional[Tensor],
    max_seqlen_q: int,
    max_seqlen_k: int,
    cache_seqlens: Optional[Tensor],
    cache_leftpad: Optional[Tensor],
    block_table: Optional[Tensor],
    alibi_slopes: Optional[Tensor],
    softmax_scale: Optional[float],
    window_left: int,
    window_right: int,
    softcap: float,
    num_splits: int,
    algo: str,
) -> FwdLayout:
    op = "fwd"
    if algo not in ALGOS:
        _fail(op, f"unknown algo {algo!r}; choose one of {', '.join(ALGOS)}")
    _check_dtype(op, q)
    varlen_q = cu_seqlens_q is not None
    _check_qkv_tensor(op, "q", q, q, 3 if varlen_q else 4)
    heads_q, head_dim = q.shape[-2], q.shape[-1]
    _check_head_dim(op, head_dim)

    if block_table is not None:
        kv_layout = "paged"
        if cu_seqlens_k is not None:
            _fail(op, "pass either block_table (paged K/V) or cu_seqlens_k (packed K/V), not both")
        if cache_seqlens is None:
            _fail(op, "a paged K/V cache (block_table) needs cache_seqlens")
    elif cu_seqlens_k is not None:
        kv_layout = "varlen"
        if cache_seqlens is not None or cache_leftpad is not None:
            _fail(op, "cache_seqlens/cache_leftpad apply to dense or paged caches, not to packed K/V (cu_seqlens_k)")
    else:
        kv_layout = "dense"
    kv_ndim = 3 if kv_layout == "varlen" else 4
    _check_qkv_tensor(op, "k", k, q, kv_ndim)
    _check_qkv_tensor(op, "v", v, q, kv_ndim)
    if tuple(k.shape) != tuple(v.shape):
        _fail(op, f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    heads_k = k.shape[-2]
    if k.shape[-1] != head_dim:
        _fail(op, f"k/v head_dim {k.shape[-1]} differs from q head_dim {head_dim}")
    if heads_k == 0 or heads_q % heads_k != 0:
        _fail(op, f"heads_q ({heads_q}) must be a multiple of heads_k ({heads_k})")

    if varlen_q:
        if cu_seqlens_q.dim() != 1 or cu_seqlens_q.shape[0] < 2:
            _fail(op, f"cu_seqlens_q must be 1-D with batch+1 >= 2 entries, got shape {tuple(cu_seqlens_q.shape)}")
        _check_index_tensor(op, "cu_seqlens_q", cu_seqlens_q, q.device)
        batch = cu_seqlens_q.shape[0] - 1
        if max_seqlen_q < 0:
            _fail(op, f"max_seqlen_q must be >= 0, got {max_seqlen_q}")
    else:
        batch = q.shape[0]
    if kv_layout == "dense":
        if k.shape[0] != batch:
            _fail(op, f"k has batch {k.shape[0]} but q has batch {batch}")
    elif kv_layout == "varlen":
        _check_index_tensor(op, "cu_seqlens_k", cu_seqlens_k, q.device, batch + 1)
        if max_seqlen_k < 0:
            _fail(op, f"max_seqlen_k must be >= 0, got {max_seqlen_k}")
    else:
        _check_index_tensor(op, "block_table", block_table, q.device, batch, ndim=2)
    if cache_seqlens is not None:
        _check_index_tensor(op, "cache_seqlens", cache_seqlens, q.device, batch)
    if cache_leftpad is not None:
        if cache_seqlens is None:
            _fail(op, "cache_leftpad needs cache_seqlens")
        _check_index_tensor(op, "cache_leftpad", cache_leftpad, q.device, batch)

    if alibi_slopes is not None:
        if alibi_slopes.dtype != torch.float32:
            _fail(op, f"alibi_slopes must be float32, got {alibi_slopes.dtype}")
        if alibi_slopes.device != q.device:
            _fail(op, f"alibi_slopes is on {alibi_slopes.device} but q is on {q.device}")
        if tuple(alibi_slopes.shape) not in ((heads_q,), (batch, heads_q)):
            _fail(op, f"alibi_slopes must have shape ({heads_q},) or ({batch}, {heads_q}), got {tuple(alibi_slopes.shape)}")
        if alibi_slopes.stride(-1) != 1:
            _fail(op, "alibi_slopes must be contiguous in its last dim")
    if softmax_scale is not None and not softmax_scale > 0:
        _fail(op, f"softmax_scale must be > 0, got {softmax_scale}")
    if window_left < -1 or window_right < -1:
        _fail(op, f"window sizes must be >= -1 (-1 = unbounded), got ({window_left}, {window_right})")
    if not softcap >= 0:
        _fail(op, f"softcap must be >= 0 (0 = off), got {softcap}")
    if num_splits < 0:
        _fail(op, f"num_splits must be >= 0 (0 = heuristic), got {num_splits}")

    total_q = q.shape[0] if varlen_q else batch * q.shape[1]
    layout = FwdLayout(batch, heads_q, heads_k, head_dim, varlen_q, kv_layout, total_q)
    if check_data_enabled(q):
        _check_fwd_data(q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                        cache_seqlens, cache_leftpad, block_table, layout)
    return layout


def _check_cu_seqlens(op: str, name: str, cu: Tensor, total: int, max_seqlen: int, max_name: str):
    vals = cu.tolist()
    if vals[0] != 0:
        _fail(op, f"{name} must start at 0, got {vals[0]}")
    lens = [b - a for a, b in zip(vals[:-1], vals[1:])]
    if min(lens) < 0:
        _fail(op, f"{name} must be non-decreasing, got {vals}")
    if vals[-1] != total:
        _fail(op, f"{name}[-1] = {vals[-1]} but the packed tensor holds {total} tokens")
    if max(lens) > max_seqlen:
        _fail(op, f"{max_name} = {max_seqlen} is smaller than the longest sequence ({max(lens)})")


def _check_fwd_data(q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                    cache_seqlens, cache_leftpad, block_table, layout: FwdLayout):
    op = "fwd"
    if layout.varlen_q:
        _check_cu_seqlens(op, "cu_seqlens_q", cu_seqlens_q, q.shape[0], max_seqlen_q, "max_seqlen_q")
    if layout.kv_layout == "varlen":
        _check_cu_seqlens(op, "cu_seqlens_k", cu_seqlens_k, k.shape[0], max_seqlen_k, "max_seqlen_k")
    if cache_seqlens is not None:
        capacity = k.shape[1] * (block_table.shape[1] if block_table is not None else 1)
        _check_cache_lengths(op, cache_seqlens, cache_leftpad, capacity)
    if block_table is not None:
        _check_block_table(op, block_table, cache_seqlens, k.shape[1], k.shape[0])


def _check_cache_lengths(op, cache_seqlens, cache_leftpad, capacity, new_tokens=0):
    lens = cache_seqlens.tolist()
    if min(lens) < 0:
        _fail(op, f"cache_seqlens must be >= 0, got {lens}")
    if max(lens) + new_tokens > capacity:
        what = f"cache_seqlens + {new_tokens} new tokens" if new_tokens else "cache_seqlens"
        _fail(op, f"{what} exceeds the cache capacity of {capacity} tokens per sequence (max {max(lens) + new_tokens})")
    if cache_leftpad is not None:
        pads = cache_leftpad.tolist()
        if any(p < 0 or p > n for p, n in zip(pads, lens)):
            _fail(op, f"cache_leftpad must lie in [0, cache_seqlens], got {pads} for lengths {lens}")


def _check_block_table(op, block_table, seqlens, page_size, num_blocks, new_tokens=0):
    for b, n in enumerate(seqlens.tolist()):
        pages = -(-(n + new_tokens) // page_size)
        used = block_table[b, :pages]
        if pages and (int(used.min()) < 0 or int(used.max()) >= num_blocks):
            _fail(op, f"block_table row {b} points outside the {num_blocks} cache blocks: {used.tolist()}")


def check_append_kv(
    k_cache: Tensor,
    v_cache: Tensor,
    k: Tensor,
    v: Tensor,
    cache_seqlens: Tensor,
    block_table: Optional[Tensor],
) -> None:
    op = "append_kv"
    _check_dtype(op, k)
    for name, t in (("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache)):
        _check_qkv_tensor(op, name, t, k, 4, "k")
    if tuple(k.shape) != tuple(v.shape):
        _fail(op, f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if tuple(k_cache.shape) != tuple(v_cache.shape):
        _fail(op, f"k_cache and v_cache must have the same shape, got {tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    batch, new_tokens, heads_k, head_dim = k.shape
    _check_head_dim(op, head_dim)
    if tuple(k_cache.shape[2:]) != (heads_k, head_dim):
        _fail(op, f"cache (heads_k, head_dim) {tuple(k_cache.shape[2:])} differs from the new tokens' {(heads_k, head_dim)}")
    if block_table is None:
        if k_cache.shape[0] != batch:
            _fail(op, f"k_cache has batch {k_cache.shape[0]} but k has batch {batch}")
        capacity = k_cache.shape[1]
    else:
        _check_index_tensor(op, "block_table", block_table, k.device, batch, ndim=2, like_name="k")
        capacity = k_cache.shape[1] * block_table.shape[1]
    _check_index_tensor(op, "cache_seqlens", cache_seqlens, k.device, batch, like_name="k")
    if check_data_enabled(k):
        _check_cache_lengths(op, cache_seqlens, None, capacity, new_tokens)
        if block_table is not None:
            _check_block_table(op, block_table, cache_seqlens, k_cache.shape[1], k_cache.shape[0], new_tokens)
