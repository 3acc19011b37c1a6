"""What one benchmark point is, how its FLOPs and bytes are counted, and the JSON row it becomes.

Every other module of the benchmark takes these formulas from here, so a number in the table, the
JSON and the charts is always computed the same way.

- FLOPs (the seed's formula): ``4 * seqlen_q * seqlen_k * heads_q * head_dim`` per sequence
  (QK^T and PV, 2 FLOPs per multiply-add), halved for causal when ``seqlen_q == seqlen_k``.
- Bytes: q, k and v read once plus o written once (K/V with ``heads_k`` heads, only the
  ``seqlen_k`` valid keys of a cache). For decode the K/V bytes dominate, so GB/s compares
  directly with the device copy bandwidth (``copy_gbps``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

BACKENDS = ("torch_flashinfer", "sdpa_flash", "sdpa_cudnn", "sdpa_efficient", "sdpa_math",
            "aten_varlen_flash", "prefill_plus_decode", "kv_read")
# Rows that are yardsticks, not attention peers: left out of "vs best peer".
YARDSTICKS = ("kv_read",)
DEVICE_FIELDS = ("name", "torch", "cuda", "cudnn")
CASE_FIELDS = ("scenario", "batch", "heads_q", "heads_k", "seqlen_q", "seqlen_k", "head_dim", "causal", "dtype",
               "page_size", "prefill_fraction")
ROW_FIELDS = CASE_FIELDS + ("backend", "algo", "ms", "tflops", "gbps")
DTYPES = ("float16", "bfloat16", "float32")


@dataclass(frozen=True)
class Case:
    """One point of a sweep: the attention problem every backend is timed on.

    Dense and paged cases: ``batch`` sequences of ``seqlen_q`` queries over ``seqlen_k`` keys.
    ``page_size`` set: our backend reads a paged K/V cache, peers the equivalent dense one.
    ``prefill_fraction`` set (hybrid): ``batch`` requests packed in one varlen batch, the first
    ``round(batch * prefill_fraction)`` are prefill (``seqlen_q`` queries), the rest decode (1 query);
    all have ``seqlen_k`` keys. ``causal`` is bottom-right aligned (a single query sees every key).
    """

    scenario: str
    batch: int
    heads_q: int
    heads_k: int
    seqlen_q: int
    seqlen_k: int
    head_dim: int
    causal: bool
    dtype: str  # one of DTYPES
    page_size: Optional[int] = None
    prefill_fraction: Optional[float] = None

    @property
    def hybrid(self) -> bool:
        return self.prefill_fraction is not None

    @property
    def num_prefill(self) -> int:
        """Requests with ``seqlen_q`` queries (all of them unless hybrid); they come first in a hybrid batch."""
        return round(self.batch * self.prefill_fraction) if self.hybrid else self.batch

    def seqlens_q(self) -> list[int]:
        """Query length of every sequence."""
        return [self.seqlen_q] * self.num_prefill + [1] * (self.batch - self.num_prefill)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def label(self) -> str:
        """Short text for tables and categorical chart axes, e.g. ``b4 h32/8 sq1 sk8192 d128 causal p16``."""
        text = f"b{self.batch} h{self.heads_q}/{self.heads_k} sq{self.seqlen_q} sk{self.seqlen_k} d{self.head_dim}"
        if self.causal:
            text += " causal"
        if self.page_size is not None:
            text += f" p{self.page_size}"
        if self.hybrid:
            text += f" prefill {self.prefill_fraction:.0%}"
        return text


def flops(case: Case) -> float:
    """Attention FLOPs of the case: 4·sq·sk·hq·d per sequence, halved for causal with sq == sk."""
    total = 0.0
    for sq in case.seqlens_q():
        per_seq = 4.0 * sq * case.seqlen_k * case.heads_q * case.head_dim
        total += per_seq / 2 if case.causal and sq == case.seqlen_k else per_seq
    return total


def bytes_moved(case: Case) -> int:
    """Bytes of q, k, v read once and o written once."""
    elem = torch.empty((), dtype=case.torch_dtype).element_size()
    q_elems = sum(case.seqlens_q()) * case.heads_q * case.head_dim  # o has as many
    kv_elems = case.batch * case.seqlen_k * case.heads_k * case.head_dim  # k has as many as v
    return elem * (2 * q_elems + 2 * kv_elems)


def case_of(row: dict) -> Case:
    """The case a JSON row was measured on."""
    return Case(**{field: row[field] for field in CASE_FIELDS})


def _significant(x: float) -> float:
    return float(f"{x:.4g}")


def make_row(case: Case, backend: str, algo: Optional[str], ms: Optional[float]) -> dict:
    """The JSON row of one (case, backend) measurement; ``ms=None`` records a backend that refused it.

    ``page_size`` and ``prefill_fraction`` are the case's (null unless paged / hybrid) on every
    row of the case, peers' included, so rows of one case group by their shape fields.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}")
    row = {field: getattr(case, field) for field in CASE_FIELDS}
    row.update(backend=backend, algo=algo, ms=None, tflops=None, gbps=None)
    if ms is not None:
        seconds = ms * 1e-3
        row.update(ms=_significant(ms), tflops=_significant(flops(case) / seconds / 1e12),
                   gbps=_significant(bytes_moved(case) / seconds / 1e9))
    return row
