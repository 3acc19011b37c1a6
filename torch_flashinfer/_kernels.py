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

FAMILIES = ("fa2",)  # kernel families built so far; "auto" picks among them
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


def resolve_algo(algo: str, layout: FwdLayout) -> str:
    """The kernel family that runs a call: the one place where "auto" is decided."""
    if algo == "auto":
        return "fa2"
    if algo not in FAMILIES:
        raise NotImplementedError(f"flashinfer.fwd: algo {algo!r} has no CUDA kernel yet; available: "
                                  f"auto, {', '.join(FAMILIES)}")
    return algo


_entry_points: dict = {}
_handles: list = []  # loaded libraries stay loaded for the life of the process
_binding = None


def _entry(lib: KernelLibrary, symbol: str, device: torch.device) -> int:
    key = (lib.name, symbol, device.index)
    fn = _entry_points.get(key)
    if fn is None:
        path = _build.build_kernel_library(lib, _build.cuda_archs(device))
        handle = ctypes.CDLL(str(path))
        _handles.append(handle)
        fn = ctypes.cast(getattr(handle, symbol), ctypes.c_void_p).value
        _entry_points[key] = fn
    return fn


def binding():
    global _binding
    if _binding is None:
        _binding = _build.load_binding()
    return _binding


def fwd(q, k, v, out, lse, layout: FwdLayout, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        cache_seqlens, cache_leftpad, block_table, alibi_slopes, softmax_scale, causal, window_left,
        window_right, softcap, num_splits, algo) -> None:
    family = resolve_algo(algo, layout)
    kernel = _entry(fwd_library(family, q.dtype, layout.head_dim), "tfi_fwd", q.device)
    seqlen_q = max_seqlen_q if layout.varlen_q else q.shape[1]
    if layout.kv_layout == "varlen":
        seqlen_k = max_seqlen_k
    elif layout.kv_layout == "paged":
        seqlen_k = block_table.shape[1] * k.shape[1]
    else:
        seqlen_k = k.shape[1]
    scale = softmax_scale if softmax_scale is not None else layout.head_dim ** -0.5
    binding().fwd(kernel, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, cache_seqlens, cache_leftpad,
                  block_table, alibi_slopes, seqlen_q, seqlen_k, scale, causal, window_left, window_right,
                  softcap, num_splits, None)


def append_kv(k_cache, v_cache, k, v, cache_seqlens, block_table) -> None:
    binding().append_kv(_entry(COMMON, "tfi_append_kv", k.device), k_cache, v_cache, k, v, cache_seqlens,
                        block_table)
