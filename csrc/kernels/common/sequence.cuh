// Where a sequence's rows live and which keys a query row may see: shared by every attention
// kernel so the layouts (dense / packed / paged, left padding) and the mask semantics
// (bottom-right causal, window, ALiBi) are written once.
#pragma once

#include <cstdint>

#include "common/ptx.cuh"
#include "torch_flashinfer/params.h"

namespace torch_flashinfer {

__device__ __forceinline__ int clamp_index(int x, int lo, int hi) { return x < lo ? lo : (x > hi ? hi : x); }

struct Sequence {
  int seqlen_q;
  int seqlen_k;       // valid keys, after left padding
  int key_start;      // cache row of key 0 (left padding)
  int k_row0;         // row of key 0 along k's row dim: dense key_start, packed cu_seqlens_k[b] (TMA coordinates)
  int64_t q_row0;     // index of query row 0 among all query rows (packed: cu_seqlens_q[b])
  int64_t q_offset;   // element offset of (row 0, head 0) in q
  int64_t o_offset;   // ... in out
  int64_t lse_offset; // offset of (head 0, row 0) in lse
  int64_t k_offset;   // dense/packed: offset of (key 0, head 0) in k; paged: unused
  int64_t v_offset;
};

// A sequence's metadata as read from memory: cu_seqlens_q[b], [b + 1]; cache_leftpad[b]; cu_seqlens_k[b],
// [b + 1] or cache_seqlens[b] (whichever the layout has). Read apart from make_sequence so that a
// persistent kernel can issue the loads for its next item before it waits on the current one.
struct SequenceMeta {
  int q_start, q_end, leftpad, k_start, k_end;
};

__device__ __forceinline__ SequenceMeta load_sequence_meta(const FwdParams& p, int b) {
  SequenceMeta m{0, 0, 0, 0, 0};
  if (p.cu_seqlens_q != nullptr) {
    m.q_start = p.cu_seqlens_q[b];
    m.q_end = p.cu_seqlens_q[b + 1];
  }
  if (p.cache_leftpad != nullptr) m.leftpad = p.cache_leftpad[b];
  if (p.kv_layout == KvLayout::kVarlen) {
    m.k_start = p.cu_seqlens_k[b];
    m.k_end = p.cu_seqlens_k[b + 1];
  } else if (p.cache_seqlens != nullptr) {
    m.k_end = p.cache_seqlens[b];
  }
  return m;
}

__device__ __forceinline__ Sequence make_sequence(const FwdParams& p, int b, const SequenceMeta& m) {
  Sequence s;
  // Lengths are clamped to what the tensors hold, so malformed metadata never reads or writes
  // outside them (the Python side checks the values when it can: TORCH_FLASHINFER_CHECK_DATA).
  if (p.cu_seqlens_q != nullptr) {
    const int start = clamp_index(m.q_start, 0, p.total_q);
    s.seqlen_q = clamp_index(m.q_end, start, p.total_q) - start;
    s.q_row0 = start;
    s.q_offset = int64_t(start) * p.q_row_stride;
    s.o_offset = int64_t(start) * p.o_row_stride;
    s.lse_offset = start;
  } else {
    s.seqlen_q = p.seqlen_q;
    s.q_row0 = int64_t(b) * p.seqlen_q;
    s.q_offset = int64_t(b) * p.q_batch_stride;
    s.o_offset = int64_t(b) * p.o_batch_stride;
    s.lse_offset = int64_t(b) * p.lse_batch_stride;
  }
  s.key_start = p.cache_leftpad != nullptr ? clamp_index(m.leftpad, 0, p.seqlen_k) : 0;
  if (p.kv_layout == KvLayout::kVarlen) {
    const int start = clamp_index(m.k_start, 0, p.total_k);
    s.seqlen_k = clamp_index(m.k_end, start, p.total_k) - start;
    s.k_row0 = start;
    s.k_offset = int64_t(start) * p.k_row_stride;
    s.v_offset = int64_t(start) * p.v_row_stride;
  } else {
    const int end = p.cache_seqlens != nullptr ? clamp_index(m.k_end, s.key_start, p.seqlen_k) : p.seqlen_k;
    s.seqlen_k = end - s.key_start;
    s.k_row0 = s.key_start;
    s.k_offset = int64_t(b) * p.k_batch_stride + int64_t(s.key_start) * p.k_row_stride;
    s.v_offset = int64_t(b) * p.v_batch_stride + int64_t(s.key_start) * p.v_row_stride;
  }
  return s;
}

__device__ __forceinline__ Sequence load_sequence(const FwdParams& p, int b) {
  return make_sequence(p, b, load_sequence_meta(p, b));
}

// How a kernel finds key rows; chosen on the host so each addressing scheme is its own
// instantiation with no per-row branch on the layout.
enum class KvMode : int {
  kContiguous = 0,  // dense or packed: row j at k_offset + j * row_stride
  kPagedTile = 1,   // paged, page_size a multiple of the key tile, no left padding: one lookup per tile
  kPagedRow = 2,    // paged, any page size: one lookup per row
};

__host__ __device__ inline KvMode kv_mode(const FwdParams& p, int key_tile) {
  if (p.kv_layout != KvLayout::kPaged) return KvMode::kContiguous;
  return p.page_size % key_tile == 0 && p.cache_leftpad == nullptr ? KvMode::kPagedTile : KvMode::kPagedRow;
}

// Paged cache: block and row-in-block of key j (0 = first valid key) of sequence b; block = -1
// when the block table points outside the cache.
__device__ __forceinline__ void paged_position(const FwdParams& p, const Sequence& s, int b, int j, int& block,
                                               int& row) {
  const int abs_row = s.key_start + j;
  block = p.block_table[int64_t(b) * p.block_table_batch_stride + abs_row / p.page_size];
  row = abs_row % p.page_size;
  if (block < 0 || block >= p.num_blocks) block = -1;
}

// Which keys query row i (0-based within its sequence) sees:
//   pos = i + seqlen_k - seqlen_q;   pos - left <= j <= pos + right, j < seqlen_k
// with causal folded into right (<= 0) and "unbounded" as a huge bound.
struct Mask {
  int seqlen_k, shift, left, right;

  __device__ __forceinline__ Mask(const FwdParams& p, const Sequence& s) : Mask(p, s.seqlen_q, s.seqlen_k) {}
  __device__ __forceinline__ Mask(const FwdParams& p, int seqlen_q, int seqlen_k_) {
    constexpr int kUnbounded = 1 << 30;
    seqlen_k = seqlen_k_;
    shift = seqlen_k_ - seqlen_q;
    left = p.window_left >= 0 ? p.window_left : kUnbounded;
    right = p.window_right >= 0 ? p.window_right : kUnbounded;
    if (p.causal && right > 0) right = 0;
  }
  __device__ __forceinline__ bool visible(int i, int j) const {
    const int d = j - (i + shift);
    return j < seqlen_k && d <= right && d >= -left;
  }
  // Keys [begin, end) seen by any of rows [row_begin, row_end).
  __device__ __forceinline__ int key_begin(int row_begin) const {
    const long long b = (long long)row_begin + shift - left;
    return b < 0 ? 0 : (b > seqlen_k ? seqlen_k : int(b));
  }
  __device__ __forceinline__ int key_end(int row_end) const {
    const long long e = (long long)row_end - 1 + shift + right + 1;
    return e < 0 ? 0 : (e > seqlen_k ? seqlen_k : int(e));
  }
  // True when every key of [k_begin, k_end) is visible to every row of [row_begin, row_end).
  __device__ __forceinline__ bool all_visible(int row_begin, int row_end, int k_begin, int k_end) const {
    return k_end <= seqlen_k && (k_end - 1) - ((long long)row_begin + shift) <= right &&
           (long long)k_begin - ((long long)row_end - 1 + shift) >= -(long long)left;
  }
};

__device__ __forceinline__ float alibi_slope(const FwdParams& p, int b, int h) {
  return p.alibi_slopes == nullptr ? 0.f : p.alibi_slopes[int64_t(b) * p.alibi_batch_stride + h];
}

// Logits are softcap(scale * q.k) - slope * |pos - j|. Kernels keep raw scores s in units where
// logit = scale * s (scale = 1 under softcap, which applies the softmax scale inside tanh), so
// the softmax is exp2(s * scale_log2 - ...) and lse = row max * scale + log(sum).
struct ScoreMod {
  bool has_softcap, has_alibi;
  float scale, scale_log2, softcap, softcap_in;

  __device__ __forceinline__ explicit ScoreMod(const FwdParams& p) {
    has_softcap = p.softcap > 0.f;
    has_alibi = p.alibi_slopes != nullptr;
    scale = has_softcap ? 1.f : p.softmax_scale;
    scale_log2 = scale * 1.4426950408889634f;
    softcap = p.softcap;
    softcap_in = has_softcap ? p.softmax_scale / p.softcap : 0.f;
  }
  // The ALiBi slope of (sequence b, query head h) in units of s.
  __device__ __forceinline__ float slope(const FwdParams& p, int b, int h) const {
    return has_alibi ? alibi_slope(p, b, h) / scale : 0.f;
  }
  __device__ __forceinline__ float softcapped(float s) const { return softcap * fast_tanh(s * softcap_in); }
};

}  // namespace torch_flashinfer
