// The one file that includes torch: turns tensors into the plain params structs and calls a
// kernel library's entry point on the current stream of the tensors' device. Argument checks
// happen before this, in torch_flashinfer/_validation.py (shared with the fake implementation).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/extension.h>

#include <optional>

#include "torch_flashinfer/api.h"

namespace {

using torch_flashinfer::AppendKvParams;
using torch_flashinfer::FwdParams;
using torch_flashinfer::KvLayout;
using OptTensor = std::optional<at::Tensor>;

template <typename T>
const T* opt_ptr(const OptTensor& t) {
  return t.has_value() ? static_cast<const T*>(t->data_ptr()) : nullptr;
}

int num_sms(int device) {
  static int cached[64] = {0};
  if (device < 64 && cached[device]) return cached[device];
  int n = 0;
  cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device);
  if (device < 64) cached[device] = n;
  return n;
}

void fwd(int64_t kernel, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& out,
         at::Tensor& lse, const OptTensor& cu_seqlens_q, const OptTensor& cu_seqlens_k,
         const OptTensor& cache_seqlens, const OptTensor& cache_leftpad, const OptTensor& block_table,
         const OptTensor& alibi_slopes, int64_t seqlen_q, int64_t seqlen_k, double softmax_scale, bool causal,
         int64_t window_left, int64_t window_right, double softcap, int64_t num_splits,
         const OptTensor& workspace) {
  c10::cuda::CUDAGuard guard(q.device());
  FwdParams p{};
  const bool varlen_q = cu_seqlens_q.has_value();
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.out = out.data_ptr();
  p.lse = lse.data_ptr<float>();
  // Packed tensors have no batch dim: the row dim is dim 0 and the batch stride is unused.
  const int r = varlen_q ? 0 : 1;
  p.q_batch_stride = varlen_q ? 0 : q.stride(0);
  p.q_row_stride = q.stride(r);
  p.q_head_stride = q.stride(r + 1);
  p.o_batch_stride = varlen_q ? 0 : out.stride(0);
  p.o_row_stride = out.stride(r);
  p.o_head_stride = out.stride(r + 1);
  p.lse_batch_stride = varlen_q ? 0 : lse.stride(0);
  p.lse_head_stride = varlen_q ? lse.stride(0) : lse.stride(1);

  p.kv_layout = block_table.has_value() ? KvLayout::kPaged
                : cu_seqlens_k.has_value() ? KvLayout::kVarlen
                                           : KvLayout::kDense;
  const int rk = p.kv_layout == KvLayout::kVarlen ? 0 : 1;
  p.k_batch_stride = rk ? k.stride(0) : 0;
  p.k_row_stride = k.stride(rk);
  p.k_head_stride = k.stride(rk + 1);
  p.v_batch_stride = rk ? v.stride(0) : 0;
  p.v_row_stride = v.stride(rk);
  p.v_head_stride = v.stride(rk + 1);

  p.cu_seqlens_q = opt_ptr<int32_t>(cu_seqlens_q);
  p.cu_seqlens_k = opt_ptr<int32_t>(cu_seqlens_k);
  p.cache_seqlens = opt_ptr<int32_t>(cache_seqlens);
  p.cache_leftpad = opt_ptr<int32_t>(cache_leftpad);
  p.block_table = opt_ptr<int32_t>(block_table);
  p.block_table_batch_stride = block_table.has_value() ? block_table->stride(0) : 0;
  p.page_size = block_table.has_value() ? static_cast<int32_t>(k.size(1)) : 0;
  p.num_blocks = block_table.has_value() ? static_cast<int32_t>(k.size(0)) : 0;
  p.total_q = static_cast<int32_t>(q.size(0));
  p.total_k = static_cast<int32_t>(k.size(0));
  p.alibi_slopes = opt_ptr<float>(alibi_slopes);
  p.alibi_batch_stride = alibi_slopes.has_value() && alibi_slopes->dim() == 2 ? alibi_slopes->stride(0) : 0;

  p.batch = varlen_q ? static_cast<int32_t>(cu_seqlens_q->size(0) - 1) : static_cast<int32_t>(q.size(0));
  p.heads_q = static_cast<int32_t>(q.size(-2));
  p.heads_k = static_cast<int32_t>(k.size(-2));
  p.head_dim = static_cast<int32_t>(q.size(-1));
  p.seqlen_q = static_cast<int32_t>(seqlen_q);
  p.seqlen_k = static_cast<int32_t>(seqlen_k);
  p.softmax_scale = static_cast<float>(softmax_scale);
  p.softcap = static_cast<float>(softcap);
  p.causal = causal;
  p.window_left = static_cast<int32_t>(window_left);
  p.window_right = static_cast<int32_t>(window_right);
  p.is_bf16 = q.scalar_type() == at::kBFloat16;
  p.num_sms = num_sms(q.get_device());
  p.num_splits = static_cast<int32_t>(num_splits);
  if (workspace.has_value()) {
    p.workspace = workspace->data_ptr<float>();
    p.workspace_floats = workspace->numel();
  }

  const char* err = reinterpret_cast<tfi_fwd_fn>(kernel)(&p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == nullptr, "flashinfer.fwd kernel: ", err);
}

void append_kv(int64_t kernel, at::Tensor& k_cache, at::Tensor& v_cache, const at::Tensor& k, const at::Tensor& v,
               const at::Tensor& cache_seqlens, const OptTensor& block_table) {
  c10::cuda::CUDAGuard guard(k.device());
  AppendKvParams p{};
  p.k_cache = k_cache.data_ptr();
  p.v_cache = v_cache.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.cache_batch_stride = k_cache.stride(0);
  p.cache_row_stride = k_cache.stride(1);
  p.cache_head_stride = k_cache.stride(2);
  p.vcache_batch_stride = v_cache.stride(0);
  p.vcache_row_stride = v_cache.stride(1);
  p.vcache_head_stride = v_cache.stride(2);
  p.k_batch_stride = k.stride(0);
  p.k_row_stride = k.stride(1);
  p.k_head_stride = k.stride(2);
  p.v_batch_stride = v.stride(0);
  p.v_row_stride = v.stride(1);
  p.v_head_stride = v.stride(2);
  p.cache_seqlens = cache_seqlens.data_ptr<int32_t>();
  p.block_table = opt_ptr<int32_t>(block_table);
  p.block_table_batch_stride = block_table.has_value() ? block_table->stride(0) : 0;
  p.page_size = static_cast<int32_t>(k_cache.size(1));
  p.cache_rows = static_cast<int32_t>(k_cache.size(1));
  p.num_blocks = static_cast<int32_t>(k_cache.size(0));
  p.max_blocks = block_table.has_value() ? static_cast<int32_t>(block_table->size(1)) : 1;
  p.batch = static_cast<int32_t>(k.size(0));
  p.seqlen_new = static_cast<int32_t>(k.size(1));
  p.heads_k = static_cast<int32_t>(k.size(2));
  p.head_dim = static_cast<int32_t>(k.size(3));
  p.elem_bytes = static_cast<int32_t>(k.element_size());
  const char* err = reinterpret_cast<tfi_append_kv_fn>(kernel)(&p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == nullptr, "flashinfer.append_kv kernel: ", err);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fwd", &fwd);
  m.def("append_kv", &append_kv);
}
