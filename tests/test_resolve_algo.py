"""The one place where "auto" picks a kernel family (``_kernels.resolve_algo``): CPU-only checks."""

import re
from pathlib import Path

import torch

from torch_flashinfer import _kernels
from torch_flashinfer._validation import FwdLayout

DENSE = FwdLayout(4, 32, 8, 128, False, "paged", 4 * 128)
VARLEN = FwdLayout(4, 32, 8, 128, True, "paged", 4 * 16)  # 16 queries per sequence on average


def test_decode_goes_to_split_kv_everywhere():
    for sm in ((8, 0), (8, 9), (9, 0), (10, 0)):
        assert _kernels.resolve_algo("auto", DENSE, 1, sm) == "split_kv"
        assert _kernels.resolve_algo("auto", DENSE, _kernels.DECODE_MAX_SEQLEN_Q, sm) == "split_kv"


def test_prefill_goes_to_fa3_on_hopper_only():
    assert _kernels.resolve_algo("auto", DENSE, 128, (9, 0)) == "fa3"
    assert _kernels.resolve_algo("auto", DENSE, _kernels.FA2_PACKED_MAX_SEQLEN_Q + 1, (9, 0)) == "fa3"
    assert _kernels.resolve_algo("auto", DENSE, _kernels.FA2_PACKED_MAX_SEQLEN_Q, (9, 0)) == "fa2"
    for sm in ((8, 0), (8, 6), (8, 9), (10, 0), (12, 0)):
        assert _kernels.resolve_algo("auto", DENSE, 128, sm) == "fa2"


def test_short_varlen_and_untma_strides_go_to_fa2():
    assert _kernels.resolve_algo("auto", VARLEN, 1, (9, 0)) == "fa2"
    assert _kernels.resolve_algo("auto", VARLEN, 128, (9, 0)) == "fa2"
    assert _kernels.resolve_algo("auto", DENSE, 128, (9, 0), fa3_fits=lambda: False) == "fa2"


def test_long_varlen_q_goes_to_fa3_on_hopper():
    def varlen(total_q, heads_k):
        return FwdLayout(100, 32, heads_k, 128, True, "varlen", total_q)

    for heads_k in (32, 8, 1):
        bound = _kernels.FA3_VARLEN_MIN_MEAN_Q * 100
        assert _kernels.resolve_algo("auto", varlen(bound, heads_k), 128, (9, 0)) == "fa3"
        assert _kernels.resolve_algo("auto", varlen(bound - 1, heads_k), 128, (9, 0)) == "fa2"
        assert _kernels.resolve_algo("auto", varlen(bound, heads_k), 128, (9, 0), fa3_fits=lambda: False) == "fa2"
        assert _kernels.resolve_algo("auto", varlen(bound, heads_k), 128, (8, 0)) == "fa2"


def test_fa2_without_decode_rows_leaves_short_and_varlen_q_to_fa3():
    d224, varlen224 = (FwdLayout(4, 16, 4, 224, varlen, "dense", 4) for varlen in (False, True))
    assert _kernels.resolve_algo("auto", d224, _kernels.FA2_PACKED_MAX_SEQLEN_Q, (9, 0)) == "fa3"
    assert _kernels.resolve_algo("auto", d224, _kernels.DECODE_MAX_SEQLEN_Q + 1, (9, 0)) == "fa3"
    assert _kernels.resolve_algo("auto", d224, _kernels.DECODE_MAX_SEQLEN_Q, (9, 0)) == "split_kv"
    assert _kernels.resolve_algo("auto", varlen224, 1, (9, 0)) == "fa3"
    assert _kernels.resolve_algo("auto", varlen224, 1, (9, 0), fa3_fits=lambda: False) == "fa2"
    assert _kernels.resolve_algo("auto", varlen224, 1, (8, 0)) == "fa2"


def test_unpacked_head_dims_are_fa2s_eight_warp_shapes():
    header = (Path(__file__).parents[1] / "csrc" / "kernels" / "fa2" / "tile_config.h").read_text()
    shapes = re.findall(r"case (\d+): return Tile\{\d+, \d+, (\d+)", header)
    default = re.search(r"default: return Tile\{\d+, \d+, (\d+).*// d=(\d+)", header)
    warps = {int(d): int(w) for d, w in shapes} | {int(default.group(2)): int(default.group(1))}
    assert sorted(warps) == [32, 64, 96, 128, 160, 192, 224, 256]
    assert tuple(d for d, w in warps.items() if w != 4) == _kernels.FA2_UNPACKED_HEAD_DIMS


def test_fits_is_asked_only_for_fa3():
    def never():
        raise AssertionError("fa3_fits asked")

    assert _kernels.resolve_algo("auto", DENSE, 1, (9, 0), never) == "split_kv"
    assert _kernels.resolve_algo("auto", VARLEN, 128, (9, 0), never) == "fa2"
    assert _kernels.resolve_algo("auto", DENSE, 128, (8, 0), never) == "fa2"
    assert _kernels.resolve_algo("fa3", DENSE, 128, (9, 0), never) == "fa3"


def test_packed_rows_bound_is_fa2s():
    header = Path(__file__).parents[1] / "csrc" / "kernels" / "fa2" / "tile_config.h"
    bound = re.search(r"constexpr int kDecodeMaxSeqlenQ = (\d+);", header.read_text())
    assert int(bound.group(1)) == _kernels.FA2_PACKED_MAX_SEQLEN_Q


def test_explicit_algo_is_kept():
    for algo in _kernels.FAMILIES:
        layout = DENSE if algo == "split_kv" else VARLEN
        assert _kernels.resolve_algo(algo, layout, 128, (8, 0)) == algo


def test_tma_strides():
    k = torch.randn(2, 64, 1, 128, dtype=torch.float16)
    assert _kernels.tma_strides(k, k.transpose(0, 1))
    assert _kernels.tma_strides(k.expand(-1, -1, 1, -1))  # a zero stride on a dimension of 1 is never used
    assert not _kernels.tma_strides(k.expand(-1, -1, 4, -1))  # transformers' repeat_kv as an expand
    assert not _kernels.tma_strides(k, k[:1].expand(2, -1, -1, -1))
