"""Time one decode shape three ways: host time per eager call, GPU time per call (CUDA graph of
100 calls, so launch gaps vanish), and SDPA cuDNN on the same data.

    python benchmarks/profile_decode.py [--batch 1 --heads-q 32 --heads-k 8 --seqlen-k 8192 --algo split_kv]
"""

import argparse
import time

import torch

import torch_flashinfer  # noqa: F401


def per_call_us(fn, n=2000):
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    us = (time.perf_counter() - t0) / n * 1e6
    torch.cuda.synchronize()
    return us


def host_breakdown(q, k, v, lens, algo):
    """CPU microseconds per call of each piece of the eager decode path (GPU work is tiny here)."""
    from torch_flashinfer import _kernels, _validation

    args = (q, k, v, None, None, 0, 0, lens, None, None, None, None, -1, -1, 0.0, 0, algo)
    layout = _validation.check_fwd(*args)
    out, lse = torch.empty_like(q), q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32)
    binding = _kernels.binding()
    fn = _kernels._fwd_entry(_kernels.resolve_algo(algo, layout, 1), q.dtype, q.shape[-1], q.device)
    x = torch.randn(16, device="cuda")
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    rows = {
        "torch.ops.flashinfer.fwd": lambda: torch.ops.flashinfer.fwd(q, k, v, cache_seqlens=lens, causal=True,
                                                                      algo=algo),
        "  check_fwd": lambda: _validation.check_fwd(*args),
        "  two output allocations": lambda: (torch.empty_like(q), q.new_empty((1, 1, 1), dtype=torch.float32)),
        "  _kernels.fwd (no validation)": lambda: _kernels.fwd(q, k, v, out, lse, layout, None, None, 0, 0, lens,
                                                               None, None, None, None, True, -1, -1, 0.0, 0, algo),
        "  binding.fwd (launch only)": lambda: binding.fwd(fn, q, k, v, out, lse, None, None, lens, None, None, None,
                                                           1, k.shape[1], 0.088, True, -1, -1, 0.0, 1, None),
        "aten.add": lambda: torch.add(x, x),
        "F.scaled_dot_product_attention": lambda: torch.nn.functional.scaled_dot_product_attention(
            qt, kt, vt, enable_gqa=True),
    }
    for name, fn_ in rows.items():
        print(f"{name:<34} {per_call_us(fn_):7.1f} us")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads-q", type=int, default=32)
    ap.add_argument("--heads-k", type=int, default=8)
    ap.add_argument("--seqlen-k", type=int, default=8192)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--algo", default="split_kv")
    ap.add_argument("--num-splits", type=int, default=0)
    ap.add_argument("--host-breakdown", action="store_true")
    a = ap.parse_args()
    q = torch.randn(a.batch, 1, a.heads_q, a.head_dim, device="cuda", dtype=torch.float16)
    k = torch.randn(a.batch, a.seqlen_k, a.heads_k, a.head_dim, device="cuda", dtype=torch.float16)
    v = torch.randn_like(k)
    lens = torch.full((a.batch,), a.seqlen_k, dtype=torch.int32, device="cuda")

    def call():
        return torch.ops.flashinfer.fwd(q, k, v, cache_seqlens=lens, causal=True, algo=a.algo,
                                        num_splits=a.num_splits)

    for _ in range(10):
        call()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(1000):
        call()
    host_us = (time.perf_counter() - t0) * 1e3
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(100):
            call()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    gpu_us = start.elapsed_time(end) / 1000 * 1e3
    kv_bytes = 2 * k.numel() * k.element_size()
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
        g2 = torch.cuda.CUDAGraph()
        torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True)
        torch.cuda.synchronize()
        with torch.cuda.graph(g2):
            for _ in range(100):
                torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True)
    start.record()
    for _ in range(10):
        g2.replay()
    end.record()
    torch.cuda.synchronize()
    cudnn_us = start.elapsed_time(end) / 1000 * 1e3
    if a.host_breakdown:
        host_breakdown(q, k, v, lens, a.algo)
    print(f"{a.algo} b{a.batch} {a.heads_q}/{a.heads_k} sk{a.seqlen_k}: host {host_us:.1f} us/call, "
          f"GPU {gpu_us:.1f} us/call ({kv_bytes / gpu_us / 1e3:.0f} GB/s); cuDNN GPU {cudnn_us:.1f} us "
          f"({kv_bytes / cudnn_us / 1e3:.0f} GB/s)")


if __name__ == "__main__":
    main()
