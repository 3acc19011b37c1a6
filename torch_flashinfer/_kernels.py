"""CUDA implementation of the ``flashinfer`` ops: which kernel library runs a call, and the call.

The CUDA kernels of the ops live in the binding (csrc/binding/binding.cpp). For each distinct
signature of a call's arguments it asks ``plan_fwd`` / ``plan_append_kv`` here once: they run
the validation shared with the fake and CPU implementations (``_validation``), pick the kernel
(``resolve_algo``, the one place where algorithms are chosen) and load its library on first
use. The binding then launches on the current stream of the tensors' device.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Callable, Optional

import torch

from . import _build, _validation
from ._build import KernelLibrary
from ._validation import FwdLayout

Tensor = torch.Tensor

FAMILIES = ("fa1", "fa2", "fa3", "split_kv")  # kernel families built so far; "auto" picks among them
HOPPER_FAMILIES = ("fa3",)  # sm_90 only (wgmma, TMA); their libraries build for other archs as stubs
DECODE_MAX_SEQLEN_Q = 8  # "auto" sends dense q with at most this many tokens to split_kv
FA2_PACKED_MAX_SEQLEN_Q = 16  # fa2 runs sequences of at most this many queries as decode rows (kDecodeMaxSeqlenQ)
# Head dims whose fa2 shape has eight warps (tile_config.h): no packed decode rows, 128-query tiles instead
FA2_UNPACKED_HEAD_DIMS = (224,)
# "auto" sends packed varlen q to fa3 on Hopper from this many queries per sequence on, with or
# without GQA: below, fa2's decode rows win (resolve_algo)
FA3_VARLEN_MIN_MEAN_Q = 72
_DTYPE_TAGS = {torch.float16: "fp16", torch.bfloat16: "bf16"}
COMMON = KernelLibrary("common", ("kernels/append_kv.cu",))


def fwd_library(family: str, dtype: torch.dtype, head_dim: int) -> KernelLibrary:
    return KernelLibrary(
        f"{family}_{_DTYPE_TAGS[dtype]}_hd{head_dim}",
        (f"kernels/{family}_fwd.cu",),
        (f"TFI_HEAD_DIM={head_dim}", f"TFI_DTYPE_BF16={int(dtype == torch.bfloat16)}"),
    )


def all_libraries(families=None, dtypes=None, head_dims=None) -> list[KernelLibrary]:
    """Every kernel library, or those of the given families, dtypes and head dims (None: all; and
    always append_kv's)."""
    from ._validation import HEAD_DIMS

    return [COMMON] + [fwd_library(f, dt, d) for f in families or FAMILIES for dt in dtypes or _DTYPE_TAGS
                       for d in head_dims or HEAD_DIMS]


def build_all(out_dir=None, archs: Optional[list[str]] = None, libraries=None) -> list:
    """Build every kernel library (or ``libraries``), several at a time: ahead of time (setup.py
    with TORCH_FLASHINFER_AOT=1, default archs sm_80 + sm_90a) or into the cache (``out_dir=None``)."""
    from concurrent.futures import ThreadPoolExecutor

    archs = archs or (_build.cuda_archs() if out_dir is None else ["80", "90a"])
    libraries = all_libraries() if libraries is None else libraries
    with ThreadPoolExecutor(max_workers=_build.parallel_builds()) as pool:
        return list(pool.map(lambda lib: _build.build_kernel_library(lib, archs, out_dir), libraries))


def tma_strides(*tensors: Tensor) -> bool:
    """Whether fa3's TMA maps can describe these tensors: no zero stride (an ``expand``ed view) on
    a dimension longer than 1, and strides under 2^40 bytes (the binding checks 16-byte multiples)."""
    return all(n == 1 or 0 < s * t.element_size() < 1 << 40
               for t in tensors for n, s in zip(t.shape, t.stride()))


def resolve_algo(algo: str, layout: FwdLayout, seqlen_q: int, sm: tuple[int, int],
                 fa3_fits: Callable[[], bool] = lambda: True) -> str:
    """The kernel family that runs a call on a GPU of compute capability ``sm``: the one place
    where "auto" is decided. ``fa3_fits()``: whether fa3's TMA copies can take the call's tensors
    (``tma_strides``, and a paged cache's pages: ``fa3_paged_by_tma``); asked only when it matters.

    Measured on the H200 (fp16; benchmarks/results/h200/fa3_choice.json, llm.json, seed.json) but
    the varlen bound, measured on an H100:
    - dense q of at most DECODE_MAX_SEQLEN_Q tokens: split_kv, which packs a K/V head's query heads
      into one tile and splits the keys over the SMs;
    - dense q of at most FA2_PACKED_MAX_SEQLEN_Q tokens: fa2, whose GQA-packed decode rows take
      0.13 ms at 16 x 16 queries x 4k keys, against fa3's 128-query tiles' 0.24;
    - other dense q on Hopper (sm_90): fa3, 1.0x (d=32; b32 x 512 causal) to 1.9x (d=160) fa2 on
      every prefill row and head dim, and 1.5-1.7x on paged caches whose pages TMA copies (16, 32,
      64, 128, 256 at d=128); fa2 where fa3 does not fit (0.5-0.6x fa2 on pages of 1, 5, 24, 40, 96);
    - packed varlen q: fa2. Its short sequences run as GQA-packed decode rows (the seed's hybrid
      batches: 100 requests of 128 keys, 32 heads, the first ones prompts of 128 tokens);
    - except packed varlen q whose sequences hold at least FA3_VARLEN_MIN_MEAN_Q queries on average:
      fa3 on Hopper. On one H100 (benchmarks/results/h100/fa3_choice.json of 2026-12-07, session
      26, fa3 with item slots, two rounds) fa3 is 0.92 / 0.99 / 1.01 / 1.02 / 1.04 / 1.05 / 1.06 /
      1.08x fa2 on the seed's hybrid batches at 0 / 30 / 50 / 60 / 70 / 80 / 90 / 100 % prefill
      without GQA (64.5 queries per request at 50 %, 77 at 60 %), and 0.43 / 0.86 / 1.03 / 1.12 /
      1.20 / 1.28 / 1.36 / 1.43x with GQA 32/8; on 64 ragged GQA prompts (uniform lengths, mean 64 /
      128 / 512 / 2048) 0.90 / 1.05 / 1.06 / 1.17x. The bound sits between the ragged prompts around
      64 (fa3 10 % slower) and the 60 % hybrid batches (2 % / 12 % faster), so the 50 % batches,
      whose 64.5 queries a request it cannot tell from the ragged 64, stay on fa2 (1-3 % slower
      there). The H200 (fa3_choice.json of 2026-12-04, before the item slots) put the MHA
      crossover at 50 %. That is all it rests on: prompts of up to 2k tokens and decode requests over 128 keys.
      A decode request over a long cache costs fa3 a 128-row tile per key tile; rows of q past the
      last sequence (a padded buffer) count as queries.
    - except at the head dims of FA2_UNPACKED_HEAD_DIMS (d=224), where fa2 has no decode rows: the
      9-16-token and varlen calls go to fa3 on Hopper too, which takes 0.20 ms against fa2's 0.46
      at 16 x 9 and 16 x 16 queries x 4k keys, and 1.25x / 1.59x fa2's speed on 64 ragged prompts
      around 128 / 512 tokens (benchmarks/results/h200/fa3_choice_d224.json).
    - fa1 (FlashAttention-1's loop order, kept to reproduce the seed study) is never chosen: on
      the H100 it is slower than fa2 on every row of the seed suite and than split_kv on every
      decode row (benchmarks/results/h100/seed.json).
    """
    if algo == "auto":
        if not layout.varlen_q and seqlen_q <= DECODE_MAX_SEQLEN_Q:
            return "split_kv"
        if layout.varlen_q:
            fa2_packs = layout.total_q < FA3_VARLEN_MIN_MEAN_Q * layout.batch
        else:
            fa2_packs = seqlen_q <= FA2_PACKED_MAX_SEQLEN_Q
        fa2_packs = fa2_packs and layout.head_dim not in FA2_UNPACKED_HEAD_DIMS
        return "fa3" if sm == (9, 0) and not fa2_packs and fa3_fits() else "fa2"
    if algo not in FAMILIES:
        raise NotImplementedError(f"flashinfer.fwd: algo {algo!r} has no CUDA kernel yet; available: "
                                  f"auto, {', '.join(FAMILIES)}")
    if algo == "split_kv" and layout.varlen_q:
        raise NotImplementedError("flashinfer.fwd: algo 'split_kv' takes dense q (batch, seqlen_q, heads, head_dim)")
    return algo


_entry_points: dict = {}  # (family, dtype, head_dim, device index) -> entry point address
_handles: list = []  # loaded libraries stay loaded for the life of the process
_binding = None


def _load_entries(lib: KernelLibrary, symbols: tuple[str, ...], device: torch.device) -> tuple[int, ...]:
    path = _build.build_kernel_library(lib, _build.cuda_archs(device))
    handle = ctypes.CDLL(str(path))
    _handles.append(handle)
    return tuple(ctypes.cast(getattr(handle, symbol), ctypes.c_void_p).value for symbol in symbols)


FWD_ENTRY_POINTS = ("tfi_fwd", "tfi_fwd_workspace", "tfi_fwd_counters")


def _fwd_entry(family: str, dtype: torch.dtype, head_dim: int, device: torch.device) -> tuple[int, int, int]:
    """Addresses of a kernel library's ``tfi_fwd``, ``tfi_fwd_workspace`` and ``tfi_fwd_counters`` (api.h)."""
    key = (family, dtype, head_dim, device.index)
    fn = _entry_points.get(key)
    if fn is None:
        fn = _entry_points[key] = _load_entries(fwd_library(family, dtype, head_dim), FWD_ENTRY_POINTS, device)
    return fn


def fa3_paged_by_tma(dtype: torch.dtype, head_dim: int, device: torch.device, page_size: int) -> bool:
    """Whether fa3 copies a paged cache of ``page_size`` (no left padding) by TMA (api.h)."""
    key = ("fa3_paged_by_tma", dtype, head_dim, device.index)
    fn = _entry_points.get(key)
    if fn is None:
        address = _load_entries(fwd_library("fa3", dtype, head_dim), ("tfi_fa3_paged_by_tma",), device)[0]
        fn = _entry_points[key] = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(address)
    return bool(fn(page_size))


def binding():
    global _binding
    if _binding is None:
        _binding = _build.load_binding()
    return _binding


_install_lock = threading.Lock()
_installed = False


def install_cuda_ops() -> None:
    """Make the binding's C++ functions the CUDA kernels of the ops (once per process).

    ops.py registers Python CUDA kernels that call this on first use: importing the package
    never builds anything. From then on the dispatcher calls C++ directly; it asks ``plan_fwd`` /
    ``plan_append_kv`` below once per distinct signature of the arguments and caches the answer.
    """
    global _installed
    with _install_lock:
        if not _installed:
            binding().register_cuda_ops(plan_fwd, plan_append_kv, _validation.CHECK_CUDA_DATA)
            from . import ops

            ops._fwd_cached = binding().fwd_cached  # arms ops.fwd's eager fast path
            _installed = True


def plan_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, cache_seqlens, cache_leftpad,
             block_table, alibi_slopes, softmax_scale, causal, window_left, window_right, softcap, num_splits,
             algo) -> tuple[int, int, int, int, int, float]:
    """Validate a CUDA call of ``fwd`` and decide how it runs: (kernel, workspace and counters
    entry points, seqlen_q, seqlen_k, softmax scale). Depends on the arguments' metadata only
    (and on their values with TORCH_FLASHINFER_CHECK_DATA=1), so the binding caches it."""
    layout = _validation.check_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, cache_seqlens,
                                   cache_leftpad, block_table, alibi_slopes, softmax_scale, window_left,
                                   window_right, softcap, num_splits, algo)
    seqlen_q = max_seqlen_q if layout.varlen_q else q.shape[1]
    sm = torch.cuda.get_device_capability(q.device)

    def fa3_fits():
        if not tma_strides(q, k, v):
            return False
        if layout.kv_layout != "paged":
            return True
        return cache_leftpad is None and fa3_paged_by_tma(q.dtype, layout.head_dim, q.device, k.shape[1])

    family = resolve_algo(algo, layout, seqlen_q, sm, fa3_fits)
    if family in HOPPER_FAMILIES and sm != (9, 0):
        major, minor = sm
        raise NotImplementedError(f"flashinfer.fwd: algo {family!r} runs on Hopper GPUs (sm_90) only; "
                                  f"{q.device} is sm_{major}{minor}")
    kernel, workspace, counters = _fwd_entry(family, q.dtype, layout.head_dim, q.device)
    if layout.kv_layout == "varlen":
        seqlen_k = max_seqlen_k
    elif layout.kv_layout == "paged":
        seqlen_k = block_table.shape[1] * k.shape[1]
    else:
        seqlen_k = k.shape[1]
    scale = softmax_scale if softmax_scale is not None else layout.head_dim ** -0.5
    return kernel, workspace, counters, seqlen_q, seqlen_k, scale


def plan_append_kv(k_cache, v_cache, k, v, cache_seqlens, block_table) -> int:
    """Validate a CUDA call of ``append_kv``; the entry point that runs it."""
    _validation.check_append_kv(k_cache, v_cache, k, v, cache_seqlens, block_table)
    key = ("append_kv", k.device.index)
    fn = _entry_points.get(key)
    if fn is None:
        fn = _entry_points[key] = _load_entries(COMMON, ("tfi_append_kv",), k.device)[0]
    return fn
