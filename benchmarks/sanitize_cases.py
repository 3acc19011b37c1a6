"""A small grid of every kernel path, for compute-sanitizer (memcheck / racecheck / synccheck):

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python benchmarks/sanitize_cases.py [algo ...]

(without PyTorch's caching allocator every tensor is its own allocation, so memcheck reports a read
past a tensor's end, not only past the end of the allocator's segment around it)

Odd sizes, partial tiles, paged caches with page 1 and 16, left padding, varlen hybrid batches,
split-KV with several splits, and the KV append; results are checked loosely against the reference
so a clean report also means the kernels ran.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import torch_flashinfer  # noqa: E402,F401
from oracle import Case, build  # noqa: E402

CASES = [
    (Case("dense", [7] * 2, [97] * 2, 4, 2, 64, torch.float16, causal=True), "fa2"),
    (Case("dense", [97] * 1, [33] * 1, 4, 4, 256, torch.bfloat16, window=(5, 3)), "fa2"),
    (Case("dense", [150], [333], 4, 2, 256, torch.float16, causal=True), "fa2"),  # one K/V stage, 6 key tiles
    (Case("dense", [130], [260], 4, 4, 128, torch.bfloat16), "fa2"),  # two stages, 5 key tiles, partial last
    (Case("paged", [70] * 2, [130, 87], 4, 2, 256, torch.bfloat16, page_size=16), "fa2"),  # swizzled rows, paged
    (Case("paged", [40] * 2, [300, 129], 4, 2, 128, torch.float16, causal=True, page_size=64), "fa2"),  # page = tile
    (Case("paged", [33] * 2, [61, 20], 4, 2, 256, torch.float16, page_size=5), "fa2"),  # rows step past page ends
    (Case("dense", [300], [100], 4, 2, 256, torch.float16, causal=True), "fa2"),  # query tiles with no key tile
    (Case("varlen", [1, 70, 0, 5], [130, 70, 3, 9], 8, 2, 128, torch.float16, causal=True, alibi="batch"), "fa2"),
    (Case("varlen_paged", [1, 17], [40, 17], 4, 1, 96, torch.float16, causal=True, page_size=1), "fa2"),
    (Case("paged", [3] * 2, [50, 300], 8, 2, 128, torch.float16, causal=True, page_size=16, softcap=10.0), "fa2"),
    (Case("cache", [1] * 3, [1, 200, 77], 8, 2, 128, torch.float16, causal=True, leftpad=True), "split_kv"),
    (Case("paged", [2] * 2, [600, 33], 16, 2, 64, torch.bfloat16, causal=True, page_size=16), "split_kv"),
    (Case("cache", [1] * 2, [1000, 5], 4, 4, 160, torch.float16, causal=True), "split_kv"),
    (Case("paged", [1] * 2, [300, 45], 8, 2, 96, torch.float16, causal=True, page_size=5), "split_kv"),  # shuffles
    (Case("paged", [1] * 3, [1000, 1, 77], 32, 8, 128, torch.bfloat16, causal=True, page_size=1), "split_kv"),
    (Case("cache", [1], [5000], 32, 8, 128, torch.float16, causal=True), "split_kv"),  # one CTA per SM, deep ring
    (Case("cache", [1] * 3, [4096, 1, 900], 20, 5, 64, torch.float16, causal=True), "split_kv"),  # 15 items x 8 splits
    (Case("cache", [8] * 2, [700, 40], 16, 4, 128, torch.float16, causal=True, window=(99, 0)), "split_kv"),  # 2 m-tiles
    (Case("paged", [8] * 3, [300, 17, 90], 32, 4, 64, torch.float16, causal=True, page_size=256), "split_kv"),  # 4
    (Case("varlen", [16, 200, 1, 3], [300, 200, 1, 900], 16, 2, 128, torch.float16, causal=True), "fa2"),  # decode rows
    (Case("dense", [5] * 3, [77] * 3, 8, 8, 64, torch.bfloat16, causal=True, softcap=5.0), "fa2"),
    # more (query tile, head, sequence) items than CTA slots, one query tile per head
    (Case("varlen", [1, 20, 0, 9, 64] * 14, [30, 20, 5, 70, 64] * 14, 8, 2, 128, torch.float16, causal=True), "fa2"),
    (Case("dense", [33] * 40, [90] * 40, 8, 8, 64, torch.bfloat16), "fa2"),  # no decode path, 128-key tiles
    (Case("varlen", [1, 70, 0, 5], [130, 70, 3, 9], 8, 2, 128, torch.float16, causal=True, alibi="head"), "fa1"),
    (Case("paged", [9] * 2, [9, 200], 4, 1, 64, torch.bfloat16, causal=True, page_size=16, window=(50, 0)), "fa1"),
    # fa3 (Hopper): TMA tiles and the cp.async fallback (partial tiles, page 16), 64- and 128-byte swizzle
    (Case("dense", [130] * 2, [300] * 2, 4, 2, 128, torch.float16, causal=True), "fa3"),
    (Case("varlen", [1, 70, 0, 129], [130, 70, 3, 385], 8, 2, 96, torch.bfloat16, alibi="batch"), "fa3"),
    (Case("paged", [40] * 2, [300, 129], 4, 2, 256, torch.float16, causal=True, page_size=16), "fa3"),
    (Case("paged", [70] * 2, [385, 200], 4, 1, 192, torch.float16, page_size=480, softcap=10.0), "fa3"),
    (Case("cache", [3] * 3, [129, 17, 240], 8, 2, 64, torch.float16, causal=True, leftpad=True), "fa3"),
]


def main(algos):
    for case, algo in CASES:
        if algos and algo not in algos:
            continue
        built = build(case, device="cuda")
        out, lse = torch.ops.flashinfer.fwd(**built.args, algo=algo)
        torch.cuda.synchronize()
        for (o, _), (eo, _) in zip(built.split(out, lse), built.expected()):
            assert o.numel() == 0 or (o.double().cpu() - eo).abs().max().item() < 5e-2, case
        print("ok", algo, case, flush=True)
    k_cache = torch.zeros(5, 16, 2, 64, device="cuda", dtype=torch.float16)
    table = torch.tensor([[3, 1], [0, 4]], dtype=torch.int32, device="cuda")
    new = torch.randn(2, 3, 2, 64, device="cuda", dtype=torch.float16)
    torch.ops.flashinfer.append_kv(k_cache, k_cache.clone(), new, new, torch.tensor([14, 0], dtype=torch.int32,
                                                                                    device="cuda"), table)
    torch.cuda.synchronize()
    print("ok append_kv")


if __name__ == "__main__":
    main(sys.argv[1:])  # optional: only the cases of these algos
