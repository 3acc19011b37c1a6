"""Timing: the median of one call, the order of repeated rounds, the device copy bandwidth, and what
the device is.

On CUDA a call is timed by events around it with the L2 cache flushed before every call (a
256 MiB buffer is zeroed: over 5x the 50 MB L2 of an H100), so small shapes read their inputs
from memory as they do in a model, not from the cache of the previous call. The flush also keeps
the GPU busy while the CPU queues the call, so the number is GPU time, not launch overhead.
``triton.testing.do_bench`` (median) does exactly this and is used when triton is importable,
for numbers comparable with PERFORMANCE.md; else the same loop is written here.
On CPU: ``time.perf_counter`` around each call.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Callable, Iterator

import torch

_FLUSH_BYTES = 256 << 20
_flush_buffers: dict = {}


def median_ms(fn: Callable[[], object], device: torch.device, iters: int) -> float:
    """Median time of one call of ``fn`` in milliseconds over about ``iters`` calls, after warm-up.

    The first call runs before any timing, so a backend that refuses the inputs raises here.
    """
    if device.type == "cuda":
        return _cuda_median_ms(fn, device, iters)
    fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def round_order(n: int, rounds: int) -> Iterator[int]:
    """Indices 0..n-1 once per round, every other round in reverse order: a caller timing n calls
    keeps each one's lowest median, so what runs after a long call (a hot GPU) or first after a
    large case is not penalised by its place in the order (one H100: the same kernel 12-13 % apart
    by place)."""
    for r in range(rounds):
        yield from (range(n) if r % 2 == 0 else reversed(range(n)))


def _flush_buffer(device: torch.device) -> torch.Tensor:
    if device not in _flush_buffers:
        _flush_buffers[device] = torch.empty(_FLUSH_BYTES, dtype=torch.int8, device=device)
    return _flush_buffers[device]


def _cuda_median_ms(fn: Callable[[], object], device: torch.device, iters: int) -> float:
    with torch.cuda.device(device):
        fn()  # first call: kernel build/load, cuDNN plan; errors surface here
        torch.cuda.synchronize()
        flush = _flush_buffer(device)
        per_call = _cold_loop_ms(fn, flush, 5)  # warm-up; ms of one flush + call
        try:
            from triton.testing import do_bench
        except ImportError:
            return statistics.median(_cold_call_ms(fn, flush, iters))
        # do_bench sizes its loops in ms from its own estimate of (flush + call): ask for about `iters` calls.
        return float(do_bench(fn, warmup=5 * per_call, rep=iters * per_call, return_mode="median"))


def _cold_loop_ms(fn: Callable[[], object], flush: torch.Tensor, n: int) -> float:
    """Mean ms of one (flush + call) over n of them."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        flush.zero_()
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / n


def _cold_call_ms(fn: Callable[[], object], flush: torch.Tensor, n: int) -> list[float]:
    """ms of each of n calls, each after an L2 flush."""
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for start, end in zip(starts, ends):
        flush.zero_()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in zip(starts, ends)]


def copy_gbps(device: torch.device) -> float:
    """Bandwidth of a large device-to-device copy, bytes read + written per second / 1e9: the decode ceiling."""
    nbytes = (1 << 30) if device.type == "cuda" else (64 << 20)
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, iters=20)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def device_info(device: torch.device) -> dict:
    """The JSON ``device`` record: name, torch, CUDA and cuDNN versions (null on CPU)."""
    cuda = device.type == "cuda"
    return {
        "name": torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine() or "cpu"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
    }
