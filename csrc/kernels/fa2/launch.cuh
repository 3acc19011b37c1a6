// Host-side launch of the FA2 kernel for one (dtype, head_dim).
#pragma once

#include <cuda_runtime.h>

#include "fa2/fwd_kernel.cuh"
#include "fa2/tile_config.h"

namespace torch_flashinfer::fa2 {

template <typename T, int kHeadDim>
const char* run_fwd(const FwdParams& p, cudaStream_t stream) {
  constexpr Tile kTile = tile_for(kHeadDim);
  using Shape = TileShape<kHeadDim, kTile.block_m, kTile.block_n, kTile.warps>;
  constexpr size_t kSmem = Shape::template smem_bytes<T>();
  const KvMode mode = kv_mode(p, Shape::kBlockN);
  auto kernel = mode == KvMode::kContiguous ? fwd_kernel<T, Shape, KvMode::kContiguous>
                : mode == KvMode::kPagedTile ? fwd_kernel<T, Shape, KvMode::kPagedTile>
                                             : fwd_kernel<T, Shape, KvMode::kPagedRow>;
  static bool smem_set[3] = {false, false, false};
  if (!smem_set[int(mode)]) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmem));
    // The largest shared-memory carveout lets two CTAs of ~100 KB share an SM.
    if (err == cudaSuccess) {
      err = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
    }
    if (err != cudaSuccess) return cudaGetErrorString(err);
    smem_set[int(mode)] = true;
  }

  const int num_m_blocks = (p.seqlen_q + Shape::kBlockM - 1) / Shape::kBlockM;
  const long long grid = (long long)num_m_blocks * p.batch * p.heads_q;
  if (grid == 0) return nullptr;
  if (grid > 0x7fffffffLL) return "too many query tiles x heads x sequences for one launch";
  kernel<<<unsigned(grid), Shape::kThreads, kSmem, stream>>>(p, num_m_blocks);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace torch_flashinfer::fa2
