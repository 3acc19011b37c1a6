// FlashAttention-2 forward for sm80+: one CTA per (query tile, head, sequence) streams the
// sequence's key/value tiles through shared memory (cp.async) and keeps an online softmax with
// fp32 accumulators in registers (mma.sync m16n8k16).
//
// Two pipelines (tile_config.h picks one per head dim): two stages, each a K and a V tile, the
// next tile's copy in flight during the whole step (one barrier per step); or one K and one V
// buffer (a third less shared memory at d >= 192, so two CTAs fit an SM), V's copy in flight
// during Q K^T and the next K's during softmax and P V (two barriers per step).
//
// Shared-memory tiles are rows padded by 16 bytes, or unpadded rows with swizzled 16-byte chunks
// (tile_copy.cuh, chosen per head dim in tile_config.h): either way the 8 rows an ldmatrix phase
// reads sit in 8 different bank groups.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common/online_softmax.cuh"
#include "common/ptx.cuh"
#include "common/sequence.cuh"
#include "common/tile_copy.cuh"
#include "decode/split_kv_kernel.cuh"
#include "fa2/tile_config.h"
#include "torch_flashinfer/params.h"

namespace torch_flashinfer::fa2 {

template <int kHeadDim_, int kBlockM_, int kBlockN_, int kNWarps_, int kStages_, bool kSwizzle_>
struct TileShape {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;  // queries per CTA
  static constexpr int kBlockN = kBlockN_;  // keys per main-loop step
  static constexpr int kNWarps = kNWarps_;
  static constexpr int kThreads = kNWarps * 32;
  static constexpr int kMTiles = kBlockM / (16 * kNWarps);  // 16-row mma tiles per warp
  static constexpr int kNTiles = kBlockN / 8;               // 8-key score tiles
  static constexpr int kDTiles = kHeadDim / 8;              // 8-dim output tiles
  using Smem = std::conditional_t<kSwizzle_, SwizzledRows<kHeadDim>, PaddedRows<kHeadDim>>;  // smem rows
  static constexpr int kStride = Smem::kRowElems;           // elements per smem row
  static constexpr bool kSwizzle = kSwizzle_;
  static constexpr int kStages = kStages_;                   // K/V buffers: 2 = double, 1 = one each
  static constexpr int kChunksPerRow = kHeadDim / 8;        // 16-byte chunks
  static_assert(kMTiles >= 1 && kBlockM % (16 * kNWarps) == 0, "each warp owns whole 16-row tiles");
  static_assert(kBlockN % 16 == 0 && kHeadDim % 16 == 0, "mma k-steps are 16 wide");
  static_assert(kStages == 1 || kStages == 2, "one or two K/V stages");
  // Sequences of at most kDecodeMaxSeqlenQ queries take the decode path: one 16-row m-tile of
  // GQA-packed rows whose keys the CTA's warps split (see decode_item). It runs on four warps,
  // so shapes with eight (tile_config.h: d = 224) have none.
  using DecodeShape = decode::Shape<kHeadDim, 1, 2>;
  static constexpr bool kHasDecodePath = DecodeShape::kThreads == kThreads;

  // A launch that may run decode rows (packed q included) also needs the decode ring (at d=256
  // 136 KB, one CTA per H100 SM); a prefill-only launch sizes for its tiles alone.
  template <typename T>
  static constexpr size_t smem_bytes(bool decode_path) {
    const size_t tiles = size_t(kBlockM + 2 * kStages * kBlockN) * kStride * sizeof(T);
    return decode_path && kHasDecodePath && DecodeShape::smem_bytes() > tiles ? DecodeShape::smem_bytes() : tiles;
  }
};

// The query tile of CTA `block`: (sequence, head) pair bh, and its level, the place of the tile
// from the last (the heaviest where causal). CTAs run windows of `window` consecutive pairs (the
// first window holds the remainder, so the last ones are full); within a window every pair's last
// tile first, then every pair's next-to-last, and so on: the longest tiles start first and the
// launch ends on short ones, while the window's K/V stay in L2 (launch.cuh sizes it). window = 1:
// pair by pair, each pair's tiles from the last.
__device__ __forceinline__ void tile_order(int block, int num_m_blocks, int pairs, int window, int& bh, int& level) {
  const int first = pairs % window;
  int base = 0, size = first;
  if (block >= first * num_m_blocks) {
    block -= first * num_m_blocks;
    base = first + block / (window * num_m_blocks) * window;
    block %= window * num_m_blocks;
    size = window;
  }
  bh = base + block % size;
  level = block / size;
}

// kDecodePath: whether sequences of at most kDecodeMaxSeqlenQ queries take the decode path (the
// instantiation for packed or short q; without it the prefill loop keeps every register).
template <typename T, typename Shape, KvMode kMode, bool kDecodePath>
__global__ void __launch_bounds__(Shape::kThreads) fwd_kernel(const __grid_constant__ FwdParams p, int num_m_blocks,
                                                              int window) {
  using Traits = DtypeTraits<T>;
  constexpr int kM = Shape::kBlockM, kN = Shape::kBlockN, kD = Shape::kHeadDim, kStride = Shape::kStride;
  using Smem = typename Shape::Smem;
  constexpr int kMT = Shape::kMTiles, kNT = Shape::kNTiles, kDT = Shape::kDTiles;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + kM * kStride;
  T* sV = sK + Shape::kStages * kN * kStride;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  int bh, level;
  tile_order(int(blockIdx.x), num_m_blocks, p.batch * p.heads_q, window, bh, level);
  const int m_block = num_m_blocks - 1 - level;
  const int b = bh / p.heads_q, h = bh % p.heads_q;
  const int hk = h / (p.heads_q / p.heads_k);

  const Sequence seq = load_sequence(p, b);
  if (kDecodePath && seq.seqlen_q <= kDecodeMaxSeqlenQ) {
    // Row block rb of the K/V head's packed rows (group * seqlen_q of them, at most group
    // blocks of 16) goes to the CTA of query head hk * group + rb % group, m-block rb / group.
    const int group = p.heads_q / p.heads_k;
    const int row_blocks = (group * seq.seqlen_q + 15) / 16;
    const int rb = level * group + h % group;
    if (rb < row_blocks) {
      decode::decode_item<T, typename Shape::DecodeShape, kMode>(p, seq, smem_raw, b, hk, rb, 0, decode::Divisor(1),
                                                                 decode::Divisor(group), true,
                                                                 Shape::DecodeShape::kStages - 1);
    }
    return;
  }
  const int m0 = m_block * kM;
  if (m0 >= seq.seqlen_q) return;
  const int m_end = min(m0 + kM, seq.seqlen_q);
  const Mask mask(p, seq);

  const T* q_base = static_cast<const T*>(p.q) + seq.q_offset + int64_t(h) * p.q_head_stride;
  const T* k_base = static_cast<const T*>(p.k) + int64_t(hk) * p.k_head_stride;
  const T* v_base = static_cast<const T*>(p.v) + int64_t(hk) * p.v_head_stride;

  // L2 policies: a Q tile is read by this CTA only; K/V tiles by every query tile of every query
  // head of the group, so they stay in L2 unless this CTA is their only reader. Lines read once
  // are evicted first: they replace each other rather than what other CTAs still need.
  const L2Hint read_once{true, l2_evict_first()};
  const L2Hint kv_hint{num_m_blocks == 1 && p.heads_q == p.heads_k, read_once.policy};
  load_q_tile<kM, Shape::kThreads, kD, Smem>(p, q_base, seq.seqlen_q, m0, sQ, tid, read_once);
  auto load_kv = [&](auto which_k, auto which_v, int tile, int stage) {
    load_kv_tile<kN, Shape::kThreads, kD, kMode, decltype(which_k)::value, decltype(which_v)::value, Smem>(
        p, seq, b, k_base, v_base, tile * kN, sK + stage * kN * kStride, sV + stage * kN * kStride, tid, kv_hint);
  };
  using Yes = std::true_type;
  using No = std::false_type;

  const int key_begin = mask.key_begin(m0), key_end = mask.key_end(m_end);
  const int first_tile = key_begin / kN;
  const int last_tile = key_end > key_begin ? (key_end - 1) / kN : first_tile - 1;
  // Copy groups: Q with the first step's K (two stages: and V), then what the loop's first step
  // would issue (two stages: the second tile; one stage: the first V), so that a short sequence's
  // copies are all in flight at once.
  if (last_tile >= first_tile) {
    if constexpr (Shape::kStages == 2) load_kv(Yes{}, Yes{}, last_tile, 0);
    else load_kv(Yes{}, No{}, last_tile, 0);
  }
  cp_async_commit();
  if (last_tile >= first_tile) {
    if constexpr (Shape::kStages == 2) {
      if (last_tile > first_tile) load_kv(Yes{}, Yes{}, last_tile - 1, 1);
    } else {
      load_kv(No{}, Yes{}, last_tile, 0);
    }
  }
  cp_async_commit();

  const ScoreMod mod(p);
  const float slope = mod.slope(p, b, h);

  float acc_o[kMT][kDT][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_o[mt][dt][e] = 0.f;
  OnlineSoftmax<T, kMT, kNT> softmax;
  softmax.init();

  const int g = lane / 4, t4 = lane % 4;
  const int warp_row0 = warp * kMT * 16;  // first row (within the tile) of this warp
  // ldmatrix_x4 addresses of this lane for Q (m-tile mt, k-step ks), K (key block np of a stage,
  // k-step ks) and V (k-step ks, d pair dp). Q and V: the lane reads row lane % 16 at chunk
  // lane / 16 of the step's pair; K: row ldmatrix_k_row(lane) at chunk (lane / 8) % 2
  // (common/tile_copy.cuh says why). Swizzled rows: one swizzle mask for both, and the first
  // column goes into the lane's row address.
  const int k_row = ldmatrix_k_row(lane);
  const auto cols = [&] {
    if constexpr (Shape::kSwizzle) {
      return Smem::columns(lane % 16, lane / 16);
    } else {
      return 0;
    }
  }();
  const uint32_t k_first = [&] {
    if constexpr (Shape::kSwizzle) {
      return Smem::columns(k_row, (lane / 8) % 2).first;
    } else {
      return 0u;
    }
  }();
  // Swizzled: the lane's row addresses (plus its first column) in Q and in a K or V stage.
  auto row_addr = [&](const T* tile) -> uint32_t {
    if constexpr (Shape::kSwizzle) {
      return smem_addr(tile + (lane % 16) * kStride) + cols.first;
    } else {
      return 0;
    }
  };
  auto k_row_addr_of = [&](const T* tile) -> uint32_t {
    if constexpr (Shape::kSwizzle) {
      return smem_addr(tile + k_row * kStride) + k_first;
    } else {
      return 0;
    }
  };
  const uint32_t q_row_addr = row_addr(sQ + warp_row0 * kStride);
  auto q_frag = [&](int mt, int ks) -> uint32_t {
    if constexpr (Shape::kSwizzle) {
      return q_row_addr + uint32_t(mt * 16 * kStride * 2) + Smem::column(cols, ks);
    } else {
      return smem_addr(sQ + (warp_row0 + mt * 16 + lane % 16) * kStride + ks * 16 + (lane / 16) * 8);
    }
  };
  auto k_frag = [&](const T* sKs, uint32_t k_row_addr, int np, int ks) -> uint32_t {
    if constexpr (Shape::kSwizzle) {
      return k_row_addr + uint32_t(np * 16 * kStride * 2) + Smem::column(cols, ks);
    } else {
      return smem_addr(sKs + (np * 16 + k_row) * kStride + ks * 16 + ((lane / 8) % 2) * 8);
    }
  };
  auto v_frag = [&](const T* sVs, uint32_t v_row_addr, int ks, int dp) -> uint32_t {
    if constexpr (Shape::kSwizzle) {
      return v_row_addr + uint32_t(ks * 16 * kStride * 2) + Smem::column(cols, dp);
    } else {
      return smem_addr(sVs + (ks * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kStride + dp * 16 + (lane / 16) * 8);
    }
  };

  for (int tile = last_tile, it = 0; tile >= first_tile; --tile, ++it) {
    const int stage = Shape::kStages == 2 ? it & 1 : 0;
    // Wait for this tile's K (two stages: and V): after the first step, the only group in flight.
    // One barrier makes every thread's copies visible and tells that every warp is done with the
    // previous tile, whose buffer (two stages: the other stage; one stage: V) the next copy
    // overwrites. The first step's copy was issued with Q.
    if (it == 0) {
      cp_async_wait<1>();
      __syncthreads();
    } else {
      cp_async_wait<0>();
      __syncthreads();
      if constexpr (Shape::kStages == 2) {
        if (tile > first_tile) load_kv(Yes{}, Yes{}, tile - 1, stage ^ 1);
      } else {
        load_kv(No{}, Yes{}, tile, 0);
      }
      cp_async_commit();
    }

    const T* sKs = sK + stage * kN * kStride;
    const T* sVs = sV + stage * kN * kStride;
    const uint32_t k_row_addr = k_row_addr_of(sKs), v_row_addr = row_addr(sVs);
    const int n0 = tile * kN;

    float s[kMT][kNT][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.f;

    // S = Q K^T
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      uint32_t a[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        ldmatrix_x4(a[mt], q_frag(mt, ks));
      }
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        uint32_t bk[4];
        ldmatrix_x4(bk, k_frag(sKs, k_row_addr, np, ks));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          Traits::mma(s[mt][2 * np], a[mt], bk[0], bk[1]);
          Traits::mma(s[mt][2 * np + 1], a[mt], bk[2], bk[3]);
        }
      }
    }

    if constexpr (Shape::kStages == 1) {
      cp_async_wait<0>();  // this tile's V
      __syncthreads();     // visible to every warp, and every warp is done with K: the next K may land
      if (tile > first_tile) load_kv(Yes{}, No{}, tile - 1, 0);
      cp_async_commit();
    }

    // softcap, ALiBi, mask: each a separate pass behind a branch that is uniform over the CTA
    auto for_each_score = [&](auto&& fn) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            fn(s[mt][nt][e], m0 + warp_row0 + mt * 16 + g + (e / 2) * 8, n0 + nt * 8 + 2 * t4 + (e % 2));
    };
    if (mod.has_softcap) for_each_score([&](float& x, int, int) { x = mod.softcapped(x); });
    if (mod.has_alibi) for_each_score([&](float& x, int i, int j) { x -= slope * fabsf(float(i + mask.shift - j)); });
    if (!mask.all_visible(m0, m_end, n0, n0 + kN)) {
      for_each_score([&](float& x, int i, int j) {
        if (!mask.visible(i, j)) x = -INFINITY;
      });
    }

    uint32_t p_frag[kMT][kNT][2];
    softmax.update(s, p_frag, acc_o, mod.scale_log2);

    // O += P V: the score accumulator layout of two 8-key tiles is the A fragment of one k-step
#pragma unroll
    for (int ks = 0; ks < kN / 16; ++ks) {
#pragma unroll
      for (int dp = 0; dp < kDT / 2; ++dp) {
        uint32_t bv[4];
        ldmatrix_x4_trans(bv, v_frag(sVs, v_row_addr, ks, dp));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          uint32_t a[4];
          p_fragment(p_frag, mt, ks, a);
          Traits::mma(acc_o[mt][2 * dp], a, bv[0], bv[1]);
          Traits::mma(acc_o[mt][2 * dp + 1], a, bv[2], bv[3]);
        }
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // with no key tile, the Q copies (by every thread) may still be landing

  // Epilogue: normalise, write lse, stage O through this warp's own Q rows for 16-byte stores.
  float* lse_base = p.lse + seq.lse_offset + int64_t(h) * p.lse_head_stride;
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float sum = softmax.total(mt, half);
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      const int row = warp_row0 + mt * 16 + g + half * 8;
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt) {
        *reinterpret_cast<uint32_t*>(sQ + Smem::offset(row, dt) + 2 * t4) =
            Traits::pack(acc_o[mt][dt][2 * half] * inv, acc_o[mt][dt][2 * half + 1] * inv);
      }
      if (p.lse != nullptr && t4 == 0 && m0 + row < seq.seqlen_q) {
        lse_base[m0 + row] = sum > 0.f ? softmax.row_max[mt][half] * mod.scale + __logf(sum) : -INFINITY;
      }
    }
  }
  __syncwarp();
  T* o_base = static_cast<T*>(p.out) + seq.o_offset + int64_t(h) * p.o_head_stride;
  constexpr int kWarpRows = kMT * 16;
#pragma unroll
  for (int c = lane; c < kWarpRows * Shape::kChunksPerRow; c += 32) {
    const int row = warp_row0 + c / Shape::kChunksPerRow;
    const int col = (c % Shape::kChunksPerRow) * 8;
    if (m0 + row < seq.seqlen_q) {
      *reinterpret_cast<uint4*>(o_base + int64_t(m0 + row) * p.o_row_stride + col) =
          *reinterpret_cast<const uint4*>(sQ + Smem::offset(row, col / 8));
    }
  }
}

}  // namespace torch_flashinfer::fa2
