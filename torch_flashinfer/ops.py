"""The ``flashinfer`` operator library: schemas, fake implementations, CPU reference, CUDA binding.

``torch.ops.flashinfer.fwd``
    ``fwd(q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=0, max_seqlen_k=0,
    cache_seqlens=None, cache_leftpad=None, block_table=None, alibi_slopes=None,
    softmax_scale=None, causal=False, window_left=-1, window_right=-1, softcap=0.0,
    num_splits=0, algo="auto", return_lse=True) -> (out, lse)``

    Layouts (only the last dim must be contiguous; other strides are used as given):

    - q: dense ``(batch, seqlen_q, heads_q, head_dim)``, or packed ``(total_q, heads_q, head_dim)``
      with ``cu_seqlens_q`` (int32, ``(batch + 1,)``) and ``max_seqlen_q``.
    - k, v: dense ``(batch, seqlen_k, heads_k, head_dim)``; packed ``(total_k, heads_k, head_dim)``
      with ``cu_seqlens_k`` and ``max_seqlen_k``; or a paged cache
      ``(num_blocks, page_size, heads_k, head_dim)`` with ``block_table`` (int32,
      ``(batch, max_blocks)``), any page size >= 1.
    - ``cache_seqlens`` (int32, ``(batch,)``): valid keys per sequence of a dense or paged cache
      (required when paged); ``cache_leftpad`` (int32, ``(batch,)``): keys before it are
      skipped, so sequence b attends to cache rows ``[cache_leftpad[b], cache_seqlens[b])``.
    - ``alibi_slopes``: fp32 ``(heads_q,)`` or ``(batch, heads_q)``.
    - ``heads_q % heads_k == 0``; query head ``h`` reads K/V head ``h // (heads_q // heads_k)``.

    Semantics: ``reference.attention``'s docstring (bottom-right causal, window, softcap,
    ALiBi, empty rows -> zeros with lse -inf). ``softmax_scale`` defaults to
    ``head_dim ** -0.5``. ``num_splits``: 0 = heuristic, n = split the keys n ways (decode).
    ``algo``: ``"auto"`` or a kernel family; ignored by the CPU reference.

    Returns ``out`` (q's dtype and shape, contiguous) and ``lse`` (fp32, natural log):
    ``(batch, heads_q, seqlen_q)`` for dense q, ``(heads_q, total_q)`` for packed q. With
    ``return_lse=False`` lse is an empty fp32 tensor ``(0,)`` and no kernel writes it (SDPA's
    inference calls skip it too; on an H100 that saved 0.4-1.7 % on the seed's hybrid batches).

``torch.ops.flashinfer.append_kv``
    ``append_kv(k_cache, v_cache, k, v, cache_seqlens, block_table=None) -> ()``

    Writes new tokens ``k, v`` ``(batch, seqlen_new, heads_k, head_dim)`` into a dense
    ``(batch, capacity, heads_k, head_dim)`` or paged cache at rows
    ``cache_seqlens[b] + i``; mutates ``k_cache`` and ``v_cache`` (declared in the schema)
    and leaves ``cache_seqlens`` alone.
"""

from __future__ import annotations

import torch

from . import _kernels, _validation, reference

_lib = torch.library.Library("flashinfer", "DEF")  # noqa: TOR901 -- the op library lives as long as the module

_lib.define(
    "fwd(Tensor q, Tensor k, Tensor v, Tensor? cu_seqlens_q=None, Tensor? cu_seqlens_k=None, "
    "SymInt max_seqlen_q=0, SymInt max_seqlen_k=0, Tensor? cache_seqlens=None, Tensor? cache_leftpad=None, "
    "Tensor? block_table=None, Tensor? alibi_slopes=None, float? softmax_scale=None, bool causal=False, "
    "int window_left=-1, int window_right=-1, float softcap=0.0, int num_splits=0, str algo=\"auto\", "
    "bool return_lse=True) -> (Tensor out, Tensor lse)"
)
_lib.define(
    "append_kv(Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor k, Tensor v, Tensor cache_seqlens, "
    "Tensor? block_table=None) -> ()"
)

_FWD = torch.ops.flashinfer.fwd.default
_fwd_cached = None  # the binding's fwd_cached, once the CUDA kernels are installed (_kernels.install_cuda_ops)


def plain_eager(*tensors) -> bool:
    """Whether nothing but the op's own kernel would see a call on these tensors (None allowed):
    not while torch.compile or torch.jit.trace traces, no torch function or dispatch mode and no
    torch.func transform active, no autograd to record (grad mode off or no input requiring grad),
    plain tensors only (no subclasses such as fake tensors)."""
    if (torch.compiler.is_compiling() or torch._C._get_tracing_state() is not None
            or torch._C._is_torch_function_mode_enabled() or torch._C._len_torch_dispatch_stack()
            or torch._C._functorch.peek_interpreter_stack() is not None):
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t is not None and (type(t) is not torch.Tensor or (grad and t.requires_grad)):
            return False
    return True


def fwd(q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=0, max_seqlen_k=0, cache_seqlens=None,
        cache_leftpad=None, block_table=None, alibi_slopes=None, softmax_scale=None, causal=False,
        window_left=-1, window_right=-1, softcap=0.0, num_splits=0, algo="auto", return_lse=True):
    """``torch.ops.flashinfer.fwd``, as the typed wrappers and the transformers integration call it.

    In plain eager mode (``plain_eager``) on CUDA, a call whose signature the op has already
    validated and planned goes straight to the binding's launch path (``fwd_cached``), skipping
    the dispatcher's boxed call: 3.0-3.4 us less CPU per decode call on the H100 host
    (``benchmarks/results/h100/host_overhead.log``). Anything else -- a new signature, invalid
    input, tracing, modes, transforms, autograd -- calls the op. Defaults: the schema's
    (tests/test_ops.py)."""
    args = (q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, cache_seqlens, cache_leftpad,
            block_table, alibi_slopes, softmax_scale, causal, window_left, window_right, softcap, num_splits, algo,
            return_lse)
    if (plain_eager(q, k, v, cu_seqlens_q, cu_seqlens_k, cache_seqlens, cache_leftpad, block_table, alibi_slopes)
            and _fwd_cached is not None and q.is_cuda):
        try:
            result = _fwd_cached(*args)
        except TypeError:  # an argument pybind does not convert (the op may): let the op judge it
            result = None
        if result is not None:
            return result
    return _FWD(*args)


def _new_outputs(q: torch.Tensor, varlen_q: bool, return_lse: bool):
    """out and lse for q; one allocation rule for the fake and every real implementation."""
    out = q.new_empty(q.shape)
    if not return_lse:
        lse = q.new_empty((0,), dtype=torch.float32)
    elif varlen_q:
        lse = q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)
    else:
        lse = q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32)
    return out, lse


@torch.library.register_fake("flashinfer::fwd", lib=_lib)
def _fwd_fake(q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=0, max_seqlen_k=0,
              cache_seqlens=None, cache_leftpad=None, block_table=None, alibi_slopes=None,
              softmax_scale=None, causal=False, window_left=-1, window_right=-1, softcap=0.0,
              num_splits=0, algo="auto", return_lse=True):
    layout = _validation.check_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                   cache_seqlens, cache_leftpad, block_table, alibi_slopes, softmax_scale,
                                   window_left, window_right, softcap, num_splits, algo)
    return _new_outputs(q, layout.varlen_q, return_lse)


def _fwd_cpu(q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=0, max_seqlen_k=0,
             cache_seqlens=None, cache_leftpad=None, block_table=None, alibi_slopes=None,
             softmax_scale=None, causal=False, window_left=-1, window_right=-1, softcap=0.0,
             num_splits=0, algo="auto", return_lse=True):
    _validation.check_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                          cache_seqlens, cache_leftpad, block_table, alibi_slopes, softmax_scale,
                          window_left, window_right, softcap, num_splits, algo)
    out, lse = reference.attention(q, k, v, cu_seqlens_q, cu_seqlens_k, cache_seqlens, cache_leftpad,
                                   block_table, alibi_slopes, softmax_scale, causal, window_left,
                                   window_right, softcap)
    return out, lse if return_lse else lse.new_empty((0,))


@torch.library.register_fake("flashinfer::append_kv", lib=_lib)
def _append_kv_fake(k_cache, v_cache, k, v, cache_seqlens, block_table=None):
    _validation.check_append_kv(k_cache, v_cache, k, v, cache_seqlens, block_table)


def _append_kv_cpu(k_cache, v_cache, k, v, cache_seqlens, block_table=None):
    _validation.check_append_kv(k_cache, v_cache, k, v, cache_seqlens, block_table)
    reference.append_kv(k_cache, v_cache, k, v, cache_seqlens, block_table)


# CUDA: the binding's C++ kernels (csrc/binding/binding.cpp), which run the same validation
# through _kernels.plan_fwd / plan_append_kv. These Python kernels only install them on the
# first CUDA call (building the binding if needed), then hand that call over.
def _fwd_cuda(*args, **kwargs):
    _kernels.install_cuda_ops()
    return torch.ops.flashinfer.fwd.default(*args, **kwargs)


def _append_kv_cuda(*args, **kwargs):
    _kernels.install_cuda_ops()
    return torch.ops.flashinfer.append_kv.default(*args, **kwargs)


_lib.impl("fwd", _fwd_cpu, "CPU")
_lib.impl("append_kv", _append_kv_cpu, "CPU")
_lib.impl("fwd", _fwd_cuda, "CUDA")
_lib.impl("append_kv", _append_kv_cuda, "CUDA")
