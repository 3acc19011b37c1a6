"""Test oracle: naive fp64 attention over explicit per-sequence tensors, plus layout packers.

Shares no code with ``torch_flashinfer``: full score matrices, ``repeat_interleave`` for GQA,
masks built from index grids, ``logsumexp`` for the normaliser.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional

import torch


def naive_attention(q, k, v, *, scale=None, causal=False, window=(-1, -1), softcap=0.0, slopes=None):
    """One sequence. q: (sq, hq, d); k, v: (sk, hk, d). Returns out (sq, hq, d) fp64 and lse (hq, sq) fp64."""
    q, k, v = q.double(), k.double(), v.double()
    sq, hq, d = q.shape
    sk, hk, _ = k.shape
    scale = d ** -0.5 if scale is None else scale
    k = k.repeat_interleave(hq // hk, dim=1)
    v = v.repeat_interleave(hq // hk, dim=1)
    s = torch.einsum("qhd,khd->hqk", q, k) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    i = torch.arange(sq).view(-1, 1) + (sk - sq)
    j = torch.arange(sk).view(1, -1)
    if slopes is not None:
        s = s - slopes.double().view(-1, 1, 1) * (i - j).abs()
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if causal:
        keep &= j <= i
    if window[0] >= 0:
        keep &= j >= i - window[0]
    if window[1] >= 0:
        keep &= j <= i + window[1]
    s = s.masked_fill(~keep, -math.inf)
    lse = torch.logsumexp(s, dim=-1)  # -inf where a row keeps nothing
    p = torch.exp(s - lse.unsqueeze(-1)).nan_to_num(0.0)
    out = torch.einsum("hqk,khd->qhd", p, v)
    return out, lse


def random_sequences(seqlens_q, seqlens_k, heads_q, heads_k, head_dim, dtype, device="cpu", gen=None):
    qs = [torch.randn(sq, heads_q, head_dim, generator=gen).to(dtype).to(device) for sq in seqlens_q]
    ks = [torch.randn(sk, heads_k, head_dim, generator=gen).to(dtype).to(device) for sk in seqlens_k]
    vs = [torch.randn(sk, heads_k, head_dim, generator=gen).to(dtype).to(device) for sk in seqlens_k]
    return qs, ks, vs


def cu_seqlens(lengths, device):
    out = [0]
    for n in lengths:
        out.append(out[-1] + n)
    return torch.tensor(out, dtype=torch.int32, device=device)


def pack_dense(xs):
    """Equal-length sequences -> (batch, seqlen, heads, dim)."""
    return torch.stack(xs)


def pack_dense_cache(xs, capacity, leftpad=None, poison=float("nan")):
    """Sequences -> a (batch, capacity, heads, dim) cache; row b holds xs[b] at [leftpad[b], ...)."""
    b = len(xs)
    h, d = xs[0].shape[1:]
    cache = torch.full((b, capacity, h, d), poison, dtype=xs[0].dtype, device=xs[0].device)
    for i, x in enumerate(xs):
        start = 0 if leftpad is None else leftpad[i]
        cache[i, start:start + x.shape[0]] = x
    return cache


def pack_paged(ks, vs, page_size, extra_blocks=3, seed=0, poison=float("nan")):
    """Sequences -> paged caches (num_blocks, page_size, hk, d) with a shuffled block table."""
    rng = random.Random(seed)
    pages = [-(-k.shape[0] // page_size) for k in ks]
    max_pages = max(max(pages), 1)
    num_blocks = sum(pages) + extra_blocks
    order = list(range(num_blocks))
    rng.shuffle(order)
    hk, d = ks[0].shape[1:]
    dev, dt = ks[0].device, ks[0].dtype
    k_cache = torch.full((num_blocks, page_size, hk, d), poison, dtype=dt, device=dev)
    v_cache = torch.full_like(k_cache, poison)
    table = torch.full((len(ks), max_pages), -1, dtype=torch.int32)
    nxt = 0
    for b, (k, v) in enumerate(zip(ks, vs)):
        for p in range(pages[b]):
            blk = order[nxt]
            nxt += 1
            table[b, p] = blk
            rows = k[p * page_size:(p + 1) * page_size]
            k_cache[blk, :rows.shape[0]] = rows
            v_cache[blk, :rows.shape[0]] = v[p * page_size:(p + 1) * page_size]
    lens = torch.tensor([k.shape[0] for k in ks], dtype=torch.int32, device=dev)
    # Unused table entries point at a real block: a kernel must stop at cache_seqlens anyway.
    table[table < 0] = order[-1]
    return k_cache, v_cache, table.to(dev), lens


def alibi_slopes(heads):
    """Default ALiBi slopes 2^(-8(h+1)/H)."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)], dtype=torch.float32)


def naive_lowp_attention(q, k, v, **kw):
    """The same math as ``naive_attention`` but in q's dtype: the error budget a kernel is held to."""
    sq, hq, d = q.shape
    sk, hk, _ = k.shape
    scale = kw.get("scale") or d ** -0.5
    k = k.repeat_interleave(hq // hk, dim=1)
    v = v.repeat_interleave(hq // hk, dim=1)
    s = torch.einsum("qhd,khd->hqk", q, k) * scale
    cap = kw.get("softcap", 0.0)
    if cap > 0:
        s = cap * torch.tanh(s / cap)
    i = torch.arange(sq, device=q.device).view(-1, 1) + (sk - sq)
    j = torch.arange(sk, device=q.device).view(1, -1)
    if kw.get("slopes") is not None:
        s = s - (kw["slopes"].to(q.device).view(-1, 1, 1) * (i - j).abs()).to(s.dtype)
    keep = torch.ones(sq, sk, dtype=torch.bool, device=q.device)
    window = kw.get("window", (-1, -1))
    if kw.get("causal"):
        keep &= j <= i
    if window[0] >= 0:
        keep &= j >= i - window[0]
    if window[1] >= 0:
        keep &= j <= i + window[1]
    s = s.masked_fill(~keep, -math.inf)
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return torch.einsum("hqk,khd->qhd", p, v)


@dataclass
class Case:
    """One attention problem: per-sequence lengths and options, in one of the op's layouts.

    layout: "dense" (equal lengths), "varlen" (packed q and k), "cache" (dense q, dense cache
    with cache_seqlens and optional left padding), "paged" (dense q, paged cache),
    "varlen_paged" (packed q, paged cache).
    """

    layout: str
    seqlens_q: list
    seqlens_k: list
    heads_q: int = 4
    heads_k: int = 4
    head_dim: int = 64
    dtype: torch.dtype = torch.float16
    causal: bool = False
    window: tuple = (-1, -1)
    softcap: float = 0.0
    alibi: str = ""  # "", "head" ((hq,) slopes) or "batch" ((b, hq) slopes)
    page_size: int = 16
    leftpad: bool = False
    scale: Optional[float] = None

    def __str__(self):
        opts = [self.layout, f"q{self.seqlens_q}", f"k{self.seqlens_k}", f"h{self.heads_q}/{self.heads_k}",
                f"d{self.head_dim}", str(self.dtype).replace("torch.", "")]
        if self.causal:
            opts.append("causal")
        if self.window != (-1, -1):
            opts.append(f"win{self.window}")
        if self.softcap:
            opts.append(f"cap{self.softcap}")
        if self.alibi:
            opts.append(f"alibi-{self.alibi}")
        if "paged" in self.layout:
            opts.append(f"page{self.page_size}")
        if self.leftpad:
            opts.append("leftpad")
        return "-".join(opts)


@dataclass
class Built:
    case: Case
    qs: list
    ks: list
    vs: list
    slopes: Optional[torch.Tensor]
    args: dict  # keyword arguments of torch.ops.flashinfer.fwd

    def naive_kwargs(self, b):
        slopes = None
        if self.slopes is not None:
            slopes = (self.slopes[b] if self.slopes.dim() == 2 else self.slopes).cpu()
        c = self.case
        return dict(scale=c.scale, causal=c.causal, window=c.window, softcap=c.softcap, slopes=slopes)

    def expected(self):
        """fp64 (out, lse) per sequence, on the CPU."""
        return [naive_attention(q.cpu(), k.cpu(), v.cpu(), **self.naive_kwargs(b))
                for b, (q, k, v) in enumerate(zip(self.qs, self.ks, self.vs))]

    def lowp(self):
        """Per-sequence output of the same math at the input dtype, on the inputs' device."""
        return [naive_lowp_attention(q, k, v, **self.naive_kwargs(b))
                for b, (q, k, v) in enumerate(zip(self.qs, self.ks, self.vs))]

    def split(self, out, lse):
        """Per-sequence (out (sq, hq, d), lse (hq, sq)) from the op's outputs."""
        c = self.case
        if c.layout.startswith("varlen"):
            cu = self.args["cu_seqlens_q"].tolist()
            return [(out[a:b], lse[:, a:b]) for a, b in zip(cu[:-1], cu[1:])]
        return [(out[b], lse[b]) for b in range(out.shape[0])]


def build(case: Case, device="cpu", seed=0, poison=float("nan")) -> Built:
    gen = torch.Generator().manual_seed(seed)
    c = case
    qs, ks, vs = random_sequences(c.seqlens_q, c.seqlens_k, c.heads_q, c.heads_k, c.head_dim, c.dtype, device, gen)
    args = dict(causal=c.causal, window_left=c.window[0], window_right=c.window[1], softcap=c.softcap,
                softmax_scale=c.scale)
    slopes = None
    if c.alibi:
        base = alibi_slopes(c.heads_q)
        if c.alibi == "batch":
            base = torch.stack([base * (1 + 0.25 * b) for b in range(len(qs))])
        slopes = base.to(device)
        args["alibi_slopes"] = slopes
    if c.layout in ("dense", "cache", "paged"):
        args["q"] = pack_dense(qs)
    else:
        args["q"] = torch.cat(qs)
        args["cu_seqlens_q"] = cu_seqlens(c.seqlens_q, device)
        args["max_seqlen_q"] = max(c.seqlens_q)
    if c.layout == "dense":
        args["k"], args["v"] = pack_dense(ks), pack_dense(vs)
    elif c.layout == "varlen":
        args["k"], args["v"] = torch.cat(ks), torch.cat(vs)
        args["cu_seqlens_k"] = cu_seqlens(c.seqlens_k, device)
        args["max_seqlen_k"] = max(c.seqlens_k)
    elif c.layout == "cache":
        pads = [(7 * b + 3) % 5 if c.leftpad else 0 for b in range(len(ks))]
        capacity = max(p + k.shape[0] for p, k in zip(pads, ks)) + 5
        args["k"] = pack_dense_cache(ks, capacity, pads, poison)
        args["v"] = pack_dense_cache(vs, capacity, pads, poison)
        args["cache_seqlens"] = torch.tensor([p + k.shape[0] for p, k in zip(pads, ks)], dtype=torch.int32,
                                             device=device)
        if c.leftpad:
            args["cache_leftpad"] = torch.tensor(pads, dtype=torch.int32, device=device)
    elif c.layout in ("paged", "varlen_paged"):
        k_cache, v_cache, table, lens = pack_paged(ks, vs, c.page_size, seed=seed, poison=poison)
        args.update(k=k_cache, v=v_cache, block_table=table, cache_seqlens=lens)
    else:
        raise ValueError(c.layout)
    return Built(case, qs, ks, vs, slopes, args)
