"""Time split_kv's occupancy (CTAs per SM) and split counts on decode shapes against its own plan
and cuDNN: the table behind the plan in csrc/kernels/decode/launch.cuh.

    python benchmarks/tune_split_kv.py --out benchmarks/results/h100/split_kv.json

For each shape: the shipped plan ("auto"), then each library variant of VARIANTS (1, 2 or 3 CTAs
per SM, -DTFI_SPLIT_KV_CTAS_PER_SM=n; L2 prefetch size of the K/V copies, -DTFI_DECODE_L2_PREFETCH=bytes)
over a range of explicit split counts, each checked against cuDNN's output. Times are the benchmark CLI's (L2 flushed before each call).

    python benchmarks/tune_split_kv.py --page-size 16 --out benchmarks/results/h100/split_kv_paged16.json

With --page-size: paged caches (shuffled pages, as the benchmark CLI's paged_decode rows) on the
llm suite's paged shapes, timed through the op (the shipped library) at each split count, next to
our op and cuDNN on the equivalent dense cache; and, with --variants, each of those libraries on
the paged cache at each split count.
"""

import argparse
import ctypes
import json

import torch

import torch_flashinfer  # noqa: F401
from torch_flashinfer import _build, _kernels
from torch_flashinfer.benchmark import timing

# (batch, heads_q, heads_k, seqlen_k): the llm and seed suites' decode rows
SHAPES = [(1, 32, 8, 8192), (16, 32, 8, 8192), (64, 32, 8, 8192), (1, 32, 8, 32768), (16, 32, 8, 32768),
          (128, 32, 32, 8192), (1, 32, 32, 128), (128, 32, 32, 128), (1024, 32, 32, 128), (128, 32, 32, 1024),
          (8, 32, 8, 2048), (4, 32, 4, 16384), (256, 32, 8, 8192)]
PAGED_SHAPES = [(1, 32, 8, 32768), (16, 32, 8, 8192), (64, 32, 8, 8192), (1, 32, 8, 8192), (4, 32, 8, 8192),
                (32, 32, 8, 8192)]
SPLITS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48)


# name -> defines: CTAs per SM, the L2 prefetch size of the K/V copies (split_kv_kernel.cuh,
# shipped: 128 bytes), their L2 policy (shipped: by the cache's size; c2first: always
# evict-first, c2normal: never), the ring's stages (shipped: as many as fit; st2: two) and the
# tiles each warp keeps in flight (shipped: launch.cuh's shallow lead with one split; c2deep:
# never shallow; c2shallow: always)
VARIANTS = {"c1": ("TFI_SPLIT_KV_CTAS_PER_SM=1",), "c2": ("TFI_SPLIT_KV_CTAS_PER_SM=2",),
            "c3": ("TFI_SPLIT_KV_CTAS_PER_SM=3",),
            "c2pf0": ("TFI_SPLIT_KV_CTAS_PER_SM=2", "TFI_DECODE_L2_PREFETCH=0"),
            "c2pf256": ("TFI_SPLIT_KV_CTAS_PER_SM=2", "TFI_DECODE_L2_PREFETCH=256"),
            "c2first": ("TFI_SPLIT_KV_CTAS_PER_SM=2", "TFI_DECODE_EVICT_FIRST=1"),
            "c2normal": ("TFI_SPLIT_KV_CTAS_PER_SM=2", "TFI_DECODE_EVICT_FIRST=0"),
            "c2st2": ("TFI_SPLIT_KV_CTAS_PER_SM=2", "TFI_SPLIT_KV_STAGES=2"),
            "c1st2": ("TFI_SPLIT_KV_CTAS_PER_SM=1", "TFI_SPLIT_KV_STAGES=2"),
            "c2deep": ("TFI_SPLIT_KV_CTAS_PER_SM=2", "TFI_SPLIT_KV_SHALLOW=0"),
            "c2shallow": ("TFI_SPLIT_KV_CTAS_PER_SM=2", "TFI_SPLIT_KV_SHALLOW=1")}


def library(name: str, dtype, head_dim: int, defines=None):
    """split_kv built with a variant's macros (defines; default VARIANTS[name]): entry points, handle."""
    base = _kernels.fwd_library("split_kv", dtype, head_dim)
    lib = _build.KernelLibrary(f"{base.name}_{name}", base.sources,
                               base.defines + (VARIANTS[name] if defines is None else tuple(defines)))
    handle = ctypes.CDLL(str(_build.build_kernel_library(lib, _build.cuda_archs())))
    return tuple(ctypes.cast(getattr(handle, name), ctypes.c_void_p).value for name in _kernels.FWD_ENTRY_POINTS), handle


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--variants", help="comma-separated names of VARIANTS (default: all; none with --page-size)")
    ap.add_argument("--splits", default=",".join(map(str, SPLITS)),
                    help="comma-separated split counts per variant (0: the plan's)")
    ap.add_argument("--kv-layout", choices=("bshd", "bhsd"), default="bshd",
                    help="memory order of the K/V cache (bhsd: a transformers cache, passed transposed)")
    ap.add_argument("--shapes", default="",
                    help="comma-separated BxHQxHKxSK shapes (default: SHAPES, or PAGED_SHAPES with --page-size)")
    ap.add_argument("--page-size", type=int, default=0,
                    help="time paged caches of this page size through the op (and --variants' libraries)")
    ap.add_argument("--sorted-pages", action="store_true",
                    help="paged: each sequence's pages in memory order (default: shuffled over the pool)")
    args = ap.parse_args()
    d, dtype, device = args.head_dim, torch.float16, torch.device("cuda")
    binding = _kernels.binding()
    page = args.page_size
    variants = args.variants.split(",") if args.variants else [] if page else list(VARIANTS)
    libs = {name: library(name, dtype, d) for name in variants}
    copy = timing.copy_gbps(device)
    rows = []
    shapes = [tuple(map(int, x.split("x"))) for x in args.shapes.split(",")] if args.shapes else None
    for b, hq, hk, sk in shapes or (PAGED_SHAPES if page else SHAPES):
        q = torch.randn(b, 1, hq, d, device=device, dtype=dtype)
        if page:
            pages = -(-sk // page)
            k_cache, v_cache = (torch.randn(b * pages, page, hk, d, device=device, dtype=dtype) for _ in range(2))
            order = torch.arange if args.sorted_pages else torch.randperm
            block_table = order(b * pages, device=device).view(b, pages)
            k = k_cache[block_table].flatten(1, 2)[:, :sk]
            v = v_cache[block_table].flatten(1, 2)[:, :sk]
            block_table = block_table.to(torch.int32)
            cache_seqlens = torch.full((b,), sk, dtype=torch.int32, device=device)
        elif args.kv_layout == "bshd":
            k, v = (torch.randn(b, sk, hk, d, device=device, dtype=dtype) for _ in range(2))
        else:
            k, v = (torch.randn(b, hk, sk, d, device=device, dtype=dtype).transpose(1, 2) for _ in range(2))
        kv_bytes = 2 * k.numel() * 2
        qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

        def cudnn():
            with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
                return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, enable_gqa=hq != hk)

        ref = cudnn().transpose(1, 2)
        timed = {"cudnn": timing.median_ms(cudnn, device, 30)}
        # paged: "auto" is the paged cache with the plan's splits, "dense_auto" the same bytes as a dense cache
        timed["dense_auto" if page else "auto"] = timing.median_ms(
            lambda: torch.ops.flashinfer.fwd(q, k, v, causal=True, algo="split_kv"), device, 30)
        if page:
            for s in [0] + [int(x) for x in args.splits.split(",") if int(x) > 0]:
                def paged(s=s):
                    return torch.ops.flashinfer.fwd(q, k_cache, v_cache, cache_seqlens=cache_seqlens,
                                                    block_table=block_table, causal=True, num_splits=s,
                                                    algo="split_kv")[0]
                err = (paged().float() - ref.float()).abs().max().item()
                assert err < 1e-2, f"page {page}, splits={s}: error {err}"
                timed["auto" if s == 0 else f"paged_s{s}"] = timing.median_ms(paged, device, 30)
        out = torch.empty_like(q)
        lse = torch.empty(b, hq, 1, device=device, dtype=torch.float32)
        for c, (entries, _) in libs.items():
            for s in map(int, args.splits.split(",")):
                if s > 1 and sk // s < 64:
                    continue

                def call():
                    if page:
                        binding.fwd_with_library(*entries, q, k_cache, v_cache, out, lse, 1, pages * page, d ** -0.5,
                                                 True, s, cache_seqlens, block_table)
                    else:
                        binding.fwd_with_library(*entries, q, k, v, out, lse, 1, sk, d ** -0.5, True, s, None, None)
                call()
                err = (out.float() - ref.float()).abs().max().item()
                assert err < 1e-2, f"{c}, splits={s}: error {err}"
                timed[f"{c}_s{s}"] = timing.median_ms(call, device, 30)
        best = min((t, name) for name, t in timed.items() if name not in ("cudnn", "dense_auto"))
        row = dict(batch=b, heads_q=hq, heads_k=hk, seqlen_k=sk, head_dim=d, kv_layout=args.kv_layout, page_size=page,
                   sorted_pages=args.sorted_pages,
                   kv_mb=kv_bytes / 1e6, ms=timed)
        rows.append(row)
        gbps = {name: kv_bytes / (t * 1e-3) / 1e9 for name, t in timed.items()}
        print(f"b{b:5d} {hq}/{hk} sk{sk:6d}: auto {timed['auto'] * 1e3:8.1f} us {gbps['auto']:5.0f} GB/s | best "
              f"{best[1]:>14s} {best[0] * 1e3:8.1f} us {kv_bytes / best[0] / 1e6:5.0f} | cudnn "
              f"{timed['cudnn'] * 1e3:8.1f} us {gbps['cudnn']:5.0f} | auto/cudnn {timed['cudnn'] / timed['auto']:.2f}"
              + (f" | ours dense {timed['dense_auto'] * 1e3:8.1f} us" if page else ""),
              flush=True)
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "copy_gbps": copy,
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
