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
  auto kernel = fwd_kernel<T, Shape>;
  static const cudaError_t attr_err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmem));
  if (attr_err != cudaSuccess) return cudaGetErrorString(attr_err);

  const int num_m_blocks = (p.seqlen_q + Shape::kBlockM - 1) / Shape::kBlockM;
  const long long grid = (long long)num_m_blocks * p.batch * p.heads_q;
  if (grid == 0) return nullptr;
  if (grid > 0x7fffffffLL) return "too many query tiles x heads x sequences for one launch";
  kernel<<<unsigned(grid), Shape::kThreads, kSmem, stream>>>(p, num_m_blocks);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace torch_flashinfer::fa2
