// FlashAttention-3 style forward for Hopper (sm_90a): CTAs run work items (a 128-query tile of one
// head of one sequence; several per CTA when they outnumber the SMs), warp-specialised.
// Warpgroup 0 copies: Q tiles (one or two buffers) and K/V tiles by TMA into a
// two-stage ring of shared-memory buffers, each tracked by a "full" mbarrier (bytes landed) and an
// "empty" one (every math warp done reading). Warpgroups 1 and 2 compute, each on 64 query rows:
// S = Q K^T and O += P V with wgmma (Q, K and V read from shared memory, P from registers),
// and between them the online softmax of the FA2 kernel in fp32 registers. Only the copy
// warpgroup reads sequence metadata from global memory: it posts each item it copies (ItemSlot)
// beside the item's Q buffer, and the math warpgroups read it there once that Q has landed.
//
// Tiles are stored as TMA's 128- or 64-byte swizzle writes them (TileRows), which is the layout
// wgmma's descriptors read. Tiles TMA cannot copy as whole boxes -- a sequence's last, partial key
// tile (zero-filled past its keys, so stale cache rows never reach P V), and every tile of a
// paged cache whose page neither holds nor divides the key tile (tma_pages_per_tile) -- are copied
// by the whole copy warpgroup with cp.async into the same layout (tile_copy.cuh load_kv_tile).
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common/online_softmax.cuh"
#include "common/ptx.cuh"
#include "common/sequence.cuh"
#include "common/sm90.cuh"
#include "common/tile_copy.cuh"
#include "fa3/tile_config.h"
#include "fa3/wgmma.cuh"
#include "torch_flashinfer/params.h"

namespace torch_flashinfer::fa3 {

// A tile of kRows rows of kHeadDim 2-byte elements in shared memory: the head dims in column
// blocks of one swizzle row each (128 bytes where head_dim is a multiple of 64, else 64), a block
// being kRows rows; 16-byte chunk c of row r sits at chunk c ^ (r % 8) (128-byte swizzle) or
// c ^ ((r / 2) % 4) (64-byte) of its row: the XOR of address bits [4, 7) with bits [7, 10) (64-byte:
// [4, 6) with [7, 9)) that TMA applies on the way in and wgmma undoes on the way out. Blocks start
// on multiples of 8 rows from a 1024-byte boundary, where the pattern repeats.
template <int kHeadDim, int kRows>
struct TileRows {
  static constexpr int kSwizzleBytes = kHeadDim % 64 == 0 ? 128 : 64;
  static constexpr int kBlockCols = kSwizzleBytes / 2;  // head dims per column block
  static constexpr int kColBlocks = kHeadDim / kBlockCols;
  static constexpr int kBlockBytes = kRows * kSwizzleBytes;
  static_assert(kHeadDim % kBlockCols == 0 && kRows % 8 == 0, "whole swizzle atoms (8 rows)");
  // Offset in elements of chunk `chunk` (8 head dims) of row `row`.
  static __device__ __forceinline__ int offset(int row, int chunk) {
    constexpr int kChunks = kSwizzleBytes / 16;
    const int flip = kSwizzleBytes == 128 ? row % 8 : (row / 2) % 4;
    return ((chunk / kChunks) * kBlockBytes + row * kSwizzleBytes + ((chunk % kChunks) ^ flip) * 16) / 2;
  }
  // wgmma descriptors. K-major (rows x head dims, a 16-dim k-step): 8-row groups kSwizzleBytes * 8
  // apart, the leading offset unused (1). MN-major (V's rows as K = keys, N = head dims): column
  // blocks kBlockBytes apart, 8-key groups kSwizzleBytes * 8 apart.
  static __device__ __forceinline__ uint64_t k_major(uint32_t tile, int row0, int k_step) {
    const int col = k_step * 16;
    const uint32_t start = tile + (col / kBlockCols) * kBlockBytes + row0 * kSwizzleBytes + (col % kBlockCols) * 2;
    return sm90::smem_descriptor(start, 16, 8 * kSwizzleBytes, kSwizzleBytes);
  }
  static __device__ __forceinline__ uint64_t mn_major(uint32_t tile, int k_step) {
    return sm90::smem_descriptor(tile + k_step * 16 * kSwizzleBytes, kBlockBytes, 8 * kSwizzleBytes, kSwizzleBytes);
  }
};

// The TMA maps of q, k and v for one call (launch.cuh encodes them; k and v are unused with
// paged caches copied row by row, tma_pages_per_tile = 0). Dims, innermost first: (head_dim,
// rows, heads, batch); packed q/k have batch 1, paged k/v are (head_dim, page rows, heads, blocks).
struct TmaMaps {
  CUtensorMap q, k, v;
};

// Paged caches copied row by row (kv_mode: the page is not a multiple of the key tile) whose pages
// divide the tile and hold whole 8-row swizzle atoms: TMA boxes of one page each, this many per
// tile (0: the copy warpgroup copies such tiles with cp.async). Left padding shifts rows off the
// page boundaries.
__host__ __device__ inline int tma_pages_per_tile(const FwdParams& p, int block_n) {
  const bool boxes = kv_mode(p, block_n) == KvMode::kPagedRow && p.cache_leftpad == nullptr && p.page_size % 8 == 0 &&
                     block_n % p.page_size == 0;
  return boxes ? block_n / p.page_size : 0;
}

template <int kHeadDim_, int kBlockN_, bool kOverlap_ = false, bool kPingPong_ = false>
struct Shape {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = 128;  // queries per CTA: 64 per math warpgroup
  static constexpr int kBlockN = kBlockN_;
  static constexpr bool kOverlap = kOverlap_;    // softmax of a tile beside the P V of the last
  static constexpr bool kPingPong = kPingPong_;  // math warpgroups issue by turns
  static_assert(kOverlap || !kPingPong, "the turns are taken by the overlapped schedule's issue steps");
  static constexpr int kMathWarpgroups = 2;
  static constexpr int kThreads = 128 * (1 + kMathWarpgroups);
  static constexpr int kMathWarps = 4 * kMathWarpgroups;
  using QRows = TileRows<kHeadDim, kBlockM>;
  using KvRows = TileRows<kHeadDim, kBlockN>;
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;
  static constexpr int kKvBytes = kBlockN * kHeadDim * 2;
  // Shared memory of q_buffers Q tiles and `stages` K/V stages, with their barriers (per Q buffer
  // full, empty; per stage K/V full, empty), a work-item slot per Q buffer, the copy warpgroup's
  // two next-item words (kDynamicItems) and 1 KB of slack to align the tiles to 1024 bytes.
  static constexpr int kItemSlotBytes = 128;
  static constexpr int smem_bytes(int q_buffers, int stages) {
    return 1024 + q_buffers * kQBytes + 2 * stages * kKvBytes + 8 * (2 * q_buffers + 4 * stages) +
           q_buffers * kItemSlotBytes + 8;
  }
  static constexpr int kSmemLimit = 227 * 1024;  // one CTA per SM
  // K/V stages: tile_config.h's where they fit beside one Q tile, else 2.
  static constexpr int kStages = smem_bytes(1, kKvStages) <= kSmemLimit ? kKvStages : 2;
  // Q buffers: two where they fit (every head dim but 160, 192 and 256), so a persistent CTA copies
  // the next item's Q while this one's math and epilogue (which stages O through its Q rows) run.
  static constexpr int kQBuffers = smem_bytes(2, kStages) <= kSmemLimit ? 2 : 1;
  static constexpr int kSmemBytes = smem_bytes(kQBuffers, kStages);
  // Registers per thread after the hand-over: 128 x 40 + 256 x 232 <= 64 K (the copy
  // warpgroup copies tiles TMA cannot with a rolled cp.async loop, which needs no more: no spills).
  static constexpr int kCopyRegs = 40;
  static constexpr int kMathRegs = (65536 / 128 - kCopyRegs) / kMathWarpgroups / 8 * 8;
  static constexpr int kHandOverRegs = 128 * (kCopyRegs + kMathWarpgroups * kMathRegs);  // of the CTA
  static_assert(kBlockN % 16 == 0 && kHeadDim % 32 == 0, "wgmma steps of 16 keys, swizzle rows of 32 dims");
  static_assert(kSmemBytes <= kSmemLimit, "one CTA per SM");
};

// One work item: query tile m_block of head h of sequence b, and the key tiles it sees. Both roles
// derive it from the item index alone, so they agree on which items run and how many tiles each has.
struct WorkItem {
  int b, h, hk, m0, m_end;
  Sequence seq;
  int first_tile, last_tile;
  __device__ __forceinline__ int tiles() const { return last_tile - first_tile + 1; }
};

// What the math warpgroups need of an item, as the copy warpgroup posts it; b < 0 ends the CTA.
struct ItemSlot {
  int b, h, m0, m_end, last_tile, tiles, seqlen_q, seqlen_k;
  int64_t o_offset, lse_offset;
};

// The batch index of work item `item` (load_item's order).
__device__ __forceinline__ int item_batch(const FwdParams& p, int item, int num_m_blocks) {
  return item / num_m_blocks / p.heads_q;
}

// Work item `item` of the launch, given its sequence's metadata (load_sequence_meta of its batch).
// False where its query tile starts past the sequence's queries.
template <typename Shape>
__device__ __forceinline__ bool load_item(const FwdParams& p, int item, int num_m_blocks, const SequenceMeta& meta,
                                          WorkItem& w) {
  const int bh = item / num_m_blocks;
  // Within a head, the last (for causal: heaviest) query tiles come first.
  const int m_block = num_m_blocks - 1 - item % num_m_blocks;
  w.b = bh / p.heads_q;
  w.h = bh % p.heads_q;
  w.hk = w.h / (p.heads_q / p.heads_k);
  w.seq = make_sequence(p, w.b, meta);
  w.m0 = m_block * Shape::kBlockM;
  if (w.m0 >= w.seq.seqlen_q) return false;
  w.m_end = min(w.m0 + Shape::kBlockM, w.seq.seqlen_q);
  const Mask mask(p, w.seq);
  const int key_begin = mask.key_begin(w.m0), key_end = mask.key_end(w.m_end);
  w.first_tile = key_begin / Shape::kBlockN;
  w.last_tile = key_end > key_begin ? (key_end - 1) / Shape::kBlockN : w.first_tile - 1;
  return true;
}

// Item k of this CTA (launch.cuh: one CTA per item, or one per SM that then copies an item's first
// tiles during the previous item's math), unless the items after the first come from a counter
// (tile_config.h kDynamicItems, fwd_kernel): items go out in rounds of gridDim.x, CTA c taking the
// c-th of a round and, every other round, the c-th from its end. load_item puts a head's heaviest
// query tiles first, so where the tiles per head divide the grid a plain stride would hand each
// CTA the same tile of every head -- on causal prompts, some CTAs only the longest -- while this
// order pairs the i-th heaviest with the i-th lightest (tile_config.h kReverseRounds: where it
// applies). Past the last item: >= num_items.
__device__ __forceinline__ int cta_item(int k, bool reverse_odd_rounds) {
  const int c = int(blockIdx.x);
  return k * int(gridDim.x) + (reverse_odd_rounds && k % 2 == 1 ? int(gridDim.x) - 1 - c : c);
}

// The K/V ring runs on across a CTA's items: `ring` counts the tiles the CTA has passed through it.
template <typename T, typename Shape, KvMode kMode>
__global__ void __launch_bounds__(Shape::kThreads, 1)
    fwd_kernel(const __grid_constant__ FwdParams p, const __grid_constant__ TmaMaps maps, int num_m_blocks,
               int num_items) {
#if TFI_SM90_ENABLED
  constexpr int kM = Shape::kBlockM, kN = Shape::kBlockN, kD = Shape::kHeadDim, kStages = Shape::kStages;
  using QRows = typename Shape::QRows;
  using KvRows = typename Shape::KvRows;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  T* sQ = reinterpret_cast<T*>(smem);  // kQBuffers tiles; item n uses buffer n % kQBuffers
  T* sK = sQ + Shape::kQBuffers * kM * kD;
  T* sV = sK + kStages * kN * kD;
  const uint32_t bars = smem_addr(sV + kStages * kN * kD);
  constexpr int kQBuffers = Shape::kQBuffers;
  // Item slots after the barriers, one per Q buffer: written before the arrival on the buffer's
  // full barrier, whose phase orders the write before the math warpgroups' read.
  static_assert(sizeof(ItemSlot) <= Shape::kItemSlotBytes, "an item fits its slot");
  ItemSlot* item_slots = reinterpret_cast<ItemSlot*>(reinterpret_cast<unsigned char*>(sV + kStages * kN * kD) +
                                                    8 * (2 * kQBuffers + 4 * kStages));
  // The copy warpgroup's two next-item words (kDynamicItems): item k in word k % 2.
  int* next_items =
      reinterpret_cast<int*>(reinterpret_cast<unsigned char*>(item_slots) + kQBuffers * Shape::kItemSlotBytes);
  auto q_full = [&](int buf) { return bars + 8 * buf; };
  auto q_empty = [&](int buf) { return bars + 8 * (kQBuffers + buf); };
  auto k_full = [&](int stage) { return bars + 8 * (2 * kQBuffers + stage); };
  auto v_full = [&](int stage) { return bars + 8 * (2 * kQBuffers + kStages + stage); };
  auto k_empty = [&](int stage) { return bars + 8 * (2 * kQBuffers + 2 * kStages + stage); };
  auto v_empty = [&](int stage) { return bars + 8 * (2 * kQBuffers + 3 * kStages + stage); };
  // Item n of the CTA: its Q buffer and the parity of that buffer's barriers.
  auto q_buf = [&](int n) { return n % kQBuffers; };
  auto q_parity = [&](int n) { return uint32_t(n / kQBuffers) & 1; };
  // Tile `pos` of the ring: its stage and the parity of that stage's barriers (the copy side
  // waits on the empty barriers with the other parity: a new barrier's previous phase is done).
  auto stage_of = [&](int pos) { return pos % kStages; };
  auto parity_of = [&](int pos) { return uint32_t(pos / kStages) & 1; };

  const int tid = threadIdx.x;
  if (tid == 0) {
    for (int buf = 0; buf < kQBuffers; ++buf) {
      sm90::mbarrier_init(q_full(buf), 1);
      sm90::mbarrier_init(q_empty(buf), Shape::kMathWarps);
    }
    for (int s = 0; s < kStages; ++s) {
      sm90::mbarrier_init(k_full(s), 1);
      sm90::mbarrier_init(v_full(s), 1);
      sm90::mbarrier_init(k_empty(s), Shape::kMathWarps);
      sm90::mbarrier_init(v_empty(s), Shape::kMathWarps);
    }
    sm90::mbarrier_init_fence();
  }
  __syncthreads();

  const bool packed_q = p.cu_seqlens_q != nullptr;
  if (tid < 128) {
    // ---- copy warpgroup ----
    sm90::setmaxnreg_dec<Shape::kCopyRegs>();
    const bool packed_k = p.kv_layout == KvLayout::kVarlen;
    const int pages_per_tile = tma_pages_per_tile(p, kN);
    const L2Hint no_hint{false, 0};
    WorkItem w;
    int n = 0;  // items posted
    const bool reverse = kReverseRounds == 2 || (kReverseRounds == 1 && num_m_blocks > 1);
    // Dynamic items (tile_config.h kDynamicItems, where items outnumber the CTAs): the CTA's first
    // item is blockIdx.x, and each later one is gridDim.x + a ticket. Thread 0 takes the ticket from
    // p.counters[0] as the item before starts, so the atomic's round trip hides behind that item's
    // waits. It passes the item to the warpgroup through shared memory. Tickets below num_items -
    // gridDim.x are items; every CTA stops at its first ticket past them. So num_items tickets are
    // taken in all, and atomicInc wraps the last one to 0, the zero the next launch finds (api.h).
    const bool dynamic = kDynamicItems && num_items > int(gridDim.x);
    uint32_t ticket = 0;
    auto next_item = [&](int k) {
      if (!dynamic) return cta_item(k, reverse);
      if (tid == 0) next_items[k % 2] = int(gridDim.x) + int(ticket);
      // Orders the write before the warpgroup's reads. Item k - 2 used the same word, and every thread
      // read it before it reached item k - 1's barrier.
      sm90::named_barrier_sync(6, 128);
      return next_items[k % 2];
    };
    for (int k = 0, item = cta_item(0, reverse), ring = 0; item < num_items; item = next_item(++k)) {
      if (dynamic && tid == 0) ticket = atomicInc(p.counters, uint32_t(num_items - 1));
      // The item's sequence metadata (cu_seqlens, cache_seqlens) is loaded before the wait for its Q
      // buffer (the wait below then passes at once) and used after it. Waited for in front of the
      // buffer, those loads, queued behind the tiles streaming from DRAM, cost the seed's 100 % hybrid
      // batch 1.4 % (H100: 0.1525 ms, 0.1504 with the metadata computed instead; fa3_meta_lse_ab.json).
      const SequenceMeta meta = load_sequence_meta(p, item_batch(p, item, num_m_blocks));
      if constexpr (kQBuffers > 1) sm90::mbarrier_wait(q_empty(q_buf(n)), q_parity(n) ^ 1);
      if (!load_item<Shape>(p, item, num_m_blocks, meta, w)) continue;
      const T* k_head = static_cast<const T*>(p.k) + int64_t(w.hk) * p.k_head_stride;
      const T* v_head = static_cast<const T*>(p.v) + int64_t(w.hk) * p.v_head_stride;
      // K and V of the item's tile it (from the last down).
      auto copy_tile = [&](int it) {
        const int stage = stage_of(ring + it);
        const uint32_t parity = parity_of(ring + it) ^ 1;
        const int n0 = (w.last_tile - it) * kN;
        // TMA copies whole tiles: one box per column block of a contiguous cache or of a valid page
        // that holds the tile, or one per page of the tile (lane i of each copy warp: page i) when
        // the pages divide it. Anything else goes through cp.async.
        bool tma = n0 + kN <= w.seq.seqlen_k;
        int row = w.seq.k_row0 + n0, batch = packed_k ? 0 : w.b;
        if constexpr (kMode == KvMode::kPagedTile) {
          paged_position(p, w.seq, w.b, n0, batch, row);
          tma = tma && batch >= 0;
        } else if constexpr (kMode == KvMode::kPagedRow) {
          batch = 0;
          if (tma && pages_per_tile > 0 && tid % 32 < pages_per_tile) {
            paged_position(p, w.seq, w.b, n0 + tid % 32 * p.page_size, batch, row);
          }
          tma = pages_per_tile > 0 && __all_sync(0xffffffffu, !tma || batch >= 0) && tma;
        }
        auto copy = [&](auto is_k) {
          constexpr bool kK = decltype(is_k)::value;
          T* dst = (kK ? sK : sV) + stage * kN * kD;
          const uint32_t full = kK ? k_full(stage) : v_full(stage);
          sm90::mbarrier_wait(kK ? k_empty(stage) : v_empty(stage), parity);
          if (tma) {
            if (tid == 0) sm90::mbarrier_arrive_expect_tx(full, Shape::kKvBytes);
            __syncwarp();  // the bytes are expected before any box of them lands
            const int boxes = kMode == KvMode::kPagedRow ? pages_per_tile : 1;
            if (tid < boxes) {
              const uint32_t box = smem_addr(dst) + tid * p.page_size * KvRows::kSwizzleBytes;
#pragma unroll
              for (int cb = 0; cb < KvRows::kColBlocks; ++cb) {
                sm90::tma_load_4d(box + cb * KvRows::kBlockBytes, kK ? &maps.k : &maps.v, full,
                                  cb * KvRows::kBlockCols, row, w.hk, batch);
              }
            }
          } else {
            load_kv_tile<kN, 128, kD, kMode, kK, !kK, KvRows, true>(p, w.seq, w.b, k_head, v_head, n0, dst, dst,
                                                                    tid, no_hint);
            cp_async_commit();
            cp_async_wait<0>();
            sm90::fence_proxy_async();  // the cp.async writes, before wgmma reads them
            sm90::named_barrier_sync(1, 128);
            if (tid == 0) sm90::mbarrier_arrive(full);
          }
        };
        copy(std::true_type{});
        copy(std::false_type{});
      };
      // Q waits until the math warpgroups are done with the item that last used its buffer (whose
      // rows also staged that item's output): with one buffer that is the item still running, so
      // the first K/V tile goes out before it; with two, Q goes first (its wait is above).
      if constexpr (kQBuffers == 1) {
        if (w.tiles() > 0) copy_tile(0);
        sm90::mbarrier_wait(q_empty(q_buf(n)), q_parity(n) ^ 1);
      }
      if (tid == 0) {
        item_slots[q_buf(n)] = ItemSlot{w.b,         w.h,       w.m0,           w.m_end,
                                        w.last_tile, w.tiles(), w.seq.seqlen_q, w.seq.seqlen_k,
                                        w.seq.o_offset, w.seq.lse_offset};
        sm90::mbarrier_arrive_expect_tx(q_full(q_buf(n)), Shape::kQBytes);
        const uint32_t q_dst = smem_addr(sQ + q_buf(n) * kM * kD);
#pragma unroll
        for (int cb = 0; cb < QRows::kColBlocks; ++cb) {
          sm90::tma_load_4d(q_dst + cb * QRows::kBlockBytes, &maps.q, q_full(q_buf(n)), cb * QRows::kBlockCols,
                            packed_q ? int(w.seq.q_row0) + w.m0 : w.m0, w.h, packed_q ? 0 : w.b);
        }
      }
      for (int it = kQBuffers == 1 ? 1 : 0; it < w.tiles(); ++it) copy_tile(it);
      ring += max(w.tiles(), 0);
      ++n;
    }
    sm90::mbarrier_wait(q_empty(q_buf(n)), q_parity(n) ^ 1);
    if (tid == 0) {
      item_slots[q_buf(n)].b = -1;
      sm90::mbarrier_arrive(q_full(q_buf(n)));
    }
    return;
  }

  // ---- math warpgroups ----
  sm90::setmaxnreg_inc<Shape::kMathRegs>();
  constexpr int kNT = kN / 8, kDT = kD / 8;
  const int wg = tid / 128 - 1, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int warp_row0 = wg * 64 + (tid % 128) / 32 * 16;  // first row (within the tile) of this warp
  const uint32_t k_tiles = smem_addr(sK), v_tiles = smem_addr(sV);
  const ScoreMod mod(p);
  float o[kD / 2];
  // The wgmma accumulators are the mma.m16n8 layout of FA2's score and output tiles (one m-tile).
  auto& o_tiles = *reinterpret_cast<float(*)[1][kDT][4]>(&o);
  float s[kN / 2];
  auto& s_tiles = *reinterpret_cast<float(*)[1][kNT][4]>(&s);
  uint32_t p_frag[1][kNT][2];
  auto& p_regs = *reinterpret_cast<uint32_t(*)[kNT * 2]>(&p_frag);

  for (int ring = 0, n = 0;; ++n) {
    sm90::mbarrier_wait(q_full(q_buf(n)), q_parity(n));
    const ItemSlot w = item_slots[q_buf(n)];
    if (w.b < 0) break;
    const Mask mask(p, w.seqlen_q, w.seqlen_k);
    const int m0 = w.m0, tiles = w.tiles;
    const float slope = mod.slope(p, w.b, w.h);
    T* sQn = sQ + q_buf(n) * kM * kD;
    const uint32_t q_tile = smem_addr(sQn);
#pragma unroll
    for (int i = 0; i < kD / 2; ++i) o[i] = 0.f;
    OnlineSoftmax<T, 1, kNT> softmax;
    softmax.init();
    // The item's tile it (from the last down, as the copy warpgroup sends them): its place in the
    // ring and its first key.
    auto pos = [&](int it) { return ring + it; };
    auto key0_of = [&](int it) { return (w.last_tile - it) * kN; };

    // S = Q K^T of tile it, issued once its K has landed (the caller waits for the product).
    auto wait_k = [&](int it) { sm90::mbarrier_wait(k_full(stage_of(pos(it))), parity_of(pos(it))); };
    auto issue_qk = [&](int it) {
      sm90::wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < kD / 16; ++ks) {
        WgmmaSS<T, kN>::run(s, QRows::k_major(q_tile, wg * 64, ks),
                            KvRows::k_major(k_tiles + stage_of(pos(it)) * Shape::kKvBytes, 0, ks), ks > 0);
      }
      sm90::wgmma_commit();
    };
    // O += P V of tile it, issued once its V has landed: the score accumulators of two 8-key tiles
    // are the A fragment of one 16-key step.
    auto issue_pv = [&](int it) {
      sm90::mbarrier_wait(v_full(stage_of(pos(it))), parity_of(pos(it)));
      sm90::fence_registers(o);
      sm90::fence_registers(p_regs);
      sm90::wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < kN / 16; ++ks) {
        uint32_t a[4];
        p_fragment(p_frag, 0, ks, a);
        WgmmaRS<T, kD>::run(o, a, KvRows::mn_major(v_tiles + stage_of(pos(it)) * Shape::kKvBytes, ks), 1);
      }
      sm90::wgmma_commit();
    };
    // After the wait for a batch: its registers are final, and this warp is done with its tile.
    auto qk_done = [&](int it) {
      sm90::fence_registers(s);
      __syncwarp();
      if (lane == 0) sm90::mbarrier_arrive(k_empty(stage_of(pos(it))));
    };
    auto pv_done = [&](int it) {
      sm90::fence_registers(o);
      sm90::fence_registers(p_regs);
      __syncwarp();
      if (lane == 0) sm90::mbarrier_arrive(v_empty(stage_of(pos(it))));
    };
    // softcap, ALiBi, mask on the scores of tile it: each a separate pass behind a branch that is
    // uniform over the CTA.
    auto score_mods = [&](int it) {
      const int n0 = key0_of(it);
      auto for_each_score = [&](auto&& fn) {
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            fn(s_tiles[0][nt][e], m0 + warp_row0 + g + (e / 2) * 8, n0 + nt * 8 + 2 * t4 + (e % 2));
      };
      if (mod.has_softcap) for_each_score([&](float& x, int, int) { x = mod.softcapped(x); });
      if (mod.has_alibi) for_each_score([&](float& x, int i, int j) { x -= slope * fabsf(float(i + mask.shift - j)); });
      if (!mask.all_visible(m0, w.m_end, n0, n0 + kN)) {
        for_each_score([&](float& x, int i, int j) {
          if (!mask.visible(i, j)) x = -INFINITY;
        });
      }
    };

    if constexpr (!Shape::kOverlap) {
      for (int it = 0; it < tiles; ++it) {
        wait_k(it);
        issue_qk(it);
        sm90::wgmma_wait<0>();
        qk_done(it);
        score_mods(it);
        softmax.update(s_tiles, p_frag, o_tiles, mod.scale_log2);
        issue_pv(it);
        sm90::wgmma_wait<0>();
        pv_done(it);
      }
    } else if (tiles > 0) {
      // FlashAttention-3's schedule: tile it's Q K^T and tile it - 1's P V go out together, and the
      // softmax of tile it runs while that P V does; its output rescale and P wait for the P V.
      // Ping-pong: the two math warpgroups take turns issuing (named barriers 4 and 5), so one's
      // softmax overlaps the other's matrix work.
      if (Shape::kPingPong && wg == 1 && tiles > 1) sm90::named_barrier_arrive(4, 256);  // warpgroup 0 goes first
      wait_k(0);
      issue_qk(0);
      sm90::wgmma_wait<0>();
      qk_done(0);
      score_mods(0);
      softmax.update(s_tiles, p_frag, o_tiles, mod.scale_log2);
      for (int it = 1; it < tiles; ++it) {
        wait_k(it);  // outside the turn: the other warpgroup need not wait for this copy
        if constexpr (Shape::kPingPong) sm90::named_barrier_sync(4 + wg, 256);
        issue_qk(it);
        issue_pv(it - 1);
        if (Shape::kPingPong && (wg == 0 || it + 1 < tiles)) sm90::named_barrier_arrive(5 - wg, 256);
        sm90::wgmma_wait<1>();
        qk_done(it);
        score_mods(it);
        float alpha[1][2];
        const bool moved = softmax.exponentiate(s_tiles, alpha, mod.scale_log2);
        auto after_pv = [&] {
          sm90::wgmma_wait<0>();
          pv_done(it - 1);
          if (__any_sync(0xffffffffu, moved)) softmax.rescale(o_tiles, alpha);
          softmax.pack(s_tiles, p_frag);
        };
        // A branch between the softmax and the wait: without one ptxas (13.0) moves the wait above
        // the whole softmax, and nothing overlaps the P V (SASS: no MUFU.EX2 between the
        // WARPGROUP.DEPBAR of the Q K^T and that of the P V).
        if (it + 1 == tiles) {
          after_pv();
          break;
        }
        after_pv();
      }
      issue_pv(tiles - 1);
      sm90::wgmma_wait<0>();
      pv_done(tiles - 1);
    }

    // Epilogue: normalise, write lse, stage O through this warpgroup's own Q rows (every warp of
    // it is past its last wgmma, which read all of them) for 16-byte stores; then those rows may
    // take the Q of the next item to use the buffer.
    sm90::named_barrier_sync(2 + wg, 128);
    sm90::fence_proxy_async();  // wgmma's (async-proxy) reads of those rows, before these plain writes
    float* lse_base = p.lse + w.lse_offset + int64_t(w.h) * p.lse_head_stride;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float sum = softmax.total(0, half);
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      const int row = warp_row0 + g + half * 8;
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt) {
        *reinterpret_cast<uint32_t*>(sQn + QRows::offset(row, dt) + 2 * t4) =
            DtypeTraits<T>::pack(o_tiles[0][dt][2 * half] * inv, o_tiles[0][dt][2 * half + 1] * inv);
      }
      if (p.lse != nullptr && t4 == 0 && m0 + row < w.seqlen_q) {
        lse_base[m0 + row] = sum > 0.f ? softmax.row_max[0][half] * mod.scale + __logf(sum) : -INFINITY;
      }
    }
    __syncwarp();
    T* o_base = static_cast<T*>(p.out) + w.o_offset + int64_t(w.h) * p.o_head_stride;
    constexpr int kChunksPerRow = kD / 8;
#pragma unroll
    for (int c = lane; c < 16 * kChunksPerRow; c += 32) {
      const int row = warp_row0 + c / kChunksPerRow, chunk = c % kChunksPerRow;
      if (m0 + row < w.seqlen_q) {
        *reinterpret_cast<uint4*>(o_base + int64_t(m0 + row) * p.o_row_stride + chunk * 8) =
            *reinterpret_cast<const uint4*>(sQn + QRows::offset(row, chunk));
      }
    }
    sm90::fence_proxy_async();  // these plain reads of the rows, before the next Q's TMA writes them
    __syncwarp();
    if (lane == 0) sm90::mbarrier_arrive(q_empty(q_buf(n)));
    ring += max(tiles, 0);
  }
#endif
}

}  // namespace torch_flashinfer::fa3
