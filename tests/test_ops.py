"""Op registration: opcheck on every op, torch.compile(fullgraph, dynamic), and every error path."""

import inspect
import re

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import torch_flashinfer  # noqa: F401
from oracle import Case, build, pack_paged

FWD = torch.ops.flashinfer.fwd.default
APPEND = torch.ops.flashinfer.append_kv.default

FWD_SAMPLES = [
    Case("dense", [7] * 2, [9] * 2, 4, 2, 64, torch.float32, causal=True),
    Case("dense", [1] * 3, [13] * 3, 4, 1, 32, torch.float16, alibi="head", softcap=5.0),
    Case("varlen", [1, 9, 4], [12, 9, 4], 4, 4, 64, torch.bfloat16, causal=True, window=(3, 0)),
    Case("paged", [2] * 2, [5, 19], 4, 2, 64, torch.float16, causal=True, page_size=4),
    Case("cache", [1] * 2, [5, 11], 2, 2, 128, torch.float32, leftpad=True, alibi="batch"),
]


@pytest.mark.parametrize("case", FWD_SAMPLES, ids=str)
def test_opcheck_fwd(case):
    built = build(case, poison=0.0)
    args = dict(built.args)
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    torch.library.opcheck(FWD, (q, k, v), args)


@pytest.mark.parametrize("case", FWD_SAMPLES, ids=str)
def test_fwd_without_lse(case):
    """return_lse=False: the out of the call with lse and an empty fp32 lse, from the real and the
    fake implementation (opcheck compares them)."""
    built = build(case, poison=0.0)
    args = dict(built.args)
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    out, _ = FWD(q, k, v, **args)
    out_only, lse = FWD(q, k, v, **args, return_lse=False)
    assert torch.equal(out_only, out) and lse.shape == (0,) and lse.dtype == torch.float32
    torch.library.opcheck(FWD, (q, k, v), {**args, "return_lse": False})


@pytest.mark.parametrize("paged", [False, True])
def test_opcheck_append_kv(paged):
    b, hk, d = 2, 2, 32
    k_new, v_new = torch.randn(b, 3, hk, d), torch.randn(b, 3, hk, d)
    lens = torch.tensor([4, 0], dtype=torch.int32)
    if paged:
        seqs = [torch.randn(8, hk, d), torch.randn(8, hk, d)]
        k_cache, v_cache, table, _ = pack_paged(seqs, seqs, page_size=4, poison=0.0)
    else:
        k_cache, v_cache, table = torch.randn(b, 10, hk, d), torch.randn(b, 10, hk, d), None
    torch.library.opcheck(APPEND, (k_cache, v_cache, k_new, v_new, lens, table))


class TinyAttentionBlock(torch.nn.Module):
    """Projections + in-place cache append + attention over the cache: a decoder layer's core."""

    def __init__(self, dim=64, heads=4, heads_k=2, head_dim=32):
        super().__init__()
        self.heads, self.heads_k, self.head_dim = heads, heads_k, head_dim
        self.q = torch.nn.Linear(dim, heads * head_dim)
        self.kv = torch.nn.Linear(dim, 2 * heads_k * head_dim)
        self.o = torch.nn.Linear(heads * head_dim, dim)

    def forward(self, x, k_cache, v_cache, cache_seqlens):  # x: [B, S, dim]
        b, s, _ = x.shape
        q = self.q(x).view(b, s, self.heads, self.head_dim)
        k, v = self.kv(x).view(b, s, 2, self.heads_k, self.head_dim).unbind(2)
        torch.ops.flashinfer.append_kv(k_cache, v_cache, k, v, cache_seqlens)
        out, _ = torch.ops.flashinfer.fwd(q, k_cache, v_cache, cache_seqlens=cache_seqlens + s, causal=True)
        return self.o(out.reshape(b, s, -1))


def test_compile_fullgraph_dynamic_no_recompile():
    torch._dynamo.reset()
    torch.manual_seed(0)
    block = TinyAttentionBlock().eval()
    frames = []

    def counting_backend(gm, example_inputs):
        frames.append(gm)
        from torch._inductor.compile_fx import compile_fx

        return compile_fx(gm, example_inputs)

    compiled = torch.compile(block, backend=counting_backend, fullgraph=True, dynamic=True)
    with torch.no_grad():
        for s in (3, 5, 11):
            x = torch.randn(2, s, 64)
            lens = torch.tensor([4, 9], dtype=torch.int32)
            caches = [torch.randn(2, 32, 2, 32) for _ in range(2)]
            eager_caches = [c.clone() for c in caches]
            got = compiled(x, *caches, lens)
            want = block(x, *eager_caches, lens)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(caches[0], eager_caches[0])  # the in-place append happened
            torch.testing.assert_close(caches[1], eager_caches[1])
    assert len(frames) == 1, f"recompiled: {len(frames)} graphs for 3 sequence lengths"


# ---- error paths: each bad call raises the same error from the real (CPU) and the fake impl ----

def _fwd_args(**over):
    q = torch.randn(2, 5, 4, 64, dtype=torch.float16)
    k = torch.randn(2, 9, 2, 64, dtype=torch.float16)
    args = dict(q=q, k=k, v=k.clone())
    args.update(over)
    return args


def _varlen_args(**over):
    q = torch.randn(10, 4, 64, dtype=torch.float16)
    k = torch.randn(12, 4, 64, dtype=torch.float16)
    args = dict(q=q, k=k, v=k.clone(), cu_seqlens_q=torch.tensor([0, 4, 10], dtype=torch.int32),
                cu_seqlens_k=torch.tensor([0, 6, 12], dtype=torch.int32), max_seqlen_q=6, max_seqlen_k=6)
    args.update(over)
    return args


def _paged_args(**over):
    k = torch.randn(4, 8, 2, 64, dtype=torch.float16)
    args = dict(q=torch.randn(2, 1, 4, 64, dtype=torch.float16), k=k, v=k.clone(),
                block_table=torch.tensor([[0, 1], [2, 3]], dtype=torch.int32),
                cache_seqlens=torch.tensor([9, 16], dtype=torch.int32))
    args.update(over)
    return args


H = torch.float16
META_ERRORS = [
    ("algo", _fwd_args(algo="fa9"), "unknown algo 'fa9'"),
    ("dtype", _fwd_args(q=torch.randn(2, 5, 4, 64, dtype=torch.float64)), "dtype torch.float64 is not supported"),
    ("kv dtype", _fwd_args(k=torch.randn(2, 9, 2, 64)), "k has dtype torch.float32 but q has torch.float16"),
    ("head_dim", _fwd_args(q=torch.randn(2, 5, 4, 80, dtype=H), k=torch.randn(2, 9, 2, 80, dtype=H),
                           v=torch.randn(2, 9, 2, 80, dtype=H)), "head_dim 80 is not supported"),
    ("kv head_dim", _fwd_args(k=torch.randn(2, 9, 2, 32, dtype=H), v=torch.randn(2, 9, 2, 32, dtype=H)),
     "k/v head_dim 32 differs from q head_dim 64"),
    ("head ratio", _fwd_args(k=torch.randn(2, 9, 3, 64, dtype=H), v=torch.randn(2, 9, 3, 64, dtype=H)),
     r"heads_q \(4\) must be a multiple of heads_k \(3\)"),
    ("q rank", _fwd_args(q=torch.randn(5, 4, 64, dtype=H)), "q must have 4 dims"),
    ("k/v shapes", _fwd_args(v=torch.randn(2, 8, 2, 64, dtype=H)), "k and v must have the same shape"),
    ("batch", _fwd_args(k=torch.randn(3, 9, 2, 64, dtype=H), v=torch.randn(3, 9, 2, 64, dtype=H)),
     "k has batch 3 but q has batch 2"),
    ("last dim stride", _fwd_args(q=torch.randn(2, 5, 64, 4, dtype=H).transpose(2, 3)),
     "q must be contiguous in its last dim"),
    ("cu_seqlens dtype", _varlen_args(cu_seqlens_q=torch.tensor([0, 4, 10])), "cu_seqlens_q must be int32"),
    ("cu_seqlens length", _varlen_args(cu_seqlens_k=torch.tensor([0, 12], dtype=torch.int32)),
     "cu_seqlens_k must have 3 entries"),
    ("cu_seqlens rank", _varlen_args(cu_seqlens_q=torch.tensor([[0, 4, 10]], dtype=torch.int32)),
     "cu_seqlens_q must be 1-D"),
    ("block_table dtype", _paged_args(block_table=torch.tensor([[0, 1], [2, 3]])), "block_table must be int32"),
    ("block_table rows", _paged_args(block_table=torch.tensor([[0, 1]], dtype=torch.int32)),
     "block_table must have 2 entries"),
    ("paged needs seqlens", _paged_args(cache_seqlens=None), "needs cache_seqlens"),
    ("paged and varlen", _paged_args(cu_seqlens_k=torch.tensor([0, 1, 2], dtype=torch.int32)),
     "either block_table"),
    ("alibi dtype", _fwd_args(alibi_slopes=torch.ones(4, dtype=H)), "alibi_slopes must be float32"),
    ("alibi shape", _fwd_args(alibi_slopes=torch.ones(3)), r"alibi_slopes must have shape \(4,\) or \(2, 4\)"),
    ("window", _fwd_args(window_left=-2), "window sizes must be >= -1"),
    ("softcap", _fwd_args(softcap=-1.0), "softcap must be >= 0"),
    ("scale", _fwd_args(softmax_scale=0.0), "softmax_scale must be > 0"),
    ("num_splits", _fwd_args(num_splits=-1), "num_splits must be >= 0"),
    ("leftpad alone", _fwd_args(cache_leftpad=torch.zeros(2, dtype=torch.int32)), "cache_leftpad needs cache_seqlens"),
]

DATA_ERRORS = [
    ("cu_seqlens start", _varlen_args(cu_seqlens_q=torch.tensor([1, 4, 10], dtype=torch.int32)), "must start at 0"),
    ("cu_seqlens order", _varlen_args(cu_seqlens_k=torch.tensor([0, 8, 6], dtype=torch.int32)),
     "must be non-decreasing"),
    ("cu_seqlens total", _varlen_args(cu_seqlens_k=torch.tensor([0, 6, 11], dtype=torch.int32)),
     r"cu_seqlens_k\[-1\] = 11 but the packed tensor holds 12"),
    ("max_seqlen", _varlen_args(max_seqlen_q=5), "max_seqlen_q = 5 is smaller than the longest sequence"),
    ("block_table range", _paged_args(block_table=torch.tensor([[0, 1], [2, 4]], dtype=torch.int32)),
     "block_table row 1 points outside the 4 cache blocks"),
    ("cache overflow", _paged_args(cache_seqlens=torch.tensor([9, 17], dtype=torch.int32)),
     "exceeds the cache capacity of 16"),
    ("leftpad range", _fwd_args(cache_seqlens=torch.tensor([9, 3], dtype=torch.int32),
                                cache_leftpad=torch.tensor([0, 4], dtype=torch.int32)), "cache_leftpad must lie in"),
]


def _call_fake(op, args):
    mode = FakeTensorMode()
    fake = {n: mode.from_tensor(x) if isinstance(x, torch.Tensor) else x for n, x in args.items()}
    with mode:
        return op(**fake)


@pytest.mark.parametrize("name,args,msg", META_ERRORS, ids=[e[0] for e in META_ERRORS])
def test_fwd_metadata_errors_real_and_fake(name, args, msg):
    with pytest.raises(ValueError, match=msg) as real:
        FWD(**args)
    with pytest.raises(ValueError, match=msg) as fake:
        _call_fake(FWD, args)
    assert str(real.value) == str(fake.value)
    assert str(real.value).startswith("flashinfer.fwd: ")


@pytest.mark.parametrize("name,args,msg", DATA_ERRORS, ids=[e[0] for e in DATA_ERRORS])
def test_fwd_data_errors(name, args, msg):
    with pytest.raises(ValueError, match=msg):
        FWD(**args)
    _call_fake(FWD, args)  # values are unknown to fake tensors: shapes alone are valid


def _append_args(**over):
    args = dict(k_cache=torch.zeros(2, 8, 2, 32), v_cache=torch.zeros(2, 8, 2, 32), k=torch.randn(2, 3, 2, 32),
                v=torch.randn(2, 3, 2, 32), cache_seqlens=torch.tensor([0, 5], dtype=torch.int32))
    args.update(over)
    return args


APPEND_ERRORS = [
    ("cache shape", _append_args(v_cache=torch.zeros(2, 9, 2, 32)), "k_cache and v_cache must have the same shape"),
    ("heads", _append_args(k_cache=torch.zeros(2, 8, 4, 32), v_cache=torch.zeros(2, 8, 4, 32)),
     r"cache \(heads_k, head_dim\) \(4, 32\) differs"),
    ("seqlens dtype", _append_args(cache_seqlens=torch.tensor([0, 5])), "cache_seqlens must be int32"),
    ("head_dim", _append_args(k_cache=torch.zeros(2, 8, 2, 36), v_cache=torch.zeros(2, 8, 2, 36),
                              k=torch.randn(2, 3, 2, 36), v=torch.randn(2, 3, 2, 36)), "head_dim 36 is not supported"),
    ("dtype", _append_args(k_cache=torch.zeros(2, 8, 2, 32, dtype=H), v_cache=torch.zeros(2, 8, 2, 32, dtype=H)),
     "k_cache has dtype torch.float16 but k has torch.float32"),
]


@pytest.mark.parametrize("name,args,msg", APPEND_ERRORS, ids=[e[0] for e in APPEND_ERRORS])
def test_append_kv_errors_real_and_fake(name, args, msg):
    with pytest.raises(ValueError, match=msg) as real:
        APPEND(**args)
    with pytest.raises(ValueError, match=msg) as fake:
        _call_fake(APPEND, args)
    assert str(real.value) == str(fake.value)


def test_positional_fwd_has_the_schema_defaults():
    """ops.fwd (every argument by position, for the dispatcher's speed) mirrors the schema."""
    schema = torch.ops.flashinfer.fwd.default._schema.arguments
    params = list(inspect.signature(torch_flashinfer.ops.fwd).parameters.values())
    assert [p.name for p in params] == [a.name for a in schema]
    for p, a in zip(params, schema):
        assert p.default == (a.default_value if a.has_default_value() else inspect.Parameter.empty), p.name


def test_plain_eager_excludes_tracing_modes_transforms_autograd_and_subclasses():
    """ops.fwd takes its dispatcher-free path only where nothing but the op's kernel would see the
    call (tests/test_cuda_binding.py checks the path itself on the GPU)."""
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    plain_eager = torch_flashinfer.ops.plain_eager
    x = torch.zeros(2, 3)
    assert plain_eager(x, x, x, None)
    assert not torch.func.vmap(lambda t: t + plain_eager(t, t, t))(x).any()
    compiled = torch.compile(lambda t: t + plain_eager(t, t, t), backend="eager", fullgraph=True)
    assert not compiled(x).any()
    seen = []
    torch.jit.trace(lambda t: seen.append(plain_eager(t, t, t)) or t + 1, (x,), check_trace=False)
    assert seen == [False]
    for mode in (TorchFunctionMode(), TorchDispatchMode()):
        with mode:
            assert not plain_eager(x, x, x)
    with FakeTensorMode() as fake_mode:
        fake = fake_mode.from_tensor(x)
    assert not plain_eager(x, x, x, fake)  # any tensor argument, not only q/k/v
    w = torch.zeros(2, 3, requires_grad=True)
    assert not plain_eager(x, w, x)
    with torch.no_grad():
        assert plain_eager(x, w, x)


def _misaligned_cases(device):
    """Rows off 16-byte boundaries: a storage offset of one element, a head stride of 65 (the
    values are never read: empty tensors, built with the calls that fake CUDA tensors allow
    without a GPU)."""
    def shifted(*shape):
        base = torch.empty(torch.Size(shape).numel() + 1, dtype=H, device=device)
        return base.as_strided(shape, torch.empty(shape, device="meta").stride(), 1)

    def wide(*shape):
        strides = torch.empty(*shape[:-1], shape[-1] + 1, device="meta").stride()
        return torch.empty_strided(shape, strides, dtype=H, device=device)

    k = torch.empty(2, 9, 2, 64, dtype=H, device=device)
    q = torch.empty(2, 5, 4, 64, dtype=H, device=device)
    cache = torch.empty(2, 8, 2, 64, dtype=H, device=device)
    new = torch.empty(2, 3, 2, 64, dtype=H, device=device)
    seqlens = torch.empty(2, dtype=torch.int32, device=device)
    return [
        (FWD, dict(q=shifted(2, 5, 4, 64), k=k, v=k), "q's rows must be 16-byte aligned"),
        (FWD, dict(q=q, k=wide(2, 9, 2, 64), v=k), "k's rows must be 16-byte aligned"),
        (APPEND, dict(k_cache=cache, v_cache=wide(2, 8, 2, 64), k=new, v=new, cache_seqlens=seqlens),
         "v_cache's rows must be 16-byte aligned"),
    ]


def test_misaligned_rows_are_refused_by_the_fake_impl():
    """The kernels copy 16-byte chunks of rows; views whose rows are not 16-byte aligned get a
    ValueError before any launch (the CUDA impl: tests/test_cuda_binding.py)."""
    mode = FakeTensorMode()
    with mode:
        cases = _misaligned_cases("cuda")
        for op, args, msg in cases:
            with pytest.raises(ValueError, match=msg):
                op(**args)


def test_append_kv_overflow_is_caught():
    with pytest.raises(ValueError, match=re.escape("cache_seqlens + 3 new tokens exceeds the cache capacity of 8")):
        APPEND(**_append_args(cache_seqlens=torch.tensor([0, 6], dtype=torch.int32)))


MIXED_DEVICES = [
    (FWD, _fwd_args, "k", "k is on meta but q is on cpu"),
    (FWD, _fwd_args, "v", "v is on meta but q is on cpu"),
    (FWD, _fwd_args, "q", "k is on cpu but q is on meta"),
    (FWD, lambda: _fwd_args(cache_seqlens=torch.tensor([9, 9], dtype=torch.int32)), "cache_seqlens",
     "cache_seqlens is on meta but q is on cpu"),
    (APPEND, _append_args, "k", "v is on cpu but k is on meta"),
    (APPEND, _append_args, "k_cache", "k_cache is on meta but k is on cpu"),
    (APPEND, _append_args, "cache_seqlens", "cache_seqlens is on meta but k is on cpu"),
]


@pytest.mark.parametrize("op,make_args,name,msg", MIXED_DEVICES,
                         ids=[f"{op._schema.name.split('::')[1]}-{name}" for op, _, name, _ in MIXED_DEVICES])
def test_inputs_on_two_devices_are_refused(op, make_args, name, msg):
    """One argument on another device (meta here; tests/test_cuda_fwd.py: cpu beside cuda): a ValueError
    naming it, from the op as called (the dispatcher picks the implementation) and from the fake."""
    args = make_args()
    args[name] = args[name].to("meta")
    with pytest.raises(ValueError, match=msg):
        op(**args)
    with pytest.raises(ValueError, match=msg):
        _call_fake(op, args)
