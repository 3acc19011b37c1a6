// Decode (seqlen_q <= a few tokens): split-KV flash-decoding, GQA-packed.
//
// One CTA per (sequence, K/V head, block of packed query rows, key split). The query rows of a
// K/V head -- every query head of its group times every query token -- are packed as the rows
// of one mma tile, so each K/V byte is read once per group. The sequence's visible keys are cut
// into `num_splits` equal chunks on the device (from cache_seqlens, so a 32k-slot cache holding
// 100 tokens costs 100 tokens, and the launch depends on no device value). Inside a CTA each
// warp streams its own 16-key tiles through a private cp.async ring with no block-wide barrier;
// the warps' partial softmax states are merged through shared memory at the end. With one split
// the CTA writes the output; with several it writes a normalised partial output and its lse,
// and combine_kernel merges the splits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/online_softmax.cuh"
#include "common/ptx.cuh"
#include "common/sequence.cuh"
#include "torch_flashinfer/params.h"

namespace torch_flashinfer::decode {


template <int kHeadDim_>
struct Shape {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kKeys = 16;  // keys per warp tile
  // Packed query rows per CTA: up to 64, bounded so the O accumulators (kMTiles * d / 2 per
  // thread) stay within 128 registers.
  static constexpr int kMTiles = kHeadDim <= 64 ? 4 : kHeadDim <= 128 ? 2 : 1;
  static constexpr int kRows = 16 * kMTiles;
  static constexpr int kStride = kHeadDim + 8;  // padded smem row (elements): conflict-free ldmatrix
  // Ring depth per warp: as many 16-key K+V tiles as fit next to Q in 110 KB (two CTAs per SM up
  // to d=128), 2 to 4. Deeper rings keep more bytes in flight per warp: a split reads only a few
  // hundred keys, so its time is mostly load latency.
  static constexpr int kTileBytes = kWarps * 2 * kKeys * kStride * 2;
  static constexpr int kQBytes = kRows * kStride * 2;
  static constexpr int kFit = (110 * 1024 - kQBytes) / kTileBytes;
  static constexpr int kStages = kFit < 2 ? 2 : kFit > 4 ? 4 : kFit;
  static constexpr int kMergeStride = kHeadDim + 8;  // fp32 row of the warp merge (8-byte stores)
  static constexpr int kDTiles = kHeadDim / 8;
  static constexpr int kChunksPerRow = kHeadDim / 8;

  template <typename T>
  static constexpr size_t smem_bytes() {
    const size_t ring = size_t(kWarps) * kStages * 2 * kKeys * kStride * sizeof(T);
    const size_t q = size_t(kRows) * kStride * sizeof(T);
    const size_t merge = size_t(kWarps) * kRows * (2 + kMergeStride) * sizeof(float);
    return q + (ring > merge ? ring : merge);
  }
};

// Packed row r of K/V head hk: query token r / group, query head hk * group + r % group.
struct RowMap {
  int group, rows;  // rows = group * seqlen_q
  __device__ __forceinline__ int token(int r) const { return r / group; }
  __device__ __forceinline__ int head(int hk, int r) const { return hk * group + r % group; }
};

template <typename T, typename S, KvMode kMode>
__global__ void __launch_bounds__(S::kThreads) split_kv_kernel(const __grid_constant__ FwdParams p, int row_blocks) {
  using Traits = DtypeTraits<T>;
  constexpr int kD = S::kHeadDim, kStride = S::kStride, kMT = S::kMTiles, kKeys = S::kKeys;
  constexpr int kStages = S::kStages, kDT = S::kDTiles, kCPR = S::kChunksPerRow;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sRing = sQ + S::kRows * kStride;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int split = blockIdx.y;
  const int row_block = blockIdx.x % row_blocks;
  const int bhk = blockIdx.x / row_blocks;
  const int b = bhk / p.heads_k, hk = bhk % p.heads_k;
  const RowMap map{p.heads_q / p.heads_k, (p.heads_q / p.heads_k) * p.seqlen_q};
  const int r0 = row_block * S::kRows;  // first packed row of this CTA
  const int r_end = min(r0 + S::kRows, map.rows);

  const Sequence seq = load_sequence(p, b);
  const Mask mask(p, seq);
  // Keys any row of this CTA may see, cut into equal 16-key-aligned chunks per split.
  const int key_begin = mask.key_begin(map.token(r0));
  const int key_end = mask.key_end(map.token(r_end - 1) + 1);
  const int span = max(key_end - key_begin, 0);
  const int chunk = ((span + p.num_splits - 1) / p.num_splits + kKeys - 1) / kKeys * kKeys;
  const int k_lo = key_begin + split * chunk;
  const int k_hi = min(k_lo + chunk, key_end);

  // Q rows of this CTA (zero-filled padding rows).
  const T* q_seq = static_cast<const T*>(p.q) + seq.q_offset;
  for (int c = tid; c < S::kRows * kCPR; c += S::kThreads) {
    const int r = c / kCPR, col = (c % kCPR) * 8, pr = r0 + r;
    const bool valid = pr < map.rows;
    const T* src = q_seq + (valid ? int64_t(map.token(pr)) * p.q_row_stride +
                                        int64_t(map.head(hk, pr)) * p.q_head_stride + col : 0);
    cp_async_16(smem_addr(sQ + r * kStride + col), src, valid);
  }
  cp_async_commit();

  const T* k_head = static_cast<const T*>(p.k) + int64_t(hk) * p.k_head_stride;
  const T* v_head = static_cast<const T*>(p.v) + int64_t(hk) * p.v_head_stride;
  T* ring = sRing + warp * kStages * 2 * kKeys * kStride;
  // This warp's tiles: keys [k_lo + (warp + kWarps * t) * 16, +16) for t = 0, 1, ...
  const int first_key = k_lo + warp * kKeys;
  const int n_tiles = first_key < k_hi ? (k_hi - first_key + S::kWarps * kKeys - 1) / (S::kWarps * kKeys) : 0;

  auto load_tile = [&](int t) {
    const int n0 = first_key + t * S::kWarps * kKeys;
    T* sK = ring + (t % kStages) * 2 * kKeys * kStride;
    T* sV = sK + kKeys * kStride;
#pragma unroll
    for (int i = 0; i < kKeys * kCPR / 32; ++i) {
      const int c = lane + i * 32, r = c / kCPR, col = (c % kCPR) * 8, j = n0 + r;
      bool valid = j < k_hi;
      int64_t k_off = 0, v_off = 0;
      if (valid) {
        if constexpr (kMode == KvMode::kContiguous) {
          k_off = seq.k_offset + int64_t(j) * p.k_row_stride;
          v_off = seq.v_offset + int64_t(j) * p.v_row_stride;
        } else {
          int block, row;
          paged_position(p, seq, b, j, block, row);
          valid = block >= 0;
          k_off = int64_t(block) * p.k_batch_stride + int64_t(row) * p.k_row_stride;
          v_off = int64_t(block) * p.v_batch_stride + int64_t(row) * p.v_row_stride;
        }
      }
      cp_async_16(smem_addr(sK + r * kStride + col), k_head + (valid ? k_off + col : 0), valid);
      cp_async_16(smem_addr(sV + r * kStride + col), v_head + (valid ? v_off + col : 0), valid);
    }
  };
#pragma unroll
  for (int t = 0; t < kStages - 1; ++t) {
    if (t < n_tiles) load_tile(t);
    cp_async_commit();
  }
  cp_async_wait<kStages - 1>();  // the Q group, committed first, has landed
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
      const int pr = min(r0 + mt * 16 + g + half * 8, map.rows - 1);
      row_token[mt][half] = map.token(pr);
      row_slope[mt][half] = mod.slope(p, b, map.head(hk, pr));
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
    if (t + kStages - 1 < n_tiles) load_tile(t + kStages - 1);
    cp_async_commit();
    cp_async_wait<kStages - 1>();
    __syncwarp();
    const T* sK = ring + (t % kStages) * 2 * kKeys * kStride;
    const T* sV = sK + kKeys * kStride;
    const int n0 = first_key + t * S::kWarps * kKeys;

    float s[kMT][2][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.f;
    // Partly unrolled: this loop is nowhere near the bottleneck (memory is), and full unrolling
    // lets the compiler hoist every K/Q fragment of the tile into registers.
#pragma unroll 2
    for (int ks = 0; ks < kD / 16; ++ks) {
      uint32_t bk[4];
      const int key = (lane % 8) + (lane / 16) * 8;
      ldmatrix_x4(bk, smem_addr(sK + key * kStride + ks * 16 + ((lane / 8) % 2) * 8));
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        uint32_t a[4];
        ldmatrix_x4(a, smem_addr(sQ + (mt * 16 + lane % 16) * kStride + ks * 16 + (lane / 16) * 8));
        Traits::mma(s[mt][0], a, bk[0], bk[1]);
        Traits::mma(s[mt][1], a, bk[2], bk[3]);
      }
    }

    // softcap, ALiBi, mask (per element: the packed rows are different query tokens and heads)
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = row_token[mt][e / 2];
          const int j = n0 + nt * 8 + 2 * t4 + (e % 2);
          float x = s[mt][nt][e];
          if (mod.has_softcap) x = mod.softcapped(x);
          if (mod.has_alibi) x -= row_slope[mt][e / 2] * fabsf(float(i + mask.shift - j));
          if (j >= k_hi || !mask.visible(i, j)) x = -INFINITY;
          s[mt][nt][e] = x;
        }
    uint32_t p_frag[kMT][2][2];
    softmax.update(s, p_frag, acc_o, mod.scale_log2);
#pragma unroll
    for (int dp = 0; dp < kDT / 2; ++dp) {
      uint32_t bv[4];
      const int key = (lane % 8) + ((lane / 8) % 2) * 8;
      ldmatrix_x4_trans(bv, smem_addr(sV + key * kStride + dp * 16 + (lane / 16) * 8));
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
  __syncthreads();  // every warp is done with the ring: reuse it for the merge

  // Merge the warps: each publishes its row max / sum, rescales its O to the CTA-wide row max
  // and stores it in its own slice; the slices are summed while writing.
  float* sMax = reinterpret_cast<float*>(sRing);  // [warps][rows]
  float* sSum = sMax + S::kWarps * S::kRows;        // [warps][rows]
  float* sO = sSum + S::kWarps * S::kRows;          // [warps][rows][kMergeStride]
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
      const int r = mt * 16 + g + half * 8;
      float m_all = -INFINITY;
#pragma unroll
      for (int w = 0; w < S::kWarps; ++w) m_all = fmaxf(m_all, sMax[w * S::kRows + r]);
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

  // Normalise and write: the output (one split) or this split's partial output and lse.
  for (int c = tid; c < S::kRows * (kD / 2); c += S::kThreads) {
    const int r = c / (kD / 2), col = (c % (kD / 2)) * 2, pr = r0 + r;
    if (pr >= r_end) continue;
    float m_all = -INFINITY, l_all = 0.f;
    for (int w = 0; w < S::kWarps; ++w) m_all = fmaxf(m_all, sMax[w * S::kRows + r]);
    for (int w = 0; w < S::kWarps; ++w) {
      const float mw = sMax[w * S::kRows + r];
      if (mw != -INFINITY) l_all += sSum[w * S::kRows + r] * fast_exp2((mw - m_all) * mod.scale_log2);
    }
    const float inv = l_all > 0.f ? 1.f / l_all : 0.f;
    float o0 = 0.f, o1 = 0.f;
#pragma unroll
    for (int w = 0; w < S::kWarps; ++w) {
      const float2 part = *reinterpret_cast<const float2*>(sO + (w * S::kRows + r) * S::kMergeStride + col);
      o0 += part.x;
      o1 += part.y;
    }
    o0 *= inv;
    o1 *= inv;
    const float lse = l_all > 0.f ? m_all * mod.scale + __logf(l_all) : -INFINITY;
    const int i = map.token(pr), h = map.head(hk, pr);
    if (p.num_splits == 1) {
      T* o = static_cast<T*>(p.out) + seq.o_offset + int64_t(i) * p.o_row_stride + int64_t(h) * p.o_head_stride;
      *reinterpret_cast<uint32_t*>(o + col) = Traits::pack(o0, o1);
      if (col == 0) p.lse[seq.lse_offset + int64_t(h) * p.lse_head_stride + i] = lse;
    } else {
      // Partial results in the workspace, fp32: out[split][row][d], then lse[split][row],
      // row = (b * seqlen_q + i) * heads_q + h.
      const int64_t row = (int64_t(b) * p.seqlen_q + i) * p.heads_q + h;
      const int64_t rows = int64_t(p.batch) * p.seqlen_q * p.heads_q;
      float* po = p.workspace + (int64_t(split) * rows + row) * kD + col;
      po[0] = o0;
      po[1] = o1;
      if (col == 0) p.workspace[int64_t(p.num_splits) * rows * kD + int64_t(split) * rows + row] = lse;
    }
  }
}

// Merge the splits of every output row: out = sum_s w_s o_s / sum_s w_s, w_s = exp(lse_s - max).
// One warp per (b, i, h) row; each lane owns head_dim / 32 columns.
template <typename T, int kHeadDim>
__global__ void __launch_bounds__(128) combine_kernel(const __grid_constant__ FwdParams p) {
  using Traits = DtypeTraits<T>;
  // Launched as a programmatic dependent of the split kernel: it may start before that grid
  // ends, so wait here until the partial results are visible.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
  const int64_t rows = int64_t(p.batch) * p.seqlen_q * p.heads_q;
  const int64_t row = int64_t(blockIdx.x) * 4 + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = threadIdx.x % 32;
  const float* split_lse = p.workspace + int64_t(p.num_splits) * rows * kHeadDim;
  float m = -INFINITY;
  for (int s = 0; s < p.num_splits; ++s) m = fmaxf(m, split_lse[s * rows + row]);
  constexpr int kCols = kHeadDim / 32;
  float acc[kCols] = {};
  float wsum = 0.f;
  if (m != -INFINITY) {
    for (int s = 0; s < p.num_splits; ++s) {
      const float lse = split_lse[s * rows + row];
      if (lse == -INFINITY) continue;
      const float w = __expf(lse - m);
      wsum += w;
      const float* po = p.workspace + (s * rows + row) * kHeadDim;
#pragma unroll
      for (int c = 0; c < kCols; ++c) acc[c] += w * po[lane + 32 * c];
    }
  }
  const float inv = wsum > 0.f ? 1.f / wsum : 0.f;
  const int h = int(row % p.heads_q);
  const int i = int((row / p.heads_q) % p.seqlen_q);
  const int b = int(row / (int64_t(p.heads_q) * p.seqlen_q));
  const int64_t o_off = int64_t(b) * p.o_batch_stride + int64_t(i) * p.o_row_stride + int64_t(h) * p.o_head_stride;
  T* o = static_cast<T*>(p.out) + o_off;
#pragma unroll
  for (int c = 0; c < kCols; ++c) o[lane + 32 * c] = Traits::from_float(acc[c] * inv);
  if (lane == 0) {
    p.lse[int64_t(b) * p.lse_batch_stride + int64_t(h) * p.lse_head_stride + i] =
        wsum > 0.f ? m + __logf(wsum) : -INFINITY;
  }
}

}  // namespace torch_flashinfer::decode
