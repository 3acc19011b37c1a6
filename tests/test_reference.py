"""The CPU reference (= the CPU implementation of the ops) against the naive fp64 oracle."""

import itertools
import math
import subprocess
import sys

import pytest
import torch

import torch_flashinfer  # noqa: F401
from conftest import FULL_GRID
from oracle import Case, build

HEAD_DIMS = (32, 64, 96, 128, 160, 192, 224, 256)


def run_and_check(case: Case, atol=None):
    built = build(case)
    out, lse = torch.ops.flashinfer.fwd(**built.args)
    assert out.dtype == case.dtype and out.shape == built.args["q"].shape
    assert lse.dtype == torch.float32
    if atol is None:
        atol = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[case.dtype]
    for (o, l), (eo, el) in zip(built.split(out, lse), built.expected()):
        assert not torch.isnan(o).any()
        torch.testing.assert_close(o.double(), eo, atol=atol, rtol=0)
        assert torch.equal(torch.isinf(l), torch.isinf(el)), "rows without keys must have lse = -inf"
        finite = ~torch.isinf(el)
        torch.testing.assert_close(l[finite].double(), el[finite], atol=1e-4, rtol=1e-5)
        assert (o[~finite.T] == 0).all(), "rows without keys must be 0"


ODD = (1, 7, 97, 130)


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_every_head_dim(head_dim):
    run_and_check(Case("dense", [33] * 2, [47] * 2, 4, 2, head_dim, torch.float32, causal=True))


@pytest.mark.parametrize("sq,sk", list(itertools.product(ODD, ODD)) if FULL_GRID else
                         [(1, 1), (1, 97), (7, 130), (97, 7), (130, 97), (130, 130)])
@pytest.mark.parametrize("causal", [False, True])
def test_dense_odd_sizes(sq, sk, causal):
    run_and_check(Case("dense", [sq] * 2, [sk] * 2, 4, 4, 64, torch.float32, causal=causal))


@pytest.mark.parametrize("heads", [(8, 2), (8, 1), (6, 6)], ids=["gqa4", "mqa", "mha"])
def test_gqa_mqa(heads):
    run_and_check(Case("dense", [19] * 3, [41] * 3, heads[0], heads[1], 64, torch.float32, causal=True))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs(dtype):
    run_and_check(Case("dense", [29] * 2, [29] * 2, 4, 2, 128, dtype, causal=True))


@pytest.mark.parametrize("window", [(0, 0), (5, -1), (-1, 3), (16, 4)])
@pytest.mark.parametrize("causal", [False, True])
def test_sliding_window(window, causal):
    run_and_check(Case("dense", [37] * 2, [61] * 2, 4, 2, 64, torch.float32, causal=causal, window=window))


@pytest.mark.parametrize("softcap", [1.0, 30.0])
def test_softcap(softcap):
    run_and_check(Case("dense", [23] * 2, [45] * 2, 4, 4, 64, torch.float32, causal=True, softcap=softcap,
                       scale=0.5))


@pytest.mark.parametrize("alibi", ["head", "batch"])
@pytest.mark.parametrize("causal", [False, True])
def test_alibi(alibi, causal):
    run_and_check(Case("dense", [17] * 3, [40] * 3, 8, 2, 64, torch.float32, causal=causal, alibi=alibi))


def test_all_features_together():
    run_and_check(Case("varlen_paged", [1, 9, 1, 33], [70, 12, 5, 90], 8, 2, 96, torch.float32, causal=True,
                       window=(20, -1), softcap=15.0, alibi="batch", page_size=16))


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_hybrid(causal):
    # decode rows (seq_q = 1) next to prefill rows and an empty sequence in one call
    run_and_check(Case("varlen", [1, 128, 1, 7, 0, 97], [130, 128, 1, 20, 5, 97], 8, 2, 64, torch.float32,
                       causal=causal))


@pytest.mark.parametrize("page_size", [1, 16, 256])
def test_paged(page_size):
    run_and_check(Case("paged", [3] * 3, [1, 300, 257], 4, 1, 64, torch.float32, causal=True, page_size=page_size))


def test_varlen_q_paged_kv():
    run_and_check(Case("varlen_paged", [1, 5, 1], [31, 5, 64], 4, 2, 64, torch.float32, causal=True, page_size=16))


@pytest.mark.parametrize("leftpad", [False, True])
def test_dense_cache(leftpad):
    run_and_check(Case("cache", [1] * 4, [9, 1, 30, 17], 8, 2, 64, torch.float32, causal=True, leftpad=leftpad))


def test_rows_without_keys_are_zero():
    # causal with seq_q > seq_k: the first seq_q - seq_k queries see no key
    built = build(Case("dense", [9], [4], 2, 2, 32, torch.float32, causal=True))
    out, lse = torch.ops.flashinfer.fwd(**built.args)
    assert (out[0, :5] == 0).all() and torch.isinf(lse[0, :, :5]).all() and (lse[0, :, :5] < 0).all()
    assert torch.isfinite(lse[0, :, 5:]).all()


def test_empty_cache_row():
    built = build(Case("cache", [1, 1], [0, 5], 2, 2, 32, torch.float32))
    out, lse = torch.ops.flashinfer.fwd(**built.args)
    assert (out[0] == 0).all() and torch.isinf(lse[0]).all()


def test_noncontiguous_transformers_layout():
    # a transformers cache is (b, h, s, d); the op takes its transpose without copies
    b, h, s, d = 2, 4, 19, 64
    qt = torch.randn(b, h, 5, d)
    kt = torch.randn(b, h, s, d)
    vt = torch.randn(b, h, s, d)
    out, _ = torch.ops.flashinfer.fwd(qt.transpose(1, 2), kt.transpose(1, 2), vt.transpose(1, 2), causal=True)
    ref, _ = torch.ops.flashinfer.fwd(qt.transpose(1, 2).contiguous(), kt.transpose(1, 2).contiguous(),
                                      vt.transpose(1, 2).contiguous(), causal=True)
    assert out.is_contiguous()
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("paged", [False, True])
def test_append_kv(paged):
    from oracle import pack_paged

    b, hk, d, new = 3, 2, 32, 4
    old = [torch.randn(n, hk, d) for n in (5, 0, 17)]
    fresh_k = torch.randn(b, new, hk, d)
    fresh_v = torch.randn(b, new, hk, d)
    lens = torch.tensor([o.shape[0] for o in old], dtype=torch.int32)
    if paged:
        # give every sequence room for the new tokens
        grown = [torch.cat([o, torch.zeros(new, hk, d)]) for o in old]
        k_cache, v_cache, table, _ = pack_paged(grown, grown, page_size=4, poison=0.0)
    else:
        k_cache = torch.zeros(b, 32, hk, d)
        v_cache = torch.zeros(b, 32, hk, d)
        for i, o in enumerate(old):
            k_cache[i, :o.shape[0]] = o
            v_cache[i, :o.shape[0]] = o
        table = None
    torch.ops.flashinfer.append_kv(k_cache, v_cache, fresh_k, fresh_v, lens, table)
    assert lens.tolist() == [5, 0, 17], "append_kv leaves cache_seqlens alone"
    for i, o in enumerate(old):
        n = o.shape[0]
        if paged:
            rows = k_cache[table[i].long()].reshape(-1, hk, d)
            vrows = v_cache[table[i].long()].reshape(-1, hk, d)
        else:
            rows, vrows = k_cache[i], v_cache[i]
        torch.testing.assert_close(rows[:n], o)
        torch.testing.assert_close(rows[n:n + new], fresh_k[i])
        torch.testing.assert_close(vrows[n:n + new], fresh_v[i])


def test_softmax_scale_default_and_explicit():
    built = build(Case("dense", [5], [9], 2, 2, 64, torch.float32))
    a, _ = torch.ops.flashinfer.fwd(**built.args)
    b, _ = torch.ops.flashinfer.fwd(**{**built.args, "softmax_scale": 64 ** -0.5})
    torch.testing.assert_close(a, b)


def test_memory_is_bounded_for_long_causal():
    """A 16k x 16k causal call must not hold 16k^2 fp32 scores (1 GiB) per head at once."""
    code = (
        "import resource, torch, torch_flashinfer\n"
        "torch.manual_seed(0)\n"
        "q = torch.randn(1, 16384, 1, 32, dtype=torch.float16)\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "out, lse = torch.ops.flashinfer.fwd(q, q, q, causal=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "assert torch.isfinite(out).all()\n"
        "print((peak - base) / 1024)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    grew_mib = float(res.stdout.strip().splitlines()[-1])
    assert grew_mib < 400, f"reference grew by {grew_mib:.0f} MiB for a 16k causal call"
