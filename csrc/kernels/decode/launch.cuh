// Host side of split-KV decode for one (dtype, head_dim): the plan (m-tiles and splits; the one
// place where those are chosen), the workspace and counters it needs, and the launch.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "decode/split_kv_kernel.cuh"

namespace torch_flashinfer::decode {

// How a call is laid out on the GPU, from shapes only (never device data: a captured CUDA graph
// replays it for any cache_seqlens).
struct Plan {
  int m_tiles;       // 16-row m-tiles per item
  int row_blocks;    // items per (sequence, K/V head)
  long long items;   // batch * heads_k * row_blocks
  int splits;        // key chunks per item, one CTA each
  bool evict_first;  // K/V copies with the L2 evict-first policy
  bool shallow;      // each warp keeps S::kShallowLead tiles in flight, not S::kStages - 1
};

// Splits: enough CTAs for one per SM, dense or paged, each with at least
// kMinSplitKeys keys (of the capacity: a shorter sequence gives every split an equal part of what
// it holds); the CTA shape runs two per SM. Measured on the H100, fp16, d=128
// (benchmarks/tune_split_kv.py):
// - split counts (benchmarks/results/h100/split_kv.json, one-launch merge, "c2pf128" there):
//   b1 32/8 heads: 16 splits, 24.5 us at 8k keys, 61.3 us at 32k (cuDNN 26.3, 63.6); from 128
//   sequence-heads on, one split (b16 32/8 8k keys: 199.9 us, 2 splits 204.5); more splits than
//   one wave cost the merge and a second wave (b1 8k: 32 splits 25.4 us, 48 splits 29.9); a
//   split below ~256 keys costs more than it spreads (b1 32/32 128 keys: 8.5 us, 2 splits 11.1).
//   There the kernel is bound by its instruction stream, not by memory
//   (benchmarks/results/h100/decode_short_profile.log, 2026-12-07: 4.9 us per call in the profiler
//   against cuDNN's 4.1, 7.0 with 2 or 4 splits; under ncu about 1,960 instructions per warp at 4
//   cycles each, 20 % of the cycles waiting for instruction fetch; 603 of them issue the first two
//   tiles' 64 cp.async per lane, each copy compiled twice for the runtime L2 policy). With the
//   copies compiled once and fewer divisions (SASS 3144 -> 2368 instructions in the build timed,
//   7e00219; 2424 as shipped, which keeps fa2's copy code) the kernel took 4.2-4.3 us against
//   cuDNN's 4.1-4.2 at b1-b2, 6.0 against 6.6 at b8 (decode_copy_ab.log). With the launch's
//   divisors computed here (LaunchDivisors) and the merge and write loops bounded by the item's
//   rows it takes 3.7 us against 4.1-4.2 at b1-b2, 3.9-4.0 against 4.4 at b4, 5.2 against 6.6 at
//   b8 (decode_divisors_ab.log, 2026-12-07).
//   The earlier two-launch merge picked the same counts within 3 %, and a warp-per-item mapping
//   (no merge) was within 2 % of this everywhere (split_kv_mappings.json); it is not kept.
// - CTAs per SM (benchmarks/results/h100/split_kv.json, copies without the prefetch, each with
//   its best split count): two are fastest or within 3 % on every shape (b1 32/8 8k keys: 25.0
//   us, one or three 24.3); one (a 6-deep ring) loses 38-47 % on short caches (b128 32/32 128
//   keys: 144 vs 104.5 us; b1024: 1074 vs 732); three (registers capped at 168) stays within
//   1.5 %. All stop at 2.8-3.0 TB/s where cuDNN reads 3.0-3.1.
// - On the H200 (benchmarks/results/h200/split_kv.json: 1, 2 or 3 CTAs per SM, each at the plan's
//   and at 1-48 splits) the plan is within 1 % of the best on every shape but two: three CTAs per
//   SM take b128 32/32 128 keys in 75.9 us against 82.1 but b64 32/8 8k keys in 533 against 493.
constexpr int kMinSplitKeys = 256;
// L2 policy of the K/V copies: evict-first while the cache (its capacity, from shapes) is at most
// kEvictFirstMaxBytes, normal above. Evict-first lines replace each other instead of the lines L2
// already holds -- dirty ones among them, whose write-back would share the DRAM with the read.
// benchmarks/results/h100/split_kv_policy.json, evict-first vs normal (us): up to 268 MB it wins
// (b1 32/8 heads 8k keys, 34 MB: 24.5 vs 27.2; 134 MB: 61.7 vs 65.1 and 63.2 vs 67.6; b8 2k keys,
// 67 MB: 35.8 vs 40.4; b128 32/32 128 keys, 268 MB: 104.4 vs 105.9), from 537 MB on the normal
// policy is 0-2.5 % faster (b16 8k: 196.1 vs 201.0; b64 8k: 738 vs 752; b128 32/32 8k: a tie).
// -DTFI_DECODE_EVICT_FIRST=0|1 forces one (tuning builds).
constexpr long long kEvictFirstMaxBytes = 256ll << 20;
#ifdef TFI_SPLIT_KV_CTAS_PER_SM
constexpr int kCtasPerSm = TFI_SPLIT_KV_CTAS_PER_SM;  // tuning builds
#else
constexpr int kCtasPerSm = 2;
#endif

template <typename T, int kHeadDim, int kMT>
struct Variant {
  using S = Shape<kHeadDim, kMT, kCtasPerSm>;
  static constexpr size_t kSmem = S::smem_bytes();

  static auto kernel(KvMode mode) {
    return mode == KvMode::kContiguous ? split_kv_kernel<T, S, KvMode::kContiguous>
           : mode == KvMode::kPagedTile ? split_kv_kernel<T, S, KvMode::kPagedTile>
                                        : split_kv_kernel<T, S, KvMode::kPagedRow>;
  }

  // Raises the kernel's shared-memory limit (once per device and mode) and returns its CTAs per
  // SM, or 0 when it cannot run on this device.
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
    if (plan.items > 0x7fffffffLL) return "decode grid too large";
    const LaunchDivisors div{Divisor(plan.row_blocks), Divisor(p.heads_k), Divisor(plan.splits),
                             Divisor(p.heads_q / p.heads_k)};
    const int lead = plan.shallow ? S::kShallowLead : S::kStages - 1;
    kernel(mode)<<<dim3(unsigned(plan.items), unsigned(plan.splits)), S::kThreads, kSmem, stream>>>(
        p, div, plan.evict_first, lead);
    return nullptr;
  }
};

// Calls fn(integral_constant<int, m_tiles>) for the runtime value.
template <int kHeadDim, typename Fn>
auto with_m_tiles(int m_tiles, Fn&& fn) {
  if constexpr (max_m_tiles(kHeadDim) >= 4) {
    if (m_tiles == 4) return fn(std::integral_constant<int, 4>{});
  }
  if constexpr (max_m_tiles(kHeadDim) >= 2) {
    if (m_tiles == 2) return fn(std::integral_constant<int, 2>{});
  }
  return fn(std::integral_constant<int, 1>{});
}

template <int kHeadDim>
Plan make_plan(const FwdParams& p) {
  Plan plan{};
  const int rows = (p.heads_q / p.heads_k) * p.seqlen_q;
  const int mt = rows <= 16 ? 1 : rows <= 32 ? 2 : 4;
  plan.m_tiles = mt < max_m_tiles(kHeadDim) ? mt : max_m_tiles(kHeadDim);
  plan.row_blocks = (rows + 16 * plan.m_tiles - 1) / (16 * plan.m_tiles);
  plan.items = (long long)p.batch * p.heads_k * plan.row_blocks;
  if (p.num_splits > 0) {
    plan.splits = std::min(p.num_splits, kMaxSplits);
  } else {
    // One CTA slot per SM, paged caches too: the second slot (twice the splits) lost on every
    // paged row when re-timed on 2026-12-07 (one H100, tune_split_kv.py --page-size 16|256
    // --splits 0,4,8,16,32, shuffled pages, results/h100/split_kv_paged16.json / 256.json; us at
    // one slot vs two): b1 32k keys 60.4 vs 61.5 (page 16) and 60.4 vs 61.4 (256), b1 8k 23.3 vs
    // 24.8 and 22.9 vs 24.7, b4 59.2 vs 59.6 and 59.7 vs 59.2; b16 one split 193.2 / 189.6
    // (cuDNN on the dense cache 186.8). Two slots had won in an older sweep, before the paged
    // copies took evenly spaced rows (69e9fbc).
    const long long fill = plan.items > 0 ? p.num_sms / plan.items : 1;
    plan.splits = int(std::max(1LL, std::min<long long>({fill, kMaxSplits, p.seqlen_k / kMinSplitKeys})));
  }
  const long long kv_bytes = 2LL * p.batch * p.seqlen_k * p.heads_k * kHeadDim * 2;
#ifdef TFI_DECODE_EVICT_FIRST
  plan.evict_first = TFI_DECODE_EVICT_FIRST;
#else
  plan.evict_first = kv_bytes <= kEvictFirstMaxBytes;
#endif
  // Shallow launches: one split (each CTA streams all of its item's keys), dense or paged cache.
  // benchmarks/results/h100/split_kv_lead.json (2026-12-07, one H100, two runs of tuning builds
  // whose ring has two stages, which is this lead at d=128; us with one tile in flight per warp vs
  // two, cuDNN): b16 32/8 8k keys 186.7-187.0 vs 188.5-188.8 (186.6),
  // 32k 690.8 vs 700.5-700.8 (698); b64 703 vs 703-704; b128 32/32 8k 5487 vs 5498; b128 32/32
  // 1k 696 vs 698; b1 32/32 128 keys 7.5 vs 8.0-8.1. Split launches keep the deeper lead, which is
  // faster there: b1 32/8 32k keys (16 splits) 60.5-60.8 vs 59.6-59.7, b8 2k (2 splits) 36.4 vs
  // 35.3-35.7, b4 32/4 16k (8 splits) 63.2 vs 62.4-62.6.
  // As built with the full ring and this runtime lead (split_kv_lead_runtime.json, 2026-12-07, one
  // H100 on which cuDNN was 2 % faster than above; two runs, shallow vs the full lead, cuDNN): the
  // gain is smaller and mostly in the noise -- b16 8k 184.0-184.6 vs 184.6-185.5 (183.2), b1 32/32
  // 128 keys 7.5-7.6 vs 7.9-8.1, b128 32/32 1k 682.7-682.9 vs 683.9-684.4 -- and b16 32k went the
  // other way, 686.8-687.3 vs 684.9-685.4 (682.6); a third pair of runs (split_kv_lead_paged.json,
  // session 23) had it a tie, 686.9 both vs 687.4 / 686.1 (681.5 / 682.3). Paged caches there, two
  // runs in opposite orders, one-split rows at 8k keys, shallow vs full: page 16 b16 187.0 / 186.8
  // vs 187.4 / 188.1, b32 355.8 / 357.3 vs 358.7 / 359.0, b64 694.0 / 694.4 vs 696.2 / 696.4;
  // page 256 b16 185.5 both vs 186.7 / 186.2, b32 352.2 / 352.6 vs 352.7 / 351.8, b64 687.6 / 687.0
  // vs 688.0 / 688.3. The decode GPU tests passed with it (132, session 23).
#ifdef TFI_SPLIT_KV_SHALLOW
  plan.shallow = TFI_SPLIT_KV_SHALLOW;  // tuning builds
#else
  plan.shallow = plan.splits == 1;
#endif
  return plan;
}

// fp32 scratch for the partial outputs and lse of every split (none with one split).
inline long long workspace_floats(const FwdParams& p, const Plan& plan, int head_dim) {
  const long long rows_total = (long long)p.batch * p.seqlen_q * p.heads_q;
  return plan.splits > 1 ? (long long)plan.splits * rows_total * (head_dim + 1) : 0;
}

template <int kHeadDim>
long long workspace_split_kv(const FwdParams& p) {
  return workspace_floats(p, make_plan<kHeadDim>(p), kHeadDim);
}

// One counter per item when the keys are split: its splits count themselves done (api.h).
template <int kHeadDim>
long long counters_split_kv(const FwdParams& p) {
  const Plan plan = make_plan<kHeadDim>(p);
  return plan.splits > 1 ? plan.items : 0;
}

template <typename T, int kHeadDim>
const char* run_split_kv(const FwdParams& params, cudaStream_t stream) {
  const Plan plan = make_plan<kHeadDim>(params);
  const long long rows_total = (long long)params.batch * params.seqlen_q * params.heads_q;
  if (rows_total == 0 || plan.items == 0) return nullptr;
  if (plan.splits > 1 && (params.workspace == nullptr || params.workspace_floats < workspace_floats(params, plan, kHeadDim) ||
                          params.counters == nullptr || params.num_counters < plan.items)) {
    return "split-KV workspace or counters missing or too small";
  }
  const KvMode mode = kv_mode(params, kKeys);
  const char* err = with_m_tiles<kHeadDim>(plan.m_tiles, [&](auto mt) {  // the kernel takes the splits in LaunchDivisors
    return Variant<T, kHeadDim, decltype(mt)::value>::launch(params, plan, mode, stream);
  });
  if (err != nullptr) return err;
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

}  // namespace torch_flashinfer::decode
