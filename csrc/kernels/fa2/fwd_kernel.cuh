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

// Work item `item` of a launch: query tile m_block of query head h of sequence b. Within a head,
// the last (for causal: heaviest) query tiles come first.
struct ItemCoords {
  int b, h, m_block, slot;  // slot: the item's index within its head (0 = the last query tile)
};
__device__ __forceinline__ ItemCoords item_coords(const FwdParams& p, unsigned item, int num_m_blocks) {
  const int bh = item / unsigned(num_m_blocks), slot = item % unsigned(num_m_blocks);
  return ItemCoords{bh / p.heads_q, bh % p.heads_q, num_m_blocks - 1 - slot, slot};
}

// A prefill item's query rows [m0, m_end) and key tiles [first_tile(), last_tile()].
template <typename Shape>
struct QueryTile {
  const Sequence& seq;
  Mask mask;
  int b, h, hk, m0, m_end;

  __device__ __forceinline__ QueryTile(const FwdParams& p, const ItemCoords& c, const Sequence& s)
      : seq(s), mask(p, s), b(c.b), h(c.h), hk(c.h / (p.heads_q / p.heads_k)), m0(c.m_block * Shape::kBlockM),
        m_end(min(m0 + Shape::kBlockM, s.seqlen_q)) {}
  __device__ __forceinline__ int first_tile() const { return mask.key_begin(m0) / Shape::kBlockN; }
  __device__ __forceinline__ int last_tile() const {
    const int key_begin = mask.key_begin(m0), key_end = mask.key_end(m_end);
    return key_end > key_begin ? (key_end - 1) / Shape::kBlockN : key_begin / Shape::kBlockN - 1;
  }
};

// Whether a sequence of this many queries takes the decode path of an instantiation.
template <typename Shape, bool kDecodePath>
__device__ __forceinline__ bool takes_decode_path(int seqlen_q) {
  return kDecodePath && seqlen_q <= kDecodeMaxSeqlenQ;
}

// Shared-memory tiles of the prefill path: Q, then K stages, then V stages.
template <typename T, typename Shape>
struct PrefillSmem {
  T* q;
  T* k;
  T* v;
  __device__ __forceinline__ explicit PrefillSmem(unsigned char* raw)
      : q(reinterpret_cast<T*>(raw)), k(q + Shape::kBlockM * Shape::kStride), v(k + Shape::kStages * Shape::kBlockN * Shape::kStride) {}
  __device__ __forceinline__ T* k_stage(int stage) const { return k + stage * Shape::kBlockN * Shape::kStride; }
  __device__ __forceinline__ T* v_stage(int stage) const { return v + stage * Shape::kBlockN * Shape::kStride; }
};

// The first copies of a prefill item, in two groups (the caller commits each): group 0 is Q with
// the first step's K (two stages: and V) into `stage`; group 1 what the loop's first step would
// issue (two stages: the second tile, into the other stage; one stage: the first V), so that a
// short sequence's copies are all in flight at once.
template <typename T, typename Shape, KvMode kMode>
struct FirstCopies {
  const FwdParams& p;
  const QueryTile<Shape>& t;
  const PrefillSmem<T, Shape>& sm;
  L2Hint kv_hint;
  int tid;
  const T* k_base;
  const T* v_base;

  __device__ __forceinline__ FirstCopies(const FwdParams& p_, const QueryTile<Shape>& t_, const PrefillSmem<T, Shape>& sm_,
                                         L2Hint hint, int tid_)
      : p(p_), t(t_), sm(sm_), kv_hint(hint), tid(tid_),
        k_base(static_cast<const T*>(p_.k) + int64_t(t_.hk) * p_.k_head_stride),
        v_base(static_cast<const T*>(p_.v) + int64_t(t_.hk) * p_.v_head_stride) {}

  template <bool kK, bool kV>
  __device__ __forceinline__ void kv(int tile, int stage) const {
    load_kv_tile<Shape::kBlockN, Shape::kThreads, Shape::kHeadDim, kMode, kK, kV, typename Shape::Smem>(
        p, t.seq, t.b, k_base, v_base, tile * Shape::kBlockN, sm.k_stage(stage), sm.v_stage(stage), tid, kv_hint);
  }
  // Group 0 (Q, then the first step's tiles) and group 1, for key tiles [first, last].
  __device__ __forceinline__ void q() const {
    const L2Hint read_once{true, kv_hint.policy};
    load_q_tile<Shape::kBlockM, Shape::kThreads, Shape::kHeadDim, typename Shape::Smem>(
        p, static_cast<const T*>(p.q) + t.seq.q_offset + int64_t(t.h) * p.q_head_stride, t.seq.seqlen_q, t.m0, sm.q,
        tid, read_once);
  }
  __device__ __forceinline__ void group0_kv(int stage, int first, int last) const {
    if (last >= first) {
      if constexpr (Shape::kStages == 2) kv<true, true>(last, stage);
      else kv<true, false>(last, stage);
    }
  }
  __device__ __forceinline__ void group1(int stage, int first, int last) const {
    if (last >= first) {
      if constexpr (Shape::kStages == 2) {
        if (last > first) kv<true, true>(last - 1, stage ^ 1);
      } else {
        kv<false, true>(last, stage);
      }
    }
  }
};

// Parts of the next item's first copies (persistent launches, fwd_item).
constexpr int kNextQ = 1, kNextKv0 = 2, kNextKv1 = 4;

// L2 policies: a Q tile is read by its CTA only; K/V tiles by every query tile of every query
// head of the group, so they stay in L2 unless one CTA is their only reader. Lines read once are
// evicted first: they replace each other rather than what other CTAs still need.
__device__ __forceinline__ L2Hint kv_l2_hint(const FwdParams& p, int num_m_blocks) {
  return L2Hint{num_m_blocks == 1 && p.heads_q == p.heads_k, l2_evict_first()};
}

// One work item of the kernel below. `it` counts the K/V tiles this CTA has consumed (the stage
// of a tile is it % 2 with two stages); `ready`: the item's first copy groups were issued by the
// previous item (persistent launches), else this item issues them. Returns whether it issued
// the first copy groups of item `next` (persistent launches, -1: none).
template <typename T, typename Shape, KvMode kMode, bool kDecodePath, bool kPersistent>
__device__ __forceinline__ bool fwd_item(const FwdParams& p, int num_m_blocks, int item, int next, bool ready, int& it,
                                         unsigned char* smem_raw) {
  using Traits = DtypeTraits<T>;
  constexpr int kM = Shape::kBlockM, kN = Shape::kBlockN, kD = Shape::kHeadDim, kStride = Shape::kStride;
  using Smem = typename Shape::Smem;
  constexpr int kMT = Shape::kMTiles, kNT = Shape::kNTiles, kDT = Shape::kDTiles;

  const PrefillSmem<T, Shape> sm(smem_raw);
  T* sQ = sm.q;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const ItemCoords c = item_coords(p, item, num_m_blocks);
  const Sequence seq = load_sequence(p, c.b);
  if (takes_decode_path<Shape, kDecodePath>(seq.seqlen_q)) {
    // Row block rb of the K/V head's packed rows (group * seqlen_q of them, at most group
    // blocks of 16) goes to the item of query head hk * group + rb % group, slot rb / group.
    const int group = p.heads_q / p.heads_k;
    const int row_blocks = (group * seq.seqlen_q + 15) / 16;
    const int rb = c.slot * group + c.h % group;
    if (rb < row_blocks) {
      decode::decode_item<T, typename Shape::DecodeShape, kMode>(p, seq, smem_raw, c.b, c.h / group, rb, 0, 1, true);
      if constexpr (kPersistent) __syncthreads();  // every warp is done with the decode ring
    }
    return false;
  }
  if (c.m_block * kM >= seq.seqlen_q) return false;
  const QueryTile<Shape> t(p, c, seq);
  const Mask& mask = t.mask;
  const int m0 = t.m0, m_end = t.m_end, h = t.h;

  const L2Hint kv_hint = kv_l2_hint(p, num_m_blocks);
  const FirstCopies<T, Shape, kMode> copies(p, t, sm, kv_hint, tid);
  auto load_kv = [&](auto which_k, auto which_v, int tile, int stage) {
    copies.template kv<decltype(which_k)::value, decltype(which_v)::value>(tile, stage);
  };
  using Yes = std::true_type;
  using No = std::false_type;
  const int it0 = it;
  if (!ready) copies.q();
  const int first_tile = t.first_tile(), last_tile = t.last_tile();
  if (!ready) {
    copies.group0_kv(it0 % Shape::kStages, first_tile, last_tile);
    cp_async_commit();
    copies.group1(it0 % Shape::kStages, first_tile, last_tile);
    cp_async_commit();
  }

  // Persistent launches: item `next`'s first copies, when it is a prefill item, as one commit
  // group of the parts in kParts (kNextQ, kNextKv0: its first tile, into `stage`, the stage it
  // starts with; kNextKv1: its second tile, into the other). Each part goes out as soon as its
  // buffer is free, at a point where the key loop's scores are not live: the first tile at the
  // top of the last step (the other stage is free), Q after the last P V, the second tile after
  // the epilogue has staged O through that stage. The next item's coordinates are worked out at
  // each point (kept across the key loop they would take its registers). Returns whether the next
  // item is a prefill item.
  auto next_copies = [&](auto parts, int stage) {
    bool prefill = false;
    if constexpr (kPersistent) {
      static_assert(Shape::kStages == 2, "persistent launches prefetch into the free K/V stage");
      constexpr int kParts = decltype(parts)::value;
      if (next >= 0) {
        const ItemCoords nc = item_coords(p, next, num_m_blocks);
        const Sequence nseq = load_sequence(p, nc.b);
        prefill = !takes_decode_path<Shape, kDecodePath>(nseq.seqlen_q) && nc.m_block * kM < nseq.seqlen_q;
        if (prefill) {
          const QueryTile<Shape> nt(p, nc, nseq);
          const FirstCopies<T, Shape, kMode> ncopies(p, nt, sm, kv_hint, tid);
          if constexpr ((kParts & kNextQ) != 0) ncopies.q();
          const int first = nt.first_tile(), last = nt.last_tile();
          if constexpr ((kParts & kNextKv0) != 0) ncopies.group0_kv(stage, first, last);
          if constexpr ((kParts & kNextKv1) != 0) ncopies.group1(stage, first, last);
        }
      }
      cp_async_commit();
    }
    return prefill;
  };
  using NextKv0 = std::integral_constant<int, kNextKv0>;

  const ScoreMod mod(p);
  const float slope = mod.slope(p, c.b, h);

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

  for (int tile = last_tile; tile >= first_tile; --tile, ++it) {
    const int stage = Shape::kStages == 2 ? it & 1 : 0;
    // Wait for this tile's K (two stages: and V): after the first step, the only group in flight.
    // One barrier makes every thread's copies visible and tells that every warp is done with the
    // previous tile, whose buffer (two stages: the other stage; one stage: V) the next copy
    // overwrites. The first step's copy was issued with Q.
    if (it == it0) {
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

    if constexpr (kPersistent) {
      if (tile == first_tile) next_copies(NextKv0{}, stage ^ 1);  // the other stage is free now
    }

    const T* sKs = sm.k_stage(stage);
    const T* sVs = sm.v_stage(stage);
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
  // O is staged through shared memory for 16-byte stores: through this warp's own Q rows, or
  // (persistent launches, whose Q buffer holds the next item's rows by now) through the K and V
  // rows of the stage after the next item's first: the last tile's stage, or with no key tile
  // one the next item does not start with.
  T* s_out = sQ;
  if constexpr (kPersistent) {
    static_assert(kM <= 2 * kN, "O fits one stage's K and V rows");
    // With no key tile this item's Q copies may still be landing, and its first tile goes too.
    if (last_tile < first_tile) cp_async_wait<0>();
    __syncthreads();  // every warp is done with Q K^T and P V
    if (last_tile < first_tile) {
      next_copies(std::integral_constant<int, kNextQ | kNextKv0>{}, it & 1);
    } else {
      next_copies(std::integral_constant<int, kNextQ>{}, it & 1);
    }
    s_out = sm.k_stage((it + 1) & 1);
  } else {
    cp_async_wait<0>();
    __syncthreads();  // with no key tile, the Q copies (by every thread) may still be landing
  }
  // O row r of the tile: row r of s_out, the persistent staging's rows past kN in the V stage.
  auto staged = [&](int row, int chunk) -> T* {
    if constexpr (kPersistent) {
      if (row >= kN) return sm.v_stage((it + 1) & 1) + Smem::offset(row - kN, chunk);
    }
    return s_out + Smem::offset(row, chunk);
  };

  // Epilogue: normalise, write lse, stage O, 16-byte stores.
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
        *reinterpret_cast<uint32_t*>(staged(row, dt) + 2 * t4) =
            Traits::pack(acc_o[mt][dt][2 * half] * inv, acc_o[mt][dt][2 * half + 1] * inv);
      }
      if (t4 == 0 && m0 + row < seq.seqlen_q) {
        lse_base[m0 + row] = sum > 0.f ? softmax.row_max[mt][half] * mod.scale + __logf(sum) : -INFINITY;
      }
    }
  }
  __syncwarp();
  T* o_base = static_cast<T*>(p.out) + seq.o_offset + int64_t(h) * p.o_head_stride;
  constexpr int kWarpRows = kMT * 16;
#pragma unroll
  for (int cidx = lane; cidx < kWarpRows * Shape::kChunksPerRow; cidx += 32) {
    const int row = warp_row0 + cidx / Shape::kChunksPerRow;
    const int col = (cidx % Shape::kChunksPerRow) * 8;
    if (m0 + row < seq.seqlen_q) {
      *reinterpret_cast<uint4*>(o_base + int64_t(m0 + row) * p.o_row_stride + col) =
          *reinterpret_cast<const uint4*>(staged(row, col / 8));
    }
  }
  if constexpr (kPersistent) {
    __syncthreads();  // every warp has read its staged rows: the stage may take the next item's tile
    return next_copies(std::integral_constant<int, kNextKv1>{}, it & 1);
  }
  return false;
}

// kDecodePath: whether sequences of at most kDecodeMaxSeqlenQ queries take the decode path (the
// instantiation for packed or short q; without it the prefill loop keeps every register).
// kPersistent: gridDim.x CTAs take items blockIdx.x, + gridDim.x, ... and each issues the next
// item's first copies during its own last step and epilogue (launch.cuh says when).
template <typename T, typename Shape, KvMode kMode, bool kDecodePath, bool kPersistent>
__global__ void __launch_bounds__(Shape::kThreads) fwd_kernel(const __grid_constant__ FwdParams p, int num_m_blocks) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  int it = 0;
  if constexpr (kPersistent) {
    const int items = num_m_blocks * p.batch * p.heads_q;
    bool ready = false;
    for (int item = blockIdx.x; item < items; item += gridDim.x) {
      const int next = item + int(gridDim.x) < items ? item + int(gridDim.x) : -1;
      ready = fwd_item<T, Shape, kMode, kDecodePath, true>(p, num_m_blocks, item, next, ready, it, smem_raw);
    }
  } else {
    fwd_item<T, Shape, kMode, kDecodePath, false>(p, num_m_blocks, blockIdx.x, -1, false, it, smem_raw);
  }
}

}  // namespace torch_flashinfer::fa2
