"""fa3 on dense 128-token causal prompts (32 heads, d=128) against SDPA cuDNN and a floor for the same
traffic, torch.addcmul(q, k, v, out=o) (reads q, k, v, writes o, no math), and the same traffic in fa3's
tiles and item order (tile_sum: a Triton program per prompt and head, o = q + k + v); at --batches b the persistent
fa3 runs 32 b items in ceil(32 b / 132) rounds on an H100. b=100 also times the seed's 100 % hybrid batch
as the benchmark CLI calls fa3 (one varlen launch) and its buffers viewed dense.

    python benchmarks/fa3_floor.py --tag shipped --out floor.json
    TORCH_FLASHINFER_CSRC=/path/to/other/csrc python benchmarks/fa3_floor.py --tag other --peers none ...

Own timing loop: before each of --iters calls the L2 is flushed by zeroing 256 MiB (as the benchmark's
timing: dirty lines) or, with --flush clean, by reading it; median, best of three rounds (every other one
in reverse order). Results: benchmarks/results/h100/fa3_rounds_floor.json, fa3_copy_ab.json."""
import argparse
import json
import statistics

import torch

import torch_flashinfer  # noqa: F401  (registers torch.ops.flashinfer)
from torch_flashinfer.benchmark import backends, schema

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--tag", default="shipped", help="label of this process's build in the rows")
ap.add_argument("--batches", default="100,132")
ap.add_argument("--flush", choices=("dirty", "clean"), default="dirty")
ap.add_argument("--peers", choices=("all", "none"), default="all", help="none: fa3 only (A/B of builds)")
ap.add_argument("--iters", type=int, default=200)
ap.add_argument("--out", required=True)
args = ap.parse_args()
flush_buf = torch.empty(256 << 20, dtype=torch.int8, device="cuda")


def median_ms(fn):
    fn()
    torch.cuda.synchronize()
    events = []
    for _ in range(args.iters):
        flush_buf.zero_() if args.flush == "dirty" else flush_buf.sum(dtype=torch.int32)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events)


try:
    import triton
    import triton.language as tl

    @triton.jit
    def _tile_sum(q, k, v, o, H: tl.constexpr, S: tl.constexpr, D: tl.constexpr):
        # program b * H + h: o = q + k + v on the (S, D) tile of prompt b, head h (fa3's items, in its order)
        b, h = tl.program_id(0) // H, tl.program_id(0) % H
        off = b * S * H * D + tl.arange(0, S)[:, None] * (H * D) + h * D + tl.arange(0, D)[None, :]
        tl.store(o + off, tl.load(q + off) + tl.load(k + off) + tl.load(v + off))

    def tile_sum(q, k, v, o):
        b, s, h, d = q.shape
        _tile_sum[(b * h,)](q, k, v, o, h, s, d, num_warps=8)
except ImportError:
    tile_sum = None

rows = []
for b in map(int, args.batches.split(",")):
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(b, 128, 32, 128, device="cuda", dtype=torch.float16, generator=gen) for _ in range(3))
    o = torch.empty_like(q)
    calls = {"fa3": lambda: torch.ops.flashinfer.fwd(q, k, v, causal=True, algo="fa3", return_lse=False)}
    if b == 100:
        case = schema.Case("hybrid", 100, 32, 32, 128, 128, 128, True, "float16", prefill_fraction=1.0)
        x = backends.make_inputs(case, torch.device("cuda"))
        calls["fa3_varlen"] = backends.torch_flashinfer(case, x, "fa3")
        hq, hk, hv = (t.view(100, 128, 32, 128) for t in (x.q, x.k, x.v))
        calls["fa3_hybbuf"] = lambda: torch.ops.flashinfer.fwd(hq, hk, hv, causal=True, algo="fa3", return_lse=False)
        if args.peers == "all":
            calls["cudnn_hybbuf"] = backends.sdpa_call(hq, hk, hv, True, "sdpa_cudnn")
    if args.peers == "all":
        calls["cudnn"] = backends.sdpa_call(q, k, v, True, "sdpa_cudnn")
        calls["addcmul"] = lambda: torch.addcmul(q, k, v, out=o)
        if tile_sum is not None:
            calls["tile_sum"] = lambda: tile_sum(q, k, v, o)
    row = dict(tree=args.tag, batch=b, items=32 * b, rounds=-(-32 * b // 132), flush=args.flush)
    for r in range(3):
        for name in list(calls) if r % 2 == 0 else list(calls)[::-1]:
            ms = median_ms(calls[name])
            row[name] = round(min(ms, row.get(name, ms)), 5)
    print(json.dumps(row), flush=True)
    rows.append(row)
with open(args.out, "w") as f:
    json.dump(rows, f, indent=1)
