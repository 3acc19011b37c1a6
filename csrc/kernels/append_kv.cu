// Kernel library "common": tfi_append_kv writes new K/V tokens into a dense or paged cache at
// rows cache_seqlens[b] + i. A pure copy, so one build serves every dtype and head_dim.
#include <cuda_runtime.h>

#include <cstdint>

#include "torch_flashinfer/api.h"

namespace torch_flashinfer {
namespace {

// One warp per (sequence, new token, head); each lane moves 16-byte chunks of the row.
__global__ void append_kv_kernel(const __grid_constant__ AppendKvParams p) {
  const int64_t row_id = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int64_t rows = int64_t(p.batch) * p.seqlen_new * p.heads_k;
  if (row_id >= rows) return;
  const int h = int(row_id % p.heads_k);
  const int i = int((row_id / p.heads_k) % p.seqlen_new);
  const int b = int(row_id / (int64_t(p.heads_k) * p.seqlen_new));
  const int pos = p.cache_seqlens[b] + i;

  int64_t cache_row;  // index along (block or sequence) and row within it
  int64_t block;
  if (p.block_table != nullptr) {
    const int page = pos / p.page_size;
    if (pos < 0 || page >= p.max_blocks) return;  // out of range: dropped (checked on the host when possible)
    block = p.block_table[int64_t(b) * p.block_table_batch_stride + page];
    if (block < 0 || block >= p.num_blocks) return;
    cache_row = pos % p.page_size;
  } else {
    if (pos < 0 || pos >= p.cache_rows) return;
    block = b;
    cache_row = pos;
  }
  const int64_t eb = p.elem_bytes;
  const char* k_src = static_cast<const char*>(p.k) + (b * p.k_batch_stride + i * p.k_row_stride + h * p.k_head_stride) * eb;
  const char* v_src = static_cast<const char*>(p.v) + (b * p.v_batch_stride + i * p.v_row_stride + h * p.v_head_stride) * eb;
  char* k_dst = static_cast<char*>(p.k_cache) +
                (block * p.cache_batch_stride + cache_row * p.cache_row_stride + h * p.cache_head_stride) * eb;
  char* v_dst = static_cast<char*>(p.v_cache) +
                (block * p.vcache_batch_stride + cache_row * p.vcache_row_stride + h * p.vcache_head_stride) * eb;
  const int chunks = p.head_dim * p.elem_bytes / 16;  // head_dim * 2 bytes is a multiple of 64
  for (int c = threadIdx.x % 32; c < chunks; c += 32) {
    reinterpret_cast<uint4*>(k_dst)[c] = reinterpret_cast<const uint4*>(k_src)[c];
    reinterpret_cast<uint4*>(v_dst)[c] = reinterpret_cast<const uint4*>(v_src)[c];
  }
}

}  // namespace
}  // namespace torch_flashinfer

TFI_EXPORT const char* tfi_append_kv(const torch_flashinfer::AppendKvParams* p, cudaStream_t stream) {
  constexpr int kWarps = 4;
  const long long rows = (long long)p->batch * p->seqlen_new * p->heads_k;
  if (rows == 0) return nullptr;
  const long long blocks = (rows + kWarps - 1) / kWarps;
  if (blocks > 0x7fffffffLL) return "too many tokens to append in one launch";
  torch_flashinfer::append_kv_kernel<<<unsigned(blocks), kWarps * 32, 0, stream>>>(*p);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}
