"""Time FA2 tile shapes against each other and against SDPA on the GPU; writes the table behind
csrc/kernels/fa2/tile_config.h.

    python benchmarks/tune_fa2.py --out benchmarks/results/h100/fa2_tiles.json [--head-dims 64,128,256]

Each candidate shape is built as its own kernel library (-DTFI_FA2_BLOCK_M/N/WARPS/STAGES) and called
through the same binding as the shipped kernels; shapes that spill or fail to build are skipped.
"""

import argparse
import ctypes
import json
import sys
from concurrent.futures import ThreadPoolExecutor

import torch
import triton

import torch_flashinfer  # noqa: F401
from torch_flashinfer import _build, _kernels

# (block_m, block_n, warps, K/V stages[, L2 prefetch bytes of the copies: -DTFI_L2_PREFETCH, ptx.cuh,
#  swizzled shared-memory rows: -DTFI_FA2_SWIZZLE, tile_copy.cuh])
CANDIDATES = {
    32: [(128, 64, 4, 2), (128, 128, 4, 2), (128, 64, 8, 2)],
    64: [(128, 64, 4, 2), (128, 128, 4, 2), (128, 32, 4, 2), (128, 128, 4, 1), (128, 64, 4, 1)],
    96: [(128, 64, 8, 2), (128, 64, 4, 2), (64, 64, 4, 2), (128, 64, 4, 1), (64, 64, 4, 1)],
    128: [(128, 64, 4, 2), (128, 32, 4, 2), (128, 64, 8, 2), (128, 64, 4, 1), (128, 128, 8, 1), (64, 64, 4, 2),
          (64, 64, 4, 1)],
    160: [(128, 64, 8, 2), (64, 64, 4, 2), (64, 32, 4, 2), (64, 64, 4, 1)],
    192: [(128, 64, 8, 2), (64, 64, 4, 2), (64, 32, 4, 2), (64, 64, 4, 1), (128, 64, 8, 1)],
    224: [(128, 64, 8, 2), (64, 64, 4, 2), (64, 32, 4, 2), (64, 64, 4, 1), (128, 64, 8, 1)],
    256: [(64, 32, 4, 2), (128, 64, 8, 2), (64, 64, 4, 2), (128, 32, 8, 2), (64, 64, 4, 1), (128, 64, 8, 1)],
}
# The shipped shapes (tile_config.h: shape, swizzle) with an L2 prefetch size on their copies and
# with the other shared-memory row layout.
SHIPPED = {32: ((128, 64, 4, 2), 1), 64: ((128, 128, 4, 2), 0), 96: ((128, 64, 4, 2), 0), 128: ((128, 64, 4, 2), 0),
           160: ((64, 64, 4, 2), 0), 192: ((64, 64, 4, 1), 1), 224: ((128, 64, 8, 2), 0), 256: ((64, 64, 4, 1), 1)}
for _d, (_shape, _sw) in SHIPPED.items():
    _extra = [_shape + (0, _sw), _shape + (128, _sw), _shape + (256, _sw), _shape + (0, 1 - _sw)]
    CANDIDATES[_d] = list(dict.fromkeys([c + (0, 0) for c in CANDIDATES[_d]] + _extra))


def tflops(b, h, s, d, causal, ms):
    flops = 4 * b * h * s * s * d / (2 if causal else 1)
    return flops / ms / 1e9


def bench(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--head-dims", default="64,128,256")
    ap.add_argument("--dtype", default="fp16")
    ap.add_argument("--shipped-only", action="store_true", help="only the shipped shape, in both row layouts")
    ap.add_argument("--seqlens", default="1024,4096",
                    help="comma-separated sequence lengths, batch = 16384 // seqlen (128: the memory-bound prompts "
                         "of the seed suite's prefill_batch and hybrid rows)")
    args = ap.parse_args()
    if args.shipped_only:
        for d, (shape, sw) in SHIPPED.items():
            CANDIDATES[d] = [shape + (0, sw), shape + (0, 1 - sw)]
    dtype = torch.float16 if args.dtype == "fp16" else torch.bfloat16
    binding = _kernels.binding()
    archs = _build.cuda_archs()
    head_dims = [int(d) for d in args.head_dims.split(",")]

    def build(cand):
        d, m, n, w, st, pf, sw = cand
        base = _kernels.fwd_library("fa2", dtype, d)
        lib = _build.KernelLibrary(f"{base.name}_m{m}n{n}w{w}s{st}pf{pf}sw{sw}", base.sources,
                                   base.defines + (f"TFI_FA2_BLOCK_M={m}", f"TFI_FA2_BLOCK_N={n}",
                                                   f"TFI_FA2_WARPS={w}", f"TFI_FA2_STAGES={st}",
                                                   f"TFI_L2_PREFETCH={pf}", f"TFI_FA2_SWIZZLE={sw}"))
        try:
            return _build.build_kernel_library(lib, archs)
        except RuntimeError as e:
            print(f"skip d={d} {m}x{n}x{w}x{st} pf{pf} sw{sw}: {str(e).splitlines()[-1][:200]}", file=sys.stderr)
            return None

    cands = [(d, *c) for d in head_dims for c in CANDIDATES[d]]
    with ThreadPoolExecutor(max_workers=_build.parallel_builds()) as pool:  # one nvcc per candidate
        built = dict(zip(cands, pool.map(build, cands)))
    rows = []
    for d in head_dims:
        h = 32 if d <= 128 else 16
        for s in (int(x) for x in args.seqlens.split(",")):
            b = 16384 // s
            q = torch.randn(b, s, h, d, device="cuda", dtype=dtype)
            k, v = torch.randn_like(q), torch.randn_like(q)
            qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
            for causal in (False, True):
                peers = {}
                for name, backend in (("sdpa_flash", torch.nn.attention.SDPBackend.FLASH_ATTENTION),
                                      ("sdpa_cudnn", torch.nn.attention.SDPBackend.CUDNN_ATTENTION)):
                    try:
                        with torch.nn.attention.sdpa_kernel(backend):
                            peers[name] = bench(lambda: torch.nn.functional.scaled_dot_product_attention(
                                qt, kt, vt, is_causal=causal))
                    except RuntimeError:
                        peers[name] = None
                for (m, n, w, st, pf, sw) in CANDIDATES[d]:
                    path = built.get((d, m, n, w, st, pf, sw))
                    if path is None:
                        continue
                    handle = ctypes.CDLL(str(path))
                    entries = [ctypes.cast(getattr(handle, name), ctypes.c_void_p).value
                               for name in _kernels.FWD_ENTRY_POINTS]
                    out = torch.empty_like(q)
                    lse = torch.empty(b, h, s, device="cuda", dtype=torch.float32)

                    def call():
                        binding.fwd_with_library(*entries, q, k, v, out, lse, s, s, d ** -0.5, causal, 0, None, None)
                    call()
                    ref = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
                    err = (out.transpose(1, 2) - ref).abs().max().item()
                    ms = bench(call)
                    row = dict(head_dim=d, batch=b, heads=h, seqlen=s, causal=causal, block_m=m, block_n=n, warps=w, stages=st, l2_prefetch=pf,
                               swizzle=bool(sw),
                               ms=ms, tflops=tflops(b, h, s, d, causal, ms), max_err_vs_sdpa=err,
                               **{f"{k}_tflops": (tflops(b, h, s, d, causal, t) if t else None)
                                  for k, t in peers.items()})
                    rows.append(row)
                    print(f"d={d:3d} s={s:5d} causal={int(causal)} {m:3d}x{n:3d}x{w}x{st} pf{pf:3d} sw{sw} {row['tflops']:6.1f} TF "
                          f"(flash {row['sdpa_flash_tflops'] or 0:6.1f}, cudnn {row['sdpa_cudnn_tflops'] or 0:6.1f}) "
                          f"err {err:.1e}", flush=True)
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "dtype": args.dtype,
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
