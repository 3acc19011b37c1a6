// Global -> shared copies of query and key/value tiles (cp.async, 16-byte chunks, zero-filled
// outside the sequence; with an optional L2 policy: ptx.cuh), used by every kernel whose whole
// CTA loads a tile, into one of the shared-memory row layouts below.
#pragma once

#include <cstdint>

#include "common/ptx.cuh"
#include "common/sequence.cuh"
#include "torch_flashinfer/params.h"

namespace torch_flashinfer {

// L2 prefetch size of the tile copies (ptx.cuh cp_async_16): none; tuning builds set
// -DTFI_L2_PREFETCH=128|256 (FA2 prefill on the H100: 128 or 256 is 0-5 % slower than none,
// benchmarks/results/h100/fa2_tiles.json).
#ifndef TFI_L2_PREFETCH
#define TFI_L2_PREFETCH 0
#endif
constexpr int kTileCopyPrefetch = TFI_L2_PREFETCH;

// Shared-memory layouts of a tile's rows of kHeadDim elements, addressed by row and 16-byte chunk;
// both let the 8 rows an ldmatrix phase reads (8 consecutive rows, one chunk each) sit in 8
// different 16-byte bank groups.
// PaddedRows: each row padded by 16 bytes.
template <int kHeadDim>
struct PaddedRows {
  static constexpr int kRowElems = kHeadDim + 8;
  static __device__ __forceinline__ int offset(int row, int chunk) { return row * kRowElems + chunk * 8; }
};
// SwizzledRows: unpadded rows, each 16-byte chunk index XORed with a function of the row inside
// groups of 8 chunks (128 bytes; head dims that are multiples of 64) or of 4 (64 bytes; the
// others, whose rows start at alternate 64-byte halves of a bank row). A warp's copy of a 128-byte
// piece of a row then lands in one 128-byte line of shared memory: with 16-byte padding, a row
// of d=256 took 10 shared-memory wavefronts instead of 4 and 24 L2 sectors instead of 16 (ncu).
// It costs an XOR per ldmatrix address (fa2/tile_config.h says where it pays).
template <int kHeadDim>
struct SwizzledRows {
  static constexpr int kRowElems = kHeadDim;
  static constexpr int kGroup = (kHeadDim / 8) % 8 == 0 ? 8 : 4;
  static_assert((kHeadDim / 8) % kGroup == 0, "rows of whole chunk groups");
  static __device__ __forceinline__ int flip(int row) { return kGroup == 8 ? row % 8 : (row / 2) % 4; }
  static __device__ __forceinline__ int offset(int row, int chunk) { return row * kRowElems + (chunk ^ flip(row)) * 8; }

  // An ldmatrix operand walks chunks 2 * step + c0 of a row (c0: 0 or 1 by lane; step: a
  // compile-time loop index). Chunk 2 * step + c0 sits at byte column 16 * (c0 ^ (flip & 1)) +
  // (32 * step) ^ (16 * (flip & ~1)) within its group: the first term (Columns::first) goes into
  // the lane's row address, the second (column()) is one XOR of the step's immediate with one
  // register.
  struct Columns {
    uint32_t first;  // 16 * (c0 ^ (flip & 1))
    uint32_t mask;   // 16 * (flip & ~1)
  };
  static __device__ __forceinline__ Columns columns(int row, int c0) {
    const int f = flip(row);
    return Columns{uint32_t((c0 ^ (f & 1)) * 16), uint32_t((f & ~1) * 16)};
  }
  static __device__ __forceinline__ uint32_t column(const Columns& c, int step) {
    constexpr uint32_t kGroupBytes = kGroup * 16;
    return (uint32_t((32 * step) % kGroupBytes) ^ c.mask) + uint32_t(32 * step / kGroupBytes) * kGroupBytes;
  }
};

// The tile row whose address lane `lane` gives an ldmatrix_x4 of K's B fragments (chunk
// (lane / 8) % 2 of the step's pair): keys 0-7 of the low and high chunk, then keys 8-15, so each
// mma takes two consecutive registers as its B operand. In any other order nvcc moves registers
// (three moves per ldmatrix, 192 per d=256 tile). Q and V fragments read row lane % 16 at chunk
// lane / 16. In swizzled rows both read row lane % 8 modulo 8 (rows a multiple of 8 apart keep
// the swizzle), so they share the swizzle mask and differ only in the first column.
__device__ __forceinline__ int ldmatrix_k_row(int lane) { return lane % 8 + (lane / 16) * 8; }

// This thread's i-th chunk of a tile is chunk tid + i * kThreads: row c / kChunksPerRow, column
// (c % kChunksPerRow) * 8. When the thread count is a multiple of the chunks per row the column
// is fixed and rows step by a constant, which keeps the copy addresses in a few registers.
template <int kThreads, int kHeadDim>
struct ChunkMap {
  static constexpr int kChunksPerRow = kHeadDim / 8;
  static __device__ __forceinline__ int row(int tid, int i) {
    if constexpr (kThreads % kChunksPerRow == 0) return tid / kChunksPerRow + i * (kThreads / kChunksPerRow);
    else return (tid + i * kThreads) / kChunksPerRow;
  }
  static __device__ __forceinline__ int col(int tid, int i) {
    if constexpr (kThreads % kChunksPerRow == 0) return (tid % kChunksPerRow) * 8;
    else return ((tid + i * kThreads) % kChunksPerRow) * 8;
  }
};

// Query rows [m0, m0 + kRows) of one head (q_head points at row 0 of the sequence). Policy here
// and below: L2Hint or a uint64_t policy (ptx.cuh).
template <int kRows, int kThreads, int kHeadDim, typename Layout = PaddedRows<kHeadDim>, typename T, typename Policy>
__device__ __forceinline__ void load_q_tile(const FwdParams& p, const T* q_head, int seqlen_q, int m0, T* sQ, int tid,
                                            Policy policy) {
  using Map = ChunkMap<kThreads, kHeadDim>;
  static_assert(kRows * Map::kChunksPerRow % kThreads == 0, "even copy split");
#pragma unroll
  for (int i = 0; i < kRows * Map::kChunksPerRow / kThreads; ++i) {
    const int r = Map::row(tid, i), col = Map::col(tid, i);
    const bool valid = m0 + r < seqlen_q;
    cp_async_16<kTileCopyPrefetch>(smem_addr(sQ + Layout::offset(r, col / 8)),
                                   q_head + (valid ? int64_t(m0 + r) * p.q_row_stride + col : 0), valid, policy);
  }
}

// kRows rows of kHeadDim elements, row i at src + i * row_stride, into rows [0, kRows) of dst, by
// kThreads threads (a multiple of the chunks per row): each thread's chunks are one 64-bit
// address plus a constant step, with no per-row multiply. Rows from valid_rows on are zero-filled
// (their addresses, possibly past the tensor, are not read); kWhole: every row is valid (no
// per-row check).
template <int kRows, int kThreads, int kHeadDim, typename Layout, int kPrefetch, bool kWhole, typename T,
          typename Policy>
__device__ __forceinline__ void copy_rows(const T* src, int64_t row_stride, int valid_rows, T* dst, int tid,
                                          Policy policy) {
  using Map = ChunkMap<kThreads, kHeadDim>;
  static_assert(kThreads % Map::kChunksPerRow == 0, "a thread's chunks share one column");
  constexpr int kRowStep = kThreads / Map::kChunksPerRow;
  static_assert(kRows % kRowStep == 0, "even copy split");
  const int r0 = Map::row(tid, 0), col = Map::col(tid, 0);
  const T* row = src + int64_t(r0) * row_stride + col;
  [[maybe_unused]] const uint32_t base = smem_addr(dst);
#pragma unroll
  for (int i = 0; i < kRows / kRowStep; ++i) {
    const bool valid = kWhole || r0 + i * kRowStep < valid_rows;
    // The layouts repeat every 8 rows (offset(r + 8m, c) = offset(r, c) + offset(8m, 0)). In a
    // warp's copy (decode, fa1) a thread's rows are less than 8 apart, and chunk i lands at the
    // offset of row r0 + (i * kRowStep) % 8 plus a constant: one offset per distinct
    // (i * kRowStep) % 8, which nvcc does not find by itself (SASS of the d=128 decode kernel:
    // 2560 instructions, 2424 so). CTA copies (fa2) keep the plain form, whose code was timed.
    if constexpr (kThreads == 32 && kRowStep < 8) {
      const int shift = (i * kRowStep) / 8 * 8;
      const uint32_t offset = uint32_t(Layout::offset(r0 + i * kRowStep - shift, col / 8) + Layout::offset(shift, 0));
      cp_async_16<kPrefetch>(base + offset * uint32_t(sizeof(T)), row, valid, policy);
    } else {
      cp_async_16<kPrefetch>(smem_addr(dst + Layout::offset(r0 + i * kRowStep, col / 8)), row, valid, policy);
    }
    row += kRowStep * row_stride;
  }
}

// Keys and values [n0, n0 + kRows) of one K/V head, addressed as kMode says (kK / kV: which of
// the two this call copies). kRolled: one chunk per loop iteration instead of the loop unrolled
// (for a copy warpgroup with few registers).
template <int kRows, int kThreads, int kHeadDim, KvMode kMode, bool kK = true, bool kV = true,
          typename Layout = PaddedRows<kHeadDim>, bool kRolled = false, typename T, typename Policy>
__device__ __forceinline__ void load_kv_tile(const FwdParams& p, const Sequence& seq, int b, const T* k_head,
                                             const T* v_head, int n0, T* sK, T* sV, int tid, Policy policy) {
  using Map = ChunkMap<kThreads, kHeadDim>;
  static_assert(kRows * Map::kChunksPerRow % kThreads == 0, "even copy split");
  const bool full = n0 + kRows <= seq.seqlen_k;
  if constexpr (kMode == KvMode::kContiguous && kThreads % Map::kChunksPerRow == 0) {
    // A whole tile of a contiguous cache: each thread's rows step by a constant, so its chunks
    // are one 64-bit address plus constant offsets (no per-row multiply or bounds select).
    if (full) {
      if constexpr (kK) {
        copy_rows<kRows, kThreads, kHeadDim, Layout, kTileCopyPrefetch, true>(
            k_head + seq.k_offset + int64_t(n0) * p.k_row_stride, p.k_row_stride, kRows, sK, tid, policy);
      }
      if constexpr (kV) {
        copy_rows<kRows, kThreads, kHeadDim, Layout, kTileCopyPrefetch, true>(
            v_head + seq.v_offset + int64_t(n0) * p.v_row_stride, p.v_row_stride, kRows, sV, tid, policy);
      }
      return;
    }
  }
  int tile_block = 0;
  if constexpr (kMode == KvMode::kPagedTile) {
    int unused;
    paged_position(p, seq, b, n0, tile_block, unused);
  }
  auto copy_chunk = [&](int i) {
    const int r = Map::row(tid, i), col = Map::col(tid, i);
    const int j = n0 + r;
    bool valid = full || j < seq.seqlen_k;
    int64_t k_off, v_off;
    if constexpr (kMode == KvMode::kContiguous) {
      k_off = seq.k_offset + int64_t(j) * p.k_row_stride;
      v_off = seq.v_offset + int64_t(j) * p.v_row_stride;
    } else {
      int block, row;
      if constexpr (kMode == KvMode::kPagedTile) {
        block = tile_block;
        row = n0 % p.page_size + r;
      } else {
        paged_position(p, seq, b, valid ? j : 0, block, row);
      }
      valid = valid && block >= 0;
      k_off = int64_t(block) * p.k_batch_stride + int64_t(row) * p.k_row_stride;
      v_off = int64_t(block) * p.v_batch_stride + int64_t(row) * p.v_row_stride;
    }
    if constexpr (kK) {
      cp_async_16<kTileCopyPrefetch>(smem_addr(sK + Layout::offset(r, col / 8)), k_head + (valid ? k_off + col : 0),
                                     valid, policy);
    }
    if constexpr (kV) {
      cp_async_16<kTileCopyPrefetch>(smem_addr(sV + Layout::offset(r, col / 8)), v_head + (valid ? v_off + col : 0),
                                     valid, policy);
    }
  };
  constexpr int kChunks = kRows * Map::kChunksPerRow / kThreads;
  if constexpr (kRolled) {
#pragma unroll 1
    for (int i = 0; i < kChunks; ++i) copy_chunk(i);
  } else {
#pragma unroll
    for (int i = 0; i < kChunks; ++i) copy_chunk(i);
  }
}

}  // namespace torch_flashinfer
