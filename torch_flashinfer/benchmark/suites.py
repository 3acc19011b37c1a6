"""The suites: each scenario is a list of points (dicts of ``Case`` fields) and how to chart it.

- ``seed``: the seed study's five scenarios (prefill by seq and by batch, decode by seq and by
  batch, hybrid), 32 heads, head dim 128 by default.
- ``llm``: the shapes of PERFORMANCE.md (prefill d=128 at 16k tokens, head dims 64 and 256, GQA
  and MHA decode, paged decode); fixed heads and head dims, only the dtype is chosen.
- ``quick``: a small subset of both; tiny shapes on CPU, so CI runs the whole CLI in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .schema import Case

SUITES = ("seed", "llm", "quick")


@dataclass(frozen=True)
class Scenario:
    """A sweep of cases drawn as one chart.

    ``x``: the Case field on the chart's x axis (``"shape"``: a categorical axis of case labels);
    ``metric``: ``"tflops"`` or ``"gbps"`` (decode); ``series``: a Case field that splits each
    backend into several lines (e.g. ``causal``), or None.
    """

    name: str
    x: str
    metric: str
    cases: list[Case]
    series: Optional[str] = None


def _scenario(name: str, x: str, metric: str, points: list[dict], series: Optional[str] = None,
              **shape) -> Scenario:
    """A Scenario whose cases are ``points`` completed by the fields in ``shape``."""
    return Scenario(name, x, metric, [Case(scenario=name, **{**shape, **point}) for point in points], series)


def _pow2(lo: int, hi: int) -> list[int]:
    """lo, 2·lo, ..., hi."""
    return [1 << e for e in range(lo.bit_length() - 1, hi.bit_length())]


def seed(heads_q: int = 32, heads_k: Optional[int] = None, head_dim: int = 128,
         dtype: str = "float16") -> list[Scenario]:
    """The seed's five scenarios; decode is causal as an LLM calls it (one query sees every key)."""
    shape = dict(heads_q=heads_q, heads_k=heads_k or heads_q, head_dim=head_dim, dtype=dtype)
    return [
        _scenario("prefill_seq", "seqlen_q", "tflops",  # 16k tokens per point
                  [dict(batch=16384 // s, seqlen_q=s, seqlen_k=s, causal=True) for s in _pow2(128, 16384)], **shape),
        _scenario("prefill_batch", "batch", "tflops",
                  [dict(batch=b, seqlen_q=128, seqlen_k=128, causal=True) for b in _pow2(1, 1024)], **shape),
        _scenario("decode_seq", "seqlen_k", "gbps",
                  [dict(batch=128, seqlen_q=1, seqlen_k=s, causal=True) for s in _pow2(128, 32768)], **shape),
        _scenario("decode_batch", "batch", "gbps",
                  [dict(batch=b, seqlen_q=1, seqlen_k=128, causal=True) for b in _pow2(1, 2048)], **shape),
        _scenario("hybrid", "prefill_fraction", "tflops",  # 100 requests in one varlen launch
                  [dict(batch=100, seqlen_q=128, seqlen_k=128, causal=True, prefill_fraction=p / 10)
                   for p in range(11)], **shape),
    ]


def llm(dtype: str = "float16") -> list[Scenario]:
    """PERFORMANCE.md's rows: the peers' anchors and our targets."""
    mha = dict(heads_q=32, heads_k=32, head_dim=128, dtype=dtype)
    gqa = dict(mha, heads_k=8)
    decode_gqa = [dict(gqa, batch=b, seqlen_q=1, seqlen_k=s, causal=True) for s in (8192, 32768)
                  for b in (1, 16, 64, 256)]
    decode_mha = [dict(mha, batch=128, seqlen_q=1, seqlen_k=8192, causal=True),
                  dict(mha, batch=1, seqlen_q=1, seqlen_k=128, causal=True)]  # the second is launch bound
    return [
        _scenario("prefill", "seqlen_q", "tflops",  # 16k tokens per point
                  [dict(batch=16384 // s, seqlen_q=s, seqlen_k=s, causal=c) for c in (False, True)
                   for s in _pow2(512, 16384)], series="causal", **mha),
        _scenario("prefill_hdim", "shape", "tflops",
                  [dict(mha, batch=4, seqlen_q=4096, seqlen_k=4096, causal=True, head_dim=64),
                   dict(mha, batch=4, seqlen_q=4096, seqlen_k=4096, causal=True, heads_q=16, heads_k=16,
                        head_dim=256)]),
        _scenario("decode", "shape", "gbps", decode_gqa + decode_mha),
        _scenario("paged_decode", "shape", "gbps",
                  [dict(gqa, batch=b, seqlen_q=1, seqlen_k=s, causal=True, page_size=p)
                   for p in (16, 256) for b, s in ((1, 32768), (16, 8192), (64, 8192))]),
        _scenario("paged_prefill", "shape", "tflops",  # the prefill row b4 x 4k, K/V in a paged cache
                  [dict(mha, batch=4, seqlen_q=4096, seqlen_k=4096, causal=True, page_size=p) for p in (16, 256)]),
    ]


# quick's sizes: on CPU tiny ones the reference runs in milliseconds (GQA 4/2, and a paged cache
# whose last page is partly filled); on the GPU a one-minute subset at the seed's sizes.
_QUICK_SIZES = {
    "cpu": dict(heads_q=4, heads_k=2, head_dim=64, tokens=64, prefill_seqs=(16, 32), decode_batch=2,
                decode_seqs=(16, 64), requests=8, request_seq=16, paged_batch=2, paged_seq=37, page=4),
    "cuda": dict(heads_q=32, heads_k=32, head_dim=128, tokens=16384, prefill_seqs=(1024, 4096), decode_batch=16,
                 decode_seqs=(1024, 8192), requests=100, request_seq=128, paged_batch=16, paged_seq=8192, page=16),
}


def quick(device_type: str, heads_q: Optional[int] = None, heads_k: Optional[int] = None,
          head_dim: Optional[int] = None, dtype: str = "float16") -> list[Scenario]:
    """A few points of each kind (prefill, decode, hybrid, paged decode) at ``_QUICK_SIZES[device_type]``;
    heads and head dim default to those sizes' (heads_k: heads_q when only heads_q is given)."""
    size = _QUICK_SIZES[device_type]
    shape = dict(heads_q=heads_q or size["heads_q"], heads_k=heads_k or heads_q or size["heads_k"],
                 head_dim=head_dim or size["head_dim"], dtype=dtype)
    tokens, seq = size["tokens"], size["request_seq"]
    return [
        _scenario("prefill_seq", "seqlen_q", "tflops",
                  [dict(batch=tokens // s, seqlen_q=s, seqlen_k=s, causal=True) for s in size["prefill_seqs"]],
                  **shape),
        _scenario("decode_seq", "seqlen_k", "gbps",
                  [dict(batch=size["decode_batch"], seqlen_q=1, seqlen_k=s, causal=True) for s in size["decode_seqs"]],
                  **shape),
        _scenario("hybrid", "prefill_fraction", "tflops",
                  [dict(batch=size["requests"], seqlen_q=seq, seqlen_k=seq, causal=True, prefill_fraction=p)
                   for p in (0.0, 0.5, 1.0)], **shape),
        _scenario("paged_decode", "shape", "gbps",
                  [dict(batch=size["paged_batch"], seqlen_q=1, seqlen_k=size["paged_seq"], causal=True,
                        page_size=size["page"])], **shape),
    ]


def build(suite: str, device_type: str, heads_q: Optional[int] = None, heads_k: Optional[int] = None,
          head_dim: Optional[int] = None, dtype: str = "float16") -> list[Scenario]:
    """The scenarios of a suite; heads and head dim apply to ``seed`` and ``quick`` (None: their defaults)."""
    if suite == "seed":
        return seed(heads_q or 32, heads_k, head_dim or 128, dtype)
    if suite == "llm":
        return llm(dtype)
    if suite == "quick":
        return quick(device_type, heads_q, heads_k, head_dim, dtype)
    raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
