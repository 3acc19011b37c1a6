// Host-side launch of the FA2 kernel for one (dtype, head_dim).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "fa2/fwd_kernel.cuh"
#include "fa2/tile_config.h"

namespace torch_flashinfer::fa2 {

template <typename T, int kHeadDim>
const char* run_fwd(const FwdParams& p, cudaStream_t stream) {
  constexpr Tile kTile = tile_for(kHeadDim);
  using Shape = TileShape<kHeadDim, kTile.block_m, kTile.block_n, kTile.warps, kTile.stages, kTile.swizzle>;
  const KvMode mode = kv_mode(p, Shape::kBlockN);
  const bool decode_path = Shape::kHasDecodePath && (p.cu_seqlens_q != nullptr || p.seqlen_q <= kDecodeMaxSeqlenQ);
  const size_t smem = Shape::template smem_bytes<T>(decode_path);
  auto pick = [&](auto decode) {
    constexpr bool kDecode = decltype(decode)::value && Shape::kHasDecodePath;
    return mode == KvMode::kContiguous ? fwd_kernel<T, Shape, KvMode::kContiguous, kDecode>
           : mode == KvMode::kPagedTile ? fwd_kernel<T, Shape, KvMode::kPagedTile, kDecode>
                                        : fwd_kernel<T, Shape, KvMode::kPagedRow, kDecode>;
  };
  auto kernel = decode_path ? pick(std::true_type{}) : pick(std::false_type{});
  // Shared-memory limit and carveout, set once per (device, kernel).
  static bool smem_set[64][6] = {};
  int device = 0;
  cudaGetDevice(&device);
  bool* set = device < 64 ? &smem_set[device][int(mode) * 2 + decode_path] : nullptr;
  if (set == nullptr || !*set) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    // The largest shared-memory carveout lets two CTAs of ~100 KB share an SM.
    if (err == cudaSuccess) {
      err = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
    }
    if (err != cudaSuccess) return cudaGetErrorString(err);
    if (set != nullptr) *set = true;
  }

  const int num_m_blocks = (p.seqlen_q + Shape::kBlockM - 1) / Shape::kBlockM;
  const long long grid = (long long)num_m_blocks * p.batch * p.heads_q;
  if (grid == 0) return nullptr;
  if (grid > 0x7fffffffLL) return "too many query tiles x heads x sequences for one launch";
  // Where query tiles see different numbers of keys, longest first over windows of (sequence,
  // head) pairs whose K/V fit kOrderWindowBytes (fwd_kernel.cuh tile_order); else pair by pair.
  const int pairs = p.batch * p.heads_q;
  int window = 1;
  if (p.causal || p.window_left >= 0 || p.window_right >= 0) {
    const long long kv_bytes = 2LL * p.seqlen_k * kHeadDim * sizeof(T) / (p.heads_q / p.heads_k);
    window = int(std::min<long long>(pairs, std::max(1LL, kOrderWindowBytes / std::max(kv_bytes, 1LL))));
  }
  kernel<<<unsigned(grid), Shape::kThreads, smem, stream>>>(p, num_m_blocks, window);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace torch_flashinfer::fa2
