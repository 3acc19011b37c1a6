"""The one place where "auto" picks a kernel family (``_kernels.resolve_algo``): CPU-only checks."""

import torch

from torch_flashinfer import _kernels
from torch_flashinfer._validation import FwdLayout

DENSE = FwdLayout(4, 32, 8, 128, False, "paged")
VARLEN = FwdLayout(4, 32, 8, 128, True, "paged")


def test_decode_goes_to_split_kv_everywhere():
    for sm in ((8, 0), (8, 9), (9, 0), (10, 0)):
        assert _kernels.resolve_algo("auto", DENSE, 1, sm) == "split_kv"
        assert _kernels.resolve_algo("auto", DENSE, _kernels.DECODE_MAX_SEQLEN_Q, sm) == "split_kv"


def test_prefill_goes_to_fa3_on_hopper_only():
    assert _kernels.resolve_algo("auto", DENSE, 128, (9, 0)) == "fa3"
    for sm in ((8, 0), (8, 6), (8, 9), (10, 0), (12, 0)):
        assert _kernels.resolve_algo("auto", DENSE, 128, sm) == "fa2"


def test_varlen_and_untma_strides_go_to_fa2():
    assert _kernels.resolve_algo("auto", VARLEN, 1, (9, 0)) == "fa2"
    assert _kernels.resolve_algo("auto", VARLEN, 128, (9, 0)) == "fa2"
    assert _kernels.resolve_algo("auto", DENSE, 128, (9, 0), tma_ok=False) == "fa2"


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
