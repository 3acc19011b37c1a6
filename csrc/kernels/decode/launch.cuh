// Host side of split-KV decode for one (dtype, head_dim): the plan (how many m-tiles, splits and
// which CTA mapping; the one place where those are chosen), the workspace it needs, the launch
// of the split kernel and of the combine.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

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

// How a call is laid out on the GPU, from shapes only (never device data: a captured CUDA graph
// replays it for any cache_seqlens).
struct Plan {
  int m_tiles;       // 16-row m-tiles per item
  int row_blocks;    // items per (sequence, K/V head)
  long long items;   // batch * heads_k * row_blocks
  bool warp_items;   // one warp per (item, split) instead of one CTA
  int splits;        // key chunks per item
};

// The plan's cost model, in units of "one key streamed by one warp-slot of the GPU": a CTA that
// owns `keys` keys of an item costs keys + kCtaOverheadKeys (Q load, warp merge, epilogue, and
// the CTA's launch), and ceil(CTAs / resident) waves of such CTAs run one after the other.
// Constants from benchmarks/tune_split_kv.py on the H100 (benchmarks/results/h100/split_kv.json).
constexpr int kCtaOverheadKeys = 96;
constexpr int kWarpItemOverheadKeys = 32;
constexpr int kMinSplitKeys = 64;  // never split an item below this many keys per split

// Tuning builds force the CTA mapping: -DTFI_SPLIT_KV_MODE=1 (shared) or 2 (warp items).
#ifndef TFI_SPLIT_KV_MODE
#define TFI_SPLIT_KV_MODE 0
#endif

template <typename T, int kHeadDim, int kMT, bool kWarpItems>
struct Variant {
  using S = Shape<kHeadDim, kMT, kWarpItems>;
  static constexpr size_t kSmem = S::smem_bytes();

  static auto kernel(KvMode mode) {
    return mode == KvMode::kContiguous ? split_kv_kernel<T, S, KvMode::kContiguous>
           : mode == KvMode::kPagedTile ? split_kv_kernel<T, S, KvMode::kPagedTile>
                                        : split_kv_kernel<T, S, KvMode::kPagedRow>;
  }

  // Raises the kernel's shared-memory limit (once per device) and returns its CTAs per SM, or 0
  // when it cannot run on this device.
  static int ctas_per_sm(KvMode mode) {
    static int cached[64][3] = {};
    int device = 0;
    cudaGetDevice(&device);
    int* n = device < 64 ? &cached[device][int(mode)] : nullptr;
    if (n != nullptr && *n > 0) return *n;
    auto k = kernel(mode);
    int blocks = 0;
    if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmem)) != cudaSuccess ||
        cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared) !=
            cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, k, S::kThreads, kSmem) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    if (n != nullptr) *n = blocks;
    return blocks;
  }

  static const char* launch(const FwdParams& p, const Plan& plan, KvMode mode, cudaStream_t stream) {
    if (ctas_per_sm(mode) == 0) return "split_kv: the kernel's shared memory does not fit this device";
    const long long ctas = kWarpItems ? (plan.items + kWarps - 1) / kWarps : plan.items;
    if (ctas > 0x7fffffffLL) return "decode grid too large";
    kernel(mode)<<<dim3(unsigned(ctas), unsigned(plan.splits)), S::kThreads, kSmem, stream>>>(
        p, plan.row_blocks, int(plan.items));
    return nullptr;
  }
};

// Calls fn(integral_constant<int, m_tiles>, bool_constant<warp_items>) for the runtime pair.
template <int kHeadDim, typename Fn>
auto with_variant(int m_tiles, bool warp_items, Fn&& fn) {
  auto with_mt = [&](auto mt) {
    return warp_items ? fn(mt, std::true_type{}) : fn(mt, std::false_type{});
  };
  if constexpr (max_m_tiles(kHeadDim) >= 4) {
    if (m_tiles == 4) return with_mt(std::integral_constant<int, 4>{});
  }
  if constexpr (max_m_tiles(kHeadDim) >= 2) {
    if (m_tiles == 2) return with_mt(std::integral_constant<int, 2>{});
  }
  return with_mt(std::integral_constant<int, 1>{});
}

template <typename T, int kHeadDim>
int ctas_per_sm(int m_tiles, bool warp_items, KvMode mode) {
  return with_variant<kHeadDim>(m_tiles, warp_items, [&](auto mt, auto wi) {
    return Variant<T, kHeadDim, decltype(mt)::value, decltype(wi)::value>::ctas_per_sm(mode);
  });
}

// Relative time of running `items` items in `splits` chunks of `keys` keys: waves of resident
// CTAs, each wave as long as one CTA's keys (4 items' worth with warp items) plus its overhead,
// times the CTAs that share an SM's bandwidth.
inline long long plan_cost(long long items, int splits, int keys, bool warp_items, int ctas_per_sm, int num_sms) {
  const long long per_cta = warp_items ? kWarps : 1;
  const long long ctas = (items + per_cta - 1) / per_cta * splits;
  const long long resident = (long long)ctas_per_sm * num_sms;
  const long long waves = (ctas + resident - 1) / resident;
  const long long chunk = (keys + splits - 1) / splits;
  return waves * ctas_per_sm * (warp_items ? kWarps * chunk + kWarpItemOverheadKeys : chunk + kCtaOverheadKeys);
}

template <typename T, int kHeadDim>
Plan make_plan(const FwdParams& p) {
  Plan plan{};
  const int rows = (p.heads_q / p.heads_k) * p.seqlen_q;
  const int mt = rows <= 16 ? 1 : rows <= 32 ? 2 : 4;
  plan.m_tiles = mt < max_m_tiles(kHeadDim) ? mt : max_m_tiles(kHeadDim);
  plan.row_blocks = (rows + 16 * plan.m_tiles - 1) / (16 * plan.m_tiles);
  plan.items = (long long)p.batch * p.heads_k * plan.row_blocks;
  plan.splits = 1;
  plan.warp_items = TFI_SPLIT_KV_MODE == 2;
  if (p.num_splits > 0) {
    plan.splits = p.num_splits < kMaxSplits ? p.num_splits : kMaxSplits;
    return plan;
  }
  if (plan.items == 0) return plan;
  const KvMode mode = kv_mode(p, kKeys);
  const int keys = p.seqlen_k;  // the capacity: every split of a shorter sequence gets an equal part of it
  const int max_splits = std::max(1, std::min(kMaxSplits, keys / kMinSplitKeys));
  long long best = -1;
  for (int wi = 0; wi < 2; ++wi) {
    if ((TFI_SPLIT_KV_MODE == 1 && wi) || (TFI_SPLIT_KV_MODE == 2 && !wi)) continue;
    const int per_sm = ctas_per_sm<T, kHeadDim>(plan.m_tiles, wi, mode);
    if (per_sm == 0) continue;
    for (int s = 1; s <= max_splits; ++s) {
      const long long cost = plan_cost(plan.items, s, keys, wi, per_sm, std::max(p.num_sms, 1));
      if (best < 0 || cost < best) {
        best = cost;
        plan.splits = s;
        plan.warp_items = wi;
      }
    }
  }
  return plan;
}

// fp32 scratch for the partial outputs and lse of every split (none with one split).
inline long long workspace_floats(const FwdParams& p, const Plan& plan, int head_dim) {
  const long long rows_total = (long long)p.batch * p.seqlen_q * p.heads_q;
  return plan.splits > 1 ? (long long)plan.splits * rows_total * (head_dim + 1) : 0;
}

template <typename T, int kHeadDim>
long long workspace_split_kv(const FwdParams& p) {
  return workspace_floats(p, make_plan<T, kHeadDim>(p), kHeadDim);
}

template <typename T, int kHeadDim>
const char* run_split_kv(const FwdParams& params, cudaStream_t stream) {
  const Plan plan = make_plan<T, kHeadDim>(params);
  const long long rows_total = (long long)params.batch * params.seqlen_q * params.heads_q;
  if (rows_total == 0 || plan.items == 0) return nullptr;
  if (plan.splits > 1 && (params.workspace == nullptr || params.workspace_floats < workspace_floats(params, plan, kHeadDim))) {
    return "split-KV workspace missing or too small";
  }
  FwdParams p = params;
  p.num_splits = plan.splits;
  const KvMode mode = kv_mode(p, kKeys);
  const char* err = with_variant<kHeadDim>(plan.m_tiles, plan.warp_items, [&](auto mt, auto wi) {
    return Variant<T, kHeadDim, decltype(mt)::value, decltype(wi)::value>::launch(p, plan, mode, stream);
  });
  if (err != nullptr) return err;
  if (plan.splits > 1) {
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
    const cudaError_t e = cudaLaunchKernelEx(&config, combine_kernel<T, kHeadDim>, p);
    if (e != cudaSuccess) return cudaGetErrorString(e);
  }
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

}  // namespace torch_flashinfer::decode
