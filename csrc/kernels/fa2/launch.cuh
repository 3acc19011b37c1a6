// Host-side launch of the FA2 kernel for one (dtype, head_dim).
#pragma once

#include <cuda_runtime.h>

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
  kernel<<<unsigned(grid), Shape::kThreads, smem, stream>>>(p, num_m_blocks);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace torch_flashinfer::fa2
