"""Time one decode shape several ways, against SDPA cuDNN on the same tensors:

- host: CPU microseconds per eager call (launch-bound loops, median of 9 interleaved rounds), beside
  ``aten.add`` and SDPA, the yardsticks of the host-overhead target (our op at most 10 us above a
  plain kernel launch);
- cold: the benchmark CLI's number (CUDA events around one call after an L2 flush that zeroes
  256 MiB, median): the call finds L2 full of dirty lines, whose write-back shares the DRAM;
- clean: the same after a flush that reads 256 MiB (L2 full of clean lines, as after a decode
  step's weight-reading GEMMs);
- graph: GPU time per call with 100 calls captured in a CUDA graph (inputs warm in L2);
- kernels: per-kernel GPU time from the profiler;
- floor: the same timings of the simplest kernels that move the K/V bytes -- a sum that reads them
  once (one launch, like ours) and a copy that reads and writes them (the copy_gbps kernel at this
  size, its GB/s counting both) -- what any kernel reading this many bytes can reach.

    python benchmarks/profile_decode.py [--batch 1 --heads-q 32 --heads-k 8 --seqlen-k 8192 --algo split_kv]
"""

import argparse
import time

import torch

import torch_flashinfer  # noqa: F401
from torch_flashinfer.benchmark import timing


def host_us(fns, n=500, repeats=9):
    """CPU microseconds per call of each fn in a launch-bound loop: the median over `repeats`
    rounds, the fns interleaved round by round (one host's frequency and noise hit all alike)."""
    for fn in fns.values():
        for _ in range(50):
            fn()
    torch.cuda.synchronize()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter() - t0) / n * 1e6)
            torch.cuda.synchronize()
    return {name: sorted(t)[repeats // 2] for name, t in times.items()}


def graph_us(fn, n=100):
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(n):
            fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (10 * n)


def clean_us(fn, n=100):
    """Median us of one call after an L2 flush that only reads (events around the call)."""
    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda").view(torch.float32)
    fn()
    times = []
    for _ in range(n):
        flush.sum()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        times.append((start, end))
    torch.cuda.synchronize()
    return sorted(s.elapsed_time(e) for s, e in times)[n // 2] * 1e3


def kernel_us(fn):
    """GPU microseconds per call of each kernel the call launches (profiler, 20 calls)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
    rows = {}
    for e in prof.key_averages():
        if e.device_type == torch.autograd.DeviceType.CUDA and e.count:
            rows[e.key[:60]] = e.device_time  # average per launch
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads-q", type=int, default=32)
    ap.add_argument("--heads-k", type=int, default=8)
    ap.add_argument("--seqlen-k", type=int, default=8192)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--algo", default="split_kv")
    ap.add_argument("--num-splits", type=int, default=0)
    ap.add_argument("--host", action="store_true", help="also time the host side of an eager call")
    ap.add_argument("--ncu", action="store_true",
                    help="only run ours and cuDNN once each, after a zeroing flush, between profiler start/stop")
    a = ap.parse_args()
    q = torch.randn(a.batch, 1, a.heads_q, a.head_dim, device="cuda", dtype=torch.float16)
    k = torch.randn(a.batch, a.seqlen_k, a.heads_k, a.head_dim, device="cuda", dtype=torch.float16)
    v = torch.randn_like(k)
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def ours():
        return torch.ops.flashinfer.fwd(q, k, v, causal=True, algo=a.algo, num_splits=a.num_splits)

    def cudnn():
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, enable_gqa=a.heads_q != a.heads_k)

    if a.ncu:  # ncu --profile-from-start off: the kernels of one call each, L2 as the benchmark leaves it
        flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
        ours(), cudnn()
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
        for fn in (ours, cudnn):
            flush.zero_()
            fn()
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
        return
    kv_bytes = 2 * k.numel() * k.element_size()
    shape = f"{a.algo} b{a.batch} {a.heads_q}/{a.heads_k} sk{a.seqlen_k} d{a.head_dim}"
    kv = torch.zeros(2 * k.numel(), device="cuda", dtype=k.dtype)  # the floor rows' K/V-sized buffers
    kv_copy = torch.empty_like(kv)
    tiny = torch.zeros(32, device="cuda")
    for name, fn, moved in (("ours ", ours, kv_bytes), ("cudnn", cudnn, kv_bytes),
                            ("floor: read (sum)", kv.sum, kv_bytes),
                            ("floor: copy", lambda: kv_copy.copy_(kv), 2 * kv_bytes),
                            ("floor: launch (a 32-float add)", lambda: tiny.add(tiny), 0)):
        cold, clean, warm = timing.median_ms(fn, q.device, 100) * 1e3, clean_us(fn), graph_us(fn)
        print(f"{shape} {name}: " + ", ".join(
            f"{label} {us:7.1f} us" + (f" ({moved / us / 1e3:5.0f} GB/s)" if moved else "")
            for label, us in (("cold", cold), ("clean", clean), ("graph", warm))))
    for who, fn in (("ours", ours), ("cudnn", cudnn)):
        for kernel, us in kernel_us(fn).items():
            print(f"    {who}: {us:7.1f} us  {kernel}")
    if a.host:
        x = torch.randn(16, device="cuda")
        fwd_default = torch.ops.flashinfer.fwd.default
        # The layers of a call, to see where the host time goes: the dispatcher's argument parsing
        # (torch.ops vs the Python arg parser; keywords vs positions), the typed wrapper, and the
        # binding's own launch path without the op around it.
        from torch_flashinfer import _kernels

        add_op = torch.ops.aten.add.Tensor
        entries = _kernels._fwd_entry(a.algo if a.algo != "auto" else "split_kv", q.dtype, a.head_dim, q.device)
        out, lse = torch.empty_like(q), torch.empty(a.batch, a.heads_q, 1, device="cuda")
        binding = _kernels.binding()
        args18 = (q, k, v, None, None, 0, 0, None, None, None, None, None, True, -1, -1, 0.0, 0, a.algo)

        rows = {
            "torch.ops.flashinfer.fwd": ours,
            "torch.ops.flashinfer.fwd.default": lambda: fwd_default(q, k, v, causal=True, algo=a.algo),
            "fwd.default, 18 positional": lambda: fwd_default(*args18),
            "ops.fwd (eager fast path)": lambda: torch_flashinfer.ops.fwd(q, k, v, causal=True, algo=a.algo),
            "flash_attn_with_kvcache": lambda: torch_flashinfer.flash_attn_with_kvcache(q, k, v, causal=True),
            "binding.fwd_with_library (no op)": lambda: binding.fwd_with_library(
                *entries, q, k, v, out, lse, 1, a.seqlen_k, a.head_dim ** -0.5, True, 0, None, None),
            "aten.add": lambda: torch.add(x, x),
            "torch.ops.aten.add.Tensor": lambda: add_op(x, x),
            "torch.empty x2": lambda: (torch.empty_like(q), torch.empty(1, 1, 1, device="cuda")),
            "F.scaled_dot_product_attention": lambda: torch.nn.functional.scaled_dot_product_attention(
                qt, kt, vt, enable_gqa=a.heads_q != a.heads_k),
        }
        for name, us in host_us(rows).items():
            print(f"    host {us:6.1f} us/call  {name}")
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(200):
                ours()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
