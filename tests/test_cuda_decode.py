"""Split-KV decode kernel (algo="split_kv", and what "auto" picks for decode shapes) on the GPU."""

import random

import pytest
import torch

import torch_flashinfer
from oracle import Case, build
from test_cuda_fwd import check_case

pytestmark = pytest.mark.gpu

HEAD_DIMS = (32, 64, 96, 128, 160, 192, 224, 256)


def ragged(batch, longest, seed=0):
    rng = random.Random(seed)
    return [longest] + [rng.randint(1, longest) for _ in range(batch - 1)]


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_every_head_dim(head_dim, dtype):
    check_case(Case("cache", [1] * 3, ragged(3, 700), 8, 2, head_dim, dtype, causal=True), algo="split_kv")


@pytest.mark.parametrize("batch", [1, 7, 256])
@pytest.mark.parametrize("heads", [(8, 8), (8, 2), (16, 2), (32, 1)], ids=["mha", "gqa4", "gqa8", "mqa32"])
def test_batch_and_group_sizes(batch, heads):
    longest = 3000 if batch < 256 else 300
    check_case(Case("cache", [1] * batch, ragged(batch, longest, batch), heads[0], heads[1], 128, torch.float16,
                    causal=True), algo="split_kv")


@pytest.mark.parametrize("page_size", [1, 16, 256])
@pytest.mark.parametrize("heads", [(8, 2), (8, 8)], ids=["gqa4", "mha"])
def test_paged(page_size, heads):
    check_case(Case("paged", [1] * 5, ragged(5, 1500, page_size), heads[0], heads[1], 128, torch.float16,
                    causal=True, page_size=page_size), algo="split_kv")


@pytest.mark.parametrize("seqlen_q", [2, 5, 8])
@pytest.mark.parametrize("layout", ["cache", "paged"])
def test_speculative_multi_token(seqlen_q, layout):
    check_case(Case(layout, [seqlen_q] * 4, ragged(4, 900, seqlen_q), 16, 4, 128, torch.bfloat16, causal=True,
                    page_size=16), algo="split_kv")


def test_64k_context_with_short_neighbours():
    check_case(Case("cache", [1] * 3, [65536, 100, 1], 8, 2, 128, torch.float16, causal=True), algo="split_kv")


@pytest.mark.parametrize("feature", ["alibi", "alibi_batch", "window", "softcap", "leftpad", "all"])
def test_features(feature):
    kw = {"alibi": dict(alibi="head"), "alibi_batch": dict(alibi="batch"), "window": dict(window=(300, 0)),
          "softcap": dict(softcap=30.0), "leftpad": dict(leftpad=True),
          "all": dict(alibi="batch", window=(200, -1), softcap=20.0, leftpad=True)}[feature]
    check_case(Case("cache", [1] * 4, ragged(4, 1200, 3), 8, 2, 128, torch.float16, causal=True, **kw),
               algo="split_kv")


@pytest.mark.parametrize("num_splits", [1, 3])
@pytest.mark.parametrize("page_size", [16, 64, 256])
def test_paged_long_warp_runs(page_size, num_splits):
    """Long runs of whole-tile pages per warp (one block-table lookup per tile): 5000 keys in one or
    three splits, ragged neighbours, pages of 16, 64 and 256 keys."""
    built = build(Case("paged", [1] * 3, [5000, 2113, 700], 8, 2, 128, torch.float16, causal=True,
                       page_size=page_size), device="cuda")
    built.args["num_splits"] = num_splits
    check_case(built.case, algo="split_kv", built=built)


@pytest.mark.parametrize("algo,seqlen_q", [("split_kv", 1), ("fa2", 1), ("fa2", 20)],
                         ids=["split_kv", "fa2_decode", "fa2"])
@pytest.mark.parametrize("page_size", [1, 16, 256])
@pytest.mark.parametrize("pad", [-1, 2**31 - 1], ids=["minus1", "huge"])
def test_paged_table_padding_is_never_read(algo, seqlen_q, page_size, pad):
    """Block-table entries past a sequence's last page (serving engines pad them with -1 or junk)
    are never dereferenced: ragged lengths, so every sequence but the longest has padding."""
    built = build(Case("paged", [seqlen_q] * 3, [1300, 45, 300], 8, 2, 128, torch.float16, causal=True,
                       page_size=page_size), device="cuda")
    table, lens = built.args["block_table"], built.args["cache_seqlens"].tolist()
    for b, n in enumerate(lens):
        table[b, -(-n // page_size):] = pad
    check_case(built.case, algo=algo, built=built)


# Items that do not divide the CTA slots (3 sequences x 5 K/V heads, 8k-key capacity: 8 splits
# of 15 items on 132 SMs, 17 on 264 paged slots), ragged: a sequence of one key leaves most of
# its splits empty. split_kv_runs_ab.json measured these launch shapes with runs of keys that
# cross items instead.
@pytest.mark.parametrize("layout", ["cache", "paged"])
@pytest.mark.parametrize("seqlen_q", [1, 3])
def test_items_not_dividing_the_slots(layout, seqlen_q):
    check_case(Case(layout, [seqlen_q] * 3, [8192, 1, 3001], 20, 5, 128, torch.float16, causal=True, page_size=16),
               algo="split_kv")


@pytest.mark.parametrize("num_splits", [1, 2, 3, 16, 17, 64])
def test_explicit_splits(num_splits):
    built = build(Case("cache", [1] * 2, [1000, 37], 8, 2, 64, torch.float16, causal=True), device="cuda")
    built.args["num_splits"] = num_splits
    check_case(built.case, algo="split_kv", built=built)


# The split merge on every m-tile shape: 1, 2 and 4 m-tiles (16 / 32 / 64 packed rows; d=256
# has one), sequences shorter than a split's share, window and softcap.
@pytest.mark.parametrize("num_splits", [16, 24])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("heads_q,heads_k,seqlen_q", [(8, 8, 1), (16, 2, 2), (32, 2, 2), (32, 1, 2)],
                         ids=["r1", "r16", "r32", "r64"])
def test_split_merge_tile_shapes(num_splits, head_dim, heads_q, heads_k, seqlen_q):
    case = Case("cache", [seqlen_q] * 3, [2500, 9, seqlen_q], heads_q, heads_k, head_dim, torch.bfloat16, causal=True,
                window=(1800, 0), softcap=30.0)
    built = build(case, device="cuda")
    built.args["num_splits"] = num_splits
    check_case(case, algo="split_kv", built=built)


def test_split_counters_per_stream():
    """Split calls count finished splits in per-stream counters: calls running on two streams at
    once (each stream held back by a sleep while both queues fill, so their kernels overlap) on
    different inputs must not see each other's counts or partial results. The merge order is
    fixed, so each result is bitwise equal to the same call alone."""
    case = Case("cache", [1] * 2, [3000, 1200], 16, 2, 128, torch.float16, causal=True)
    args = [dict(build(case, device="cuda", seed=seed).args, num_splits=8) for seed in (1, 2)]
    expected = [torch.ops.flashinfer.fwd(**a, algo="split_kv")[0] for a in args]
    streams = [torch.cuda.Stream() for _ in range(2)]
    torch.cuda.synchronize()
    for stream in streams:
        with torch.cuda.stream(stream):
            torch.cuda._sleep(20_000_000)  # ~10 ms of GPU time: the calls below queue up behind it
    outs = []
    for i in range(40):
        with torch.cuda.stream(streams[i % 2]):
            outs.append(torch.ops.flashinfer.fwd(**args[i % 2], algo="split_kv")[0])
    torch.cuda.synchronize()
    for i, out in enumerate(outs):
        assert torch.equal(out, expected[i % 2]), f"call {i}"


def test_long_cache_normal_l2_policy():
    """A cache over decode/launch.cuh's kEvictFirstMaxBytes (256 MiB) streams K/V with the normal
    L2 policy; the rest of the suite's caches are smaller (evict-first)."""
    check_case(Case("cache", [1] * 2, [33000, 50], 8, 8, 128, torch.float16, causal=True), algo="split_kv")


def test_auto_uses_split_kv_for_decode():
    check_case(Case("paged", [1] * 4, ragged(4, 2000), 32, 8, 128, torch.float16, causal=True), algo="auto")


def _decode_step_inputs(batch, hk, hq, d, capacity, dtype, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(batch, 1, hq, d, device="cuda", dtype=dtype, generator=gen)
    k_new = torch.randn(batch, 1, hk, d, device="cuda", dtype=dtype, generator=gen)
    v_new = torch.randn(batch, 1, hk, d, device="cuda", dtype=dtype, generator=gen)
    lens = torch.randint(0, capacity - 1, (batch,), device="cuda", dtype=torch.int32, generator=gen)
    return q, k_new, v_new, lens


@pytest.mark.parametrize("paged", [False, True])
def test_cuda_graph_decode_step_replays_with_new_lengths(paged):
    batch, hq, hk, d, capacity, dtype = 4, 16, 4, 128, 2048, torch.float16
    if paged:
        k_cache = torch.randn(batch * capacity // 16 + 5, 16, hk, d, device="cuda", dtype=dtype)
        table = torch.randperm(k_cache.shape[0], device="cuda")[:batch * capacity // 16]
        table = table.to(torch.int32).view(batch, capacity // 16)
    else:  # a transformers-style (b, h, s, d) cache viewed as (b, s, h, d)
        k_cache = torch.randn(batch, hk, capacity, d, device="cuda", dtype=dtype).transpose(1, 2)
        table = None
    v_cache = torch.randn_like(k_cache)
    q, k_new, v_new, lens = _decode_step_inputs(batch, hk, hq, d, capacity, dtype, 0)

    def step():
        return torch_flashinfer.flash_attn_with_kvcache(q, k_cache, v_cache, k_new, v_new, cache_seqlens=lens,
                                                        block_table=table, causal=True)

    step()  # build/load outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    for seed in range(1, 4):
        fresh = _decode_step_inputs(batch, hk, hq, d, capacity, dtype, seed)
        for static, new in zip((q, k_new, v_new, lens), fresh):
            static.copy_(new)
        graph.replay()
        torch.cuda.synchronize()
        ref, _ = torch_flashinfer.reference_attention(q.cpu(), k_cache.cpu(), v_cache.cpu(),
                                                      cache_seqlens=(lens + 1).cpu(),
                                                      block_table=None if table is None else table.cpu(),
                                                      causal=True)
        assert (out.cpu().float() - ref.float()).abs().max().item() < 4e-3
        # the appended token landed where it should
        pos = lens.cpu()
        for b in range(batch):
            if table is None:
                row = k_cache[b, pos[b]]
            else:
                row = k_cache[table[b, pos[b] // 16], pos[b] % 16]
            assert torch.equal(row, k_new[b, 0])


def test_compile_reduce_overhead_decode():
    batch, hq, hk, d, capacity, dtype = 2, 8, 2, 64, 512, torch.float16
    k_cache = torch.randn(batch, capacity, hk, d, device="cuda", dtype=dtype)
    v_cache = torch.randn_like(k_cache)

    def step(q, k_new, v_new, lens):
        torch.ops.flashinfer.append_kv(k_cache, v_cache, k_new, v_new, lens)
        out, _ = torch.ops.flashinfer.fwd(q, k_cache, v_cache, cache_seqlens=lens + 1, causal=True)
        return out * 2

    compiled = torch.compile(step, mode="reduce-overhead", fullgraph=True)
    for seed in range(4):
        q, k_new, v_new, lens = _decode_step_inputs(batch, hk, hq, d, capacity, dtype, seed)
        got = compiled(q, k_new, v_new, lens).clone()
        ref, _ = torch_flashinfer.reference_attention(q.cpu(), k_cache.cpu(), v_cache.cpu(),
                                                      cache_seqlens=(lens + 1).cpu(), causal=True)
        assert (got.cpu().float() - 2 * ref.float()).abs().max().item() < 8e-3


# ---- the decode path inside the FA2 launch: short query sequences of a packed (hybrid) batch ----

@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_fa2_decode_rows_every_head_dim(head_dim):
    check_case(Case("varlen", [1, 130, 16, 0, 3, 17], [700, 130, 16, 9, 1, 40], 8, 2, head_dim, torch.bfloat16,
                    causal=True), algo="fa2")


@pytest.mark.parametrize("heads", [(8, 8), (16, 2), (32, 1)], ids=["mha", "gqa8", "mqa32"])
@pytest.mark.parametrize("layout", ["varlen", "varlen_paged", "dense"])
def test_fa2_decode_rows_group_sizes(heads, layout):
    # group x 16 queries = up to 32 row blocks of the K/V head, spread over its query heads' CTAs
    lens_q = [16, 200, 1, 5] if layout != "dense" else [16] * 4
    lens_k = [300, 200, 1, 900] if layout != "dense" else [300] * 4
    check_case(Case(layout, lens_q, lens_k, heads[0], heads[1], 128, torch.float16, causal=True, page_size=16),
               algo="fa2")


@pytest.mark.parametrize("feature", ["window", "alibi", "softcap", "noncausal"])
def test_fa2_decode_rows_features(feature):
    kw = {"window": dict(window=(50, 3), causal=False), "alibi": dict(alibi="batch", causal=True),
          "softcap": dict(softcap=10.0, causal=True), "noncausal": dict(causal=False)}[feature]
    check_case(Case("varlen", [1, 64, 9, 16], [333, 64, 90, 16], 8, 4, 64, torch.float16, **kw), algo="fa2")
