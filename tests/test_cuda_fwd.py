"""CUDA kernels against the fp64 oracle: error <= 2x that of the same math at the input dtype."""

import itertools
import math
import random

import pytest
import torch

import torch_flashinfer  # noqa: F401
from torch_flashinfer import _kernels
from conftest import FULL_GRID
from oracle import Case, build

pytestmark = pytest.mark.gpu

HEAD_DIMS = (32, 64, 96, 128, 160, 192, 224, 256)
DTYPES = (torch.float16, torch.bfloat16)
ALGOS = ("fa2", "fa1", "fa3")  # every prefill kernel family runs the same grid (fa3: on Hopper GPUs)


def skip_unless_runs(algo: str) -> None:
    if algo in _kernels.HOPPER_FAMILIES and torch.cuda.get_device_capability() != (9, 0):
        pytest.skip(f"{algo} runs on Hopper GPUs (sm_90) only")


def poison_allocator(nbytes: int) -> None:
    """Leave NaN-filled blocks in the caching allocator so outputs the op allocates start as NaN."""
    for _ in range(2):
        junk = torch.full((nbytes // 4 + 1024,), float("nan"), device="cuda")
        del junk


def check_case(case: Case, algo: str = "fa2", seed: int = 0, built=None):
    skip_unless_runs(algo)
    built = built or build(case, device="cuda", seed=seed)
    poison_allocator(built.args["q"].numel() * 4)  # out, lse
    poison_allocator(64 << 20)  # the large pool: split-KV / fa1 workspaces up to 64 MB start as NaN too
    out, lse = torch.ops.flashinfer.fwd(**built.args, algo=algo)
    torch.cuda.synchronize()
    assert out.shape == built.args["q"].shape and out.dtype == case.dtype
    assert not torch.isnan(out).any(), "NaN in the output (unwritten rows or a poisoned read)"
    expected, lowp = built.expected(), built.lowp()
    err = ref_err = lse_err = 0.0
    for (o, l), (eo, el), lo in zip(built.split(out, lse), expected, lowp):
        err = max(err, (o.double().cpu() - eo).abs().max().item() if o.numel() else 0.0)
        ref_err = max(ref_err, (lo.double().cpu() - eo).abs().max().item() if lo.numel() else 0.0)
        l = l.cpu()
        assert torch.equal(torch.isinf(l), torch.isinf(el)), "rows that see no key need lse = -inf"
        finite = torch.isfinite(el)
        if finite.any():
            lse_err = max(lse_err, (l[finite].double() - el[finite]).abs().max().item())
    assert err <= 2 * ref_err + 1e-4, f"{case}: max error {err:.3g} vs {ref_err:.3g} for the same math in {case.dtype}"
    assert lse_err <= 2e-3, f"{case}: lse error {lse_err:.3g}"
    return out, lse


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("algo", ALGOS)
def test_every_head_dim_and_dtype(head_dim, dtype, causal, algo):
    check_case(Case("dense", [97] * 2, [130] * 2, 4, 2, head_dim, dtype, causal=causal), algo=algo)


# One to three 64-key tiles, whole or partial, through the contiguous and both paged copy paths
# (page 64: whole tiles where the K tile is 64 keys; pages 1 and 16: row by row).
KEY_TILES = [("dense", 1, None), ("dense", 64, None), ("dense", 65, None), ("dense", 192, None),
             ("paged", 200, 64), ("paged", 130, 16), ("paged", 150, 24), ("paged", 90, 5), ("paged", 70, 1)]


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("layout,sk,page", KEY_TILES, ids=[f"{l}{k}p{p}" for l, k, p in KEY_TILES])
@pytest.mark.parametrize("algo", ALGOS)
def test_key_tile_counts(head_dim, layout, sk, page, algo):
    """Each head dim's tile shape (one or two K/V stages, padded or swizzled shared-memory rows)
    with every kind of first, middle and last key tile."""
    extra = dict(page_size=page) if page else {}
    seqlens_k = [sk, sk - sk // 3] if page else [sk] * 2  # paged caches: ragged lengths too
    check_case(Case(layout, [70] * 2, seqlens_k, 4, 2, head_dim, torch.bfloat16, **extra), algo=algo)


@pytest.mark.parametrize("head_dim", [128, 256])
@pytest.mark.parametrize("algo", ALGOS)
def test_query_tiles_without_keys(head_dim, algo):
    """Bottom-right causal with more queries than keys: the first 200 queries see no key, so whole
    query tiles run no key tile (zeros, lse -inf) next to tiles that do."""
    check_case(Case("dense", [300] * 2, [100] * 2, 4, 2, head_dim, torch.float16, causal=True), algo=algo)


ODD = (1, 7, 97, 1025)


@pytest.mark.parametrize("sq,sk", list(itertools.product(ODD, ODD)) if FULL_GRID else
                         [(1, 1), (1, 1025), (7, 97), (97, 7), (1025, 1025), (1025, 97), (97, 1025)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("algo", ALGOS)
def test_odd_seqlens(sq, sk, causal, algo):
    check_case(Case("dense", [sq] * 2, [sk] * 2, 4, 4, 128, torch.float16, causal=causal), algo=algo)


@pytest.mark.parametrize("heads", [(16, 4), (8, 1)], ids=["gqa4", "mqa"])
@pytest.mark.parametrize("algo", ALGOS)
def test_gqa_mqa(heads, algo):
    check_case(Case("dense", [77] * 2, [300] * 2, heads[0], heads[1], 128, torch.float16, causal=True), algo=algo)


@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("algo", ALGOS)
def test_varlen_hybrid(head_dim, causal, algo):
    # decode rows (seq_q = 1) next to prefill rows in one launch, plus an empty sequence
    check_case(Case("varlen", [1, 128, 1, 7, 0, 300, 1], [128, 128, 1025, 20, 5, 300, 1], 8, 2, head_dim,
                    torch.float16, causal=causal), algo=algo)


# Many short sequences of random lengths in one launch: more (query tile, head, sequence) items
# than CTA slots, one query tile per head (48 sequences x 8 heads; the launch shape that
# fa2_persistent_ab.json measured with persistent CTAs; fa3's persistent CTAs take several items each).
@pytest.mark.parametrize("head_dim", [32, 64, 96, 128, 160, 224])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("algo", ["fa2", "fa3"])
def test_many_short_varlen(head_dim, causal, algo):
    # decode rows, empty sequences, rows that see no key and more keys than queries among the items
    rng = random.Random(head_dim * 2 + causal)
    max_q = 64 if head_dim == 160 else 128  # one query tile (tile_config.h)
    seqlens_q = [rng.choice([0, 1, 3, 17, max_q, rng.randint(1, max_q)]) for _ in range(48)]
    seqlens_k = [max(0, sq + rng.choice([0, 0, 5, 200, -2])) for sq in seqlens_q]
    check_case(Case("varlen", seqlens_q, seqlens_k, 8, 2, head_dim, torch.float16, causal=causal), algo=algo,
               seed=head_dim)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("algo", ["fa2", "fa3"])
def test_many_short_dense_features(dtype, algo):
    # the same without decode rows (dense q of 100 rows), with every score modifier; paged with
    # pages fa3 copies as TMA boxes (16) and row by row (5)
    check_case(Case("dense", [100] * 40, [300] * 40, 8, 8, 128, dtype, causal=True, window=(150, -1),
                    softcap=20.0, alibi="head"), algo=algo)
    check_case(Case("dense", [97] * 30, [97] * 30, 16, 4, 64, dtype), algo=algo)
    if algo == "fa3":
        for page in (16, 5):
            check_case(Case("paged", [70] * 30, [200 + 7 * i for i in range(30)], 8, 2, 96, dtype, causal=True,
                            page_size=page), algo=algo)


# Causal prompts of several query tiles, more (tile, head, sequence) items than any GPU has SMs:
# fa3's persistent CTAs run items of unequal work, in rounds of alternating direction; ragged
# lengths, a window, paged caches copied by TMA (16) and row by row (5), more keys than queries
# and fewer (the first query tiles of a causal prompt then have no key tile).
FA3_PERSISTENT = [
    ("dense", [1025] * 4, [1025] * 4, None, (-1, -1)),
    ("varlen", [1025, 700, 1, 1300, 0, 257], [1025, 900, 1, 1300, 0, 600], None, (-1, -1)),
    ("cache", [600] * 4, [601, 1200, 2000, 650], None, (250, -1)),
    ("paged", [700] * 4, [700, 1500, 831, 1200], 16, (-1, -1)),
    ("paged", [700] * 4, [700, 1500, 831, 1200], 5, (-1, -1)),
    ("cache", [1025] * 4, [300, 1025, 40, 700], None, (-1, -1)),  # query tiles that see no key among the items
]


@pytest.mark.parametrize("head_dim", [64, 128, 224, 256])
@pytest.mark.parametrize("layout,seqlens_q,seqlens_k,page,window", FA3_PERSISTENT,
                         ids=[f"{c[0]}p{c[3]}{'w' if c[4][0] >= 0 else ''}" for c in FA3_PERSISTENT])
def test_fa3_persistent_causal(head_dim, layout, seqlens_q, seqlens_k, page, window):
    extra = dict(page_size=page) if page else {}
    check_case(Case(layout, seqlens_q, seqlens_k, 8, 2, head_dim, torch.float16, causal=True, window=window,
                    **extra), algo="fa3", seed=head_dim)


# Items whose two math warpgroups see different key tiles, mixed with full items of one and of
# several key tiles in one persistent launch: second 64 query rows all past the sequence (decode
# requests, prompts of at most 64 tokens, last query tiles of at most 64 rows), rows that see no key
# (more queries than keys), causal diagonals and windows, items of 1, 7, 16 and 17 rows.
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("causal,window", [(False, (-1, -1)), (True, (-1, -1)), (True, (100, -1)), (False, (70, 20))])
def test_fa3_mixed_warpgroup_tiles(head_dim, causal, window):
    seqlens_q = [1, 64, 65, 1025, 128, 129, 0, 192, 1, 7, 300, 200, 16, 17]
    seqlens_k = [128, 64, 65, 1025, 700, 129, 50, 192, 1000, 7, 300, 70, 16, 300]
    check_case(Case("varlen", seqlens_q, seqlens_k, 16, 4, head_dim, torch.float16, causal=causal, window=window),
               algo="fa3", seed=head_dim)


@pytest.mark.parametrize("page_size", [1, 5, 16, 24, 256])
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("algo", ALGOS)
def test_paged(page_size, dtype, algo):
    check_case(Case("paged", [5] * 3, [1, 700, 257], 8, 2, 128, dtype, causal=True, page_size=page_size), algo=algo)


@pytest.mark.parametrize("page_size", [1, 16, 256])
@pytest.mark.parametrize("algo", ALGOS)
def test_varlen_paged_hybrid(page_size, algo):
    check_case(Case("varlen_paged", [1, 64, 1, 9], [300, 64, 1, 520], 8, 2, 64, torch.bfloat16, causal=True,
                    page_size=page_size), algo=algo)


@pytest.mark.parametrize("leftpad", [False, True])
@pytest.mark.parametrize("algo", ALGOS)
def test_dense_cache(leftpad, algo):
    check_case(Case("cache", [3] * 4, [90, 1, 300, 17], 8, 2, 128, torch.float16, causal=True, leftpad=leftpad), algo=algo)


@pytest.mark.parametrize("window", [(0, 0), (64, -1), (-1, 17), (100, 30)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("algo", ALGOS)
def test_sliding_window(window, causal, algo):
    check_case(Case("dense", [300] * 2, [520] * 2, 4, 2, 128, torch.float16, causal=causal, window=window), algo=algo)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("algo", ALGOS)
def test_softcap(dtype, algo):
    check_case(Case("dense", [200] * 2, [333] * 2, 4, 2, 128, dtype, causal=True, softcap=20.0, scale=0.3), algo=algo)


@pytest.mark.parametrize("alibi", ["head", "batch"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("algo", ALGOS)
def test_alibi(alibi, causal, algo):
    check_case(Case("dense", [150] * 2, [401] * 2, 8, 2, 128, torch.float16, causal=causal, alibi=alibi), algo=algo)


@pytest.mark.parametrize("algo", ALGOS)
def test_all_features_together(algo):
    check_case(Case("varlen_paged", [1, 90, 1, 33], [700, 120, 5, 90], 8, 2, 96, torch.bfloat16, causal=True,
                    window=(200, -1), softcap=15.0, alibi="batch", page_size=16), algo=algo)


@pytest.mark.parametrize("algo", ["fa2", "fa3"])
def test_noncontiguous_transformers_layout(algo):
    # transformers keeps (b, h, s, d) tensors: the op takes their (b, s, h, d) transposes as they are
    skip_unless_runs(algo)
    b, h, hk, s, d = 2, 8, 2, 333, 128
    q = torch.randn(b, h, 40, d, device="cuda", dtype=torch.float16).transpose(1, 2)
    k_full = torch.randn(b, hk, 512, d, device="cuda", dtype=torch.float16)
    v_full = torch.randn(b, hk, 512, d, device="cuda", dtype=torch.float16)
    k, v = k_full[:, :, :s].transpose(1, 2), v_full[:, :, :s].transpose(1, 2)
    out, lse = torch.ops.flashinfer.fwd(q, k, v, causal=True, algo=algo)
    ref, ref_lse = torch.ops.flashinfer.fwd(q.contiguous(), k.contiguous(), v.contiguous(), causal=True, algo=algo)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    torch.testing.assert_close(lse, ref_lse, atol=0, rtol=0)


@pytest.mark.parametrize("algo", ["fa2", "fa3"])
def test_large_grid(algo):
    # batch x heads x query tiles above 65535 (the limit of a grid's y/z dims)
    skip_unless_runs(algo)
    b, h, d = 2100, 32, 64
    q = torch.randn(b, 1, h, d, device="cuda", dtype=torch.float16)
    k = torch.randn(b, 9, h, d, device="cuda", dtype=torch.float16)
    v = torch.randn(b, 9, h, d, device="cuda", dtype=torch.float16)
    out, _ = torch.ops.flashinfer.fwd(q, k, v, algo=algo)
    ref = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2).float(), k.transpose(1, 2).float(),
                                                           v.transpose(1, 2).float()).transpose(1, 2)
    assert (out.float() - ref).abs().max().item() < 2e-3


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("algo", ["fa2", "fa3"])
def test_seqlen_32k(causal, algo):
    skip_unless_runs(algo)
    b, h, hk, s, d = 1, 4, 2, 32768, 128
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(b, s, h, d, device="cuda", dtype=torch.float16, generator=gen)
    k = torch.randn(b, s, hk, d, device="cuda", dtype=torch.float16, generator=gen)
    v = torch.randn(b, s, hk, d, device="cuda", dtype=torch.float16, generator=gen)
    out, lse = torch.ops.flashinfer.fwd(q, k, v, causal=causal, algo=algo)
    # oracle: the (CPU-validated) reference in fp32 on the GPU, for the first and last rows
    rows = torch.cat([torch.arange(0, 256), torch.arange(s - 256, s)]).cuda()
    ref_out, ref_lse = torch_flashinfer.reference_attention(q.float(), k.float(), v.float(), causal=causal)
    err = (out[:, rows].float() - ref_out[:, rows]).abs().max().item()
    assert err < 2e-3, err
    assert (lse[:, :, rows] - ref_lse[:, :, rows]).abs().max().item() < 2e-3


@pytest.mark.parametrize("batch,heads_q,heads_k,window", [(1, 7, 7, (-1, -1)), (2, 6, 2, (-1, -1)), (2, 6, 2, (3000, 0))])
def test_fa2_tile_order_windows(batch, heads_q, heads_k, window):
    """fa2's causal launch order: windows of (sequence, head) pairs sized by their K/V bytes
    (fa2/launch.cuh), here 12k keys at d=128: 2 pairs per window of 7 (the first holds 1), and 8
    of 12 with GQA (the first 4); every query tile of every pair must still run once."""
    check_case(Case("dense", [300] * batch, [12000] * batch, heads_q, heads_k, 128, torch.float16, causal=True,
                    window=window), algo="fa2")


# A paged hybrid batch, and a launch of more items than SMs (persistent fa3 CTAs; with
# TFI_FA3_DYNAMIC=1 their items come from a counter that the capture zeroes before each replay).
GRAPH_CASES = {
    "paged": Case("varlen_paged", [1, 17, 1], [100, 40, 300], 8, 2, 128, torch.float16, causal=True, page_size=16),
    "persistent": Case("varlen", [100] * 40, [130] * 40, 8, 2, 128, torch.float16, causal=True),
}


@pytest.mark.parametrize("name", GRAPH_CASES)
@pytest.mark.parametrize("algo", ["fa2", "fa3"])
def test_cuda_graph_capture_and_replay(algo, name):
    skip_unless_runs(algo)
    case = GRAPH_CASES[name]
    built = build(case, device="cuda")
    args = dict(built.args, algo=algo)
    static_q = args.pop("q")
    torch.ops.flashinfer.fwd(static_q, **args)  # build + load outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, lse = torch.ops.flashinfer.fwd(static_q, **args)
    for seed in range(3):
        fresh = build(case, device="cuda", seed=seed + 1)
        static_q.copy_(fresh.args["q"])
        for arg in ("k", "v", "block_table"):
            if arg in args:
                args[arg].copy_(fresh.args[arg])
        graph.replay()
        torch.cuda.synchronize()
        for (o, _), (eo, _) in zip(fresh.split(out, lse), fresh.expected()):
            assert (o.double().cpu() - eo).abs().max().item() < 4e-3


# Launches of more items than SMs back to back on one stream, each against the oracle: one item
# more than the SMs, three times as many, twice as many plus one, and causal prompts of several
# query tiles. Built with TFI_FA3_DYNAMIC=1 (tile_config.h), fa3's persistent CTAs take their items
# from a counter, and each launch must leave it at zero for the next: a counter left at x skips
# items of a launch with more than x items beyond its CTAs (outputs start as NaN).
@pytest.mark.parametrize("algo", ["fa2", "fa3"])
def test_persistent_launches_back_to_back(algo):
    sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    for batch in (sms + 1, 3 * sms, 2 * sms + 1):
        check_case(Case("varlen", [5] * batch, [9] * batch, 1, 1, 64, torch.float16, causal=True), algo=algo,
                   seed=batch)
    check_case(Case("dense", [1025] * 3, [1025] * 3, 8, 2, 128, torch.float16, causal=True), algo=algo)


# fa3's key tiles are 128 (head_dim <= 160), 96 (192), 64 (224) or 80 (256) keys: lengths on both
# sides of their multiples, through TMA (whole tiles of a contiguous cache; of a page that is a
# multiple of the tile: 384 for 128, 96 and 64, 480 for 96 and 80; or one box per page where pages
# divide the tile: 16 for all, 32 for 128, 96 and 64, 40 for 80) and cp.async (partial tiles, pages
# that neither divide nor are multiples of the tile); query tiles whole and partial (130 queries:
# a second tile of 2 rows).
FA3_KEYS = [
    ("dense", [130] * 2, [385] * 2, None, False),
    ("dense", [70] * 2, [96] * 2, None, False),
    ("varlen", [70, 130, 1, 0, 200, 5], [80, 129, 385, 0, 96, 1], None, False),
    ("cache", [130] * 5, [1, 80, 128, 257, 385], None, False),
    ("cache", [3] * 4, [96, 129, 17, 240], None, True),
    ("paged", [70] * 5, [128, 129, 385, 240, 17], 16, False),
    ("paged", [70] * 3, [385, 384, 97], 384, False),
    ("paged", [70] * 3, [481, 80, 160], 480, False),
    ("paged", [70] * 3, [300, 96, 161], 32, False),
    ("paged", [70] * 2, [400, 81], 40, False),
    ("varlen_paged", [1, 130, 70], [300, 129, 96], 384, False),
]


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("layout,seqlens_q,seqlens_k,page,leftpad", FA3_KEYS,
                         ids=[f"{c[0]}{c[2][0]}p{c[3]}{'lp' if c[4] else ''}" for c in FA3_KEYS])
@pytest.mark.parametrize("causal", [False, True])
def test_fa3_key_tiles(head_dim, layout, seqlens_q, seqlens_k, page, leftpad, causal):
    extra = dict(page_size=page) if page else {}
    check_case(Case(layout, seqlens_q, seqlens_k, 4, 2, head_dim, torch.float16, causal=causal, leftpad=leftpad,
                    **extra), algo="fa3", seed=head_dim)


def test_fa3_refused_off_hopper():
    if torch.cuda.get_device_capability() == (9, 0):
        pytest.skip("a Hopper GPU runs fa3")
    built = build(Case("dense", [3], [3], 2, 2, 64, torch.float16), device="cuda")
    with pytest.raises(NotImplementedError, match="runs on Hopper GPUs"):
        torch.ops.flashinfer.fwd(**built.args, algo="fa3")


def test_auto_takes_fa3_where_tma_copies():
    """On Hopper "auto" runs dense prefill on fa3 unless its copies would fall back to cp.async
    (pages that neither hold nor divide its key tile) or TMA cannot map the strides."""
    skip_unless_runs("fa3")
    for head_dim, by_tma, not_by_tma in ((128, (8, 16, 32, 64, 128, 256, 384), (1, 5, 24, 40, 96)),
                                         (256, (8, 16, 40, 80, 160, 240), (1, 32, 64, 256)),
                                         (192, (16, 32, 96, 192), (64, 128, 256))):
        for page in by_tma + not_by_tma:
            assert _kernels.fa3_paged_by_tma(torch.float16, head_dim, torch.device("cuda"), page) == (page in by_tma)
    for page, family in ((5, "fa2"), (16, "fa3")):  # auto's choice, and it matches the reference
        case = Case("paged", [130, 130], [170, 300], 4, 2, 128, torch.float16, causal=True, page_size=page)
        assert auto_family(case) == family, page
        check_case(case, algo="auto")


def auto_family(case: Case) -> str:
    """The kernel family "auto" plans for the case, told by the planned kernel's entry point."""
    defaults = dict(cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=0, max_seqlen_k=0, cache_seqlens=None,
                    cache_leftpad=None, block_table=None, alibi_slopes=None, softmax_scale=None, causal=False,
                    window_left=-1, window_right=-1, softcap=0.0, num_splits=0)
    entry = _kernels.plan_fwd(**{**defaults, **build(case, device="cuda").args}, algo="auto")[0]
    families = [f for f in _kernels.FAMILIES
                if _kernels._fwd_entry(f, case.dtype, case.head_dim, torch.device("cuda"))[0] == entry]
    assert len(families) == 1
    return families[0]


def test_auto_sends_short_q_to_fa3_where_fa2_has_no_decode_rows():
    """d=224 (fa2's eight-warp shape, no packed decode rows): on Hopper "auto" runs varlen q and
    9-16-token q on fa3; 8 tokens stay on split_kv."""
    skip_unless_runs("fa3")
    for case, family in ((Case("varlen", [1, 130, 7], [300, 130, 97], 4, 2, 224, torch.float16, causal=True), "fa3"),
                         (Case("cache", [12] * 2, [300, 97], 4, 2, 224, torch.float16, causal=True), "fa3"),
                         (Case("cache", [8] * 2, [300, 97], 4, 2, 224, torch.float16, causal=True), "split_kv")):
        assert auto_family(case) == family, case
        check_case(case, algo="auto")


def test_auto_sends_long_varlen_q_to_fa3():
    """Packed varlen q with at least FA3_VARLEN_MIN_MEAN_Q queries per sequence runs on fa3 on
    Hopper, with GQA or without; one query fewer stays on fa2 (_kernels.resolve_algo)."""
    skip_unless_runs("fa3")
    bound = _kernels.FA3_VARLEN_MIN_MEAN_Q
    for lens, heads_k, family in (([1, 2 * bound - 1], 4, "fa3"), ([1, 2 * bound - 2], 4, "fa2"),
                                  ([1, 2 * bound - 1], 2, "fa3"), ([1, 2 * bound - 2], 2, "fa2")):
        case = Case("varlen", lens, [300, 2 * max(lens)], 4, heads_k, 128, torch.float16, causal=True)
        assert auto_family(case) == family, case
        check_case(case, algo="auto")


def test_plans_tell_expanded_views_apart():
    """One signature's shapes and dtypes, k and v contiguous or an ``expand`` of one head: the plan
    cache keeps them apart, so "auto" may run the first on fa3 (on Hopper) but never sends the
    expanded view, which a TMA map cannot describe, there. MQA math: every head of k is the same."""
    case = Case("dense", [64] * 2, [64] * 2, 4, 1, 128, torch.float16)
    for contiguous in (True, False, True, False):
        built = build(case, device="cuda")
        for name in ("k", "v"):
            x = built.args[name].expand(-1, -1, 4, -1)
            built.args[name] = x.contiguous() if contiguous else x
        check_case(case, algo="auto", built=built)


def test_append_kv_cuda_matches_cpu():
    b, hk, d, new = 3, 2, 128, 5
    for paged in (False, True):
        lens = torch.tensor([0, 17, 40], dtype=torch.int32)
        k_new = torch.randn(b, new, hk, d, dtype=torch.float16)
        v_new = torch.randn(b, new, hk, d, dtype=torch.float16)
        if paged:
            k_cache = torch.randn(30, 16, hk, d, dtype=torch.float16)
            table = torch.randperm(30, dtype=torch.int32)[:12].reshape(3, 4)
        else:
            k_cache = torch.randn(b, 64, hk, d, dtype=torch.float16).transpose(1, 2).contiguous().transpose(1, 2)
            table = None
        v_cache = torch.randn_like(k_cache)
        gpu = [t.cuda() if t is not None else None for t in (k_cache, v_cache, k_new, v_new, lens, table)]
        torch.ops.flashinfer.append_kv(k_cache, v_cache, k_new, v_new, lens, table)
        torch.ops.flashinfer.append_kv(*gpu)
        assert torch.equal(gpu[0].cpu(), k_cache) and torch.equal(gpu[1].cpu(), v_cache)


# ~0.25 s at the H100's 1.98 GHz: far longer than the host takes to launch the op behind it
SLEEP_CYCLES = 500_000_000


@pytest.mark.parametrize("op", ["fa2", "split_kv", "append_kv"])
@pytest.mark.parametrize("where", ["side_stream", "other_device"])
def test_ops_run_on_the_inputs_device_and_its_current_stream(where, op):
    """Ops run on their inputs' device, on that device's current stream, whatever device is current.

    A side stream first sleeps, then copies the real inputs over zeros, then gets the op: a kernel sent
    to any other stream or device runs at once, on the zeros, and gives wrong numbers. "other_device":
    the inputs and the stream are on cuda:1 while cuda:0 is the current device.
    """
    if where == "other_device" and torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs: inputs on cuda:1 while cuda:0 is current")
    device = torch.device("cuda", 1 if where == "other_device" else 0)
    if op == "append_kv":
        gen = torch.Generator().manual_seed(0)
        k_new, v_new = (torch.randn(3, 5, 2, 64, generator=gen, dtype=torch.float16) for _ in range(2))
        k_cache = torch.zeros(3, 40, 2, 64, dtype=torch.float16)
        v_cache = torch.zeros_like(k_cache)
        lens = torch.tensor([0, 17, 35], dtype=torch.int32)
        inputs = {"k": k_new.to(device), "v": v_new.to(device)}
        args = dict(k_cache=k_cache.to(device), v_cache=v_cache.to(device), cache_seqlens=lens.to(device))
        torch.ops.flashinfer.append_kv(**{**args, **inputs})  # builds and loads the kernel before the timing matters
        args["k_cache"].zero_()
        args["v_cache"].zero_()
    else:
        case = Case("cache", [1] * 3, [700, 90, 1], 8, 2, 64, torch.float16, causal=True) if op == "split_kv" \
            else Case("dense", [33] * 2, [90] * 2, 4, 2, 64, torch.float16, causal=True)
        built = build(case, device=device)
        inputs = {name: built.args[name] for name in ("q", "k", "v")}
        args = {name: value for name, value in built.args.items() if name not in inputs}
        args["algo"] = op
        torch.ops.flashinfer.fwd(**built.args, algo=op)  # builds and loads the kernel before the timing matters
    staged = {name: torch.zeros_like(t) for name, t in inputs.items()}
    torch.cuda.synchronize(device)
    side = torch.cuda.Stream(device)
    with torch.cuda.stream(side):  # makes `device` current, with `side` as its current stream
        torch.cuda._sleep(SLEEP_CYCLES)
        for name, t in inputs.items():
            staged[name].copy_(t)
        with torch.cuda.device(0):  # "other_device": cuda:0 current; cuda:1's current stream stays `side`
            if op == "append_kv":
                torch.ops.flashinfer.append_kv(**args, **staged)
            else:
                out, lse = torch.ops.flashinfer.fwd(**args, **staged)
    side.synchronize()
    if op == "append_kv":
        torch.ops.flashinfer.append_kv(k_cache, v_cache, k_new, v_new, lens)  # the CPU reference
        assert torch.equal(args["k_cache"].cpu(), k_cache) and torch.equal(args["v_cache"].cpu(), v_cache)
    else:
        assert out.device == device and lse.device == device
        for (o, _), (eo, _) in zip(built.split(out, lse), built.expected()):
            assert (o.double().cpu() - eo).abs().max().item() < 4e-3


@pytest.mark.parametrize("name", ["k", "cache_seqlens"])
def test_inputs_on_two_devices_are_refused(name):
    built = build(Case("cache", [1] * 2, [50, 9], 4, 2, 64, torch.float16, causal=True), device="cuda")
    built.args[name] = built.args[name].cpu()
    with pytest.raises(ValueError, match=f"{name} is on cpu but q is on cuda:0"):
        torch.ops.flashinfer.fwd(**built.args)


def test_unknown_algo_on_cuda():
    built = build(Case("dense", [3], [3], 2, 2, 64, torch.float16), device="cuda")
    with pytest.raises(ValueError, match="unknown algo"):
        torch.ops.flashinfer.fwd(**built.args, algo="nope")
