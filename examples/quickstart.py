"""Run the flashinfer ops on the GPU if there is one (else the CPU) and check them against the
reference: prefill (causal, GQA), a packed hybrid batch, and a decode step over a paged cache.

    python examples/quickstart.py
"""

import torch

import torch_flashinfer
from torch_flashinfer import flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache

device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = torch.float16
torch.manual_seed(0)


def check(name, out, ref):
    err = (out.float() - ref.float()).abs().max().item()
    status = "ok" if err < 1e-2 else "MISMATCH"
    print(f"{name:<34} {tuple(out.shape)!s:<22} max |err| vs reference = {err:.2e}  {status}")
    return status == "ok"


ok = True
# prefill: (batch, seq, heads, dim), 32 query heads sharing 8 K/V heads, causal
q = torch.randn(2, 300, 32, 128, device=device, dtype=dtype)
k = torch.randn(2, 300, 8, 128, device=device, dtype=dtype)
v = torch.randn(2, 300, 8, 128, device=device, dtype=dtype)
out = flash_attn_func(q, k, v, causal=True)
ref, _ = torch_flashinfer.reference_attention(q.cpu(), k.cpu(), v.cpu(), causal=True)
ok &= check("prefill causal GQA 32/8", out.cpu(), ref)

# hybrid: one decode token next to two prompts, packed in one call
lens_q, lens_k = [1, 128, 57], [200, 128, 57]
cu_q = torch.tensor([0, 1, 129, 186], dtype=torch.int32, device=device)
cu_k = torch.tensor([0, 200, 328, 385], dtype=torch.int32, device=device)
q = torch.randn(186, 32, 128, device=device, dtype=dtype)
k = torch.randn(385, 8, 128, device=device, dtype=dtype)
v = torch.randn(385, 8, 128, device=device, dtype=dtype)
out = flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), causal=True)
ref, _ = torch_flashinfer.reference_attention(q.cpu(), k.cpu(), v.cpu(), cu_q.cpu(), cu_k.cpu(), causal=True)
ok &= check("hybrid varlen (decode + prefill)", out.cpu(), ref)

# decode: append one token per sequence to a paged cache (page 16) and attend
k_cache = torch.randn(64, 16, 8, 128, device=device, dtype=dtype)
v_cache = torch.randn(64, 16, 8, 128, device=device, dtype=dtype)
block_table = torch.randperm(64, dtype=torch.int32, device=device)[:48].reshape(4, 12)
cache_seqlens = torch.tensor([5, 100, 17, 150], dtype=torch.int32, device=device)
q = torch.randn(4, 1, 32, 128, device=device, dtype=dtype)
k_new = torch.randn(4, 1, 8, 128, device=device, dtype=dtype)
v_new = torch.randn(4, 1, 8, 128, device=device, dtype=dtype)
out = flash_attn_with_kvcache(q, k_cache, v_cache, k_new, v_new, cache_seqlens=cache_seqlens,
                              block_table=block_table, causal=True)
ref, _ = torch_flashinfer.reference_attention(q.cpu(), k_cache.cpu(), v_cache.cpu(), cache_seqlens=(cache_seqlens + 1).cpu(),
                                              block_table=block_table.cpu(), causal=True)
ok &= check("decode, paged cache + append", out.cpu(), ref)

print(f"device: {device}; all checks {'passed' if ok else 'FAILED'}")
raise SystemExit(0 if ok else 1)
