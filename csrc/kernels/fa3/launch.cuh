// Host-side launch of the fa3 kernel for one (dtype, head_dim): the TMA maps of the call's
// tensors, the shared-memory limit, the grid.
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "fa3/fwd_kernel.cuh"
#include "fa3/tile_config.h"

namespace torch_flashinfer::fa3 {

// cuTensorMapEncodeTiled from the driver the runtime loaded (no link against libcuda).
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult found;
    const cudaError_t err =
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &found);
    return err == cudaSuccess && found == cudaDriverEntryPointSuccess
               ? reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr)
               : nullptr;
  }();
  return fn;
}

// A 4D map (head_dim, rows, heads, batch) of 2-byte elements with boxes of one swizzle row of
// head dims x box_rows rows; strides in elements. The stride of a dimension of size 1 is never
// used, so any valid one stands in for it (the binding's checks only make strides of dimensions
// longer than 1 multiples of 16 bytes).
template <typename T, int kHeadDim>
const char* encode_map(CUtensorMap* map, const void* base, int64_t rows, int64_t heads, int64_t batch,
                       int64_t row_stride, int64_t head_stride, int64_t batch_stride, int box_rows) {
  using Rows = TileRows<kHeadDim, 8>;
  const auto encode = tensor_map_encoder();
  if (encode == nullptr) return "fa3: cuTensorMapEncodeTiled not found in the CUDA driver";
  auto stride_bytes = [](int64_t size, int64_t stride) -> cuuint64_t {
    return size > 1 || (stride > 0 && stride % 8 == 0) ? cuuint64_t(stride) * 2 : 16;
  };
  // A map of no rows cannot be encoded; one that no whole tile reads never sees a copy.
  const cuuint64_t dims[4] = {cuuint64_t(kHeadDim), cuuint64_t(rows > 0 ? rows : 1), cuuint64_t(heads),
                              cuuint64_t(batch > 0 ? batch : 1)};
  const cuuint64_t strides[3] = {stride_bytes(rows, row_stride), stride_bytes(heads, head_stride),
                                 stride_bytes(batch, batch_stride)};
  const cuuint32_t box[4] = {cuuint32_t(Rows::kBlockCols), cuuint32_t(box_rows), 1, 1};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  const CUresult res = encode(
      map, std::is_same_v<T, __half> ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4,
      const_cast<void*>(base), dims, strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      Rows::kSwizzleBytes == 128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return res == CUDA_SUCCESS ? nullptr
                             : "fa3: q, k or v has strides a TMA map cannot describe (zero or >= 2^40 bytes)";
}

inline bool is_sm90(int device) {
  static int major[64] = {}, minor[64] = {};
  if (device >= 64) return false;
  if (major[device] == 0) {
    cudaDeviceGetAttribute(&minor[device], cudaDevAttrComputeCapabilityMinor, device);
    cudaDeviceGetAttribute(&major[device], cudaDevAttrComputeCapabilityMajor, device);
  }
  return major[device] == 9 && minor[device] == 0;
}

template <int kHeadDim>
using ShapeFor = Shape<kHeadDim, block_n_for(kHeadDim), overlap_for(kHeadDim), pingpong_for(kHeadDim)>;

// A call's work items (query tiles x heads x sequences) and CTAs: one per item, or one per SM
// where persistent CTAs run more items than there are SMs.
struct Grid {
  int m_blocks;  // query tiles per sequence
  long long items, ctas;
  bool dynamic() const { return kDynamicItems && ctas < items; }  // items from a counter (fwd_kernel.cuh)
};

template <int kHeadDim>
Grid launch_grid(const FwdParams& p) {
  using S = ShapeFor<kHeadDim>;
  const int num_m_blocks = (p.seqlen_q + S::kBlockM - 1) / S::kBlockM;
  const long long items = (long long)num_m_blocks * p.batch * p.heads_q;
  const bool uniform_items = !(p.causal || p.window_left >= 0 || p.window_right >= 0) || num_m_blocks == 1;
  const bool persistent = kPersistent && (uniform_items || kPersistentMasked);
  return {num_m_blocks, items, persistent && p.num_sms > 0 && items > p.num_sms ? p.num_sms : items};
}

// The zeroed counter a call takes its items from (api.h tfi_fwd_counters): one where they are dynamic.
template <int kHeadDim>
long long counters(const FwdParams& p) {
  return launch_grid<kHeadDim>(p).dynamic() ? 1 : 0;
}

template <typename T, int kHeadDim>
const char* run_fwd(const FwdParams& p, cudaStream_t stream) {
  using S = ShapeFor<kHeadDim>;
  int device = 0;
  cudaGetDevice(&device);
  if (!is_sm90(device)) return "fa3 runs on Hopper GPUs (sm_90) only";
  const KvMode mode = kv_mode(p, S::kBlockN);
  auto kernel = mode == KvMode::kContiguous ? fwd_kernel<T, S, KvMode::kContiguous>
                : mode == KvMode::kPagedTile ? fwd_kernel<T, S, KvMode::kPagedTile>
                                             : fwd_kernel<T, S, KvMode::kPagedRow>;
  static bool smem_set[64][3] = {};
  bool* set = device < 64 ? &smem_set[device][int(mode)] : nullptr;
  if (set == nullptr || !*set) {
    // The warpgroups' setmaxnreg hand-over needs the CTA's whole register file at launch: with fewer
    // registers per thread the math warpgroups would wait for registers that never come.
    cudaFuncAttributes attr;
    cudaError_t err = cudaFuncGetAttributes(&attr, kernel);
    if (err != cudaSuccess) return cudaGetErrorString(err);
    if (attr.numRegs * S::kThreads < S::kHandOverRegs) {
      return "fa3: the kernel was built with too few registers per thread for its warpgroups' hand-over";
    }
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::kSmemBytes);
    if (err != cudaSuccess) return cudaGetErrorString(err);
    if (set != nullptr) *set = true;
  }

  const Grid g = launch_grid<kHeadDim>(p);
  const int num_m_blocks = g.m_blocks;
  const long long items = g.items, grid = g.ctas;
  if (items == 0) return nullptr;
  // The last item index a CTA computes (fwd_kernel.cuh cta_item, a reversed round after a forward
  // one; or a dynamic one, below items + grid) is below items + 2 * grid: it must stay an int.
  if (items > 0x7fffffffLL - 2 * grid) return "too many query tiles x heads x sequences for one launch";
  if (g.dynamic() && (p.counters == nullptr || p.num_counters < 1)) return "fa3: the item counter is missing";

  TmaMaps maps;
  const bool packed_q = p.cu_seqlens_q != nullptr;
  const char* err = encode_map<T, kHeadDim>(&maps.q, p.q, packed_q ? p.total_q : p.seqlen_q, p.heads_q,
                                            packed_q ? 1 : p.batch, p.q_row_stride, p.q_head_stride,
                                            p.q_batch_stride, S::kBlockM);
  const int pages_per_tile = tma_pages_per_tile(p, S::kBlockN);
  if (err == nullptr && (mode != KvMode::kPagedRow || pages_per_tile > 0)) {
    // Paged: (head_dim, page rows, heads, blocks), the block stride in the batch stride's place;
    // boxes of a tile, or of a page where pages divide the tile.
    const bool paged = p.kv_layout == KvLayout::kPaged, packed = p.kv_layout == KvLayout::kVarlen;
    const int64_t rows = paged ? p.page_size : packed ? p.total_k : p.seqlen_k;
    const int64_t batch = paged ? p.num_blocks : packed ? 1 : p.batch;
    const int box_rows = pages_per_tile > 0 ? p.page_size : S::kBlockN;
    err = encode_map<T, kHeadDim>(&maps.k, p.k, rows, p.heads_k, batch, p.k_row_stride, p.k_head_stride,
                                  p.k_batch_stride, box_rows);
    if (err == nullptr) {
      err = encode_map<T, kHeadDim>(&maps.v, p.v, rows, p.heads_k, batch, p.v_row_stride, p.v_head_stride,
                                    p.v_batch_stride, box_rows);
    }
  }
  if (err != nullptr) return err;
  kernel<<<unsigned(grid), S::kThreads, S::kSmemBytes, stream>>>(p, maps, num_m_blocks, int(items));
  const cudaError_t launch = cudaGetLastError();
  return launch == cudaSuccess ? nullptr : cudaGetErrorString(launch);
}

}  // namespace torch_flashinfer::fa3
