// Plain-old-data arguments of every kernel. Filled by the binding (the only file that sees
// torch), read by the torch-free kernels. Strides are in elements; only the last (head_dim)
// dimension of q/k/v/out is contiguous.
#pragma once

#include <cstdint>

namespace torch_flashinfer {

enum class KvLayout : int32_t {
  kDense = 0,   // k[b, j, h, d]: batch_stride, row_stride, head_stride
  kVarlen = 1,  // k[cu_seqlens_k[b] + j, h, d]
  kPaged = 2,   // k[block_table[b, j / page_size], j % page_size, h, d]; batch_stride = block stride
};

struct FwdParams {
  // q / out: dense (b, s, h, d), or packed (total, h, d) when cu_seqlens_q != nullptr.
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;  // dense: (b, h, s); packed: (h, total); null: not written (return_lse=False)

  int64_t q_batch_stride, q_row_stride, q_head_stride;
  int64_t k_batch_stride, k_row_stride, k_head_stride;
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  int64_t o_batch_stride, o_row_stride, o_head_stride;
  int64_t lse_batch_stride, lse_head_stride;  // lse row stride is 1

  KvLayout kv_layout;
  const int32_t* cu_seqlens_q;    // (batch + 1) or nullptr
  const int32_t* cu_seqlens_k;    // (batch + 1), kVarlen only
  const int32_t* cache_seqlens;   // (batch) valid keys per sequence, or nullptr (all seqlen_k)
  const int32_t* cache_leftpad;   // (batch) first valid key, or nullptr
  const int32_t* block_table;     // (batch, max_blocks), kPaged only
  int64_t block_table_batch_stride;
  int32_t page_size;
  int32_t num_blocks;  // paged: blocks in the cache (entries outside [0, num_blocks) read as empty)
  int32_t total_q;     // packed q: rows in q (malformed cu_seqlens are clamped to it)
  int32_t total_k;     // packed k: rows in k

  const float* alibi_slopes;      // (heads_q) or (batch, heads_q), or nullptr
  int64_t alibi_batch_stride;     // 0 when slopes are per head only

  int32_t batch, heads_q, heads_k, head_dim;
  int32_t seqlen_q;  // dense: q's length; packed: max_seqlen_q
  int32_t seqlen_k;  // dense: k's length (capacity); packed: max_seqlen_k; paged: max_blocks * page_size

  float softmax_scale;
  float softcap;       // 0 = off
  bool causal;
  int32_t window_left, window_right;  // -1 = unbounded

  bool is_bf16;
  int32_t num_sms;     // of the current device, for split heuristics
  int32_t num_splits;  // 0 = heuristic

  // fp32 scratch allocated by the caller (sized by the kernel family; see torch_flashinfer/_kernels.py):
  // split_kv: partial outputs (splits, rows, d) then their lse (splits, rows); fa1: the running
  // output (rows, heads_q, d) then (max, sum) per row and head.
  float* workspace;
  int64_t workspace_floats;
  // Counters kept by the caller per stream, zero before a call and zero again after it (see
  // api.h tfi_fwd_counters): split_kv counts the finished splits of each work item.
  uint32_t* counters;
  int64_t num_counters;
};

struct AppendKvParams {
  void* k_cache;
  void* v_cache;
  const void* k;
  const void* v;
  int64_t cache_batch_stride, cache_row_stride, cache_head_stride;  // paged: batch stride = block stride
  int64_t vcache_batch_stride, vcache_row_stride, vcache_head_stride;
  int64_t k_batch_stride, k_row_stride, k_head_stride;
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  const int32_t* cache_seqlens;
  const int32_t* block_table;  // nullptr for a dense cache
  int64_t block_table_batch_stride;
  int32_t page_size;
  int32_t cache_rows;  // dense: rows per sequence; paged: page_size
  int32_t num_blocks;  // paged: blocks in the cache; dense: batch
  int32_t max_blocks;  // paged: block_table columns
  int32_t batch, seqlen_new, heads_k, head_dim;
  int32_t elem_bytes;
};

}  // namespace torch_flashinfer
