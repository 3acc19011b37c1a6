"""Per-CTA start and end times of one-split decode launches (diagnostic build, -DTFI_DECODE_CTA_TIMES):
how long the launch runs with every CTA streaming and how long its tail is, where fewer CTAs
than SMs are left. Each call follows a zeroing L2 flush, as the benchmark CLI's.

    python benchmarks/cta_times.py --out cta_times.json
"""

import argparse
import json
import statistics

import torch

import torch_flashinfer  # noqa: F401
from torch_flashinfer import _kernels
from tune_split_kv import VARIANTS as TUNE_VARIANTS, library

# name -> tune_split_kv's variant: one tile in flight per warp (as shipped on one-split launches) or two
VARIANTS = {"shallow": "c2shallow", "deep": "c2deep"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", default="16x32x8x8192,16x32x8x32768,64x32x8x8192")
    ap.add_argument("--calls", type=int, default=20)
    args = ap.parse_args()
    device, dtype, d = torch.device("cuda"), torch.float16, 128
    binding = _kernels.binding()
    libs = {name: library(f"times_{v}", dtype, d, TUNE_VARIANTS[v] + ("TFI_DECODE_CTA_TIMES=1",))
            for name, v in VARIANTS.items()}
    flush = torch.empty(256 << 20, dtype=torch.int8, device=device)
    rows = []
    for shape in args.shapes.split(","):
        b, hq, hk, sk = map(int, shape.split("x"))
        q = torch.randn(b, 1, hq, d, device=device, dtype=dtype)
        k, v = (torch.randn(b, sk, hk, d, device=device, dtype=dtype) for _ in range(2))
        kv_bytes = 2 * k.numel() * 2
        out = torch.empty_like(q)
        lse = torch.empty(b, hq, 1, device=device, dtype=torch.float32)
        for name, (entries, _) in libs.items():
            calls = []
            for i in range(args.calls + 2):
                flush.zero_()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                binding.fwd_with_library(*entries, q, k, v, out, lse, 1, sk, d ** -0.5, True, 1, None, None)
                end.record()
                torch.cuda.synchronize()
                if i < 2:
                    continue
                raw = lse.view(b, hk, hq // hk).view(torch.int64)[:, :, :2].reshape(-1, 2).tolist()
                t0 = [r[0] for r in raw]
                dur = [r[1] & ((1 << 48) - 1) for r in raw]
                sm = [r[1] >> 48 for r in raw]
                first = min(t0)
                ends = sorted(t - first + u for t, u in zip(t0, dur))
                starts = sorted(t - first for t in t0)
                calls.append(dict(event_us=start.elapsed_time(end) * 1e3, start_us=[s / 1e3 for s in starts],
                                  end_us=[e / 1e3 for e in ends], sm=sm, t0_us=[(t - first) / 1e3 for t in t0],
                                  dur_us=[u / 1e3 for u in dur]))
            med = lambda key: statistics.median(key(c) for c in calls)  # noqa: E731
            n = len(calls[0]["end_us"])
            summary = dict(event_us=med(lambda c: c["event_us"]), last_start_us=med(lambda c: c["start_us"][-1]),
                           first_end_us=med(lambda c: c["end_us"][0]), p10_end_us=med(lambda c: c["end_us"][n // 10]),
                           median_end_us=med(lambda c: c["end_us"][n // 2]),
                           p90_end_us=med(lambda c: c["end_us"][(9 * n) // 10]), last_end_us=med(lambda c: c["end_us"][-1]))
            summary["tail_us"] = summary["last_end_us"] - summary["first_end_us"]
            summary["span_gbps"] = kv_bytes / (summary["last_end_us"] * 1e-6) / 1e9
            print(f"b{b} {hq}/{hk} sk{sk} {name:8s}: " + ", ".join(f"{k2} {v2:.1f}" for k2, v2 in summary.items()),
                  flush=True)
            rows.append(dict(batch=b, heads_q=hq, heads_k=hk, seqlen_k=sk, variant=name, ctas=n, summary=summary,
                             calls=calls[:3]))
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
