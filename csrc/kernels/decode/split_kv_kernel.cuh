// Decode (seqlen_q <= a few tokens): split-KV flash-decoding, GQA-packed.
//
// Work items: (sequence, K/V head, block of packed query rows). The query rows of a K/V head --
// every query head of its group times every query token -- are packed as the rows of one mma
// tile, so each K/V byte is read once per group. Each item's visible keys are cut into
// `splits` equal chunks on the device (from cache_seqlens, so a 32k-slot cache holding 100
// tokens costs 100 tokens, and the launch depends on no device value).
//
// A CTA of four warps owns one (item, split); its warps take interleaved 16-key tiles, each
// streaming them through a private cp.async ring (kStages deep) with no block-wide barrier in
// the loop, and merge their softmax states through shared memory at the end. With one split
// the CTA writes the output; with several it writes a normalised fp32 partial output and its
// lse to the workspace, and the item's last split to finish (a per-item counter) merges them:
// one launch per call.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/online_softmax.cuh"
#include "common/ptx.cuh"
#include "common/sequence.cuh"
#include "common/tile_copy.cuh"
#include "torch_flashinfer/params.h"

namespace torch_flashinfer::decode {

constexpr int kWarps = 4;
constexpr int kKeys = 16;         // keys per warp tile
constexpr int kMaxSplits = 128;   // the merge keeps one weight per split and warp in shared memory
// L2 prefetch size of the K/V copies (ptx.cuh): 128 bytes, i.e. whole 128-byte lines of the
// rows from DRAM. H100, benchmarks/tune_split_kv.py (benchmarks/results/h100/split_kv.json): 2-3 %
// faster than none on every row of >= 256 MB (b128 32/32 8k keys 5747 vs 5881 us), within 1 %
// elsewhere; 256 bytes within 1 % of 128. -DTFI_DECODE_L2_PREFETCH=0|256 for tuning builds.
#ifndef TFI_DECODE_L2_PREFETCH
#define TFI_DECODE_L2_PREFETCH 128
#endif
constexpr int kKvPrefetch = TFI_DECODE_L2_PREFETCH;
// sm90 bulk copies (the TMA unit, one 2*d-byte row per lane and tile, completing on an mbarrier
// per warp stage) instead of cp.async: correct, one copy instruction per lane and tile instead of
// 16 (d=128), but 2-13 % slower on every shape (b16 32/8 8k keys 214.1 vs 195.2 us, b128 32/32
// 128 keys 119.8 vs 104.0): benchmarks/results/h100/split_kv_bulk.json ("c2" bulk, "c2cp"
// cp.async), commit 13cfded.
// Shared memory per SM for CTAs: 228 KB on the H100 (1 KB of it reserved per CTA).
constexpr int kSmemPerSm = 228 * 1024;

// 16-row m-tiles per item: up to 64 packed rows for d <= 64, 32 for d <= 128, 16 above, so the
// O accumulators (m_tiles * d / 2 floats per thread) stay within 64 registers (128 for d=256).
constexpr int max_m_tiles(int head_dim) { return head_dim <= 64 ? 4 : head_dim <= 128 ? 2 : 1; }

// kCtasPerSm: the CTAs that share an SM; the ring is as deep as their share of shared memory
// allows, and registers are capped so that they fit too.
template <int kHeadDim_, int kMTiles_, int kCtasPerSm_>
struct Shape {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kMTiles = kMTiles_;
  static constexpr int kCtasPerSm = kCtasPerSm_;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRows = 16 * kMTiles;             // packed query rows per item
  // Q and the K/V ring in swizzled rows (common/tile_copy.cuh). With rows padded by 16 bytes a
  // warp's copy of two 256-byte rows (d=128) spans five 128-byte lines of shared memory instead of
  // four, which costs L2 sectors and wavefronts (ncu, FA2 at d=256: 24 sectors per row instead of
  // 16); swizzled, decode is 3-4 % faster on caches of 0.5 GB and more (split_kv_swizzle.json).
  using Rows = SwizzledRows<kHeadDim>;
  static constexpr int kStride = Rows::kRowElems;  // elements per smem row
  static constexpr int kQBytes = kRows * kStride * 2;
  static constexpr int kWarpStageBytes = 2 * kKeys * kStride * 2;  // one K and one V tile
  // Ring depth: as many stages as fit next to Q in the budget, 2 to 8. A warp keeps up to
  // kStages - 1 tiles in flight while it computes on one (the launch's `lead`, launch.cuh).
  static constexpr int kBudget = kSmemPerSm / kCtasPerSm - 1024;
  static constexpr int kFit = (kBudget - kQBytes) / (kWarps * kWarpStageBytes);
#ifdef TFI_SPLIT_KV_STAGES
  static constexpr int kStages = TFI_SPLIT_KV_STAGES;  // tuning builds
  static_assert(kStages >= 2, "TFI_SPLIT_KV_STAGES: at least 2 stages");
#else
  static constexpr int kStages = kFit < 2 ? 2 : kFit > 8 ? 8 : kFit;
#endif
  // Tiles in flight per warp in a shallow launch (launch.cuh make_plan): 8 KB, one K and one V
  // tile of d=128, at least one tile.
  static constexpr int kShallowLead = 8192 / kWarpStageBytes < 1 ? 1
                                      : 8192 / kWarpStageBytes > kStages - 1 ? kStages - 1
                                                                              : 8192 / kWarpStageBytes;
  // Q as mma fragments in registers (read from shared memory once, not once per tile) when they
  // take at most 32 registers.
  static constexpr bool kQInRegisters = kMTiles * kHeadDim <= 128;
  static constexpr int kMergeStride = kHeadDim + 8;  // fp32 row of the warp merge (8-byte stores)
  static constexpr int kDTiles = kHeadDim / 8;
  static constexpr int kChunksPerRow = kHeadDim / 8;

  static constexpr size_t smem_bytes() {
    const size_t ring = size_t(kWarps) * kStages * kWarpStageBytes;
    const size_t merge = size_t(kWarps) * kRows * (2 + kMergeStride) * sizeof(float);
    return kQBytes + (ring > merge ? ring : merge);
  }
};

// n / d and n % d for 0 <= n < 2^31, d >= 1, by a multiply-high with a reciprocal computed once
// (one division, on the host for the launch's divisors): n * floor((2^32 - 1) / d) / 2^32 lies
// in (n / d - 1/2, n / d], so the estimate is the quotient or one less, and one step corrects it.
// A division by a run-time value is about 20 instructions; the decode kernel took 12 of them per
// thread before its first key tile (SASS).
struct Divisor {
  int d;
  uint32_t rcp;
  __host__ __device__ __forceinline__ explicit Divisor(int d_) : d(d_), rcp(0xffffffffu / uint32_t(d_)) {}
  __device__ __forceinline__ int div(int n) const {
    int rem;
    return div(n, rem);
  }
  __device__ __forceinline__ int div(int n, int& rem) const {
    int q = int(__umulhi(uint32_t(n), rcp)), r = n - q * d;
    if (r >= d) ++q, r -= d;
    rem = r;
    return q;
  }
};

// Packed row r of K/V head hk: query token r / group, query head hk * group + r % group.
struct PackedRow {
  int token, head;
};
struct RowMap {
  Divisor group;
  int rows;  // group * seqlen_q
  __device__ __forceinline__ PackedRow at(int hk, int r) const {
    int rem;
    const int token = group.div(r, rem);
    return PackedRow{token, hk * group.d + rem};
  }
  __device__ __forceinline__ int token(int r) const { return at(0, r).token; }
};

// cp.async.wait_group n for a run-time n in [0, kMax].
template <int kMax>
__device__ __forceinline__ void cp_async_wait_n(int n) {
  if constexpr (kMax > 0) {
    if (n < kMax) return cp_async_wait_n<kMax - 1>(n);
  }
  cp_async_wait<kMax>();
}

// Partial results of split s, fp32: out[s][row][d], then lse[s][row], row = (b * seqlen_q + i) * heads_q + h.
__device__ __forceinline__ int64_t partial_row(const FwdParams& p, int b, int i, int h) {
  return (int64_t(b) * p.seqlen_q + i) * p.heads_q + h;
}

// kVec consecutive floats from a kVec * 4-byte aligned address, in one load that bypasses L1
// (the partial results were written by other CTAs of the running grid).
template <int kVec>
__device__ __forceinline__ void load_floats_cg(const float* src, float (&v)[kVec]) {
  if constexpr (kVec == 4) {
    const float4 x = __ldcg(reinterpret_cast<const float4*>(src));
    v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
  } else if constexpr (kVec == 2) {
    const float2 x = __ldcg(reinterpret_cast<const float2*>(src));
    v[0] = x.x, v[1] = x.y;
  } else {
    v[0] = __ldcg(src);
  }
}

// Merges the splits of output row (b, i, h), by one warp: out = sum_s w_s o_s / sum_s w_s,
// w_s = exp(lse_s - max). The lanes read the splits' lse in parallel and keep their weights in
// `weights` (shared memory, kMaxSplits), so the partial outputs are then read with several loads
// in flight: a chain of one dependent read per split costs an L2 latency each.
template <typename T, int kHeadDim>
__device__ __forceinline__ void merge_row(const FwdParams& p, const Sequence& seq, int b, int i, int h, int splits,
                                          float* weights, int lane) {
  using Traits = DtypeTraits<T>;
  const int64_t rows = int64_t(p.batch) * p.seqlen_q * p.heads_q;
  const int64_t row = partial_row(p, b, i, h);
  const float* split_lse = p.workspace + int64_t(splits) * rows * kHeadDim;
  float m = -INFINITY;
  for (int s = lane; s < splits; s += 32) m = fmaxf(m, __ldcg(split_lse + s * rows + row));
#pragma unroll
  for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  float wsum = 0.f;
  for (int s = lane; s < splits; s += 32) {
    const float lse = __ldcg(split_lse + s * rows + row);
    const float w = lse == -INFINITY ? 0.f : __expf(lse - m);  // m is finite when any lse is
    weights[s] = w;
    wsum += w;
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) wsum += __shfl_xor_sync(0xffffffffu, wsum, off);
  __syncwarp();

  // Each lane owns kVec consecutive columns of every 32 * kVec: 16-byte loads for d = 128, 256.
  constexpr int kCols = kHeadDim / 32;
  constexpr int kVec = kCols % 4 == 0 ? 4 : kCols % 2 == 0 ? 2 : 1;
  float acc[kCols] = {};
#pragma unroll 4
  for (int s = 0; s < splits; ++s) {
    const float w = weights[s];
    const float* po = p.workspace + (s * rows + row) * kHeadDim + lane * kVec;
#pragma unroll
    for (int c = 0; c < kCols / kVec; ++c) {
      float part[kVec];
      load_floats_cg<kVec>(po + c * 32 * kVec, part);
#pragma unroll
      for (int e = 0; e < kVec; ++e) acc[c * kVec + e] += w * part[e];
    }
  }
  __syncwarp();  // `weights` is reused for the warp's next row
  const float inv = wsum > 0.f ? 1.f / wsum : 0.f;
  T* o = static_cast<T*>(p.out) + seq.o_offset + int64_t(i) * p.o_row_stride + int64_t(h) * p.o_head_stride + lane * kVec;
#pragma unroll
  for (int c = 0; c < kCols / kVec; ++c)
#pragma unroll
    for (int e = 0; e < kVec; ++e) o[c * 32 * kVec + e] = Traits::from_float(acc[c * kVec + e] * inv);
  if (lane == 0 && p.lse != nullptr) {
    p.lse[seq.lse_offset + int64_t(h) * p.lse_head_stride + i] = wsum > 0.f ? m + __logf(wsum) : -INFINITY;
  }
}

// Attends the packed query rows [row_block * kRows, +kRows) of (sequence b, K/V head hk) to
// chunk `split` of `splits` of their keys: with one split it writes out and lse, else the
// partial result of the split, and the last of the item's splits to finish merges them all.
// Run by the whole CTA; also the decode path of the FA2 kernel's short sequences
// (fa2/fwd_kernel.cuh, one split). group: heads_q / heads_k. lead: tiles each warp keeps in
// flight, 1 to S::kStages - 1.
template <typename T, typename S, KvMode kMode>
__device__ __forceinline__ void decode_item(const FwdParams& p, const Sequence& seq, unsigned char* smem_raw, int b,
                                            int hk, int row_block, int split, const Divisor& split_count,
                                            const Divisor& group, bool evict_first, int lead) {
  using Traits = DtypeTraits<T>;
  using Rows = typename S::Rows;
  constexpr int kD = S::kHeadDim, kStride = S::kStride, kMT = S::kMTiles;
  constexpr int kStages = S::kStages, kDT = S::kDTiles, kCPR = S::kChunksPerRow;
  // A warp's tiles: keys [first_key + t * kStep, + 16).
  constexpr int kStep = kWarps * kKeys;

  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sRing = sQ + S::kRows * kStride;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int seqlen_q = seq.seqlen_q;
  const int splits = split_count.d;
  const RowMap map{group, group.d * seqlen_q};
  const int r0 = row_block * S::kRows;  // first packed row of this item
  const int r_end = min(r0 + S::kRows, map.rows);
  const Mask mask(p, seq);
  // Keys any row of the item may see, cut into equal 16-key-aligned chunks per split.
  const int tok_lo = map.token(r0), tok_hi = map.token(r_end - 1) + 1;
  const int key_begin = mask.key_begin(tok_lo);
  const int key_end = mask.key_end(tok_hi);
  const int span = max(key_end - key_begin, 0);
  const int chunk = (split_count.div(span + splits - 1) + kKeys - 1) / kKeys * kKeys;
  const int k_lo = key_begin + split * chunk;
  const int k_hi = min(k_lo + chunk, key_end);

  // Q rows of the item (zero-filled padding rows).
  {
    const T* q_seq = static_cast<const T*>(p.q) + seq.q_offset;
    constexpr int kQChunks = S::kRows * kCPR;
#pragma unroll
    for (int c0 = 0; c0 < kQChunks; c0 += S::kThreads) {
      const int c = c0 + tid;
      if (kQChunks % S::kThreads == 0 || c < kQChunks) {
        const int r = c / kCPR, col = (c % kCPR) * 8;
        const PackedRow row = map.at(hk, r0 + r);  // past the rows: zero-filled, not read
        const T* src = q_seq + int64_t(row.token) * p.q_row_stride + int64_t(row.head) * p.q_head_stride + col;
        cp_async_16(smem_addr(sQ + Rows::offset(r, col / 8)), src, r0 + r < map.rows);
      }
    }
    cp_async_commit();
  }

  const T* k_head = static_cast<const T*>(p.k) + int64_t(hk) * p.k_head_stride;
  const T* v_head = static_cast<const T*>(p.v) + int64_t(hk) * p.v_head_stride;
  T* ring = sRing + warp * kStages * 2 * kKeys * kStride;
  const int first_key = k_lo + warp * kKeys;
  const int n_tiles = first_key < k_hi ? (k_hi - first_key + kStep - 1) / kStep : 0;
  // Every K/V byte is read once (launch.cuh); a policy value, not an L2Hint (ptx.cuh).
  const uint64_t policy = evict_first ? l2_evict_first() : l2_evict_normal();

  auto load_tile = [&](int t) {
    const int n0 = first_key + t * kStep;
    T* sK = ring + (t % kStages) * 2 * kKeys * kStride;
    T* sV = sK + kKeys * kStride;
    int valid_rows = min(k_hi - n0, kKeys);  // >= 1: tile t starts before k_hi
    if constexpr (kMode != KvMode::kPagedRow && 32 % kCPR == 0) {
      // Rows evenly spaced (a contiguous cache, or a tile inside one page): one address per lane
      // plus constant steps. A per-row loop took 56 % more instructions per tile at page 16 than
      // contiguous (SASS of the d=128 loop: 1024 vs 655), and paged decode with pages in memory
      // order was 3-8 % slower than the same bytes read as a dense cache.
      int64_t k_off = seq.k_offset + int64_t(n0) * p.k_row_stride, v_off = seq.v_offset + int64_t(n0) * p.v_row_stride;
      if constexpr (kMode == KvMode::kPagedTile) {
        int block, row;
        paged_position(p, seq, b, n0, block, row);
        if (block < 0) valid_rows = 0, block = 0;
        k_off = int64_t(block) * p.k_batch_stride + int64_t(row) * p.k_row_stride;
        v_off = int64_t(block) * p.v_batch_stride + int64_t(row) * p.v_row_stride;
      }
      copy_rows<kKeys, 32, kD, Rows, kKvPrefetch, false>(k_head + k_off, p.k_row_stride, valid_rows, sK, lane, policy);
      copy_rows<kKeys, 32, kD, Rows, kKvPrefetch, false>(v_head + v_off, p.v_row_stride, valid_rows, sV, lane, policy);
    } else {
      // Rows one by one: pages not a multiple of the tile (or left padding), or rows whose chunks
      // do not split evenly over a warp (d = 96, 160, 192, 224). Paged rows are looked up once per
      // lane (lane r % kKeys holds row r's block and row in its page) and passed round by shuffles.
      // Looked up per chunk, page 1 was 12-18 % slower than the dense cache at b16-b64, 8k keys;
      // now 4-5 % (benchmarks/results/h100/split_kv_paged_row_ab.json).
      int my_block = 0, my_row = 0;
      if constexpr (kMode == KvMode::kPagedTile) {
        paged_position(p, seq, b, n0, my_block, my_row);
      } else if constexpr (kMode == KvMode::kPagedRow) {
        paged_position(p, seq, b, n0 + min(lane % kKeys, valid_rows - 1), my_block, my_row);
      }
#pragma unroll 4
      for (int i = 0; i < kKeys * kCPR / 32; ++i) {
        const int c = lane + i * 32, r = c / kCPR, col = (c % kCPR) * 8;
        bool valid = r < valid_rows;
        int64_t k_off, v_off;
        if constexpr (kMode == KvMode::kContiguous) {
          k_off = seq.k_offset + int64_t(n0 + r) * p.k_row_stride;
          v_off = seq.v_offset + int64_t(n0 + r) * p.v_row_stride;
        } else {
          int block = my_block, row = my_row + r;
          if constexpr (kMode == KvMode::kPagedRow) {
            block = __shfl_sync(0xffffffffu, my_block, r);
            row = __shfl_sync(0xffffffffu, my_row, r);
          }
          valid = valid && block >= 0;
          k_off = int64_t(block) * p.k_batch_stride + int64_t(row) * p.k_row_stride;
          v_off = int64_t(block) * p.v_batch_stride + int64_t(row) * p.v_row_stride;
        }
        const int dst = Rows::offset(r, col / 8);
        cp_async_16<kKvPrefetch>(smem_addr(sK + dst), k_head + (valid ? k_off + col : 0), valid, policy);
        cp_async_16<kKvPrefetch>(smem_addr(sV + dst), v_head + (valid ? v_off + col : 0), valid, policy);
      }
    }
  };
  // One commit group per tile (empty past the last): group t holds tile t.
#pragma unroll
  for (int t = 0; t < kStages - 1; ++t) {
    if (t < lead) {
      if (t < n_tiles) load_tile(t);
      cp_async_commit();
    }
  }
  cp_async_wait_n<kStages - 1>(lead);  // the Q group, committed first, has landed
  __syncthreads();

  const ScoreMod mod(p);
  const int g = lane / 4, t4 = lane % 4;

  // Per packed row handled by this thread (rows g and g + 8 of each m-tile): its query token and
  // ALiBi slope in units of the raw scores.
  int row_token[kMT][2];
  float row_slope[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const PackedRow row = map.at(hk, min(r0 + mt * 16 + g + half * 8, map.rows - 1));
      row_token[mt][half] = row.token;
      row_slope[mt][half] = mod.slope(p, b, row.head);
    }

  // ldmatrix_x4 rows and chunks as in the FA2 kernel (fa2/fwd_kernel.cuh): Q (m-tile mt, k-step
  // ks) and V (d pair dp) read row lane % 16 at chunk lane / 16 of the step's pair; K (k-step ks)
  // row ldmatrix_k_row(lane) at chunk (lane / 8) % 2 (common/tile_copy.cuh).
  const auto cols = Rows::columns(lane % 16, lane / 16);
  const int k_row = ldmatrix_k_row(lane);
  const uint32_t k_first = Rows::columns(k_row, (lane / 8) % 2).first;
  auto row_addr = [&](const T* tile) { return smem_addr(tile + (lane % 16) * kStride) + cols.first; };
  const uint32_t q_row_addr = row_addr(sQ);

  // Q fragments: loaded once when they fit in registers, else per k-step from shared memory.
  uint32_t q_frag[S::kQInRegisters ? kMT : 1][S::kQInRegisters ? kD / 16 : 1][4];
  auto q_fragment = [&](int mt, int ks, uint32_t(&a)[4]) {
    ldmatrix_x4(a, q_row_addr + uint32_t(mt * 16 * kStride * 2) + Rows::column(cols, ks));
  };
  if constexpr (S::kQInRegisters) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int ks = 0; ks < kD / 16; ++ks) q_fragment(mt, ks, q_frag[mt][ks]);
  }

  float acc_o[kMT][kDT][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_o[mt][dt][e] = 0.f;
  OnlineSoftmax<T, kMT, 2> softmax;
  softmax.init();

  for (int t = 0; t < n_tiles; ++t) {
    if (t + lead < n_tiles) load_tile(t + lead);
    cp_async_commit();
    cp_async_wait_n<kStages - 1>(lead);
    __syncwarp();
    const T* sK = ring + (t % kStages) * 2 * kKeys * kStride;
    const uint32_t k_row_addr = smem_addr(sK + k_row * kStride) + k_first, v_row_addr = row_addr(sK + kKeys * kStride);
    const int n0 = first_key + t * kStep;

    float s[kMT][2][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      uint32_t bk[4];
      ldmatrix_x4(bk, k_row_addr + Rows::column(cols, ks));
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        if constexpr (S::kQInRegisters) {
          Traits::mma(s[mt][0], q_frag[mt][ks], bk[0], bk[1]);
          Traits::mma(s[mt][1], q_frag[mt][ks], bk[2], bk[3]);
        } else {
          uint32_t a[4];
          q_fragment(mt, ks, a);
          Traits::mma(s[mt][0], a, bk[0], bk[1]);
          Traits::mma(s[mt][1], a, bk[2], bk[3]);
        }
      }
    }

    // softcap, ALiBi, mask (per element: the packed rows are different query tokens and heads);
    // the mask pass is skipped when every key of the tile is visible to every token of the item.
    // fn(score, m-tile, row half, key index)
    auto for_each_score = [&](auto&& fn) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) fn(s[mt][nt][e], mt, e / 2, n0 + nt * 8 + 2 * t4 + (e % 2));
    };
    if (mod.has_softcap || mod.has_alibi) {
      for_each_score([&](float& x, int mt, int half, int j) {
        if (mod.has_softcap) x = mod.softcapped(x);
        if (mod.has_alibi) x -= row_slope[mt][half] * fabsf(float(row_token[mt][half] + mask.shift - j));
      });
    }
    if (n0 + kKeys > k_hi || !mask.all_visible(tok_lo, tok_hi, n0, n0 + kKeys)) {
      for_each_score([&](float& x, int mt, int half, int j) {
        if (j >= k_hi || !mask.visible(row_token[mt][half], j)) x = -INFINITY;
      });
    }
    uint32_t p_frag[kMT][2][2];
    softmax.update(s, p_frag, acc_o, mod.scale_log2);
#pragma unroll
    for (int dp = 0; dp < kDT / 2; ++dp) {
      uint32_t bv[4];
      ldmatrix_x4_trans(bv, v_row_addr + Rows::column(cols, dp));
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        uint32_t a[4];
        p_fragment(p_frag, mt, 0, a);
        Traits::mma(acc_o[mt][2 * dp], a, bv[0], bv[1]);
        Traits::mma(acc_o[mt][2 * dp + 1], a, bv[2], bv[3]);
      }
    }
    __syncwarp();  // the ring slot is refilled by the next iteration's prefetch
  }
  cp_async_wait<0>();

  const int64_t rows_total = int64_t(p.batch) * p.seqlen_q * p.heads_q;
  float* split_lse = p.workspace + int64_t(splits) * rows_total * kD;

  __syncthreads();  // every warp is done with the ring: reuse it for the merge

  // Merge the warps: each publishes its row max / sum, rescales its O to the CTA-wide row max
  // and stores it in its own slice; the slices are summed while writing.
  float* sMax = reinterpret_cast<float*>(sRing);  // [warps][rows]
  float* sSum = sMax + kWarps * S::kRows;           // [warps][rows]
  float* sO = sSum + kWarps * S::kRows;             // [warps][rows][kMergeStride]
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float sum = softmax.total(mt, half);
      if (t4 == 0) {
        const int r = mt * 16 + g + half * 8;
        sMax[warp * S::kRows + r] = softmax.row_max[mt][half];
        sSum[warp * S::kRows + r] = sum;
      }
    }
  __syncthreads();
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      if (mt * 16 + half * 8 >= r_end - r0) continue;  // 8 padding rows (uniform): never read
      const int r = mt * 16 + g + half * 8;
      float m_all = -INFINITY;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) m_all = fmaxf(m_all, sMax[w * S::kRows + r]);
      const float own = softmax.row_max[mt][half];
      const float w_scale = own == -INFINITY ? 0.f : fast_exp2((own - m_all) * mod.scale_log2);
      float* dst = sO + (warp * S::kRows + r) * S::kMergeStride + 2 * t4;
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt) {
        *reinterpret_cast<float2*>(dst + dt * 8) =
            make_float2(acc_o[mt][dt][2 * half] * w_scale, acc_o[mt][dt][2 * half + 1] * w_scale);
      }
    }
  __syncthreads();

  // Normalise and write the item's rows: the output (one split) or this split's partial output
  // and lse.
  for (int c = tid; c < (r_end - r0) * (kD / 2); c += S::kThreads) {
    const int r = c / (kD / 2), col = (c % (kD / 2)) * 2, pr = r0 + r;
    float m_all = -INFINITY, l_all = 0.f;
    for (int w = 0; w < kWarps; ++w) m_all = fmaxf(m_all, sMax[w * S::kRows + r]);
    for (int w = 0; w < kWarps; ++w) {
      const float mw = sMax[w * S::kRows + r];
      if (mw != -INFINITY) l_all += sSum[w * S::kRows + r] * fast_exp2((mw - m_all) * mod.scale_log2);
    }
    const float inv = l_all > 0.f ? 1.f / l_all : 0.f;
    float o0 = 0.f, o1 = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float2 part = *reinterpret_cast<const float2*>(sO + (w * S::kRows + r) * S::kMergeStride + col);
      o0 += part.x;
      o1 += part.y;
    }
    o0 *= inv;
    o1 *= inv;
    const float lse = l_all > 0.f ? m_all * mod.scale + __logf(l_all) : -INFINITY;
    const PackedRow row = map.at(hk, pr);
    const int i = row.token, h = row.head;
    if (splits == 1) {
      T* o = static_cast<T*>(p.out) + seq.o_offset + int64_t(i) * p.o_row_stride + int64_t(h) * p.o_head_stride;
      *reinterpret_cast<uint32_t*>(o + col) = Traits::pack(o0, o1);
      if (col == 0 && p.lse != nullptr) p.lse[seq.lse_offset + int64_t(h) * p.lse_head_stride + i] = lse;
    } else {
      const int64_t row = partial_row(p, b, i, h);
      *reinterpret_cast<float2*>(p.workspace + (int64_t(split) * rows_total + row) * kD + col) = make_float2(o0, o1);
      if (col == 0) split_lse[int64_t(split) * rows_total + row] = lse;
    }
  }
  if (splits == 1) return;

  // Count this split as done: the item's counter (p.counters, zero before the launch) reaches
  // splits - 1 in the last one, which resets it to zero (atomicInc wraps) and merges the item's
  // rows -- their partial results are all in the workspace by then.
  int* s_last = reinterpret_cast<int*>(sQ);  // Q's shared memory is free after the key loop
  __threadfence();  // this CTA's partial result is visible to the whole GPU before it is counted
  __syncthreads();
  if (tid == 0) {
    const int item = (b * p.heads_k + hk) * ((map.rows + S::kRows - 1) / S::kRows) + row_block;
    *s_last = atomicInc(p.counters + item, unsigned(splits - 1)) == unsigned(splits - 1);
  }
  __syncthreads();  // also: every warp is done with the merge area, the weights may go there
  if (!*s_last) return;
  __threadfence();
  float* weights = reinterpret_cast<float*>(sRing) + warp * kMaxSplits;
  for (int pr = r0 + warp; pr < r_end; pr += kWarps) {
    const PackedRow row = map.at(hk, pr);
    merge_row<T, kD>(p, seq, b, row.token, row.head, splits, weights, lane);
  }
}

// The launch's divisors, computed on the host.
struct LaunchDivisors {
  Divisor row_blocks, heads_k, splits, group;
};

template <typename T, typename S, KvMode kMode>
__global__ void __launch_bounds__(S::kThreads, S::kCtasPerSm)
    split_kv_kernel(const __grid_constant__ FwdParams p, LaunchDivisors div, bool evict_first, int lead) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
#ifdef TFI_DECODE_CTA_TIMES
  uint64_t t0;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t0));
#endif
  int row_block, hk;
  const int bhk = div.row_blocks.div(int(blockIdx.x), row_block);
  const int b = div.heads_k.div(bhk, hk);
  decode_item<T, S, kMode>(p, load_sequence(p, b), smem_raw, b, hk, row_block, blockIdx.y, div.splits, div.group,
                           evict_first, lead);
#ifdef TFI_DECODE_CTA_TIMES
  // Diagnostic builds only (benchmarks/cta_times.py): one split, seqlen_q 1, a group of at least 4
  // query heads; the CTA's start (ns), then its duration (ns) with its SM in the top 16 bits,
  // overwrite the lse of its first 4 query heads.
  __syncthreads();
  if (threadIdx.x == 0) {
    uint64_t t1, smid;
    asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t1));
    asm volatile("{ .reg .u32 s; mov.u32 s, %%smid; cvt.u64.u32 %0, s; }\n" : "=l"(smid));
    uint64_t* dst = reinterpret_cast<uint64_t*>(p.lse + int64_t(b) * p.heads_q + int64_t(hk) * div.group.d);
    dst[0] = t0;
    dst[1] = (t1 - t0) | (smid << 48);
  }
#endif
}

}  // namespace torch_flashinfer::decode
