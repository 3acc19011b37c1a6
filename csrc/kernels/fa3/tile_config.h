// fa3 tile shapes per head_dim: the one place where they are chosen.
//
// A CTA is three warpgroups: one copies (TMA), two compute, each on 64 of the tile's 128 query
// rows. Shared memory holds one or two Q tiles (fwd_kernel.cuh kQBuffers) and two stages of K and V
// tiles of kBlockN keys: (128 kQBuffers + 4 kBlockN) * head_dim * 2 bytes, one CTA per SM (at
// most 227 KB). kBlockN is the largest of 128 / 96 / 80 that fits; a compute thread then holds
// kBlockN / 2 scores, their kBlockN / 4 packed probabilities and head_dim / 2 output accumulators
// (d=256: 40 + 20 + 128).
// d=224 takes 64 (96 fits, but with the persistent loop's state its math warpgroups spilled 72-96
// bytes; 80 does not split evenly over the copy warpgroup's cp.async loop).
// The schedule of the math warpgroups (fwd_kernel.cuh): each tile's Q K^T, softmax and P V in
// turn, or FlashAttention-3's overlap of one tile's softmax with the previous tile's P V, with
// or without the two warpgroups taking turns (ping-pong).
// Persistent CTAs: with more work items than SMs, one CTA per SM runs items at a stride of the
// grid, and an item's first K/V tile is copied during the previous item's math (one CTA fits an
// SM, so without this nothing hides an item's first copies: short prompts are all first copies).
// Not yet timed on a GPU: the shapes are those FlashAttention-3 reports for the H100, cut to what
// fits two stages, and the shipped schedule is the plain one until the overlap is measured.
// Tuning builds override them with -DTFI_FA3_BLOCK_N=64|80|96|128 (the shapes of fa3/wgmma.cuh)
// -DTFI_FA3_OVERLAP=0|1 -DTFI_FA3_PINGPONG=0|1 -DTFI_FA3_PERSISTENT=0|1.
#pragma once

namespace torch_flashinfer::fa3 {

constexpr int default_block_n(int head_dim) {
  return head_dim <= 160 ? 128 : head_dim == 192 ? 96 : head_dim == 224 ? 64 : 80;
}

#ifdef TFI_FA3_BLOCK_N
constexpr int block_n_for(int) { return TFI_FA3_BLOCK_N; }
#else
constexpr int block_n_for(int head_dim) { return default_block_n(head_dim); }
#endif
#ifndef TFI_FA3_OVERLAP
#define TFI_FA3_OVERLAP 0
#endif
#ifndef TFI_FA3_PINGPONG
#define TFI_FA3_PINGPONG 0
#endif
#ifndef TFI_FA3_PERSISTENT
#define TFI_FA3_PERSISTENT 1
#endif
constexpr bool overlap_for(int) { return TFI_FA3_OVERLAP != 0; }
constexpr bool pingpong_for(int) { return TFI_FA3_PINGPONG != 0; }
constexpr bool kPersistent = TFI_FA3_PERSISTENT != 0;

}  // namespace torch_flashinfer::fa3
