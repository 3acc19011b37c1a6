"""Time fa2 against fa3 (and the other algos asked for) on the shapes where "auto" must choose
between them on Hopper: every head dim, paged caches of every page kind, short dense q (chunked
prefill, speculative verification), varlen prefill batches and the seed's hybrid batches; writes
the table behind ``_kernels.resolve_algo``.

    python benchmarks/fa3_choice.py --out benchmarks/results/h200/fa3_choice.json [--algos fa2,fa3] [--groups ...]

Every call goes through ``torch.ops.flashinfer.fwd`` (the timing of the benchmark CLI: median, L2
flushed before each call). ``TORCH_FLASHINFER_CSRC`` points it at another source tree, so the same
table times a tuning build (gpu_session.sh ``fa3_ab``).
"""

import argparse
import json
import sys

import torch

import torch_flashinfer  # noqa: F401
from torch_flashinfer.benchmark import backends, schema, timing

DTYPE = torch.float16
TOKENS = 16384  # tokens per prefill point, as in the llm suite


def dense(b, sq, sk, hq, hk, d, causal=True):
    return dict(kind="dense", batch=b, seqlen_q=sq, seqlen_k=sk, heads_q=hq, heads_k=hk, head_dim=d, causal=causal)


GROUPS = {
    # llm suite's prefill: d=128, 16k tokens, causal and not, and its head-dim rows
    "prefill": [dense(TOKENS // s, s, s, 32, 32, 128, c) for c in (False, True) for s in (512, 2048, 8192)]
    + [dense(4, 4096, 4096, 32, 32, 64), dense(4, 4096, 4096, 16, 16, 256)],
    # every head dim at 4 x 4k causal, about 4096 model width (heads = 4096 // d)
    "head_dims": [dense(4, 4096, 4096, 4096 // d, 4096 // d, d) for d in (32, 64, 96, 128, 160, 192, 224, 256)],
    # a paged cache of 4 x 4k keys, 4k queries each, causal: TMA pages (16, 32, 64, 128, 256) and the
    # copy warpgroup's cp.async pages (1, 5, 24, 40, 96)
    "paged": [dict(dense(4, 4096, 4096, 32, 8, 128), kind="paged", page_size=p)
              for p in (1, 5, 16, 24, 32, 40, 64, 96, 128, 256)],
    # short dense q against a long cache (chunked prefill, speculative verification)
    "short_q": [dict(dense(16, sq, 4096, 32, 8, 128), kind="cache") for sq in (9, 16, 32, 64, 128, 256)],
    # d=224, where fa2 has no GQA-packed decode rows (8-warp tiles): short dense q and varlen prompts
    "d224": [dict(dense(16, sq, 4096, 16, 4, 224), kind="cache") for sq in (9, 16)]
    + [dict(kind="varlen", batch=64, seqlen_q=s, seqlen_k=s, heads_q=16, heads_k=4, head_dim=224, causal=True)
       for s in (128, 512)],
    # the seed's hybrid batches: 100 requests of 128 keys, the first 100 * fraction of them prompts of
    # 128 queries, the rest one query each; MHA as the seed, and GQA 32/8
    "hybrid": [dict(kind="hybrid", batch=100, seqlen_q=128, seqlen_k=128, heads_q=32, heads_k=hk, head_dim=128,
                    causal=True, prefill_fraction=f) for hk in (32, 8) for f in (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)],
    # persistent fa3's rounds on 132 SMs (H100, H200): 128-token causal prompts, 32 heads, so 32 * b
    # items, one 128-row tile each, in rounds of 132 CTAs: whole rounds at b=33 and 99, one round more
    # with 24 % / 24 % / 97 % of its CTAs busy at b=34 / 100 / 103. Whether the time follows the rounds
    # (ceil(32 * b / 132)) or the items: the seed's 100 % hybrid batch is b=100.
    "rounds": [dense(b, 128, 128, 32, 32, 128) for b in (33, 34, 99, 100, 103)],
    # varlen prefill: 64 prompts of ragged lengths around the mean, causal
    "varlen": [dict(kind="varlen", batch=64, seqlen_q=s, seqlen_k=s, heads_q=32, heads_k=8, head_dim=128, causal=True)
               for s in (64, 128, 512, 2048)],
}


def make_call(case, algo, gen):
    b, sq, sk, hq, hk, d = (case[k] for k in ("batch", "seqlen_q", "seqlen_k", "heads_q", "heads_k", "head_dim"))
    fwd = torch.ops.flashinfer.fwd

    def randn(*shape):
        return torch.randn(*shape, device="cuda", dtype=DTYPE, generator=gen)

    if case["kind"] == "hybrid":  # the benchmark CLI's own inputs and call for the seed's hybrid rows
        hybrid = schema.Case("hybrid", b, hq, hk, sq, sk, d, case["causal"], "float16",
                             prefill_fraction=case["prefill_fraction"])
        return backends.torch_flashinfer(hybrid, backends.make_inputs(hybrid, torch.device("cuda")), algo)
    if case["kind"] == "varlen":
        lens = torch.randint(sq // 2, sq * 3 // 2 + 1, (b,), generator=gen, device="cuda")
        cu = torch.nn.functional.pad(lens.cumsum(0), (1, 0)).to(torch.int32)
        total, max_len = int(cu[-1]), int(lens.max())
        q, k, v = randn(total, hq, d), randn(total, hk, d), randn(total, hk, d)
        return lambda: fwd(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=max_len, max_seqlen_k=max_len,
                           causal=case["causal"], algo=algo)
    q = randn(b, sq, hq, d)
    if case["kind"] == "paged":
        page = case["page_size"]
        pages = b * -(-sk // page)
        kc, vc = randn(pages, page, hk, d), randn(pages, page, hk, d)
        table = torch.randperm(pages, generator=gen, device="cuda").reshape(b, -1).to(torch.int32)
        lens = torch.full((b,), sk, dtype=torch.int32, device="cuda")
        return lambda: fwd(q, kc, vc, cache_seqlens=lens, block_table=table, causal=case["causal"], algo=algo)
    k, v = randn(b, sk, hk, d), randn(b, sk, hk, d)
    if case["kind"] == "cache":
        lens = torch.full((b,), sk, dtype=torch.int32, device="cuda")
        return lambda: fwd(q, k, v, cache_seqlens=lens, causal=case["causal"], algo=algo)
    return lambda: fwd(q, k, v, causal=case["causal"], algo=algo)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--algos", default="fa2,fa3")
    ap.add_argument("--groups", default=",".join(GROUPS))
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2,
                    help="times each algo of a case is measured (timing.round_order); each keeps its lowest "
                         "median (as the benchmark CLI)")
    args = ap.parse_args()
    algos = args.algos.split(",")
    device = torch.device("cuda")
    rows = []
    for group in args.groups.split(","):
        for case in GROUPS[group]:
            row = dict(case, group=group)
            for i in timing.round_order(len(algos), args.rounds):
                algo, key = algos[i], algos[i] + "_ms"
                if key in row and row[key] is None:  # refused in an earlier round
                    continue
                gen = torch.Generator(device="cuda").manual_seed(0)
                try:
                    ms = round(timing.median_ms(make_call(case, algo, gen), device, args.iters), 5)
                except (RuntimeError, NotImplementedError, ValueError) as err:
                    row[key] = None
                    print(f"{algo} refused {case}: {str(err).splitlines()[0][:160]}", file=sys.stderr)
                    continue
                row[key] = min(ms, row.get(key, ms))
            ms = [row[a + "_ms"] for a in algos]
            print(group, {k: v for k, v in case.items() if k not in ("kind", "causal") or v is not True},
                  " ".join(f"{a} {m}" for a, m in zip(algos, ms)),
                  f"(first/last {ms[0] / ms[-1]:.3f})" if None not in ms else "", flush=True)
            rows.append(row)
            torch.cuda.empty_cache()
    info = timing.device_info(device)
    with open(args.out, "w") as f:
        json.dump(dict(device=info, dtype="float16", algos=algos, rounds=args.rounds, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
