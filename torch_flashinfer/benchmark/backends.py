"""The inputs of a case and the backends timed on them.

A backend is a small function ``make(case, inputs) -> fn`` whose ``fn()`` runs the attention of
the case once; it raises (when made or when first called) if the backend cannot run the case,
and the runner records that as n/a. Every backend reads the same tensors:

- ours: ``torch.ops.flashinfer.fwd``, once per algo: ``"auto"`` and every kernel family built
  (``_kernels.FAMILIES``, read when the backends are listed so new families show up by themselves);
- SDPA flash / cuDNN / efficient / math (``sdpa_kernel``) on ``(b, h, s, d)`` views of the dense
  tensors, ``enable_gqa`` when heads differ; paged cases give them the equivalent dense cache;
- hybrid cases only: torch's varlen flash (``aten._flash_attention_forward``) on the packed batch in
  one launch, and ``prefill_plus_decode``: the fastest SDPA backend on the prefill requests as one
  dense batch plus the fastest on the decode requests, each call timed alone and the two medians
  added (``Parts``), so the peer's time is GPU time with no host gap between its launches;
- decode cases only: ``kv_read``, a yardstick rather than a peer: torch's sum over a buffer of as many
  bytes as the case's K/V, one launch that reads each byte once and does nothing else. What it
  reaches is what any one-launch kernel reading those bytes can expect under the same timing (at
  small sizes the launch and the first DRAM round trips weigh; the L2 flush leaves dirty lines).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from . import report, timing
from .schema import Case

Tensor = torch.Tensor
Call = Callable[[], object]

SDPA_BACKENDS = {"sdpa_flash": "FLASH_ATTENTION", "sdpa_cudnn": "CUDNN_ATTENTION",
                 "sdpa_efficient": "EFFICIENT_ATTENTION", "sdpa_math": "MATH"}
# The math backend materializes the (b, hq, sq, sk) scores (and softmax copies of them):
# 2^27 scores are 256 MiB in fp16, a few of them fit anywhere; larger shapes are n/a.
MATH_MAX_SCORES = 1 << 27
# Calls per candidate when prefill_plus_decode picks its SDPA backends (the picks go to stderr).
_PROBE_ITERS = 30


class Parts:
    """A peer of several launches: calling it runs them in turn; the runner times each part alone
    (L2 flushed before each call, as every row) and adds the medians. Timed as one call, the events
    around the two launches of prefill_plus_decode also took in any wait for the host to queue the
    second, and on the H200 the row moved by 40 % between runs (0.092 / 0.130 ms at 20 % prefill,
    seed.json and seed_hybrid_turns_build.json; that the host wait caused it is a guess)."""

    def __init__(self, calls: list[Call]):
        self.parts = tuple(calls)

    def __call__(self) -> list:
        return [call() for call in self.parts]


@dataclass
class Inputs:
    """The tensors of one case, shared by every backend.

    dense: q ``(b, sq, hq, d)``; k, v ``(b, sk, hk, d)``.
    paged: the same plus k_cache, v_cache ``(num_blocks, page, hk, d)`` holding k, v through a
      shuffled ``block_table`` ``(b, ceil(sk / page))`` int32, and ``cache_seqlens`` ``(b,)`` int32.
    hybrid: packed q ``(total_q, hq, d)``, k, v ``(b * sk, hk, d)``, prefill requests first, with
      ``cu_seqlens_q``, ``cu_seqlens_k`` ``(b + 1,)`` int32.
    """

    q: Tensor
    k: Tensor
    v: Tensor
    k_cache: Optional[Tensor] = None
    v_cache: Optional[Tensor] = None
    block_table: Optional[Tensor] = None
    cache_seqlens: Optional[Tensor] = None
    cu_seqlens_q: Optional[Tensor] = None
    cu_seqlens_k: Optional[Tensor] = None


def make_inputs(case: Case, device: torch.device) -> Inputs:
    """Random inputs of the case on ``device`` (seeded: every run times the same data)."""
    torch.manual_seed(0)
    b, hq, hk, d, sk = case.batch, case.heads_q, case.heads_k, case.head_dim, case.seqlen_k

    def randn(*shape):
        return torch.randn(*shape, dtype=case.torch_dtype, device=device)

    if case.hybrid:
        lens_q = torch.tensor([0] + case.seqlens_q(), dtype=torch.int32)
        return Inputs(randn(sum(case.seqlens_q()), hq, d), randn(b * sk, hk, d), randn(b * sk, hk, d),
                      cu_seqlens_q=lens_q.cumsum(0, dtype=torch.int32).to(device),
                      cu_seqlens_k=torch.arange(0, (b + 1) * sk, sk, dtype=torch.int32, device=device))
    q = randn(b, case.seqlen_q, hq, d)
    if case.page_size is None:
        return Inputs(q, randn(b, sk, hk, d), randn(b, sk, hk, d))
    page = case.page_size
    pages = -(-sk // page)
    k_cache, v_cache = randn(b * pages, page, hk, d), randn(b * pages, page, hk, d)
    block_table = torch.randperm(b * pages).view(b, pages).to(device)  # [B, pages] block ids, shuffled
    # The dense equivalent for the peers: gather each sequence's pages in order, keep sk rows.
    k = k_cache[block_table].flatten(1, 2)[:, :sk]  # [B, sk, hk, d]
    v = v_cache[block_table].flatten(1, 2)[:, :sk]
    return Inputs(q, k, v, k_cache, v_cache, block_table.to(torch.int32),
                  torch.full((b,), sk, dtype=torch.int32, device=device))


def hybrid_parts(case: Case, x: Inputs) -> list[tuple[Tensor, Tensor, Tensor]]:
    """The hybrid batch as dense batches (views, no copies): the prefill requests q ``(n_p, sq, hq, d)``
    and the decode requests q ``(n_d, 1, hq, d)``, each with its k, v ``(n, sk, hk, d)``; empty parts left out."""
    n_prefill, n_decode = case.num_prefill, case.batch - case.num_prefill
    k = x.k.view(case.batch, case.seqlen_k, case.heads_k, case.head_dim)
    v = x.v.view(case.batch, case.seqlen_k, case.heads_k, case.head_dim)
    split = n_prefill * case.seqlen_q
    parts = []
    if n_prefill:
        parts.append((x.q[:split].view(n_prefill, case.seqlen_q, case.heads_q, case.head_dim),
                      k[:n_prefill], v[:n_prefill]))
    if n_decode:
        parts.append((x.q[split:].view(n_decode, 1, case.heads_q, case.head_dim), k[n_prefill:], v[n_prefill:]))
    return parts


def torch_flashinfer(case: Case, x: Inputs, algo: str) -> Call:
    """Our op: one varlen launch for hybrid, the paged cache for paged cases, else dense; without
    lse, as the peers' inference calls."""
    fwd = torch.ops.flashinfer.fwd
    if case.hybrid:
        max_q = max(case.seqlens_q())
        return lambda: fwd(x.q, x.k, x.v, cu_seqlens_q=x.cu_seqlens_q, cu_seqlens_k=x.cu_seqlens_k,
                           max_seqlen_q=max_q, max_seqlen_k=case.seqlen_k, causal=case.causal, algo=algo,
                           return_lse=False)
    if case.page_size is not None:
        return lambda: fwd(x.q, x.k_cache, x.v_cache, cache_seqlens=x.cache_seqlens, block_table=x.block_table,
                           causal=case.causal, algo=algo, return_lse=False)
    return lambda: fwd(x.q, x.k, x.v, causal=case.causal, algo=algo, return_lse=False)


def sdpa_call(q: Tensor, k: Tensor, v: Tensor, causal: bool, backend: str) -> Call:
    """``F.scaled_dot_product_attention`` through one SDPA backend on (b, s, h, d) tensors.

    SDPA's causal mask is top-left aligned: it equals ours (bottom-right) when sq == sk, and a single
    query (decode) sees every key either way, so it runs unmasked; other causal shapes are refused.
    """
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b, sq, hq, _ = q.shape
    sk, hk = k.shape[1], k.shape[2]
    if causal and sq not in (1, sk):
        raise ValueError(f"SDPA's causal mask is top-left aligned; seqlen_q {sq} != seqlen_k {sk}")
    if backend == "sdpa_math" and b * hq * sq * sk > MATH_MAX_SCORES:
        raise ValueError(f"the math backend is run on shapes of at most {MATH_MAX_SCORES} scores")
    kind = getattr(SDPBackend, SDPA_BACKENDS[backend])
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, S, D] views
    gqa = {"enable_gqa": True} if hq != hk else {}
    is_causal = causal and sq > 1

    def call():
        with sdpa_kernel(kind):
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=is_causal, **gqa)

    return call


def sdpa(case: Case, x: Inputs, backend: str) -> Call:
    return sdpa_call(x.q, x.k, x.v, case.causal, backend)


def aten_varlen_flash(case: Case, x: Inputs) -> Call:
    """torch's FlashAttention-2 on the packed hybrid batch, one launch (bottom-right causal like ours).

    Only the leading positional arguments, which torch 2.4 through 2.13 share, are passed."""
    op = torch.ops.aten._flash_attention_forward
    max_q = max(case.seqlens_q())
    return lambda: op(x.q, x.k, x.v, x.cu_seqlens_q, x.cu_seqlens_k, max_q, case.seqlen_k, 0.0, case.causal, False)


def prefill_plus_decode(case: Case, x: Inputs) -> Parts:
    """A prefill call plus a decode call: for each part, the SDPA backend that runs it fastest."""
    calls, picks = [], []
    for i, (q, k, v) in enumerate(hybrid_parts(case, x)):
        part = "prefill" if i == 0 and case.num_prefill else "decode"
        timed = []
        for backend in SDPA_BACKENDS:
            try:
                call = sdpa_call(q, k, v, case.causal, backend)
                timed.append((timing.median_ms(call, q.device, _PROBE_ITERS), backend, call))
            except Exception:  # a backend that refuses this part is simply not a candidate
                continue
        if not timed:
            raise RuntimeError(f"no SDPA backend runs the {tuple(q.shape)} part")
        ms, backend, call = min(timed, key=lambda t: t[0])
        calls.append(call)
        picks.append(f"{part} {tuple(q.shape)}: {backend} {ms:.4g} ms")
    report.note(f"prefill_plus_decode on {case.label()}: " + ", ".join(picks))
    return Parts(calls)


def kv_read(case: Case, x: Inputs) -> Call:
    """The K/V bytes of the case read once by one launch (``torch.sum`` over a zeroed buffer of that size)."""
    buf = torch.zeros(x.k.numel() + x.v.numel(), dtype=x.k.dtype, device=x.k.device)
    return buf.sum


@dataclass(frozen=True)
class Backend:
    """A row label (``name``, ``algo``), the function that makes its call, and the cases it applies to."""

    name: str
    algo: Optional[str]
    make: Callable[[Case, Inputs], Call]
    applies: Callable[[Case], bool]


def available(names: tuple[str, ...]) -> list[Backend]:
    """The backends called ``names`` (schema.BACKENDS), ours once per algo."""
    from .. import _kernels

    def every_case(case):
        return True

    def hybrid_only(case):
        return case.hybrid

    def uniform_only(case):
        return not case.hybrid

    def decode_only(case):  # split_kv is the decode kernel: timing it on prefill shapes says nothing
        return not case.hybrid and case.seqlen_q <= _kernels.DECODE_MAX_SEQLEN_Q

    backends = [Backend("torch_flashinfer", algo, functools.partial(torch_flashinfer, algo=algo),
                        decode_only if algo == "split_kv" else every_case)
                for algo in ("auto",) + tuple(_kernels.FAMILIES)]
    backends += [Backend(name, None, functools.partial(sdpa, backend=name), uniform_only) for name in SDPA_BACKENDS]
    backends += [Backend("aten_varlen_flash", None, aten_varlen_flash, hybrid_only),
                 Backend("prefill_plus_decode", None, prefill_plus_decode, hybrid_only),
                 Backend("kv_read", None, kv_read, decode_only)]
    return [backend for backend in backends if backend.name in names]
