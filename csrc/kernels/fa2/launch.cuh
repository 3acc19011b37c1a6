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
  const int num_m_blocks = (p.seqlen_q + Shape::kBlockM - 1) / Shape::kBlockM;
  const long long items = (long long)num_m_blocks * p.batch * p.heads_q;
  if (items == 0) return nullptr;
  if (items > 0x7fffffffLL) return "too many query tiles x heads x sequences for one launch";

  constexpr bool kCanPersist = Shape::kStages == 2;
  auto pick = [&](auto decode, auto persistent) {
    constexpr bool kDecode = decltype(decode)::value && Shape::kHasDecodePath;
    constexpr bool kPersistent = decltype(persistent)::value && kCanPersist;
    return mode == KvMode::kContiguous ? fwd_kernel<T, Shape, KvMode::kContiguous, kDecode, kPersistent>
           : mode == KvMode::kPagedTile ? fwd_kernel<T, Shape, KvMode::kPagedTile, kDecode, false>
                                        : fwd_kernel<T, Shape, KvMode::kPagedRow, kDecode, false>;
  };
  auto kernel_of = [&](bool persistent) {
    return persistent ? (decode_path ? pick(std::true_type{}, std::true_type{}) : pick(std::false_type{}, std::true_type{}))
                      : (decode_path ? pick(std::true_type{}, std::false_type{}) : pick(std::false_type{}, std::false_type{}));
  };
  // Shared-memory limit and carveout, set once per (device, kernel); CTAs per SM alongside.
  static int ctas_per_sm[64][12] = {};
  int device = 0;
  cudaGetDevice(&device);
  auto prepare = [&](bool persistent) -> int {
    int* n = device < 64 ? &ctas_per_sm[device][(int(mode) * 2 + decode_path) * 2 + persistent] : nullptr;
    if (n != nullptr && *n > 0) return *n;
    auto kernel = kernel_of(persistent);
    int blocks = 0;
    // The largest shared-memory carveout lets two CTAs of ~100 KB share an SM.
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)) != cudaSuccess ||
        cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared) !=
            cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, Shape::kThreads, smem) != cudaSuccess ||
        blocks == 0) {
      return 0;
    }
    if (n != nullptr) *n = blocks;
    return blocks;
  };
  // Persistent CTAs when there are more items than CTA slots (and the launch qualifies).
  int blocks = prepare(false);
  bool persistent = false;
  if (blocks > 0 && kCanPersist && mode == KvMode::kContiguous && num_m_blocks <= kPersistentMaxMBlocks &&
      items > (long long)blocks * p.num_sms && items < (1LL << 30)) {
    blocks = prepare(true);
    persistent = true;
  }
  if (blocks == 0) {
    const cudaError_t err = cudaGetLastError();
    return err != cudaSuccess ? cudaGetErrorString(err) : "fa2: the kernel's shared memory does not fit this device";
  }
  const long long grid = persistent ? (long long)blocks * p.num_sms : items;
  kernel_of(persistent)<<<unsigned(grid), Shape::kThreads, smem, stream>>>(p, num_m_blocks);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace torch_flashinfer::fa2
