// Host-side launch of the FA1 kernel for one (dtype, head_dim).
#pragma once

#include <cuda_runtime.h>

#include "fa1/fwd_kernel.cuh"

namespace torch_flashinfer::fa1 {

// Query rows of a call: packed or dense.
inline long long query_rows(const FwdParams& p) {
  return p.cu_seqlens_q != nullptr ? p.total_q : (long long)p.batch * p.seqlen_q;
}

// fp32 scratch: the running output (rows, heads_q, d) and (max, sum) per row and head.
inline long long workspace_floats(const FwdParams& p, int head_dim) {
  return query_rows(p) * p.heads_q * (head_dim + 2);
}

template <typename T, int kHeadDim>
const char* run_fwd(const FwdParams& p, cudaStream_t stream) {
  using S = Shape<kHeadDim>;
  const long long ctas = (long long)p.batch * p.heads_q;
  const long long rows_total = query_rows(p);
  if (ctas == 0 || rows_total == 0) return nullptr;
  if (ctas > 0x7fffffffLL) return "too many sequences x heads for one launch";
  if (p.workspace == nullptr || p.workspace_floats < workspace_floats(p, kHeadDim)) {
    return "fa1 workspace missing or too small";
  }
  constexpr size_t kSmem = S::template smem_bytes<T>();
  const bool paged = p.kv_layout == KvLayout::kPaged;
  auto kernel = paged ? fwd_kernel<T, S, KvMode::kPagedRow> : fwd_kernel<T, S, KvMode::kContiguous>;
  static bool smem_set[2] = {false, false};
  if (!smem_set[paged]) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmem));
    if (err != cudaSuccess) return cudaGetErrorString(err);
    smem_set[paged] = true;
  }
  kernel<<<unsigned(ctas), S::kThreads, kSmem, stream>>>(p, rows_total);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace torch_flashinfer::fa1
