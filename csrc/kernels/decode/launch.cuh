// Host-side launch of the split-KV decode kernel (+ the split combine) for one (dtype, head_dim).
// The number of splits arrives in params (decided in Python, torch_flashinfer/_kernels.py).
#pragma once

#include <cuda_runtime.h>

#include "decode/split_kv_kernel.cuh"

namespace torch_flashinfer::decode {

// Programmatic dependent launch needs sm_90+; the answer is cached per device.
inline bool sm90_or_newer() {
  static int major[64] = {0};
  int device = 0;
  cudaGetDevice(&device);
  if (device >= 64) return false;
  if (major[device] == 0) cudaDeviceGetAttribute(&major[device], cudaDevAttrComputeCapabilityMajor, device);
  return major[device] >= 9;
}

template <typename T, int kHeadDim>
const char* run_split_kv(const FwdParams& params, cudaStream_t stream) {
  using S = Shape<kHeadDim>;
  FwdParams p = params;
  if (p.num_splits < 1) p.num_splits = 1;
  const long long rows_total = (long long)p.batch * p.seqlen_q * p.heads_q;
  if (rows_total == 0) return nullptr;
  if (p.num_splits > 1) {
    if (p.workspace == nullptr || p.workspace_floats < (long long)p.num_splits * rows_total * (kHeadDim + 1)) {
      return "split-KV workspace missing or too small";
    }
  }
  const int rows = (p.heads_q / p.heads_k) * p.seqlen_q;
  const int row_blocks = (rows + S::kRows - 1) / S::kRows;
  const long long ctas = (long long)p.batch * p.heads_k * row_blocks;
  if (ctas > 0x7fffffffLL || p.num_splits > 65535) return "decode grid too large";
  constexpr size_t kSmem = S::template smem_bytes<T>();
  const bool paged = p.kv_layout == KvLayout::kPaged;
  auto kernel = paged ? split_kv_kernel<T, S, KvMode::kPagedRow> : split_kv_kernel<T, S, KvMode::kContiguous>;
  static bool smem_set[2] = {false, false};
  if (!smem_set[paged]) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmem));
    // Two ~110 KB CTAs per SM need the largest shared-memory carveout.
    if (err == cudaSuccess) {
      err = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
    }
    if (err != cudaSuccess) return cudaGetErrorString(err);
    smem_set[paged] = true;
  }
  kernel<<<dim3(unsigned(ctas), unsigned(p.num_splits)), S::kThreads, kSmem, stream>>>(p, row_blocks);
  if (p.num_splits > 1) {
    // Programmatic dependent launch: the combine grid is scheduled while the split grid drains
    // (it waits in griddepcontrol.wait), hiding one launch latency; graph capture keeps the edge.
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(unsigned((rows_total + 3) / 4));
    config.blockDim = dim3(128);
    config.stream = stream;
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    config.attrs = &attr;
    config.numAttrs = sm90_or_newer() ? 1 : 0;
    const cudaError_t err = cudaLaunchKernelEx(&config, combine_kernel<T, kHeadDim>, p);
    if (err != cudaSuccess) return cudaGetErrorString(err);
  }
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace torch_flashinfer::decode
