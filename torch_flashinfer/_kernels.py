"""CUDA implementation of the ``flashinfer`` ops: which kernel library runs a call, and the call.

Arguments arrive validated (``_validation``); this module only picks the kernel (``resolve_algo``,
the one place where algorithms are chosen), loads its library on first use and hands the
tensors to the binding, which launches on the current stream of the tensors' device.
"""

from __future__ import annotations

import ctypes
from typing import Optional

import torch

from . import _build
from ._build import KernelLibrary
from ._validation import FwdLayout

Tensor = torch.Tensor

FAMILIES = ("fa1", "fa2", "split_kv")  # kernel families built so far; "auto" picks among them
DECODE_MAX_SEQLEN_Q = 8  # "auto" sends dense q with at most this many tokens to split_kv
_DTYPE_TAGS = {torch.float16: "fp16", torch.bfloat16: "bf16"}
COMMON = KernelLibrary("common", ("kernels/append_kv.cu",))


def fwd_library(family: str, dtype: torch.dtype, head_dim: int) -> KernelLibrary:
    return KernelLibrary(
        f"{family}_{_DTYPE_TAGS[dtype]}_hd{head_dim}",
        (f"kernels/{family}_fwd.cu",),
        (f"TFI_HEAD_DIM={head_dim}", f"TFI_DTYPE_BF16={int(dtype == torch.bfloat16)}"),
    )


def all_libraries() -> list[KernelLibrary]:
    from ._validation import HEAD_DIMS

    return [COMMON] + [fwd_library(f, dt, d) for f in FAMILIES for dt in _DTYPE_TAGS for d in HEAD_DIMS]


def build_all(out_dir=None, archs: Optional[list[str]] = None) -> list:
    """Build every kernel library, several at a time: ahead of time (setup.py with
    TORCH_FLASHINFER_AOT=1, default archs sm_80 + sm_90a) or into the cache (``out_dir=None``)."""
    from concurrent.futures import ThreadPoolExecutor

    archs = archs or (_build.cuda_archs() if out_dir is None else ["80", "90a"])
    with ThreadPoolExecutor(max_workers=_build.parallel_builds()) as pool:
        return list(pool.map(lambda lib: _build.build_kernel_library(lib, archs, out_dir), all_libraries()))


def resolve_algo(algo: str, layout: FwdLayout, seqlen_q: int) -> str:
    """The kernel family that runs a call: the one place where "auto" is decided.

    Decode-shaped calls (dense q of at most DECODE_MAX_SEQLEN_Q tokens) go to split_kv, which
    packs a K/V head's query heads into one tile and splits the keys over the SMs; everything
    else (prefill, packed hybrid batches) goes to fa2. fa1 (FlashAttention-1's loop order, kept
    to reproduce the seed study) is never chosen: on the H100 it is slower than fa2 on every
    row of the seed suite and than split_kv on every decode row (benchmarks/results/h100/seed.json).
    """
    if algo == "auto":
        return "split_kv" if not layout.varlen_q and seqlen_q <= DECODE_MAX_SEQLEN_Q else "fa2"
    if algo not in FAMILIES:
        raise NotImplementedError(f"flashinfer.fwd: algo {algo!r} has no CUDA kernel yet; available: "
                                  f"auto, {', '.join(FAMILIES)}")
    if algo == "split_kv" and layout.varlen_q:
        raise NotImplementedError("flashinfer.fwd: algo 'split_kv' takes dense q (batch, seqlen_q, heads, head_dim)")
    return algo


# Split-KV decode: how many CTAs share one sequence's keys. A decode CTA takes ~110 KB of shared
# memory up to d=128 (two per SM) and ~140 KB above (one per SM); the splits fill exactly one
# wave of resident CTAs while each split keeps >= 256 keys (4+ 16-key steps per warp), so the
# per-split merge and the combine stay small next to the key reads.
_SPLIT_MIN_KEYS = 256
_SPLIT_MAX = 128


def decode_rows_per_cta(head_dim: int) -> int:
    """Packed query rows per split_kv CTA (decode/split_kv_kernel.cuh, Shape::kRows)."""
    return 64 if head_dim <= 64 else 32 if head_dim <= 128 else 16


def decode_splits(batch: int, heads_q: int, heads_k: int, seqlen_q: int, seqlen_k: int, head_dim: int,
                  num_sms: int, requested: int) -> int:
    """Number of key splits for split_kv, from shapes only (never device data: CUDA-graph safe)."""
    if requested > 0:
        return min(requested, 65535)
    rows = heads_q // heads_k * seqlen_q
    ctas = batch * heads_k * -(-rows // decode_rows_per_cta(head_dim))
    resident = (2 if head_dim <= 128 else 1) * num_sms
    splits = resident // ctas
    return max(1, min(splits, seqlen_k // _SPLIT_MIN_KEYS, _SPLIT_MAX))


_num_sms: dict = {}


def num_sms(device: torch.device) -> int:
    n = _num_sms.get(device.index)
    if n is None:
        n = _num_sms[device.index] = torch.cuda.get_device_properties(device).multi_processor_count
    return n


_entry_points: dict = {}  # (family, dtype, head_dim, device index) -> entry point address
_handles: list = []  # loaded libraries stay loaded for the life of the process
_binding = None


def _load_entry(lib: KernelLibrary, symbol: str, device: torch.device) -> int:
    path = _build.build_kernel_library(lib, _build.cuda_archs(device))
    handle = ctypes.CDLL(str(path))
    _handles.append(handle)
    return ctypes.cast(getattr(handle, symbol), ctypes.c_void_p).value


def _fwd_entry(family: str, dtype: torch.dtype, head_dim: int, device: torch.device) -> int:
    key = (family, dtype, head_dim, device.index)
    fn = _entry_points.get(key)
    if fn is None:
        fn = _entry_points[key] = _load_entry(fwd_library(family, dtype, head_dim), "tfi_fwd", device)
    return fn


def binding():
    global _binding
    if _binding is None:
        _binding = _build.load_binding()
    return _binding


def fwd(q, k, v, out, lse, layout: FwdLayout, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        cache_seqlens, cache_leftpad, block_table, alibi_slopes, softmax_scale, causal, window_left,
        window_right, softcap, num_splits, algo) -> None:
    seqlen_q = max_seqlen_q if layout.varlen_q else q.shape[1]
    family = resolve_algo(algo, layout, seqlen_q)
    kernel = _fwd_entry(family, q.dtype, layout.head_dim, q.device)
    if layout.kv_layout == "varlen":
        seqlen_k = max_seqlen_k
    elif layout.kv_layout == "paged":
        seqlen_k = block_table.shape[1] * k.shape[1]
    else:
        seqlen_k = k.shape[1]
    scale = softmax_scale if softmax_scale is not None else layout.head_dim ** -0.5
    workspace = None
    if family == "fa1":  # the running output and (max, sum) of every query row and head, fp32
        rows = q.shape[0] if layout.varlen_q else q.shape[0] * q.shape[1]
        workspace = torch.empty(rows * layout.heads_q * (layout.head_dim + 2), dtype=torch.float32, device=q.device)
    elif family == "split_kv":
        num_splits = decode_splits(layout.batch, layout.heads_q, layout.heads_k, seqlen_q, seqlen_k,
                                   layout.head_dim, num_sms(q.device), num_splits)
        if num_splits > 1:  # partial outputs + lse per split, fp32
            rows = layout.batch * seqlen_q * layout.heads_q
            workspace = torch.empty(num_splits * rows * (layout.head_dim + 1), dtype=torch.float32, device=q.device)
    binding().fwd(kernel, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, cache_seqlens, cache_leftpad,
                  block_table, alibi_slopes, seqlen_q, seqlen_k, scale, causal, window_left, window_right,
                  softcap, num_splits, workspace)


def append_kv(k_cache, v_cache, k, v, cache_seqlens, block_table) -> None:
    key = ("append_kv", k.device.index)
    fn = _entry_points.get(key)
    if fn is None:
        fn = _entry_points[key] = _load_entry(COMMON, "tfi_append_kv", k.device)
    binding().append_kv(fn, k_cache, v_cache, k, v, cache_seqlens, block_table)
