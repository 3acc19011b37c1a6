"""The C++ CUDA implementation of the ops (csrc/binding/binding.cpp): the same errors as the fake
implementation (its validation is the shared Python one, asked once per argument signature), and
its plan cache never serves one signature's plan to another."""

import pytest
import torch

import torch_flashinfer
from oracle import Case, build
from test_cuda_fwd import check_case, poison_allocator, skip_unless_runs
from test_ops import APPEND_ERRORS, META_ERRORS, _call_fake, _misaligned_cases

pytestmark = pytest.mark.gpu

FWD = torch.ops.flashinfer.fwd
APPEND = torch.ops.flashinfer.append_kv


def _to_cuda(args):
    return {n: x.cuda() if isinstance(x, torch.Tensor) else x for n, x in args.items()}


@pytest.mark.parametrize("name,args,msg", META_ERRORS, ids=[e[0] for e in META_ERRORS])
def test_fwd_metadata_errors_cuda_and_fake(name, args, msg):
    args = _to_cuda(args)
    for _ in range(2):  # the second call finds no cached plan either: invalid signatures are never cached
        with pytest.raises(ValueError, match=msg) as real:
            FWD(**args)
    with pytest.raises(ValueError, match=msg) as fake:
        _call_fake(FWD, args)
    assert str(real.value) == str(fake.value)


def _cuda_half(x):
    """The CPU table's tensors on the GPU, float32 -> float16 and float16 -> bfloat16 (CUDA takes
    only these), so a dtype mismatch stays a mismatch."""
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        x = x.to(torch.float16 if x.dtype == torch.float32 else torch.bfloat16)
    return x.cuda() if isinstance(x, torch.Tensor) else x


@pytest.mark.parametrize("name,args,msg", APPEND_ERRORS, ids=[e[0] for e in APPEND_ERRORS])
def test_append_kv_errors_cuda_and_fake(name, args, msg):
    args = {n: _cuda_half(x) for n, x in args.items()}
    with pytest.raises(ValueError) as real:
        APPEND(**args)
    with pytest.raises(ValueError) as fake:
        _call_fake(APPEND, args)
    assert str(real.value) == str(fake.value)
    assert str(real.value).startswith("flashinfer.append_kv: ")


@pytest.mark.parametrize("index", range(3))
def test_misaligned_rows_are_refused(index):
    """A row off a 16-byte boundary would fault the kernels' 16-byte copies (and with them the
    CUDA context): the same ValueError as the fake impl, and the GPU stays usable."""
    op, args, msg = _misaligned_cases("cuda")[index]
    # The same shapes, aligned, first: their cached plan must not let the misaligned call through.
    op(**{n: x.clone(memory_format=torch.contiguous_format) if x.is_floating_point() else x.zero_()
          for n, x in args.items()})
    with pytest.raises(ValueError, match=msg) as real:
        op(**args)
    with pytest.raises(ValueError, match=msg) as fake:
        _call_fake(op, args)
    assert str(real.value) == str(fake.value)
    torch.cuda.synchronize()


def _decode_args(batch=3, keys=777):
    q = torch.randn(batch, 1, 8, 128, device="cuda", dtype=torch.float16)
    k, v = (torch.randn(batch, keys, 2, 128, device="cuda", dtype=torch.float16) for _ in range(2))
    seqlens = torch.randint(1, keys + 1, (batch,), device="cuda", dtype=torch.int32)
    return (q, k, v, None, None, 0, 0, seqlens, None, None, None, None, True, -1, -1, 0.0, 0, "auto", True)


def test_eager_fast_path_runs_planned_signatures_only(monkeypatch):
    """ops.fwd skips the dispatcher only for a signature the op has validated and planned: the
    binding's fwd_cached answers None before the op's first call, then the op's outputs bitwise;
    ops.fwd then never reaches the op."""
    from torch_flashinfer import _kernels, _validation, ops

    if _validation.CHECK_CUDA_DATA:
        pytest.skip("TORCH_FLASHINFER_CHECK_DATA=1 plans every call: no fast path")
    FWD(*_decode_args(1, 64))  # installs the CUDA kernels
    args = _decode_args(3, 771)
    assert _kernels.binding().fwd_cached(*args) is None
    out, lse = FWD(*args)
    fast_out, fast_lse = _kernels.binding().fwd_cached(*args)
    assert torch.equal(out, fast_out) and torch.equal(lse, fast_lse)

    def no_op(*a):
        raise AssertionError("the op was called")

    monkeypatch.setattr(ops, "_FWD", no_op)
    wrapper_out, wrapper_lse = ops.fwd(*args)
    assert torch.equal(out, wrapper_out) and torch.equal(lse, wrapper_lse)


def test_eager_fast_path_leaves_modes_and_errors_to_the_op():
    """A dispatch mode sees the op even for a planned signature; an invalid call raises the op's
    error through ops.fwd."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from torch_flashinfer import ops

    class Log(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func)
            return func(*args, **(kwargs or {}))

    args = _decode_args()
    FWD(*args)
    with Log() as log:
        ops.fwd(*args)
    assert torch.ops.flashinfer.fwd.default in log.ops
    q, k, v = args[:3]
    with pytest.raises(ValueError, match=r"heads_q \(8\) must be a multiple of heads_k \(3\)"):
        ops.fwd(q, k[:, :, :1].expand(-1, -1, 3, -1), v[:, :, :1].expand(-1, -1, 3, -1), *args[3:])


def test_unknown_family_is_not_implemented():
    q = torch.randn(1, 4, 2, 64, device="cuda", dtype=torch.float16)
    with pytest.raises(NotImplementedError, match="algo 'split_kv' takes dense q"):
        FWD(q[0], q[0], q[0], cu_seqlens_q=torch.tensor([0, 4], dtype=torch.int32, device="cuda"),
            cu_seqlens_k=torch.tensor([0, 4], dtype=torch.int32, device="cuda"), max_seqlen_q=4, max_seqlen_k=4,
            algo="split_kv")


def test_signatures_do_not_share_plans():
    """Same shapes, different options / dtypes / head dims / lengths, interleaved: each call matches the
    reference, so no cached plan (kernel, seqlens, scale) leaks from one signature to another."""
    cases = [
        Case("dense", [37], [37], 4, 2, 64, torch.float16, causal=True),
        Case("dense", [37], [37], 4, 2, 64, torch.float16, causal=False),
        Case("dense", [37], [37], 4, 2, 64, torch.bfloat16, causal=True),
        Case("dense", [37], [37], 4, 2, 128, torch.float16, causal=True),
        Case("dense", [37], [51], 4, 2, 64, torch.float16, causal=True),
        Case("dense", [37], [37], 4, 2, 64, torch.float16, causal=True, scale=0.05),
        Case("dense", [1], [300], 4, 2, 64, torch.float16, causal=True),
    ]
    for _ in range(2):
        for seed, case in enumerate(cases):
            check_case(case, algo="auto", seed=seed)


def test_flash_attn_wrappers_reach_the_binding():
    q = torch.randn(2, 3, 4, 64, device="cuda", dtype=torch.float16)
    out = torch_flashinfer.flash_attn_func(q, q, q, causal=True)
    ref, _ = torch_flashinfer.reference_attention(q.cpu().float(), q.cpu().float(), q.cpu().float(), causal=True)
    assert (out.cpu().float() - ref).abs().max().item() < 2e-3


WITHOUT_LSE = [  # every family's lse writer: prefill epilogues, split_kv's one-split and merge paths
    ("fa2", 0, Case("varlen", [1, 9, 130], [12, 9, 130], 4, 2, 128, torch.float16, causal=True)),
    ("fa1", 0, Case("dense", [33] * 2, [70] * 2, 4, 4, 64, torch.bfloat16, causal=True)),
    ("fa3", 0, Case("varlen", [1, 9, 130], [12, 9, 130], 4, 2, 128, torch.float16, causal=True)),
    ("fa3", 0, Case("varlen", [128] * 40, [128] * 40, 8, 8, 128, torch.float16, causal=True)),  # persistent
    ("split_kv", 0, Case("cache", [1] * 3, [5, 700, 3000], 8, 2, 128, torch.float16, leftpad=True)),
    ("split_kv", 1, Case("cache", [1] * 3, [5, 700, 3000], 8, 2, 128, torch.float16, leftpad=True)),
    ("split_kv", 0, Case("paged", [2] * 2, [40, 4000], 8, 1, 64, torch.bfloat16, causal=True, page_size=16)),
]


@pytest.mark.parametrize("algo,num_splits,case", WITHOUT_LSE,
                         ids=[f"{a}-splits{n}-{c}" for a, n, c in WITHOUT_LSE])
def test_without_lse_same_out(algo, num_splits, case):
    """return_lse=False: an empty fp32 lse (nothing written through the null pointer the kernels
    get), and bitwise the out of the call with lse, through the op and twice through ops.fwd (the
    plan ignores return_lse, so both take the eager fast path)."""
    skip_unless_runs(algo)
    built = build(case, device="cuda")
    out, _ = FWD(**built.args, algo=algo, num_splits=num_splits)
    for call in (FWD, torch_flashinfer.ops.fwd, torch_flashinfer.ops.fwd):
        poison_allocator(out.numel() * 8)
        out_only, lse = call(**built.args, algo=algo, num_splits=num_splits, return_lse=False)
        torch.cuda.synchronize()
        assert lse.shape == (0,) and lse.dtype == torch.float32 and lse.is_cuda
        assert torch.equal(out_only, out)
